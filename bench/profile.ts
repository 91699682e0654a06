/**
 * @module `npm run bench -- --profile`: where the runtime's thread goes in a small room, by phase
 * (docs/architecture.md, decision 13). Starts Parley, finds its runtime's own inspector (`wrangler
 * dev` starts workerd with `--inspector-addr`; its `/json/list` names one target per isolate), and
 * attaches V8's sampling profiler to the Parley Worker's isolate, which holds every object of ours
 * and the queue consumer, while a cell of the main bench (`bench/run.ts --targets parley`) runs.
 * The profiler counts samples only while that isolate runs and inflates absolute times, so the
 * report is shares: of the isolate's samples, and per message. Printed, not written to results.md.
 */
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sideFlags } from "./options.ts";
import { descendants, ServerGroup, startParley } from "./servers.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench profile: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const USAGE = `usage: npm run bench -- --profile [--modes ack,rate] [--rate 20] [--receivers 10] [--senders 1]
       [--duration 14] [--sample 6]
Each mode: one cell of --duration seconds; the profile samples --sample seconds from 6 s in.`;

/** The phases reported, by the function that is each one's root in the profile (names as bundled). */
const PHASES: [string, string][] = [
  ["the room's turn (a frame in, to its append and fan-out)", "webSocketMessage"],
  ["  of it, the commitment (protocol/chain.ts)", "commit"],
  ["the room's flush to its sockets", "flush"],
  ["the search part indexing (FTS5 rows)", "index"],
  ["the room's search sends", "#sendBatch"],
  ["the inbox pushes (room side)", "#pushShard"],
  ["the inbox shards applying them", "inboxApply"],
  ["the D1 history consumer", "consumeRoomEvents"],
  ["garbage collection", "(garbage collector)"],
];

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

/** TCP ports `pid` listens on, from /proc (no `ss` needed). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m?.[1]) inodes.add(m[1]);
    } catch {}
  }
  const ports: number[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === "0A" && f[9] !== undefined && inodes.has(f[9]))
        ports.push(Number.parseInt(f[1]?.split(":")[1] ?? "0", 16));
    }
  }
  return ports;
}

/** The inspector port of the runtime process of a `wrangler dev` started as `serverPid`. */
async function runtimeInspector(serverPid: number): Promise<number> {
  for (const p of descendants(serverPid)) {
    if (p.comm !== "workerd") continue;
    if (!readFileSync(`/proc/${p.pid}/cmdline`, "utf8").includes("--inspector-addr")) continue;
    for (const port of listeningPorts(p.pid)) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(2000) });
        const targets = (await res.json()) as { id?: string }[];
        if (targets.some((t) => t.id === "core:user:parley")) return port;
      } catch {}
    }
  }
  throw new Error("found no runtime inspector with the Parley Worker's isolate");
}

interface Session {
  ws: WebSocket;
  /** Sends `method` and resolves with the first message of its id that `until` accepts (null after
   * `ms`). */
  call(
    method: string,
    params: object,
    ms: number,
    until?: (m: { result?: unknown }) => boolean,
  ): Promise<{ result?: unknown } | null>;
}

async function connect(port: number): Promise<Session> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/core:user:parley`);
  await new Promise((resolveOpen, reject) => {
    ws.onopen = resolveOpen;
    ws.onerror = () => reject(new Error("could not reach the runtime's inspector"));
  });
  const waiting = new Map<number, (m: { result?: unknown }) => void>();
  ws.onmessage = (e) => {
    const m = JSON.parse(String(e.data)) as { id?: number; result?: unknown };
    if (m.id !== undefined) waiting.get(m.id)?.(m);
  };
  let id = 0;
  return {
    ws,
    call(method, params, ms, until = () => true) {
      id += 1;
      const mine = id;
      return new Promise((r) => {
        const timer = setTimeout(() => {
          waiting.delete(mine);
          r(null);
        }, ms);
        waiting.set(mine, (m) => {
          if (!until(m)) return;
          clearTimeout(timer);
          waiting.delete(mine);
          r(m);
        });
        ws.send(JSON.stringify({ id: mine, method, params }));
      });
    },
  };
}

/** Samples of the Parley Worker's isolate for `seconds`. The runtime's inspector answers
 * `Profiler.enable`, `setSamplingInterval` and `start` by echoing them (no `result`); a session it
 * does not answer at all (it happens to a new one now and then; wrangler's own inspector proxy
 * holds another) is closed and opened again. `stop` carries the profile. */
async function profile(port: number, seconds: number): Promise<ProfileNode[]> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const session = await connect(port);
    if (!(await session.call("Profiler.enable", {}, 1000))) {
      session.ws.close();
      continue;
    }
    await session.call("Profiler.setSamplingInterval", { interval: 250 }, 1000);
    await session.call("Profiler.start", {}, 1000);
    await sleep(seconds * 1000);
    const stopped = await session.call("Profiler.stop", {}, 30_000, (m) => m.result !== undefined);
    session.ws.close();
    if (!stopped) throw new Error("the runtime's inspector did not return the profile");
    return (stopped.result as { profile: { nodes: ProfileNode[] } }).profile.nodes;
  }
  throw new Error("the runtime's inspector did not answer Profiler.enable");
}

/** Per function name: samples in calls of it (children included, recursion counted once), and
 * samples in its own code. */
function shares(nodes: ProfileNode[]): {
  total: number;
  inclusive: Map<string, number>;
  self: Map<string, number>;
} {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const inclusive = new Map<string, number>();
  const self = new Map<string, number>();
  let total = 0;
  const walk = (n: ProfileNode, open: Set<string>): number => {
    const name = n.callFrame.functionName || "(anonymous)";
    let t = n.hitCount ?? 0;
    total += t;
    self.set(name, (self.get(name) ?? 0) + t);
    const inner = open.has(name) ? open : new Set([...open, name]);
    for (const c of n.children ?? []) {
      const child = byId.get(c);
      if (child) t += walk(child, inner);
    }
    if (!open.has(name)) inclusive.set(name, (inclusive.get(name) ?? 0) + t);
    return t;
  };
  const first = nodes[0];
  if (first) walk(first, new Set());
  return { total, inclusive, self };
}

export async function runProfile(argv: string[]): Promise<void> {
  const { values, num } = sideFlags(argv, USAGE, {
    profile: { type: "boolean" },
    modes: { type: "string" },
    rate: { type: "string" },
    receivers: { type: "string" },
    senders: { type: "string" },
    duration: { type: "string" },
    sample: { type: "string" },
  });
  const modes = (values.modes ?? "ack,rate").split(",").map((m) => m.trim());
  if (modes.some((m) => m !== "ack" && m !== "rate")) throw new Error(`--modes: ack or rate\n${USAGE}`);
  const rate = num(values.rate, "rate", 20, 1, 10_000);
  const receivers = num(values.receivers, "receivers", 10, 1, 1000);
  const senders = num(values.senders, "senders", 1, 1, 100);
  const duration = num(values.duration, "duration", 14, 8, 120);
  const sample = num(values.sample, "sample", 6, 1, duration - 7);
  const group = new ServerGroup(log, (duration + 120) * modes.length * 1000 + 180_000);
  try {
    const server = await startParley(root, resolve(root, "bench/out"), { name: "parley-profile" });
    group.track(server);
    const port = await runtimeInspector(server.pid);
    log(`Parley on ${server.baseUrl}, its runtime's inspector on ${port}`);
    const out = join(tmpdir(), `parley-profile-${process.pid}.md`);
    for (const mode of modes) {
      const cell = spawn(
        process.execPath,
        [
          "bench/run.ts",
          ...["--targets", "parley", "--parley-url", server.baseUrl, "--modes", mode],
          ...["--receivers", String(receivers), "--senders", String(senders), "--rate", String(rate)],
          ...["--duration", String(duration), "--out", out],
        ],
        { cwd: root, stdio: ["ignore", "ignore", "inherit"] },
      );
      const done = new Promise<number | null>((r) => cell.on("exit", r));
      // The cell's setup (users, room, sockets) takes the first seconds.
      await sleep(6000);
      const { total, inclusive, self } = shares(await profile(port, sample));
      const code = await done;
      rmSync(out, { force: true });
      if (code !== 0) log(`the ${mode} cell exited with ${code}: the profile below is of a run that failed`);
      const idle = self.get("(idle)") ?? 0;
      const pct = (n: number) => `${((100 * n) / Math.max(1, total)).toFixed(1)}%`;
      console.log(
        `\n### ${receivers} × ${senders}, ${mode === "ack" ? "ack-paced" : `${rate} msg/s`}: ${total} samples in ${sample} s (${pct(idle)} idle)\n`,
      );
      console.log("| phase | function | samples | share |\n|---|---|---:|---:|");
      for (const [label, fn] of PHASES) {
        const n = inclusive.get(fn) ?? 0;
        console.log(`| ${label} | \`${fn}\` | ${n} | ${pct(n)} |`);
      }
      const top = [...self].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]);
      console.log(
        `\nMost samples in a function's own code: ${top
          .slice(0, 12)
          .map(([k, v]) => `${k} ${pct(v)}`)
          .join(", ")}.`,
      );
    }
  } finally {
    await group.stop();
  }
}
