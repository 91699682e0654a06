/**
 * @module Bench options: command-line flags, each with a `BENCH_*` environment fallback, and the
 * two presets (default and `--quick`).
 */
import { type ParseArgsConfig, parseArgs } from "node:util";

export type Mode = "ack" | "rate";
export type TargetName = "parley" | "durable" | "bare" | "socketio";

export const TARGETS: readonly TargetName[] = ["parley", "durable", "bare", "socketio"];
/** What the main bench runs unless `--targets` says otherwise (the Socket.IO ceiling is `--small`'s). */
const DEFAULT_TARGETS = "parley,durable,bare";
export const MODES: readonly Mode[] = ["ack", "rate"];

export interface Options {
  quick: boolean;
  /** Sending phase of one cell. */
  durationMs: number;
  receivers: number[];
  senders: number[];
  modes: Mode[];
  targets: TargetName[];
  /** Mode "ack": most unacknowledged sends per sender. */
  window: number;
  /** Mode "rate": messages per second offered by all senders together. */
  rate: number;
  /** Longest wait after the sending phase for in-flight messages, and the longest quiet spell. */
  drainMs: number;
  stallMs: number;
  /** Client CPU (fraction of one core) above which a cell is flagged client-bound. */
  clientBound: number;
  /** No new cell starts once the run is this old; the rest are reported as skipped. */
  budgetMs: number;
  out: string;
  /** Use an already running Parley instead of starting one (memory is then not measured). */
  parleyUrl: string | undefined;
}

const USAGE = `usage: npm run bench -- [--quick] [--duration S] [--receivers 10,100,500,1000] [--senders 1,10]
       [--modes ack,rate] [--targets parley,durable,bare] [--window 8] [--rate 200] [--drain S]
       [--budget S] [--out FILE] [--parley-url http://127.0.0.1:8787]
Every flag also reads BENCH_<FLAG> from the environment (e.g. BENCH_DURATION=3).
Other benches: npm run bench -- --presence [--help]   (bench/presence.ts)
               npm run bench -- --pipeline [--quick]  (bench/pipeline.ts: issue 14, old design beside new)
               npm run bench -- --rooms [--help]      (bench/rooms.ts: 50 rooms × 40 clients at once)
               npm run bench -- --idle [--help]       (bench/idle.ts: 2,000 idle sockets in one room)
               npm run bench -- --soak [--help]       (bench/soak.ts: 2,000 sockets, 50 rooms, 60 s)
               npm run bench -- --search-scale [--help] (bench/search-scale.ts: search latency at scale, old vs new)
               npm run bench -- --fanout [--help]     (bench/fanout.ts: the 10-receiver room, old vs new)
               npm run bench -- --small [--help]      (bench/small.ts: small rooms beside BareDurable and Socket.IO)
               npm run bench -- --rooms-list [--help] (bench/rooms-list.ts: GET /api/rooms at 10/100/500 rooms, old vs new)
               npm run bench -- --profile [--help]    (bench/profile.ts: the runtime's thread in a small room, by phase)`;

function list(value: string, name: string): number[] {
  const out = value.split(",").map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1 || n > 5000)) {
    throw new Error(`--${name} must be a comma-separated list of integers in 1..5000`);
  }
  return out;
}

function names<T extends string>(value: string, allowed: readonly T[], name: string): T[] {
  const out = value.split(",").map((s) => s.trim()) as T[];
  for (const v of out)
    if (!allowed.includes(v)) throw new Error(`--${name}: unknown ${v}; use ${allowed.join(",")}`);
  return out;
}

/** A `--targets` list (parley,durable,bare). */
export function parseTargets(value: string): TargetName[] {
  return names(value, TARGETS, "targets");
}

function positive(value: string, name: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
}

export function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean" },
      duration: { type: "string" },
      receivers: { type: "string" },
      senders: { type: "string" },
      modes: { type: "string" },
      targets: { type: "string" },
      window: { type: "string" },
      rate: { type: "string" },
      drain: { type: "string" },
      budget: { type: "string" },
      out: { type: "string" },
      "parley-url": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const env = (k: string) => process.env[`BENCH_${k.toUpperCase().replace("-", "_")}`];
  const get = (k: keyof typeof values & string) => {
    const v = values[k];
    return typeof v === "string" ? v : env(k);
  };
  const quick = values.quick === true || env("quick") === "1";
  const duration = positive(get("duration") ?? (quick ? "2" : "5"), "duration");
  const drain = positive(get("drain") ?? (quick ? "3" : "5"), "drain");
  const window = positive(get("window") ?? "8", "window");
  if (!Number.isInteger(window)) throw new Error("--window must be an integer");
  return {
    quick,
    durationMs: duration * 1000,
    receivers: list(get("receivers") ?? (quick ? "10,100" : "10,100,500,1000"), "receivers"),
    senders: list(get("senders") ?? "1,10", "senders"),
    modes: names(get("modes") ?? "ack,rate", MODES, "modes"),
    targets: names(get("targets") ?? DEFAULT_TARGETS, TARGETS, "targets"),
    window,
    rate: positive(get("rate") ?? "200", "rate"),
    drainMs: drain * 1000,
    stallMs: Math.min(2000, drain * 1000),
    clientBound: 0.8,
    budgetMs: positive(get("budget") ?? (quick ? "80" : "720"), "budget") * 1000,
    out: get("out") ?? "bench/results.md",
    parleyUrl: get("parley-url"),
  };
}

/** A numeric flag's value: `def` when absent; otherwise a number in min..max, or an error that
 * shows the usage. */
export function numberFlag(
  v: string | undefined,
  name: string,
  def: number,
  min: number,
  max: number,
  usage: string,
): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max)
    throw new Error(`--${name} must be a number in ${min}..${max}\n${usage}`);
  return n;
}

type FlagOptions = NonNullable<ParseArgsConfig["options"]>;

/**
 * A side bench's flags: strict `parseArgs` over `options` plus `--help`/`-h` (prints `usage` and
 * exits), and `num`, which reads a numeric flag and refuses one out of range with the usage.
 */
export function sideFlags<const O extends FlagOptions>(argv: string[], usage: string, options: O) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { ...options, help: { type: "boolean", short: "h" } } as O & {
      help: { type: "boolean"; short: "h" };
    },
  });
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  const num = (v: string | undefined, name: string, def: number, min: number, max: number) =>
    numberFlag(v, name, def, min, max, usage);
  return { values, num };
}
