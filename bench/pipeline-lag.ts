/**
 * @module The pipeline bench's lag phase (bench/pipeline.ts), against one running server of either
 * design: a sender posts paced messages over the room socket, each ending with a unique token word,
 * and from each ack two observers wait for it:
 *
 * - **searchable**: `GET /api/search` is polled every `pollMs` (one round covers every token not
 *   found yet, ORed as many per request as the 200-character `q` allows) until a hit carries it;
 * - **in the D1 shard**: the local D1 databases of the server's state directory (wrangler dev keeps
 *   each as a SQLite file) are opened read-only with node:sqlite and polled every `d1PollMs` for the
 *   message's row, `archived_events` (tenant, room, seq): the old design's single database, the
 *   new design's history shard. Every database with that table is watched (the new design's
 *   directory keeps an empty legacy one), so nothing here knows which design it measures.
 *
 * Both are measured on the bench's clock from the ack frame's arrival, so each includes up to one
 * poll interval (and the search one a search request).
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import WebSocket from "ws";
import type { Server } from "./servers.ts";
import { workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api } from "./targets.ts";
import { chatText } from "./text.ts";

/** `GET /api/search` refuses a q longer than this (worker/routes/search.ts, both designs). */
const MAX_Q = 200;
const TICKS = 100; // getconf CLK_TCK on Linux

export interface LagOptions {
  messages: number;
  /** Messages per second, on a schedule. */
  rate: number;
  pollMs: number;
  d1PollMs: number;
  /** A probe not seen this long after its ack counts as missing. */
  timeoutMs: number;
}

export interface Observed {
  lag: LatencySummary | null;
  found: number;
  missing: number;
}

export interface LagResult {
  sent: number;
  acked: number;
  search: Observed;
  d1: Observed;
  ack: LatencySummary | null;
  searchRequest: LatencySummary | null;
  searchRequests: number;
  d1Polls: number;
  /** The local D1 files that had an `archived_events` table (how many; which held the probes). */
  d1Files: number;
  d1FilesWithProbes: number;
  phaseMs: number;
  /** CPU of the server's workerd processes during the phase, per message sent (ms). */
  serverCpuMsPerMessage: number;
  errors: Map<string, number>;
}

interface Probe {
  token: string;
  clientId: string;
  sentAt: number;
  ackAt: number;
  seq: number;
  searchAt: number;
  d1At: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/** node:sqlite, loaded without its "experimental" warning on stderr. */
async function sqlite(): Promise<typeof import("node:sqlite")> {
  const emit = process.emitWarning;
  process.emitWarning = (() => {}) as typeof process.emitWarning;
  try {
    return await import("node:sqlite");
  } finally {
    process.emitWarning = emit;
  }
}

/** Every SQLite file under the state directory's D1 storage that has an `archived_events` table. */
async function d1Databases(stateDir: string): Promise<{ file: string; db: DatabaseSync }[]> {
  const { DatabaseSync } = await sqlite();
  const root = join(stateDir, "v3", "d1");
  const files: string[] = [];
  const walk = (dir: string) => {
    let entries: import("node:fs").Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith(".sqlite")) files.push(join(dir, e.name));
    }
  };
  walk(root);
  const out: { file: string; db: DatabaseSync }[] = [];
  for (const file of files) {
    const db = new DatabaseSync(file, { readOnly: true });
    const has = db
      .prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'archived_events'")
      .get() as { n: number };
    if (has.n > 0) out.push({ file, db });
    else db.close();
  }
  return out;
}

interface User {
  token: string;
}

async function timedSearch(
  base: string,
  token: string,
  q: string,
  roomId: string,
): Promise<{ ms: number; end: number; texts: string[]; error: string | null }> {
  const t = performance.now();
  try {
    const res = await fetch(
      `${base}/api/search?q=${encodeURIComponent(q)}&room=${encodeURIComponent(roomId)}`,
      { headers: { "Cf-Access-Jwt-Assertion": token }, signal: AbortSignal.timeout(15_000) },
    );
    const text = await res.text();
    const end = performance.now();
    if (!res.ok) return { ms: end - t, end, texts: [], error: `HTTP ${res.status}` };
    const body = JSON.parse(text) as { hits?: { text: string }[] };
    return { ms: end - t, end, texts: (body.hits ?? []).map((h) => h.text), error: null };
  } catch (err) {
    const end = performance.now();
    return { ms: end - t, end, texts: [], error: err instanceof Error ? err.name : String(err) };
  }
}

/** Opens the room socket and resolves once it is ready; acks and errors go to the callbacks. */
function openSocket(
  base: string,
  user: User,
  roomId: string,
  onAck: (clientId: string, seq: number) => void,
  onError: (code: string) => void,
): Promise<WebSocket> {
  const ws = new WebSocket(
    `${base.replace(/^http/, "ws")}/api/rooms/${encodeURIComponent(roomId)}/ws?after=0`,
    {
      headers: { "Cf-Access-Jwt-Assertion": user.token },
      perMessageDeflate: false,
    },
  );
  return new Promise<WebSocket>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("the room socket did not get ready in 15 s")), 15_000);
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as {
        type: string;
        clientId?: string;
        seq?: number;
        code?: string;
      };
      if (frame.type === "ready") {
        clearTimeout(timer);
        ok(ws);
      } else if (frame.type === "ack" && frame.clientId && typeof frame.seq === "number")
        onAck(frame.clientId, frame.seq);
      else if (frame.type === "error") onError(frame.code ?? "error");
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      fail(err);
    });
  });
}

/**
 * Measures ack → searchable and ack → in D1 on `server` (whose local state is `stateDir`), for one
 * tenant and room of its own. `sockets` collects the socket so that the caller can close it on a
 * signal.
 */
export async function measureLag(
  server: Server,
  stateDir: string,
  opts: LagOptions,
  runId: string,
  sockets: Set<WebSocket>,
  log: (msg: string) => void,
): Promise<LagResult> {
  const base = server.baseUrl;
  const { token } = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
    email: `sender@${runId}.bench.test`,
    name: "Sender",
    tenant: `${runId}-lag`,
  });
  const room = await api<{ id: string }>(base, "POST", "/api/rooms", token, {
    name: `${runId} lag`,
    kind: "channel",
  });
  const user = { token };
  const errors = new Map<string, number>();
  const byClientId = new Map<string, Probe>();
  const byToken = new Map<string, Probe>();
  const ws = await openSocket(
    base,
    user,
    room.id,
    (clientId, seq) => {
      const p = byClientId.get(clientId);
      if (p && p.ackAt === 0) {
        p.ackAt = performance.now();
        p.seq = seq;
      }
    },
    (code) => bump(errors, `socket ${code}`),
  );
  sockets.add(ws);
  const text = chatText(7);
  let n = 0;
  const probe = (): Probe => {
    const token = `${runId}p${n}`;
    const p: Probe = {
      token,
      clientId: `${runId}-${n}`,
      sentAt: performance.now(),
      ackAt: 0,
      seq: 0,
      searchAt: 0,
      d1At: 0,
    };
    n++;
    byClientId.set(p.clientId, p);
    byToken.set(token, p);
    ws.send(JSON.stringify({ type: "send", clientId: p.clientId, text: `${text()} ${token}` }));
    return p;
  };

  // Warm-up, not measured: the room, its search part, the queue, the consumer and the D1 path are
  // all used once (and the D1 files exist) before the first measured message.
  const warm = Array.from({ length: 5 }, probe);
  const warmDeadline = performance.now() + 30_000;
  while (performance.now() < warmDeadline) {
    const acked = warm.filter((p) => p.ackAt > 0);
    if (acked.length === warm.length) {
      const r = await timedSearch(base, token, warm.map((p) => p.token).join(" OR "), room.id);
      if (r.texts.length >= warm.length) break;
    }
    await sleep(100);
  }
  const databases = await d1Databases(stateDir);
  if (databases.length === 0) throw new Error(`no local D1 database with archived_events under ${stateDir}`);
  const statements: { db: DatabaseSync; find: StatementSync; holds: number }[] = databases.map(({ db }) => ({
    db,
    find: db.prepare("SELECT seq FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq >= ?"),
    holds: 0,
  }));
  // The warm-up's rows must become visible from here too, or the D1 observer would watch in vain.
  const lastWarm = Math.max(...warm.map((p) => p.seq));
  const seen = () => statements.some((s) => s.find.all(`${runId}-lag`, room.id, lastWarm).length > 0);
  const seenDeadline = performance.now() + 30_000;
  while (!seen()) {
    if (performance.now() > seenDeadline)
      throw new Error(`the warm-up's rows never appeared in the local D1 files under ${stateDir}`);
    await sleep(50);
  }
  log(`warm; watching ${databases.length} local D1 file(s) with archived_events`);

  const probes: Probe[] = [];
  const w0 = workerdSnapshot(server);
  const start = performance.now();
  let done = false;
  const sending = (async () => {
    while (probes.length < opts.messages) {
      const due = Math.min(opts.messages, Math.floor(((performance.now() - start) / 1000) * opts.rate) + 1);
      while (probes.length < due) probes.push(probe());
      await sleep(2);
    }
  })();

  const searchRequest = new Samples();
  let searchRequests = 0;
  const searching = (async () => {
    while (!done) {
      const round = performance.now();
      const waiting = probes.filter(
        (p) => p.ackAt > 0 && p.searchAt === 0 && round - p.ackAt < opts.timeoutMs,
      );
      const groups: string[][] = [];
      let group: string[] = [];
      let len = 0;
      for (const p of waiting) {
        const add = (group.length > 0 ? 4 : 0) + p.token.length;
        if (group.length > 0 && len + add > MAX_Q) {
          groups.push(group);
          group = [];
          len = 0;
        }
        group.push(p.token);
        len += add;
      }
      if (group.length > 0) groups.push(group);
      await Promise.all(
        groups.map(async (tokens) => {
          searchRequests++;
          const r = await timedSearch(base, token, tokens.join(" OR "), room.id);
          searchRequest.push(r.ms);
          if (r.error) return bump(errors, `search ${r.error}`);
          for (const hitText of r.texts) {
            const p = byToken.get(/\S+$/.exec(hitText)?.[0] ?? "");
            if (p && p.searchAt === 0 && p.ackAt > 0) p.searchAt = r.end;
          }
        }),
      );
      const left = round + opts.pollMs - performance.now();
      if (left > 0) await sleep(left);
    }
  })();

  let d1Polls = 0;
  const watching = (async () => {
    while (!done) {
      const round = performance.now();
      const waiting = probes.filter((p) => p.ackAt > 0 && p.d1At === 0 && round - p.ackAt < opts.timeoutMs);
      if (waiting.length > 0) {
        const from = Math.min(...waiting.map((p) => p.seq));
        const bySeq = new Map(waiting.map((p) => [p.seq, p]));
        for (const s of statements) {
          d1Polls++;
          try {
            const rows = s.find.all(`${runId}-lag`, room.id, from) as { seq: number }[];
            const now = performance.now();
            for (const { seq } of rows) {
              const p = bySeq.get(seq);
              if (p && p.d1At === 0) {
                p.d1At = now;
                s.holds++;
              }
            }
          } catch (err) {
            bump(errors, `d1 read ${err instanceof Error ? err.message.slice(0, 60) : String(err)}`);
          }
        }
      }
      const left = round + opts.d1PollMs - performance.now();
      if (left > 0) await sleep(left);
    }
  })();

  await sending;
  const deadline = performance.now() + opts.timeoutMs + 5000;
  while (performance.now() < deadline) {
    const now = performance.now();
    const open = probes.some(
      (p) =>
        p.ackAt === 0 ||
        ((p.searchAt === 0 || p.d1At === 0) &&
          now - p.ackAt < opts.timeoutMs + Math.max(opts.pollMs, opts.d1PollMs)),
    );
    if (!open) break;
    await sleep(20);
  }
  done = true;
  await Promise.all([searching, watching]);
  const phaseMs = performance.now() - start;
  const w1 = workerdSnapshot(server);
  ws.close();
  sockets.delete(ws);
  for (const { db } of statements) db.close();

  const searchLag = new Samples();
  const d1Lag = new Samples();
  const ack = new Samples();
  for (const p of probes) {
    if (p.ackAt === 0) continue;
    ack.push(p.ackAt - p.sentAt);
    if (p.searchAt > 0) searchLag.push(p.searchAt - p.ackAt);
    if (p.d1At > 0) d1Lag.push(p.d1At - p.ackAt);
  }
  const acked = probes.filter((p) => p.ackAt > 0);
  return {
    sent: probes.length,
    acked: acked.length,
    search: {
      lag: searchLag.summary(),
      found: acked.filter((p) => p.searchAt > 0).length,
      missing: acked.filter((p) => p.searchAt === 0).length,
    },
    d1: {
      lag: d1Lag.summary(),
      found: acked.filter((p) => p.d1At > 0).length,
      missing: acked.filter((p) => p.d1At === 0).length,
    },
    ack: ack.summary(),
    searchRequest: searchRequest.summary(),
    searchRequests,
    d1Polls,
    d1Files: statements.length,
    d1FilesWithProbes: statements.filter((s) => s.holds > 0).length,
    phaseMs,
    serverCpuMsPerMessage: (((w1.ticks - w0.ticks) / TICKS) * 1000) / Math.max(1, probes.length),
    errors,
  };
}
