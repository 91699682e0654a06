/**
 * @module `npm run bench -- --soak`: a steady load held for a minute (see bench/README.md, "Soak").
 * Against a fresh local Parley, `--sockets` connections over `--rooms-count` rooms (each room: a
 * few senders, the rest receivers) carry `--rate` msg/s in total for `--seconds` s (fleet.ts). Every
 * receiver checks every message of its room: exactly once, in room-seq order, and none acked that
 * never arrives. Every `--sample` s the RSS of the server's workerd processes and of the bench
 * process are sampled. Writes the "## Soak" section of bench/results.md and exits 1 unless errors,
 * lost, duplicated, reordered and still-pending are all 0 and the memory stayed flat.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { errorCount, type FleetResult, runFleet, terminateFleets } from "./fleet.ts";
import { sideFlags } from "./options.ts";
import { int, ms } from "./report.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { ServerGroup, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench soak: ${msg}\n`);

export interface SoakOptions {
  durationMs: number;
  sockets: number;
  rooms: number;
  /** Per room; the other connections of the room are receivers. */
  senders: number;
  /** Messages per second offered by all senders together. */
  rate: number;
  sampleMs: number;
  /** Memory is judged from the first sample at or after the warm-up to the end of the sending. */
  warmupMs: number;
  drainMs: number;
  /** Memory is flat when the workerd RSS at the end is at most this much above the post-warm-up RSS. */
  flatPercent: number;
  budgetMs: number;
  out: string;
}

/** Per-room rate when `--rate` is not given: a steady, modest pace (one message a second in every
 * room) that leaves Parley about twice the headroom it showed over 50 rooms on the 2-core
 * development machine; the soak is about holding 2,000 sockets for a minute, not about throughput. */
const ROOM_RATE = 1;

const USAGE = `usage: npm run bench -- --soak [--seconds 60] [--sockets 2000] [--rooms-count 50]
       [--senders 3] [--rate MSG_PER_S (default 1 per room)] [--sample 5] [--warmup 10]
       [--drain 10] [--flat 10] [--budget S] [--out bench/results.md]`;

export function parseSoakOptions(argv: string[]): SoakOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    soak: { type: "boolean" },
    seconds: { type: "string" },
    sockets: { type: "string" },
    "rooms-count": { type: "string" },
    senders: { type: "string" },
    rate: { type: "string" },
    sample: { type: "string" },
    warmup: { type: "string" },
    drain: { type: "string" },
    flat: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const seconds = num(values.seconds, "seconds", 60, 5, 3600);
  const rooms = Math.round(num(values["rooms-count"], "rooms-count", 50, 1, 500));
  const sockets = Math.round(num(values.sockets, "sockets", 2000, 2 * rooms, 10_000));
  const perRoom = Math.floor(sockets / rooms);
  // A small run keeps at least one receiver per room.
  const senders = Math.min(perRoom - 1, Math.round(num(values.senders, "senders", 3, 1, 100)));
  return {
    durationMs: seconds * 1000,
    sockets: perRoom * rooms,
    rooms,
    senders,
    rate: num(values.rate, "rate", ROOM_RATE * rooms, 0.1, 100_000),
    // Every 5 s, or often enough that a short run still has ten samples.
    sampleMs: num(values.sample, "sample", Math.min(5, seconds / 10), 0.5, 60) * 1000,
    // At most half the run, so that a short run still has samples to judge.
    warmupMs: Math.min(seconds / 2, num(values.warmup, "warmup", 10, 0, 600)) * 1000,
    drainMs: num(values.drain, "drain", 10, 1, 120) * 1000,
    flatPercent: num(values.flat, "flat", 10, 0, 1000),
    budgetMs: num(values.budget, "budget", seconds + 300, 30, 7200) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

/** Latency samples that also keep the current sampling window's. */
class Windowed extends Samples {
  window = new Samples();

  override push(x: number): void {
    super.push(x);
    this.window.push(x);
  }

  take(): LatencySummary | null {
    const s = this.window.summary();
    this.window = new Samples();
    return s;
  }
}

interface MemorySample {
  /** Seconds into the sending phase; the last one is taken after the drain. */
  t: number;
  afterDrain: boolean;
  rssTotal: number;
  rssRuntime: number;
  benchRss: number;
  /** Deliveries to receivers in the window that ended here, and their latency. */
  window: LatencySummary | null;
  windowSeconds: number;
}

interface Verdict {
  flat: boolean;
  baseline: MemorySample | undefined;
  end: MemorySample | undefined;
  /** Least-squares slope of workerd RSS from the baseline to the end, in MiB per minute. */
  slope: number | null;
  pass: boolean;
  reasons: string[];
}

function judge(r: FleetResult | null, samples: MemorySample[], opts: SoakOptions): Verdict {
  const during = samples.filter((s) => !s.afterDrain);
  const baseline = during.find((s) => s.t * 1000 >= opts.warmupMs);
  const end = during.at(-1);
  const span = baseline ? during.filter((s) => s.t >= baseline.t) : [];
  let slope: number | null = null;
  if (span.length >= 2) {
    const mx = span.reduce((a, s) => a + s.t, 0) / span.length;
    const my = span.reduce((a, s) => a + s.rssTotal, 0) / span.length;
    const sxy = span.reduce((a, s) => a + (s.t - mx) * (s.rssTotal - my), 0);
    const sxx = span.reduce((a, s) => a + (s.t - mx) ** 2, 0);
    slope = sxx > 0 ? ((sxy / sxx) * 60) / 1048576 : null;
  }
  // Three samples at least (the baseline, one between, the end): two points are not a trend.
  const enough = baseline !== undefined && end !== undefined && span.length >= 3;
  const flat = enough && end.rssTotal <= baseline.rssTotal * (1 + opts.flatPercent / 100);
  const reasons: string[] = [];
  if (!r?.ok) reasons.push(`the run failed${r?.error ? `: ${r.error}` : ""}`);
  else {
    if (errorCount(r) > 0) reasons.push(`${errorCount(r)} errors`);
    if (r.lost > 0) reasons.push(`${r.lost} lost`);
    if (r.pending > 0) reasons.push(`${r.pending} still pending at the drain deadline`);
    if (r.duplicated > 0) reasons.push(`${r.duplicated} duplicated`);
    if (r.reordered > 0) reasons.push(`${r.reordered} reordered`);
    if (r.reloaded) reasons.push("wrangler dev reloaded the worker");
  }
  if (!flat) reasons.push(enough ? "memory not flat" : "too few memory samples after the warm-up to judge");
  return { flat, baseline, end, slope, pass: reasons.length === 0, reasons };
}

export async function runSoak(argv: string[]): Promise<void> {
  const opts = parseSoakOptions(argv);
  const began = performance.now();
  const runId = `k${Date.now().toString(36)}`;
  const group = new ServerGroup(log, opts.budgetMs);
  group.onStop(terminateFleets);
  const failures: string[] = [];
  const samples: MemorySample[] = [];
  const perRoom = opts.sockets / opts.rooms;
  let result: FleetResult | null = null;
  log(
    `${opts.sockets} sockets over ${opts.rooms} rooms (${opts.senders} senders each), ${opts.rate} msg/s in total, ${opts.durationMs / 1000} s`,
  );
  try {
    log("starting Parley");
    const [target] = await startTargets(
      ["parley"],
      { root, logDir: resolve(root, "bench/out"), runId, log },
      group.track,
      failures,
    );
    if (!target) throw new Error(failures.join("; ") || "Parley did not start");
    const server = (target as Target).server;
    const warm = {
      rooms: 1,
      receivers: 8,
      senders: 1,
      rate: 50,
      durationMs: 1000,
      drainMs: 2000,
      stallMs: 1000,
    };
    const w = await runFleet(target, warm, `${runId}-warm`);
    log(`warm-up: ${w.ok ? `${int(w.delivered)} delivered` : `FAILED: ${w.error}`}`);

    const latency = new Windowed();
    let lastT = 0;
    const sample = (elapsedMs: number, afterDrain: boolean) => {
      const snap = workerdSnapshot(server);
      const t = elapsedMs / 1000;
      samples.push({
        t,
        afterDrain,
        rssTotal: snap.rssTotal,
        rssRuntime: snap.rssRuntime,
        benchRss: process.memoryUsage.rss(),
        window: latency.take(),
        windowSeconds: t - lastT,
      });
      lastT = t;
    };
    const spec = {
      rooms: opts.rooms,
      receivers: perRoom - opts.senders,
      senders: opts.senders,
      rate: opts.rate,
      durationMs: opts.durationMs,
      drainMs: opts.drainMs,
      stallMs: Math.min(3000, opts.drainMs),
    };
    let phaseStart = 0;
    result = await runFleet(target, spec, `${runId}-soak`, {
      latency,
      log,
      sample: {
        everyMs: opts.sampleMs,
        at: (elapsed) => {
          if (phaseStart === 0) phaseStart = performance.now() - elapsed;
          sample(elapsed, false);
          const s = samples.at(-1) as MemorySample;
          log(
            `${s.t.toFixed(1)} s: workerd ${(s.rssTotal / 1048576).toFixed(0)} MiB, bench ${(s.benchRss / 1048576).toFixed(0)} MiB, ${int((s.window?.count ?? 0) / Math.max(0.001, s.windowSeconds))} ev/s`,
          );
        },
      },
    });
    if (phaseStart > 0) sample(performance.now() - phaseStart, true);
    if (!result.ok) failures.push(result.error ?? "failed");
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    log("stopping Parley");
    await group.stop();
  }
  const verdict = judge(result, samples, opts);
  const section = renderSoak(result, samples, verdict, opts, sectionFacts(argv, began), failures);
  publishSection(resolve(root, opts.out), section, "## Soak", log);
  log(verdict.pass ? "PASS" : `FAIL: ${verdict.reasons.join("; ")}`);
  if (!verdict.pass) process.exitCode = 1;
}

// ---------------------------------------------------------------------------------------------
// Report

const mib = (b: number) => (b / 1048576).toFixed(1);
const lat = (l: LatencySummary | null | undefined) =>
  l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "–";

export function renderSoak(
  r: FleetResult | null,
  samples: MemorySample[],
  v: Verdict,
  opts: SoakOptions,
  facts: SectionFacts,
  failures: string[],
): string {
  const perRoom = opts.sockets / opts.rooms;
  const receivers = perRoom - opts.senders;
  const digits = opts.sampleMs % 1000 === 0 ? 0 : 1;
  const lines: string[] = ["## Soak", ""];
  lines.push(`${facts.date} · \`${facts.command}\` · ${facts.machine} · ${facts.total} s in all.`, "");
  lines.push(
    `Load: ${int(opts.sockets)} concurrent sockets on a fresh local Parley, ${opts.rooms} rooms × ${perRoom} (${receivers} receivers and ${opts.senders} senders per room; ${perRoom} users, each a member of every room with one socket in each), ` +
      `all open for the whole run; the senders offer ${int(opts.rate)} msg/s in total ` +
      `(${(opts.rate / opts.rooms).toFixed(1)} per room, each sender on its own evenly staggered schedule) for ${opts.durationMs / 1000} s, then a drain of at most ${opts.drainMs / 1000} s. ` +
      `RSS sampled every ${opts.sampleMs / 1000} s.`,
    "",
  );
  lines.push(`**${v.pass ? "PASS" : `FAIL: ${v.reasons.join("; ")}`}**`, "");
  lines.push("| figure | value |", "|---|---|");
  if (r?.ok) {
    const expected = r.acked * receivers;
    lines.push(`| errors | ${errorCount(r)} |`);
    lines.push(
      `| lost / duplicated / reordered | ${int(r.lost)} / ${int(r.duplicated)} / ${int(r.reordered)}${r.pending > 0 ? ` (+${int(r.pending)} pending)` : ""} |`,
    );
    lines.push(
      `| messages sent / acked | ${int(r.sent)} / ${int(r.acked)} (${(r.acked / (r.spec.durationMs / 1000)).toFixed(0)} msg/s) |`,
    );
    lines.push(
      `| events delivered to receivers | ${int(r.delivered)} of ${int(expected)} expected (acked × ${receivers} receivers per room), ${int(r.delivered / (r.elapsedMs / 1000))} ev/s |`,
    );
    lines.push(
      `| end-to-end latency p50 / p95 / p99 / max (ms) | ${lat(r.latency)} / ${r.latency ? ms(r.latency.max) : "–"} |`,
    );
    lines.push(`| ack latency p50 / p95 / p99 (ms) | ${lat(r.ackLatency)} |`);
  } else {
    lines.push(`| run | failed: ${(r?.error ?? failures.join("; ")).replace(/\|/g, "\\|")} |`);
  }
  const at = (s: MemorySample | undefined) =>
    s
      ? `${mib(s.rssTotal)} MiB (runtime ${mib(s.rssRuntime)}, bench ${mib(s.benchRss)}) at ${s.t.toFixed(digits)} s`
      : "–";
  const during = samples.filter((s) => !s.afterDrain);
  const middle = during.find((s) => s.t * 1000 >= opts.durationMs / 2);
  lines.push(
    `| workerd RSS at start / middle / end | ${at(during[0])}; ${at(middle)}; ${at(during.at(-1))} |`,
  );
  lines.push(
    `| memory flat? | ${v.flat ? "yes" : "no"}: end ${v.end ? mib(v.end.rssTotal) : "–"} MiB vs ${v.baseline ? mib(v.baseline.rssTotal) : "–"} MiB after the ${opts.warmupMs / 1000} s warm-up (${v.baseline && v.end ? `${(((v.end.rssTotal - v.baseline.rssTotal) / v.baseline.rssTotal) * 100).toFixed(1)}%` : "–"}; limit +${opts.flatPercent}%); slope ${v.slope === null ? "–" : `${v.slope.toFixed(1)} MiB/min`} |`,
  );
  if (r?.ok) {
    lines.push(
      `| bench client CPU / workerd CPU | ${Math.round(r.clientCpu * 100)}% / ${r.serverCpu === null ? "–" : `${Math.round(r.serverCpu * 100)}%`} (100% = one core) |`,
    );
    lines.push(
      `| setup | ${(r.setupMs / 1000).toFixed(1)} s to sign in, create and join the rooms and open every socket |`,
    );
  }
  lines.push("");
  lines.push(
    "| t s | workerd RSS MiB (all) | runtime workerd MiB | bench process MiB | delivered ev/s in the window | window p50 / p99 ms |",
    "|---:|---:|---:|---:|---:|---:|",
  );
  for (const s of samples) {
    const rate = s.window && s.windowSeconds > 0 ? int(s.window.count / s.windowSeconds) : "–";
    lines.push(
      `| ${s.t.toFixed(digits)}${s.afterDrain ? " (after drain)" : ""} | ${mib(s.rssTotal)} | ${mib(s.rssRuntime)} | ${mib(s.benchRss)} | ${rate} | ${s.window ? `${ms(s.window.p50)} / ${ms(s.window.p99)}` : "–"} |`,
    );
  }
  lines.push("");
  if (r?.ok) {
    const codes = Object.entries(r.errorCodes).map(([k, n]) => `${k} ×${n}`);
    const notes = [
      codes.length ? `error frames and closes: ${codes.join(", ")}` : "",
      r.unacked ? `${r.unacked} sends never answered` : "",
      r.nacked ? `${r.nacked} sends refused` : "",
      r.throttled ? `${r.throttled} sends skipped (2000 in flight)` : "",
      r.drainEnd === "settled" ? "" : `drain ${r.drainEnd} after ${(r.drainMs / 1000).toFixed(1)} s`,
      ...r.closes.slice(0, 3),
      r.closes.length > 3 ? `${r.closes.length - 3} more closes` : "",
    ].filter(Boolean);
    if (notes.length > 0) lines.push(`Notes: ${notes.join("; ")}.`, "");
  }
  if (failures.length > 0) lines.push(`Problems: ${failures.join("; ")}`, "");
  lines.push(
    "Each receiver records every message of its room by (sender, counter) and the room's seq: lost = acked but never received by the end of the drain, duplicated = received again, reordered = received after a message with a higher seq; " +
      "errors = error frames (refused sends included), sockets the server closed or that dropped, and sends never answered. " +
      `Memory is flat when the workerd RSS (proxy and runtime) at the end of the sending is at most ${opts.flatPercent}% above the first sample after the ${opts.warmupMs / 1000} s warm-up (the first seconds grow caches, JIT code and SQLite pages); ` +
      "the slope is a least-squares fit over the same samples. The rooms' logs grow by every message, so some growth is storage, not a leak. " +
      "The bench process keeps every latency sample, so its RSS grows by design; it is shown, not judged.",
    "",
  );
  return lines.join("\n");
}
