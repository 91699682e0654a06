/**
 * @module Many rooms of one target at once: one Cell (cell.ts) per room, every room connected
 * before any sending starts, one fixed-rate schedule over every sender of every room, one drain,
 * one tally. The many-rooms bench (rooms.ts), the idle-sockets bench (idle.ts) and the soak
 * (soak.ts) run on it; the accounting is cell.ts's: per (receiver, message) of each room, lost
 * = acked but never received, dup = received again, reord = received after a later seq.
 */
import { Cell, connectCell, type DrainEnd, drainCells, sendDue, type Tally, tally } from "./cell.ts";
import type { TargetName } from "./options.ts";
import { reloadCount, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { type PreparedRoom, pool, type Target } from "./targets.ts";

export interface FleetSpec {
  rooms: number;
  /** Per room: receivers, then senders (separate connections). */
  receivers: number;
  senders: number;
  /** Messages per second offered by all senders of all rooms together. */
  rate: number;
  durationMs: number;
  /** Longest wait after the sending phase, and the longest quiet spell within it. */
  drainMs: number;
  stallMs: number;
}

export interface FleetResult extends Omit<Tally, "missing"> {
  target: TargetName;
  spec: FleetSpec;
  ok: boolean;
  error?: string;
  setupMs: number;
  /** From the first send to the last delivery (at least the duration). */
  elapsedMs: number;
  drainMs: number;
  drainEnd: DrainEnd;
  lost: number;
  /** Acked (receiver, message) pairs still missing when the drain ran out of time while the server
   * was still delivering: a backlog, not a loss. */
  pending: number;
  /** Under 95% of the offered messages acked, more than 1 s to drain, or a backlog at the end. */
  overloaded: boolean;
  /** Error frames by code (refused sends included) and `close_<code>` for sockets the server closed. */
  errorCodes: Record<string, number>;
  closes: string[];
  reloaded: boolean;
  latency: LatencySummary | null;
  ackLatency: LatencySummary | null;
  /** CPU during the sending phase, as a fraction of one core. */
  clientCpu: number;
  serverCpu: number | null;
}

export interface FleetHooks {
  /** Where every room's delivery latencies go (the soak passes one that also keeps windows). */
  latency?: Samples;
  /** Called when the sending starts, every `everyMs` during it, and when it ends. */
  sample?: { everyMs: number; at(elapsedMs: number): void };
  log?: (msg: string) => void;
}

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Rooms prepared (Parley: created and joined over HTTP) and connected at the same time. */
const ROOM_CONCURRENCY = 4;

/** Every cell that has sockets open, so that a signal can close them before the servers stop. */
const live = new Set<Cell>();

export function terminateFleets(): void {
  for (const cell of live) for (const ws of cell.sockets) ws.terminate();
  live.clear();
}

/** One cell per room, sharing `samples`; registered so that a signal can close their sockets. */
export function makeCells(
  target: Target,
  spec: Pick<FleetSpec, "rooms" | "receivers" | "senders">,
  samples: { latency: Samples; ackLatency: Samples },
): Cell[] {
  const cellSpec = { mode: "rate" as const, receivers: spec.receivers, senders: spec.senders };
  const cells = Array.from({ length: spec.rooms }, () => new Cell(target.name, cellSpec, 0, samples));
  for (const c of cells) live.add(c);
  return cells;
}

/** Prepares the rooms of `cells` (named `<name>-r<k>`): Parley creates them and signs in and joins
 * their users over HTTP; a ceiling only needs the names. */
export async function prepareRooms(target: Target, cells: Cell[], name: string): Promise<PreparedRoom[]> {
  const { receivers, senders } = (cells[0] as Cell).spec;
  // The first room alone: Parley signs its users in there, and every later room reuses them.
  const prepared: PreparedRoom[] = [await target.prepare(`${name}-r0`, receivers, senders)];
  const rest = Array.from({ length: cells.length - 1 }, (_, k) => k + 1);
  prepared.push(
    ...(await pool(rest, ROOM_CONCURRENCY, (k) => target.prepare(`${name}-r${k}`, receivers, senders))),
  );
  return prepared;
}

/** Connects every cell to its prepared room, receivers first in each. */
export async function openRooms(target: Target, cells: Cell[], prepared: PreparedRoom[]): Promise<void> {
  await pool(cells, ROOM_CONCURRENCY, (cell, k) => connectCell(cell, target, prepared[k] as PreparedRoom));
}

export async function closeRooms(cells: Cell[]): Promise<void> {
  for (const c of cells) c.sendingOpen = false;
  await Promise.all(cells.map((c) => c.closeAll()));
  for (const c of cells) live.delete(c);
}

function emptyResult(target: Target, spec: FleetSpec): FleetResult {
  return {
    target: target.name,
    spec,
    ok: false,
    setupMs: 0,
    elapsedMs: 0,
    drainMs: 0,
    drainEnd: "settled",
    sent: 0,
    acked: 0,
    nacked: 0,
    unacked: 0,
    throttled: 0,
    delivered: 0,
    frames: 0,
    lost: 0,
    pending: 0,
    duplicated: 0,
    reordered: 0,
    gaps: 0,
    overloaded: false,
    errorCodes: {},
    closes: [],
    reloaded: false,
    latency: null,
    ackLatency: null,
    clientCpu: 0,
    serverCpu: null,
  };
}

/** Runs `spec.rooms` rooms of `target` at once at a fixed total rate; never throws (a failure is
 * a result with `ok: false`). */
export async function runFleet(
  target: Target,
  spec: FleetSpec,
  name: string,
  hooks: FleetHooks = {},
): Promise<FleetResult> {
  const result = emptyResult(target, spec);
  const reloads = reloadCount(target.server);
  const samples = { latency: hooks.latency ?? new Samples(), ackLatency: new Samples() };
  const t0 = performance.now();
  const cells = makeCells(target, spec, samples);
  try {
    await openRooms(target, cells, await prepareRooms(target, cells, name)).catch((err: unknown) => {
      throw new Error(`setup: ${err instanceof Error ? err.message : String(err)}`);
    });
    result.setupMs = performance.now() - t0;
    hooks.log?.(
      `${target.label}: ${spec.rooms} × ${spec.receivers + spec.senders} sockets open in ${(result.setupMs / 1000).toFixed(1)} s`,
    );

    // Sending phase: every sender at the same rate, staggered over the rooms.
    const perSender = spec.rate / (spec.rooms * spec.senders);
    const cpu0 = process.cpuUsage();
    const srv0 = workerdSnapshot(target.server);
    const start = now();
    for (const c of cells) {
      c.start = start;
      c.lastProgress = start;
      c.sendingOpen = true;
    }
    let nextSample = 0;
    const tick = () => {
      const elapsed = now() - start;
      if (elapsed >= spec.durationMs) return;
      sendDue(cells, perSender, elapsed);
      if (hooks.sample && elapsed >= nextSample) {
        hooks.sample.at(elapsed);
        nextSample += hooks.sample.everyMs;
      }
    };
    tick();
    const timer = setInterval(tick, 1);
    await sleep(Math.max(0, start + spec.durationMs - now()));
    clearInterval(timer);
    for (const c of cells) c.sendingOpen = false;
    hooks.sample?.at(now() - start);
    const cpu1 = process.cpuUsage(cpu0);
    const srv1 = workerdSnapshot(target.server);
    const sendEnd = now();

    result.drainEnd = await drainCells(cells, spec.drainMs, spec.stallMs);
    result.drainMs = now() - sendEnd;

    const wallMs = sendEnd - start;
    result.clientCpu = (cpu1.user + cpu1.system) / 1000 / wallMs;
    result.serverCpu = srv0.count > 0 ? ((srv1.ticks - srv0.ticks) * 10) / wallMs : null;
    const { missing, ...counts } = tally(cells);
    Object.assign(result, counts);
    if (result.drainEnd === "deadline") result.pending = missing;
    else result.lost = missing;
    const offered = (spec.rate * spec.durationMs) / 1000;
    result.overloaded =
      result.drainEnd === "deadline" || result.acked < 0.95 * offered || result.drainMs > 1000;
    result.elapsedMs = Math.max(spec.durationMs, Math.max(...cells.map((c) => c.lastDelivery)) - start);
    result.latency = samples.latency.summary();
    result.ackLatency = samples.ackLatency.summary();
    result.ok = true;
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
  } finally {
    await closeRooms(cells);
  }
  for (const c of cells) {
    for (const [code, n] of Object.entries(c.errorCodes))
      result.errorCodes[code] = (result.errorCodes[code] ?? 0) + n;
    result.closes.push(...c.closes);
  }
  result.reloaded = reloadCount(target.server) !== reloads;
  return result;
}

/** Every error the clients saw: error frames (refused sends included), sockets the server closed or
 * that dropped, and sends never answered. */
export function errorCount(r: FleetResult): number {
  return Object.values(r.errorCodes).reduce((a, b) => a + b, 0) + r.unacked;
}
