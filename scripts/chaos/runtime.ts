/**
 * @module The local runtime under test, started exactly as `npm start` does (`node scripts/start.ts`)
 * in a process group of its own, so that one `SIGKILL` to the group takes down start.ts, wrangler,
 * esbuild and workerd at once: a hard crash, with no chance to flush anything.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { delimiter, dirname, join } from "node:path";

export interface RuntimeOptions {
  root: string;
  port: number;
  stateDir: string;
  logDir: string;
  /** Extra environment for the runtime (limit overrides). */
  env: Record<string, string>;
  startTimeoutMs: number;
  log: (line: string) => void;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** A port nobody listens on: the preferred one if it is free, else one the OS picks. */
export async function freePort(preferred: number): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<number | null>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(null));
      server.listen({ host: "127.0.0.1", port }, () => {
        const address = server.address();
        const got = typeof address === "object" && address ? address.port : null;
        server.close(() => resolve(got));
      });
    });
  if (preferred > 0 && !(await portOpen(preferred)) && (await tryListen(preferred)) === preferred)
    return preferred;
  const any = await tryListen(0);
  if (any === null) throw new Error("could not find a free port");
  return any;
}

/**
 * Live (non-zombie) members of a process group, from /proc. Where /proc is not readable it falls
 * back to `kill(-pgid, 0)`, which also counts zombies but is the best that is portable.
 */
export function groupMembers(pgid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch {
      return [];
    }
  }
  const members: number[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid && fields[0] !== "Z" && fields[0] !== "X") members.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return members;
}

export class Runtime {
  readonly options: RuntimeOptions;
  starts = 0;
  private child: ChildProcess | null = null;
  private pgid = 0;
  private exited: Promise<void> = Promise.resolve();
  private currentLog = "";

  constructor(options: RuntimeOptions) {
    this.options = options;
  }

  get url(): string {
    return `http://127.0.0.1:${this.options.port}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Starts `node scripts/start.ts` and waits until GET /healthz answers 200. */
  async start(): Promise<void> {
    const o = this.options;
    if (this.child) throw new Error("runtime already running");
    if (await portOpen(o.port)) throw new Error(`port ${o.port} is already in use`);
    this.starts++;
    this.currentLog = join(o.logDir, `runtime-${this.starts}.log`);
    const fd = openSync(this.currentLog, "a");
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, ["scripts/start.ts"], {
        cwd: o.root,
        detached: true,
        stdio: ["ignore", fd, fd],
        env: {
          ...process.env,
          ...o.env,
          // as `npm start` does: wrangler's `#!/usr/bin/env node` must find this Node, not an older one
          PATH: [join(o.root, "node_modules/.bin"), dirname(process.execPath), process.env.PATH ?? ""].join(
            delimiter,
          ),
          WRANGLER_SEND_METRICS: "false",
          PORT: String(o.port),
          PARLEY_STATE_DIR: o.stateDir,
        },
      });
    } finally {
      closeSync(fd);
    }
    if (child.pid === undefined) throw new Error("could not spawn node scripts/start.ts");
    this.child = child;
    this.pgid = child.pid;
    let exitedEarly: string | null = null;
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        exitedEarly = `exited with ${signal ?? `code ${code}`}`;
        resolve();
      });
    });
    const started = Date.now();
    while (Date.now() - started < o.startTimeoutMs) {
      if (exitedEarly) break;
      try {
        const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.status === 200) {
          o.log(
            `runtime #${this.starts} healthy after ${((Date.now() - started) / 1000).toFixed(1)} s (pgid ${this.pgid})`,
          );
          return;
        }
      } catch {
        // not listening yet
      }
      await sleep(250);
    }
    const why = exitedEarly ?? `no 200 from /healthz within ${o.startTimeoutMs / 1000} s`;
    await this.kill();
    throw new Error(
      `runtime #${this.starts} did not start: ${why}\n--- tail of ${this.currentLog} ---\n${this.logTail()}`,
    );
  }

  /** SIGKILLs the whole process group and waits until every member is gone and the port is free. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const pgid = this.pgid;
    this.killGroupSync();
    const deadline = Date.now() + 15_000;
    await Promise.race([this.exited, sleep(15_000)]);
    while (Date.now() < deadline && groupMembers(pgid).length > 0) {
      this.killGroupSync();
      await sleep(50);
    }
    while (Date.now() < deadline && (await portOpen(this.options.port))) await sleep(100);
    this.child = null;
    const left = groupMembers(pgid);
    if (left.length > 0)
      throw new Error(`process group ${pgid} still has members after SIGKILL: ${left.join(", ")}`);
    if (await portOpen(this.options.port))
      throw new Error(`port ${this.options.port} still open after SIGKILL`);
  }

  /** For exit paths: signals the group without waiting (safe to call any number of times). */
  killGroupSync(): void {
    if (this.pgid === 0) return;
    try {
      process.kill(-this.pgid, "SIGKILL");
    } catch {
      // group already gone
    }
  }

  logTail(lines = 40): string {
    try {
      return readFileSync(this.currentLog, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }
}
