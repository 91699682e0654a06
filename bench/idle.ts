/**
 * @module `npm run bench -- --idle`: idle hibernatable sockets held by one room object (see
 * bench/README.md, "Idle sockets"). For each target (Parley and the ceilings, each on its own
 * server started here) `--sockets` receivers and one sender connect to one room and stay silent for
 * `--wait` s, long enough for the runtime to evict the idle object (Cloudflare documents 10 s of
 * inactivity for an object whose only connections are hibernatable sockets; local workerd applies
 * the same rule unless a namespace sets `preventEviction`, which wrangler dev only does for its own
 * proxy objects). Reports workerd RSS before, after connecting and after the idle spell (memory per
 * idle socket), whether the object was evicted, and that one message sent afterwards reaches every
 * socket (the wake) and a second one right after (warm). Writes the "## Idle sockets" section.
 *
 * Whether the object was evicted: see eviction.ts (the ceilings name their instance; on Parley a
 * rate-limit bucket that only lives in the object's memory is the witness, which is why this
 * bench's Parley runs with PARLEY_USER_COMMANDS_PER_SECOND=1).
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Cell, drainCells, tally } from "./cell.ts";
import {
  BURST,
  type Incarnation,
  incarnation,
  incarnationVerdict,
  WITNESS_RATE,
  Witness,
  type WitnessResult,
  witnessVerdict,
} from "./eviction.ts";
import { closeRooms, makeCells, openRooms, prepareRooms, runFleet, terminateFleets } from "./fleet.ts";
import { parseTargets, sideFlags, type TargetName } from "./options.ts";
import { int, ms, ratio } from "./report.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { reloadCount, ServerGroup, type WorkerdSnapshot, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { LABELS, startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench idle: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();

export interface IdleOptions {
  quick: boolean;
  sockets: number;
  waitMs: number;
  targets: TargetName[];
  budgetMs: number;
  out: string;
}

const USAGE = `usage: npm run bench -- --idle [--quick] [--sockets 2000] [--wait 30]
       [--targets parley,durable,bare] [--budget 600] [--out bench/results.md]`;

export function parseIdleOptions(argv: string[]): IdleOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    idle: { type: "boolean" },
    quick: { type: "boolean" },
    sockets: { type: "string" },
    wait: { type: "string" },
    targets: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  return {
    quick,
    sockets: Math.round(num(values.sockets, "sockets", quick ? 500 : 2000, 1, 10_000)),
    waitMs: num(values.wait, "wait", quick ? 20 : 30, 0, 600) * 1000,
    targets: parseTargets(values.targets ?? "parley,durable,bare"),
    budgetMs: num(values.budget, "budget", quick ? 300 : 600, 30, 7200) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

interface Probe {
  message: LatencySummary | null;
  ack: number | null;
}

export interface IdleRun {
  target: Target;
  ok: boolean;
  error?: string;
  /** Sockets connected to the room (receivers, the sender and, on Parley, the witness). */
  sockets: number;
  setupMs: number;
  /** Opening the sockets alone (the room already prepared: Parley's users signed in and joined). */
  connectMs: number;
  before?: WorkerdSnapshot;
  connected?: WorkerdSnapshot;
  idle?: WorkerdSnapshot;
  /** Seconds from the end of the setup to the wake message. */
  idleSeconds: number;
  /** The ceilings only: the object's instance after connecting, and after the wake. */
  info1?: Incarnation | null;
  info2?: Incarnation | null;
  /** Parley only: the rate-limit bucket before and after the idle spell. */
  witness?: WitnessResult;
  wake?: Probe;
  warm?: Probe;
  lost: number;
  duplicated: number;
  reordered: number;
  errors: number;
  closes: string[];
  reloaded: boolean;
}

/** Sends one message from the room's sender and waits until every receiver has it. */
async function probe(cell: Cell): Promise<Probe> {
  cell.latency = new Samples();
  cell.ackLatency = new Samples();
  const sender = cell.senders[0];
  cell.sendingOpen = true;
  const sent = sender ? cell.sendOne(sender) : false;
  cell.sendingOpen = false;
  cell.lastProgress = now();
  if (sent) await drainCells([cell], 20_000, 10_000);
  return { message: cell.latency.summary(), ack: cell.ackLatency.summary()?.max ?? null };
}

export interface Held {
  run: IdleRun;
  cell: Cell;
  room: string;
  witness: Witness | null;
  connectedAt: number;
  reloads: number;
}

/** Connects one target's room: receivers, the sender, and on Parley (unless `witness` is false) the
 * witness, which then empties its bucket. Memory is read before the sockets open and after they all are. */
export async function hold(
  target: Target,
  opts: Pick<IdleOptions, "sockets">,
  runId: string,
  witness = target.name === "parley",
): Promise<Held> {
  const run: IdleRun = {
    target,
    ok: false,
    sockets: opts.sockets + 1 + (witness ? 1 : 0),
    setupMs: 0,
    connectMs: 0,
    idleSeconds: 0,
    lost: 0,
    duplicated: 0,
    reordered: 0,
    errors: 0,
    closes: [],
    reloaded: false,
  };
  const samples = { latency: new Samples(), ackLatency: new Samples() };
  const cell = makeCells(target, { rooms: 1, receivers: opts.sockets, senders: 1 }, samples)[0] as Cell;
  const name = `${runId}-${target.name}`;
  const held: Held = { run, cell, room: `${name}-r0`, witness: null, connectedAt: 0, reloads: 0 };
  held.reloads = reloadCount(target.server);
  const t0 = performance.now();
  try {
    const prepared = await prepareRooms(target, [cell], name);
    run.before = workerdSnapshot(target.server);
    const opening = performance.now();
    await openRooms(target, [cell], prepared);
    run.connectMs = performance.now() - opening;
    if (witness) {
      const after = (cell.receivers[0] as { lastSeq: number }).lastSeq;
      held.witness = await Witness.open((prepared[0] as (typeof prepared)[0]).receiver(0, after));
      run.witness = {
        before: await held.witness.burst(BURST + 5),
        after: { pings: 0, pongs: 0, limited: 0, at: 0 },
        keptMax: 0,
      };
    }
  } catch (err) {
    run.error = `setup: ${err instanceof Error ? err.message : String(err)}`;
    await closeRooms([cell]);
    held.witness?.ws.terminate();
    return held;
  }
  run.setupMs = performance.now() - t0;
  await sleep(1000);
  run.connected = workerdSnapshot(target.server);
  // The probe is a request: it comes before the idle spell, not in it.
  run.info1 = await incarnation(target, held.room);
  held.connectedAt = now();
  return held;
}

/** After the idle spell: memory, the wake and warm messages, the witness's second burst. */
export async function wake(held: Held): Promise<void> {
  const { run, cell, witness } = held;
  const { target } = run;
  run.idle = workerdSnapshot(target.server);
  run.idleSeconds = (now() - held.connectedAt) / 1000;
  run.wake = await probe(cell);
  run.warm = await probe(cell);
  if (witness && run.witness) {
    // A bucket kept in memory: at most one token left after the first burst (it was refused), plus
    // one per second since.
    const start = now();
    run.witness.keptMax = Math.min(BURST, 1 + ((start - run.witness.before.at) / 1000) * WITNESS_RATE);
    run.witness.after = await witness.burst(BURST + 5);
    witness.ws.close(1000, "bench done");
  }
  run.info2 = await incarnation(target, held.room);
  const t = tally([cell]);
  run.lost = t.missing;
  run.duplicated = t.duplicated;
  run.reordered = t.reordered;
  await closeRooms([cell]);
  run.closes = cell.closes;
  run.errors = Object.values(cell.errorCodes).reduce((a, b) => a + b, 0) + t.unacked;
  run.reloaded = reloadCount(target.server) !== held.reloads;
  run.ok = true;
}

export async function runIdle(argv: string[]): Promise<void> {
  const opts = parseIdleOptions(argv);
  const began = performance.now();
  const runId = `i${Date.now().toString(36)}`;
  const group = new ServerGroup(log, opts.budgetMs);
  group.onStop(terminateFleets);
  const failures: string[] = [];
  const runs: IdleRun[] = [];
  log(
    `${opts.quick ? "quick" : "full"} run: ${opts.sockets} idle sockets + 1 sender per room, ${opts.waitMs / 1000} s idle; targets ${opts.targets.join(",")}`,
  );
  if (opts.waitMs / 1000 > BURST / WITNESS_RATE - 8)
    log(
      `--wait ${opts.waitMs / 1000}: too long for Parley's rate-limit witness to tell (keep it under ${BURST / WITNESS_RATE - 8} s)`,
    );
  try {
    log("starting servers");
    const targets = await startTargets(
      opts.targets,
      {
        root,
        logDir: resolve(root, "bench/out"),
        runId,
        parleyEnv: { PARLEY_USER_COMMANDS_PER_SECOND: String(WITNESS_RATE) },
        log,
      },
      group.track,
      failures,
    );
    for (const f of failures) log(f);
    for (const target of targets) {
      // Within the witness's rate limit (a burst of 40, then one a second).
      const warm = {
        rooms: 1,
        receivers: 8,
        senders: 1,
        rate: 10,
        durationMs: 1000,
        drainMs: 2000,
        stallMs: 1000,
      };
      const r = await runFleet(target, warm, `${runId}-warm-${target.name}`);
      log(`warm-up ${target.label}: ${r.ok ? `${int(r.delivered)} delivered` : `FAILED: ${r.error}`}`);
    }
    // Every target's room is connected in turn, then each idles `--wait` s from its own setup.
    const held: Held[] = [];
    for (const target of targets) {
      const h = await hold(target, opts, runId);
      runs.push(h.run);
      if (h.run.error) {
        failures.push(`${target.label}: ${h.run.error}`);
        continue;
      }
      held.push(h);
      log(`${target.label}: ${h.run.sockets} sockets open in ${(h.run.setupMs / 1000).toFixed(1)} s; idling`);
    }
    for (const h of held) {
      await sleep(Math.max(0, h.connectedAt + opts.waitMs - now()));
      await wake(h);
      const { run } = h;
      log(
        `${run.target.label}: after ${run.idleSeconds.toFixed(0)} s idle, wake message to all in ${run.wake?.message ? ms(run.wake.message.max) : "–"} ms, warm ${run.warm?.message ? ms(run.warm.message.max) : "–"} ms; lost ${run.lost}, dup ${run.duplicated}, errors ${run.errors}; evicted: ${evicted(run)}`,
      );
    }
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    log("stopping servers");
    await group.stop();
  }
  const section = renderIdle(runs, opts, sectionFacts(argv, began), failures);
  publishSection(resolve(root, opts.out), section, "## Idle sockets", log);
  const bad = runs.some((r) => !r.ok || r.lost > 0 || r.duplicated > 0 || r.errors > 0);
  if (runs.length === 0 || bad) process.exitCode = 1;
}

// ---------------------------------------------------------------------------------------------
// Report

const mib = (b: number) => (b / 1048576).toFixed(1);

/** KiB per socket between two snapshots (all workerd, or the runtime only). */
export function perSocket(r: IdleRun | undefined, runtime: boolean): number | undefined {
  if (!r?.ok || !r.before || !r.idle) return undefined;
  const delta = runtime ? r.idle.rssRuntime - r.before.rssRuntime : r.idle.rssTotal - r.before.rssTotal;
  return delta / 1024 / r.sockets;
}

export function evicted(r: IdleRun): string {
  return r.target.name === "parley"
    ? witnessVerdict(r.witness)
    : incarnationVerdict(r.info1, r.info2, r.idleSeconds);
}

function delivery(p: Probe | undefined, n: number): string {
  const m = p?.message;
  if (!m) return "none";
  return `${int(m.count)} of ${int(n)}: p50 ${ms(m.p50)} / p99 ${ms(m.p99)} / last ${ms(m.max)}`;
}

export function renderIdle(
  runs: IdleRun[],
  opts: IdleOptions,
  facts: SectionFacts,
  failures: string[],
): string {
  const n = opts.sockets;
  const ceiling = runs.find((r) => r.target.name === "durable") ?? runs.find((r) => r.target.name === "bare");
  const ceilingLabel = ceiling ? LABELS[ceiling.target.name] : "ceiling";
  const hasParley = runs.some((r) => r.target.name === "parley");
  const lines: string[] = ["## Idle sockets", ""];
  lines.push(`${facts.date} · \`${facts.command}\` · ${facts.machine} · ${facts.total} s in all.`, "");
  lines.push(
    `Load: on each server, ${int(n)} receivers and 1 sender, each its own connection${hasParley ? " (on Parley each its own user, a member of the room, plus the witness socket described below)" : ""}, connect to one room object and stay silent for at least ${opts.waitMs / 1000} s; ` +
      "then the sender sends one message (the wake), and a second one once every receiver has the first (warm). Each server ran a 1 s warm-up room first.",
    "",
  );
  lines.push(
    `| server | sockets | workerd RSS before → connected → after idling MiB | per idle socket KiB (all workerd) | runtime workerd only KiB | per socket vs ${ceilingLabel} | wake message reached (ms) | warm message reached (ms) | lost / dup / errors |`,
    "|---|---:|---:|---:|---:|---:|---|---|---|",
  );
  for (const r of runs) {
    if (!r.ok || !r.before || !r.idle || !r.connected) {
      lines.push(
        `| ${r.target.label} | ${int(r.sockets)} | failed: ${(r.error ?? "").replace(/\|/g, "\\|")} | | | | | | |`,
      );
      continue;
    }
    lines.push(
      `| ${r.target.label} | ${int(r.sockets)} | ${mib(r.before.rssTotal)} → ${mib(r.connected.rssTotal)} → ${mib(r.idle.rssTotal)} | ${(perSocket(r, false) as number).toFixed(1)} | ${(perSocket(r, true) as number).toFixed(1)} | ${ratio(perSocket(r, false), perSocket(ceiling, false))} | ${delivery(r.wake, n)} | ${delivery(r.warm, n)} | ${r.lost} / ${r.duplicated} / ${r.errors} |`,
    );
  }
  lines.push("", "**Evicted while idle?**", "");
  for (const r of runs)
    if (r.ok) lines.push(`- ${r.target.label}, after ${r.idleSeconds.toFixed(0)} s: ${evicted(r)}.`);
  lines.push("");
  const notes: string[] = [];
  for (const r of runs) {
    if (!r.ok) continue;
    const w = r.witness;
    const extra = [
      `setup ${(r.setupMs / 1000).toFixed(1)} s`,
      `runtime workerd RSS ${r.before ? mib(r.before.rssRuntime) : "–"} → ${r.connected ? mib(r.connected.rssRuntime) : "–"} → ${r.idle ? mib(r.idle.rssRuntime) : "–"} MiB`,
      r.wake?.ack != null ? `wake ack ${ms(r.wake.ack)} ms` : "",
      r.warm?.ack != null ? `warm ack ${ms(r.warm.ack)} ms` : "",
      w
        ? `witness bursts of ${w.before.pings} pings: ${w.before.pongs} admitted and ${w.before.limited} refused before idling, ${w.after.pongs} and ${w.after.limited} after`
        : "",
      r.reordered ? `reordered ${r.reordered}` : "",
      r.reloaded ? "wrangler dev reloaded the worker during the run: void" : "",
      ...r.closes.slice(0, 3),
      r.closes.length > 3 ? `${r.closes.length - 3} more closes` : "",
    ].filter(Boolean);
    notes.push(`- ${r.target.label}: ${extra.join("; ")}.`);
  }
  if (failures.length > 0) notes.push(`- Problems: ${failures.join("; ")}`);
  if (notes.length > 0) lines.push("Details:", "", ...notes, "");
  lines.push(
    "Memory per idle socket = (RSS after idling − RSS before the sockets connected) / sockets, over the server's workerd processes: wrangler dev's proxy workerd and the runtime workerd both hold every socket, so the runtime-only column is closer to what a deployed object pays. " +
      "Cloudflare evicts an object from memory after 10 s without events when its only connections are hibernatable sockets (`ctx.acceptWebSocket`), and keeps the sockets open; local workerd applies the same rule unless a namespace sets `preventEviction`, which wrangler dev sets only on its own proxy objects. " +
      "The ceilings report a fresh instance id on each construction (`GET /…/info`, which wakes the object like any request): a new id after the idle spell means the runtime evicted the object and a new instance woke for the message, and its socket count shows the sockets survived. " +
      `Parley's API has no such probe, so its witness is state that only lives in the object's memory: the per-user rate-limit buckets. This bench's Parley runs with PARLEY_USER_COMMANDS_PER_SECOND=${WITNESS_RATE} (burst ${BURST}); ` +
      'before idling, a witness socket of receiver 0\'s user sends a burst of charged pings (`{"type": "ping"}`, which the room answers and counts like any command, unlike the exact ping frame the runtime answers by itself) until the room refuses some; after the wake and warm messages it sends the same burst again. ' +
      `A bucket kept in memory has refilled ${WITNESS_RATE} token a second since; a new instance starts with a full one. ` +
      "Wake and warm: receivers that got the message, and the time from its send to the p50, p99 and last of them.",
    "",
  );
  return lines.join("\n");
}
