/**
 * @module The `## Search at scale` section of bench/results.md: the search-at-scale bench's tables
 * (bench/search-scale.ts), the previous design beside the current one.
 */
import { int, ms, ratio } from "./report.ts";
import type { KindResult, SearchRun } from "./search-queries.ts";
import { KIND_LABELS, KIND_RULES, KINDS } from "./search-queries.ts";
import type { Design, Filled, SearchScaleOptions, SearchScaleResults } from "./search-scale.ts";
import type { TenantPlan } from "./search-world.ts";
import type { SectionFacts } from "./sections.ts";
import type { LatencySummary } from "./stats.ts";

const NAMES: Record<Design, string> = { old: "previous (pre-shards)", new: "current" };

const lat3 = (l: LatencySummary | null | undefined) =>
  l ? `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}` : "–";
const lat2 = (l: LatencySummary | null | undefined) => (l ? `${ms(l.p50)} / ${ms(l.p99)}` : "–");
const tally = (m: Map<string, number>) =>
  m.size === 0 ? "0" : [...m].map(([k, v]) => `${k} ×${v}`).join(", ");
const hits = (k: KindResult | undefined) => (k ? k.hits.toFixed(1) : "–");

/** The rows of one searcher: every kind, all searches, then the `GET /api/me` baseline. */
function rowsOf(
  run: SearchRun | undefined,
): { label: string; l: LatencySummary | null | undefined; k?: KindResult }[] {
  return [
    ...KINDS.map((kind) => ({
      label: KIND_LABELS[kind],
      l: run?.kinds.get(kind)?.latency,
      k: run?.kinds.get(kind),
    })),
    { label: "all searches", l: run?.all },
    { label: "`GET /api/me` (baseline)", l: run?.me },
  ];
}

function fillRow(design: Design, what: string, f: Filled | undefined): string {
  if (!f) return `| ${NAMES[design]} | ${what} | – | – | – | – | – | – | – |`;
  const how =
    f.how === "sockets"
      ? "`send` over room sockets"
      : `rows into archived_events (${(f.sqlMiB ?? 0).toFixed(0)} MiB of SQL)`;
  const errors = tally(f.errors) + (f.reconnects > 0 ? `, ${f.reconnects} reconnects` : "");
  return `| ${NAMES[design]} | ${what} | ${int(f.messages)} | ${how} | ${f.seconds.toFixed(0)} | ${int(f.messages / f.seconds)} | ${f.indexedSeconds.toFixed(1)} | ${f.settleSeconds.toFixed(0)}${f.settled ? "" : " (busy)"} | ${errors} |`;
}

export function renderSearchScale(
  r: SearchScaleResults,
  o: SearchScaleOptions,
  one: TenantPlan,
  tenants: TenantPlan[],
  meta: SectionFacts,
): string {
  const lines: string[] = [];
  const t0 = tenants[0] as TenantPlan;
  lines.push("## Search at scale", "");
  lines.push(
    `${meta.date} · \`${meta.command}\` · ${meta.machine} · ${meta.total} s in all. Issue 14's search figures for the ` +
      `previous design (tag pre-shards: one D1 database holds every tenant's archive and its FTS5 index) and the current one ` +
      `(per-tenant search shards in Durable Object SQLite, ${"`PARLEY_SEARCH_PARTS`"} = 4 parts a tenant), in the same run, ` +
      `each under \`wrangler dev\` with fresh state and the same tenants, rooms, members and message text.`,
    "",
  );
  if (o.scale < 1) {
    const newFills = [
      r.one.get("new")?.fill,
      r.tenants.get("new")?.alone,
      r.tenants.get("new")?.others,
    ].filter((f): f is Filled => f !== undefined);
    const sent = newFills.reduce((a, f) => a + f.messages, 0);
    const secs = newFills.reduce((a, f) => a + f.seconds, 0);
    const rate = secs > 0 ? sent / secs : 0;
    const counts: string[] = [];
    let full = 0;
    if (o.cases.includes("one")) {
      counts.push(`${int(one.messages)} messages in one tenant instead of ${int(o.messages)}`);
      full += o.messages;
    }
    if (o.cases.includes("tenants")) {
      counts.push(`${o.tenants} tenants of ${int(t0.messages)} instead of ${int(o.tenantMessages)}`);
      full += o.tenants * o.tenantMessages;
    }
    lines.push(
      `**Scale ${o.scale}**: every message count is ${o.scale} × the issue's (${counts.join("; ")}); rooms, tenants and members ` +
        `are as given. The current design is filled through its real pipeline, which ${rate > 0 ? `took ${int(rate)} msg/s on average in this run, so the issue's ${int(full)} messages would take about ${Math.round(full / rate / 60)} min of filling alone` : "did not run"}.`,
      "",
    );
  }
  lines.push(
    `Fill: the current design through its real pipeline, every message a \`send\` over its room's WebSocket as the room's author ` +
      `(${o.concurrency} rooms at a time, ${o.window} unacknowledged sends per socket), so each room ships to its search part and to the ` +
      `room-events queue as in use; the previous design by writing the rows its queue consumer writes into \`archived_events\` with ` +
      `\`wrangler d1 execute --local\` while the server is stopped (its triggers index \`archive_fts\` as they do the consumer's inserts), ` +
      `then a restart. Both servers run with \`PARLEY_ARCHIVE_RESEND_MS\` = 1 hour (see bench/README.md). Rooms, users and memberships are made through the public API on both (dev sign-in, \`POST /api/rooms\` with ` +
      `\`members\`). Messages are spread evenly over the rooms; each room has one of ${o.authors} authors; the text is random ` +
      `Zipf-distributed words (a vocabulary of 300,000, 3–40 words a message, bench/corpus.ts), the same per room on both designs. ` +
      `Before measuring: every room's last message (a sentinel word) is found by search, then the server is quiet (workerd under 10% ` +
      `of a core over 2 s). Latency: ${o.queries} searches of each kind per searcher, kinds interleaved, one request at a time, ` +
      `each right after a \`GET /api/me\` by the same user (the same auth path without the search); a warm-up round first.`,
    "",
  );

  // Case one
  if (r.one.size > 0) {
    lines.push(`### One tenant: ${int(one.messages)} messages over ${int(one.rooms)} rooms`, "");
    lines.push(
      "| searcher | query | previous p50 / p95 / p99 ms | current p50 / p95 / p99 ms | p50 current / previous | p99 current / previous | hits previous · current |",
      "|---|---|---:|---:|---:|---:|---:|",
    );
    for (const s of one.searchers) {
      const who = `${int(Math.ceil(one.rooms / s.step))} rooms (${int(r.visible.get(s.key) ?? 0)} messages)`;
      const prev = rowsOf(r.one.get("old")?.runs.get(s.key));
      const cur = rowsOf(r.one.get("new")?.runs.get(s.key));
      prev.forEach((p, i) => {
        const c = cur[i] as (typeof cur)[number];
        const h = p.k || c.k ? `${hits(p.k)} · ${hits(c.k)}` : "";
        lines.push(
          `| ${who} | ${p.label} | ${lat3(p.l)} | ${lat3(c.l)} | ${ratio(c.l?.p50, p.l?.p50)} | ${ratio(c.l?.p99, p.l?.p99)} | ${h} |`,
        );
      });
    }
    lines.push("");
    const meRatios = one.searchers.map((s) => {
      const f = (d: Design) => {
        const run = r.one.get(d)?.runs.get(s.key);
        return ratio(run?.all?.p50, run?.me?.p50);
      };
      return `${int(Math.ceil(one.rooms / s.step))} rooms: previous ${f("old")}, current ${f("new")}`;
    });
    lines.push(`Search ÷ \`GET /api/me\`, p50 of all searches: ${meRatios.join("; ")}.`, "");
  }

  // Case tenants
  if (r.tenants.size > 0) {
    const others = tenants.slice(1).reduce((a, p) => a + p.messages, 0);
    lines.push(
      `### Tenant isolation: tenant 0 (${int(t0.messages)} messages, ${int(t0.rooms)} rooms) alone, then with ${tenants.length - 1} more tenants (${int(others)} messages)`,
      "",
    );
    lines.push(
      "| searcher | query | previous alone p50 / p99 | previous with others p50 / p99 | previous after / before p50 · p99 | current alone p50 / p99 | current with others p50 / p99 | current after / before p50 · p99 |",
      "|---|---|---:|---:|---:|---:|---:|---:|",
    );
    for (const s of t0.searchers) {
      const who = `${int(Math.ceil(t0.rooms / s.step))} rooms (${int(r.tenantVisible.get(s.key) ?? 0)} messages)`;
      const rows = (d: Design, when: "before" | "after") => rowsOf(r.tenants.get(d)?.[when].get(s.key));
      const [ob, oa, nb, na] = [
        rows("old", "before"),
        rows("old", "after"),
        rows("new", "before"),
        rows("new", "after"),
      ];
      ob.forEach((row, i) => {
        const a = oa[i]?.l;
        const b = row.l;
        const c = nb[i]?.l;
        const d = na[i]?.l;
        lines.push(
          `| ${who} | ${row.label} | ${lat2(b)} | ${lat2(a)} | ${ratio(a?.p50, b?.p50)} · ${ratio(a?.p99, b?.p99)} | ${lat2(c)} | ${lat2(d)} | ${ratio(d?.p50, c?.p50)} · ${ratio(d?.p99, c?.p99)} |`,
        );
      });
    }
    lines.push("");
  }

  // Fill
  lines.push("### Fill", "");
  lines.push(
    "| design | what | messages | how | s | msg/s | all searchable after s | quiet after s | errors |",
    "|---|---|---:|---|---:|---:|---:|---:|---|",
  );
  for (const d of o.designs) {
    if (o.cases.includes("one")) lines.push(fillRow(d, "one tenant", r.one.get(d)?.fill));
    if (o.cases.includes("tenants")) {
      lines.push(fillRow(d, "tenant 0", r.tenants.get(d)?.alone));
      lines.push(fillRow(d, `tenants 1–${tenants.length - 1}`, r.tenants.get(d)?.others));
    }
  }
  lines.push("");

  lines.push("Details:", "");
  lines.push(
    `- Query kinds: ${KINDS.map((k) => `**${KIND_LABELS[k]}**: ${KIND_RULES[k]}`).join("; ")}. The same queries on both designs; \`hits\` is the mean number returned (the route returns at most 50), equal on both designs when each finds the same messages.`,
  );
  const setups = [...r.one.values(), ...r.tenants.values()].map(
    (x) =>
      `${NAMES[x.design]}, ${"fill" in x ? "one tenant" : `${tenants.length} tenants`}: ${x.setupSeconds.toFixed(0)} s`,
  );
  if (setups.length > 0)
    lines.push(`- Setting up users, rooms and memberships over the API: ${setups.join("; ")}.`);
  const runs: string[] = [];
  for (const [d, x] of r.one)
    for (const [k, run] of x.runs)
      runs.push(
        `${NAMES[d]} one tenant ${k}: errors ${tally(run.errors)}, workerd CPU ${Math.round(run.serverCpu * 100)}%, bench ${Math.round(run.clientCpu * 100)}%`,
      );
  for (const [d, x] of r.tenants)
    for (const [when, m] of [
      ["alone", x.before],
      ["with others", x.after],
    ] as const)
      for (const [k, run] of m)
        runs.push(
          `${NAMES[d]} tenant 0 ${when} ${k}: errors ${tally(run.errors)}, workerd CPU ${Math.round(run.serverCpu * 100)}%`,
        );
  if (runs.length > 0) lines.push(`- While searching (100% = one core): ${runs.join("; ")}.`);
  const pauses = [r.one.get("new")?.fill, r.tenants.get("new")?.alone, r.tenants.get("new")?.others]
    .filter((f): f is Filled => f !== undefined)
    .map((f) => `${(f.longestPauseMs / 1000).toFixed(1)} s`);
  if (pauses.length > 0)
    lines.push(
      `- The current design's fill acknowledges in bursts: the longest time without any ack was ${pauses.join(", ")} (in the order of the fill table). ` +
        "An ack leaves once its write is durable, and the local runtime, one thread busy with every room's queued sends, confirms them in rounds; the rate is what that thread sustains.",
    );
  if (r.reloads > 0)
    lines.push(
      `- ⟳ wrangler dev reloaded a worker ${r.reloads} time(s) during the run: the figures may be void.`,
    );
  for (const f of r.failures) lines.push(`- **Failed**: ${f}`);
  for (const s of r.skipped) lines.push(`- Skipped: ${s}`);
  lines.push(
    "",
    "Locally everything of a design runs in one workerd process: the rooms, the search shards (current) and the queue consumer, " +
      "with D1 as a local SQLite file. Deployed, the previous design's archive is one remote D1 database that runs one query at a " +
      "time for every tenant, and each current search part is its own object; so the tables compare the work each design does per " +
      "query on the same machine, not edge latency. The previous design's FTS5 `MATCH` runs over every tenant's rows before the " +
      "tenant and membership filters, the current one's over the tenant's part only.",
    "",
  );
  return lines.join("\n");
}
