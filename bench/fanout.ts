/**
 * @module `npm run bench -- --fanout`: the main bench's small-room cells (10 receivers, 1 and 10
 * senders, both modes) for this checkout's Parley, the previous design (tag `pre-shards`: outbox,
 * one queue, one D1 archive with FTS5 triggers, started from its own checkout, see bench/old.ts) and
 * BareDurable, in the same run. Each cell is repeated `--repeats` times with the targets' order
 * rotated, and the median of each figure is reported with its spread, because on a 2-core machine
 * one 5-second cell moves by tens of percent from run to run. Writes the `## Fan-out, old vs new`
 * section of bench/results.md. See bench/README.md.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type CellResult, type CellSpec, runCell } from "./cell.ts";
import { oldDesignRoot } from "./old.ts";
import { MODES, type Mode, type Options, sideFlags } from "./options.ts";
import { ms } from "./report.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { type Server, startCeiling, startParley, stopAllSync } from "./servers.ts";
import { ceilingTarget, parleyTarget, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench fanout: ${msg}\n`);
export const FANOUT_HEADING = "## Fan-out, old vs new";

const USAGE = `usage: npm run bench -- --fanout [--quick] [--receivers 10] [--senders 1,10] [--modes ack,rate]
       [--duration 5] [--repeats 3] [--rate 200] [--window 8] [--drain 5] [--budget 900]
       [--out bench/results.md]`;

interface FanoutOptions {
  cell: Options;
  repeats: number;
}

function parseFanout(argv: string[]): FanoutOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    fanout: { type: "boolean" },
    quick: { type: "boolean" },
    receivers: { type: "string" },
    senders: { type: "string" },
    modes: { type: "string" },
    duration: { type: "string" },
    repeats: { type: "string" },
    rate: { type: "string" },
    window: { type: "string" },
    drain: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  const ints = (v: string | undefined, name: string, def: number[]) =>
    v === undefined ? def : v.split(",").map((s) => num(s.trim(), name, 0, 1, 1000));
  const modes = (values.modes ?? "ack,rate").split(",").map((m) => m.trim()) as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--modes: unknown ${m}\n${USAGE}`);
  const drain = num(values.drain, "drain", quick ? 3 : 5, 1, 60);
  return {
    repeats: num(values.repeats, "repeats", quick ? 1 : 3, 1, 20),
    cell: {
      quick,
      durationMs: num(values.duration, "duration", quick ? 2 : 5, 1, 60) * 1000,
      receivers: ints(values.receivers, "receivers", [10]),
      senders: ints(values.senders, "senders", [1, 10]),
      modes,
      targets: [],
      window: num(values.window, "window", 8, 1, 1000),
      rate: num(values.rate, "rate", 200, 1, 100_000),
      drainMs: drain * 1000,
      stallMs: Math.min(2000, drain * 1000),
      clientBound: 0.8,
      budgetMs: num(values.budget, "budget", quick ? 240 : 900, 10, 7200) * 1000,
      out: values.out ?? "bench/results.md",
      parleyUrl: undefined,
    },
  };
}

type Who = "new" | "old" | "durable";
const LABEL: Record<Who, string> = {
  new: "Parley (sharded)",
  old: "Parley pre-shards",
  durable: "BareDurable",
};

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0
    ? Number.NaN
    : n % 2
      ? (s[(n - 1) / 2] as number)
      : ((s[n / 2 - 1] as number) + (s[n / 2] as number)) / 2;
};
const evs = (r: CellResult) => r.delivered / (r.elapsedMs / 1000);
const x = (a: number, b: number) =>
  Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "–";

function key(spec: CellSpec): string {
  return `${spec.mode}/${spec.receivers}/${spec.senders}`;
}

interface Agg {
  evs: number;
  evsMin: number;
  evsMax: number;
  p50: number;
  p95: number;
  p99: number;
  lost: number;
  dup: number;
  reord: number;
  /** Median workerd CPU ms per acknowledged message over the whole cell (drain included). */
  cpuPerMsg: number;
  runs: number;
  failed: number;
  flags: string;
}

function aggregate(rs: CellResult[]): Agg | undefined {
  const ok = rs.filter((r) => r.ok && r.latency);
  if (ok.length === 0) return undefined;
  const t = ok.map(evs);
  return {
    evs: median(t),
    evsMin: Math.min(...t),
    evsMax: Math.max(...t),
    p50: median(ok.map((r) => r.latency?.p50 ?? Number.NaN)),
    p95: median(ok.map((r) => r.latency?.p95 ?? Number.NaN)),
    p99: median(ok.map((r) => r.latency?.p99 ?? Number.NaN)),
    lost: ok.reduce((a, r) => a + r.lost, 0),
    dup: ok.reduce((a, r) => a + r.duplicated, 0),
    reord: ok.reduce((a, r) => a + r.reordered, 0),
    cpuPerMsg: median(
      ok.map((r) => (r.serverCpuMs === null || r.acked === 0 ? Number.NaN : r.serverCpuMs / r.acked)),
    ),
    runs: ok.length,
    failed: rs.length - ok.length,
    flags: `${ok.some((r) => r.clientBound) ? "†" : ""}${ok.some((r) => r.overloaded) ? "‡" : ""}`,
  };
}

function render(
  o: FanoutOptions,
  specs: CellSpec[],
  results: Map<string, Map<Who, CellResult[]>>,
  facts: ReturnType<typeof sectionFacts>,
  failures: string[],
): string {
  const c = o.cell;
  const out = [
    FANOUT_HEADING,
    "",
    `- Date: ${facts.date}; command: \`${facts.command}\`; ${facts.machine}; ${facts.total} s in all.`,
    `- Each cell: ${c.durationMs / 1000} s of sending, then a drain of at most ${c.drainMs / 1000} s; mode A keeps ${c.window} sends in flight per sender, mode B offers ${c.rate} msg/s in total. Every cell ran ${o.repeats} time(s), the three servers in rotated order; figures are medians over the runs (ev/s with its min–max), lost/dup/reord are summed.`,
    "- Parley (sharded) is this checkout: the room ships committed batches by watermark to its search part and to the room-events queue. Parley pre-shards is tag `pre-shards` (13b8b73): an outbox row written, updated and deleted per event, one queue, one D1 archive whose FTS5 triggers run in the same local process. Both run under `wrangler dev` with fresh state; BareDurable is bench/ceiling's durable echo.",
    "",
    "| mode | N recv | S send | sharded ev/s | pre-shards ev/s | BareDurable ev/s | sharded/pre-shards | sharded/Durable | pre-shards/Durable | sharded p50/p95/p99 ms | pre-shards p50/p95/p99 ms | BareDurable p50/p95/p99 ms | p99 sharded/pre-shards | workerd CPU ms/msg S · P · D | lost/dup/reord S · P · D |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  const cellEvs = (a: Agg | undefined) =>
    a
      ? `${Math.round(a.evs).toLocaleString("en-US")}${a.flags} (${Math.round(a.evsMin)}–${Math.round(a.evsMax)})`
      : "–";
  const cellLat = (a: Agg | undefined) => (a ? `${ms(a.p50)} / ${ms(a.p95)} / ${ms(a.p99)}` : "–");
  const cellInt = (a: Agg | undefined) => (a ? `${a.lost}/${a.dup}/${a.reord}` : "–");
  const cellCpu = (a: Agg | undefined) => (a && Number.isFinite(a.cpuPerMsg) ? a.cpuPerMsg.toFixed(2) : "–");
  for (const spec of specs) {
    const row = results.get(key(spec));
    const n = aggregate(row?.get("new") ?? []);
    const p = aggregate(row?.get("old") ?? []);
    const d = aggregate(row?.get("durable") ?? []);
    out.push(
      `| ${spec.mode === "ack" ? "A" : "B"} | ${spec.receivers} | ${spec.senders} | ${cellEvs(n)} | ${cellEvs(p)} | ${cellEvs(d)} | ${x(n?.evs ?? Number.NaN, p?.evs ?? Number.NaN)} | ${x(n?.evs ?? Number.NaN, d?.evs ?? Number.NaN)} | ${x(p?.evs ?? Number.NaN, d?.evs ?? Number.NaN)} | ${cellLat(n)} | ${cellLat(p)} | ${cellLat(d)} | ${x(n?.p99 ?? Number.NaN, p?.p99 ?? Number.NaN)} | ${cellCpu(n)} · ${cellCpu(p)} · ${cellCpu(d)} | ${cellInt(n)} · ${cellInt(p)} · ${cellInt(d)} |`,
    );
  }
  out.push(
    "",
    "`ev/s` and latency as in the main tables (unique deliveries to receivers per second; receive time − send time). Ratios above 1× in the ev/s columns mean the first delivers more; below 1× in the p99 column means sharded is faster. `workerd CPU ms/msg` = CPU time of all the server's workerd processes (proxy and runtime) from the first send to the end of the drain, per acknowledged message: locally the room, its search part, the queue consumer and D1 all run there, so it is the whole local cost of a message, and it moves less with other load on the machine than throughput does. † = a run was client-bound, ‡ = a run was overloaded (see the main tables' legend).",
  );
  if (failures.length > 0) out.push("", ...failures.map((f) => `- ${f}`));
  return out.join("\n");
}

export async function runFanout(argv: string[]): Promise<void> {
  const began = performance.now();
  const o = parseFanout(argv);
  const servers: Server[] = [];
  process.on("exit", stopAllSync);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      log(`${signal}: stopping servers`);
      Promise.all(servers.map((s) => s.stop())).finally(() => process.exit(130));
    });
  }
  const logDir = resolve(root, "bench/out");
  const runId = `f${Date.now().toString(36)}`;
  const failures: string[] = [];
  const results = new Map<string, Map<Who, CellResult[]>>();
  const specs: CellSpec[] = [];
  for (const mode of o.cell.modes)
    for (const receivers of o.cell.receivers)
      for (const senders of o.cell.senders) specs.push({ mode, receivers, senders });
  try {
    const oldRoot = oldDesignRoot("pre-shards", log);
    log("starting the three servers");
    const [fresh, old, durable] = await Promise.all([
      startParley(root, logDir, { name: "parley-new" }),
      startParley(oldRoot, logDir, { name: "parley-pre-shards", tempPrefix: "parley-bench-old-" }),
      startCeiling(root, logDir, "durable"),
    ]);
    servers.push(fresh, old, durable);
    const targets: [Who, Target][] = [
      ["new", { ...parleyTarget(fresh, runId), label: LABEL.new }],
      ["old", { ...parleyTarget(old, `${runId}o`), label: LABEL.old }],
      ["durable", ceilingTarget("durable", durable)],
    ];
    const warm: Options = { ...o.cell, durationMs: 1000, drainMs: 2000, stallMs: 1000 };
    for (const [who, target] of targets) {
      const r = await runCell(
        target,
        { mode: "ack", receivers: 10, senders: 1 },
        warm,
        `${runId}-warm-${who}`,
        false,
      );
      if (!r.ok) throw new Error(`warm-up of ${LABEL[who]} failed: ${r.error}`);
    }
    for (let rep = 0; rep < o.repeats; rep++) {
      for (const [s, spec] of specs.entries()) {
        for (let t = 0; t < targets.length; t++) {
          const [who, target] = targets[(t + rep + s) % targets.length] as [Who, Target];
          if (performance.now() - began > o.cell.budgetMs) {
            failures.push(`skipped ${key(spec)} ${LABEL[who]} run ${rep + 1}: time budget spent`);
            continue;
          }
          const r = await runCell(target, spec, o.cell, `${runId}-r${rep}-c${s}-${who}`, false);
          if (!r.ok) failures.push(`${key(spec)} ${LABEL[who]} run ${rep + 1}: ${r.error}`);
          const row = results.get(key(spec)) ?? new Map<Who, CellResult[]>();
          row.set(who, [...(row.get(who) ?? []), r]);
          results.set(key(spec), row);
          log(
            `run ${rep + 1} ${key(spec)} ${LABEL[who]}: ${r.ok ? `${Math.round(evs(r))} ev/s, p99 ${r.latency ? r.latency.p99.toFixed(1) : "–"} ms, ${r.serverCpuMs !== null && r.acked > 0 ? (r.serverCpuMs / r.acked).toFixed(2) : "–"} CPU ms/msg, lost/dup/reord ${r.lost}/${r.duplicated}/${r.reordered}` : `FAILED ${r.error}`}`,
          );
        }
      }
    }
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  const section = render(o, specs, results, sectionFacts(argv, began), failures);
  publishSection(resolve(root, o.cell.out), section, FANOUT_HEADING, log);
  const bad = [...results.values()]
    .flatMap((m) => [...m.values()].flat())
    .some((r) => !r.ok || r.lost + r.duplicated + r.reordered > 0);
  if (bad) process.exitCode = 1;
}
