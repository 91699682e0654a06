/**
 * @module Filling the search-at-scale bench's tenants. The current design through its real
 * pipeline: every message is a `send` over the room's WebSocket (as its author), many rooms at once,
 * each socket keeping a window of unacknowledged sends, so the rooms ship to their search shards and
 * the room-events queue as they would in use. The previous design by writing its archive table
 * directly (`wrangler d1 execute --local` with the server stopped, which fires its FTS5 triggers),
 * the rows its queue consumer would have written. Then: waiting until every room's last message is
 * findable, through `GET /api/search` (each room's sentinel word).
 */
import { spawnSync } from "node:child_process";
import { closeSync, openSync, rmSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import WebSocket from "ws";
import { FLOW_PARAM, parseServerFrame, Receipts, type ServerFrame } from "../protocol/index.ts";
import type { Corpus } from "./corpus.ts";
import {
  authorOf,
  messagesIn,
  type RoomLive,
  roomTexts,
  sentinels,
  type TenantLive,
  type User,
} from "./search-world.ts";
import { pool } from "./targets.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface FillResult {
  messages: number;
  seconds: number;
  /** Sends refused for good (error frames by code), reconnects after a dropped socket. */
  errors: Map<string, number>;
  reconnects: number;
  /** The longest time without any acknowledgement while sends were outstanding. */
  longestPauseMs: number;
}

const bump = (m: Map<string, number>, k: string, n = 1) => m.set(k, (m.get(k) ?? 0) + n);

/** Every socket the fill has open, so that a signal can close them before the servers stop. */
const openSockets = new Set<WebSocket>();

export function closeFillSockets(): void {
  for (const ws of openSockets) ws.terminate();
  openSockets.clear();
}

interface FillJob {
  live: TenantLive;
  r: number;
}

interface Progress {
  acked: number;
  lastAckAt: number;
  longestPauseMs: number;
  errors: Map<string, number>;
  reconnects: number;
}

/**
 * Sends room `r`'s messages over one socket of its author, `window` unacknowledged at a time; a
 * dropped socket reconnects from the last seq it saw and resends what was unacknowledged (the same
 * clientIds, so a send that had landed is acknowledged, not repeated).
 */
function fillRoom(
  base: string,
  job: FillJob,
  corpus: Corpus,
  window: number,
  progress: Progress,
): Promise<void> {
  const { live, r } = job;
  const room = live.rooms[r] as RoomLive;
  const author = live.authors[authorOf(live.plan, r)] as User;
  const n = messagesIn(live.plan, r);
  const text = roomTexts(corpus, live.plan, r);
  const inflight = new Map<number, string>();
  let next = 0;
  let done = 0;
  let lastSeq = room.lastSeq;
  let attempts = 0;
  return new Promise<void>((resolveJob, rejectJob) => {
    if (n === 0) return resolveJob();
    let finished = false;
    const finish = (err?: Error) => {
      if (finished) return;
      finished = true;
      if (err) rejectJob(err);
      else resolveJob();
    };
    const connect = () => {
      const ws = new WebSocket(
        `${base.replace(/^http/, "ws")}/api/rooms/${encodeURIComponent(room.id)}/ws?after=${lastSeq}&${FLOW_PARAM}`,
        { headers: { "Cf-Access-Jwt-Assertion": author.token }, perMessageDeflate: false },
      );
      openSockets.add(ws);
      const receipts = new Receipts();
      let ready = false;
      const send = (i: number, t: string) =>
        ws.send(JSON.stringify({ type: "send", clientId: `f${i}`, text: t }));
      const pump = () => {
        if (!ready || ws.readyState !== WebSocket.OPEN) return;
        while (inflight.size < window && next < n) {
          const t = text(next);
          inflight.set(next, t);
          send(next, t);
          next++;
        }
        if (done === n) {
          ws.close(1000);
          finish();
        }
      };
      ws.on("message", (data: Buffer) => {
        const frame = parseServerFrame(data.toString()) as ServerFrame | null;
        if (!frame) return;
        switch (frame.type) {
          case "event":
          case "events": {
            const seq = frame.type === "event" ? frame.event.seq : (frame.events.at(-1)?.seq ?? lastSeq);
            lastSeq = Math.max(lastSeq, seq);
            const due = receipts.handled(data.length, lastSeq);
            if (due) ws.send(JSON.stringify(due));
            return;
          }
          case "ready":
          case "gap":
            if (!ready) {
              ready = true;
              attempts = 0;
              // After a reconnect: what was in flight again, under the same clientIds.
              for (const [i, t] of inflight) send(i, t);
              pump();
            }
            return;
          case "ack": {
            const i = Number(frame.clientId.slice(1));
            if (!inflight.delete(i)) return;
            done++;
            progress.acked++;
            const at = performance.now();
            progress.longestPauseMs = Math.max(progress.longestPauseMs, at - progress.lastAckAt);
            progress.lastAckAt = at;
            pump();
            return;
          }
          case "error": {
            const i = typeof frame.clientId === "string" ? Number(frame.clientId.slice(1)) : Number.NaN;
            const t = inflight.get(i);
            if (t === undefined) {
              bump(progress.errors, frame.code);
              return;
            }
            if (frame.code === "rate_limited") {
              setTimeout(
                () => ws.readyState === WebSocket.OPEN && send(i, t),
                (frame.retryAfter ?? 1) * 1000,
              );
              return;
            }
            // Refused for good: counted, and the room goes on without it.
            bump(progress.errors, frame.code);
            inflight.delete(i);
            done++;
            pump();
            return;
          }
          default:
            return;
        }
      });
      ws.on("error", () => {});
      ws.on("close", (code) => {
        openSockets.delete(ws);
        if (finished) return;
        progress.reconnects++;
        bump(progress.errors, `close ${code}`);
        if (++attempts > 10) return finish(new Error(`room ${r}: the socket closed ${attempts} times`));
        setTimeout(connect, 250 * attempts);
      });
    };
    connect();
  });
}

/**
 * Fills the rooms of `tenants` through their sockets: at most `concurrency` rooms at a time (a new
 * one starts when one finishes), rooms of different tenants interleaved. Logs the rate every 15 s.
 */
export async function fillOverSockets(
  base: string,
  tenants: TenantLive[],
  corpus: Corpus,
  o: { concurrency: number; window: number; log: (m: string) => void },
): Promise<FillResult> {
  const jobs: FillJob[] = [];
  const most = Math.max(...tenants.map((t) => t.plan.rooms));
  for (let r = 0; r < most; r++) for (const live of tenants) if (r < live.plan.rooms) jobs.push({ live, r });
  const total = tenants.reduce((a, t) => a + t.plan.messages, 0);
  const t0 = performance.now();
  const progress: Progress = { acked: 0, lastAckAt: t0, longestPauseMs: 0, errors: new Map(), reconnects: 0 };
  let last = { at: t0, acked: 0 };
  const ticker = setInterval(() => {
    const at = performance.now();
    const rate = (progress.acked - last.acked) / ((at - last.at) / 1000);
    last = { at, acked: progress.acked };
    o.log(
      `fill: ${progress.acked.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} acked, ${Math.round(rate)} msg/s now, ${Math.round(progress.acked / ((at - t0) / 1000))} msg/s overall, longest pause ${(progress.longestPauseMs / 1000).toFixed(1)} s`,
    );
  }, 15_000);
  try {
    await pool(jobs, o.concurrency, (job) => fillRoom(base, job, corpus, o.window, progress));
  } finally {
    clearInterval(ticker);
  }
  return {
    messages: progress.acked,
    seconds: (performance.now() - t0) / 1000,
    errors: progress.errors,
    reconnects: progress.reconnects,
    longestPauseMs: progress.longestPauseMs,
  };
}

// ---------------------------------------------------------------------------------------------
// The previous design: its archive table, written directly

const sql = (s: string) => `'${s.replace(/'/g, "''")}'`;
/** D1 refuses a statement longer than 100,000 bytes (SQLITE_TOOBIG). */
const MAX_STATEMENT_CHARS = 90_000;
/** Rows per file given to one `wrangler d1 execute` (about 40 MiB of SQL). */
const ROWS_PER_FILE = 100_000;

/**
 * Runs one SQL file or command with `wrangler d1 execute DB --local` in the checkout at `appRoot`
 * (its wrangler.toml and wrangler) on a stopped server's state; returns stdout (`--json`).
 */
export function d1Execute(appRoot: string, stateDir: string, what: ["--file" | "--command", string]): string {
  const result = spawnSync(
    process.execPath,
    [
      resolve(appRoot, "node_modules/wrangler/bin/wrangler.js"),
      "d1",
      "execute",
      "DB",
      "--local",
      "--persist-to",
      stateDir,
      "--yes",
      "--json",
      ...what,
    ],
    {
      cwd: appRoot,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      timeout: 900_000,
    },
  );
  if (result.status !== 0) {
    throw new Error(
      `wrangler d1 execute ${what[0]} failed (${result.status ?? result.signal}): ${(result.stderr || result.stdout).slice(-800)}`,
    );
  }
  return result.stdout;
}

/**
 * Writes the rooms' messages into `archived_events` of the previous design's directory database as
 * its queue consumer would (one row per message event: tenant, room, seq after the room's own
 * events, kind, author, ts, text, text_seq = seq, the event's JSON in the room's key order), rooms
 * interleaved as a queue would deliver them, in files of 100,000 rows, each through `wrangler d1
 * execute` with the server stopped: the table's triggers index archive_fts as they would the
 * consumer's inserts.
 */
export function fillArchiveTable(
  appRoot: string,
  stateDir: string,
  tenants: TenantLive[],
  corpus: Corpus,
  log: (m: string) => void,
): FillResult & { sqlMiB: number; rows: number } {
  const t0 = performance.now();
  const file = join(stateDir, "fill.sql");
  let rows = 0;
  let bytes = 0;
  let fileRows = 0;
  let fd = -1;
  let batch: string[] = [];
  let chars = 0;
  let ts = Date.now();
  const flushStatement = () => {
    if (batch.length === 0) return;
    const statement = `INSERT INTO archived_events (tenant_id, room_id, seq, kind, author_id, author_name, ts, target, text, text_seq, deleted, json) VALUES\n${batch.join(",\n")};\n`;
    if (fd < 0) fd = openSync(file, "w");
    bytes += writeSync(fd, statement);
    batch = [];
    chars = 0;
  };
  const runFile = () => {
    flushStatement();
    if (fd < 0) return;
    closeSync(fd);
    fd = -1;
    d1Execute(appRoot, stateDir, ["--file", file]);
    rmSync(file, { force: true });
    log(`archive table: ${rows.toLocaleString("en-US")} rows written`);
    fileRows = 0;
  };
  for (const live of tenants) {
    const { plan } = live;
    const texts = live.rooms.map((_, r) => roomTexts(corpus, plan, r));
    const most = Math.max(...live.rooms.map((_, r) => messagesIn(plan, r)));
    for (let i = 0; i < most; i++) {
      for (let r = 0; r < plan.rooms; r++) {
        if (i >= messagesIn(plan, r)) continue;
        const room = live.rooms[r] as RoomLive;
        const author = live.authors[authorOf(plan, r)] as User;
        const seq = room.lastSeq + 1 + i;
        const text = (texts[r] as (i: number) => string)(i);
        ts += 1;
        const json = JSON.stringify({
          seq,
          kind: "message",
          ts,
          author: { id: author.id, name: author.name },
          clientId: `f${i}`,
          text,
        });
        const row = `(${sql(plan.slug)},${sql(room.id)},${seq},'message',${sql(author.id)},${sql(author.name)},${ts},NULL,${sql(text)},${seq},0,${sql(json)})`;
        if (chars + row.length + 300 > MAX_STATEMENT_CHARS) flushStatement();
        batch.push(row);
        chars += row.length + 2;
        rows++;
        if (++fileRows >= ROWS_PER_FILE) runFile();
      }
    }
  }
  runFile();
  return {
    messages: rows,
    rows,
    seconds: (performance.now() - t0) / 1000,
    sqlMiB: bytes / 1024 ** 2,
    errors: new Map(),
    reconnects: 0,
    longestPauseMs: 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Indexed?

/** `GET /api/search` refuses a q longer than this (both designs). */
const MAX_Q = 200;

/**
 * Waits until every room's sentinel is found by `GET /api/search` as `user` (a member of every
 * room): the sentinel is its room's last message and a room ships in order, so then the whole room
 * is searchable. Sentinels are ORed, as many per request as q allows. Returns the seconds it took
 * and how many are still missing at `timeoutMs`.
 */
export async function waitIndexed(
  base: string,
  tenants: TenantLive[],
  timeoutMs: number,
  log: (m: string) => void,
): Promise<{ seconds: number; missing: number; requests: number }> {
  const t0 = performance.now();
  const pending = new Map<TenantLive, Set<string>>();
  for (const live of tenants) pending.set(live, new Set(sentinels(live).map((s) => s.word)));
  let requests = 0;
  const left = () => [...pending.values()].reduce((a, s) => a + s.size, 0);
  for (let round = 0; left() > 0; round++) {
    if (round > 0) {
      if (performance.now() - t0 > timeoutMs) break;
      await sleep(1000);
    }
    for (const [live, words] of pending) {
      const groups: string[] = [];
      let q = "";
      for (const w of words) {
        if (q !== "" && q.length + w.length + 4 > MAX_Q) {
          groups.push(q);
          q = "";
        }
        q = q === "" ? w : `${q} OR ${w}`;
      }
      if (q !== "") groups.push(q);
      const user = live.authors[0] as User;
      await pool(groups, 4, async (group) => {
        requests++;
        const res = await fetch(`${base}/api/search?q=${encodeURIComponent(group)}`, {
          headers: { "Cf-Access-Jwt-Assertion": user.token },
          signal: AbortSignal.timeout(30_000),
        }).catch(() => null);
        if (!res?.ok) return;
        const body = (await res.json()) as { hits: { text: string }[] };
        for (const hit of body.hits) {
          const word = hit.text.slice(hit.text.lastIndexOf(" ") + 1);
          words.delete(word);
        }
      });
    }
    if (round % 10 === 9) log(`indexed? ${left()} rooms not searchable yet`);
  }
  return { seconds: (performance.now() - t0) / 1000, missing: left(), requests };
}
