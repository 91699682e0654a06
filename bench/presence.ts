import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import type { PresenceServerFrame } from "../protocol/index.ts";
import { numberFlag } from "./options.ts";
import { mulberry32 } from "./random.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import {
  externalServer,
  reloadCount,
  type Server,
  startParley,
  stopAllSync,
  workerdSnapshot,
} from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api, pool } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench presence: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TICKS = 100; // getconf CLK_TCK on Linux

export interface PresenceOptions {
  quick: boolean;
  sessions: number;
  rooms: number;
  roomsPerUser: number;
  watch: number;
  /** Messages per second posted into all rooms together. */
  rate: number;
  senders: number;
  durationMs: number;
  /** Every session heartbeats once per round; `flip` of them switch active/away each round. */
  heartbeatMs: number;
  flip: number;
  drainMs: number;
  clientBound: number;
  /** Hard limit of the whole run: past it the bench stops its server and exits. */
  budgetMs: number;
  out: string;
  parleyUrl: string | undefined;
}

const USAGE = `usage: npm run bench -- --presence [--quick] [--sessions 1000] [--rooms 100] [--rooms-per-user 3]
       [--watch 20] [--rate 40] [--senders 10] [--duration 30] [--heartbeat 5] [--flip 0.25]
       [--drain 5] [--budget 240] [--out bench/results.md] [--parley-url http://127.0.0.1:8787]`;

const num = (v: string | undefined, name: string, def: number, min: number, max: number) =>
  numberFlag(v, name, def, min, max, USAGE);

export function parsePresenceOptions(argv: string[]): PresenceOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      presence: { type: "boolean" },
      quick: { type: "boolean" },
      sessions: { type: "string" },
      rooms: { type: "string" },
      "rooms-per-user": { type: "string" },
      watch: { type: "string" },
      rate: { type: "string" },
      senders: { type: "string" },
      duration: { type: "string" },
      heartbeat: { type: "string" },
      flip: { type: "string" },
      drain: { type: "string" },
      budget: { type: "string" },
      out: { type: "string" },
      "parley-url": { type: "string" },
    },
  });
  const quick = values.quick === true;
  const sessions = Math.round(num(values.sessions, "sessions", quick ? 200 : 1000, 2, 5000));
  return {
    quick,
    sessions,
    rooms: Math.round(num(values.rooms, "rooms", quick ? 20 : 100, 1, 1000)),
    roomsPerUser: Math.round(num(values["rooms-per-user"], "rooms-per-user", 3, 1, 50)),
    watch: Math.min(sessions - 1, Math.round(num(values.watch, "watch", 20, 0, 500))),
    rate: num(values.rate, "rate", quick ? 20 : 40, 0, 10_000),
    senders: Math.round(num(values.senders, "senders", 10, 1, 100)),
    durationMs: num(values.duration, "duration", quick ? 10 : 30, 1, 600) * 1000,
    heartbeatMs: num(values.heartbeat, "heartbeat", 5, 0.5, 30) * 1000,
    flip: num(values.flip, "flip", 0.25, 0, 1),
    drainMs: num(values.drain, "drain", 5, 1, 60) * 1000,
    clientBound: 0.8,
    budgetMs: num(values.budget, "budget", quick ? 150 : 240, 30, 3600) * 1000,
    out: values.out ?? "bench/results.md",
    parleyUrl: values["parley-url"],
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface User {
  token: string;
  id: string;
}

// ---------------------------------------------------------------------------------------------
// Sessions

interface Session {
  i: number;
  user: User;
  ws: WebSocket | null;
  open: boolean;
  status: "active" | "away";
  /** Last status this session (as a watcher) heard for each watched user. */
  heard: Map<string, string>;
}

interface Arrival {
  t: number;
  lastSeq: number;
}

interface Counters {
  presenceInitial: number;
  presenceChange: number;
  presenceSame: number;
  presenceInPhase: number;
  activity: number;
  activityInPhase: number;
  activityBefore: number;
  read: number;
  errors: Map<string, number>;
  closes: Map<string, number>;
  other: number;
}

interface Flip {
  status: string;
  t: number;
}

interface Message {
  room: number;
  t: number;
  seq: number;
  /** HTTP answer time. */
  answered: number;
  failed: string;
}

export interface PresenceResult {
  sessions: number;
  opened: number;
  memBefore: { total: number; runtime: number };
  memAfter: { total: number; runtime: number };
  phaseMs: number;
  flips: number;
  heartbeats: number;
  presenceExpected: number;
  counters: Counters;
  presenceLatency: LatencySummary | null;
  activityLatency: LatencySummary | null;
  postLatency: LatencySummary | null;
  messagesSent: number;
  messagesAcked: number;
  messagesFailed: Map<string, number>;
  noticePairs: number;
  noticeMissing: number;
  activityExpectedMax: number;
  clientCpu: number;
  serverCpu: number;
  setupSeconds: { login: number; rooms: number; open: number };
  shards: string;
  reloads: number;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

const openSockets = new Set<WebSocket>();
let closingAll = false;

function closeAllSockets(): void {
  closingAll = true;
  for (const ws of openSockets) {
    try {
      ws.terminate();
    } catch {}
  }
  openSockets.clear();
}

async function runBench(opts: PresenceOptions, server: Server, runId: string): Promise<PresenceResult> {
  const base = server.baseUrl;
  const wsUrl = `${base.replace(/^http/, "ws")}/api/presence/ws`;
  const N = opts.sessions;

  // 1. Users: N session users and the senders, each signed in, with their id.
  let t0 = performance.now();
  const login = async (email: string, name: string): Promise<User> => {
    const { token } = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
      email,
      name,
      tenant: "bench-presence",
    });
    if (typeof token !== "string") throw new Error("POST /auth/dev/login answered no token");
    const me = await api<{ user?: { id?: string } }>(base, "GET", "/api/me", token);
    if (typeof me.user?.id !== "string") throw new Error(`GET /api/me answered no user id`);
    return { token, id: me.user.id };
  };
  let done = 0;
  const progress = setInterval(() => log(`signed in ${done} of ${N + opts.senders}`), 5000);
  let users: User[];
  let senders: User[];
  try {
    users = await pool(
      Array.from({ length: N }, (_, i) => i),
      20,
      async (i) => {
        const u = await login(`p${i}@${runId}.bench.test`, `Presence ${i}`);
        done++;
        return u;
      },
    );
    senders = await pool(
      Array.from({ length: opts.senders }, (_, i) => i),
      10,
      async (i) => {
        const u = await login(`ps${i}@${runId}.bench.test`, `Poster ${i}`);
        done++;
        return u;
      },
    );
  } finally {
    clearInterval(progress);
  }
  const loginSeconds = (performance.now() - t0) / 1000;
  log(`${N + opts.senders} users signed in in ${loginSeconds.toFixed(1)} s`);

  // 2. Rooms: room r's members are the users i with r ∈ {(i·k + j) mod rooms}; its creator (and
  // poster) is sender r mod senders. At most 50 members per creation; the rest join themselves.
  t0 = performance.now();
  const roomMembers: number[][] = Array.from({ length: opts.rooms }, () => []);
  const roomsOf: number[][] = [];
  for (let i = 0; i < N; i++) {
    const mine = new Set<number>();
    for (let j = 0; j < opts.roomsPerUser; j++) mine.add((i * opts.roomsPerUser + j) % opts.rooms);
    roomsOf.push([...mine]);
    for (const r of mine) roomMembers[r]?.push(i);
  }
  const roomIds = await pool(
    Array.from({ length: opts.rooms }, (_, r) => r),
    10,
    async (r) => {
      const members = roomMembers[r] as number[];
      const creator = senders[r % opts.senders] as User;
      const room = await api<{ id?: string }>(base, "POST", "/api/rooms", creator.token, {
        name: `${runId} presence ${r}`,
        kind: "channel",
        members: members.slice(0, 50).map((i) => (users[i] as User).id),
      });
      if (typeof room.id !== "string") throw new Error(`POST /api/rooms answered no id`);
      for (const i of members.slice(50))
        await api(base, "POST", `/api/rooms/${encodeURIComponent(room.id)}/join`, (users[i] as User).token);
      return room.id;
    },
  );
  const roomIndex = new Map(roomIds.map((id, r) => [id, r]));
  const roomsSeconds = (performance.now() - t0) / 1000;
  log(`${opts.rooms} rooms created in ${roomsSeconds.toFixed(1)} s`);

  // 3. Warm-up (not measured): the senders open presence sessions (which starts the shards), watch
  // a few users, and post one message per room (which starts the activity path); then they close.
  const warm: WebSocket[] = [];
  await Promise.all(
    senders.map(
      (s) =>
        new Promise<void>((ok) => {
          const ws = new WebSocket(wsUrl, {
            headers: { "Cf-Access-Jwt-Assertion": s.token },
            perMessageDeflate: false,
          });
          openSockets.add(ws);
          warm.push(ws);
          const timer = setTimeout(ok, 10_000);
          ws.on("open", () => {
            ws.send(JSON.stringify({ type: "watch", users: users.slice(0, 10).map((u) => u.id) }));
            clearTimeout(timer);
            ok();
          });
          ws.on("error", () => {
            clearTimeout(timer);
            ok();
          });
        }),
    ),
  );
  await pool(roomIds, 10, (id, r) =>
    api(
      base,
      "POST",
      `/api/rooms/${encodeURIComponent(id)}/messages`,
      (senders[r % opts.senders] as User).token,
      {
        clientId: `${runId}-warm-${r}`,
        text: "warm-up",
      },
    ),
  );
  await sleep(1000);
  for (const ws of warm) {
    ws.close();
    openSockets.delete(ws);
  }
  await sleep(2000);
  const snapBefore = workerdSnapshot(server);

  // 4. Open one presence session per user, idle (opening counts as an `active` heartbeat).
  const counters: Counters = {
    presenceInitial: 0,
    presenceChange: 0,
    presenceSame: 0,
    presenceInPhase: 0,
    activity: 0,
    activityInPhase: 0,
    activityBefore: 0,
    read: 0,
    errors: new Map(),
    closes: new Map(),
    other: 0,
  };
  const presenceLatency = new Samples();
  const lastFlip = new Map<string, Flip>();
  // Activity arrivals per (room, session): arrivals[r][k] for the k-th member of room r.
  const arrivals: Arrival[][][] = roomMembers.map((m) => m.map(() => []));
  const memberSlot: Map<number, number>[] = Array.from({ length: N }, () => new Map());
  roomMembers.forEach((members, r) => {
    members.forEach((i, k) => {
      memberSlot[i]?.set(r, k);
    });
  });
  let phase: "setup" | "watch" | "run" | "drain" = "setup";
  let phaseStart = 0;
  let phaseEnd = Number.POSITIVE_INFINITY;

  const sessions: Session[] = users.map((user, i) => ({
    i,
    user,
    ws: null,
    open: false,
    status: "active",
    heard: new Map(),
  }));

  const onFrame = (s: Session, data: WebSocket.RawData) => {
    const now = performance.now();
    let f: PresenceServerFrame | { type: "error"; code: string };
    try {
      f = JSON.parse(data.toString()) as typeof f;
    } catch {
      counters.other++;
      return;
    }
    switch (f.type) {
      case "presence": {
        const prev = s.heard.get(f.user);
        s.heard.set(f.user, f.status);
        if (phase === "watch" || prev === undefined) {
          counters.presenceInitial++;
          return;
        }
        if (prev === f.status) {
          counters.presenceSame++;
        } else {
          counters.presenceChange++;
          const flip = lastFlip.get(f.user);
          if (flip && flip.status === f.status) presenceLatency.push(now - flip.t);
        }
        if (now >= phaseStart && now <= phaseEnd) counters.presenceInPhase++;
        return;
      }
      case "activity": {
        counters.activity++;
        if (phase !== "run" && phase !== "drain") {
          counters.activityBefore++;
          return;
        }
        if (now <= phaseEnd) counters.activityInPhase++;
        const r = roomIndex.get(f.room);
        const k = r === undefined ? undefined : memberSlot[s.i]?.get(r);
        if (r === undefined || k === undefined) {
          counters.other++;
          return;
        }
        arrivals[r]?.[k]?.push({ t: now, lastSeq: f.lastSeq });
        return;
      }
      case "read":
        counters.read++;
        return;
      case "error":
        bump(counters.errors, f.code);
        return;
      default:
        counters.other++;
    }
  };

  t0 = performance.now();
  let opened = 0;
  await pool(
    sessions,
    50,
    (s) =>
      new Promise<void>((ok) => {
        const ws = new WebSocket(wsUrl, {
          headers: { "Cf-Access-Jwt-Assertion": s.user.token },
          perMessageDeflate: false,
        });
        s.ws = ws;
        openSockets.add(ws);
        const timer = setTimeout(() => {
          bump(counters.closes, "open timeout");
          ok();
        }, 15_000);
        ws.on("open", () => {
          s.open = true;
          opened++;
          clearTimeout(timer);
          ok();
        });
        ws.on("message", (data) => onFrame(s, data));
        ws.on("error", (err) => {
          if (!s.open) {
            bump(counters.closes, `open failed: ${err.message}`);
            clearTimeout(timer);
            ok();
          }
        });
        ws.on("close", (code, reason) => {
          openSockets.delete(ws);
          if (s.open && !closingAll) bump(counters.closes, `${code} ${reason.toString().slice(0, 60)}`);
          s.open = false;
        });
      }),
  );
  const openSeconds = (performance.now() - t0) / 1000;
  log(`${opened} of ${N} presence sessions open in ${openSeconds.toFixed(1)} s; idling 3 s`);
  await sleep(3000);
  const snapAfter = workerdSnapshot(server);
  if (opened === 0) throw new Error(`no presence session opened (${[...counters.closes.keys()].join("; ")})`);

  // 5. Watch: session i watches `watch` users spread over the tenant (so every user has `watch`
  // watchers); the snapshot answers are counted apart from the changes.
  phase = "watch";
  // Offsets 1 + k·stride (k < watch) are distinct and below N: every user gets `watch` watchers.
  const stride = Math.max(1, Math.floor((N - 1) / Math.max(1, opts.watch)));
  const watchers = new Map<string, number>();
  for (const s of sessions) {
    const ids = new Set<string>();
    for (let k = 0; k < opts.watch; k++) ids.add((users[(s.i + 1 + k * stride) % N] as User).id);
    for (const id of ids) watchers.set(id, (watchers.get(id) ?? 0) + (s.open ? 1 : 0));
    if (s.open) s.ws?.send(JSON.stringify({ type: "watch", users: [...ids] }));
  }
  const expectedInitial = [...watchers.values()].reduce((a, b) => a + b, 0);
  const watchDeadline = performance.now() + 10_000;
  while (counters.presenceInitial < expectedInitial && performance.now() < watchDeadline) await sleep(100);
  log(`watch snapshot: ${counters.presenceInitial} of ${expectedInitial} presence frames`);
  await sleep(500);

  // 6. The measured phase: heartbeats on a schedule (session i at offset i/N of each round; a
  // fraction `flip` switches active/away) and messages posted at `rate` into the rooms in turn.
  const random = mulberry32(42);
  const messages: Message[] = [];
  const postLatency = new Samples();
  const failed = new Map<string, number>();
  let inflight = 0;
  let heartbeats = 0;
  let flips = 0;
  let presenceExpected = 0;
  const cpu0 = process.cpuUsage();
  const w0 = workerdSnapshot(server);
  phase = "run";
  phaseStart = performance.now();
  const stopAt = phaseStart + opts.durationMs;
  let nextBeat = 0; // index over (round, session)
  let posted = 0;
  const post = (r: number) => {
    const m: Message = { room: r, t: performance.now(), seq: 0, answered: 0, failed: "" };
    messages.push(m);
    inflight++;
    const sender = senders[r % opts.senders] as User;
    api<{ seq?: number }>(
      base,
      "POST",
      `/api/rooms/${encodeURIComponent(roomIds[r] as string)}/messages`,
      sender.token,
      {
        clientId: `${runId}-m${messages.length}`,
        text: `presence bench message ${messages.length} in room ${r}`,
      },
    )
      .then((res) => {
        m.answered = performance.now();
        if (typeof res.seq === "number") {
          m.seq = res.seq;
          postLatency.push(m.answered - m.t);
        } else m.failed = "no seq";
      })
      .catch((err: unknown) => {
        m.failed = err instanceof Error ? err.message.slice(0, 80) : String(err);
      })
      .finally(() => {
        inflight--;
        if (m.failed) bump(failed, m.failed);
      });
  };
  await new Promise<void>((done) => {
    const tick = () => {
      const now = performance.now();
      const elapsed = Math.min(now, stopAt) - phaseStart;
      // Heartbeats due by now.
      const dueBeats = Math.floor((elapsed / opts.heartbeatMs) * N);
      while (nextBeat < dueBeats) {
        const s = sessions[nextBeat % N] as Session;
        nextBeat++;
        if (!s.open || !s.ws) continue;
        if (random() < opts.flip) {
          s.status = s.status === "active" ? "away" : "active";
          flips++;
          presenceExpected += watchers.get(s.user.id) ?? 0;
          lastFlip.set(s.user.id, {
            status: s.status === "active" ? "online" : "away",
            t: performance.now(),
          });
        }
        s.ws.send(JSON.stringify({ type: "heartbeat", status: s.status }));
        heartbeats++;
      }
      // Messages due by now (at most 500 HTTP requests in flight).
      const dueMsgs = Math.floor((elapsed / 1000) * opts.rate);
      while (posted < dueMsgs && inflight < 500) {
        post(posted % opts.rooms);
        posted++;
      }
      if (now >= stopAt) done();
      else setTimeout(tick, 10);
    };
    tick();
  });
  phaseEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const w1 = workerdSnapshot(server);
  const phaseMs = phaseEnd - phaseStart;
  phase = "drain";
  log(`sending stopped after ${(phaseMs / 1000).toFixed(1)} s; draining`);

  // 7. Drain: every post answered, then until no frame arrived for 1 s (at most drainMs).
  const drainDeadline = performance.now() + opts.drainMs;
  let lastCount = -1;
  let quietSince = performance.now();
  while (performance.now() < drainDeadline) {
    const count = counters.activity + counters.presenceChange + counters.presenceSame + inflight;
    if (count !== lastCount) {
      lastCount = count;
      quietSince = performance.now();
    } else if (inflight === 0 && performance.now() - quietSince > 1000) break;
    await sleep(100);
  }

  // 8. Activity latency per (message, member session): the first arrival for the room at that
  // session whose lastSeq ≥ the message's seq.
  const activityLatency = new Samples();
  let noticePairs = 0;
  let noticeMissing = 0;
  const byRoom: Message[][] = roomMembers.map(() => []);
  for (const m of messages) if (m.seq > 0) byRoom[m.room]?.push(m);
  byRoom.forEach((msgs, r) => {
    msgs.sort((a, b) => a.seq - b.seq);
    for (const [k, i] of (roomMembers[r] as number[]).entries()) {
      if (!sessions[i]?.ws) continue;
      const list = arrivals[r]?.[k] ?? [];
      let a = 0;
      let maxSeq = 0;
      for (const m of msgs) {
        noticePairs++;
        while (a < list.length && maxSeq < m.seq) {
          maxSeq = Math.max(maxSeq, (list[a] as Arrival).lastSeq);
          a++;
        }
        if (maxSeq >= m.seq) activityLatency.push((list[a - 1] as Arrival).t - m.t);
        else noticeMissing++;
      }
    }
  });

  return {
    sessions: N,
    opened,
    memBefore: { total: snapBefore.rssTotal, runtime: snapBefore.rssRuntime },
    memAfter: { total: snapAfter.rssTotal, runtime: snapAfter.rssRuntime },
    phaseMs,
    flips,
    heartbeats,
    presenceExpected,
    counters,
    presenceLatency: presenceLatency.summary(),
    activityLatency: activityLatency.summary(),
    postLatency: postLatency.summary(),
    messagesSent: messages.length,
    messagesAcked: messages.filter((m) => m.seq > 0).length,
    messagesFailed: failed,
    noticePairs,
    noticeMissing,
    activityExpectedMax: noticePairs,
    clientCpu: (cpu.user + cpu.system) / 1000 / phaseMs,
    serverCpu: (w1.ticks - w0.ticks) / TICKS / (phaseMs / 1000),
    setupSeconds: { login: loginSeconds, rooms: roomsSeconds, open: openSeconds },
    shards: process.env.PARLEY_PRESENCE_SHARDS ?? "",
    reloads: 0,
  };
}

// ---------------------------------------------------------------------------------------------
// Report

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n >= 100 ? fmt(n) : n.toFixed(1));
const lat = (l: LatencySummary | null) => (l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "n/a");
const mib = (b: number) => (b / 1024 ** 2).toFixed(1);
const kib = (b: number) => fmt(b / 1024, 1);
const tally = (m: Map<string, number>) =>
  m.size === 0 ? "none" : [...m].map(([k, v]) => `${k} ×${v}`).join(", ");

function renderPresence(
  r: PresenceResult | null,
  opts: PresenceOptions,
  meta: SectionFacts & { shards: string },
  failures: string[],
): string {
  const lines: string[] = [];
  lines.push("## Presence", "");
  lines.push(
    `${meta.date} · \`${meta.command}\` · ${meta.machine} · ${meta.total} s in all. ` +
      `Parley with PARLEY_PRESENCE_SHARDS=${meta.shards}, one tenant.`,
    "",
  );
  lines.push(
    `Load: ${fmt(opts.sessions)} presence sessions (one per user), each watching ${opts.watch} users and ` +
      `member of ${opts.roomsPerUser} of ${opts.rooms} rooms; every session heartbeats once per ` +
      `${opts.heartbeatMs / 1000} s round and ${Math.round(opts.flip * 100)}% of them flip active/away each round; ` +
      `${opts.senders} posters send ${opts.rate} msg/s in total over HTTP into all rooms in turn; ` +
      `${opts.durationMs / 1000} s measured.`,
    "",
  );
  if (!r) {
    lines.push(`**No result**: ${failures.join("; ")}`, "");
    return lines.join("\n");
  }
  const sec = r.phaseMs / 1000;
  const c = r.counters;
  const bound = r.clientCpu > opts.clientBound;
  const mark = bound ? " †" : "";
  const perTotal = (r.memAfter.total - r.memBefore.total) / Math.max(1, r.opened);
  const perRuntime = (r.memAfter.runtime - r.memBefore.runtime) / Math.max(1, r.opened);
  lines.push("| figure | value |", "|---|---|");
  lines.push(`| presence updates delivered / s | ${fmt(c.presenceInPhase / sec)}${mark} |`);
  lines.push(`| activity notices / s | ${fmt(c.activityInPhase / sec)}${mark} |`);
  lines.push(`| activity latency p50 / p95 / p99 (ms) | ${lat(r.activityLatency)}${mark} |`);
  lines.push(`| presence latency p50 / p95 / p99 (ms) | ${lat(r.presenceLatency)}${mark} |`);
  lines.push(
    `| memory per idle session | ${kib(perTotal)} KiB (all workerd; runtime only ${kib(perRuntime)} KiB) |`,
  );
  lines.push(
    `| bench client CPU | ${Math.round(r.clientCpu * 100)}% of one core${bound ? " † client-bound" : ""} |`,
  );
  lines.push(`| workerd CPU | ${Math.round(r.serverCpu * 100)}% (100% = one core) |`);
  lines.push("");
  lines.push("Details:", "");
  lines.push(
    `- Sessions: ${fmt(r.opened)} of ${fmt(r.sessions)} opened (${r.setupSeconds.open.toFixed(1)} s; sign-in ${r.setupSeconds.login.toFixed(1)} s, rooms ${r.setupSeconds.rooms.toFixed(1)} s); ` +
      `closed by the server or failed: ${tally(c.closes)}.`,
  );
  lines.push(
    `- workerd RSS: ${mib(r.memBefore.total)} → ${mib(r.memAfter.total)} MiB all, ${mib(r.memBefore.runtime)} → ${mib(r.memAfter.runtime)} MiB runtime, ` +
      `before and 3 s after opening the sessions (idle: no heartbeat or watch yet).`,
  );
  lines.push(
    `- Presence: ${fmt(r.heartbeats)} heartbeats, ${fmt(r.flips)} status flips → ${fmt(r.presenceExpected)} updates expected at watchers; ` +
      `${fmt(c.presenceChange)} received with a changed status, ${fmt(c.presenceSame)} with an unchanged status, ` +
      `${fmt(c.presenceInitial)} watch-snapshot frames (not counted in the rate).`,
  );
  lines.push(
    `- Activity: ${fmt(r.messagesSent)} messages posted, ${fmt(r.messagesAcked)} answered with a seq (HTTP p50 / p95 / p99 ${lat(r.postLatency)} ms; failed: ${tally(r.messagesFailed)}); ` +
      `${fmt(c.activity)} notices received; (message, member session) pairs ${fmt(r.noticePairs)}, ` +
      `with no notice covering the message by the end of the drain: ${fmt(r.noticeMissing)}.`,
  );
  lines.push(
    `- Other frames: read ${c.read}, errors ${tally(c.errors)}, activity before the phase ${c.activityBefore}, unrecognised ${c.other}.`,
  );
  if (failures.length > 0) lines.push(`- Problems: ${failures.join("; ")}`);
  lines.push("");
  lines.push(
    "Rates count frames received during the measured phase only; latencies are measured on one clock " +
      "(the bench process): activity from the POST's start to the first notice for that room at a member " +
      "session whose lastSeq ≥ the message's seq, presence from the heartbeat that flipped a status to the " +
      `watcher's frame with the new status. † = the bench process used more than ${Math.round(opts.clientBound * 100)}% of one core ` +
      "during the phase: the figure measures the client too.",
    "",
  );
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Entry

export async function runPresence(argv: string[]): Promise<void> {
  const opts = parsePresenceOptions(argv);
  const began = performance.now();
  const runId = `p${Date.now().toString(36)}`;
  let server: Server | null = null;
  const failures: string[] = [];
  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      closeAllSockets();
      if (server) await server.stop();
    })();
    return stopping;
  };
  process.on("exit", () => {
    closeAllSockets();
    stopAllSync();
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping`);
      const hard = setTimeout(() => process.exit(130), 8000);
      stop().finally(() => {
        clearTimeout(hard);
        process.exit(130);
      });
    });
  }
  const watchdog = setTimeout(() => {
    log(`the run exceeded its budget of ${opts.budgetMs / 1000} s: stopping`);
    const hard = setTimeout(() => process.exit(1), 8000);
    stop().finally(() => {
      clearTimeout(hard);
      process.exit(1);
    });
  }, opts.budgetMs);
  watchdog.unref();

  process.env.PARLEY_PRESENCE_SHARDS ??= "4";
  log(
    `${opts.quick ? "quick" : "full"} run: ${opts.sessions} sessions, ${opts.rooms} rooms, ${opts.rate} msg/s, ` +
      `${opts.durationMs / 1000} s, PARLEY_PRESENCE_SHARDS=${process.env.PARLEY_PRESENCE_SHARDS}`,
  );
  let result: PresenceResult | null = null;
  try {
    if (opts.parleyUrl) {
      server = externalServer(opts.parleyUrl);
    } else {
      log("starting Parley");
      server = await startParley(root, resolve(root, "bench/out"));
      log(`Parley up on ${server.baseUrl} after ${((performance.now() - began) / 1000).toFixed(1)} s`);
    }
    result = await runBench(opts, server, runId);
    const reloads = reloadCount(server);
    if (reloads > 0) failures.push(`wrangler dev reloaded the worker ${reloads} time(s) during the run`);
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    log("stopping");
    await stop();
    clearTimeout(watchdog);
  }
  const section = renderPresence(
    result,
    opts,
    { ...sectionFacts(argv, began), shards: process.env.PARLEY_PRESENCE_SHARDS ?? "" },
    failures,
  );
  publishSection(resolve(root, opts.out), section, "## Presence", log);
  if (!result) process.exitCode = 1;
}
