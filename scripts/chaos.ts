/**
 * @module `npm run chaos`: acked means durable. Runs the local runtime the way `npm start` does,
 * drives steady message traffic into a few rooms from SDK-like clients (outbox, resend with the same
 * clientId, resume with `after`), SIGKILLs the runtime's whole process group at random moments and
 * restarts it on the same state, then reads every room's log over HTTP and checks that every
 * acknowledged message is there exactly once at the seq it was acked with, with no gaps, and that
 * what the clients received over their sockets agrees with the log.
 *
 * Besides the senders, each room has readers that drop their socket now and then and stay away a few
 * seconds, so that resuming exercises both the replay and, when they missed more than the server
 * replays, the `gap` answer followed by paging history over HTTP.
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
import { Api, Ledger, newCounters, Sender, show, type User, Violations } from "./chaos/client.ts";
import { freePort, Runtime } from "./chaos/runtime.ts";

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
  --senders N    sender connections per room, one user each (default 3)
  --readers N    reader connections per room that pause and resume (default 1)
  --rate N       target new messages per second over all senders (default 1000; the window caps it)
  --window N     unacked sends each sender keeps in flight (default 8)
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

/** The schedule (kill moments, reader pauses) draws from its own generator, so a seed replays it. */
const schedule = mulberry32(SEED);
/** Message texts and reconnect jitter, whose draws depend on timing. */
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
const senders: Sender[] = [];
const pauseTimers = new Set<NodeJS.Timeout>();
let ticker = null as NodeJS.Timeout | null;
let cleaned = false;

function releaseSync(): void {
  if (cleaned) return;
  cleaned = true;
  if (ticker) clearInterval(ticker);
  for (const t of pauseTimers) clearTimeout(t);
  for (const s of senders) s.close();
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

const producers = () => senders.filter((s) => s.o.window > 0);
const readers = () => senders.filter((s) => s.o.window === 0);

function allSynced(): boolean {
  return producers().every((s) => s.ready);
}

async function trafficFor(ms: number): Promise<void> {
  const ackBefore = counters.acks;
  const started = Date.now();
  for (const reader of readers()) {
    if (schedule() < 0.5) continue;
    const away = 1500 + schedule() * 6500;
    const timer = setTimeout(() => {
      pauseTimers.delete(timer);
      reader.pause(away);
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
  if (await waitFor(allSynced, RESYNC_TIMEOUT_MS)) {
    log(`all ${producers().length} senders resumed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } else {
    const behind = producers()
      .filter((s) => !s.ready)
      .map((s) => s.o.key);
    log(`not resumed after ${RESYNC_TIMEOUT_MS / 1000} s: ${behind.join(", ")} (going on)`);
  }
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
    env: { PARLEY_USER_COMMANDS_PER_SECOND: "100000", PARLEY_REPLAY_CAP: "500" },
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

  const runId = SEED.toString(36);
  const client = (ledger: Ledger, user: User, key: string, window: number) =>
    new Sender({
      wsBase: rt.url.replace(/^http/, "ws"),
      api,
      user,
      roomId: ledger.roomId,
      key,
      runId,
      window,
      ratePerSecond: RATE / (ROOMS * SENDERS),
      ledger,
      counters,
      violations,
      random: jitter,
      log,
    });
  for (const [r, ledger] of ledgers.entries()) {
    for (const [u, user] of users.entries()) senders.push(client(ledger, user, `r${r}u${u}`, WINDOW));
  }
  for (const [r, ledger] of ledgers.entries()) {
    for (let i = 0; i < READERS; i++) {
      senders.push(client(ledger, users[i % users.length] as User, `r${r}w${i}`, 0));
    }
  }
  let last = Date.now();
  ticker = setInterval(() => {
    const now = Date.now();
    const dt = Math.min(0.2, (now - last) / 1000);
    last = now;
    for (const s of senders) s.tick(dt, now);
  }, 10);
  for (const s of senders) s.connect();
  if (!(await waitFor(() => senders.every((s) => s.ready), RESYNC_TIMEOUT_MS))) {
    throw new Error("clients could not connect to the room sockets");
  }

  const trafficStart = Date.now();
  for (let k = 1; k <= KILLS; k++) {
    const delay = 1000 + schedule() * 3000;
    log(`traffic for ${(delay / 1000).toFixed(1)} s, then kill #${k}`);
    await trafficFor(delay);
    const unacked = senders.reduce((n, s) => n + s.outbox.size, 0);
    await rt.kill();
    kills++;
    log(`kill #${k}: SIGKILLed the process group with ${unacked} sends unacked; restarting`);
    await rt.start();
    await resync();
  }
  const rest = Math.max(2000, SECONDS * 1000 - (Date.now() - trafficStart));
  log(`traffic for ${(rest / 1000).toFixed(1)} s after the last restart`);
  await trafficFor(rest);

  log("stopping new sends; draining outboxes");
  for (const s of senders) s.producing = false;
  for (const t of pauseTimers) clearTimeout(t);
  pauseTimers.clear();
  for (const s of readers()) s.resume();
  const drained = () =>
    senders.every((s) => {
      if (s.outbox.size > 0 || s.pendingGapFills > 0) return false;
      let top = 0;
      for (const seq of s.o.ledger.acks.values()) top = Math.max(top, seq);
      return s.lastSeen >= top;
    });
  if (!(await waitFor(drained, DRAIN_TIMEOUT_MS))) log(`not drained after ${DRAIN_TIMEOUT_MS / 1000} s`);
  const stuck = senders.reduce((n, s) => n + s.outbox.size, 0);
  if (stuck > 0) violations.add("unacked", `${stuck} sends still unacked after the drain`);

  return verify(api, users, stuck);
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
  resentMissing: number;
  receivedMismatch: number;
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
    resentMissing: 0,
    receivedMismatch: 0,
    behind: 0,
  };
  const reader = users[0] as User;
  for (const ledger of ledgers) {
    const room = ledger.roomId;
    const { events, problems } = await api.history(reader, room, 0);
    for (const p of problems) violations.add("history", `${room}: ${p}`);
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
    // Every clientId in the log appears once, and is one we sent, with its text and author.
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
      if (
        e.kind !== "message" ||
        e.text !== sent.text ||
        (sent.authorId !== "" && e.author?.id !== sent.authorId)
      ) {
        t.corrupted++;
        violations.add("corrupted", `${room}: seq ${e.seq} (${clientId}) is ${show(e).slice(0, 160)}`);
      }
    }
    // Every acked clientId is in the log exactly once, at the seq it was acked with.
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
    // Sends resent from an outbox are in the log exactly once (duplicates are counted above).
    for (const clientId of ledger.resent) {
      if (!seqsOf.has(clientId) && !ledger.rejected.has(clientId)) {
        t.resentMissing++;
        violations.add("resent-missing", `${room}: ${clientId} was resent but is not in the log`);
      }
    }
    // What each client received agrees with the log, and it caught up to the end of the log.
    for (const s of senders.filter((x) => x.o.roomId === room)) {
      for (const [seq, clientId] of s.seen) {
        const e = bySeq.get(seq);
        const inLog = e === undefined ? null : typeof e.clientId === "string" ? e.clientId : "";
        if (inLog !== clientId) {
          t.receivedMismatch++;
          violations.add(
            "received-mismatch",
            `${s.o.key}: received seq ${seq} as "${clientId}", the log has ${inLog === null ? "no such seq" : `"${inLog}"`}`,
          );
        }
      }
      if (s.lastSeen < lastSeq) {
        t.behind++;
        violations.add("behind", `${s.o.key}: saw up to seq ${s.lastSeen}, the log ends at ${lastSeq}`);
      }
    }
  }

  const sent = senders.reduce((n, s) => n + s.sentCount, 0);
  const acked = ledgers.reduce((n, l) => n + l.acks.size, 0);
  const rate = upMs > 0 ? (acked / upMs) * 1000 : 0;
  const rows: [string, string | number][] = [
    ["runtime kills (SIGKILL of the process group)", kills],
    ["rooms × (senders + readers)", `${ROOMS} × (${SENDERS} + ${READERS})`],
    ["messages sent (distinct clientIds)", sent],
    ["acked", `${acked} (${rate.toFixed(0)} msg/s while up)`],
    ["send frames (incl. resends and retries)", counters.sendFrames],
    [
      "resent from outbox",
      `${counters.resentIds} (${counters.resendFrames} frames; ${counters.resentDeduped} already stored, acked with the original seq)`,
    ],
    ["unacked at the end", stuck],
    ["log events / messages", `${t.logEvents} / ${t.logMessages}`],
    ["lost (acked, not in the log)", t.lost],
    ["duplicated (clientId more than once)", t.duplicated],
    ["moved (in the log at another seq than acked)", t.moved],
    ["gaps (missing seqs)", t.gaps],
    ["unknown / corrupted log entries", `${t.unknown} / ${t.corrupted}`],
    ["resent but missing", t.resentMissing],
    ["received over socket ≠ log", t.receivedMismatch],
    [
      "stream: duplicate / out of order / skipped / forgotten",
      ["stream-duplicate", "stream-order", "stream-skip", "forgotten"]
        .map((k) => violations.count(k))
        .join(" / "),
    ],
    ["clients behind the log at the end", t.behind],
    [
      "acks that moved / collided / beyond the log",
      ["ack-moved", "ack-collision", "ack-beyond-log"].map((k) => violations.count(k)).join(" / "),
    ],
    ["sends refused", violations.count("rejected")],
    [
      "connects / failed attempts / stalls",
      `${counters.connects} / ${counters.connectFailures} / ${counters.stalls}`,
    ],
    [
      "rate limited / retried errors / other errors",
      `${counters.rateLimited} / ${counters.retriedErrors} / ${counters.otherErrors}`,
    ],
  ];
  rows.splice(rows.length - 2, 0, [
    "reader pauses / replayed events / gap frames",
    `${counters.pauses} / ${counters.replayed} / ${counters.gapFrames}`,
  ]);
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
  for (const s of senders) s.close();
  try {
    await runtime?.kill();
  } catch (err) {
    console.error(`chaos: ${err instanceof Error ? err.message : String(err)}`);
    code = 2;
  }
  releaseSync();
}
process.exit(code);
