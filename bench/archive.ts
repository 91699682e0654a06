/**
 * @module `npm run bench -- --archive`: the archive and search bench (see bench/README.md,
 * "Archive"). Against a fresh local Parley it measures
 *
 * 1. archive lag: a message acknowledged over the room socket → found by `GET /api/search`. One
 *    sender posts paced messages, each with a unique token word; every acknowledged token is looked
 *    up every `--poll` ms until a hit carries it;
 * 2. search latency over a filled archive: Parley is stopped, `archived_events` of its local D1 gets
 *    `--fill` message rows of realistic random text for the same tenant (through `wrangler d1
 *    execute --local` on the server's own state, so the FTS5 triggers of migrations/0003 index
 *    them), Parley restarts on that state, and a member of the rooms runs `--queries` searches for
 *    common and rare words, each paired with a `GET /api/me` as the in-run baseline.
 *
 * The report is printed and replaces only the `## Archive` section of bench/results.md.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { numberFlag } from "./options.ts";
import { mulberry32 } from "./random.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { reloadsIn, type Server, startParley, stopAllSync, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench archive: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TICKS = 100; // getconf CLK_TCK on Linux
/** `GET /api/search` refuses a q longer than this (worker/routes/search.ts). */
const MAX_Q = 200;
const TENANT = "bench-archive";

export interface ArchiveOptions {
  quick: boolean;
  /** Lag probes: messages sent, and their pace (msg/s). */
  messages: number;
  rate: number;
  /** Every acknowledged probe is looked up this often until found. */
  pollMs: number;
  /** A probe not found this long after its ack counts as missing. */
  lagTimeoutMs: number;
  /** Message rows put in the archive before the search phase, over `rooms` rooms. */
  fill: number;
  rooms: number;
  /** Measured searches (half common words, half rare), each paired with a GET /api/me. */
  queries: number;
  budgetMs: number;
  out: string;
}

const USAGE = `usage: npm run bench -- --archive [--quick] [--messages 300] [--rate 20] [--poll 25]
       [--lag-timeout 15] [--fill 100000] [--rooms 10] [--queries 200] [--budget 600]
       [--out bench/results.md]`;

const num = (v: string | undefined, name: string, def: number, min: number, max: number) =>
  numberFlag(v, name, def, min, max, USAGE);

export function parseArchiveOptions(argv: string[]): ArchiveOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      archive: { type: "boolean" },
      quick: { type: "boolean" },
      messages: { type: "string" },
      rate: { type: "string" },
      poll: { type: "string" },
      "lag-timeout": { type: "string" },
      fill: { type: "string" },
      rooms: { type: "string" },
      queries: { type: "string" },
      budget: { type: "string" },
      out: { type: "string" },
    },
  });
  const quick = values.quick === true;
  return {
    quick,
    messages: Math.round(num(values.messages, "messages", quick ? 100 : 300, 1, 10_000)),
    rate: num(values.rate, "rate", 20, 0.1, 1000),
    pollMs: num(values.poll, "poll", 25, 5, 5000),
    lagTimeoutMs: num(values["lag-timeout"], "lag-timeout", 15, 1, 120) * 1000,
    fill: Math.round(num(values.fill, "fill", quick ? 20_000 : 100_000, 0, 2_000_000)),
    rooms: Math.round(num(values.rooms, "rooms", 10, 2, 100)),
    queries: Math.round(num(values.queries, "queries", quick ? 100 : 200, 2, 10_000)),
    budgetMs: num(values.budget, "budget", quick ? 300 : 600, 60, 3600) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

// ---------------------------------------------------------------------------------------------
// Random text

/** The head of the vocabulary: frequent English and team-chat words, most frequent first. */
const COMMON = `the to i a you it is we that for on in this be and of can have will just do with
  it's not at so what are if but get was i'm me my there our from up about know think need all
  now yes ok thanks out one time today going like how when should would let some new also them
  here any could then check team meeting please see work more back tomorrow still sure good make
  did go got code build release deploy fix issue review change test update looks great branch
  merge customer call week after doc plan question yeah already morning before ticket data
  server error user api design sprint demo launch week's problem done next last config support
  report version feature client page link file send share night early late schedule agenda`
  .split(/\s+/)
  .filter((w) => w !== "");

const SYLLABLES =
  "ba be bi bo bu da de di do du fa fe fi fo ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo za ze zi zo an en in on ar er ir or al el il ol".split(
    " ",
  );

/** A vocabulary of `size` distinct words: COMMON, then pronounceable made-up words (2–4 syllables). */
function vocabulary(size: number, random: () => number): string[] {
  const words = [...new Set(COMMON.map((w) => w.replace(/'/g, "")))];
  const seen = new Set(words);
  while (words.length < size) {
    const n = 2 + Math.floor(random() * 3);
    let w = "";
    for (let k = 0; k < n; k++) w += SYLLABLES[Math.floor(random() * SYLLABLES.length)];
    if (!seen.has(w)) {
      seen.add(w);
      words.push(w);
    }
  }
  return words;
}

/** Draws word ranks with Zipf's law (exponent `s`), as word frequencies in text roughly follow. */
function zipf(size: number, s: number, random: () => number): () => number {
  const cdf = new Float64Array(size);
  let total = 0;
  for (let r = 0; r < size; r++) {
    total += 1 / (r + 1) ** s;
    cdf[r] = total;
  }
  return () => {
    const x = random() * total;
    let lo = 0;
    let hi = size - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((cdf[mid] as number) < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

interface Corpus {
  /** A message text of 3–40 words. */
  text(): string;
  words: string[];
  /** Rows (messages) each word occurs in, by rank, over the texts drawn so far. */
  docFreq: Uint32Array;
}

function corpus(seed: number): Corpus {
  const random = mulberry32(seed);
  const words = vocabulary(30_000, random);
  const rank = zipf(words.length, 1.05, random);
  const docFreq = new Uint32Array(words.length);
  return {
    words,
    docFreq,
    text() {
      const n = 3 + Math.floor(random() ** 2 * 38);
      const ranks = Array.from({ length: n }, rank);
      for (const r of new Set(ranks)) docFreq[r] = (docFreq[r] as number) + 1;
      return ranks.map((r) => words[r]).join(" ");
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The fill: rows for archived_events, as the queue consumer would have written them

interface FillRoom {
  id: string;
  member: boolean;
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;

const FIRST_FILL_SEQ = 10;

/** D1 refuses a statement longer than 100,000 bytes (SQLITE_TOOBIG). */
const MAX_STATEMENT_CHARS = 90_000;

/** Writes the fill as SQL (multi-row INSERTs of at most 90 kB each) and returns what was drawn. */
function writeFillSql(file: string, rooms: FillRoom[], rows: number, seed: number): Corpus {
  const c = corpus(seed);
  const authors = Array.from({ length: 25 }, (_, k) => ({
    id: `fill-author-${k}`,
    name: `Fill Author ${k}`,
  }));
  const random = mulberry32(seed ^ 0x5bd1e995);
  const perRoom = Math.ceil(rows / rooms.length);
  const start = Date.now() - 365 * 24 * 3600 * 1000;
  const step = (365 * 24 * 3600 * 1000) / Math.max(1, rows);
  const chunks: string[] = [];
  let batch: string[] = [];
  let chars = 0;
  const flush = () => {
    if (batch.length === 0) return;
    chunks.push(
      `INSERT INTO archived_events (tenant_id, room_id, seq, kind, author_id, author_name, ts, target, text, text_seq, deleted, json) VALUES\n${batch.join(",\n")};\n`,
    );
    batch = [];
    chars = 0;
  };
  for (let i = 0; i < rows; i++) {
    const room = rooms[i % rooms.length] as FillRoom;
    // After the rooms' own few events (their creation), which the consumer archived already.
    const seq = Math.floor(i / rooms.length) + FIRST_FILL_SEQ;
    if (seq >= perRoom + FIRST_FILL_SEQ) break;
    const author = authors[Math.floor(random() * authors.length)] as { id: string; name: string };
    const ts = Math.round(start + i * step);
    const text = c.text();
    const json = JSON.stringify({ seq, kind: "message", ts, author, text, clientId: `fill-${i}` });
    const row = `(${sqlString(TENANT)},${sqlString(room.id)},${seq},'message',${sqlString(author.id)},${sqlString(author.name)},${ts},NULL,${sqlString(text)},${seq},0,${sqlString(json)})`;
    if (chars + row.length + 300 > MAX_STATEMENT_CHARS) flush();
    batch.push(row);
    chars += row.length + 2;
  }
  flush();
  writeFileSync(file, chunks.join(""));
  return c;
}

/** `wrangler d1 execute DB --local` on a stopped server's state, as `npm start` applies migrations. */
function d1Execute(stateDir: string, what: ["--file" | "--command", string]): string {
  const result = spawnSync(
    process.execPath,
    [
      resolve(root, "node_modules/wrangler/bin/wrangler.js"),
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
      cwd: root,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      timeout: 600_000,
    },
  );
  if (result.status !== 0) {
    throw new Error(
      `wrangler d1 execute ${what[0]} failed (${result.status ?? result.signal}): ${(result.stderr || result.stdout).slice(-800)}`,
    );
  }
  return result.stdout;
}

// ---------------------------------------------------------------------------------------------
// The run

interface User {
  token: string;
  id: string;
}

interface Probe {
  token: string;
  sentAt: number;
  ackAt: number;
  foundAt: number;
  /** Index of the poll round that found it. */
  round: number;
}

interface SearchHit {
  text: string;
  room: string;
  seq: number;
}

export interface LagResult {
  sent: number;
  acked: number;
  found: number;
  missing: number;
  errors: Map<string, number>;
  lag: LatencySummary | null;
  ack: LatencySummary | null;
  searchRequests: number;
  pollLatency: LatencySummary | null;
  phaseMs: number;
  /** Poll rounds in which probes became visible, their mean spacing and size. */
  steps: number;
  stepIntervalMs: number | null;
  probesPerStep: number;
  clientCpu: number;
  serverCpu: number;
}

export interface SearchResult {
  fillRows: number;
  fillRooms: number;
  memberRooms: number;
  fillSeconds: number;
  sqlMiB: number;
  archivedRows: number;
  ftsRows: number;
  restartSeconds: number;
  common: LatencySummary | null;
  rare: LatencySummary | null;
  all: LatencySummary | null;
  me: LatencySummary | null;
  commonHits: number;
  rareHits: number;
  commonDocFreq: number;
  rareDocFreq: number;
  errors: Map<string, number>;
  clientCpu: number;
  serverCpu: number;
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

async function login(base: string, email: string, name: string): Promise<User> {
  const { token } = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
    email,
    name,
    tenant: TENANT,
  });
  if (typeof token !== "string") throw new Error("POST /auth/dev/login answered no token");
  const me = await api<{ user?: { id?: string } }>(base, "GET", "/api/me", token);
  if (typeof me.user?.id !== "string") throw new Error("GET /api/me answered no user id");
  return { token, id: me.user.id };
}

async function createRoom(base: string, owner: User, name: string): Promise<string> {
  const room = await api<{ id?: string }>(base, "POST", "/api/rooms", owner.token, { name, kind: "channel" });
  if (typeof room.id !== "string") throw new Error("POST /api/rooms answered no id");
  return room.id;
}

/** One GET, timed; the parsed body or an error string. */
async function timedGet<T>(
  url: string,
  token: string,
): Promise<{ ms: number; body: T | null; error: string | null; end: number }> {
  const t = performance.now();
  try {
    const res = await fetch(url, {
      headers: { "Cf-Access-Jwt-Assertion": token },
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    const end = performance.now();
    if (!res.ok) return { ms: end - t, body: null, error: `HTTP ${res.status}`, end };
    return { ms: end - t, body: JSON.parse(text) as T, error: null, end };
  } catch (err) {
    const end = performance.now();
    return { ms: end - t, body: null, error: err instanceof Error ? err.name : String(err), end };
  }
}

const openSockets = new Set<WebSocket>();

/** Phase 1: paced probes over the room socket, each looked up by search until found. */
async function measureLag(
  opts: ArchiveOptions,
  server: Server,
  sender: User,
  roomId: string,
  runId: string,
): Promise<LagResult> {
  const base = server.baseUrl;
  const ws = new WebSocket(
    `${base.replace(/^http/, "ws")}/api/rooms/${encodeURIComponent(roomId)}/ws?after=0`,
    { headers: { "Cf-Access-Jwt-Assertion": sender.token }, perMessageDeflate: false },
  );
  openSockets.add(ws);
  const probes: Probe[] = [];
  const byClientId = new Map<string, Probe>();
  const byToken = new Map<string, Probe>();
  const errors = new Map<string, number>();
  await new Promise<void>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("the room socket did not get ready in 15 s")), 15_000);
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as { type: string; clientId?: string; code?: string };
      if (frame.type === "ready") {
        clearTimeout(timer);
        ok();
      } else if (frame.type === "ack" && frame.clientId) {
        const p = byClientId.get(frame.clientId);
        if (p && p.ackAt === 0) p.ackAt = performance.now();
      } else if (frame.type === "error") bump(errors, `socket ${frame.code ?? "error"}`);
    });
    ws.on("error", (err) => {
      clearTimeout(timer);
      fail(err);
    });
  });

  const words = corpus(7);
  const cpu0 = process.cpuUsage();
  const w0 = workerdSnapshot(server);
  const phaseStart = performance.now();
  let sent = 0;
  let done = false;
  // The sender: `rate` msg/s on a schedule.
  const sending = new Promise<void>((finish) => {
    const tick = () => {
      const due = Math.min(
        opts.messages,
        Math.floor(((performance.now() - phaseStart) / 1000) * opts.rate) + 1,
      );
      while (sent < due) {
        const token = `${runId}p${sent}`;
        const p: Probe = { token, sentAt: performance.now(), ackAt: 0, foundAt: 0, round: -1 };
        probes.push(p);
        byClientId.set(`${runId}-${sent}`, p);
        byToken.set(token, p);
        ws.send(
          JSON.stringify({ type: "send", clientId: `${runId}-${sent}`, text: `${words.text()} ${token}` }),
        );
        sent++;
      }
      if (sent >= opts.messages) finish();
      else setTimeout(tick, 5);
    };
    tick();
  });
  // The poller: every `pollMs`, one round of searches covering every acknowledged probe not found
  // yet (their tokens ORed, as many per request as q allows), sent together.
  const pollLatency = new Samples();
  let requests = 0;
  let round = 0;
  const polling = (async () => {
    while (!done) {
      const roundStart = performance.now();
      const waiting = probes.filter(
        (p) => p.ackAt > 0 && p.foundAt === 0 && roundStart - p.ackAt < opts.lagTimeoutMs,
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
        len += group.length > 1 ? add : p.token.length;
      }
      if (group.length > 0) groups.push(group);
      const thisRound = round++;
      await Promise.all(
        groups.map(async (tokens) => {
          requests++;
          const r = await timedGet<{ hits: SearchHit[] }>(
            `${base}/api/search?q=${encodeURIComponent(tokens.join(" OR "))}&room=${encodeURIComponent(roomId)}`,
            sender.token,
          );
          pollLatency.push(r.ms);
          if (r.error) {
            bump(errors, `search ${r.error}`);
            return;
          }
          for (const hit of r.body?.hits ?? []) {
            const token = /\S+$/.exec(hit.text)?.[0] ?? "";
            const p = byToken.get(token);
            if (p && p.foundAt === 0) {
              p.foundAt = r.end;
              p.round = thisRound;
            }
          }
        }),
      );
      const left = roundStart + opts.pollMs - performance.now();
      if (left > 0) await sleep(left);
    }
  })();
  await sending;
  // Until every probe is acknowledged and found, or past its timeout.
  const ackDeadline = performance.now() + 15_000;
  while (performance.now() < ackDeadline) {
    const now = performance.now();
    const open = probes.some(
      (p) => p.ackAt === 0 || (p.foundAt === 0 && now - p.ackAt < opts.lagTimeoutMs + opts.pollMs),
    );
    if (!open) break;
    if (probes.every((p) => p.ackAt > 0) && probes.every((p) => p.foundAt > 0)) break;
    await sleep(20);
  }
  done = true;
  await polling;
  const phaseMs = performance.now() - phaseStart;
  const cpu = process.cpuUsage(cpu0);
  const w1 = workerdSnapshot(server);
  ws.close();
  openSockets.delete(ws);

  const lag = new Samples();
  const ack = new Samples();
  for (const p of probes) {
    if (p.ackAt > 0) ack.push(p.ackAt - p.sentAt);
    if (p.foundAt > 0) lag.push(p.foundAt - p.ackAt);
  }
  // Probes become searchable batch by batch (one queue batch = one D1 transaction): the rounds in
  // which any became visible, and how far apart they are.
  const rounds = [...new Set(probes.filter((p) => p.round >= 0).map((p) => p.round))].sort((a, b) => a - b);
  const roundTime = new Map<number, number>();
  for (const p of probes) {
    if (p.round >= 0) roundTime.set(p.round, Math.min(roundTime.get(p.round) ?? p.foundAt, p.foundAt));
  }
  const times = rounds.map((r) => roundTime.get(r) as number);
  const found = probes.filter((p) => p.foundAt > 0).length;
  return {
    sent,
    acked: probes.filter((p) => p.ackAt > 0).length,
    found,
    missing: probes.filter((p) => p.ackAt > 0 && p.foundAt === 0).length,
    errors,
    lag: lag.summary(),
    ack: ack.summary(),
    searchRequests: requests,
    pollLatency: pollLatency.summary(),
    phaseMs,
    steps: rounds.length,
    stepIntervalMs:
      times.length > 1 ? ((times.at(-1) as number) - (times[0] as number)) / (times.length - 1) : null,
    probesPerStep: rounds.length > 0 ? found / rounds.length : 0,
    clientCpu: (cpu.user + cpu.system) / 1000 / phaseMs,
    serverCpu: (w1.ticks - w0.ticks) / TICKS / (phaseMs / 1000),
  };
}

/** Phase 2: the measured searches, each paired with a GET /api/me, one request at a time. */
async function measureSearch(
  opts: ArchiveOptions,
  server: Server,
  searcher: User,
  words: Corpus,
): Promise<
  Pick<
    SearchResult,
    | "common"
    | "rare"
    | "all"
    | "me"
    | "commonHits"
    | "rareHits"
    | "commonDocFreq"
    | "rareDocFreq"
    | "errors"
    | "clientCpu"
    | "serverCpu"
  >
> {
  const base = server.baseUrl;
  // Common: the 50 most frequent words. Rare: words in 1–20 of the filled rows.
  const common = words.words.slice(0, 50).map((w, r) => ({ w, df: words.docFreq[r] as number }));
  const rarePool = words.words
    .map((w, r) => ({ w, df: words.docFreq[r] as number }))
    .filter((x) => x.df >= 1 && x.df <= 20);
  const random = mulberry32(11);
  const pick = <T>(list: T[]): T => list[Math.floor(random() * list.length)] as T;
  const plan = Array.from({ length: opts.queries }, (_, i) =>
    i % 2 === 0 ? { kind: "common" as const, ...pick(common) } : { kind: "rare" as const, ...pick(rarePool) },
  );
  if (rarePool.length === 0) throw new Error("the fill has no rare words (is --fill 0?)");
  const errors = new Map<string, number>();
  const search = (w: string) =>
    timedGet<{ hits: SearchHit[] }>(`${base}/api/search?q=${encodeURIComponent(w)}`, searcher.token);
  const me = () => timedGet<unknown>(`${base}/api/me`, searcher.token);
  // Warm-up, not measured: compiles the query plans and pages the index in.
  for (let i = 0; i < 10; i++) {
    await me();
    await search(pick(common).w);
    await search(pick(rarePool).w);
  }
  const s = { common: new Samples(), rare: new Samples(), all: new Samples(), me: new Samples() };
  const hits = { common: 0, rare: 0 };
  const df = { common: 0, rare: 0 };
  const cpu0 = process.cpuUsage();
  const w0 = workerdSnapshot(server);
  const t0 = performance.now();
  for (const q of plan) {
    const m = await me();
    if (m.error) bump(errors, `me ${m.error}`);
    else s.me.push(m.ms);
    const r = await search(q.w);
    if (r.error) {
      bump(errors, `search ${r.error}`);
      continue;
    }
    s[q.kind].push(r.ms);
    s.all.push(r.ms);
    hits[q.kind] += r.body?.hits.length ?? 0;
    df[q.kind] += q.df;
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const w1 = workerdSnapshot(server);
  const half = Math.max(1, opts.queries / 2);
  return {
    common: s.common.summary(),
    rare: s.rare.summary(),
    all: s.all.summary(),
    me: s.me.summary(),
    commonHits: hits.common / half,
    rareHits: hits.rare / half,
    commonDocFreq: df.common / half,
    rareDocFreq: df.rare / half,
    errors,
    clientCpu: (cpu.user + cpu.system) / 1000 / ms,
    serverCpu: (w1.ticks - w0.ticks) / TICKS / (ms / 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// Report

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n >= 100 ? fmt(n) : n.toFixed(1));
const lat = (l: LatencySummary | null) => (l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "n/a");
const tally = (m: Map<string, number>) =>
  m.size === 0 ? "none" : [...m].map(([k, v]) => `${k} ×${v}`).join(", ");
const ratio = (a: LatencySummary | null, b: LatencySummary | null, k: "p50" | "p99") =>
  a && b && b[k] > 0 ? `${(a[k] / b[k]).toFixed(1)}×` : "n/a";

function renderArchive(
  lag: LagResult | null,
  search: SearchResult | null,
  opts: ArchiveOptions,
  meta: SectionFacts,
  failures: string[],
): string {
  const lines: string[] = [];
  lines.push("## Archive", "");
  lines.push(
    `${meta.date} · \`${meta.command}\` · ${meta.machine} · ${meta.total} s in all. ` +
      `Parley under \`wrangler dev\` with fresh state, one tenant; the room-events queue and its consumer run in the same local runtime.`,
    "",
  );
  lines.push(
    `Load: (1) one sender posts ${opts.messages} messages at ${opts.rate} msg/s over the room socket, each with a unique token word; ` +
      `every acknowledged token is looked up every ${opts.pollMs} ms (one round of \`GET /api/search\` requests, tokens ORed ` +
      `up to the ${MAX_Q}-character q limit) until a hit carries it. (2) ${fmt(opts.fill)} message rows of random Zipf-distributed text ` +
      `put into the archive's D1 table over ${opts.rooms} rooms, then ${opts.queries} searches (half common, half rare words), ` +
      `one request at a time, each after a \`GET /api/me\` by the same user.`,
    "",
  );
  lines.push("| figure | value |", "|---|---|");
  if (lag) {
    const l = lag.lag;
    lines.push(
      `| archive lag, ack → searchable, p50 / p95 / p99 / max (ms) | ${l ? `${lat(l)} / ${ms(l.max)}` : "n/a"} |`,
    );
    lines.push(
      `| probes found / acknowledged / sent | ${fmt(lag.found)} / ${fmt(lag.acked)} / ${fmt(lag.sent)} |`,
    );
    lines.push(
      `| visibility steps (poll rounds that found probes) | ${fmt(lag.steps)}, every ${lag.stepIntervalMs === null ? "n/a" : fmt(lag.stepIntervalMs)} ms on average, ${lag.probesPerStep.toFixed(1)} probes each |`,
    );
  }
  if (search) {
    lines.push(`| search latency, common words, p50 / p95 / p99 (ms) | ${lat(search.common)} |`);
    lines.push(`| search latency, rare words, p50 / p95 / p99 (ms) | ${lat(search.rare)} |`);
    lines.push(`| search latency, all ${opts.queries}, p50 / p95 / p99 (ms) | ${lat(search.all)} |`);
    lines.push(`| GET /api/me in the same run, p50 / p95 / p99 (ms) | ${lat(search.me)} |`);
    lines.push(
      `| search / me | p50 ${ratio(search.all, search.me, "p50")}, p99 ${ratio(search.all, search.me, "p99")}; common p50 ${ratio(search.common, search.me, "p50")}, rare p50 ${ratio(search.rare, search.me, "p50")} |`,
    );
  }
  if (!lag && !search) {
    lines.push("", `**No result**: ${failures.join("; ")}`, "");
    return lines.join("\n");
  }
  lines.push("");
  lines.push("Details:", "");
  if (lag) {
    lines.push(
      `- Lag phase: ${(lag.phaseMs / 1000).toFixed(1)} s; ack latency p50 / p95 / p99 ${lat(lag.ack)} ms; ` +
        `${fmt(lag.searchRequests)} search requests (${fmt(lag.searchRequests / (lag.phaseMs / 1000))}/s, p50 / p95 / p99 ${lat(lag.pollLatency)} ms); ` +
        `not found within ${opts.lagTimeoutMs / 1000} s: ${lag.missing}; errors: ${tally(lag.errors)}; ` +
        `bench client CPU ${Math.round(lag.clientCpu * 100)}%, workerd CPU ${Math.round(lag.serverCpu * 100)}% (100% = one core).`,
    );
  }
  if (search) {
    lines.push(
      `- Fill: ${fmt(search.fillRows)} rows over ${search.fillRooms} rooms (the searcher is a member of ${search.memberRooms}; search only looks there), ` +
        `${search.sqlMiB.toFixed(1)} MiB of SQL through \`wrangler d1 execute DB --local\` in ${search.fillSeconds.toFixed(1)} s with Parley stopped, ` +
        `then a restart on the same state in ${search.restartSeconds.toFixed(1)} s; archived_events holds ${fmt(search.archivedRows)} rows, archive_fts indexes ${fmt(search.ftsRows)} (rows of archive_fts_docsize).`,
    );
    lines.push(
      `- Queries: common words occur in ${fmt(search.commonDocFreq)} filled rows on average (hits returned ${search.commonHits.toFixed(1)}, the route's cap is 50), ` +
        `rare words in ${search.rareDocFreq.toFixed(1)} (hits ${search.rareHits.toFixed(1)}); errors: ${tally(search.errors)}; ` +
        `bench client CPU ${Math.round(search.clientCpu * 100)}%, workerd CPU ${Math.round(search.serverCpu * 100)}%.`,
    );
  }
  if (failures.length > 0) lines.push(`- Problems: ${failures.join("; ")}`);
  lines.push("");
  lines.push(
    "Lag is measured on one clock (the bench process), from the ack frame to the arrival of the first search answer " +
      `that carries the token, so it includes up to one poll interval (${opts.pollMs} ms) and one search request. Its parts: ` +
      "the room sends its outbox to the queue one drain delay (200 ms) after the first event of a quiet spell; the local queue " +
      "hands the consumer a batch when it holds 100 messages or 1 s (max_batch_timeout) after the first one arrived, and " +
      "messages arriving while a batch is being consumed wait for the next window; the consumer writes the batch to D1 " +
      "(archived_events, whose triggers index archive_fts) in one transaction, so a batch becomes searchable at once: " +
      "one visibility step. Search latency is the HTTP round trip of one request (auth, the FTS5 query ranked by bm25 with " +
      "the membership filter, snippets for at most 50 hits); `GET /api/me` is the same auth path without a search.",
    "",
  );
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
// Entry

export async function runArchive(argv: string[]): Promise<void> {
  const opts = parseArchiveOptions(argv);
  const began = performance.now();
  const runId = `a${Date.now().toString(36)}`;
  const stateDir = mkdtempSync(join(tmpdir(), "parley-bench-archive-"));
  const logDir = resolve(root, "bench/out");
  let server: Server | null = null;
  const failures: string[] = [];
  let stopping: Promise<void> | null = null;
  const closeSockets = () => {
    for (const ws of openSockets) {
      try {
        ws.terminate();
      } catch {}
    }
    openSockets.clear();
  };
  const stopServer = async () => {
    closeSockets();
    const s = server;
    server = null;
    if (s) await s.stop();
  };
  const stopAll = () => {
    stopping ??= stopServer().finally(() => rmSync(stateDir, { recursive: true, force: true }));
    return stopping;
  };
  process.on("exit", () => {
    closeSockets();
    stopAllSync();
    rmSync(stateDir, { recursive: true, force: true });
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping`);
      const hard = setTimeout(() => process.exit(130), 8000);
      stopAll().finally(() => {
        clearTimeout(hard);
        process.exit(130);
      });
    });
  }
  const watchdog = setTimeout(() => {
    log(`the run exceeded its budget of ${opts.budgetMs / 1000} s: stopping`);
    const hard = setTimeout(() => process.exit(1), 8000);
    stopAll().finally(() => {
      clearTimeout(hard);
      process.exit(1);
    });
  }, opts.budgetMs);
  watchdog.unref();

  log(
    `${opts.quick ? "quick" : "full"} run: ${opts.messages} probes at ${opts.rate} msg/s, fill ${opts.fill} rows, ${opts.queries} searches`,
  );
  let lag: LagResult | null = null;
  let search: SearchResult | null = null;
  try {
    log("starting Parley");
    server = await startParley(root, logDir, { stateDir, name: "parley-archive" });
    log(`Parley up on ${server.baseUrl} after ${((performance.now() - began) / 1000).toFixed(1)} s`);
    const base = server.baseUrl;
    const searcher = await login(base, `searcher@${runId}.bench.test`, "Searcher");
    const other = await login(base, `other@${runId}.bench.test`, "Other");
    const lagRoom = await createRoom(base, searcher, `${runId} lag`);
    // The fill's rooms: the searcher is in all but two, which another user of the tenant owns.
    const fillRooms: { id: string; member: boolean }[] = [];
    for (let r = 0; r < opts.rooms; r++) {
      const member = r < opts.rooms - 2;
      fillRooms.push({ id: await createRoom(base, member ? searcher : other, `${runId} fill ${r}`), member });
    }
    // Warm-up, not measured: the room object, the socket path, the outbox, queue and consumer.
    await api(base, "POST", `/api/rooms/${encodeURIComponent(lagRoom)}/messages`, searcher.token, {
      clientId: `${runId}-warm`,
      text: "warm-up",
    });
    await sleep(2000);

    log(`lag: ${opts.messages} probes at ${opts.rate} msg/s`);
    lag = await measureLag(opts, server, searcher, lagRoom, runId);
    log(
      `lag: ${lag.found} of ${lag.sent} found; p50 ${lag.lag ? ms(lag.lag.p50) : "n/a"} ms, p99 ${lag.lag ? ms(lag.lag.p99) : "n/a"} ms`,
    );

    if (opts.fill > 0) {
      log("stopping Parley to fill its archive");
      await stopServer();
      const sqlFile = join(stateDir, "fill.sql");
      const t0 = performance.now();
      const words = writeFillSql(sqlFile, fillRooms, opts.fill, 1234);
      const sqlMiB = readFileSync(sqlFile).length / 1024 ** 2;
      log(
        `wrote ${sqlMiB.toFixed(1)} MiB of SQL in ${((performance.now() - t0) / 1000).toFixed(1)} s; executing`,
      );
      const t1 = performance.now();
      d1Execute(stateDir, ["--file", sqlFile]);
      const fillSeconds = (performance.now() - t1) / 1000;
      rmSync(sqlFile, { force: true });
      const counted = JSON.parse(
        d1Execute(stateDir, [
          "--command",
          `SELECT (SELECT COUNT(*) FROM archived_events WHERE tenant_id = '${TENANT}') AS rows, (SELECT COUNT(*) FROM archive_fts_docsize) AS fts`,
        ]),
      ) as { results: { rows: number; fts: number }[] }[];
      const count = counted[0]?.results[0] ?? { rows: 0, fts: 0 };
      log(
        `filled in ${fillSeconds.toFixed(1)} s: ${count.rows} archived rows, ${count.fts} indexed; restarting`,
      );
      const t2 = performance.now();
      server = await startParley(root, logDir, { stateDir, name: "parley-archive-2" });
      const restartSeconds = (performance.now() - t2) / 1000;
      log(`searching: ${opts.queries} queries`);
      const measured = await measureSearch(opts, server, searcher, words);
      search = {
        fillRows: opts.fill,
        fillRooms: fillRooms.length,
        memberRooms: fillRooms.filter((r) => r.member).length,
        fillSeconds,
        sqlMiB,
        archivedRows: count.rows,
        ftsRows: count.fts,
        restartSeconds,
        ...measured,
      };
      log(
        `search: p50 ${search.all ? ms(search.all.p50) : "n/a"} ms; me p50 ${search.me ? ms(search.me.p50) : "n/a"} ms`,
      );
    }
    for (const logFile of [join(logDir, "parley-archive.log"), join(logDir, "parley-archive-2.log")]) {
      const reloads = reloadsIn(logFile);
      if (reloads > 0) failures.push(`wrangler dev reloaded the worker ${reloads} time(s) during the run`);
    }
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    log("stopping");
    await stopAll();
    clearTimeout(watchdog);
  }
  const section = renderArchive(lag, search, opts, sectionFacts(argv, began), failures);
  publishSection(resolve(root, opts.out), section, "## Archive", log);
  if (!lag && !search) process.exitCode = 1;
}
