/**
 * @module The room's cold archive: older ranges of the log as gzip-compressed NDJSON segments in R2
 * (one event JSON per line), so the object's SQLite stays bounded however long the room lives.
 *
 * Invariants:
 * - A range moves only once the archive has confirmed it (it has left the outbox) and only while
 *   at least `hotEvents` newer events stay in SQLite, so replays never read R2.
 * - A moved event keeps its row with `json = ''`: seq, kind, author, clientId, target, flags,
 *   digest and chain stay, so idempotency, command rules and the hash chain hold without R2.
 * - Readers apply the row's flags to the segment's line: a message deleted after its range moved
 *   is served scrubbed at once; the segment is marked dirty and rewritten without the text (and
 *   without expired events, whose tombstones live in SQLite) by the next alarm.
 */
import type { Limits } from "../config/limits.ts";
import { scrubbedJson } from "./room-log.ts";

interface Segment {
  from: number;
  to: number;
  key: string;
  dirty: number;
}

/** Cached decoded segments: history paging reads the same segment page after page. */
const CACHE_SEGMENTS = 4;

export class ColdArchive {
  readonly #storage: DurableObjectStorage;
  readonly #sql: SqlStorage;
  readonly #bucket: () => R2Bucket;
  readonly #cache = new Map<string, Map<number, string>>();

  constructor(storage: DurableObjectStorage, bucket: () => R2Bucket) {
    this.#storage = storage;
    this.#sql = storage.sql;
    this.#bucket = bucket;
  }

  /** The highest seq moved to R2 (0 when none). */
  get coldSeq(): number {
    const v = this.#sql
      .exec<{ value: string }>("SELECT value FROM meta WHERE key = 'cold_seq'")
      .toArray()[0]?.value;
    return Number(v ?? 0);
  }

  /** The next range that may move, or null. */
  nextRange(limits: Limits, archivedThrough: number, lastSeq: number): { from: number; to: number } | null {
    const from = this.coldSeq + 1;
    const to = from + limits.segmentEvents - 1;
    if (to > archivedThrough || to > lastSeq - limits.hotEvents) return null;
    return { from, to };
  }

  /**
   * Writes one range to R2 and then, in one transaction, records the segment and empties the rows'
   * JSON. Events scrubbed or expired while the upload ran mark the new segment dirty.
   */
  async move(range: { from: number; to: number }, keyPrefix: string): Promise<void> {
    const rows = this.#sql
      .exec<{ seq: number; json: string; kind: string }>(
        "SELECT seq, json, kind FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq",
        range.from,
        range.to,
      )
      .toArray()
      .filter((r) => r.kind !== "expired");
    const key = `${keyPrefix}/segments/${String(range.from).padStart(12, "0")}-${range.to}.ndjson.gz`;
    await this.#bucket().put(key, await gzip(rows.map((r) => r.json)), {
      httpMetadata: { contentType: "application/x-ndjson", contentEncoding: "gzip" },
      customMetadata: { from: String(range.from), to: String(range.to) },
    });
    const written = new Map(rows.map((r) => [r.seq, r.json]));
    this.#storage.transactionSync(() => {
      let changed = 0;
      for (const row of this.#sql
        .exec<{ seq: number; json: string }>(
          "SELECT seq, json FROM events WHERE seq >= ? AND seq <= ?",
          range.from,
          range.to,
        )
        .toArray()) {
        if (written.has(row.seq) && written.get(row.seq) !== row.json) changed += 1;
      }
      this.#sql.exec(
        "INSERT INTO segments (from_seq, to_seq, object_key, dirty) VALUES (?, ?, ?, ?)",
        range.from,
        range.to,
        key,
        changed,
      );
      this.#sql.exec(
        "UPDATE events SET json = '' WHERE seq >= ? AND seq <= ? AND kind != 'expired'",
        range.from,
        range.to,
      );
      this.#sql.exec(
        "INSERT INTO meta (key, value) VALUES ('cold_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        String(range.to),
      );
    });
  }

  hasDirty(): boolean {
    return this.#sql.exec("SELECT 1 FROM segments WHERE dirty > 0 LIMIT 1").toArray().length > 0;
  }

  /**
   * Rewrites one dirty segment from the rows' current state: deleted events scrubbed, expired ones
   * left out; a segment with no cold event left is deleted. Returns whether there was one.
   */
  async rewriteOneDirty(): Promise<boolean> {
    const seg = this.#segments(
      "SELECT from_seq, to_seq, object_key, dirty FROM segments WHERE dirty > 0 LIMIT 1",
    )[0];
    if (!seg) return false;
    const lines = await this.#load(seg);
    const rows = this.#coldRows(seg.from, seg.to);
    const kept = rows.map((r) => {
      const line = lines.get(r.seq);
      if (line === undefined) throw new Error(`segment ${seg.key} lacks event ${r.seq}`);
      return r.deleted ? scrubbedJson(line) : line;
    });
    if (kept.length === 0) await this.#bucket().delete(seg.key);
    else await this.#bucket().put(seg.key, await gzip(kept), { httpMetadata: { contentEncoding: "gzip" } });
    this.#cache.delete(seg.key);
    // Dirtied again while this ran: leave it dirty for the next pass.
    if (kept.length === 0) {
      this.#sql.exec("DELETE FROM segments WHERE from_seq = ? AND dirty = ?", seg.from, seg.dirty);
    } else {
      this.#sql.exec("UPDATE segments SET dirty = 0 WHERE from_seq = ? AND dirty = ?", seg.from, seg.dirty);
    }
    return true;
  }

  /** Fills in the JSON of cold rows (json ''), reading their segments; deleted ones come back
   * scrubbed even before their segment is rewritten. */
  async fill<T extends { seq: number; json: string; deleted: boolean }>(rows: T[]): Promise<T[]> {
    const cold = rows.filter((r) => r.json === "");
    if (cold.length === 0) return rows;
    const first = cold[0]?.seq ?? 0;
    const last = cold.at(-1)?.seq ?? 0;
    const segments = this.#segments(
      "SELECT from_seq, to_seq, object_key, dirty FROM segments WHERE to_seq >= ? AND from_seq <= ? ORDER BY from_seq",
      first,
      last,
    );
    const lines = new Map<number, string>();
    for (const seg of segments) for (const [seq, json] of await this.#load(seg)) lines.set(seq, json);
    return rows.map((r) => {
      if (r.json !== "") return r;
      const line = lines.get(r.seq);
      if (line === undefined) throw new Error(`event ${r.seq} is in no cold segment`);
      return { ...r, json: r.deleted ? scrubbedJson(line) : line };
    });
  }

  /** Deletes every segment object (the room is being erased). */
  async deleteAll(): Promise<void> {
    for (const seg of this.#segments("SELECT from_seq, to_seq, object_key, dirty FROM segments")) {
      await this.#bucket().delete(seg.key);
    }
  }

  #coldRows(from: number, to: number): { seq: number; deleted: boolean }[] {
    return this.#sql
      .exec<{ seq: number; deleted: number }>(
        "SELECT seq, deleted FROM events WHERE seq >= ? AND seq <= ? AND json = '' ORDER BY seq",
        from,
        to,
      )
      .toArray()
      .map((r) => ({ seq: r.seq, deleted: r.deleted === 1 }));
  }

  #segments(query: string, ...params: SqlStorageValue[]): Segment[] {
    return this.#sql
      .exec<{ from_seq: number; to_seq: number; object_key: string; dirty: number }>(query, ...params)
      .toArray()
      .map((r) => ({ from: r.from_seq, to: r.to_seq, key: r.object_key, dirty: r.dirty }));
  }

  async #load(seg: Segment): Promise<Map<number, string>> {
    const cached = this.#cache.get(seg.key);
    if (cached) return cached;
    const object = await this.#bucket().get(seg.key);
    if (!object) throw new Error(`cold segment ${seg.key} is missing from R2`);
    const text = await new Response(object.body.pipeThrough(new DecompressionStream("gzip"))).text();
    const lines = new Map<number, string>();
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const seq = (JSON.parse(line) as { seq: number }).seq;
      lines.set(seq, line);
    }
    this.#cache.set(seg.key, lines);
    while (this.#cache.size > CACHE_SEGMENTS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
    return lines;
  }
}

async function gzip(lines: readonly string[]): Promise<ArrayBuffer> {
  const body = new Blob([lines.join("\n"), "\n"]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Response(body).arrayBuffer();
}
