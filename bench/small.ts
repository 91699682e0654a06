/**
 * @module `npm run bench -- --small`: the small-room table of issue 15, Parley beside two ceilings
 * in one run: BareDurable (bench/ceiling: a Durable Object that inserts each frame into its SQLite
 * with a seq and broadcasts it) and Socket.IO + SQLite (bench/ceiling/socketio.ts: one Node process
 * that fsyncs each message before broadcasting it). Rooms of N receivers × S senders, each cell
 * ack-paced (delivered/s) and at a fixed total rate (p50), repeated with the servers' order rotated
 * (bench/repeats.ts); before them, per server, `--sockets` receivers and a sender connected to one room:
 * the time to open them, memory per connected socket, and per socket after an idle spell (reusing
 * the idle bench's hold and wake, bench/idle.ts). Writes the `## Small rooms` section of
 * bench/results.md. See bench/README.md.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { CellSpec } from "./cell.ts";
import { terminateFleets } from "./fleet.ts";
import { evicted, type Held, hold, type IdleRun, perSocket, wake } from "./idle.ts";
import { sideFlags } from "./options.ts";
import * as repeats from "./repeats.ts";
import { int, ms } from "./report.ts";
import { publishSection, type SectionFacts, sectionFacts } from "./sections.ts";
import { ServerGroup } from "./servers.ts";
import { startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench small: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
export const SMALL_HEADING = "## Small rooms";

const USAGE = `usage: npm run bench -- --small [--quick] [--rooms 10x1,10x10,100x1,100x10,500x10]
       [--modes ack,rate] [--duration 5] [--repeats 2] [--rate 20] [--window 8] [--drain 5]
       [--sockets 500] [--wait 20] [--budget 1200] [--out bench/results.md]`;

interface SmallOptions extends repeats.RepeatOptions {
  /** Receivers × senders of each room, in table order. */
  rooms: [number, number][];
  /** Receivers connected for the connect-time and memory part (plus one sender). */
  sockets: number;
  /** Idle spell before the idle memory is read (Durable Objects hibernate after 10 s). */
  waitMs: number;
}

function parseSmall(argv: string[]): SmallOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    small: { type: "boolean" },
    rooms: { type: "string" },
    sockets: { type: "string" },
    wait: { type: "string" },
    ...repeats.REPEAT_FLAGS,
  });
  const quick = values.quick === true;
  const rooms = (values.rooms ?? (quick ? "10x1,10x10,100x10" : "10x1,10x10,100x1,100x10,500x10"))
    .split(",")
    .map((pair): [number, number] => {
      const m = /^(\d+)x(\d+)$/.exec(pair.trim());
      if (!m) throw new Error(`--rooms: ${pair} is not RECEIVERSxSENDERS\n${USAGE}`);
      return [num(m[1], "rooms", 0, 1, 2000), num(m[2], "rooms", 0, 1, 100)];
    });
  const o = repeats.repeatOptions(
    values,
    num,
    USAGE,
    { repeats: [2, 1], rate: 20, budget: [1200, 360] },
    { receivers: rooms.map(([r]) => r), senders: rooms.map(([, s]) => s) },
  );
  return {
    ...o,
    rooms,
    sockets: Math.round(num(values.sockets, "sockets", quick ? 200 : 500, 0, 5000)),
    waitMs: num(values.wait, "wait", quick ? 12 : 20, 0, 120) * 1000,
  };
}

type Who = "parley" | "durable" | "socketio";
const WHO: Who[] = ["parley", "durable", "socketio"];

export async function runSmall(argv: string[]): Promise<void> {
  const began = performance.now();
  const o = parseSmall(argv);
  // The cells stop themselves at the budget; the watchdog is for a run that hangs.
  const group = new ServerGroup(log, o.cell.budgetMs * 1.5);
  group.onStop(terminateFleets);
  const runId = `s${Date.now().toString(36)}`;
  const failures: string[] = [];
  const specs: CellSpec[] = o.cell.modes.flatMap((mode) =>
    o.rooms.map(([receivers, senders]) => ({ mode, receivers, senders })),
  );
  let results: repeats.RepeatResults<Who> = new Map();
  const idle: IdleRun[] = [];
  log(
    `${o.cell.quick ? "quick" : "full"} run: rooms ${o.rooms.map(([r, s]) => `${r}x${s}`).join(",")}, modes ${o.cell.modes.join(",")}, ${o.cell.durationMs / 1000} s × ${o.repeats} runs per cell; ${o.sockets} sockets, ${o.waitMs / 1000} s idle`,
  );
  try {
    const started = await startTargets(
      WHO,
      { root, logDir: resolve(root, "bench/out"), runId, log },
      group.track,
      failures,
    );
    if (started.length < WHO.length) throw new Error(failures.join("; "));
    const targets = started.map((t): [Who, Target] => [t.name as Who, t]);
    log(`servers up after ${((performance.now() - began) / 1000).toFixed(1)} s`);
    await repeats.warmUp(targets, o, runId);
    // Sockets and memory first, on servers that have only run the warm-up: after the 500-receiver
    // cells, their allocators would hand the new sockets memory those cells freed.
    if (o.sockets > 0) idle.push(...(await connectAndIdle(targets, o, runId, failures)));
    results = await repeats.runRepeats(targets, specs, o, runId, began, failures, log, false);
  } catch (err) {
    failures.push(err instanceof Error ? err.message : String(err));
    log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  } finally {
    await group.stop();
  }
  const section = render(o, specs, results, idle, sectionFacts(argv, began), failures);
  publishSection(resolve(root, o.cell.out), section, SMALL_HEADING, log);
  const idleBad = idle.some((r) => !r.ok || r.lost > 0 || r.duplicated > 0 || r.reordered > 0);
  if (results.size === 0 || repeats.anyBad(results) || idleBad) process.exitCode = 1;
}

/**
 * Each server in turn: `--sockets` receivers and one sender open on a fresh room (timed: the
 * connect time), memory read 1 s later (active), the sockets kept open; then each room idles
 * `--wait` s from its own setup, memory is read again (idle), and one message and a second reach
 * every socket (the idle bench's wake and warm), so a socket that died idle shows as lost.
 */
async function connectAndIdle(
  targets: [Who, Target][],
  o: SmallOptions,
  runId: string,
  failures: string[],
): Promise<IdleRun[]> {
  const held: Held[] = [];
  const runs: IdleRun[] = [];
  for (const [, target] of targets) {
    const h = await hold(target, { sockets: o.sockets }, `${runId}-idle`, false);
    runs.push(h.run);
    if (h.run.error) failures.push(`${target.label} connect: ${h.run.error}`);
    else {
      held.push(h);
      log(
        `${target.label}: ${h.run.sockets} sockets open in ${(h.run.connectMs / 1000).toFixed(2)} s; idling`,
      );
    }
  }
  for (const h of held) {
    await sleep(Math.max(0, h.connectedAt + o.waitMs - now()));
    await wake(h);
    log(
      `${h.run.target.label}: after ${h.run.idleSeconds.toFixed(0)} s idle, lost ${h.run.lost}, dup ${h.run.duplicated}; evicted: ${evicted(h.run)}`,
    );
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------
// Report

function render(
  o: SmallOptions,
  specs: CellSpec[],
  results: repeats.RepeatResults<Who>,
  idle: IdleRun[],
  facts: SectionFacts,
  failures: string[],
): string {
  const c = o.cell;
  const agg = (spec: CellSpec | undefined, who: Who): repeats.Agg | undefined =>
    spec ? repeats.aggregate(results.get(repeats.specKey(spec))?.get(who) ?? []) : undefined;
  const find = (mode: "ack" | "rate", r: number, s: number) =>
    specs.find((x) => x.mode === mode && x.receivers === r && x.senders === s);
  const evs = (a: repeats.Agg | undefined) => (a ? `${int(a.evs)}${a.flags}` : "–");
  const p50 = (a: repeats.Agg | undefined) => (a ? `${ms(a.p50)}${a.flags}` : "–");
  const integrity = (a: repeats.Agg | undefined) => (a ? `${a.lost}/${a.dup}/${a.reord}` : "–");
  const out = [
    SMALL_HEADING,
    "",
    `- Date: ${facts.date}; command: \`${facts.command}\`; ${facts.machine}; ${facts.total} s in all.`,
    `- Each cell: ${c.durationMs / 1000} s of sending, then a drain of at most ${c.drainMs / 1000} s, in a fresh room. **Ack-paced** (delivered/s): each sender keeps at most ${c.window} unacknowledged sends. **Fixed rate** (p50): ${c.rate} msg/s in total across the senders. Every cell ran ${o.repeats} time(s), the three servers interleaved in an order rotated per cell and per run, after a 1 s warm-up cell each; figures are medians over the runs, lost/dup/reord summed over them (both modes).`,
    "- **Parley** is this checkout under `wrangler dev` (`npm start`'s runtime, fresh state). **BareDurable** (bench/ceiling/index.ts) is a Durable Object, also under `wrangler dev`, that inserts each frame into its SQLite under seq = previous + 1 and broadcasts it; the runtime holds the broadcast until the write is durable. **Socket.IO + SQLite** (bench/ceiling/socketio.ts) is one Node process: Socket.IO 4 on the WebSocket transport, each message inserted with its seq into node:sqlite (WAL, `synchronous=FULL`: the WAL is fsynced before the insert returns), then emitted to the room. Both ceilings echo to the sender, which takes its copy as its ack.",
    "",
    "| room (recv × send) | Parley delivered/s | BareDurable delivered/s | Socket.IO + SQLite delivered/s | Parley × BareDurable | Parley × Socket.IO + SQLite | p50 at fixed rate ms: Parley / BareDurable / Socket.IO | p50 Parley × BareDurable | lost/dup/reord P · D · S | other load, cores: ack-paced P · D · S (most) |",
    "|---|---:|---:|---:|---:|---:|---|---:|---|---|",
  ];
  for (const [r, s] of o.rooms) {
    const ack = find("ack", r, s);
    const rate = find("rate", r, s);
    const [pa, da, sa] = WHO.map((w) => agg(ack, w));
    const [pr, dr, sr] = WHO.map((w) => agg(rate, w));
    const sum = (a: repeats.Agg | undefined, b: repeats.Agg | undefined) =>
      a || b
        ? `${(a?.lost ?? 0) + (b?.lost ?? 0)}/${(a?.dup ?? 0) + (b?.dup ?? 0)}/${(a?.reord ?? 0) + (b?.reord ?? 0)}`
        : integrity(undefined);
    const other = (a: repeats.Agg | undefined) => (a ? a.otherCpuMax.toFixed(2) : "–");
    out.push(
      `| ${r} × ${s} | ${evs(pa)} | ${evs(da)} | ${evs(sa)} | ${repeats.times(pa?.evs, da?.evs)} | ${repeats.times(pa?.evs, sa?.evs)} | ${p50(pr)} / ${p50(dr)} / ${p50(sr)} | ${repeats.times(pr?.p50, dr?.p50)} | ${sum(pa, pr)} · ${sum(da, dr)} · ${sum(sa, sr)} | ${other(pa)} · ${other(da)} · ${other(sa)} |`,
    );
  }
  out.push(
    "",
    "`delivered/s` = unique (receiver, message) deliveries per second, from the first send to the last delivery. p50 = receive time − send time carried in the message, over every delivery of the fixed-rate cell. `lost/dup/reord`, per (receiver, message): lost = acknowledged but never received, dup = received again, reord = received after a later seq. × = Parley ÷ the ceiling (above 1× Parley delivers more; in the p50 column above 1× Parley is slower). † = client-bound in at least one run: the bench's one Node process used more than 80% of a core while sending, so the figure measures the client as much as the server (the client shares the 2 cores with every server). ‡ = overloaded in at least one run (fell behind: still delivering when the drain ran out, or at a fixed rate under 95% acked or more than 1 s to drain). Other load = cores that processes other than the bench and its servers (other sessions' tests and builds) used while a cell ran, the most over its runs: the two cores are shared, and a run beside such work is slower for it.",
  );
  const spread = o.rooms.flatMap(([r, s]) =>
    WHO.map((w) => {
      const a = agg(find("ack", r, s), w);
      return a && a.runs > 1 ? `${r}×${s} ${w} ${int(a.evsMin)}–${int(a.evsMax)}` : "";
    }).filter(Boolean),
  );
  if (spread.length > 0) out.push("", `Ack-paced delivered/s, min–max over the runs: ${spread.join("; ")}.`);

  if (idle.length > 0) {
    const by = (w: Who) => idle.find((r) => r.target.name === w && r.ok);
    const [p, d, s] = WHO.map(by);
    const connect = (r: IdleRun | undefined) => r?.connectMs;
    const active = (r: IdleRun | undefined, runtime: boolean) =>
      r?.before && r.connected
        ? (runtime
            ? r.connected.rssRuntime - r.before.rssRuntime
            : r.connected.rssTotal - r.before.rssTotal) /
          1024 /
          r.sockets
        : undefined;
    const kib = (x: number | undefined) => (x === undefined ? "–" : x.toFixed(1));
    out.push(
      "",
      `**Connecting ${int(o.sockets)} sockets, memory per socket.** Per server, ${int(o.sockets)} receivers and 1 sender (each its own connection; on Parley each its own user, signed in and joined beforehand) open on one fresh room, at most 32 handshakes in flight, after the warm-up and before the cells above (so that the allocators cannot hand them memory those cells freed). Connect = opening them all (Parley and Socket.IO: until each socket's ready frame). Memory per active socket = (RSS 1 s after connecting − RSS before) ÷ sockets; per idle socket = the same after ${o.waitMs / 1000} s without traffic (a Durable Object whose only connections are hibernatable sockets is evicted after 10 s). RSS is over the server's processes: both workerd processes of \`wrangler dev\` (its proxy and the runtime hold every socket), or the Socket.IO Node process; "runtime" leaves out wrangler's proxy, which a deployed object does not pay.`,
      "",
      "| server | sockets | connect s | per active socket KiB (all / runtime) | per idle socket KiB (all / runtime) | wake message to all, last ms | evicted while idle? | lost/dup/reord |",
      "|---|---:|---:|---|---|---:|---|---|",
    );
    for (const r of idle) {
      if (!r.ok) {
        out.push(
          `| ${r.target.label} | ${int(r.sockets)} | failed: ${(r.error ?? "").replace(/\|/g, "\\|")} | | | | | |`,
        );
        continue;
      }
      const verdict = r.target.name === "parley" ? "not checked here (see Idle sockets)" : evicted(r);
      out.push(
        `| ${r.target.label} | ${int(r.sockets)} | ${(r.connectMs / 1000).toFixed(2)} | ${kib(active(r, false))} / ${kib(active(r, true))} | ${kib(perSocket(r, false))} / ${kib(perSocket(r, true))} | ${r.wake?.message ? ms(r.wake.message.max) : "–"} | ${verdict} | ${r.lost}/${r.duplicated}/${r.reordered} |`,
      );
    }
    out.push(
      "",
      `Parley ÷ BareDurable: connect ${repeats.times(connect(p), connect(d))}, memory per active socket ${repeats.times(active(p, false), active(d, false))} (runtime ${repeats.times(active(p, true), active(d, true))}), per idle socket ${repeats.times(perSocket(p, false), perSocket(d, false))} (runtime ${repeats.times(perSocket(p, true), perSocket(d, true))}).`,
      `Parley ÷ Socket.IO + SQLite: connect ${repeats.times(connect(p), connect(s))}, memory per active socket (runtime) ${repeats.times(active(p, true), active(s, true))}, per idle socket (runtime) ${repeats.times(perSocket(p, true), perSocket(s, true))}. A Node process's RSS grows in steps (its heap is reserved ahead), so its per-socket figures are coarse at this count.`,
    );
  }
  if (failures.length > 0) out.push("", ...failures.map((f) => `- ${f}`));
  return out.join("\n");
}
