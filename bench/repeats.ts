/**
 * @module Cells repeated over several servers in one run (`--fanout`, `--small`): their shared
 * flags, a warm-up cell per server, every cell run `repeats` times with the servers' order rotated
 * per cell and per run (so that none always runs first, or right after the same neighbour), and
 * the medians over the runs. On a 2-core machine one 5-second cell moves by tens of percent from
 * run to run; interleaving the servers spreads that drift over all of them.
 */
import { type CellResult, type CellSpec, runCell } from "./cell.ts";
import { MODES, type Mode, type Options } from "./options.ts";
import { cpuTicks } from "./servers.ts";
import type { Target } from "./targets.ts";

/** The flags both repeated benches take (with `sideFlags`), besides their own. */
export const REPEAT_FLAGS = {
  quick: { type: "boolean" },
  modes: { type: "string" },
  duration: { type: "string" },
  repeats: { type: "string" },
  rate: { type: "string" },
  window: { type: "string" },
  drain: { type: "string" },
  budget: { type: "string" },
  out: { type: "string" },
} as const;

export interface RepeatOptions {
  cell: Options;
  repeats: number;
}

type Num = (v: string | undefined, name: string, def: number, min: number, max: number) => number;

/** The cell options and repeat count from `REPEAT_FLAGS` values, with a bench's own defaults
 * (`[full, quick]` where they differ). */
export function repeatOptions(
  values: { [K in keyof typeof REPEAT_FLAGS]?: string | boolean | undefined },
  num: Num,
  usage: string,
  defaults: { repeats: [number, number]; rate: number; budget: [number, number] },
  cells: Pick<Options, "receivers" | "senders">,
): RepeatOptions {
  const quick = values.quick === true;
  const str = (v: string | boolean | undefined) => (typeof v === "string" ? v : undefined);
  const modes = (str(values.modes) ?? "ack,rate").split(",").map((m) => m.trim()) as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--modes: unknown ${m}\n${usage}`);
  const pick = ([full, q]: [number, number]) => (quick ? q : full);
  const drain = num(str(values.drain), "drain", quick ? 3 : 5, 1, 60);
  return {
    repeats: num(str(values.repeats), "repeats", pick(defaults.repeats), 1, 20),
    cell: {
      quick,
      durationMs: num(str(values.duration), "duration", quick ? 2 : 5, 1, 60) * 1000,
      ...cells,
      modes,
      targets: [],
      window: num(str(values.window), "window", 8, 1, 1000),
      rate: num(str(values.rate), "rate", defaults.rate, 1, 100_000),
      drainMs: drain * 1000,
      stallMs: Math.min(2000, drain * 1000),
      clientBound: 0.8,
      budgetMs: num(str(values.budget), "budget", pick(defaults.budget), 10, 7200) * 1000,
      out: str(values.out) ?? "bench/results.md",
      parleyUrl: undefined,
    },
  };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0
    ? Number.NaN
    : n % 2
      ? (s[(n - 1) / 2] as number)
      : ((s[n / 2 - 1] as number) + (s[n / 2] as number)) / 2;
};

/** Unique deliveries to receivers per second. */
export const evs = (r: CellResult): number => r.delivered / (r.elapsedMs / 1000);

/** `a / b` as "1.23×", or "–" when either is missing. */
export const times = (a: number | undefined, b: number | undefined): string =>
  a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0
    ? `${(a / b).toFixed(2)}×`
    : "–";

export function specKey(spec: CellSpec): string {
  return `${spec.mode}/${spec.receivers}/${spec.senders}`;
}

export interface Agg {
  evs: number;
  evsMin: number;
  evsMax: number;
  p50: number;
  p95: number;
  p99: number;
  lost: number;
  dup: number;
  reord: number;
  /** Median server CPU ms per acknowledged message over the whole cell (drain included). */
  cpuPerMsg: number;
  /** Median and most cores other processes on the machine used during the runs. */
  otherCpu: number;
  otherCpuMax: number;
  runs: number;
  failed: number;
  /** † a run was client-bound, ‡ a run was overloaded. */
  flags: string;
}

/** Medians of a cell's runs (lost/dup/reord summed); undefined if no run succeeded. */
export function aggregate(rs: CellResult[]): Agg | undefined {
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
    otherCpu: median(ok.map((r) => r.otherCpu ?? Number.NaN)),
    otherCpuMax: Math.max(...ok.map((r) => r.otherCpu ?? Number.NaN)),
    runs: ok.length,
    failed: rs.length - ok.length,
    flags: `${ok.some((r) => r.clientBound) ? "†" : ""}${ok.some((r) => r.overloaded) ? "‡" : ""}`,
  };
}

/** Every run of every cell, by `specKey` and then by server. */
export type RepeatResults<W extends string> = Map<string, Map<W, CellResult[]>>;

/** A 1 s warm-up cell (10 × 1, ack-paced) per server, not reported: the first cell on a fresh
 * server pays for compiling and opening storage. Throws if one fails. */
export async function warmUp<W extends string>(
  targets: [W, Target][],
  o: RepeatOptions,
  runId: string,
): Promise<void> {
  const warm: Options = { ...o.cell, durationMs: 1000, drainMs: 2000, stallMs: 1000 };
  for (const [who, target] of targets) {
    const spec: CellSpec = { mode: "ack", receivers: 10, senders: 1 };
    const r = await runCell(target, spec, warm, `${runId}-warm-${who}`, false);
    if (!r.ok) throw new Error(`warm-up of ${target.label} failed: ${r.error}`);
  }
}

/**
 * The warm-up (unless `warm` is false: the caller ran it), then `specs` × `repeats` runs, the
 * servers' order rotated by run and cell. A cell that would start after `budgetMs` (from `began`)
 * is skipped and said so in `failures`, as is a run that failed.
 */
export async function runRepeats<W extends string>(
  targets: [W, Target][],
  specs: CellSpec[],
  o: RepeatOptions,
  runId: string,
  began: number,
  failures: string[],
  log: (msg: string) => void,
  warm = true,
): Promise<RepeatResults<W>> {
  const results: RepeatResults<W> = new Map();
  if (warm) await warmUp(targets, o, runId);
  for (let rep = 0; rep < o.repeats; rep++) {
    for (const [s, spec] of specs.entries()) {
      for (let t = 0; t < targets.length; t++) {
        const [who, target] = targets[(t + rep + s) % targets.length] as [W, Target];
        if (performance.now() - began > o.cell.budgetMs) {
          failures.push(`skipped ${specKey(spec)} ${target.label} run ${rep + 1}: time budget spent`);
          continue;
        }
        const t0 = performance.now();
        const cpu0 = cpuTicks(process.pid);
        const r = await runCell(target, spec, o.cell, `${runId}-r${rep}-c${s}-${who}`, false);
        const cpu1 = cpuTicks(process.pid);
        const seconds = (performance.now() - t0) / 1000;
        r.otherCpu = Math.max(0, cpu1.machine - cpu0.machine - (cpu1.tree - cpu0.tree)) / 100 / seconds;
        if (!r.ok) failures.push(`${specKey(spec)} ${target.label} run ${rep + 1}: ${r.error}`);
        const row = results.get(specKey(spec)) ?? new Map<W, CellResult[]>();
        row.set(who, [...(row.get(who) ?? []), r]);
        results.set(specKey(spec), row);
        log(
          `run ${rep + 1} ${specKey(spec)} ${target.label}: ${r.ok ? `${Math.round(evs(r))} ev/s, p50 ${r.latency ? r.latency.p50.toFixed(1) : "–"} p99 ${r.latency ? r.latency.p99.toFixed(1) : "–"} ms, ${r.serverCpuMs !== null && r.acked > 0 ? (r.serverCpuMs / r.acked).toFixed(2) : "–"} CPU ms/msg, client CPU ${Math.round(r.clientCpu * 100)}%, other processes ${Math.round((r.otherCpu ?? 0) * 100)}%, lost/dup/reord ${r.lost}/${r.duplicated}/${r.reordered}` : `FAILED ${r.error}`}`,
        );
      }
    }
  }
  return results;
}

/** True if a run failed or lost, duplicated or reordered anything (the exit code's 1). */
export function anyBad<W extends string>(results: RepeatResults<W>): boolean {
  return [...results.values()]
    .flatMap((m) => [...m.values()].flat())
    .some((r) => !r.ok || r.lost + r.duplicated + r.reordered > 0);
}
