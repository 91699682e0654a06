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
import type { CellSpec } from "./cell.ts";
import { oldDesignRoot } from "./old.ts";
import { sideFlags } from "./options.ts";
import {
  type Agg,
  aggregate,
  anyBad,
  REPEAT_FLAGS,
  type RepeatOptions,
  type RepeatResults,
  repeatOptions,
  runRepeats,
  specKey,
  times,
} from "./repeats.ts";
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

function parseFanout(argv: string[]): RepeatOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    fanout: { type: "boolean" },
    receivers: { type: "string" },
    senders: { type: "string" },
    ...REPEAT_FLAGS,
  });
  const ints = (v: string | undefined, name: string, def: number[]) =>
    v === undefined ? def : v.split(",").map((s) => num(s.trim(), name, 0, 1, 1000));
  return repeatOptions(
    values,
    num,
    USAGE,
    { repeats: [3, 1], rate: 200, budget: [900, 240] },
    {
      receivers: ints(values.receivers, "receivers", [10]),
      senders: ints(values.senders, "senders", [1, 10]),
    },
  );
}

type Who = "new" | "old" | "durable";
const LABEL: Record<Who, string> = {
  new: "Parley (sharded)",
  old: "Parley pre-shards",
  durable: "BareDurable",
};

function render(
  o: RepeatOptions,
  specs: CellSpec[],
  results: RepeatResults<Who>,
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
    const row = results.get(specKey(spec));
    const n = aggregate(row?.get("new") ?? []);
    const p = aggregate(row?.get("old") ?? []);
    const d = aggregate(row?.get("durable") ?? []);
    out.push(
      `| ${spec.mode === "ack" ? "A" : "B"} | ${spec.receivers} | ${spec.senders} | ${cellEvs(n)} | ${cellEvs(p)} | ${cellEvs(d)} | ${times(n?.evs, p?.evs)} | ${times(n?.evs, d?.evs)} | ${times(p?.evs, d?.evs)} | ${cellLat(n)} | ${cellLat(p)} | ${cellLat(d)} | ${times(n?.p99, p?.p99)} | ${cellCpu(n)} · ${cellCpu(p)} · ${cellCpu(d)} | ${cellInt(n)} · ${cellInt(p)} · ${cellInt(d)} |`,
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
  let results: RepeatResults<Who> = new Map();
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
    results = await runRepeats(targets, specs, o, runId, began, failures, log);
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
  const section = render(o, specs, results, sectionFacts(argv, began), failures);
  publishSection(resolve(root, o.cell.out), section, FANOUT_HEADING, log);
  if (anyBad(results)) process.exitCode = 1;
}
