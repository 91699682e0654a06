/**
 * @module `npm run bench -- --slow`: readers that stop reading (see bench/README.md, "Slow
 * consumers"). On each server (Parley and the ceilings, each started here) one room gets
 * `--readers` receivers that read, `--stalled` receivers whose TCP sockets are paused right after
 * connecting (nothing is read: the kernel's buffers fill and the server's writes back up), and one
 * sender at `--rate` msg/s of about `--size` bytes for `--duration` s. Reports what the readers got
 * (latency, lost, duplicated, reordered), how much workerd's memory grew while the stalled readers
 * held their backlog, and, once they read again, how many bytes the server had written to each.
 * Writes the "## Slow consumers" section.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { type Cell, connectCell, drainCells, sendDue, tally } from "./cell.ts";
import { closeRooms, makeCells, terminateFleets } from "./fleet.ts";
import { parseTargets, sideFlags, type TargetName } from "./options.ts";
import { int, ms, ratio } from "./report.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { ServerGroup, type WorkerdSnapshot, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { type Endpoint, LABELS, startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench slow: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface SlowOptions {
  quick: boolean;
  readers: number;
  stalled: number;
  rate: number;
  size: number;
  durationMs: number;
  targets: TargetName[];
  budgetMs: number;
  out: string;
}

const USAGE = `usage: npm run bench -- --slow [--quick] [--readers 50] [--stalled 50] [--rate 100]
       [--size 2048] [--duration 20] [--targets parley,durable,bare] [--budget 600] [--out bench/results.md]`;

export function parseSlowOptions(argv: string[]): SlowOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    slow: { type: "boolean" },
    quick: { type: "boolean" },
    readers: { type: "string" },
    stalled: { type: "string" },
    rate: { type: "string" },
    size: { type: "string" },
    duration: { type: "string" },
    targets: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  return {
    quick,
    readers: Math.round(num(values.readers, "readers", quick ? 10 : 50, 1, 2000)),
    stalled: Math.round(num(values.stalled, "stalled", quick ? 10 : 50, 1, 2000)),
    rate: num(values.rate, "rate", 100, 1, 5000),
    size: Math.round(num(values.size, "size", 2048, 0, 12 * 1024)),
    durationMs: num(values.duration, "duration", quick ? 8 : 20, 1, 600) * 1000,
    targets: parseTargets(values.targets ?? "parley,durable,bare"),
    budgetMs: num(values.budget, "budget", quick ? 300 : 600, 30, 7200) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

/** A receiver that stops reading: its socket is paused once open (Parley: once `ready`). */
class Stalled {
  readonly ws: WebSocket;
  bytes = 0;
  closed: number | null = null;
  lastByteAt = 0;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data: Buffer) => {
      this.bytes += data.length;
      this.lastByteAt = performance.now();
    });
    ws.on("close", (code) => {
      this.closed = code;
    });
    ws.on("error", () => undefined);
  }

  static open(endpoint: Endpoint, hasReady: boolean): Promise<Stalled> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(endpoint.url, { headers: endpoint.headers, perMessageDeflate: false });
      const s = new Stalled(ws);
      const timer = setTimeout(() => reject(new Error("a stalled reader did not open in 20 s")), 20_000);
      const go = () => {
        clearTimeout(timer);
        ws.pause();
        s.bytes = 0; // only what is written after it stopped reading counts
        resolve(s);
      };
      if (hasReady)
        ws.on("message", (data: Buffer) => {
          if (data.toString().startsWith('{"type":"ready"')) go();
        });
      else ws.on("open", go);
      ws.on("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }
}

interface SlowRun {
  target: Target;
  ok: boolean;
  error?: string;
  sent: number;
  acked: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  latency: LatencySummary | null;
  /** Once every socket is connected (before sending), with the backlog held (after the drain), and
   * after the stalled readers read it all. */
  before?: WorkerdSnapshot;
  held?: WorkerdSnapshot;
  released?: WorkerdSnapshot;
  /** Bytes each stalled reader found written to it once it read again. */
  written: number[];
  /** Close codes the stalled readers got (by code), and those still open at the end. */
  closes: Record<string, number>;
  /** Bytes of message frames one reader was offered in all (for scale). */
  offeredPerReader: number;
}

async function runOne(target: Target, opts: SlowOptions, runId: string): Promise<SlowRun> {
  const run: SlowRun = {
    target,
    ok: false,
    sent: 0,
    acked: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    latency: null,
    written: [],
    closes: {},
    offeredPerReader: 0,
  };
  const samples = { latency: new Samples(), ackLatency: new Samples() };
  const cell = makeCells(target, { rooms: 1, receivers: opts.readers, senders: 1 }, samples)[0] as Cell;
  cell.padding = "x".repeat(opts.size);
  const stalled: Stalled[] = [];
  try {
    const room = await target.prepare(`${runId}-${target.name}`, opts.readers + opts.stalled, 1);
    await connectCell(cell, target, room);
    const after = (cell.receivers[0] as { lastSeq: number }).lastSeq;
    for (let k = 0; k < opts.stalled; k++)
      stalled.push(await Stalled.open(room.receiver(opts.readers + k, after), target.hasReady));
    await sleep(1000);
    run.before = workerdSnapshot(target.server);

    // The sending phase: `rate` msg/s on a schedule, as in the many-rooms bench.
    const start = performance.now();
    cell.sendingOpen = true;
    cell.start = performance.timeOrigin + start;
    while (performance.now() - start < opts.durationMs) {
      sendDue([cell], opts.rate, performance.now() - start);
      await sleep(5);
    }
    cell.sendingOpen = false;
    await drainCells([cell], 15_000, 5_000);
    run.held = workerdSnapshot(target.server);
    const t = tally([cell]);
    Object.assign(run, {
      sent: t.sent,
      acked: t.acked,
      delivered: t.delivered,
      lost: t.missing,
      duplicated: t.duplicated,
      reordered: t.reordered,
    });
    run.latency = samples.latency.summary();
    run.offeredPerReader = t.sent * (opts.size + 120);

    // The stalled readers read again: whatever the server wrote them arrives, then nothing more.
    const resumedAt = performance.now();
    for (const s of stalled) {
      s.lastByteAt = resumedAt;
      s.ws.resume();
    }
    const deadline = performance.now() + 30_000;
    for (;;) {
      const quiet = stalled.every((s) => s.closed !== null || performance.now() - s.lastByteAt > 2000);
      if (quiet || performance.now() > deadline) break;
      await sleep(100);
    }
    run.released = workerdSnapshot(target.server);
    run.written = stalled.map((s) => s.bytes);
    for (const s of stalled) {
      const key = s.closed === null ? "open" : String(s.closed);
      run.closes[key] = (run.closes[key] ?? 0) + 1;
    }
    run.ok = true;
  } catch (err) {
    run.error = err instanceof Error ? err.message : String(err);
  } finally {
    for (const s of stalled) s.ws.terminate();
    await closeRooms([cell]);
  }
  return run;
}

export async function runSlow(argv: string[]): Promise<void> {
  const opts = parseSlowOptions(argv);
  const began = performance.now();
  const runId = `w${Date.now().toString(36)}`;
  const group = new ServerGroup(log, opts.budgetMs);
  group.onStop(terminateFleets);
  const failures: string[] = [];
  const runs: SlowRun[] = [];
  log(
    `${opts.quick ? "quick" : "full"} run: ${opts.readers} readers + ${opts.stalled} stalled readers, ${opts.rate} msg/s of ${opts.size} B for ${opts.durationMs / 1000} s; targets ${opts.targets.join(",")}`,
  );
  try {
    const targets = await startTargets(
      opts.targets,
      { root, logDir: resolve(root, "bench/out"), runId, log },
      group.track,
      failures,
    );
    for (const f of failures) log(f);
    for (const target of targets) {
      const r = await runOne(target, opts, runId);
      runs.push(r);
      if (!r.ok) failures.push(`${target.label}: ${r.error}`);
      log(
        `${target.label}: ${r.ok ? `readers p99 ${r.latency ? ms(r.latency.p99) : "–"} ms, lost ${r.lost}; written per stalled reader max ${mib(Math.max(0, ...r.written))} MiB; RSS +${r.before && r.held ? mib(r.held.rssRuntime - r.before.rssRuntime) : "–"} MiB` : `FAILED: ${r.error}`}`,
      );
    }
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
  } finally {
    log("stopping servers");
    await group.stop();
  }
  const section = renderSlow(runs, opts, sectionFacts(argv, began), failures);
  publishSection(resolve(root, opts.out), section, "## Slow consumers", log);
  if (runs.length === 0 || runs.some((r) => !r.ok || r.lost > 0 || r.duplicated > 0)) process.exitCode = 1;
}

// ---------------------------------------------------------------------------------------------
// Report

const mib = (b: number) => (b / 1048576).toFixed(2);

function growth(r: SlowRun | undefined): number | undefined {
  return r?.ok && r.before && r.held ? (r.held.rssRuntime - r.before.rssRuntime) / 1048576 : undefined;
}

export function renderSlow(
  runs: SlowRun[],
  opts: SlowOptions,
  facts: SectionFacts,
  failures: string[],
): string {
  const ceiling = runs.find((r) => r.target.name === "durable") ?? runs.find((r) => r.target.name === "bare");
  const ceilingLabel = ceiling ? LABELS[ceiling.target.name] : "ceiling";
  const lines: string[] = ["## Slow consumers", ""];
  lines.push(`${facts.date} · \`${facts.command}\` · ${facts.machine} · ${facts.total} s in all.`, "");
  lines.push(
    `Load: on each server, one room with ${int(opts.readers)} receivers that read, ${int(opts.stalled)} receivers whose TCP sockets are paused once connected (they read nothing: the kernel's buffers fill, then the server's writes back up), and 1 sender at ${opts.rate} msg/s of about ${int(opts.size)} bytes for ${opts.durationMs / 1000} s. ` +
      "After the readers have everything, the stalled receivers read again, and what they find is what the server wrote to them while they were stopped.",
    "",
  );
  lines.push(
    `| server | readers: delivered p50 / p99 ms | lost / dup / reord | written per stalled reader, max MiB (offered ≈ ${mib(runs.find((r) => r.ok)?.offeredPerReader ?? 0)}) | runtime workerd RSS growth while sending, MiB | growth vs ${ceilingLabel} | stalled readers: closed / open |`,
    "|---|---|---|---:|---:|---:|---|",
  );
  for (const r of runs) {
    if (!r.ok) {
      lines.push(`| ${r.target.label} | failed: ${(r.error ?? "").replace(/\|/g, "\\|")} | | | | | |`);
      continue;
    }
    const closes = Object.entries(r.closes)
      .map(([code, n]) => `${n} ${code === "open" ? "open" : `closed ${code}`}`)
      .join(", ");
    lines.push(
      `| ${r.target.label} | ${r.latency ? `${ms(r.latency.p50)} / ${ms(r.latency.p99)}` : "–"} | ${r.lost} / ${r.duplicated} / ${r.reordered} | ${mib(Math.max(0, ...r.written))} | ${(growth(r) as number).toFixed(1)} | ${ratio(growth(r), growth(ceiling))} | ${closes} |`,
    );
  }
  lines.push("");
  const notes: string[] = [];
  for (const r of runs) {
    if (!r.ok) continue;
    notes.push(
      `- ${r.target.label}: ${int(r.sent)} sent, ${int(r.acked)} acked, ${int(r.delivered)} deliveries to readers; runtime workerd RSS ${r.before ? mib(r.before.rssRuntime) : "–"} → ${r.held ? mib(r.held.rssRuntime) : "–"} (backlog held) → ${r.released ? mib(r.released.rssRuntime) : "–"} MiB (read); all workerd ${r.before ? mib(r.before.rssTotal) : "–"} → ${r.held ? mib(r.held.rssTotal) : "–"} MiB.`,
    );
  }
  if (failures.length > 0) notes.push(`- Problems: ${failures.join("; ")}`);
  if (notes.length > 0) lines.push("Details:", "", ...notes, "");
  lines.push(
    "Parley's sockets are opened with `flow=1` and confirm every 256 KiB they read (docs/protocol.md, flow control): a stalled one is paused once 1 MiB is unconfirmed, its events wait in the room's log, and it would be closed with 4008 after 30 s paused (longer than this run). " +
      "The ceilings have no flow control: they write every message to every socket, and what a stalled socket cannot take waits in the runtime's (or wrangler dev's proxy's) buffers. " +
      "Written per stalled reader counts the bytes of the frames that reader found once it read again (kernel buffers included), so it is what the server committed to that socket; RSS growth is of the runtime workerd, from every socket connected to the end of the drain (the backlog still held). It does not show the ceilings' backlogs well: on loopback the kernel's socket buffers (autotuned to several MiB per connection) take most of what a server writes to a reader that stopped, before the server has to keep any. It does include what the server keeps for the messages themselves (Parley: its log, outbox, queue and the archive's D1 work, all in the same local process), which is why Parley's grows more. The bound is the written column.",
    "",
  );
  return lines.join("\n");
}
