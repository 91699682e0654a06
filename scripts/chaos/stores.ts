/**
 * @module The chaos run's check of the stores derived from the rooms' logs (docs/architecture.md):
 * once the logs are verified, it waits until every room reports its search part and its D1 history
 * shard caught up (`POST /api/admin/history/catch-up`), then checks each against the log: every
 * event of the log is in exactly one history shard of the tenant's jurisdiction, with the log's text
 * (none for a deleted message); every message is found by search exactly once, at its room and seq,
 * by its own token; and no deleted message is found.
 *
 * The history shards are read directly from the runtime's local state, as an operator would read
 * D1 (`wrangler d1 execute <binding> --local --json`), for every HISTORY_* binding of wrangler.toml.
 */
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import type { RoomEvent } from "../../protocol/index.ts";
import { d1Bindings } from "../migrate.ts";
import { type Api, show, type User } from "./api.ts";
import type { Violations } from "./client.ts";

/** Words a message's token is made of: the search tokenizer keeps it whole. */
export function tokenOf(key: string, n: number): string {
  return `t${key}n${n}`;
}

interface RoomState {
  id: string;
  lastSeq: number;
  indexedThrough: number;
  archivedThrough: number;
}

/** Polls the catch-up route until every room's search and history reach its log (or time runs out). */
export async function waitForStores(
  api: Api,
  owner: User,
  roomIds: readonly string[],
  timeoutMs: number,
  log: (line: string) => void,
): Promise<Map<string, RoomState>> {
  const end = Date.now() + timeoutMs;
  let states = new Map<string, RoomState>();
  for (;;) {
    const res = await api.request(owner, "POST", "/api/admin/history/catch-up?limit=100");
    if (res.status !== 200)
      throw new Error(`POST /api/admin/history/catch-up → ${res.status} ${show(res.body)}`);
    const rooms = (res.body as { rooms: RoomState[] }).rooms.filter((r) => roomIds.includes(r.id));
    states = new Map(rooms.map((r) => [r.id, r]));
    const behind = rooms.filter((r) => r.indexedThrough < r.lastSeq || r.archivedThrough < r.lastSeq);
    if (behind.length === 0 && rooms.length === roomIds.length) return states;
    if (Date.now() >= end) {
      log(
        `derived stores still behind: ${behind.map((r) => `${r.id} ${r.indexedThrough}/${r.archivedThrough} of ${r.lastSeq}`).join(", ")}`,
      );
      return states;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

interface HistoryRow {
  room_id: string;
  seq: number;
  kind: string;
  text: string;
  deleted: number;
  shard: string;
}

/** Every history row of `tenant`, from every history shard's local database. */
export function historyRows(root: string, stateDir: string, tenant: string): HistoryRow[] {
  const wrangler = resolve(root, "node_modules/wrangler/bin/wrangler.js");
  const rows: HistoryRow[] = [];
  for (const binding of d1Bindings().filter((b) => b.startsWith("HISTORY_"))) {
    const result = spawnSync(
      process.execPath,
      [
        wrangler,
        "d1",
        "execute",
        binding,
        "--local",
        "--persist-to",
        stateDir,
        "--json",
        "--command",
        `SELECT room_id, seq, kind, text, deleted FROM archived_events WHERE tenant_id = '${tenant}'`,
      ],
      {
        cwd: root,
        encoding: "utf8",
        maxBuffer: 512 * 1024 * 1024,
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
      },
    );
    if (result.status !== 0)
      throw new Error(`wrangler d1 execute ${binding} failed: ${result.stderr.slice(-500)}`);
    const parsed = JSON.parse(result.stdout) as { results: Omit<HistoryRow, "shard">[] }[];
    for (const r of parsed[0]?.results ?? []) rows.push({ ...r, shard: binding });
  }
  return rows;
}

/** What the check found, for the run's summary. */
export interface StoreTotals {
  historyRows: number;
  historyMissing: number;
  historyDuplicated: number;
  historyWrong: number;
  searched: number;
  searchMissing: number;
  searchDuplicated: number;
  deletedFound: number;
}

/**
 * Checks the history rows and search against the logs. `tokens` maps each message's clientId to its
 * token; `deleted` holds the clientIds of messages deleted during the run.
 */
export async function checkStores(o: {
  api: Api;
  searcher: User;
  logs: ReadonlyMap<string, RoomEvent[]>;
  history: HistoryRow[];
  tokens: ReadonlyMap<string, string>;
  violations: Violations;
}): Promise<StoreTotals> {
  const t: StoreTotals = {
    historyRows: o.history.length,
    historyMissing: 0,
    historyDuplicated: 0,
    historyWrong: 0,
    searched: 0,
    searchMissing: 0,
    searchDuplicated: 0,
    deletedFound: 0,
  };
  const rowsOf = new Map<string, HistoryRow[]>();
  for (const r of o.history) {
    const k = `${r.room_id}:${r.seq}`;
    rowsOf.set(k, [...(rowsOf.get(k) ?? []), r]);
  }
  const probes: { token: string; room: string; seq: number; deleted: boolean }[] = [];
  for (const [room, events] of o.logs) {
    for (const e of events) {
      const found = rowsOf.get(`${room}:${e.seq}`) ?? [];
      if (found.length === 0) {
        t.historyMissing++;
        o.violations.add("history-missing", `${room}: seq ${e.seq} is in no history shard`);
        continue;
      }
      if (found.length > 1) {
        t.historyDuplicated++;
        o.violations.add(
          "history-duplicated",
          `${room}: seq ${e.seq} in ${found.map((r) => r.shard).join(", ")}`,
        );
      }
      const row = found[0] as HistoryRow;
      if (e.kind === "message") {
        const deleted = e.deleted === true;
        if (
          row.kind !== "message" ||
          row.text !== (deleted ? "" : e.text) ||
          row.deleted !== (deleted ? 1 : 0)
        ) {
          t.historyWrong++;
          o.violations.add("history-wrong", `${room}: seq ${e.seq} is ${show(row)} in ${row.shard}`);
        }
        const token = typeof e.clientId === "string" ? o.tokens.get(e.clientId) : undefined;
        if (token) probes.push({ token, room, seq: e.seq, deleted });
      }
    }
  }
  // Tokens ORed a few at a time (a query is at most 200 characters), each hit traced to its token.
  const per = 12;
  for (let i = 0; i < probes.length; i += per) {
    const batch = probes.slice(i, i + per);
    const q = batch.map((p) => p.token).join(" OR ");
    const res = await o.api.request(o.searcher, "GET", `/api/search?q=${encodeURIComponent(q)}`);
    if (res.status !== 200) throw new Error(`GET /api/search → ${res.status} ${show(res.body)}`);
    const hits = (res.body as { hits: { room: string; seq: number; text: string }[] }).hits;
    for (const p of batch) {
      t.searched++;
      const mine = hits.filter((h) => h.text.split(/\s+/).includes(p.token));
      if (p.deleted) {
        if (mine.length > 0) {
          t.deletedFound++;
          o.violations.add("search-deleted-found", `${p.room}: deleted seq ${p.seq} is found by ${p.token}`);
        }
      } else if (mine.length === 0) {
        t.searchMissing++;
        o.violations.add("search-missing", `${p.room}: seq ${p.seq} (${p.token}) is not found`);
      } else if (mine.length > 1 || mine[0]?.room !== p.room || mine[0]?.seq !== p.seq) {
        t.searchDuplicated++;
        o.violations.add("search-duplicated", `${p.room}: ${p.token} found as ${show(mine)}`);
      }
    }
  }
  return t;
}
