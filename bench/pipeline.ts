/**
 * @module `npm run bench -- --pipeline`: issue 14's figures for the derived stores, the old design
 * (tag pre-shards: one D1 archive with FTS5, an outbox in the room; bench/old.ts) and this one
 * (search shards and D1 history shards fed by watermark) measured in the same run:
 *
 * 1. lag (bench/pipeline-lag.ts): ack → searchable and ack → in the D1 database, each design on a
 *    fresh `wrangler dev` of its own checkout, one after the other;
 * 2. counts (bench/pipeline-counts.ts, bench/workerd/pipeline-harness.ts): rows written per message
 *    by store and table, requests, queue and R2 operations, in workerd under the vitest plugin, both
 *    designs at once;
 * 3. cost (bench/pipeline-cost.ts): those counts at Cloudflare's published prices.
 *
 * `--old <rev>` measures another revision as the old side (issue 15: `pre-small`); its section is
 * then `## Small-room cost, <rev> vs now`. `--readers-mark` has every member but the sender hold a
 * room socket and send read markers, as the web client does. The report is printed and replaces
 * only its own section of bench/results.md. See bench/README.md, "Pipeline".
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type WebSocket from "ws";
import { oldDesignRoot, resolveRev } from "./old.ts";
import { sideFlags } from "./options.ts";
import { type HarnessPlan, type HarnessResult, runHarness, stopHarnesses } from "./pipeline-counts.ts";
import { type LagOptions, type LagResult, measureLag } from "./pipeline-lag.ts";
import { pipelineHeading, renderPipeline } from "./pipeline-report.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { ServerGroup, startParley } from "./servers.ts";
import { chatText } from "./text.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench pipeline: ${msg}\n`);

export const DESIGNS = ["old", "new"] as const;
export type Design = (typeof DESIGNS)[number];

export interface PipelineOptions {
  quick: boolean;
  /** The revision measured beside this checkout (a tag or commit; `pre-shards` unless `--old`). */
  old: string;
  only: "lag" | "counts" | null;
  lag: LagOptions;
  plan: Omit<HarnessPlan, "design" | "texts">;
  /** The limits both harnesses run with (PARLEY_* bindings). */
  vars: Record<string, string>;
  budgetMs: number;
  out: string;
}

const USAGE = `usage: npm run bench -- --pipeline [--quick] [--only lag|counts]
       [--messages 300] [--rate 10] [--poll 10] [--d1-poll 5] [--lag-timeout 20]
       [--rooms 10] [--members 10] [--fill 2000] [--burst 1000] [--paced 1000] [--interval 300]
       [--commands 50] [--readers-mark] [--old pre-shards] [--budget 1500] [--out bench/results.md]`;

export function parsePipelineOptions(argv: string[]): PipelineOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    pipeline: { type: "boolean" },
    quick: { type: "boolean" },
    only: { type: "string" },
    messages: { type: "string" },
    rate: { type: "string" },
    poll: { type: "string" },
    "d1-poll": { type: "string" },
    "lag-timeout": { type: "string" },
    rooms: { type: "string" },
    members: { type: "string" },
    fill: { type: "string" },
    burst: { type: "string" },
    paced: { type: "string" },
    interval: { type: "string" },
    commands: { type: "string" },
    "readers-mark": { type: "boolean" },
    old: { type: "string" },
    budget: { type: "string" },
    out: { type: "string" },
  });
  const quick = values.quick === true;
  const only = values.only ?? null;
  if (only !== null && only !== "lag" && only !== "counts")
    throw new Error(`--only: lag or counts\n${USAGE}`);
  const int = (v: string | undefined, name: string, def: number, min: number, max: number) =>
    Math.round(num(v, name, def, min, max));
  const commands = int(values.commands, "commands", quick ? 3 : 50, 0, 1000);
  const old = values.old ?? "pre-shards";
  if (!/^[\w./-]{1,100}$/.test(old)) throw new Error(`--old: a tag or commit\n${USAGE}`);
  return {
    quick,
    old,
    only,
    lag: {
      messages: int(values.messages, "messages", quick ? 40 : 300, 1, 10_000),
      rate: num(values.rate, "rate", 10, 0.1, 500),
      pollMs: num(values.poll, "poll", 10, 1, 5000),
      d1PollMs: num(values["d1-poll"], "d1-poll", 5, 1, 5000),
      timeoutMs: num(values["lag-timeout"], "lag-timeout", 20, 1, 300) * 1000,
    },
    plan: {
      rooms: int(values.rooms, "rooms", quick ? 3 : 10, 1, 100),
      members: int(values.members, "members", quick ? 3 : 10, 1, 100),
      fill: int(values.fill, "fill", quick ? 30 : 2000, 0, 100_000),
      burst: int(values.burst, "burst", quick ? 20 : 1000, 1, 100_000),
      paced: int(values.paced, "paced", quick ? 10 : 1000, 1, 100_000),
      intervalMs: num(values.interval, "interval", 300, 10, 60_000),
      window: 8,
      edits: commands,
      reactions: commands,
      deletes: commands,
      readersMark: values["readers-mark"] === true,
    },
    // The room's windows scaled down (the same for both designs) so that a room passes them within
    // the run: what passing costs per event does not depend on the window's size. Segments keep
    // their default size, which sets what a message pays of a segment's upload and index row.
    vars: {
      PARLEY_USER_COMMANDS_PER_SECOND: "100000",
      PARLEY_USER_ROOMS_PER_HOUR: "1000000",
      PARLEY_USER_SEARCHES_PER_MINUTE: "1000000",
      PARLEY_HOT_EVENTS: "500",
      PARLEY_REPLAY_CAP: "500",
      PARLEY_COMMAND_WINDOW_EVENTS: "1000",
      PARLEY_SEGMENT_EVENTS: quick ? "10" : "1000",
    },
    budgetMs: num(values.budget, "budget", quick ? 600 : 1500, 60, 7200) * 1000,
    out: values.out ?? "bench/results.md",
  };
}

function revision(dir: string): string {
  try {
    return execFileSync("git", ["-C", dir, "rev-parse", "--short=12", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

export async function runPipeline(argv: string[]): Promise<void> {
  const opts = parsePipelineOptions(argv);
  const began = performance.now();
  const runId = `p${Date.now().toString(36)}`;
  const logDir = resolve(root, "bench/out");
  const group = new ServerGroup(log, opts.budgetMs);
  const sockets = new Set<WebSocket>();
  const stateDirs = new Set<string>();
  group.onStop(() => {
    for (const ws of sockets) ws.terminate();
    stopHarnesses();
    for (const dir of stateDirs) rmSync(dir, { recursive: true, force: true });
  });
  const failures: string[] = [];
  const trees: Record<Design, string> = { old: oldDesignRoot(opts.old, log), new: root };
  const lag: Partial<Record<Design, LagResult>> = {};
  const counts: Partial<Record<Design, HarnessResult>> = {};
  log(`${opts.quick ? "quick" : "full"} run; old design at ${trees.old}`);
  try {
    if (opts.only !== "counts") {
      for (const design of DESIGNS) {
        const stateDir = mkdtempSync(join(tmpdir(), `parley-bench-pipeline-${design}-`));
        stateDirs.add(stateDir);
        try {
          log(`lag, ${design} design: starting its server`);
          const server = await startParley(trees[design], logDir, { stateDir, name: `pipeline-${design}` });
          group.track(server);
          try {
            lag[design] = await measureLag(server, stateDir, opts.lag, `${runId}${design}`, sockets, (m) =>
              log(`lag, ${design}: ${m}`),
            );
            const r = lag[design];
            log(
              `lag, ${design}: searchable p50 ${r?.search.lag?.p50.toFixed(0)} ms, in D1 p50 ${r?.d1.lag?.p50.toFixed(0)} ms`,
            );
          } finally {
            await server.stop();
          }
        } catch (err) {
          failures.push(`lag, ${design} design: ${err instanceof Error ? err.message : String(err)}`);
          log(`lag, ${design}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
        } finally {
          rmSync(stateDir, { recursive: true, force: true });
          stateDirs.delete(stateDir);
        }
      }
    }
    if (opts.only !== "lag") {
      const next = chatText(11);
      const texts = Array.from({ length: 5000 }, next);
      log(
        `counts: ${opts.plan.rooms} rooms × ${opts.plan.members} members, fill ${opts.plan.fill}, burst ${opts.plan.burst}, paced ${opts.plan.paced} every ${opts.plan.intervalMs} ms; both designs at once`,
      );
      await Promise.all(
        DESIGNS.map(async (design) => {
          try {
            counts[design] = await runHarness(
              trees[design],
              design,
              { ...opts.plan, design, texts },
              opts.vars,
              join(logDir, `pipeline-harness-${design}.log`),
              (line) => log(`counts, ${line}`),
            );
          } catch (err) {
            failures.push(`counts, ${design} design: ${err instanceof Error ? err.message : String(err)}`);
            log(`counts, ${design}: ${err instanceof Error ? err.message : String(err)}`);
          }
        }),
      );
    }
  } finally {
    await group.stop();
  }
  const section = renderPipeline({
    facts: sectionFacts(argv, began),
    opts,
    old: { root: trees.old, revision: revision(trees.old), name: opts.old, tag: resolveRev(opts.old) },
    revision: revision(root),
    lag,
    counts,
    failures,
  });
  publishSection(resolve(root, opts.out), section, pipelineHeading(opts.old), log);
  const lagMissing = opts.only !== "counts" && DESIGNS.some((d) => !lag[d]);
  const countsMissing = opts.only !== "lag" && DESIGNS.some((d) => !counts[d]);
  if (lagMissing || countsMissing) process.exitCode = 1;
}
