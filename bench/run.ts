/**
 * @module `npm run bench`: Parley against two ceiling servers (bench/ceiling), measured in the same
 * run on this machine over real WebSockets. Starts every server it needs as a child process group,
 * runs the cells (see cell.ts), prints the markdown report and writes it to bench/results.md.
 * See bench/README.md.
 */
import { readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type CellResult, type CellSpec, runCell } from "./cell.ts";
import { type Options, parseOptions } from "./options.ts";
import { renderReport } from "./report.ts";
import { sideSections } from "./sections.ts";
import { type Server, stopAllSync } from "./servers.ts";
import { startTargets, type Target } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

// `--presence`: the presence bench (bench/presence.ts) instead of the room bench; it starts and
// stops its own server, handles signals itself and writes only the "## Presence" section.
if (process.argv.slice(2).includes("--presence")) {
  await (await import("./presence.ts")).runPresence(process.argv.slice(2));
  process.exit();
}
// `--upload`: attachment throughput (bench/upload.ts), its own server and "## Upload" section.
if (process.argv.slice(2).includes("--upload")) {
  await (await import("./upload.ts")).runUploadBench(process.argv.slice(2));
  process.exit();
}

// `--client`: the web client in chromium (bench/client.ts): first-load weight, time to the first
// message, frame times scrolling 10,000 messages; its own server and "## Web client" section.
if (process.argv.slice(2).includes("--client")) {
  await (await import("./client.ts")).runClientBench(process.argv.slice(2));
  process.exit();
}

// `--fanout`: the 10-receiver cells for this design, the pre-shards design and BareDurable
// (bench/fanout.ts), its own servers and "## Fan-out, old vs new" section.
if (process.argv.slice(2).includes("--fanout")) {
  await (await import("./fanout.ts")).runFanout(process.argv.slice(2));
  process.exit();
}

// `--small`: issue 15's small-room table, Parley beside BareDurable and Socket.IO + SQLite
// (bench/small.ts), with connect time and memory per socket; its own servers and "## Small rooms".
if (process.argv.slice(2).includes("--small")) {
  await (await import("./small.ts")).runSmall(process.argv.slice(2));
  process.exit();
}

// `--profile`: where the runtime's thread goes in a small room, by phase (bench/profile.ts): V8's
// profiler on the Parley Worker's isolate during a cell; its own server; printed only.
if (process.argv.slice(2).includes("--profile")) {
  await (await import("./profile.ts")).runProfile(process.argv.slice(2));
  process.exit();
}

// `--pipeline`: the derived stores of issue 14, old design beside new (bench/pipeline.ts): lag to
// search and to D1, rows written per message by store and table, cost at published prices; its own
// servers and harnesses, and only the "## Pipeline" section.
if (process.argv.slice(2).includes("--pipeline")) {
  await (await import("./pipeline.ts")).runPipeline(process.argv.slice(2));
  process.exit();
}

// `--search-scale`: search latency at a million messages and across tenants, the previous design
// beside this one (bench/search-scale.ts); its own servers and "## Search at scale" section.
if (process.argv.slice(2).includes("--search-scale")) {
  await (await import("./search-scale.ts")).runSearchScale(process.argv.slice(2));
  process.exit();
}

// `--reach`: issue 17's notification and webhook latency and webhook throughput (bench/reach.ts),
// its own server and "## Reach: notifications and webhooks" section.
if (process.argv.slice(2).includes("--reach")) {
  await (await import("./reach.ts")).runReach(process.argv.slice(2));
  process.exit();
}

// `--lifecycle`: issue 18's deactivation timing and SCIM list latency (bench/lifecycle.ts), its own
// server and "## Lifecycle" section.
if (process.argv.slice(2).includes("--lifecycle")) {
  await (await import("./lifecycle.ts")).runLifecycle(process.argv.slice(2));
  process.exit();
}

// `--rooms-list`: `GET /api/rooms` for a user in 10/100/500 rooms beside `GET /api/me`, this design
// and `pre-small` (bench/rooms-list.ts); its own servers and "## Room list" section.
if (process.argv.slice(2).includes("--rooms-list")) {
  await (await import("./rooms-list.ts")).runRoomsList(process.argv.slice(2));
  process.exit();
}

// `--rooms`, `--idle`, `--soak`: many rooms at once (bench/rooms.ts), idle hibernatable sockets in
// one room (bench/idle.ts), a minute of steady load (bench/soak.ts); each starts and stops its own
// servers and writes only its own section. After --presence and --pipeline, whose own `--rooms`
// takes a value.
if (process.argv.slice(2).includes("--soak")) {
  await (await import("./soak.ts")).runSoak(process.argv.slice(2));
  process.exit();
}
// `--slow`: readers that stop reading (bench/slow.ts), its own servers and "## Slow consumers".
if (process.argv.slice(2).includes("--slow")) {
  await (await import("./slow.ts")).runSlow(process.argv.slice(2));
  process.exit();
}
if (process.argv.slice(2).includes("--idle")) {
  await (await import("./idle.ts")).runIdle(process.argv.slice(2));
  process.exit();
}
if (process.argv.slice(2).includes("--rooms")) {
  await (await import("./rooms.ts")).runRooms(process.argv.slice(2));
  process.exit();
}

const servers: Server[] = [];
let stopping: Promise<void> | null = null;
function stopServers(): Promise<void> {
  stopping ??= Promise.all(servers.map((s) => s.stop())).then(() => undefined);
  return stopping;
}

process.on("exit", stopAllSync);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping servers`);
    const hard = setTimeout(() => process.exit(130), 8000);
    stopServers().finally(() => {
      clearTimeout(hard);
      process.exit(130);
    });
  });
}

function commandLine(): string {
  const args = process.argv.slice(2).join(" ");
  if (process.env.npm_lifecycle_event === "bench") return `npm run bench${args ? ` -- ${args}` : ""}`;
  return `node bench/run.ts${args ? ` ${args}` : ""}`;
}

function describe(spec: CellSpec, target: Target): string {
  return `${spec.mode === "ack" ? "A" : "B"} N=${spec.receivers} S=${spec.senders} ${target.label}`;
}

function summary(r: CellResult): string {
  if (!r.ok) return `FAILED: ${r.error}`;
  const evs = Math.round(r.delivered / (r.elapsedMs / 1000));
  const l = r.latency;
  const lat = l ? `p50 ${l.p50.toFixed(1)} p99 ${l.p99.toFixed(1)} ms` : "no deliveries";
  return `${evs} ev/s, ${lat}, sent ${r.sent} acked ${r.acked}, lost/dup/reord ${r.lost}/${r.duplicated}/${r.reordered}, client CPU ${Math.round(r.clientCpu * 100)}%`;
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const began = performance.now();
  const loadBefore = os.loadavg()[0] ?? 0;
  let loadAfter = 0;
  const runId = `b${Date.now().toString(36)}`;
  const failures: string[] = [];
  const skipped: string[] = [];
  const results: CellResult[] = [];
  log(
    `${opts.quick ? "quick run" : "full run"}: modes ${opts.modes.join(",")}, receivers ${opts.receivers.join(",")}, senders ${opts.senders.join(",")}, ${opts.durationMs / 1000} s per cell`,
  );
  try {
    log("starting servers");
    const targets = await startTargets(
      opts.targets,
      { root, logDir: resolve(root, "bench/out"), runId, parleyUrl: opts.parleyUrl, log },
      (s) => servers.push(s),
      failures,
    );
    for (const f of failures) log(f);
    log(
      `servers up after ${((performance.now() - began) / 1000).toFixed(1)} s: ${targets.map((t) => t.label).join(", ")}`,
    );
    // Warm-up, not reported: the first cell on a fresh server pays for compiling, opening storage
    // and the first D1 queries, which would otherwise land on whichever cell runs first.
    const warm: Options = { ...opts, durationMs: 1000, drainMs: 2000, stallMs: 1000 };
    for (const target of targets) {
      const r = await runCell(
        target,
        { mode: "ack", receivers: 10, senders: 1 },
        warm,
        `${runId}-warmup`,
        false,
      );
      log(`warm-up ${target.label}: ${summary(r)}`);
    }
    const maxN = Math.max(...opts.receivers);
    const memoryDone = new Set<string>();
    let cellNo = 0;
    for (const mode of opts.modes) {
      for (const receivers of opts.receivers) {
        for (const senders of opts.senders) {
          const spec: CellSpec = { mode, receivers, senders };
          cellNo++;
          for (const target of targets) {
            if (performance.now() - began > opts.budgetMs) {
              skipped.push(`${describe(spec, target)} (time budget of ${opts.budgetMs / 1000} s spent)`);
              continue;
            }
            const measureMemory = receivers === maxN && !memoryDone.has(target.name) && target.server.pid > 0;
            if (measureMemory) memoryDone.add(target.name);
            const room = `${runId}-c${cellNo}-${mode}-${target.name}`;
            const r = await runCell(target, spec, opts, room, measureMemory);
            results.push(r);
            if (!r.ok) failures.push(`${describe(spec, target)}: ${r.error}`);
            if (r.reloaded)
              failures.push(
                `${describe(spec, target)}: wrangler dev reloaded the worker mid-cell (${r.closes.length} sockets dropped)`,
              );
            log(`${describe(spec, target)}: ${summary(r)}`);
          }
        }
      }
    }
  } finally {
    loadAfter = os.loadavg()[0] ?? 0;
    log("stopping servers");
    await stopServers();
  }
  const cpus = os.cpus();
  const wrangler = JSON.parse(readFileSync(resolve(root, "node_modules/wrangler/package.json"), "utf8")) as {
    version: string;
  };
  const report = renderReport(results, opts, {
    date: new Date().toISOString(),
    command: commandLine(),
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    memoryGiB: os.totalmem() / 1024 ** 3,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    wrangler: wrangler.version,
    totalSeconds: (performance.now() - began) / 1000,
    skipped,
    failures,
    loadBefore,
    loadAfter,
  });
  process.stdout.write(`${report}\n`);
  const out = resolve(root, opts.out);
  // The side benches' sections (presence, pipeline, web client, …) come from other runs: keep them.
  const side = sideSections(out);
  writeFileSync(out, side ? `${report}\n\n${side}\n` : `${report}\n`);
  log(`wrote ${out} (${((performance.now() - began) / 1000).toFixed(0)} s in all)`);
  if (results.length === 0 || results.every((r) => !r.ok)) process.exitCode = 1;
}

main().catch(async (err: unknown) => {
  log(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  await stopServers();
  process.exit(1);
});
