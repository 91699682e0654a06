/**
 * @module The `## Pipeline` section of bench/results.md (bench/pipeline.ts): lag, the per-message
 * ledger by store and table, and the cost at published prices, old design beside new.
 */

import type { PipelineOptions } from "./pipeline.ts";
import {
  type CostLine,
  PRICES,
  type Retention,
  storageCost,
  storageOf,
  total,
  type Usage,
  usageOf,
  windowUsage,
  writeCost,
  yearCost,
} from "./pipeline-cost.ts";
import type { HarnessResult, PhaseResult, Tally } from "./pipeline-counts.ts";
import type { LagResult } from "./pipeline-lag.ts";
import { type SectionFacts, SMALL_ROOM_COST } from "./sections.ts";
import type { LatencySummary } from "./stats.ts";

/** The section a run writes: `## Pipeline` against pre-shards (issue 14's comparison), otherwise
 * one named after the comparison, so that a run against another revision keeps issue 14's. */
export function pipelineHeading(old: string): string {
  return old === "pre-shards" ? "## Pipeline" : `${SMALL_ROOM_COST}${old} vs now`;
}

type Design = "old" | "new";
const DESIGNS: readonly Design[] = ["old", "new"];

export interface PipelineReport {
  facts: SectionFacts;
  opts: PipelineOptions;
  /** The old side: its checkout, HEAD there, the revision asked for (`--old`), and its commit. */
  old: { root: string; revision: string; name: string; tag: string };
  revision: string;
  lag: Partial<Record<Design, LagResult>>;
  counts: Partial<Record<Design, HarnessResult>>;
  failures: string[];
}

/** How long each store keeps a message, for the twelve-month figure: the old design kept everything;
 * the new one keeps D1 history for its 90-day window. */
const RETENTION: Record<Design, Retention> = {
  old: { room: 12, search: 12, d1: 12, r2: 12 },
  new: { room: 12, search: 12, d1: 3, r2: 12 },
};

/** What the report calls each side: old and new against pre-shards (issue 14's section), otherwise
 * the revision's name and "now". */
const nameOf = (r: PipelineReport, d: Design): string =>
  r.old.name === "pre-shards" ? d : d === "old" ? r.old.name : "now";
const heads = (r: PipelineReport, names: string[]): string[] =>
  names.flatMap((n) => DESIGNS.map((d) => `${nameOf(r, d)}, ${n}`));

const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ms = (n: number) => (n >= 100 ? fmt(n) : n.toFixed(1));
const lat = (l: LatencySummary | null) =>
  l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)} / ${ms(l.max)}` : "n/a";
const two = (l: LatencySummary | null) => (l ? `${ms(l.p50)} / ${ms(l.p99)}` : "n/a");
/** A per-message count: three significant decimals for small ones. */
const per = (n: number) =>
  n === 0 ? "0" : Math.abs(n) >= 100 ? fmt(n) : Math.abs(n) >= 0.01 ? n.toFixed(2) : n.toPrecision(2);
const usd = (n: number) => (n === 0 ? "$0" : n >= 1 ? `$${n.toFixed(2)}` : `$${n.toFixed(3)}`);
const tally = (m: Map<string, number>) =>
  m.size === 0 ? "none" : [...m].map(([k, v]) => `${k} ×${v}`).join(", ");

function phase(result: HarnessResult | undefined, name: string): PhaseResult | undefined {
  return result?.phases.find((p) => p.name === name);
}

// ---- 1. lag -----------------------------------------------------------------------------------

function renderLag(r: PipelineReport, lines: string[]): void {
  const o = r.opts.lag;
  lines.push("### Ack → searchable, ack → in the D1 database", "");
  lines.push(
    `Each design on a fresh \`wrangler dev\` of its own checkout (one after the other, never at once): one sender posts ${o.messages} messages at ${o.rate} msg/s over the room socket, each ending with a unique token word. From each ack, \`GET /api/search\` is polled every ${o.pollMs} ms (one round of requests covers every token not found yet, ORed up to the 200-character \`q\`), and the local D1 SQLite files of the server's state directory are read (node:sqlite, read-only) every ${o.d1PollMs} ms for the message's \`archived_events\` row: the old design's one database, the new design's history shard. Lag is measured on the bench's clock from the ack frame; a probe not seen within ${o.timeoutMs / 1000} s is missing.`,
    "",
  );
  lines.push(
    "| design | acked / sent | ack → searchable p50 / p95 / p99 / max (ms) | missing | ack → in D1 p50 / p95 / p99 / max (ms) | missing |",
    "|---|---|---|---|---|---|",
  );
  for (const d of DESIGNS) {
    const l = r.lag[d];
    if (!l) {
      lines.push(`| ${nameOf(r, d)} | no result | | | | |`);
      continue;
    }
    lines.push(
      `| ${nameOf(r, d)} | ${l.acked} / ${l.sent} | ${lat(l.search.lag)} | ${l.search.missing} | ${lat(l.d1.lag)} | ${l.d1.missing} |`,
    );
  }
  lines.push("");
  for (const d of DESIGNS) {
    const l = r.lag[d];
    if (!l) continue;
    lines.push(
      `- ${nameOf(r, d)}: ack p50 / p99 ${two(l.ack)} ms; one search request p50 / p99 ${two(l.searchRequest)} ms (${fmt(l.searchRequests)} requests); ${fmt(l.d1Polls)} D1 reads of ${l.d1Files} local file(s) with \`archived_events\` (the probes were in ${l.d1FilesWithProbes}); workerd CPU ${l.serverCpuMsPerMessage.toFixed(1)} ms per message; errors: ${tally(l.errors)}.`,
    );
  }
  lines.push(
    "",
    `Resolution: a probe is seen at the end of the first poll that finds it, so the searchable figure includes up to one poll interval (${o.pollMs} ms) or one search request, whichever is longer (see the request latency above), and the D1 figure up to ${o.d1PollMs} ms. Locally the queue, its consumer and D1 run in the same workerd as the rooms, and the local queue hands over a batch when it holds 100 messages or 1 s after the first (\`max_batch_timeout\`): that wait is most of the D1 lag in both designs, and all of the old design's search lag.`,
    "",
  );
}

// ---- 2. counts -----------------------------------------------------------------------------------

interface Row {
  label: string;
  values: string[];
}

function table(header: string[], rows: Row[]): string[] {
  return [
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
    ...rows.map((r) => `| ${r.label} | ${r.values.join(" | ")} |`),
  ];
}

const rowsBy = (t: Tally[], where: (x: Tally) => boolean) =>
  t.filter(where).reduce((n, x) => n + x.rowsWritten, 0);

/** Per unit of each column's phase: one figure for every (design, phase) column. */
function columns(r: PipelineReport, names: string[]): { design: Design; phase: PhaseResult | undefined }[] {
  return names.flatMap((name) => DESIGNS.map((design) => ({ design, phase: phase(r.counts[design], name) })));
}

function summaryRows(cols: ReturnType<typeof columns>): Row[] {
  const f = (pick: (u: Usage, p: PhaseResult) => number): string[] =>
    cols.map(({ phase: p }) => (p && p.units > 0 ? per(pick(usageOf(p), p)) : "n/a"));
  const byOwner = (owner: string) => (_u: Usage, p: PhaseResult) =>
    rowsBy(p.tallies, (x) => (x.store === "DO SQL" || x.store === "DO KV") && x.owner === owner) / p.units;
  const others = (_u: Usage, p: PhaseResult) =>
    rowsBy(
      p.tallies,
      (x) => (x.store === "DO SQL" || x.store === "DO KV") && x.owner !== "Room" && x.owner !== "SearchShard",
    ) / p.units;
  return [
    { label: "**Durable Object rows written**", values: f((u) => u.doRowsWritten) },
    { label: "  of which the room", values: f(byOwner("Room")) },
    { label: "  of which search shards", values: f(byOwner("SearchShard")) },
    { label: "  of which other objects (presence, quota)", values: f(others) },
    { label: "Durable Object rows read", values: f((u) => u.doRowsRead) },
    { label: "Durable Object busy ms (all objects; duration's lower bound)", values: f((u) => u.doBusyMs) },
    { label: "**D1 rows written**", values: f((u) => u.d1RowsWritten) },
    { label: "D1 rows read", values: f((u) => u.d1RowsRead) },
    { label: "**Durable Object requests billed**", values: f((u) => u.doRequests) },
    { label: "  RPCs and fetches", values: f((u) => u.rpcs) },
    { label: "  alarms", values: f((u) => u.alarms) },
    { label: "  incoming WebSocket messages (billed 20:1)", values: f((u) => u.wsMessages) },
    { label: "Queue messages sent", values: f((u) => u.queueMessages) },
    { label: "**Queue operations** (write, read, delete)", values: f((u) => u.queueOps) },
    { label: "**R2 class A** (put, list)", values: f((u) => u.r2ClassA) },
    { label: "R2 class B (get, head)", values: f((u) => u.r2ClassB) },
    { label: "R2 bytes written", values: f((u) => u.r2BytesPut) },
    { label: "Workers requests (queue consumer invocations)", values: f((u) => u.workersRequests) },
  ];
}

/** The rows-written ledger of one design: every (store, owner, table, op, step) that wrote. */
function ledgerRows(paced: PhaseResult, burst: PhaseResult | undefined): Row[] {
  const key = (x: Tally) => [x.store, x.owner, x.table, x.op, x.via].join("\t");
  const burstBy = new Map((burst?.tallies ?? []).map((x) => [key(x), x]));
  const written = paced.tallies.filter(
    (x) => (x.store === "DO SQL" || x.store === "DO KV" || x.store === "D1") && x.rowsWritten > 0,
  );
  for (const x of burst?.tallies ?? []) {
    if ((x.store === "DO SQL" || x.store === "DO KV" || x.store === "D1") && x.rowsWritten > 0) {
      if (!written.some((w) => key(w) === key(x)))
        written.push({ ...x, calls: 0, rowsRead: 0, rowsWritten: 0 });
    }
  }
  written.sort((a, b) => b.rowsWritten - a.rowsWritten || key(a).localeCompare(key(b)));
  return written.map((x) => {
    const b = burstBy.get(key(x));
    const store = x.store === "D1" ? `D1 ${x.owner}` : `${x.owner} (${x.store === "DO KV" ? "KV" : "SQL"})`;
    return {
      label: store,
      values: [
        `\`${x.table}\``,
        x.op,
        x.via,
        per(x.rowsWritten / paced.units),
        per(x.calls / paced.units),
        b && burst ? per(b.rowsWritten / burst.units) : "0",
      ],
    };
  });
}

/** Requests, queue and R2 operations by what made them. */
function operationRows(cols: ReturnType<typeof columns>): Row[] {
  const keys = new Map<string, string>();
  for (const { phase: p } of cols) {
    for (const x of p?.tallies ?? []) {
      if (x.store === "DO requests") keys.set(`${x.owner}.${x.op}`, `DO request: ${x.owner}.${x.op}`);
      else if (x.store === "Queues") keys.set(`q ${x.owner} ${x.op}`, `queue ${x.owner}: ${x.op}`);
      else if (x.store === "R2") keys.set(`r2 ${x.op} ${x.via}`, `R2 ${x.op} (${x.table}), ${x.via}`);
      else if (x.store === "Workers") keys.set(`w ${x.op}`, `Workers: ${x.op}`);
    }
  }
  const match = (k: string) => (x: Tally) =>
    (x.store === "DO requests" && `${x.owner}.${x.op}` === k) ||
    (x.store === "Queues" && `q ${x.owner} ${x.op}` === k) ||
    (x.store === "R2" && `r2 ${x.op} ${x.via}` === k) ||
    (x.store === "Workers" && `w ${x.op}` === k);
  return [...keys]
    .sort((a, b) => a[1].localeCompare(b[1]))
    .map(([k, label]) => ({
      label,
      values: cols.map(({ phase: p }) =>
        p && p.units > 0
          ? per(
              p.tallies.filter(match(k)).reduce((n, x) => n + (x.store === "Queues" ? x.bytes : x.calls), 0) /
                p.units,
            )
          : "n/a",
      ),
    }));
}

function renderCounts(r: PipelineReport, lines: string[]): void {
  const p = r.opts.plan;
  const v = r.opts.vars;
  lines.push("### What a message writes, by store and table", "");
  lines.push(
    `Counted inside workerd (\`@cloudflare/vitest-plugin\`, both designs at once, each in its own checkout; bench/workerd/pipeline-harness.ts), by wrapping the runtime's own APIs: every \`sql.exec\` cursor's \`rowsWritten\`/\`rowsRead\` by statement and table, KV calls and \`setAlarm\` (billed as rows), each D1 statement's \`meta.rows_written\`/\`rows_read\`, queue sends, deliveries and acks, R2 operations, and every call into a Durable Object from outside it (an RPC, an alarm, a WebSocket message). Traffic goes through the public surface only: ${p.rooms} channels of one tenant with ${p.members} members each; in each room one member's socket sends${p.readersMark ? `, and every other member's socket (${p.members - 1} per room) sends \`{"type":"read","seq"}\` with the newest seq of each frame of events it receives, as the web client's open room view does (its incoming WebSocket messages, billed 20:1, are in the request lines)` : ""}. A fill of ${fmt(p.fill)} messages per room (not reported) takes every room past its windows, then the measured phases: **burst**, ${fmt(p.burst)} messages per room as fast as acks allow (at most ${p.window} unacknowledged); **paced**, ${fmt(p.paced)} per room, one every ${p.intervalMs} ms in each room (a conversation: every message is its own flush, alarm and batch; the rooms staggered); then ${p.edits} edits, ${p.reactions} reactions and ${p.deletes} deletions per room, paced the same. Between phases the harness waits until every room's archive has confirmed everything and no alarm is due within 5 s. Limits: \`PARLEY_HOT_EVENTS\`=${v.PARLEY_HOT_EVENTS}, \`PARLEY_COMMAND_WINDOW_EVENTS\`=${v.PARLEY_COMMAND_WINDOW_EVENTS}${r.old.name === "pre-shards" ? " (the old design has no such window)" : ""}, \`PARLEY_SEGMENT_EVENTS\`=${v.PARLEY_SEGMENT_EVENTS}: the windows are scaled down alike in both designs so that rooms pass them (what passing costs per event does not depend on their size)${v.PARLEY_SEGMENT_EVENTS === "1000" ? "; segments keep their default size, so each phase of 1,000 messages a room seals one segment per room in both designs" : ""}. Figures are per message (per command for edits, reactions, deletions).`,
    "",
  );
  const cols = columns(r, ["paced", "burst"]);
  lines.push(...table(["per message", ...heads(r, ["paced", "burst"])], summaryRows(cols)), "");
  lines.push("Requests and operations by what made them (per message):", "");
  lines.push(...table(["operation", ...heads(r, ["paced", "burst"])], operationRows(cols)), "");
  for (const d of DESIGNS) {
    const paced = phase(r.counts[d], "paced");
    if (!paced) continue;
    lines.push(
      `Rows written per message, ${r.old.name === "pre-shards" ? `${d} design` : nameOf(r, d)}, by store, table and step (\`meta[key]\`: a row of the object's key-value table; step: the entry point that wrote it):`,
      "",
    );
    lines.push(
      ...table(
        [
          "store",
          "table",
          "operation",
          "step",
          "rows written, paced",
          "statements, paced",
          "rows written, burst",
        ],
        ledgerRows(paced, phase(r.counts[d], "burst")),
      ),
      "",
    );
  }
  const cmd = columns(r, ["edit", "react", "delete"]);
  lines.push("Per edit, reaction and deletion (paced):", "");
  lines.push(
    ...table(
      ["per command", ...heads(r, ["edit", "react", "delete"])],
      summaryRows(cmd).filter((row) => !row.label.startsWith("  ")),
    ),
    "",
  );
  for (const d of DESIGNS) {
    const c = r.counts[d];
    if (!c) continue;
    const s = storageOf(c);
    const w = windowUsage(c);
    const checks = Object.entries(c.checks)
      .map(([k, n]) => `${k} ${fmt(n)}`)
      .join(", ");
    lines.push(
      `- ${nameOf(r, d)}: bytes gained per message past the windows: room SQLite ${fmt(s.roomPerMessage)} B (it holds ${fmt(s.roomPerRowHeld)} B per event it still has a row for), search shards ${fmt(s.searchPerMessage)} B, D1 ${fmt(s.d1PerMessage)} B, R2 ${fmt(s.r2PerMessage)} B. ${w ? `The D1 history's window (its scheduled job, run once 91 days on) wrote ${per(w.rowsWritten)} and read ${per(w.rowsRead)} rows per row it deleted. ` : ""}At the end: ${checks}. Harness ${fmt(c.seconds)} s.`,
    );
  }
  lines.push("");
}

// ---- 3. cost ---------------------------------------------------------------------------------------

function renderCost(r: PipelineReport, lines: string[]): void {
  lines.push("### Cost per million messages", "");
  lines.push("Prices (Workers Paid, past the included amounts, read from Cloudflare's pricing pages):", "");
  lines.push("| item | price | source |", "|---|---|---|");
  for (const p of Object.values(PRICES)) lines.push(`| ${p.item} | $${p.usd} per ${p.unit} | ${p.url} |`);
  lines.push("");
  const per1M = (d: Design, name: string): { write: CostLine[]; storage: CostLine[] } | null => {
    const c = r.counts[d];
    const p = phase(c, name);
    if (!c || !p) return null;
    return { write: writeCost(usageOf(p), windowUsage(c)), storage: storageCost(storageOf(c)) };
  };
  const paced = { old: per1M("old", "paced"), new: per1M("new", "paced") };
  const burst = { old: per1M("old", "burst"), new: per1M("new", "burst") };
  if (!paced.old || !paced.new) {
    lines.push("No cost: a design's counts are missing.", "");
    return;
  }
  lines.push(
    "Write path of 1,000,000 messages (paced phase; usage per message × price per million, so the usage column is also millions per million messages):",
    "",
  );
  lines.push(
    `| line | ${nameOf(r, "old")}: usage per message | ${nameOf(r, "old")} | ${nameOf(r, "new")}: usage per message | ${nameOf(r, "new")} |`,
    "|---|---|---|---|---|",
  );
  const longer = paced.new.write.length >= paced.old.write.length ? paced.new.write : paced.old.write;
  const names = longer.map((l) => l.line);
  for (const name of names) {
    const a = paced.old.write.find((l) => l.line === name);
    const b = paced.new.write.find((l) => l.line === name);
    lines.push(
      `| ${name} | ${a ? per(a.quantity) : "—"} | ${a ? usd(a.usd) : "—"} | ${b ? per(b.quantity) : "—"} | ${b ? usd(b.usd) : "—"} |`,
    );
  }
  lines.push(
    `| **write path, paced** | | **${usd(total(paced.old.write))}** | | **${usd(total(paced.new.write))}** |`,
  );
  if (burst.old && burst.new)
    lines.push(
      `| write path, burst (the same lines from the burst phase) | | ${usd(total(burst.old.write))} | | ${usd(total(burst.new.write))} |`,
    );
  lines.push("");
  lines.push(
    "Holding 1,000,000 messages for a month (bytes per message measured above × GB-month price; GB = 10⁹ bytes):",
    "",
  );
  lines.push(
    `| store | ${nameOf(r, "old")}: GB | ${nameOf(r, "old")} per month | ${nameOf(r, "new")}: GB | ${nameOf(r, "new")} per month |`,
    "|---|---|---|---|---|",
  );
  for (let i = 0; i < paced.old.storage.length; i++) {
    const a = paced.old.storage[i] as CostLine;
    const b = paced.new.storage[i] as CostLine;
    lines.push(
      `| ${a.line} | ${a.quantity.toFixed(3)} | ${usd(a.usd)} | ${b.quantity.toFixed(3)} | ${usd(b.usd)} |`,
    );
  }
  lines.push(
    `| **per month** | | **${usd(total(paced.old.storage))}** | | **${usd(total(paced.new.storage))}** |`,
    `| **first 12 months: write path once + storage** | | **${usd(yearCost(paced.old.write, paced.old.storage, r.old.name === "pre-shards" ? RETENTION.old : RETENTION.new))}** | | **${usd(yearCost(paced.new.write, paced.new.storage, RETENTION.new))}** |`,
    "",
  );
  lines.push(
    `Assumptions: each room has ${r.opts.plan.members} members, one of whom is sending; ${r.opts.plan.readersMark ? "every other member marks each frame it receives read over its socket (counted above: their WebSocket messages, 20:1, and whatever the read markers write); receiving itself adds nothing billed (outgoing WebSocket messages are free)" : "receivers add nothing billed per message (outgoing WebSocket messages are free) and their read markers are left out (run with `--readers-mark` to count them)"}. ${r.old.name === "pre-shards" ? "" : `Both sides keep D1 history for 90 days in the twelve-month figure (${r.old.name} has the history window too). `}Messages are 3–40 words of chat text (bench/text.ts). Paced is a conversation (every message its own flush, alarm and queue batch entry); burst is a room sending as fast as acks allow, where flushes carry several messages. The consumer's batches hold what 10 rooms send in a second; with more rooms they fill up (to 100), which lowers only the Workers-request line. Twelve months: the old design keeps every store for the year; the new design's D1 history keeps 90 days (3 months). Storage is what each store gains per message once rooms are past their windows; a new-design room below its command window (200,000 events by default, which most rooms stay below for a long time) still keeps a row per event, and grows like the old design's room (the old design's room line), which would add that line × 12 to the new design's year. Free allowances are left out (marginal cost). Durable Objects duration is billed at 128 MB for the wall-clock time an object is running or idle in memory but unable to hibernate (pricing page); the line above is a **lower bound**: the time from each request's start (RPC, alarm, WebSocket message) to its result settling, the union per object, measured on workerd's clock on this machine (shared, 2 cores, every object in one isolate) × 128 MB. It misses JS that runs without awaiting I/O (workerd's clock moves only across I/O), work after a handler returns (a flush on a timer, the output gate), and time an object stays unable to hibernate between messages (a pending timer keeps it billed); a room that cannot hibernate between paced messages would pay up to the whole interval (${r.opts.plan.intervalMs} ms × 128 MB = ${((r.opts.plan.intervalMs / 1000) * 0.128).toFixed(4)} GB-s, $${((r.opts.plan.intervalMs / 1000) * 0.128 * PRICES.doDuration.usd).toFixed(2)} per million messages at this pace). Workers CPU is left out: a local run cannot measure it as billed (the lag section, when run, gives local workerd CPU per message, all objects together).`,
    "",
  );
}

export function renderPipeline(r: PipelineReport): string {
  const lines: string[] = [pipelineHeading(r.old.name), ""];
  const sides =
    r.old.name === "pre-shards"
      ? `Old design: tag \`pre-shards\` (${r.old.tag.slice(0, 12)}), checked out at ${r.old.root} (HEAD ${r.old.revision}); new design: this checkout (${r.revision}).`
      : `Before: \`${r.old.name}\` (${r.old.tag.slice(0, 12)}), checked out at ${r.old.root} (HEAD ${r.old.revision}), in the columns headed ${r.old.name}; now: this checkout (${r.revision}), in the columns headed now.`;
  lines.push(
    `${r.facts.date} · \`${r.facts.command}\` · ${r.facts.machine} · ${r.facts.total} s in all. ${sides}${r.opts.quick ? " **Quick run: small counts (segments of 10 events), not representative.**" : ""}`,
    "",
  );
  if (r.opts.only !== "counts") renderLag(r, lines);
  if (r.opts.only !== "lag") {
    renderCounts(r, lines);
    renderCost(r, lines);
  }
  if (r.failures.length > 0) lines.push(`**Problems**: ${r.failures.join("; ")}`, "");
  return lines.join("\n");
}
