/**
 * @module `npm run chaos`: acked means durable, through the real SDK. Runs the local runtime the way
 * `npm start` does, drives steady message traffic into a few rooms through client/sdk RoomSessions
 * (one per client, each with its MemoryOutboxStore and a `ws` socket carrying the dev token), SIGKILLs
 * the runtime's whole process group at random moments and restarts it on the same state, lets the
 * sessions reconnect, resume and resend their outboxes on their own, waits until every outbox is
 * empty, then reads every room's log over HTTP and checks that every issued message is there
 * exactly once (at the seq it was acked with), with no gaps, and that what each session delivered
 * through `onEvent` is exactly the log's range it covered, once and in order. After the traffic it
 * deletes a few acked messages and kills the runtime once more while they propagate; once the
 * rooms report their search parts and D1 history shards caught up, it checks that every event of
 * every log is in exactly one history shard with the log's text, every message is found by search
 * exactly once by its own token, and no deleted message is found (scripts/chaos/stores.ts).
 *
 * Besides the senders, each room has readers that go away now and then for a few seconds (the
 * SDK's setNetwork(false), or a closed session followed by a new one started with `after`), so
 * that resuming exercises both the replay and, when they missed more than the server replays, the
 * `gap` answer followed by the SDK paging history over HTTP.
 *
 * Usage: npm run chaos -- [--kills 5] [--seconds 60] [--rooms 3] [--senders 3] [--readers 1]
 *                         [--rate 1000] [--window 8] [--port 8795] [--seed N] [--keep]
 * The same settings may come from the environment: CHAOS_KILLS, CHAOS_SECONDS, CHAOS_ROOMS,
 * CHAOS_SENDERS, CHAOS_READERS, CHAOS_RATE, CHAOS_WINDOW, CHAOS_PORT, CHAOS_SEED, CHAOS_TIMEOUT.
 * Exit status: 0 when every invariant holds, 1 when one fails, 2 when the run itself broke.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { mulberry32 } from "../bench/random.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { Api, show, type User } from "./chaos/api.ts";
import { ChaosClient, Ledger, newCounters, Violations } from "./chaos/client.ts";
import { freePort, Runtime } from "./chaos/runtime.ts";
import { checkStores, historyRows, waitForStores } from "./chaos/stores.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Settings

const { values: flags } = parseArgs({
  options: {
    kills: { type: "string" },
    seconds: { type: "string" },
    rooms: { type: "string" },
    senders: { type: "string" },
    readers: { type: "string" },
    rate: { type: "string" },
    window: { type: "string" },
    port: { type: "string" },
    seed: { type: "string" },
    timeout: { type: "string" },
    keep: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (flags.help) {
  console.log(`npm run chaos -- [options]   (every option also reads CHAOS_<NAME> from the environment)
  --kills N      SIGKILLs of the runtime's process group (default 5)
  --seconds S    length of the traffic phase, kills and restarts included (default 60)
  --rooms N      rooms (default 3)
  --senders N    sending SDK sessions per room, one user each (default 3)
  --readers N    reading SDK sessions per room that go away and resume (default 1)
  --rate N       target new messages per second over all senders (default 1000; the window caps it)
  --window N     unacked messages each sender's outbox may hold (default 8)
  --port N       port for the runtime (default 8795, or a free one if taken)
  --seed N       seed of the schedule: kill moments and reader pauses
  --timeout S    hard limit on the whole run (default: derived from the others)
  --keep         keep the temp dir (state and runtime logs) for inspection`);
  process.exit(0);
}

function setting(name: keyof typeof flags, fallback: number, min: number): number {
  const raw = flags[name] ?? process.env[`CHAOS_${name.toUpperCase()}`];
  if (raw === undefined || raw === "" || typeof raw === "boolean") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    console.error(`chaos: --${name} must be a number ≥ ${min}, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const KILLS = Math.floor(setting("kills", 5, 0));
const SECONDS = setting("seconds", 60, 1);
const ROOMS = Math.floor(setting("rooms", 3, 1));
const SENDERS = Math.floor(setting("senders", 3, 1));
const READERS = Math.floor(setting("readers", 1, 0));
const RATE = setting("rate", 1000, 1);
const WINDOW = Math.floor(setting("window", 8, 1));
const PORT = Math.floor(setting("port", 8795, 0));
const SEED = Math.floor(setting("seed", Math.floor(Math.random() * 2 ** 31), 0));
const TIMEOUT_S = setting("timeout", 120 + SECONDS + KILLS * 30, 10);
const START_TIMEOUT_MS = 60_000;
const DRAIN_TIMEOUT_MS = 30_000;
const RESYNC_TIMEOUT_MS = 20_000;
/** How long the derived stores may take to catch up with the logs after the last restart. */
const STORES_TIMEOUT_MS = 60_000;
/** Acked messages deleted per room after the traffic, before a last kill. */
const DELETES_PER_ROOM = 5;

/** The schedule (kill moments, reader pauses) draws from its own generator, so a seed replays it. */
const schedule = mulberry32(SEED);
/** Message texts and the SDK's reconnect jitter, whose draws depend on timing. */
const jitter = mulberry32(SEED ^ 0x9e3779b9);

const t0 = Date.now();
function log(line: string): void {
  console.log(`[chaos ${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${line}`);
}

// ---------------------------------------------------------------------------------------------
// Resources that must be released on every path out

const tmp = mkdtempSync(join(tmpdir(), "parley-chaos-"));
const stateDir = join(tmp, "state");
const logDir = join(tmp, "logs");
mkdirSync(stateDir);
mkdirSync(logDir);
let runtime = null as Runtime | null;
/** Every client: the senders, then the readers. */
const clients: ChaosClient[] = [];
const pauseTimers = new Set<NodeJS.Timeout>();
let ticker = null as NodeJS.Timeout | null;
let cleaned = false;

function releaseSync(): void {
  if (cleaned) return;
  cleaned = true;
  if (ticker) clearInterval(ticker);
  for (const t of pauseTimers) clearTimeout(t);
  for (const c of clients) c.close();
  runtime?.killGroupSync();
  if (flags.keep) console.log(`chaos: kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true, maxRetries: 3 });
}

process.on("exit", releaseSync);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\nchaos: ${signal}, stopping the runtime`);
    releaseSync();
    process.exit(130);
  });
}
const deadline = setTimeout(() => {
  console.error(`chaos: the run exceeded its hard limit of ${TIMEOUT_S} s; aborting`);
  if (runtime) console.error(`--- runtime log tail ---\n${runtime.logTail()}`);
  releaseSync();
  process.exit(2);
}, TIMEOUT_S * 1000);
deadline.unref();

// ---------------------------------------------------------------------------------------------
// The run

const counters = newCounters();
const violations = new Violations();
const ledgers: Ledger[] = [];
let kills = 0;
/** Time the runtime was up with traffic flowing, and the acks received in it. */
let upMs = 0;

async function waitFor(what: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!what()) {
    if (Date.now() >= end) return false;
    await sleep(50);
  }
  return true;
}

async function setup(api: Api): Promise<User[]> {
  const runId = SEED.toString(36);
  const users: User[] = [];
  for (let i = 0; i < SENDERS; i++) {
    const user: User = {
      email: `chaos-${runId}-${i}@chaos.example`,
      name: `Chaos ${i}`,
      tenant: "chaos",
      token: "",
      id: "",
    };
    await api.login(user);
    users.push(user);
  }
  const owner = users[0] as User;
  for (let r = 0; r < ROOMS; r++) {
    const created = await api.request(owner, "POST", "/api/rooms", {
      name: `chaos-${runId}-${r}`,
      kind: "channel",
    });
    const id = (created.body as { id?: unknown } | null)?.id;
    if (created.status !== 201 || typeof id !== "string") {
      throw new Error(`POST /api/rooms → ${created.status} ${show(created.body)}`);
    }
    for (const user of users.slice(1)) {
      const joined = await api.request(user, "POST", `/api/rooms/${id}/join`);
      if (joined.status < 200 || joined.status > 299) {
        throw new Error(`POST /api/rooms/${id}/join → ${joined.status} ${show(joined.body)}`);
      }
    }
    ledgers.push(new Ledger(id));
  }
  return users;
}

const senders = () => clients.filter((c) => c.sender);
const readers = () => clients.filter((c) => !c.sender);
const queued = () => senders().reduce((n, c) => n + c.session.status.queued, 0);

async function trafficFor(ms: number): Promise<void> {
  const ackBefore = counters.acks;
  const started = Date.now();
  for (const reader of readers()) {
    if (schedule() < 0.5) continue;
    const away = 1500 + schedule() * 6500;
    const how = schedule() < 0.5 ? "offline" : "restart";
    const timer = setTimeout(() => {
      pauseTimers.delete(timer);
      reader.pause(away, how);
    }, schedule() * ms);
    pauseTimers.add(timer);
  }
  await sleep(ms);
  const took = Date.now() - started;
  upMs += took;
  log(`  ${counters.acks - ackBefore} acks in ${(took / 1000).toFixed(1)} s`);
}

async function resync(): Promise<void> {
  const started = Date.now();
  if (await waitFor(() => senders().every((c) => c.online), RESYNC_TIMEOUT_MS)) {
    log(`all ${senders().length} senders online in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } else {
    const behind = senders()
      .filter((c) => !c.online)
      .map((c) => `${c.o.key} (${c.session.status.state})`);
    log(`not online after ${RESYNC_TIMEOUT_MS / 1000} s: ${behind.join(", ")} (going on)`);
  }
}

/** Every session online, every message issued acked (or refused), every client at the room's end. */
function drained(): boolean {
  return clients.every((c) => {
    if (!c.online || c.waiting.size > 0 || c.session.status.queued > 0) return false;
    let top = 0;
    for (const seq of c.o.ledger.acks.values()) top = Math.max(top, seq);
    return c.lastSeen >= top;
  });
}

async function run(): Promise<boolean> {
  const port = await freePort(PORT);
  const rt = new Runtime({
    root,
    port,
    stateDir,
    logDir,
    // no rate limit in the way of the load; the smallest replay the protocol allows, so that readers
    // who stayed away get `gap` more often
    // (and no room quota: `--rooms` may ask for more than one person creates in an hour)
    env: {
      PARLEY_USER_COMMANDS_PER_SECOND: "100000",
      PARLEY_REPLAY_CAP: "500",
      PARLEY_USER_ROOMS_PER_HOUR: "1000000",
      // The derived stores' check searches every message, and what a kill took from the local
      // queue is sent again after this (not the minute of the default).
      PARLEY_USER_SEARCHES_PER_MINUTE: "1000000",
      PARLEY_ARCHIVE_RESEND_MS: "2000",
    },
    startTimeoutMs: START_TIMEOUT_MS,
    log,
  });
  runtime = rt;
  log(
    `seed ${SEED}: ${KILLS} kills over ~${SECONDS} s, ${ROOMS} rooms × ${SENDERS} senders, ` +
      `${READERS} readers per room, ${RATE} msg/s target, window ${WINDOW}, port ${port}, state ${stateDir}`,
  );
  await rt.start();
  const api = new Api(rt.url);
  const users = await setup(api);
  log(`set up ${users.length} users and ${ledgers.length} rooms`);

  const client = (ledger: Ledger, user: User, key: string, window: number) =>
    new ChaosClient({
      baseUrl: rt.url,
      api,
      user,
      roomId: ledger.roomId,
      key,
      window,
      ratePerSecond: RATE / (ROOMS * SENDERS),
      ledger,
      counters,
      violations,
      random: jitter,
      log,
    });
  for (const [r, ledger] of ledgers.entries()) {
    for (const [u, user] of users.entries()) clients.push(client(ledger, user, `r${r}u${u}`, WINDOW));
  }
  for (const [r, ledger] of ledgers.entries()) {
    for (let i = 0; i < READERS; i++) {
      clients.push(client(ledger, users[i % users.length] as User, `r${r}w${i}`, 0));
    }
  }
  if (!(await waitFor(() => clients.every((c) => c.online), RESYNC_TIMEOUT_MS))) {
    throw new Error("the SDK sessions could not connect to the room sockets");
  }
  let last = Date.now();
  ticker = setInterval(() => {
    const now = Date.now();
    const dt = Math.min(0.2, (now - last) / 1000);
    last = now;
    for (const c of clients) c.tick(dt);
  }, 10);

  const trafficStart = Date.now();
  for (let k = 1; k <= KILLS; k++) {
    const delay = 1000 + schedule() * 3000;
    log(`traffic for ${(delay / 1000).toFixed(1)} s, then kill #${k}`);
    await trafficFor(delay);
    await rt.kill();
    kills++;
    // What the outboxes hold now was not acknowledged before the runtime died: it must end up in
    // the log exactly once, from the outbox (or, if stored, settled by the replay).
    for (const c of senders()) {
      for (const entry of c.session.queued) c.o.ledger.unackedAtKill.add(entry.clientId);
    }
    log(`kill #${k}: SIGKILLed the process group with ${queued()} messages in the outboxes; restarting`);
    await rt.start();
    await resync();
  }
  const rest = Math.max(2000, SECONDS * 1000 - (Date.now() - trafficStart));
  log(`traffic for ${(rest / 1000).toFixed(1)} s after the last restart`);
  await trafficFor(rest);

  log("stopping new messages; waiting for every outbox to empty");
  for (const c of clients) c.producing = false;
  for (const t of pauseTimers) clearTimeout(t);
  pauseTimers.clear();
  for (const c of readers()) c.resume();
  const drainStart = Date.now();
  if (await waitFor(drained, DRAIN_TIMEOUT_MS)) {
    log(`drained in ${((Date.now() - drainStart) / 1000).toFixed(1)} s`);
  } else {
    const late = clients
      .filter((c) => !c.online || c.waiting.size > 0)
      .map((c) => `${c.o.key} (${c.session.status.state}, ${c.waiting.size} unacked)`);
    log(`not drained after ${DRAIN_TIMEOUT_MS / 1000} s: ${late.join(", ") || "clients behind the log"}`);
  }
  const stuck = clients.reduce((n, c) => n + c.waiting.size, 0);
  if (stuck > 0) violations.add("unacked", `${stuck} messages still in the outboxes after the drain`);

  // Deletions, then a kill while they travel to search and the D1 history.
  const deleted = await deleteSome(api, users);
  log(`deleted ${deleted} acked messages over HTTP; kill #${kills + 1} while they propagate`);
  await rt.kill();
  kills++;
  await rt.start();
  await resync();
  // Every session comes back to the end of its room, the deletions included.
  if (
    !(await waitFor(
      () => clients.every((c) => c.lastSeen >= (deletedTo.get(c.o.roomId) ?? 0)),
      DRAIN_TIMEOUT_MS,
    ))
  ) {
    log("not every session saw the deletions");
  }

  const logsOk = await verify(api, users, stuck);
  const storesOk = await verifyStores(api, users);
  return logsOk && storesOk;
}

/** Per room, the seq of its last deletion: where every session must get to after the last kill. */
const deletedTo = new Map<string, number>();

/** Deletes a few acked messages of each room (`DELETES_PER_ROOM`), each by its own sender. */
async function deleteSome(api: Api, users: User[]): Promise<number> {
  let n = 0;
  for (const ledger of ledgers) {
    const acked = [...ledger.acks.entries()];
    for (let i = 0; i < DELETES_PER_ROOM && acked.length > 0; i++) {
      const [clientId, seq] = acked.splice(Math.floor(schedule() * acked.length), 1)[0] as [string, number];
      const sender = ledger.sent.get(clientId)?.sender ?? "";
      const user = users[Number(/u(\d+)$/.exec(sender)?.[1] ?? -1)];
      if (!user) continue;
      const res = await api.request(user, "DELETE", `/api/rooms/${ledger.roomId}/messages/${seq}`);
      if (res.status !== 201) throw new Error(`DELETE message ${seq} → ${res.status} ${show(res.body)}`);
      ledger.deleted.add(clientId);
      const deleteSeq = (res.body as { seq: number }).seq;
      deletedTo.set(ledger.roomId, Math.max(deletedTo.get(ledger.roomId) ?? 0, deleteSeq));
      n++;
    }
  }
  return n;
}

/** The logs verify() read, by room: what the derived stores are checked against. */
const logs = new Map<string, RoomEvent[]>();

async function verifyStores(api: Api, users: User[]): Promise<boolean> {
  const owner = users[0] as User;
  const started = Date.now();
  const states = await waitForStores(
    api,
    owner,
    ledgers.map((l) => l.roomId),
    STORES_TIMEOUT_MS,
    log,
  );
  const behind = [...states.values()].filter(
    (r) => r.indexedThrough < r.lastSeq || r.archivedThrough < r.lastSeq,
  );
  for (const r of behind) {
    violations.add(
      "stores-behind",
      `${r.id}: search at ${r.indexedThrough}, history at ${r.archivedThrough}, log at ${r.lastSeq}`,
    );
  }
  log(`derived stores caught up in ${((Date.now() - started) / 1000).toFixed(1)} s; checking them`);
  const tokens = new Map<string, string>();
  for (const ledger of ledgers) for (const [clientId, sent] of ledger.sent) tokens.set(clientId, sent.token);
  const t = await checkStores({
    api,
    searcher: owner,
    logs,
    history: historyRows(root, stateDir, "chaos"),
    tokens,
    violations,
  });
  const rows: [string, string | number][] = [
    ["rooms whose search and history caught up", `${states.size - behind.length} of ${ledgers.length}`],
    [
      "D1 history rows / missing / in two shards / wrong",
      `${t.historyRows} / ${t.historyMissing} / ${t.historyDuplicated} / ${t.historyWrong}`,
    ],
    [
      "messages searched / not found / found wrong or twice",
      `${t.searched} / ${t.searchMissing} / ${t.searchDuplicated}`,
    ],
    ["deleted messages found by search", t.deletedFound],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log("\nderived stores (search shards, D1 history shards)");
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
  const failed =
    behind.length > 0 ||
    t.historyMissing +
      t.historyDuplicated +
      t.historyWrong +
      t.searchMissing +
      t.searchDuplicated +
      t.deletedFound >
      0;
  console.log(`\nchaos stores: ${failed ? "FAIL" : "PASS"}`);
  return !failed;
}

// ---------------------------------------------------------------------------------------------
// The check

interface Totals {
  logEvents: number;
  logMessages: number;
  lost: number;
  duplicated: number;
  moved: number;
  gaps: number;
  unknown: number;
  corrupted: number;
  missing: number;
  /** In an outbox at a kill, or resent from one, and in the log exactly once. */
  unackedAtKillOnce: number;
  resentOnce: number;
  deliveredMismatch: number;
  behind: number;
}

async function verify(api: Api, users: User[], stuck: number): Promise<boolean> {
  const t: Totals = {
    logEvents: 0,
    logMessages: 0,
    lost: 0,
    duplicated: 0,
    moved: 0,
    gaps: 0,
    unknown: 0,
    corrupted: 0,
    missing: 0,
    unackedAtKillOnce: 0,
    resentOnce: 0,
    deliveredMismatch: 0,
    behind: 0,
  };
  const reader = users[0] as User;
  for (const ledger of ledgers) {
    const room = ledger.roomId;
    const { events, problems } = await api.history(reader, room, 0);
    for (const p of problems) violations.add("history", `${room}: ${p}`);
    logs.set(room, events);
    t.logEvents += events.length;
    const bySeq = new Map<number, RoomEvent>();
    const seqsOf = new Map<string, number[]>();
    let lastSeq = 0;
    for (const e of events) {
      bySeq.set(e.seq, e);
      lastSeq = Math.max(lastSeq, e.seq);
      if (e.kind === "message") t.logMessages++;
      if (typeof e.clientId !== "string") continue;
      const list = seqsOf.get(e.clientId) ?? [];
      list.push(e.seq);
      seqsOf.set(e.clientId, list);
    }
    // Seqs are exactly 1..lastSeq.
    for (let s = 1; s <= lastSeq; s++) {
      if (!bySeq.has(s)) {
        t.gaps++;
        violations.add("gap", `${room}: seq ${s} missing (lastSeq ${lastSeq})`);
      }
    }
    let topAck = 0;
    for (const seq of ledger.acks.values()) topAck = Math.max(topAck, seq);
    if (topAck > lastSeq)
      violations.add("ack-beyond-log", `${room}: acked up to seq ${topAck}, log ends at ${lastSeq}`);
    // Every clientId in the log appears once, and is one we issued, with its text and author.
    for (const [clientId, seqs] of seqsOf) {
      const sent = ledger.sent.get(clientId);
      const e = bySeq.get(seqs[0] as number) as RoomEvent;
      if (!sent) {
        if (e.kind === "message") {
          t.unknown++;
          violations.add("unknown", `${room}: seq ${e.seq} has clientId ${clientId} nobody sent`);
        }
        continue;
      }
      if (seqs.length > 1) {
        t.duplicated += seqs.length - 1;
        violations.add("duplicated", `${room}: ${clientId} at seqs ${seqs.join(", ")}`);
      }
      // A message deleted during the run keeps its seq without text; any other keeps its text.
      const text = ledger.deleted.has(clientId) ? "" : sent.text;
      if (
        e.kind !== "message" ||
        e.text !== text ||
        (e.deleted === true) !== ledger.deleted.has(clientId) ||
        (sent.authorId !== "" && e.author?.id !== sent.authorId)
      ) {
        t.corrupted++;
        violations.add("corrupted", `${room}: seq ${e.seq} (${clientId}) is ${show(e).slice(0, 160)}`);
      }
    }
    // Every acked clientId is in the log, at the seq it was acked with.
    for (const [clientId, seq] of ledger.acks) {
      const seqs = seqsOf.get(clientId);
      if (!seqs || seqs.length === 0) {
        t.lost++;
        violations.add(
          "lost",
          `${room}: ${clientId} acked at seq ${seq}, not in the log (seq ${seq} holds ${show(bySeq.get(seq)?.clientId)})`,
        );
      } else if (!seqs.includes(seq)) {
        t.moved++;
        violations.add("moved", `${room}: ${clientId} acked at seq ${seq}, in the log at ${seqs.join(", ")}`);
      }
    }
    // Every message issued is in the log (the outboxes were drained), acked or not before a kill;
    // duplicates are counted above.
    for (const [clientId, sent] of ledger.sent) {
      if (seqsOf.has(clientId) || ledger.rejected.has(clientId) || ledger.acks.has(clientId)) continue;
      t.missing++;
      violations.add("missing", `${room}: ${clientId} (${sent.sender}) was issued but is not in the log`);
    }
    const once = (clientId: string) => seqsOf.get(clientId)?.length === 1;
    for (const clientId of ledger.unackedAtKill) if (once(clientId)) t.unackedAtKillOnce++;
    for (const clientId of ledger.resent) if (once(clientId)) t.resentOnce++;
    // What each session delivered through onEvent is the log, and it caught up to the end of it.
    for (const c of clients.filter((x) => x.o.roomId === room)) {
      for (const [seq, clientId] of c.seen) {
        const e = bySeq.get(seq);
        const inLog = e === undefined ? null : typeof e.clientId === "string" ? e.clientId : "";
        if (inLog !== clientId) {
          t.deliveredMismatch++;
          violations.add(
            "delivered-mismatch",
            `${c.o.key}: delivered seq ${seq} as "${clientId}", the log has ${inLog === null ? "no such seq" : `"${inLog}"`}`,
          );
        }
      }
      if (c.lastSeen < lastSeq) {
        t.behind++;
        violations.add("behind", `${c.o.key}: delivered up to seq ${c.lastSeen}, the log ends at ${lastSeq}`);
      }
    }
  }

  const issued = clients.reduce((n, c) => n + c.issued, 0);
  const acked = ledgers.reduce((n, l) => n + l.acks.size, 0);
  const unackedAtKill = ledgers.reduce((n, l) => n + l.unackedAtKill.size, 0);
  const resent = ledgers.reduce((n, l) => n + l.resent.size, 0);
  const rate = upMs > 0 ? (acked / upMs) * 1000 : 0;
  const rows: [string, string | number][] = [
    ["runtime kills (SIGKILL of the process group)", kills],
    ["rooms × (senders + readers), SDK sessions", `${ROOMS} × (${SENDERS} + ${READERS})`],
    ["messages issued (distinct clientIds)", issued],
    ["acked", `${acked} (${rate.toFixed(0)} msg/s while up)`],
    ["send frames (incl. outbox resends)", counters.sendFrames],
    ["in the outboxes at a kill → in the log exactly once", `${unackedAtKill} → ${t.unackedAtKillOnce}`],
    [
      "resent from the outbox → in the log exactly once",
      `${resent} → ${t.resentOnce} (${counters.resendFrames} frames)`,
    ],
    ["settled by the replay (ack lost to a kill)", counters.settledByReplay],
    ["unacked at the end", stuck],
    ["log events / messages", `${t.logEvents} / ${t.logMessages}`],
    ["lost (acked, not in the log)", t.lost],
    ["duplicated (clientId more than once)", t.duplicated],
    ["moved (in the log at another seq than acked)", t.moved],
    ["gaps (missing seqs)", t.gaps],
    ["missing (issued, never in the log)", t.missing],
    ["unknown / corrupted log entries", `${t.unknown} / ${t.corrupted}`],
    ["delivered by onEvent ≠ log", t.deliveredMismatch],
    [
      "onEvent: twice / out of order / skipping / after close / forgotten",
      ["delivered-twice", "delivered-out-of-order", "delivered-skipping", "after-close", "forgotten"]
        .map((k) => violations.count(k))
        .join(" / "),
    ],
    ["sessions behind the log at the end", t.behind],
    [
      "acks that moved / collided / beyond the log",
      ["ack-moved", "ack-collision", "ack-beyond-log"].map((k) => violations.count(k)).join(" / "),
    ],
    ["messages refused", violations.count("rejected")],
    [
      "reader pauses offline / restarts; replayed events / gap frames",
      `${counters.offlinePauses} / ${counters.restarts}; ${counters.replayed} / ${counters.gapFrames}`,
    ],
    [
      "connects / failed attempts / sign-ins again",
      `${counters.connects} / ${counters.connectFailures} / ${api.relogins}`,
    ],
    ["rate limited / other errors", `${counters.rateLimited} / ${counters.otherErrors}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log("\nchaos summary");
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
  const failed = [...violations.counts.values()].some((n) => n > 0) || acked === 0 || kills < KILLS;
  if (violations.examples.length > 0) {
    console.log("\nviolations (first ones):");
    for (const line of violations.examples) console.log(`  ${line}`);
  }
  if (acked === 0) console.log("\nno message was acknowledged: nothing was tested");
  console.log(
    `\nchaos: ${failed ? "FAIL" : "PASS"} (seed ${SEED}, ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
  );
  return !failed;
}

let code = 2;
try {
  code = (await run()) ? 0 : 1;
} catch (err) {
  console.error(`chaos: ${err instanceof Error ? err.message : String(err)}`);
  code = 2;
} finally {
  if (ticker) clearInterval(ticker);
  for (const c of clients) c.close();
  try {
    await runtime?.kill();
  } catch (err) {
    console.error(`chaos: ${err instanceof Error ? err.message : String(err)}`);
    code = 2;
  }
  releaseSync();
}
process.exit(code);
