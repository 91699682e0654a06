/**
 * @module `npm run bench -- --rooms`: many rooms at once (see bench/README.md, "Many rooms"). For
 * each target (Parley and the ceilings of bench/ceiling, each on its own server started here),
 * `--rooms-count` rooms of `--clients` connections each (all but `--senders` of them receivers) are
 * connected together, then every sender of every room sends at one fixed total rate for
 * `--duration` s (fleet.ts). The same shape with a single room at the same per-room rate is the
 * baseline for "rooms scale independently". Writes the "## Many rooms" section of bench/results.md.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { errorCount, type FleetResult, type FleetSpec, runFleet, terminateFleets } from "./fleet.ts";
import { parseTargets, sideFlags, type TargetName } from "./options.ts";
import { int, ms, ratio } from "./report.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { ServerGroup } from "./servers.ts";
import type { LatencySummary } from "./stats.ts";
import { LABELS, startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench rooms: ${msg}\n`);

export interface RoomsOptions {
  quick: boolean;
  rooms: number;
  /** Connections per room: receivers and senders. */
  clients: number;
  senders: number;
  /** Messages per second offered by all senders of all rooms together. */
  rate: number;
  durationMs: number;
  drainMs: number;
  targets: TargetName[];
  /** Hard limit of the whole run: past it the bench stops its servers and exits. */
  budgetMs: number;
  out: string;
}

/** Per-room rate when `--rate` is not given: a busy human channel (two messages a second), not a
 * firehose. In a small diagnostic on the 2-core development machine (50 rooms, one receiver each)
 * Parley's latency rose sharply between 1 and 2 msg/s per room while the bare object's did not, so
 * this default is where the comparison has something to say; `--rate` moves it. */
const ROOM_RATE = 2;
const CLIENT_BOUND = 0.8;

const USAGE = `usage: npm run bench -- --rooms [--quick] [--rooms-count 50] [--clients 40] [--senders 2]
       [--rate MSG_PER_S (default 2 per room)] [--duration 15] [--drain 5]
       [--targets parley,durable,bare] [--budget 480] [--out bench/results.md]`;

export function parseRoomsOptions(argv: string[]): RoomsOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    rooms: { type: "boolean" },
    quick: { type: "boolean" },
    "rooms-count": { type: "string" },
    clients: { type: "string" },
    senders: { type: "string" },
    rate: { type: "string" },
    duration: { type: "string" },
    drain: { type: "string" },
    targets: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  const rooms = Math.round(num(values["rooms-count"], "rooms-count", quick ? 10 : 50, 1, 500));
  const clients = Math.round(num(values.clients, "clients", 40, 2, 1000));
  // A small room keeps at least one receiver.
  const senders = Math.min(clients - 1, Math.round(num(values.senders, "senders", 2, 1, 1000)));
  return {
    quick,
    rooms,
    clients,
    senders,
    rate: num(values.rate, "rate", ROOM_RATE * rooms, 0.1, 100_000),
    durationMs: num(values.duration, "duration", quick ? 5 : 15, 1, 600) * 1000,
    drainMs: num(values.drain, "drain", 5, 1, 60) * 1000,
    targets: parseTargets(values.targets ?? "parley,durable,bare"),
    budgetMs: num(values.budget, "budget", quick ? 240 : 480, 30, 7200) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

interface TargetRuns {
  target: Target;
  many: FleetResult | null;
  single: FleetResult | null;
}

export async function runRooms(argv: string[]): Promise<void> {
  const opts = parseRoomsOptions(argv);
  const began = performance.now();
  const runId = `m${Date.now().toString(36)}`;
  const group = new ServerGroup(log, opts.budgetMs);
  group.onStop(terminateFleets);
  const failures: string[] = [];
  const runs: TargetRuns[] = [];
  const spec = (rooms: number, rate: number): FleetSpec => ({
    rooms,
    receivers: opts.clients - opts.senders,
    senders: opts.senders,
    rate,
    durationMs: opts.durationMs,
    drainMs: opts.drainMs,
    stallMs: Math.min(2000, opts.drainMs),
  });
  log(
    `${opts.quick ? "quick" : "full"} run: ${opts.rooms} rooms × ${opts.clients} clients (${opts.senders} senders each), ${opts.rate} msg/s in total, ${opts.durationMs / 1000} s; targets ${opts.targets.join(",")}`,
  );
  try {
    log("starting servers");
    const targets = await startTargets(
      opts.targets,
      { root, logDir: resolve(root, "bench/out"), runId, log },
      group.track,
      failures,
    );
    for (const f of failures) log(f);
    log(
      `servers up after ${((performance.now() - began) / 1000).toFixed(1)} s: ${targets.map((t) => t.label).join(", ")}`,
    );
    // Warm-up, not reported: compiling, opening storage and the first D1 queries.
    for (const target of targets) {
      const warm = {
        ...spec(1, 50),
        receivers: 8,
        senders: 1,
        durationMs: 1000,
        drainMs: 2000,
        stallMs: 1000,
      };
      const r = await runFleet(target, warm, `${runId}-warm-${target.name}`);
      log(`warm-up ${target.label}: ${r.ok ? `${int(r.delivered)} delivered` : `FAILED: ${r.error}`}`);
      runs.push({ target, many: null, single: null });
    }
    // One room alone first, then all of them, each target in turn for each.
    for (const phase of ["single", "many"] as const) {
      for (const run of runs) {
        const s = phase === "single" ? spec(1, opts.rate / opts.rooms) : spec(opts.rooms, opts.rate);
        const r = await runFleet(run.target, s, `${runId}-${phase}-${run.target.name}`, { log });
        run[phase] = r;
        const what = `${run.target.label} ${s.rooms} room${s.rooms > 1 ? "s" : ""}`;
        if (!r.ok) failures.push(`${what}: ${r.error}`);
        if (r.reloaded) failures.push(`${what}: wrangler dev reloaded the worker during the run`);
        log(`${what}: ${summary(r)}`);
      }
    }
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    log("stopping servers");
    await group.stop();
  }
  const section = renderRooms(runs, opts, sectionFacts(argv, began), failures);
  publishSection(resolve(root, opts.out), section, "## Many rooms", log);
  if (!runs.some((r) => r.many?.ok)) process.exitCode = 1;
}

// ---------------------------------------------------------------------------------------------
// Report

const evs = (r: FleetResult) => r.delivered / (r.elapsedMs / 1000);

function summary(r: FleetResult): string {
  if (!r.ok) return `FAILED: ${r.error}`;
  const l = r.latency;
  return `${int(evs(r))} ev/s, ${l ? `p50 ${ms(l.p50)} p99 ${ms(l.p99)} ms` : "no deliveries"}, acked ${int(r.acked)} of ${int(r.sent)}, lost/dup/reord ${r.lost}/${r.duplicated}/${r.reordered}, errors ${errorCount(r)}, client CPU ${Math.round(r.clientCpu * 100)}%`;
}

function marks(r: FleetResult): string {
  return `${r.clientCpu > CLIENT_BOUND ? "†" : ""}${r.overloaded ? "‡" : ""}${r.reloaded ? "⟳" : ""}`;
}

const lat = (l: LatencySummary | null | undefined) =>
  l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "–";
const pct = (x: number | null) => (x === null ? "–" : `${Math.round(x * 100)}%`);

function integrity(r: FleetResult): string {
  return `${int(r.lost)} / ${int(r.duplicated)} / ${int(r.reordered)}${r.pending > 0 ? ` (+${int(r.pending)} pending)` : ""}`;
}

export function renderRooms(
  runs: TargetRuns[],
  opts: RoomsOptions,
  facts: SectionFacts,
  failures: string[],
): string {
  const receivers = opts.clients - opts.senders;
  const perRoom = opts.rate / opts.rooms;
  const perRoomText = perRoom >= 10 ? perRoom.toFixed(0) : perRoom.toFixed(1);
  const ceiling = runs.find((r) => r.target.name === "durable") ?? runs.find((r) => r.target.name === "bare");
  const ceilingLabel = ceiling ? LABELS[ceiling.target.name] : "ceiling";
  const ok = (r: FleetResult | null | undefined) => (r?.ok ? r : undefined);
  const lines: string[] = ["## Many rooms", ""];
  lines.push(`${facts.date} · \`${facts.command}\` · ${facts.machine} · ${facts.total} s in all.`, "");
  lines.push(
    `Load: ${opts.rooms} rooms × ${opts.clients} connections on each server (${receivers} receivers and ${opts.senders} senders per room, each its own connection; on Parley the same users, one per position, are members of every room), all connected before any sending starts; ` +
      `then the senders of all rooms together offer ${int(opts.rate)} msg/s (${perRoomText} msg/s per room, every sender on its own evenly staggered schedule) for ${opts.durationMs / 1000} s, ` +
      `followed by a drain of at most ${opts.drainMs / 1000} s. Baseline for "rooms scale independently": the same room shape alone, at the same per-room rate, in the same run. ` +
      `Each server ran a 1 s warm-up room first (not reported).`,
    "",
  );
  lines.push(
    `| server | rooms | delivered ev/s | ev/s vs ${ceilingLabel} | p50 / p95 / p99 ms | p99 vs ${ceilingLabel} | acked msg/s (offered ${int(opts.rate)}) | lost / dup / reord | errors | client CPU | workerd CPU |`,
    "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
  );
  const c = ok(ceiling?.many);
  for (const { target, many } of runs) {
    const r = ok(many);
    if (!r) {
      lines.push(`| ${target.label} | ${opts.rooms} | failed | | | | | | | | |`);
      continue;
    }
    lines.push(
      `| ${target.label} | ${opts.rooms} | ${int(evs(r))}${marks(r)} | ${ratio(evs(r), c ? evs(c) : undefined)} | ${lat(r.latency)} | ${ratio(r.latency?.p99, c?.latency?.p99)} | ${int(r.acked / (r.spec.durationMs / 1000))} | ${integrity(r)} | ${errorCount(r)} | ${pct(r.clientCpu)} | ${pct(r.serverCpu)} |`,
    );
  }
  lines.push("");
  lines.push(
    `**Rooms scale independently**: end-to-end latency of a room at ${perRoomText} msg/s alone and with ${opts.rooms - 1} other rooms at the same rate.`,
    "",
    `| server | 1 room: ev/s | 1 room p50 / p95 / p99 ms | ${opts.rooms} rooms p50 / p95 / p99 ms | p50 ${opts.rooms} rooms / 1 | p99 ${opts.rooms} rooms / 1 | 1 room lost / dup / reord |`,
    "|---|---:|---:|---:|---:|---:|---|",
  );
  for (const { target, many, single } of runs) {
    const one = ok(single);
    const all = ok(many);
    lines.push(
      `| ${target.label} | ${one ? `${int(evs(one))}${marks(one)}` : "failed"} | ${lat(one?.latency)} | ${lat(all?.latency)} | ${ratio(all?.latency?.p50, one?.latency?.p50)} | ${ratio(all?.latency?.p99, one?.latency?.p99)} | ${one ? integrity(one) : "–"} |`,
    );
  }
  lines.push("", "Details:", "");
  for (const { target, many, single } of runs) {
    for (const r of [single, many]) {
      if (!r) continue;
      const head = `- ${target.label}, ${r.spec.rooms} room${r.spec.rooms > 1 ? "s" : ""}`;
      if (!r.ok) {
        lines.push(`${head}: failed: ${r.error}`);
        continue;
      }
      const codes = Object.entries(r.errorCodes).map(([k, v]) => `${k} ×${v}`);
      const notes = [
        codes.length ? `errors: ${codes.join(", ")}` : "",
        r.gaps ? `gap frames ${r.gaps}` : "",
        r.drainEnd === "settled" ? "" : `drain ${r.drainEnd}`,
        r.reloaded ? "wrangler dev reloaded the worker during the run: void" : "",
        ...r.closes.slice(0, 3),
        r.closes.length > 3 ? `${r.closes.length - 3} more closes` : "",
      ].filter(Boolean);
      lines.push(
        `${head}: setup ${(r.setupMs / 1000).toFixed(1)} s; sent ${int(r.sent)}, acked ${int(r.acked)}, refused ${int(r.nacked)}, unacked ${int(r.unacked)}, throttled ${int(r.throttled)}; ` +
          `delivered ${int(r.delivered)} (${r.frames > 0 ? (r.delivered / r.frames).toFixed(1) : "–"} per frame) over ${(r.elapsedMs / 1000).toFixed(2)} s, drain ${(r.drainMs / 1000).toFixed(2)} s; ` +
          `ack p50 / p99 ${r.ackLatency ? `${ms(r.ackLatency.p50)} / ${ms(r.ackLatency.p99)}` : "–"} ms, e2e max ${r.latency ? ms(r.latency.max) : "–"} ms${notes.length ? `; ${notes.join("; ")}` : ""}.`,
      );
    }
  }
  if (failures.length > 0) lines.push(`- Problems: ${failures.join("; ")}`);
  lines.push("");
  lines.push(
    "`ev/s` counts unique messages delivered to receivers (not the senders' own copies) per second, from the first send to the last delivery; latency is the receiver's receive time − the send time carried in the message (one clock: the bench process); " +
      "`lost / dup / reord` per (receiver, message) in each room, as in the room bench; `errors` = error frames (refused sends included), sockets the server closed or dropped, and sends never answered. " +
      `† = the bench process used more than ${Math.round(CLIENT_BOUND * 100)}% of one core; ‡ = the server fell behind the offered rate (under 95% acked, more than 1 s to drain, or still delivering at the drain deadline); ⟳ = wrangler dev reloaded the worker. ` +
      "Locally every room of a server is an object in one workerd runtime process: the objects of one worker share one V8 isolate, which runs JavaScript on one thread at a time, and this machine's cores with wrangler's proxy and the load generator. " +
      "So the aggregate here is bounded by that process, not by a room; on Cloudflare each object is placed on its own. What the run shows is whether the same per-room load spread over many objects keeps each room's latency (the ratio column), and how Parley compares with the bare object under the same shape.",
    "",
  );
  return lines.join("\n");
}
