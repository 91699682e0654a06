/**
 * @module The pipeline bench's counting harness (bench/pipeline-counts.ts): runs inside workerd under
 * @cloudflare/vitest-plugin, in a checkout of either design (this one, or the pre-shards one, into
 * which bench/pipeline-counts.ts copies it with ledger.ts for the run and removes them afterwards),
 * and counts (ledger.ts) what every message costs in each store while real traffic goes through the
 * public surface.
 *
 * Only what both designs share is used: dev sign-in, `POST /api/rooms`, `/join`, the room socket,
 * and the rooms' `archiveState()`. The flow (the plan comes as a binding of the generated config):
 * `rooms` channels of one tenant with `members` members each, one member's socket sending in each
 * (with `readersMark`, every other member's socket marking what it receives read);
 * a fill at the ack-window pace, then the measured phases: a burst of `burst` messages per room,
 * `paced` messages per room one every `intervalMs`, then edits, reactions and deletions paced the
 * same, and, where the worker has a scheduled handler (the D1 history's window), one run of it 91
 * days on. Between phases it waits until every room is quiet: the D1 archive has confirmed
 * everything and no alarm is due within 5 s. Each phase's ledger, the stores' sizes around it, and
 * what the derived stores hold at the end go back through the `BENCH_SINK` binding.
 */

import { applyD1Migrations, type D1Migration } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { it } from "vitest";
import * as main from "../../worker/index.ts";
import {
  als,
  d1Names,
  diff,
  HARNESS,
  inObject,
  instrument,
  objectNames,
  snapshot,
  stubOf,
} from "./ledger.ts";
import type { HarnessPlan, PhaseResult, Sizes } from "./plan.ts";

// ---- what the generated config passes in ------------------------------------------------------

const bindings = env as unknown as Record<string, unknown>;
const plan = JSON.parse(String(bindings.BENCH_PLAN)) as HarnessPlan;
const sink = bindings.BENCH_SINK as Fetcher;
instrument(main as unknown as Record<string, unknown>, bindings);
const handlers = main.default as unknown as Record<
  string,
  ((...a: unknown[]) => Promise<unknown>) | undefined
>;

function progress(line: string): void {
  void sink.fetch("http://sink/log", { method: "POST", body: `${plan.design}: ${line}` }).catch(() => {});
}

// ---- the public surface: users, rooms, sockets ---------------------------------------------------

const ORIGIN = "http://parley.bench";

async function call<T>(method: string, path: string, token: string | null, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers["cf-access-jwt-assertion"] = token;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await exports.default.fetch(
    new Request(`${ORIGIN}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
  );
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 200)}`);
  return (text ? JSON.parse(text) : {}) as T;
}

interface User {
  token: string;
  id: string;
}

async function login(tenant: string, n: number): Promise<User> {
  const { token } = await call<{ token: string }>("POST", "/auth/dev/login", null, {
    email: `member${n}@${tenant}.bench.test`,
    name: `Member ${n}`,
    tenant,
  });
  const me = await call<{ user: { id: string } }>("GET", "/api/me", token);
  return { token, id: me.user.id };
}

/** One sender's socket: sends commands, resolves each on its ack (or error). */
class Sender {
  readonly #ws: WebSocket;
  readonly #waiting = new Map<string, { resolve: (seq: number) => void; reject: (e: Error) => void }>();
  #n = 0;
  readonly seqs: number[] = [];
  errors = 0;

  readonly tag: string;

  private constructor(ws: WebSocket, tag: string) {
    this.#ws = ws;
    this.tag = tag;
    ws.addEventListener("message", (e) => {
      const frame = JSON.parse(String(e.data)) as {
        type: string;
        clientId?: string;
        seq?: number;
        code?: string;
      };
      const w = frame.clientId === undefined ? undefined : this.#waiting.get(frame.clientId);
      if (!w || frame.clientId === undefined) return;
      this.#waiting.delete(frame.clientId);
      if (frame.type === "ack" && typeof frame.seq === "number") w.resolve(frame.seq);
      else if (frame.type === "error") {
        this.errors++;
        w.reject(new Error(`refused: ${frame.code}`));
      }
    });
  }

  static async open(user: User, roomId: string, tag: string): Promise<Sender> {
    const res = await exports.default.fetch(
      new Request(`${ORIGIN}/api/rooms/${roomId}/ws?after=0`, {
        headers: { upgrade: "websocket", "cf-access-jwt-assertion": user.token },
      }),
    );
    if (!res.webSocket) throw new Error(`upgrade refused: ${res.status}`);
    res.webSocket.accept();
    return new Sender(res.webSocket, tag);
  }

  command(frame: Record<string, unknown>): Promise<number> {
    const clientId = `${this.tag}-${++this.#n}`;
    return new Promise<number>((resolve, reject) => {
      this.#waiting.set(clientId, { resolve, reject });
      this.#ws.send(JSON.stringify({ ...frame, clientId }));
    });
  }

  get inFlight(): number {
    return this.#waiting.size;
  }

  close(): void {
    this.#ws.close(1000, "done");
  }
}

/**
 * A member with the room open (`--readers-mark`): for each frame of events it receives it sends
 * `{"type":"read","seq"}` with the newest seq, as the web client's room view does, never backwards.
 */
class Reader {
  readonly #ws: WebSocket;
  #marked = 0;
  reads = 0;
  errors = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.addEventListener("message", (e) => {
      const frame = JSON.parse(String(e.data)) as {
        type: string;
        event?: { seq: number };
        events?: { seq: number }[];
      };
      if (frame.type === "error") this.errors++;
      const seq =
        frame.type === "event"
          ? frame.event?.seq
          : frame.type === "events"
            ? frame.events?.at(-1)?.seq
            : undefined;
      if (typeof seq !== "number" || seq <= this.#marked) return;
      this.#marked = seq;
      this.reads++;
      ws.send(JSON.stringify({ type: "read", seq }));
    });
  }

  static async open(user: User, roomId: string): Promise<Reader> {
    const res = await exports.default.fetch(
      new Request(`${ORIGIN}/api/rooms/${roomId}/ws?after=0`, {
        headers: { upgrade: "websocket", "cf-access-jwt-assertion": user.token },
      }),
    );
    if (!res.webSocket) throw new Error(`reader upgrade refused: ${res.status}`);
    res.webSocket.accept();
    return new Reader(res.webSocket);
  }

  close(): void {
    this.#ws.close(1000, "done");
  }
}

interface BenchRoom {
  id: string;
  sender: Sender;
  readers: Reader[];
  tenant: string;
}

let textIndex = 0;
const nextText = (): string => {
  const t = plan.texts[textIndex % plan.texts.length] as string;
  textIndex++;
  return t;
};

/** Sends `n` messages in every room, each room keeping at most `window` unacknowledged. */
async function burst(rooms: BenchRoom[], n: number, window: number): Promise<void> {
  await Promise.all(
    rooms.map(async (room) => {
      let sent = 0;
      const inFlight = new Set<Promise<unknown>>();
      while (sent < n) {
        while (inFlight.size >= window) await Promise.race(inFlight);
        const p: Promise<unknown> = room.sender
          .command({ type: "send", text: nextText() })
          .then((seq) => room.sender.seqs.push(seq))
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
        sent++;
      }
      await Promise.all(inFlight);
    }),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends `n` commands per room, one every `intervalMs` in each room, the rooms staggered evenly. */
async function paced(
  rooms: BenchRoom[],
  n: number,
  intervalMs: number,
  frame: (room: BenchRoom, i: number) => Record<string, unknown>,
  onAck: (room: BenchRoom, seq: number) => void = () => {},
): Promise<void> {
  const start = Date.now();
  await Promise.all(
    rooms.map(async (room, r) => {
      const offset = (intervalMs * r) / rooms.length;
      const acks: Promise<unknown>[] = [];
      for (let i = 0; i < n; i++) {
        const due = start + offset + i * intervalMs;
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
        acks.push(room.sender.command(frame(room, i)).then((seq) => onAck(room, seq)));
      }
      await Promise.all(acks);
    }),
  );
}

// ---- quiet, snapshots, sizes ---------------------------------------------------------------------

interface ArchiveStateLike {
  lastSeq: number;
  archivedThrough: number;
}

/** Waits until every room has its archive confirmed and no alarm due within 5 s, twice in a row. */
async function quiet(rooms: BenchRoom[], timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let calm = 0;
  while (calm < 2) {
    if (Date.now() > deadline) throw new Error("the rooms did not go quiet in time");
    await sleep(600);
    let all = true;
    for (const room of rooms) {
      const ok = await inObject(stubOf("ROOM", `${room.tenant}:${room.id}`), async (instance, state) => {
        const s = (instance as { archiveState(): ArchiveStateLike }).archiveState();
        const alarm = await state.storage.getAlarm();
        return s.archivedThrough >= s.lastSeq && (alarm === null || alarm > Date.now() + 5000);
      });
      if (!ok) all = false;
    }
    calm = all ? calm + 1 : 0;
  }
}

async function sizes(rooms: BenchRoom[]): Promise<Sizes> {
  const objects: Record<string, number> = {};
  const add = (k: string, n: number) => {
    objects[k] = (objects[k] ?? 0) + n;
  };
  let events = 0;
  let rowsHeld = 0;
  for (const room of rooms) {
    const r = await inObject(stubOf("ROOM", `${room.tenant}:${room.id}`), (i, s) => {
      const st = (i as { archiveState(): ArchiveStateLike & { floor?: number } }).archiveState();
      return { bytes: s.storage.sql.databaseSize, lastSeq: st.lastSeq, floor: st.floor ?? 0 };
    });
    add("Room", r.bytes);
    events += r.lastSeq;
    rowsHeld += r.lastSeq - r.floor;
  }
  let searchDocs = 0;
  for (const name of objectNames.get("SEARCH") ?? []) {
    const r = await inObject(stubOf("SEARCH", name), (_, s) => ({
      bytes: s.storage.sql.databaseSize,
      docs: s.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM docs").one().n,
    }));
    add("SearchShard", r.bytes);
    searchDocs += r.docs;
  }
  const d1: Record<string, number> = {};
  for (const name of new Set(d1Names.values())) {
    const db = bindings[name] as D1Database;
    d1[name] = await als.run(HARNESS, async () => (await db.prepare("SELECT 1").run()).meta.size_after);
  }
  let count = 0;
  let bytes = 0;
  await als.run(HARNESS, async () => {
    for (const [name, value] of Object.entries(bindings)) {
      if (!value || Object.getPrototypeOf(value)?.constructor?.name !== "R2Bucket" || name.endsWith("_EU"))
        continue;
      let cursor: string | undefined;
      do {
        const page = await (value as R2Bucket).list({ cursor, limit: 1000 });
        for (const o of page.objects) {
          count++;
          bytes += o.size;
        }
        cursor = page.truncated ? page.cursor : undefined;
      } while (cursor);
    }
  });
  return { objects, rooms: { events, rowsHeld }, searchDocs, d1, r2: { objects: count, bytes } };
}

// ---- the run ------------------------------------------------------------------------------------

it("counts what each message costs in every store", async () => {
  const started = Date.now();
  // Migrations of every D1 database, as `npm start` applies them: directories and history shards.
  await als.run(HARNESS, async () => {
    for (const [name, value] of Object.entries(bindings)) {
      if (!d1Names.has((value as { fetcher?: unknown })?.fetcher)) continue;
      const list = (
        name.startsWith("HISTORY") ? bindings.TEST_HISTORY_MIGRATIONS : bindings.TEST_MIGRATIONS
      ) as D1Migration[] | undefined;
      if (list) await applyD1Migrations(value as D1Database, list);
    }
  });

  const tenant = `bench${Date.now().toString(36)}`;
  const users: User[] = [];
  for (let i = 0; i < plan.members; i++) users.push(await login(tenant, i));
  const rooms: BenchRoom[] = [];
  for (let r = 0; r < plan.rooms; r++) {
    const owner = users[r % users.length] as User;
    const { id } = await call<{ id: string }>("POST", "/api/rooms", owner.token, {
      name: `bench ${r}`,
      kind: "channel",
    });
    for (const u of users) if (u !== owner) await call("POST", `/api/rooms/${id}/join`, u.token);
    // The storage prototypes are patched on the first object the harness enters.
    await inObject(stubOf("ROOM", `${tenant}:${id}`), () => undefined);
    const readers: Reader[] = [];
    if (plan.readersMark) for (const u of users) if (u !== owner) readers.push(await Reader.open(u, id));
    rooms.push({ id, tenant, readers, sender: await Sender.open(owner, id, `r${r}`) });
  }
  progress(
    `${rooms.length} rooms of ${plan.members} members ready${plan.readersMark ? `, ${plan.members - 1} marking reads in each` : ""}`,
  );

  const phases: PhaseResult[] = [];
  const phase = async (name: string, units: number, work: () => Promise<void>): Promise<void> => {
    await quiet(rooms);
    const sizesBefore = await sizes(rooms);
    const before = snapshot();
    const t0 = Date.now();
    await work();
    await quiet(rooms);
    // Activity notices leave a room up to 250 ms after its last event.
    await sleep(1000);
    phases.push({
      name,
      units,
      seconds: (Date.now() - t0) / 1000,
      tallies: diff(snapshot(), before),
      sizesBefore,
      sizesAfter: await sizes(rooms),
    });
    progress(`phase ${name}: ${units} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  };

  await phase("fill", plan.rooms * plan.fill, () => burst(rooms, plan.fill, plan.window));
  await phase("burst", plan.rooms * plan.burst, () => burst(rooms, plan.burst, plan.window));
  const pacedSeqs = new Map<string, number[]>();
  await phase("paced", plan.rooms * plan.paced, () =>
    paced(
      rooms,
      plan.paced,
      plan.intervalMs,
      () => ({ type: "send", text: nextText() }),
      (room, seq) => pacedSeqs.set(room.id, [...(pacedSeqs.get(room.id) ?? []), seq]),
    ),
  );
  const target = (room: BenchRoom, i: number) => {
    const seqs = (pacedSeqs.get(room.id) ?? []).sort((a, b) => a - b);
    return seqs[i % Math.max(1, seqs.length)] as number;
  };
  await phase("edit", plan.rooms * plan.edits, () =>
    paced(rooms, plan.edits, plan.intervalMs, (room, i) => ({
      type: "edit",
      target: target(room, i),
      text: `${nextText()} (edited)`,
    })),
  );
  await phase("react", plan.rooms * plan.reactions, () =>
    paced(rooms, plan.reactions, plan.intervalMs, (room, i) => ({
      type: "react",
      target: target(room, i),
      emoji: "👍",
      on: true,
    })),
  );
  await phase("delete", plan.rooms * plan.deletes, () =>
    paced(rooms, plan.deletes, plan.intervalMs, (room, i) => ({ type: "delete", target: target(room, i) })),
  );
  const scheduled = handlers.scheduled;
  if (scheduled) {
    // The D1 history's window, as its cron would run it once every row is older than 90 days.
    await phase("window", 0, async () => {
      const at = Date.now() + 91 * 24 * 3600 * 1000;
      await scheduled({ scheduledTime: at, cron: "*/30 * * * *", noRetry() {} }, env, {
        waitUntil() {},
        passThroughOnException() {},
      });
    });
  }

  // Checks: what each derived store holds, against what the rooms sent.
  const checks: Record<string, number> = {
    messagesAcked:
      rooms.reduce((n, r) => n + r.sender.seqs.length, 0) + [...pacedSeqs.values()].flat().length,
    refusals: rooms.reduce((n, r) => n + r.sender.errors, 0),
  };
  if (plan.readersMark) {
    checks.readMarksSent = rooms.reduce((n, r) => n + r.readers.reduce((m, x) => m + x.reads, 0), 0);
    checks.readerErrors = rooms.reduce((n, r) => n + r.readers.reduce((m, x) => m + x.errors, 0), 0);
  }
  await als.run(HARNESS, async () => {
    for (const [name, value] of Object.entries(bindings)) {
      if (!d1Names.has((value as { fetcher?: unknown })?.fetcher)) continue;
      try {
        const row = await (value as D1Database)
          .prepare("SELECT COUNT(*) AS n FROM archived_events WHERE tenant_id = ?")
          .bind(tenant)
          .first<{ n: number }>();
        checks[`${name}.archived_events`] = row?.n ?? 0;
      } catch {
        // No such table in this database.
      }
    }
  });
  let docs = 0;
  for (const name of objectNames.get("SEARCH") ?? []) {
    docs += await inObject(stubOf("SEARCH", name), (_, s) => {
      try {
        return s.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM docs").one().n;
      } catch {
        return 0;
      }
    });
  }
  if (objectNames.has("SEARCH")) checks["SearchShard.docs"] = docs;
  let lastSeqs = 0;
  for (const room of rooms)
    lastSeqs += await inObject(
      stubOf("ROOM", `${room.tenant}:${room.id}`),
      (i) => (i as { archiveState(): ArchiveStateLike }).archiveState().lastSeq,
    );
  checks.roomEvents = lastSeqs;
  for (const room of rooms) {
    room.sender.close();
    for (const reader of room.readers) reader.close();
  }

  await sink.fetch("http://sink/result", {
    method: "POST",
    body: JSON.stringify({
      design: plan.design,
      plan: { ...plan, texts: plan.texts.length },
      phases,
      checks,
      seconds: (Date.now() - started) / 1000,
    }),
  });
});
