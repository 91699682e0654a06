/**
 * @module The servers under test, as child processes of the bench: Parley through
 * `node scripts/start.ts` and the ceilings through `wrangler dev -c bench/ceiling/wrangler.toml`.
 * Each runs in its own process group (spawned detached) so that stopping it reaches wrangler and
 * the workerd processes it spawns; `stopAllSync` is the last-resort cleanup on exit.
 * Also: reading the RSS and CPU time of a server's workerd processes from /proc.
 */
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Server {
  name: string;
  pid: number;
  port: number;
  baseUrl: string;
  logFile: string;
  /** The name (`comm`) of the processes that hold its sockets: "workerd" (the default) for the
   * servers under wrangler dev, "node" for the Socket.IO ceiling, which is the spawned process. */
  comm?: string;
  stop(): Promise<void>;
}

/**
 * How many times wrangler dev has reloaded the worker so far: it watches the sources, and an edit
 * made while the bench runs restarts the runtime and drops every WebSocket.
 */
export function reloadCount(server: Server): number {
  return server.logFile ? reloadsIn(server.logFile) : 0;
}

/** The same, read from a wrangler dev log file (0 if it does not exist). */
export function reloadsIn(logFile: string): number {
  try {
    return readFileSync(logFile, "utf8").split("Reloading local server").length - 1;
  } catch {
    return 0;
  }
}

const running = new Map<number, { stateDir: string }>();

/** A port the kernel just handed out on 127.0.0.1 (free at the time of asking). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface ProcInfo {
  pid: number;
  ppid: number;
  comm: string;
  /** utime + stime, in clock ticks. */
  ticks: number;
}

function readStat(pid: number): ProcInfo | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const open = s.indexOf("(");
    const close = s.lastIndexOf(")");
    const rest = s.slice(close + 2).split(" ");
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    return {
      pid,
      comm: s.slice(open + 1, close),
      ppid: Number(rest[1]),
      ticks: Number(rest[11]) + Number(rest[12]),
    };
  } catch {
    return null;
  }
}

/** Every live descendant of `root` (not including it), found through the ppid chain in /proc. */
export function descendants(root: number): ProcInfo[] {
  const all: ProcInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const info = readStat(Number(name));
    if (info) all.push(info);
  }
  const children = new Map<number, ProcInfo[]>();
  for (const p of all) {
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  const out: ProcInfo[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    for (const c of children.get(pid) ?? []) {
      out.push(c);
      queue.push(c.pid);
    }
  }
  return out;
}

/**
 * CPU ticks (1/100 s) used so far by the whole machine (every core: in processes, and stolen by
 * the hypervisor) and by `root` with its live descendants: their difference over an interval is
 * the CPU that other processes on the machine took meanwhile.
 */
export function cpuTicks(root: number): { machine: number; tree: number } {
  let machine = 0;
  try {
    const fields = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]?.trim().split(/\s+/).slice(1) ?? [];
    // user nice system idle iowait irq softirq steal: user, nice, system and steal. Interrupts are
    // left out: the kernel serves the bench's own loopback traffic there, in no process's ticks.
    machine = fields.slice(0, 8).reduce((sum, v, i) => (i <= 2 || i === 7 ? sum + Number(v) : sum), 0);
  } catch {}
  const tree = [readStat(root), ...descendants(root)].reduce((sum, p) => sum + (p?.ticks ?? 0), 0);
  return { machine, tree };
}

export interface WorkerdSnapshot {
  /** RSS of all workerd processes of the server, in bytes. */
  rssTotal: number;
  /** RSS of the workerd that runs the worker itself (not wrangler's proxy), in bytes. */
  rssRuntime: number;
  /** CPU ticks of all workerd processes. */
  ticks: number;
  count: number;
}

function rssOf(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * wrangler dev runs two workerd processes: a proxy bound to the public port, and the runtime of the
 * worker itself (its entry socket on an ephemeral port). Both hold every WebSocket. A server whose
 * `comm` is not workerd (the Socket.IO ceiling) is the spawned process itself: all of it counts as
 * the runtime.
 */
export function workerdSnapshot(server: Server): WorkerdSnapshot {
  let rssTotal = 0;
  let rssRuntime = 0;
  let ticks = 0;
  let count = 0;
  if (server.pid <= 0) return { rssTotal, rssRuntime, ticks, count };
  const comm = server.comm ?? "workerd";
  const self = comm === "workerd" ? null : readStat(server.pid);
  for (const p of self ? [self, ...descendants(server.pid)] : descendants(server.pid)) {
    if (p.comm !== comm) continue;
    const rss = rssOf(p.pid);
    rssTotal += rss;
    ticks += p.ticks;
    count++;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${p.pid}/cmdline`, "utf8");
    } catch {}
    if (!cmd.includes(`entry=127.0.0.1:${server.port}`)) rssRuntime += rss;
  }
  return { rssTotal, rssRuntime, ticks, count };
}

/** The last lines of a server's log, for an error that has to say why it never came up. */
export function logTail(logFile: string, lines = 40): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function waitHealthy(url: string, pid: number, timeoutMs: number, logFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tail = () => `; see ${logFile}, which ends:\n${logTail(logFile)}`;
  while (Date.now() < deadline) {
    if (!groupAlive(pid)) throw new Error(`server exited before answering ${url}${tail()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // Not listening yet.
    }
    await sleep(250);
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs / 1000} s${tail()}`);
}

async function stopGroup(pid: number, graceMs: number): Promise<void> {
  const procs = descendants(pid).map((p) => p.pid);
  try {
    process.kill(-pid, "SIGTERM");
  } catch {}
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && (groupAlive(pid) || procs.some(pidAlive))) await sleep(100);
  if (groupAlive(pid)) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
  }
  // Anything that left the group (none is expected) is ended by its own pid.
  for (const p of procs) {
    if (pidAlive(p)) {
      try {
        process.kill(p, "SIGKILL");
      } catch {}
    }
  }
}

interface StartSpec {
  name: string;
  root: string;
  logDir: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  port: number;
  stateDir: string;
  /** Whether stopping the server removes `stateDir` (false: the caller owns it). */
  ownsState: boolean;
  healthPath: string;
  timeoutMs: number;
  comm?: string;
}

async function start(spec: StartSpec): Promise<Server> {
  mkdirSync(spec.logDir, { recursive: true });
  const logFile = join(spec.logDir, `${spec.name}.log`);
  const fd = openSync(logFile, "w");
  const child = spawn(spec.command, spec.args, {
    cwd: spec.root,
    detached: true,
    stdio: ["ignore", fd, fd],
    env: {
      ...process.env,
      PATH: `${join(spec.root, "node_modules/.bin")}:${process.env.PATH ?? ""}`,
      WRANGLER_SEND_METRICS: "false",
      // wrangler dev records a trace of every invocation (each WebSocket message, RPC, alarm, queue
      // batch) in a SQLite store on the runtime's own thread, for its local explorer: measured, that
      // was half the runtime's work in an ack-paced cell, for Parley and the bare object alike.
      // Deployed, Workers traces are collected outside the isolate; no server here records them.
      X_LOCAL_OBSERVABILITY: "false",
      ...spec.env,
    },
  });
  closeSync(fd);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${spec.name}`);
  running.set(pid, { stateDir: spec.ownsState ? spec.stateDir : "" });
  child.unref();
  let stopped = false;
  const server: Server = {
    name: spec.name,
    pid,
    port: spec.port,
    baseUrl: `http://127.0.0.1:${spec.port}`,
    logFile,
    ...(spec.comm ? { comm: spec.comm } : {}),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopGroup(pid, 5000);
      running.delete(pid);
      if (spec.ownsState) rmSync(spec.stateDir, { recursive: true, force: true });
    },
  };
  try {
    await waitHealthy(`${server.baseUrl}${spec.healthPath}`, pid, spec.timeoutMs, logFile);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

export async function startCeiling(root: string, logDir: string, label: string): Promise<Server> {
  const port = await freePort();
  const stateDir = mkdtempSync(join(tmpdir(), "parley-bench-ceiling-"));
  return start({
    name: `ceiling-${label}`,
    root,
    logDir,
    command: join(root, "node_modules/.bin/wrangler"),
    args: [
      "dev",
      "-c",
      "bench/ceiling/wrangler.toml",
      "--name",
      `parley-bench-ceiling-${label}`,
      // Left to itself, each wrangler dev probes for a free inspector port from 9229, and two
      // starting at once can pick the same one ("Address already in use (socket direct:1:default)").
      "--inspector-port",
      String(await freePort()),
      "--ip",
      "127.0.0.1",
      "--port",
      String(port),
      "--persist-to",
      stateDir,
      "--show-interactive-dev-session=false",
    ],
    env: {},
    port,
    stateDir,
    ownsState: true,
    healthPath: "/healthz",
    timeoutMs: 60_000,
  });
}

/**
 * The Socket.IO + SQLite ceiling (bench/ceiling/socketio.ts): one Node process, this checkout's
 * Node, its database in a temporary directory that `stop()` removes.
 */
export async function startSocketio(root: string, logDir: string): Promise<Server> {
  const port = await freePort();
  const stateDir = mkdtempSync(join(tmpdir(), "parley-bench-socketio-"));
  return start({
    name: "ceiling-socketio",
    root,
    logDir,
    command: process.execPath,
    args: ["bench/ceiling/socketio.ts"],
    env: { PORT: String(port), SOCKETIO_DB: join(stateDir, "log.sqlite") },
    port,
    stateDir,
    ownsState: true,
    healthPath: "/healthz",
    timeoutMs: 30_000,
    comm: "node",
  });
}

/**
 * Parley with fresh state in a temporary directory that `stop()` removes; or, with `stateDir`, on
 * that directory, which stays (the caller owns it: a later start can reuse it). `name` names the
 * log file; `env` adds or overrides PARLEY_* limits (the bench's default lifts the per-user command
 * rate and quotas out of the way); `tempPrefix` names the temporary state directory; `timeoutMs` bounds the
 * wait for /healthz, which includes building the client and applying migrations.
 */
export async function startParley(
  root: string,
  logDir: string,
  options: {
    stateDir?: string;
    name?: string;
    env?: Record<string, string>;
    tempPrefix?: string;
    timeoutMs?: number;
  } = {},
): Promise<Server> {
  const port = await freePort();
  const stateDir =
    options.stateDir ?? mkdtempSync(join(tmpdir(), options.tempPrefix ?? "parley-bench-state-"));
  return start({
    name: options.name ?? "parley",
    root,
    logDir,
    command: process.execPath,
    args: ["scripts/start.ts"],
    env: {
      PARLEY_USER_COMMANDS_PER_SECOND: "100000",
      // The bench creates its rooms, searches and uploads as a few users at machine speed: the
      // per-user quotas would measure themselves, not Parley.
      PARLEY_USER_ROOMS_PER_HOUR: "1000000",
      PARLEY_USER_SEARCHES_PER_MINUTE: "1000000",
      PARLEY_USER_UPLOADS_PER_DAY: "1000000",
      PARLEY_USER_UPLOAD_BYTES_PER_DAY: String(1024 ** 4),
      ...options.env,
      PORT: String(port),
      PARLEY_STATE_DIR: stateDir,
      // As for the ceiling: an explicit free port, so that two runtimes starting at once (a bench
      // and a browser test run, or two worktrees) never race for the same inspector port.
      INSPECTOR_PORT: String(await freePort()),
    },
    port,
    stateDir,
    ownsState: options.stateDir === undefined,
    healthPath: "/healthz",
    timeoutMs: options.timeoutMs ?? 120_000,
  });
}

/** Last resort on exit: SIGKILL every server group still running and remove its state. */
export function stopAllSync(): void {
  for (const [pid, { stateDir }] of running) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
    if (!stateDir) continue;
    try {
      rmSync(stateDir, { recursive: true, force: true });
    } catch {}
  }
  running.clear();
}

export function runningCount(): number {
  return running.size;
}

/** A Parley server someone else started (`--parley-url`): measured, never stopped. */
export function externalServer(url: string): Server {
  return {
    name: "parley",
    pid: 0,
    port: Number(new URL(url).port),
    baseUrl: url.replace(/\/$/, ""),
    logFile: "",
    stop: async () => {},
  };
}

/**
 * The servers one side bench started, stopped together exactly once: when the run ends, on
 * SIGINT/SIGTERM/SIGHUP (exit 130), or when the run exceeds `budgetMs` (exit 1). `stopAllSync` on
 * exit is the last resort. `beforeStop` runs first (closing the bench's own sockets).
 */
export class ServerGroup {
  readonly servers: Server[] = [];
  #stopping: Promise<void> | null = null;
  #watchdog: NodeJS.Timeout;
  #beforeStop: () => void = () => {};

  constructor(log: (msg: string) => void, budgetMs: number) {
    process.on("exit", () => {
      this.#beforeStop();
      stopAllSync();
    });
    const bail = (why: string, code: number) => {
      log(`${why}: stopping servers`);
      const hard = setTimeout(() => process.exit(code), 8000);
      this.stop().finally(() => {
        clearTimeout(hard);
        process.exit(code);
      });
    };
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
      process.on(signal, () => bail(signal, 130));
    this.#watchdog = setTimeout(
      () => bail(`the run exceeded its budget of ${budgetMs / 1000} s`, 1),
      budgetMs,
    );
    this.#watchdog.unref();
  }

  track = (server: Server): void => {
    this.servers.push(server);
  };

  /** Runs `fn` before the servers stop (also on a signal): the bench closes its sockets there. */
  onStop(fn: () => void): void {
    this.#beforeStop = fn;
  }

  stop(): Promise<void> {
    clearTimeout(this.#watchdog);
    this.#stopping ??= (async () => {
      this.#beforeStop();
      await Promise.all(this.servers.map((s) => s.stop()));
    })();
    return this.#stopping;
  }
}
