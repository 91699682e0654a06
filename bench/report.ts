/**
 * @module The bench's markdown: one comparison table per mode, a memory table, and the per-target
 * details behind every number.
 */
import type { CellResult, MemoryResult } from "./cell.ts";
import type { Mode, Options, TargetName } from "./options.ts";
import { LABELS } from "./targets.ts";

export interface RunFacts {
  date: string;
  command: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  os: string;
  node: string;
  wrangler: string;
  totalSeconds: number;
  skipped: string[];
  failures: string[];
  /** 1-minute load average just before the servers started: other work on the machine skews everything. */
  loadBefore: number;
  /** The same at the end of the last cell (the bench's own load included). */
  loadAfter: number;
}

const CLIENT_BOUND = "†";
const OVERLOADED = "‡";
const RELOADED = "⟳";

export function int(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

export function ms(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

export function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "–";
  return `${(a / b).toFixed(2)}×`;
}

type Row = Partial<Record<TargetName, CellResult>>;

function rowsOf(results: CellResult[], mode: Mode): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const r of results) {
    if (r.spec.mode !== mode) continue;
    const key = `${r.spec.receivers}/${r.spec.senders}`;
    const row = rows.get(key) ?? {};
    row[r.target] = r;
    rows.set(key, row);
  }
  return rows;
}

const throughput = (r: CellResult) => r.delivered / (r.elapsedMs / 1000);

function tput(r: CellResult | undefined): string {
  if (!r) return "–";
  if (!r.ok) return "failed";
  return `${int(throughput(r))}${r.clientBound ? CLIENT_BOUND : ""}${r.overloaded ? OVERLOADED : ""}${r.reloaded ? RELOADED : ""}`;
}

function lat(r: CellResult | undefined): string {
  if (!r) return "–";
  if (!r.ok) return "failed";
  const l = r.latency;
  return l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "no deliveries";
}

function integrity(r: CellResult | undefined): string {
  if (!r) return "–";
  if (!r.ok) return "failed";
  return `${r.lost}/${r.duplicated}/${r.reordered}${r.pending > 0 ? ` (+${int(r.pending)} pending)` : ""}`;
}

function cpu(r: CellResult | undefined): string {
  if (!r?.ok) return "–";
  return `${Math.round(r.clientCpu * 100)}%${r.clientBound ? CLIENT_BOUND : ""}`;
}

function modeTitle(mode: Mode, opts: Options): string {
  return mode === "ack"
    ? `Mode A, ack-paced: each sender keeps at most ${opts.window} unacknowledged sends`
    : `Mode B, fixed offered rate: ${opts.rate} msg/s in total across the senders`;
}

function modeTable(results: CellResult[], mode: Mode): string {
  const lines = [
    "| N recv | S send | Parley ev/s | BareDurable ev/s | BareBroadcast ev/s | Parley/Durable | Parley p50/p95/p99 ms | BareDurable p50/p95/p99 ms | BareBroadcast p50/p95/p99 ms | p99 Parley/Durable | lost/dup/reord P · D · B | client CPU P · D · B |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
  ];
  for (const [key, row] of rowsOf(results, mode)) {
    const [n, s] = key.split("/");
    const { parley: p, durable: d, bare: b } = row;
    const tp = p?.ok ? throughput(p) : undefined;
    const td = d?.ok ? throughput(d) : undefined;
    lines.push(
      `| ${n} | ${s} | ${tput(p)} | ${tput(d)} | ${tput(b)} | ${ratio(tp, td)} | ${lat(p)} | ${lat(d)} | ${lat(b)} | ${ratio(
        p?.ok ? p.latency?.p99 : undefined,
        d?.ok ? d.latency?.p99 : undefined,
      )} | ${integrity(p)} · ${integrity(d)} · ${integrity(b)} | ${cpu(p)} · ${cpu(d)} · ${cpu(b)} |`,
    );
  }
  return lines.join("\n");
}

function detailsTable(results: CellResult[]): string {
  const lines = [
    "| mode | N | S | target | sent | acked | acked msg/s | refused | unacked | throttled | delivered | ev/frame | elapsed s | drain s | ack p50/p99 ms | e2e max ms | client CPU | workerd CPU | setup s | notes |",
    "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const r of results) {
    const head = `| ${r.spec.mode === "ack" ? "A" : "B"} | ${r.spec.receivers} | ${r.spec.senders} | ${LABELS[r.target]}`;
    if (!r.ok) {
      lines.push(
        `${head} | | | | | | | | | | | | | | | | failed: ${(r.error ?? "").replace(/\|/g, "\\|")} |`,
      );
      continue;
    }
    const codes = Object.entries(r.errorCodes)
      .map(([k, v]) => `${k}×${v}`)
      .join(", ");
    const notes = [
      codes,
      r.gaps ? `gap frames ${r.gaps}` : "",
      r.drainEnd === "settled" ? "" : `drain ${r.drainEnd}`,
      r.reloaded ? "wrangler dev reloaded the worker during this cell (a watched file changed)" : "",
      ...r.closes.slice(0, 3),
      r.closes.length > 3 ? `${r.closes.length - 3} more closes` : "",
    ]
      .filter(Boolean)
      .join("; ");
    const ack = r.ackLatency ? `${ms(r.ackLatency.p50)} / ${ms(r.ackLatency.p99)}` : "–";
    lines.push(
      `${head} | ${int(r.sent)} | ${int(r.acked)} | ${int(r.acked / (r.durationMs / 1000))} | ${int(r.nacked)} | ${int(r.unacked)} | ${int(r.throttled)} | ${int(r.delivered)} | ${r.frames > 0 ? (r.delivered / r.frames).toFixed(1) : "–"} | ${(r.elapsedMs / 1000).toFixed(2)} | ${(r.drainMs / 1000).toFixed(2)} | ${ack} | ${r.latency ? ms(r.latency.max) : "–"} | ${Math.round(r.clientCpu * 100)}% | ${r.serverCpu === null ? "–" : `${Math.round(r.serverCpu * 100)}%`} | ${(r.setupMs / 1000).toFixed(1)} | ${notes} |`,
    );
  }
  return lines.join("\n");
}

function memoryTable(results: CellResult[]): string {
  const lines = [
    "| server | connections | workerd RSS before MiB | after MiB | Δ per connection KiB | runtime workerd only: Δ per connection KiB |",
    "|---|---:|---:|---:|---:|---:|",
  ];
  const mib = (b: number) => (b / 1048576).toFixed(1);
  const kib = (b: number, n: number) => (b / 1024 / n).toFixed(1);
  for (const r of results) {
    const m: MemoryResult | undefined = r.memory;
    if (!m) continue;
    lines.push(
      `| ${LABELS[r.target]} | ${m.receivers} | ${mib(m.before.rssTotal)} | ${mib(m.after.rssTotal)} | ${kib(m.after.rssTotal - m.before.rssTotal, m.receivers)} | ${kib(m.after.rssRuntime - m.before.rssRuntime, m.receivers)} |`,
    );
  }
  return lines.length > 2
    ? lines.join("\n")
    : "_Not measured (no server started by the bench, or no cell ran)._";
}

export function renderReport(results: CellResult[], opts: Options, facts: RunFacts): string {
  const clientBound = results.filter((r) => r.ok && r.clientBound);
  const out: string[] = [
    "# Parley bench results",
    "",
    `- Date: ${facts.date}`,
    `- Command: \`${facts.command}\``,
    `- Machine: ${facts.cpus} CPUs (${facts.cpuModel}), ${facts.memoryGiB.toFixed(1)} GiB RAM, ${facts.os}; Node ${facts.node}, wrangler ${facts.wrangler}`,
    `- Cells: ${opts.durationMs / 1000} s of sending each, then a drain of at most ${opts.drainMs / 1000} s; fresh room per cell; targets interleaved per cell. Total run ${facts.totalSeconds.toFixed(0)} s.`,
    `- Load average (1 min): ${facts.loadBefore.toFixed(2)} before the run (anything above 0 is other work on the machine), ${facts.loadAfter.toFixed(2)} after the last cell. Each target had a 1 s warm-up cell first (not reported).`,
    "- Parley may coalesce events into one `events` frame per socket (see `ev/frame` in the details); the ceilings send one frame per message per socket, as the simplest fan-out does. Where frames dominate (many receivers) Parley can beat them: they bound the per-message work, not the frame count.",
    "- The load generator (one Node process) shares the machine's processors with workerd: read the client CPU column before the server columns.",
    "",
    "Columns: `ev/s` = unique messages delivered to receivers per second (sum over receivers, first send to last delivery); latency = receiver's receive time − send time carried in the message; `lost/dup/reord` counted per (receiver, message): lost = acknowledged but never received, dup = received again, reord = received after a later one (room seq; per-sender counter for BareBroadcast). " +
      `${CLIENT_BOUND} = client-bound: the bench process used more than ${Math.round(opts.clientBound * 100)}% of one core during the sending phase, so the number measures the client as much as the server. ` +
      `${OVERLOADED} = overloaded: the server fell behind the offered load (still delivering when the drain ran out; in mode B also under 95% of the offered messages acked, or more than 1 s to drain after the sending stopped); its latency is queueing that grows with the duration, its ev/s is the capacity it reached, and \`pending\` counts (receiver, message) pairs still in flight then, not losses. ` +
      `${RELOADED} = wrangler dev reloaded the worker during the cell because a file it watches changed (a source, or one esbuild resolved such as tsconfig.json or package.json); if the notes show dropped sockets, the cell is void.`,
    "",
  ];
  for (const mode of opts.modes) {
    out.push(`## ${modeTitle(mode, opts)}`, "", modeTable(results, mode), "");
  }
  out.push("## Memory per connection", "", memoryTable(results), "");
  out.push(
    "Measured on the first cell with the most receivers: RSS of the server's workerd processes (wrangler dev runs a proxy workerd and the runtime workerd; both hold every socket) before the receivers connect and after they are all ready. Each target has its own server; all of them ran the same cells before this one.",
    "",
  );
  out.push("## Client-bound cells", "");
  out.push(
    clientBound.length === 0
      ? "None."
      : clientBound
          .map(
            (r) =>
              `- ${r.spec.mode === "ack" ? "A" : "B"} N=${r.spec.receivers} S=${r.spec.senders} ${LABELS[r.target]}: client CPU ${Math.round(r.clientCpu * 100)}%`,
          )
          .join("\n"),
    "",
  );
  if (facts.failures.length > 0 || facts.skipped.length > 0) {
    out.push("## Failures and skipped cells", "");
    for (const f of facts.failures) out.push(`- ${f}`);
    for (const s of facts.skipped) out.push(`- skipped: ${s}`);
    out.push("");
  }
  out.push("## Details", "", detailsTable(results), "");
  out.push(
    "`refused` = sends answered with an error frame; `unacked` = neither acked nor refused by the end of the drain; `throttled` = mode B sends the client skipped because a sender already had 2000 in flight; `workerd CPU` = CPU of all workerd processes of the server during the sending phase (100% = one core).",
    "",
  );
  return out.join("\n");
}
