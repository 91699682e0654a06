/**
 * @module The SearchShard Durable Object: full-text search of a tenant's messages in FTS5, in the
 * object's own SQLite (docs/architecture.md, decision 1). A tenant's rooms are spread over `parts`
 * parts by a hash of the room id; a part is one or more generations of this object, named
 * `<tenant>:search:<part>:<gen>`. Generation 0 coordinates its part: rooms send it what they
 * commit, the worker sends it queries, and it keeps the part's layout (and, for part 0, the
 * tenant's number of parts).
 *
 * Invariants:
 * - A message is in exactly one generation: new messages go to the newest, which takes them until
 *   it holds `searchShardMessages`; then the coordinator opens the next. Older generations only
 *   answer queries and apply edits, deletions and retention.
 * - Every operation is idempotent: a message is keyed by (room, seq); an edit applies only over an
 *   older text (`text_seq`); deleting or expiring what is not there does nothing. A room resends a
 *   range after a failure, and everything it sends in order stays correct when repeated.
 * - Deleted and expired messages leave the index: what is not searchable is not stored.
 */
import { DurableObject } from "cloudflare:workers";
import { limitsOf } from "../config/limits.ts";
import { tenantNamespace } from "../platform/residency.ts";
import { type Failure, failure, type UserRef } from "../protocol/index.ts";
import { migrate } from "./schema.ts";

/** What a room sends for one event that changes the index. */
export type SearchOp =
  | { op: "put"; seq: number; ts: number; author: UserRef; text: string }
  | { op: "edit"; seq: number; target: number; text: string }
  | { op: "delete"; target: number };

/** Which object this is. */
export interface ShardAddress {
  tenantId: string;
  part: number;
  gen: number;
}

export interface SearchQuery {
  /** The FTS5 query, as the caller typed it. */
  q: string;
  /** The rooms of this part the caller may read now (never empty). */
  rooms: string[];
  author?: string;
  from?: number;
  to?: number;
  limit: number;
}

/** A hit as a shard returns it: `snippet` still carries the raw text around `SNIPPET_OPEN` and
 * `SNIPPET_CLOSE` markers (the worker escapes it), `rank` is bm25 (lower is better). */
export interface ShardHit {
  room: string;
  seq: number;
  text: string;
  author: UserRef;
  ts: number;
  snippet: string;
  rank: number;
}

/** What the coordinator asks of each generation of its part. */
interface Generation {
  apply(roomId: string, ops: SearchOp[]): Promise<{ left: number[] }>;
  expireLocal(roomId: string, throughSeq: number): Promise<{ removed: number }>;
  searchLocal(query: SearchQuery): Promise<{ ok: true; hits: ShardHit[] } | Failure>;
}

/** Match markers: private-use characters that cannot survive into output unescaped, so the worker
 * can escape the text and then turn the markers into `<mark>`. */
export const SNIPPET_OPEN = "\uE000";
export const SNIPPET_CLOSE = "\uE001";

const MIGRATIONS = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE docs (
     id INTEGER PRIMARY KEY,
     room TEXT NOT NULL,
     seq INTEGER NOT NULL,
     author_id TEXT NOT NULL,
     author_name TEXT NOT NULL,
     ts INTEGER NOT NULL,
     text TEXT NOT NULL,
     text_seq INTEGER NOT NULL
   );
   CREATE UNIQUE INDEX docs_room_seq ON docs(room, seq);
   CREATE VIRTUAL TABLE docs_fts USING fts5(
     text, content='docs', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
   );
   CREATE TRIGGER docs_insert AFTER INSERT ON docs BEGIN
     INSERT INTO docs_fts(rowid, text) VALUES (new.id, new.text);
   END;
   CREATE TRIGGER docs_delete AFTER DELETE ON docs BEGIN
     INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.id, old.text);
   END;
   CREATE TRIGGER docs_text AFTER UPDATE OF text ON docs BEGIN
     INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.id, old.text);
     INSERT INTO docs_fts(rowid, text) VALUES (new.id, new.text);
   END;`,
];

/** FTS5 reports bad query syntax through these messages: the caller's mistake, never a 500. */
const BAD_SYNTAX = /fts5|syntax error|unterminated|no such column|unknown special query|malformed match/i;

/** A part a room belongs to: FNV-1a of its id (the same spread as presence shards). */
export function partOf(roomId: string, parts: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < roomId.length; i++) {
    h ^= roomId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % parts;
}

export function searchStub(env: Env, at: ShardAddress) {
  const namespace = tenantNamespace(env, env.SEARCH, at.tenantId);
  return namespace.get(namespace.idFromName(`${at.tenantId}:search:${at.part}:${at.gen}`));
}

export class SearchShard extends DurableObject<Env> {
  readonly #sql: SqlStorage;
  /** Messages in this generation: counted once per instance (one pass over the smallest index),
   * then kept as puts, deletions and retention change it; null until counted. */
  #docs: number | null = null;
  readonly #metaCache = new Map<string, string | null>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    migrate(ctx.storage, MIGRATIONS);
  }

  // ---- RPC: the tenant's layout (part 0, generation 0) ----------------------------------------

  /** The tenant's number of parts: fixed by the first caller (from the deployment's setting then),
   * so rooms and queries agree on it for the tenant's whole life even if the setting changes. */
  layout(at: ShardAddress, defaultParts: number): { parts: number } {
    this.#claim(at);
    const stored = this.#meta("parts");
    if (stored !== null) return { parts: Number(stored) };
    this.#setMeta("parts", String(defaultParts));
    return { parts: defaultParts };
  }

  // ---- RPC: coordinator (generation 0 of a part) ----------------------------------------------

  /**
   * Applies a room's operations, in order. New messages go to the newest generation (opening the
   * next when it is full); edits and deletions go to every generation, since a message is in
   * exactly one of them and the room does not know which.
   */
  async index(at: ShardAddress, roomId: string, ops: SearchOp[]): Promise<{ ok: true }> {
    this.#claim(at);
    const mods = ops.filter((o) => o.op !== "put");
    let newest = this.#newestGen();
    if (mods.length > 0) {
      await Promise.all(
        Array.from({ length: newest }, (_, gen) => this.#generation(at, gen).apply(roomId, mods)),
      );
    }
    let remaining = ops;
    for (;;) {
      const { left } = await this.#generation(at, newest).apply(roomId, remaining);
      if (left.length === 0) return { ok: true };
      // The newest generation is full: the puts it did not take, with every edit and deletion (a
      // later one may be of a message just put), go to the next.
      newest += 1;
      this.#setMeta("newest_gen", String(newest));
      const leftSeqs = new Set(left);
      remaining = remaining.filter((o) => o.op !== "put" || leftSeqs.has(o.seq));
    }
  }

  /** Retention: the room's events up to `throughSeq` leave every generation of the part. */
  async expire(at: ShardAddress, roomId: string, throughSeq: number): Promise<{ ok: true }> {
    this.#claim(at);
    await Promise.all(
      Array.from({ length: this.#newestGen() + 1 }, (_, gen) =>
        this.#generation(at, gen).expireLocal(roomId, throughSeq),
      ),
    );
    return { ok: true };
  }

  /** The best `limit` hits of every generation of the part, merged by rank. */
  async search(at: ShardAddress, query: SearchQuery): Promise<{ ok: true; hits: ShardHit[] } | Failure> {
    this.#claim(at);
    const results = await Promise.all(
      Array.from({ length: this.#newestGen() + 1 }, (_, gen) => this.#generation(at, gen).searchLocal(query)),
    );
    const hits: ShardHit[] = [];
    for (const result of results) {
      if (!result.ok) return result;
      hits.push(...result.hits);
    }
    return { ok: true, hits: hits.sort((a, b) => a.rank - b.rank).slice(0, query.limit) };
  }

  // ---- RPC: one generation --------------------------------------------------------------------

  /**
   * Applies operations to this generation in one transaction: edits and deletions always, puts
   * while it has room. Returns the seqs of the puts it did not take (in order), for the next
   * generation.
   */
  apply(roomId: string, ops: SearchOp[]): { left: number[] } {
    const capacity = limitsOf(this.env).searchShardMessages;
    const result = this.ctx.storage.transactionSync(() => {
      let count = this.#count();
      const left: number[] = [];
      for (const op of ops) {
        switch (op.op) {
          case "put": {
            if (left.length > 0 || count >= capacity) {
              left.push(op.seq);
              break;
            }
            const inserted = this.#sql.exec(
              `INSERT INTO docs (room, seq, author_id, author_name, ts, text, text_seq)
               VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room, seq) DO NOTHING`,
              roomId,
              op.seq,
              op.author.id,
              op.author.name,
              op.ts,
              op.text,
              op.seq,
            ).rowsWritten;
            if (inserted > 0) count += 1;
            break;
          }
          case "edit":
            this.#sql.exec(
              "UPDATE docs SET text = ?, text_seq = ? WHERE room = ? AND seq = ? AND text_seq < ?",
              op.text,
              op.seq,
              roomId,
              op.target,
              op.seq,
            );
            break;
          case "delete":
            count -= this.#sql.exec("DELETE FROM docs WHERE room = ? AND seq = ?", roomId, op.target)
              .rowsWritten
              ? 1
              : 0;
            break;
        }
      }
      return { count, left };
    });
    // Kept in memory only once the transaction has committed (a write per call would be a row
    // per flush, billed).
    this.#docs = result.count;
    return { left: result.left };
  }

  expireLocal(roomId: string, throughSeq: number): { removed: number } {
    const result = this.ctx.storage.transactionSync(() => {
      const removed = this.#sql.exec(
        "DELETE FROM docs WHERE room = ? AND seq <= ?",
        roomId,
        throughSeq,
      ).rowsWritten;
      return { removed };
    });
    // rowsWritten counts the FTS index's writes too: recount (on the next use) rather than subtract.
    this.#docs = null;
    return result;
  }

  searchLocal(query: SearchQuery): { ok: true; hits: ShardHit[] } | Failure {
    const where = ["docs_fts MATCH ?", "d.room IN (SELECT value FROM json_each(?))"];
    const params: (string | number)[] = [query.q, JSON.stringify(query.rooms)];
    if (query.author !== undefined) {
      where.push("d.author_id = ?");
      params.push(query.author);
    }
    if (query.from !== undefined) {
      where.push("d.ts >= ?");
      params.push(query.from);
    }
    if (query.to !== undefined) {
      where.push("d.ts <= ?");
      params.push(query.to);
    }
    try {
      // CROSS JOIN pins the order: the FTS match first, then its rows by rowid (left to the
      // planner, SQLite may scan docs and probe the index per row).
      const rows = this.#sql
        .exec<{
          room: string;
          seq: number;
          text: string;
          author_id: string;
          author_name: string;
          ts: number;
          snippet: string;
          rank: number;
        }>(
          `SELECT d.room, d.seq, d.text, d.author_id, d.author_name, d.ts,
                  snippet(docs_fts, 0, '${SNIPPET_OPEN}', '${SNIPPET_CLOSE}', '…', 16) AS snippet,
                  bm25(docs_fts) AS rank
           FROM docs_fts CROSS JOIN docs d ON d.id = docs_fts.rowid
           WHERE ${where.join(" AND ")}
           ORDER BY rank LIMIT ?`,
          ...params,
          query.limit,
        )
        .toArray();
      return {
        ok: true,
        hits: rows.map((r) => ({
          room: r.room,
          seq: r.seq,
          text: r.text,
          author: { id: r.author_id, name: r.author_name },
          ts: r.ts,
          snippet: r.snippet,
          rank: r.rank,
        })),
      };
    } catch (err) {
      if (BAD_SYNTAX.test(String(err)))
        return failure("bad_request", "q is not a valid search: quote words with special characters");
      throw err;
    }
  }

  /** How full this generation is (tests, operators, the bench). */
  stats(): { messages: number; newestGen: number; bytes: number } {
    return {
      messages: this.#count(),
      newestGen: this.#newestGen(),
      bytes: this.ctx.storage.sql.databaseSize,
    };
  }

  // ---- helpers ---------------------------------------------------------------------------------

  /** Records which object this is on first use, and refuses to be used as another. */
  #claim(at: ShardAddress): void {
    const name = `${at.tenantId}:${at.part}:${at.gen}`;
    const stored = this.#meta("address");
    if (stored === null) this.#setMeta("address", name);
    else if (stored !== name) throw new Error(`search shard ${stored} addressed as ${name}`);
  }

  /** One generation of this part: this object itself, or another through RPC. */
  #generation(at: ShardAddress, gen: number): Generation {
    if (gen === at.gen) {
      return {
        apply: async (roomId, ops) => this.apply(roomId, ops),
        expireLocal: async (roomId, through) => this.expireLocal(roomId, through),
        searchLocal: async (query) => this.searchLocal(query),
      };
    }
    const stub = searchStub(this.env, { ...at, gen });
    return {
      apply: async (roomId, ops) => ({ left: [...(await stub.apply(roomId, ops)).left] }),
      expireLocal: async (roomId, through) => ({
        removed: (await stub.expireLocal(roomId, through)).removed,
      }),
      searchLocal: async (query) => {
        const result = await stub.searchLocal(query);
        return result.ok
          ? { ok: true, hits: result.hits.map((h) => ({ ...h, author: { ...h.author } })) }
          : result;
      },
    };
  }

  #newestGen(): number {
    return Number(this.#meta("newest_gen") ?? 0);
  }

  #count(): number {
    this.#docs ??= this.#sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM docs").one().n;
    return this.#docs;
  }

  /** Read once per instance: only this object writes its meta rows (`#setMeta`, never inside a
   * transaction that could roll back), and every index call reads its address and newest generation. */
  #meta(key: string): string | null {
    let value = this.#metaCache.get(key);
    if (value === undefined) {
      value =
        this.#sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value ??
        null;
      this.#metaCache.set(key, value);
    }
    return value;
  }

  #setMeta(key: string, value: string): void {
    this.#sql.exec(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
    this.#metaCache.set(key, value);
  }
}
