/**
 * @module `npm run bench -- --search-scale`: issue 14's search figures, the previous design (tag
 * pre-shards: one D1 archive with FTS5) and the current one (per-tenant search shards) measured in
 * the same run (see bench/README.md, "Search at scale"):
 *
 * 1. one tenant of `--messages` messages over `--rooms` rooms: `GET /api/search` latency of several
 *    query kinds for a user in few rooms and one in many, each search paired with a `GET /api/me`;
 * 2. `--tenants` tenants of `--tenant-messages` each: the same queries in tenant 0 while it is the
 *    deployment's only content, and again once the other tenants are filled (after / before).
 *
 * The current design is filled through its real pipeline (sends over the room sockets); the
 * previous one by writing its archive table directly, as bench/archive.ts did. The report replaces
 * only the `## Search at scale` section of bench/results.md.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { makeCorpus } from "./corpus.ts";
import { oldDesignRoot } from "./old.ts";
import { sideFlags } from "./options.ts";
import {
  closeFillSockets,
  d1Execute,
  type FillResult,
  fillArchiveTable,
  fillOverSockets,
  waitIndexed,
} from "./search-fill.ts";
import { planQueries, type Query, runQueries, type SearchRun, tenantStats } from "./search-queries.ts";
import { renderSearchScale } from "./search-report.ts";
import { type SearcherPlan, setUpTenant, type TenantLive, type TenantPlan } from "./search-world.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { reloadsIn, type Server, ServerGroup, startParley, workerdSnapshot } from "./servers.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const logDir = resolve(root, "bench/out");
const log = (msg: string) => process.stderr.write(`bench search-scale: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The default run fills 0.3 × the messages (300,000 in one tenant, 10 × 30,000). The current
 * design's real pipeline costs the local runtime's one thread about 1.1–1.5 ms of CPU per message
 * (430–670 msg/s measured on this 2-core machine, 100 rooms × 64 sends in flight), so the issue's
 * 2,000,000 would take 50–80 minutes of filling alone; at 0.3 the whole run took 30 minutes.
 * `--scale 1` runs the figures.
 */
const DEFAULT_SCALE = 0.3;

/**
 * Limits for both designs' servers, beside startParley's raised per-user quotas. A room resends
 * what its D1 history has not confirmed `PARLEY_ARCHIVE_RESEND_MS` (60 s) after sending it, for a
 * queue that lost it. Locally the queue's consumer shares the one runtime thread that the fill
 * saturates, so it falls more than 60 s behind and every room resends everything unconfirmed, which
 * feeds on itself: a default run's 312,000 events became 1.52 M queue messages, and the server was
 * still consuming them 5 minutes after the fill, during the searches. Nothing is lost in a run
 * without restarts, so the bench waits an hour before resending.
 */
const SERVER_ENV = { PARLEY_ARCHIVE_RESEND_MS: String(60 * 60 * 1000) };

export type Design = "old" | "new";
export type Case = "one" | "tenants";

export interface SearchScaleOptions {
  quick: boolean;
  /** Multiplies `messages` and `tenantMessages` (rooms, tenants and members stay). */
  scale: number;
  messages: number;
  rooms: number;
  /** Rooms of each searcher of case one (clamped to the rooms). */
  members: number[];
  tenants: number;
  tenantMessages: number;
  tenantRooms: number;
  tenantMembers: number[];
  authors: number;
  /** Measured searches per query kind per searcher. */
  queries: number;
  /** Rooms filled at once, and unacknowledged sends per room socket. */
  concurrency: number;
  window: number;
  designs: Design[];
  cases: Case[];
  budgetMs: number;
  out: string;
}

const USAGE = `usage: npm run bench -- --search-scale [--quick] [--scale 0.3] [--messages 1000000] [--rooms 1000]
       [--members 20,500] [--tenants 10] [--tenant-messages 100000] [--tenant-rooms 100]
       [--tenant-members 20,100] [--authors 10] [--queries 100] [--concurrency 100] [--window 64]
       [--designs old,new] [--cases one,tenants] [--budget 3300] [--out bench/results.md]`;

function list<T extends string>(value: string, allowed: readonly T[], name: string): T[] {
  const out = value.split(",").map((s) => s.trim()) as T[];
  for (const v of out) if (!allowed.includes(v)) throw new Error(`--${name}: unknown ${v}\n${USAGE}`);
  return out;
}

function counts(value: string, name: string): number[] {
  const out = value.split(",").map(Number);
  if (out.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`--${name}: positive integers\n${USAGE}`);
  return out;
}

export function parseSearchScaleOptions(argv: string[]): SearchScaleOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    "search-scale": { type: "boolean" },
    quick: { type: "boolean" },
    scale: { type: "string" },
    messages: { type: "string" },
    rooms: { type: "string" },
    members: { type: "string" },
    tenants: { type: "string" },
    "tenant-messages": { type: "string" },
    "tenant-rooms": { type: "string" },
    "tenant-members": { type: "string" },
    authors: { type: "string" },
    queries: { type: "string" },
    concurrency: { type: "string" },
    window: { type: "string" },
    designs: { type: "string" },
    cases: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  const rooms = Math.round(num(values.rooms, "rooms", quick ? 100 : 1000, 2, 10_000));
  const tenants = Math.round(num(values.tenants, "tenants", 10, 2, 100));
  const tenantRooms = Math.round(
    num(values["tenant-rooms"], "tenant-rooms", Math.max(2, Math.floor(rooms / tenants)), 2, 10_000),
  );
  return {
    quick,
    scale: num(values.scale, "scale", quick ? 1 : DEFAULT_SCALE, 0.001, 1),
    messages: Math.round(num(values.messages, "messages", quick ? 50_000 : 1_000_000, rooms, 10_000_000)),
    rooms,
    members: counts(values.members ?? (quick ? "20,50" : "20,500"), "members"),
    tenants,
    tenantMessages: Math.round(
      num(values["tenant-messages"], "tenant-messages", quick ? 5_000 : 100_000, tenantRooms, 10_000_000),
    ),
    tenantRooms,
    tenantMembers: counts(values["tenant-members"] ?? (quick ? "2,10" : "20,100"), "tenant-members"),
    authors: Math.round(num(values.authors, "authors", 10, 1, 40)),
    queries: Math.round(num(values.queries, "queries", quick ? 30 : 100, 1, 10_000)),
    concurrency: Math.round(num(values.concurrency, "concurrency", 100, 1, 2000)),
    window: Math.round(num(values.window, "window", 64, 1, 1000)),
    designs: list(values.designs ?? "new,old", ["old", "new"] as const, "designs"),
    cases: list(values.cases ?? "one,tenants", ["one", "tenants"] as const, "cases"),
    budgetMs: num(values.budget, "budget", quick ? 1200 : 3300, 60, 4 * 3600) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

/** A searcher of every `step`-th room: `members` rooms of `rooms`, or as close as a step gives. */
function searcher(members: number, rooms: number): SearcherPlan {
  const step = Math.max(1, Math.floor(rooms / Math.min(members, rooms)));
  return { key: `m${Math.ceil(rooms / step)}`, step };
}

function searchers(members: number[], rooms: number): SearcherPlan[] {
  const out = new Map<string, SearcherPlan>();
  for (const m of members) {
    const s = searcher(m, rooms);
    out.set(s.key, s);
  }
  return [...out.values()];
}

export function onePlan(o: SearchScaleOptions): TenantPlan {
  return {
    index: 0,
    slug: "scale-one",
    rooms: o.rooms,
    messages: Math.max(o.rooms, Math.round(o.messages * o.scale)),
    authors: o.authors,
    searchers: searchers(o.members, o.rooms),
  };
}

export function tenantPlans(o: SearchScaleOptions): TenantPlan[] {
  return Array.from({ length: o.tenants }, (_, t) => ({
    // Seeds differ from case one's tenant (index 0): these are other rooms with other text.
    index: 100 + t,
    slug: `scale-t${t}`,
    rooms: o.tenantRooms,
    messages: Math.max(o.tenantRooms, Math.round(o.tenantMessages * o.scale)),
    authors: o.authors,
    searchers: t === 0 ? searchers(o.tenantMembers, o.tenantRooms) : [],
  }));
}

/** How one fill went, with the wait until it was searchable and the server quiet. */
export interface Filled extends FillResult {
  how: "sockets" | "table";
  sqlMiB?: number;
  /** Sentinels searched until every room's last message was found; still missing then. */
  indexedSeconds: number;
  missing: number;
  settleSeconds: number;
  settled: boolean;
}

export interface OneResult {
  design: Design;
  setupSeconds: number;
  fill: Filled;
  runs: Map<string, SearchRun>;
}

export interface TenantsResult {
  design: Design;
  setupSeconds: number;
  alone: Filled;
  others: Filled;
  before: Map<string, SearchRun>;
  after: Map<string, SearchRun>;
}

export interface SearchScaleResults {
  one: Map<Design, OneResult>;
  tenants: Map<Design, TenantsResult>;
  /** Messages per searcher of case one's tenant, and of tenant 0 (what each can find). */
  visible: Map<string, number>;
  tenantVisible: Map<string, number>;
  failures: string[];
  skipped: string[];
  reloads: number;
}

/**
 * Waits until the server's workerd processes use under a tenth of a core over 2 s (the queue,
 * its consumer, sealing and the alarms have caught up), for at most `maxMs`.
 */
async function settle(server: Server, maxMs = 420_000): Promise<{ seconds: number; settled: boolean }> {
  const t0 = performance.now();
  let prev = workerdSnapshot(server).ticks;
  while (performance.now() - t0 < maxMs) {
    await sleep(2000);
    const now = workerdSnapshot(server).ticks;
    const busy = (now - prev) / 100 / 2;
    prev = now;
    if (busy < 0.1) return { seconds: (performance.now() - t0) / 1000, settled: true };
  }
  return { seconds: (performance.now() - t0) / 1000, settled: false };
}

/** After a fill: every room searchable, then the server quiet. */
async function afterFill(
  server: Server,
  tenants: TenantLive[],
  fill: FillResult,
  how: Filled["how"],
): Promise<Filled> {
  const indexed = await waitIndexed(server.baseUrl, tenants, 600_000, log);
  if (indexed.missing > 0)
    throw new Error(
      `${indexed.missing} rooms were not searchable ${indexed.seconds.toFixed(0)} s after the fill`,
    );
  log(
    `every room searchable ${indexed.seconds.toFixed(1)} s after the fill; waiting for the server to settle`,
  );
  const quiet = await settle(server);
  log(`settled after ${quiet.seconds.toFixed(0)} s${quiet.settled ? "" : " (still busy: measured anyway)"}`);
  return {
    ...fill,
    how,
    indexedSeconds: indexed.seconds,
    missing: indexed.missing,
    settleSeconds: quiet.seconds,
    settled: quiet.settled,
  };
}

const fmtRate = (f: FillResult) =>
  `${f.messages.toLocaleString("en-US")} messages in ${f.seconds.toFixed(0)} s (${Math.round(f.messages / f.seconds)} msg/s)`;

class Runner {
  readonly o: SearchScaleOptions;
  readonly group: ServerGroup;
  readonly corpus = makeCorpus();
  readonly began = performance.now();
  readonly stateDirs: string[] = [];
  readonly logFiles: string[] = [];

  /** Set on SIGINT/SIGTERM/SIGHUP: the group stops the servers, and no phase starts another. */
  aborted = false;

  constructor(o: SearchScaleOptions, group: ServerGroup) {
    this.o = o;
    this.group = group;
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
      process.on(signal, () => {
        this.aborted = true;
      });
  }

  overBudget(): boolean {
    return performance.now() - this.began > this.o.budgetMs;
  }

  /** A server of `design` on `stateDir` (a new temporary one if absent, which the run removes). */
  async start(design: Design, name: string, stateDir: string): Promise<Server> {
    const appRoot = design === "new" ? root : oldDesignRoot("pre-shards", log);
    log(`starting the ${design} design (${name})`);
    if (this.aborted) throw new Error("stopped by a signal");
    const server = await startParley(appRoot, logDir, {
      stateDir,
      name: `search-scale-${name}`,
      env: SERVER_ENV,
    });
    this.group.track(server);
    this.logFiles.push(server.logFile);
    return server;
  }

  stateDir(): string {
    const dir = mkdtempSync(join(tmpdir(), "parley-bench-search-"));
    this.stateDirs.push(dir);
    return dir;
  }

  async stop(server: Server): Promise<void> {
    closeFillSockets();
    await server.stop();
  }

  async measure(
    server: Server,
    live: TenantLive,
    plans: Map<string, Query[]>,
  ): Promise<Map<string, SearchRun>> {
    const out = new Map<string, SearchRun>();
    for (const s of live.plan.searchers) {
      const run = await runQueries(server, live, s, plans.get(s.key) ?? []);
      out.set(s.key, run);
      log(
        `${live.plan.slug} ${s.key}: ${(plans.get(s.key) ?? []).length} searches in ${run.seconds.toFixed(0)} s, p50 ${run.all?.p50.toFixed(1)} ms (me ${run.me?.p50.toFixed(1)} ms)`,
      );
    }
    return out;
  }

  /** The previous design: a server stopped on `stateDir`, its archive table filled, restarted. */
  async tableFill(
    stateDir: string,
    tenants: TenantLive[],
    name: string,
  ): Promise<{ server: Server; fill: Filled }> {
    const appRoot = oldDesignRoot("pre-shards", log);
    const written = fillArchiveTable(appRoot, stateDir, tenants, this.corpus, log);
    log(`archive table: ${fmtRate(written)}, ${written.sqlMiB.toFixed(0)} MiB of SQL`);
    const server = await this.start("old", name, stateDir);
    return { server, fill: await afterFill(server, tenants, written, "table") };
  }

  async one(design: Design, plan: TenantPlan, plans: Map<string, Query[]>): Promise<OneResult> {
    const stateDir = this.stateDir();
    let server = await this.start(design, `${design}-one`, stateDir);
    try {
      const t0 = performance.now();
      const live = await setUpTenant(server.baseUrl, plan);
      const setupSeconds = (performance.now() - t0) / 1000;
      log(
        `${design}: ${plan.rooms} rooms set up in ${setupSeconds.toFixed(0)} s; filling ${plan.messages.toLocaleString("en-US")} messages`,
      );
      let fill: Filled;
      if (design === "new") {
        const sent = await fillOverSockets(server.baseUrl, [live], this.corpus, { ...this.o, log });
        log(`new: ${fmtRate(sent)}`);
        fill = await afterFill(server, [live], sent, "sockets");
      } else {
        await settle(server);
        await this.stop(server);
        ({ server, fill } = await this.tableFill(stateDir, [live], "old-one-2"));
        checkRows(stateDir, [plan]);
      }
      return { design, setupSeconds, fill, runs: await this.measure(server, live, plans) };
    } finally {
      await this.stop(server);
      rmSync(stateDir, { recursive: true, force: true });
    }
  }

  async tenants(design: Design, plans: TenantPlan[], queries: Map<string, Query[]>): Promise<TenantsResult> {
    const stateDir = this.stateDir();
    let server = await this.start(design, `${design}-tenants`, stateDir);
    try {
      const t0 = performance.now();
      const lives: TenantLive[] = [];
      for (const plan of plans) lives.push(await setUpTenant(server.baseUrl, plan));
      const setupSeconds = (performance.now() - t0) / 1000;
      const [first, ...rest] = lives as [TenantLive, ...TenantLive[]];
      log(`${design}: ${plans.length} tenants set up in ${setupSeconds.toFixed(0)} s; filling tenant 0`);
      let alone: Filled;
      let others: Filled;
      let before: Map<string, SearchRun>;
      if (design === "new") {
        const sent = await fillOverSockets(server.baseUrl, [first], this.corpus, { ...this.o, log });
        log(`new, tenant 0: ${fmtRate(sent)}`);
        alone = await afterFill(server, [first], sent, "sockets");
        before = await this.measure(server, first, queries);
        if (this.overBudget())
          throw new Error("the time budget ran out before the other tenants were filled");
        const more = await fillOverSockets(server.baseUrl, rest, this.corpus, { ...this.o, log });
        log(`new, tenants 1-${rest.length}: ${fmtRate(more)}`);
        others = await afterFill(server, rest, more, "sockets");
      } else {
        await settle(server);
        await this.stop(server);
        ({ server, fill: alone } = await this.tableFill(stateDir, [first], "old-tenants-2"));
        before = await this.measure(server, first, queries);
        if (this.overBudget())
          throw new Error("the time budget ran out before the other tenants were filled");
        await this.stop(server);
        ({ server, fill: others } = await this.tableFill(stateDir, rest, "old-tenants-3"));
        checkRows(stateDir, plans);
      }
      return {
        design,
        setupSeconds,
        alone,
        others,
        before,
        after: await this.measure(server, first, queries),
      };
    } finally {
      await this.stop(server);
      rmSync(stateDir, { recursive: true, force: true });
    }
  }
}

/** The previous design's archive holds every planned message of `plans`, and FTS indexes them. */
function checkRows(stateDir: string, plans: TenantPlan[]): void {
  const out = JSON.parse(
    d1Execute(oldDesignRoot("pre-shards", log), stateDir, [
      "--command",
      `SELECT tenant_id AS t, COUNT(*) AS n FROM archived_events WHERE kind = 'message' GROUP BY tenant_id`,
    ]),
  ) as { results: { t: string; n: number }[] }[];
  const byTenant = new Map((out[0]?.results ?? []).map((r) => [r.t, r.n]));
  for (const p of plans) {
    if ((byTenant.get(p.slug) ?? 0) !== p.messages)
      throw new Error(
        `the archive holds ${byTenant.get(p.slug) ?? 0} messages of ${p.slug}, not ${p.messages}`,
      );
  }
}

export async function runSearchScale(argv: string[]): Promise<void> {
  const o = parseSearchScaleOptions(argv);
  // The watchdog is a last resort past the budget: phases check the budget before they start.
  const group = new ServerGroup(log, o.budgetMs * 1.5);
  group.onStop(closeFillSockets);
  const runner = new Runner(o, group);
  process.on("exit", () => {
    for (const dir of runner.stateDirs) rmSync(dir, { recursive: true, force: true });
  });
  const results: SearchScaleResults = {
    one: new Map(),
    tenants: new Map(),
    visible: new Map(),
    tenantVisible: new Map(),
    failures: [],
    skipped: [],
    reloads: 0,
  };
  const attempt = async (what: string, fn: () => Promise<void>) => {
    if (runner.overBudget()) {
      results.skipped.push(`${what} (the budget of ${o.budgetMs / 1000} s was spent)`);
      return;
    }
    try {
      await fn();
    } catch (err) {
      results.failures.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      log(`${what} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
  };
  try {
    if (o.cases.includes("one")) {
      const plan = onePlan(o);
      const stats = tenantStats(runner.corpus, plan);
      const plans = new Map(
        plan.searchers.map((s) => [s.key, planQueries(runner.corpus, plan, stats, s, o.queries)]),
      );
      for (const s of plan.searchers) results.visible.set(s.key, stats.visible.get(s.key)?.messages ?? 0);
      for (const design of o.designs)
        await attempt(`one tenant, ${design} design`, async () => {
          results.one.set(design, await runner.one(design, plan, plans));
        });
    }
    if (o.cases.includes("tenants")) {
      const plans = tenantPlans(o);
      const first = plans[0] as TenantPlan;
      const stats = tenantStats(runner.corpus, first);
      const queries = new Map(
        first.searchers.map((s) => [s.key, planQueries(runner.corpus, first, stats, s, o.queries)]),
      );
      for (const s of first.searchers)
        results.tenantVisible.set(s.key, stats.visible.get(s.key)?.messages ?? 0);
      for (const design of o.designs)
        await attempt(`${o.tenants} tenants, ${design} design`, async () => {
          results.tenants.set(design, await runner.tenants(design, plans, queries));
        });
    }
  } finally {
    log("stopping");
    await group.stop();
    for (const dir of runner.stateDirs) rmSync(dir, { recursive: true, force: true });
  }
  results.reloads = runner.logFiles.reduce((a, f) => a + reloadsIn(f), 0);
  const section = renderSearchScale(results, o, onePlan(o), tenantPlans(o), sectionFacts(argv, runner.began));
  publishSection(resolve(root, o.out), section, "## Search at scale", log);
  if (results.failures.length > 0 || (results.one.size === 0 && results.tenants.size === 0))
    process.exitCode = 1;
}
