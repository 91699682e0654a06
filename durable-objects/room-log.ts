/**
 * @module The room's ordered event log and membership, in the room object's own SQLite.
 *
 * Invariants:
 * - `seq` is assigned 1, 2, 3… with no gaps, inside the same transaction as the idempotency check
 *   on (author, clientId): a command either commits once with the next seq or creates nothing.
 * - Each event is stored as the exact JSON sent to clients, so replay concatenates strings.
 * - A deleted message keeps its seq; its text (and the text of its edits) is scrubbed.
 * - Every event has a digest and a chain link (protocol/chain.ts), written with it, never changed.
 *   Events appended since schema v6 use digest scheme 2: their nonce, content hash and metadata
 *   hash are stored beside the digest; redaction destroys the nonce (deletion) or the nonce and the
 *   content hash (retention), never the layers a tombstone is checked from. Older events keep
 *   scheme 1 (`scheme` = 1); `meta.scheme1` lists their seq ranges for signed heads.
 * - The derived stores (search, the D1 history) are shipped to by watermark: every event through a
 *   store's watermark is confirmed there (room-search.ts, room-archive.ts).
 * - Every event is sealed into a segment in R2 soon after it is appended (room-cold.ts), with its
 *   commitments. Past the hot window its row keeps `json = ''` (a slim row: seq, kind, author,
 *   clientId, target, flags, digest, chain, commitments), so idempotency and command rules hold
 *   without R2. Past the command window (`floor`) it has no row at all: its segment is its copy
 *   of record, and reactions and mentions of it go with the row.
 * - An expired event (retention) becomes a tombstone: kind `expired`, no content, same seq.
 */
import { chainNext, commit, type ExportRow, GENESIS, mergeRanges, type RoomHead } from "../protocol/chain.ts";
import { isRole, RETENTION_AUTHOR, type Role, type RoomEvent } from "../protocol/index.ts";
import { MARKERS_PER_PAGE, ROOM_MIGRATIONS } from "./room-schema.ts";
import { migrate } from "./schema.ts";

/** What the room keeps about its derived stores. Search (room-search.ts): `search_indexed` and
 * `search_expired`, the seqs through which its part has its events and its retention, and
 * `search_parts`, the tenant's number of parts. The D1 history (room-archive.ts): the seqs through
 * which events and retention's tombstones are confirmed, were sent, and when. */
export type ShipKey =
  | "search_indexed"
  | "search_expired"
  | "search_parts"
  | "archive_confirmed"
  | "archive_sent"
  | "archive_sent_at"
  | "archive_expired"
  | "archive_expire_sent"
  | "archive_expire_sent_at";

/** The watermarks `setCounter` writes behind, together in one meta row (`WATERMARKS_KEY`, a JSON
 * object), and how long at most it waits to write them. */
export const WRITTEN_BEHIND: readonly ShipKey[] = [
  "search_indexed",
  "archive_confirmed",
  "archive_sent",
  "archive_sent_at",
];
export const WATERMARKS_KEY = "watermarks";
const COUNTERS_WRITE_MS = 1000;

export interface RoomMeta {
  tenantId: string;
  roomId: string;
  name: string;
  kind: string;
}

export interface Member {
  id: string;
  name: string;
  role: Role;
}

/** What a stored message looks like to the command rules. */
export interface TargetRow {
  seq: number;
  kind: string;
  authorId: string;
  threadRoot: number | null;
  deleted: boolean;
}

/** An event about to be appended: everything but the seq, which the log assigns. */
export type NewEvent = RoomEvent extends infer E ? (E extends RoomEvent ? Omit<E, "seq"> : never) : never;

export interface AppendExtras {
  /** Users mentioned by a message, recorded for unread-mention counts. */
  mentions?: string[];
  /** Extra writes that must commit atomically with the event (membership, reactions, scrubs). */
  apply?: (seq: number) => void;
}

/** An event as the log stores it, with its commitment (protocol/chain.ts): `json` is '' for a
 * slim row (past the hot window: room-cold.ts fills it in from the event's segment). The same shape
 * comes back from a segment for an event older than the command window. */
export interface StoredRow extends ExportRow {
  deleted: boolean;
  /** The event's target (edit, delete, reaction), else null. */
  target: number | null;
}

/** A message or edit with its text (and a message's attachments) removed, marked deleted. */
export function scrubbedJson(json: string): string {
  const event = JSON.parse(json) as RoomEvent;
  if (event.kind === "message" || event.kind === "edit") {
    event.text = "";
    event.deleted = true;
    if (event.kind === "message") delete event.attachments;
  }
  return JSON.stringify(event);
}

/** What retention leaves of an event (protocol: ExpiredEvent). */
export function tombstoneJson(seq: number, ts: number): string {
  return JSON.stringify({ seq, kind: "expired", ts, author: RETENTION_AUTHOR } satisfies RoomEvent);
}

export type AppendResult = { created: true; seq: number; json: string } | { created: false; seq: number };

export class RoomLog {
  readonly #sql: SqlStorage;
  readonly #storage: DurableObjectStorage;
  #lastSeq: number;
  #chain = GENESIS;
  /** Messages through `lastSeq` (the last row's `msgs`). */
  #msgs = 0;
  /** Every event through this seq has no row (older than the command window): mirrors
   * `meta.floor_seq`, which only `pruneThrough` moves. */
  #floor = 0;
  #members: Map<string, Member> | null = null;
  /** Read markers by page, as `read_pages` holds them (loaded when first needed). */
  #markers: { pages: Map<number, Map<string, number>>; pageOf: Map<string, number> } | null = null;
  /** The room's tenant, id, name and kind, read on every command: loaded on first use
   * (`undefined` until then), written through by `setMeta`, forgotten on a rollback (`#reload`). */
  #roomMeta: RoomMeta | null | undefined = undefined;
  /** `meta.expired_seq`, read on every search and inbox send: loaded on first use, written through
   * by `#setExpiredThrough`, forgotten on a rollback (`#reload`). */
  #expiredThrough: number | undefined = undefined;
  /** Counters as last read or set (see `setCounter`), and the watermarks not written yet. */
  readonly #counters = new Map<ShipKey, number>();
  readonly #dirtyCounters = new Set<ShipKey>();
  #countersTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
    this.#sql = storage.sql;
    migrate(this.#storage, ROOM_MIGRATIONS);
    this.#lastSeq = 0;
    this.#reload();
    this.#reconcile();
  }

  /**
   * Brings what signed heads state up to date with events this code did not write: at the first
   * start after schema v6, the events already there; after a rollback to an older release, what it
   * appended and expired meanwhile (it knows nothing of schemes). Scheme-1 events past the last
   * check join `meta.scheme1`; tombstones past the last check raise `expired_before` above their
   * dates. Reads only the rows appended (or expired) since the previous start.
   */
  #reconcile(): void {
    const checked = Number(this.#metaValue("checked_seq") ?? 0);
    const expiredSeq = this.expiredThrough;
    const expiredChecked = Number(this.#metaValue("expired_checked") ?? 0);
    if (checked >= this.#lastSeq && expiredChecked >= expiredSeq) return;
    this.#storage.transactionSync(() => {
      if (checked < this.#lastSeq) {
        // Runs of consecutive seqs (gaps and islands): seq minus its rank is constant along a run.
        const runs = this.#sql
          .exec<{ f: number; t: number }>(
            "SELECT MIN(seq) AS f, MAX(seq) AS t FROM (SELECT seq, seq - ROW_NUMBER() OVER (ORDER BY seq) AS g FROM events WHERE seq > ? AND scheme = 1) GROUP BY g ORDER BY f",
            checked,
          )
          .toArray()
          .map((r) => [r.f, r.t]);
        if (runs.length > 0)
          this.#setMetaValue("scheme1", JSON.stringify(mergeRanges(this.#scheme1(), runs)));
        this.#setMetaValue("checked_seq", String(this.#lastSeq));
      }
      if (expiredChecked < expiredSeq) {
        const latest = this.#one<{ ts: number | null }>(
          "SELECT MAX(ts) AS ts FROM events WHERE seq > ? AND seq <= ? AND kind = 'expired'",
          expiredChecked,
          expiredSeq,
        )?.ts;
        if (typeof latest === "number" && latest + 1 > Number(this.#metaValue("expired_before") ?? 0)) {
          this.#setMetaValue("expired_before", String(latest + 1));
        }
        this.#setMetaValue("expired_checked", String(expiredSeq));
      }
    });
  }

  #scheme1(): number[][] {
    return JSON.parse(this.#metaValue("scheme1") ?? "[]") as number[][];
  }

  #one<T extends Record<string, SqlStorageValue>>(
    query: string,
    ...params: SqlStorageValue[]
  ): T | undefined {
    const rows = this.#sql.exec<T>(query, ...params).toArray();
    return rows[0];
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  /** The chain link of the last event: the log's running hash (GENESIS when empty). */
  get head(): { seq: number; chain: string } {
    return { seq: this.#lastSeq, chain: this.#chain };
  }

  /** Events through this seq are older than the command window and have no row: their segments in
   * R2 are their copy of record (room-cold.ts). 0 until the window first moves on. */
  get floor(): number {
    return this.#floor;
  }

  /**
   * Drops the rows of every event through `seq` (older than the command window, each sealed into a
   * clean segment: the caller, room-cold.ts, checks), and the reactions and mentions of those
   * events, and records the new floor. Idempotent; never moves the floor back.
   */
  pruneThrough(seq: number): void {
    this.transaction(() => {
      if (seq <= this.#floor) return;
      this.#sql.exec("DELETE FROM events WHERE seq > ? AND seq <= ?", this.#floor, seq);
      this.#sql.exec("DELETE FROM reactions WHERE target <= ?", seq);
      this.#sql.exec("DELETE FROM mentions WHERE seq <= ?", seq);
      this.#setMetaValue("floor_seq", String(seq));
      this.#floor = seq;
    });
  }

  // ---- shipping to the derived stores (docs/architecture.md, decision 2) ----------------------

  /** A number the room keeps about its derived stores (a watermark: every event through it is
   * confirmed there; or a cached setting), 0 when never set. */
  counter(key: ShipKey): number {
    let value = this.#counters.get(key);
    if (value === undefined && WRITTEN_BEHIND.includes(key)) {
      // The watermarks share a row: reading one reads them all (those set since stay as set).
      const stored = JSON.parse(this.#metaValue(WATERMARKS_KEY) ?? "{}") as Partial<Record<ShipKey, number>>;
      for (const k of WRITTEN_BEHIND) if (!this.#counters.has(k)) this.#counters.set(k, stored[k] ?? 0);
      value = this.#counters.get(key);
    }
    if (value === undefined) {
      value = Number(this.#metaValue(key) ?? 0);
      this.#counters.set(key, value);
    }
    return value;
  }

  /**
   * Sets a counter. A watermark (`WRITTEN_BEHIND`) is kept in memory and written at most once per
   * `COUNTERS_WRITE_MS`, not per send: a row per flush is most of what a quiet room writes per
   * message. What a crash loses is at most that long of progress, which the room then sends again
   * (both stores apply a resend idempotently). Other counters are written at once.
   */
  setCounter(key: ShipKey, value: number): void {
    this.#counters.set(key, value);
    if (!WRITTEN_BEHIND.includes(key)) {
      this.#setMetaValue(key, String(value));
      return;
    }
    this.#dirtyCounters.add(key);
    this.#countersTimer ??= setTimeout(() => this.writeCounters(), COUNTERS_WRITE_MS);
  }

  /** Writes the watermarks, if one changed since the last write: one row for all of them. From then
   * on counters are read from storage again (once), so what storage holds is what the room goes by. */
  writeCounters(): void {
    if (this.#countersTimer) clearTimeout(this.#countersTimer);
    this.#countersTimer = null;
    if (this.#dirtyCounters.size === 0) {
      this.#counters.clear();
      return;
    }
    const values = Object.fromEntries(WRITTEN_BEHIND.map((key) => [key, this.counter(key)]));
    this.#dirtyCounters.clear();
    this.#counters.clear();
    try {
      this.transaction(() => this.#setMetaValue(WATERMARKS_KEY, JSON.stringify(values)));
    } catch {
      // Not written: the stored watermarks stay older, so the room sends that much again.
    }
  }

  /** Retention has turned every event through this seq into a tombstone (or found it so). */
  get expiredThrough(): number {
    this.#expiredThrough ??= Number(this.#metaValue("expired_seq") ?? 0);
    return this.#expiredThrough;
  }

  // ---- room metadata -----------------------------------------------------------------------

  meta(): RoomMeta | null {
    if (this.#roomMeta === undefined) {
      const m = Object.fromEntries(
        this.#sql
          .exec<{ key: string; value: string }>(
            "SELECT key, value FROM meta WHERE key IN ('tenantId', 'roomId', 'name', 'kind')",
          )
          .toArray()
          .map((r) => [r.key, r.value]),
      );
      this.#roomMeta =
        m.tenantId && m.roomId
          ? { tenantId: m.tenantId, roomId: m.roomId, name: m.name ?? "", kind: m.kind ?? "channel" }
          : null;
    }
    return this.#roomMeta === null ? null : { ...this.#roomMeta };
  }

  setMeta(meta: RoomMeta): void {
    this.transaction(() => {
      for (const [key, value] of Object.entries(meta)) {
        this.#sql.exec(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          key,
          value,
        );
      }
      this.#roomMeta = { ...meta };
    });
  }

  /** The tenant's retention policy as this room applies it: days to keep, or null for forever. */
  get retentionDays(): number | null {
    const v = this.#metaValue("retention_days");
    return v ? Number(v) : null;
  }

  set retentionDays(days: number | null) {
    this.transaction(() => this.#setMetaValue("retention_days", days === null ? "" : String(days)));
  }

  // ---- the log -----------------------------------------------------------------------------

  /** The seq an author's earlier command with this clientId created, if any. */
  seqForClientId(authorId: string, clientId: string): number | undefined {
    return this.#one<{ seq: number }>(
      "SELECT seq FROM events WHERE author_id = ? AND client_id = ?",
      authorId,
      clientId,
    )?.seq;
  }

  /** Runs `fn` as one SQLite transaction: everything it writes commits together, or nothing does.
   * On a rollback the in-memory mirrors (lastSeq, members) are reloaded, so they never run ahead of
   * what was committed, however deeply transactions nest. */
  transaction<T>(fn: () => T): T {
    try {
      return this.#storage.transactionSync(fn);
    } catch (err) {
      this.#reload();
      throw err;
    }
  }

  #reload(): void {
    this.#roomMeta = undefined;
    this.#expiredThrough = undefined;
    // A rolled-back transaction may have set counters: read them again (a watermark read back
    // older than it was only makes the room send something again).
    this.#counters.clear();
    this.#dirtyCounters.clear();
    const last = this.#one<{ seq: number; chain: string; msgs: number }>(
      "SELECT seq, chain, msgs FROM events ORDER BY seq DESC LIMIT 1",
    );
    this.#lastSeq = last?.seq ?? 0;
    this.#chain = last?.chain || GENESIS;
    this.#msgs = last?.msgs ?? 0;
    this.#floor = Number(this.#metaValue("floor_seq") ?? 0);
    this.#members = null;
    this.#markers = null;
  }

  /**
   * Appends one event with the next seq. The insert and `extras.apply` commit together or not at
   * all (then `lastSeq` is unchanged). For events that cannot repeat one (joins, leaves, room
   * updates): a second event with the same (author, clientId) throws and changes nothing.
   */
  append(event: NewEvent, extras: AppendExtras = {}): AppendResult & { created: true } {
    const result = this.#append(event, extras);
    if (!result.created) throw new Error(`clientId ${event.clientId} already has event ${result.seq}`);
    return result;
  }

  /**
   * Appends a client's command event, unless its author already has an event with this clientId:
   * then nothing is written and the answer is that event's seq (`created: false`). The unique
   * index on (author, clientId) decides it inside the insert, so a first command, nearly every
   * one, pays no lookup for being new (room-commands.ts runs this in its own transaction).
   */
  appendOnce(event: NewEvent & { clientId: string }, extras: AppendExtras = {}): AppendResult {
    return this.#append(event, extras);
  }

  #append(event: NewEvent, extras: AppendExtras): AppendResult {
    return this.transaction(() => {
      const seq = this.#lastSeq + 1;
      const full = { seq, ...event } as RoomEvent;
      // A user in an event is exactly {id, name}, the form its commitment binds (protocol/chain.ts):
      // a caller's richer object (a member with its role) puts nothing more into the log.
      full.author = { id: full.author.id, name: full.author.name };
      if (full.kind === "member_join" || full.kind === "member_leave") {
        full.user = { id: full.user.id, name: full.user.name };
      }
      const json = JSON.stringify(full);
      const target = "target" in full ? full.target : null;
      const threadRoot = full.kind === "message" ? (full.threadRoot ?? null) : null;
      const { nonce, contentHash, metaHash, digest } = commit(full);
      const chain = chainNext(this.#chain, seq, digest);
      const msgs = this.#msgs + (full.kind === "message" ? 1 : 0);
      const inserted = this.#sql.exec(
        "INSERT INTO events (seq, kind, author_id, client_id, target, thread_root, ts, json, digest, chain, scheme, nonce, content_hash, meta_hash, msgs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 2, ?, ?, ?, ?) ON CONFLICT (author_id, client_id) WHERE client_id IS NOT NULL DO NOTHING",
        seq,
        full.kind,
        full.author.id,
        full.clientId ?? null,
        target,
        threadRoot,
        full.ts,
        json,
        digest,
        chain,
        nonce,
        contentHash,
        metaHash,
        msgs,
      ).rowsWritten;
      if (inserted === 0) {
        const earlier =
          full.clientId === undefined ? undefined : this.seqForClientId(full.author.id, full.clientId);
        if (earlier === undefined) throw new Error(`event ${seq} was not inserted`);
        return { created: false as const, seq: earlier };
      }
      for (const userId of extras.mentions ?? []) {
        this.#sql.exec("INSERT OR IGNORE INTO mentions (user_id, seq) VALUES (?, ?)", userId, seq);
      }
      extras.apply?.(seq);
      // Only after every statement succeeded; an enclosing transaction that rolls back later
      // reloads it (see `transaction`).
      this.#lastSeq = seq;
      this.#chain = chain;
      this.#msgs = msgs;
      return { created: true as const, seq, json };
    });
  }

  target(seq: number): TargetRow | undefined {
    const row = this.#one<{
      seq: number;
      kind: string;
      author_id: string;
      thread_root: number | null;
      deleted: number;
    }>("SELECT seq, kind, author_id, thread_root, deleted FROM events WHERE seq = ?", seq);
    if (!row) return undefined;
    return {
      seq: row.seq,
      kind: row.kind,
      authorId: row.author_id,
      threadRoot: row.thread_root,
      deleted: row.deleted === 1,
    };
  }

  /** What the log knows now, without R2, about an event older than the command window: whether
   * retention has reached it, and whether a delete of it (a message) was appended. A command that
   * read the event from its segment checks this again in its transaction (room-commands.ts). */
  belowFloor(seq: number): { expired: boolean; deleted: boolean } {
    return {
      expired: seq <= this.expiredThrough,
      deleted:
        this.#one("SELECT 1 AS x FROM redactions WHERE seq = ?", seq) !== undefined ||
        this.#one("SELECT 1 AS x FROM events WHERE target = ? AND kind = 'delete'", seq) !== undefined,
    };
  }

  /** Messages deleted while older than the command window whose segments are not all rewritten
   * yet: readers scrub them (and their edits) from the segments' lines meanwhile. */
  redactions(): Set<number> {
    return new Set(
      this.#sql
        .exec<{ seq: number }>("SELECT seq FROM redactions")
        .toArray()
        .map((r) => r.seq),
    );
  }

  /**
   * Removes a message's text (and its edits' text) from the log; the seqs stay, and so does the
   * content hash a tombstone is checked from, while the nonce goes with the text. Call inside
   * `append`. A row's segment is marked for rewriting without the text (room-cold.ts); readers of
   * a slim row apply its flag at once. A message older than the command window has no row: it is
   * recorded in `redactions`, and its segment and the segments holding edits of it (each segment
   * lists the messages its edits target) are marked for rewriting.
   */
  scrubMessage(target: number): void {
    for (const row of this.#sql
      .exec<{ seq: number; json: string }>(
        "SELECT seq, json FROM events WHERE (seq = ? AND kind = 'message') OR (target = ? AND kind = 'edit')",
        target,
        target,
      )
      .toArray()) {
      this.#markSegmentDirty(row.seq);
      this.#sql.exec(
        "UPDATE events SET json = ?, deleted = 1, nonce = NULL WHERE seq = ?",
        row.json === "" ? "" : scrubbedJson(row.json),
        row.seq,
      );
    }
    if (target <= this.#floor) {
      this.#sql.exec("INSERT OR IGNORE INTO redactions (seq) VALUES (?)", target);
      this.#markSegmentDirty(target);
      // Edits of it older than the window: only in segments after its own, up to the floor.
      this.#sql.exec(
        `UPDATE segments SET dirty = dirty + 1 WHERE from_seq > ? AND from_seq <= ?
           AND EXISTS (SELECT 1 FROM json_each(segments.edit_targets) WHERE value = ?)`,
        target,
        this.#floor,
        target,
      );
    }
    this.#sql.exec("DELETE FROM reactions WHERE target = ?", target);
    this.#sql.exec("DELETE FROM mentions WHERE seq = ?", target);
  }

  /** Marks the segments holding any seq of [from, to] for rewriting. Segments are contiguous and
   * keyed by their first seq, so the first is the last one starting at or before `from`. */
  #markSegmentDirty(from: number, to = from): void {
    this.#sql.exec(
      `UPDATE segments SET dirty = dirty + 1 WHERE from_seq <= ? AND to_seq >= ? AND from_seq >= COALESCE(
         (SELECT MAX(from_seq) FROM segments WHERE from_seq <= ?), 0)`,
      to,
      from,
      from,
    );
  }

  /**
   * Retention: turns up to `limit` events written before `cutoffTs` into tombstones (kind
   * `expired`, no content; seq, ts, metadata hash, digest and chain stay), drops their reactions and
   * mentions, and records how far and up to which cutoff retention has gone (for signed heads, and
   * the watermarks by which the D1 history and search drop them too). Returns the expired messages'
   * seqs, so their attachments can be deleted. Rows only: while retention has not reached the floor,
   * `expireThrough` first takes it through the events older than the command window.
   */
  expireBefore(cutoffTs: number, limit: number): { expired: number; messages: number[]; more: boolean } {
    return this.transaction(() => {
      // Events expire in seq order (their ts rises with seq), from where the last pass stopped.
      const from = this.expiredThrough;
      if (from < this.#floor) return { expired: 0, messages: [], more: false };
      const rows = this.#sql
        .exec<{ seq: number; kind: string; ts: number; json: string }>(
          "SELECT seq, kind, ts, json FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
          from,
          limit,
        )
        .toArray();
      const messages: number[] = [];
      let through = from;
      let expired = 0;
      for (const row of rows) {
        if (row.ts >= cutoffTs) break;
        through = row.seq;
        if (row.kind === "expired") continue;
        expired += 1;
        if (row.kind === "message") messages.push(row.seq);
        this.#sql.exec(
          "UPDATE events SET kind = 'expired', json = ?, deleted = 1, target = NULL, thread_root = NULL, nonce = NULL, content_hash = NULL WHERE seq = ?",
          tombstoneJson(row.seq, row.ts),
          row.seq,
        );
        this.#sql.exec("DELETE FROM reactions WHERE target = ?", row.seq);
        this.#sql.exec("DELETE FROM mentions WHERE seq = ?", row.seq);
      }
      // Sealed events among them: their segments are rewritten with the tombstones.
      if (through > from) this.#markSegmentDirty(from + 1, through);
      this.#setExpiredThrough(through);
      if (expired > 0 && cutoffTs > Number(this.#metaValue("expired_before") ?? 0)) {
        this.#setMetaValue("expired_before", String(cutoffTs));
      }
      // Expired by this code, so within `expired_before` already: nothing for `#reconcile` to read.
      this.#setMetaValue("expired_checked", String(through));
      return { expired, messages, more: rows.length === limit && through === rows.at(-1)?.seq };
    });
  }

  /**
   * Retention of events older than the command window (no rows: room-cold.ts found in their
   * segments that every event in (from, through] was written before `cutoffTs`). Moves the
   * watermark from `from` (if retention has not moved meanwhile) and marks their segments for
   * rewriting with the tombstones, which readers apply from the watermark until then. Returns how
   * many events expired (every one after the watermark is unexpired: it only moves forward).
   */
  expireThrough(from: number, through: number, cutoffTs: number): number {
    return this.transaction(() => {
      if (this.expiredThrough !== from || through <= from || through > this.#floor) return 0;
      this.#markSegmentDirty(from + 1, through);
      this.#setExpiredThrough(through);
      if (cutoffTs > Number(this.#metaValue("expired_before") ?? 0)) {
        this.#setMetaValue("expired_before", String(cutoffTs));
      }
      this.#setMetaValue("expired_checked", String(through));
      return through - from;
    });
  }

  #metaValue(key: string): string | undefined {
    return this.#one<{ value: string }>("SELECT value FROM meta WHERE key = ?", key)?.value;
  }

  #setMetaValue(key: string, value: string): void {
    this.#sql.exec(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
  }

  /** Retention's progress, written through to `expiredThrough` (a rollback reloads it, `#reload`). */
  #setExpiredThrough(through: number): void {
    this.#setMetaValue("expired_seq", String(through));
    this.#expiredThrough = through;
  }

  /** Events with seq in (after, until], ascending, at most `limit`, as stored: rows of the command
   * window only (none at or below `floor`), `json` '' for a slim row. room-cold.ts reads the rest. */
  rowsAfter(after: number, limit: number, until = this.#lastSeq): StoredRow[] {
    return this.#rows("seq > ? AND seq <= ? ORDER BY seq LIMIT ?", after, until, limit);
  }

  /** Rows with seq < before, the newest `limit` of them, ascending; as `rowsAfter`. */
  rowsBefore(before: number, limit: number): StoredRow[] {
    return this.#rows("seq < ? ORDER BY seq DESC LIMIT ?", before, limit).reverse();
  }

  /** The rows of [from, to] (what a segment of that range is written from). */
  rowsIn(from: number, to: number): StoredRow[] {
    return this.#rows("seq >= ? AND seq <= ? ORDER BY seq", from, to);
  }

  /** When this event was written, if it has a row. */
  tsOf(seq: number): number | undefined {
    return this.#one<{ ts: number }>("SELECT ts FROM events WHERE seq = ?", seq)?.ts;
  }

  #rows(where: string, ...params: SqlStorageValue[]): StoredRow[] {
    return this.#sql
      .exec<{
        seq: number;
        json: string;
        digest: string;
        chain: string;
        deleted: number;
        target: number | null;
        scheme: number;
        nonce: string | null;
        content_hash: string | null;
        meta_hash: string | null;
      }>(
        `SELECT seq, json, digest, chain, deleted, target, scheme, nonce, content_hash, meta_hash FROM events WHERE ${where}`,
        ...params,
      )
      .toArray()
      .map((r) => ({
        seq: r.seq,
        json: r.json,
        digest: r.digest,
        chain: r.chain,
        deleted: r.deleted === 1,
        target: r.target,
        scheme: r.scheme === 2 ? 2 : 1,
        nonce: r.nonce,
        contentHash: r.content_hash,
        metaHash: r.meta_hash,
      }));
  }

  /** The first seq after `after` (up to `until`) written at or after `ts`, or null. Events' times
   * rise with their seqs, so this reads from `after` forward only as far as the first such event. */
  firstSeqSince(after: number, until: number, ts: number): number | null {
    return (
      this.#one<{ seq: number | null }>(
        "SELECT MIN(seq) AS seq FROM events WHERE seq > ? AND seq <= ? AND ts >= ?",
        after,
        until,
        ts,
      )?.seq ?? null
    );
  }

  /** When each of these events was written (those the log holds a row for). */
  timesOf(seqs: readonly number[]): Map<number, number> {
    if (seqs.length === 0) return new Map();
    const rows = this.#sql
      .exec<{ seq: number; ts: number }>(
        "SELECT seq, ts FROM events WHERE seq IN (SELECT value FROM json_each(?))",
        JSON.stringify([...new Set(seqs)]),
      )
      .toArray();
    return new Map(rows.map((r) => [r.seq, r.ts]));
  }

  /**
   * Events with seq in (after, until], ascending: at most `maxRows`, and no more than the first one
   * that takes their JSON to `maxBytes` (UTF-8) or past it. SQLite sums the sizes, so a page of large
   * events never reaches the object's memory beyond the budget plus one event (each stays under the
   * 64 KiB frame limit). `json` is '' for an event in a cold segment, as in `rowsAfter`.
   */
  jsonAfter(
    after: number,
    until: number,
    maxRows: number,
    maxBytes: number,
  ): { seq: number; json: string; deleted: boolean }[] {
    return this.#sql
      .exec<{ seq: number; json: string; deleted: number }>(
        `SELECT seq, json, deleted FROM (
           SELECT seq, json, deleted,
                  SUM(length(CAST(json AS BLOB))) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING)
                    - length(CAST(json AS BLOB)) AS before
           FROM (SELECT seq, json, deleted FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?)
         ) WHERE before < ? ORDER BY seq`,
        after,
        until,
        maxRows,
        maxBytes,
      )
      .toArray()
      .map((r) => ({ seq: r.seq, json: r.json, deleted: r.deleted === 1 }));
  }

  /** What a signed head states about the log now (protocol/chain.ts RoomHead). */
  headState(): RoomHead {
    return {
      seq: this.#lastSeq,
      chain: this.#chain,
      retentionDays: this.retentionDays,
      expiredThrough: this.expiredThrough,
      expiredBefore: Number(this.#metaValue("expired_before") ?? 0),
      scheme1: this.#scheme1(),
    };
  }

  /** UTF-8 bytes of the events in (after, until], reading at most the newest `maxRows` of them
   * (flow control's estimate after a wake: durable-objects/room-flow.ts). */
  eventBytes(after: number, until: number, maxRows: number): number {
    return (
      this.#one<{ n: number }>(
        "SELECT COALESCE(SUM(length(CAST(json AS BLOB))), 0) AS n FROM (SELECT json FROM events WHERE seq > ? AND seq <= ? ORDER BY seq DESC LIMIT ?)",
        after,
        until,
        maxRows,
      )?.n ?? 0
    );
  }

  // ---- reactions ---------------------------------------------------------------------------

  hasReaction(target: number, userId: string, emoji: string): boolean {
    return (
      this.#one(
        "SELECT 1 AS x FROM reactions WHERE target = ? AND user_id = ? AND emoji = ?",
        target,
        userId,
        emoji,
      ) !== undefined
    );
  }

  setReaction(target: number, userId: string, emoji: string, on: boolean): void {
    if (on)
      this.#sql.exec(
        "INSERT OR IGNORE INTO reactions (target, user_id, emoji) VALUES (?, ?, ?)",
        target,
        userId,
        emoji,
      );
    else
      this.#sql.exec(
        "DELETE FROM reactions WHERE target = ? AND user_id = ? AND emoji = ?",
        target,
        userId,
        emoji,
      );
  }

  // ---- members and read markers ---------------------------------------------------------

  #memberMap(): Map<string, Member> {
    if (!this.#members) {
      this.#members = new Map(
        this.#sql
          .exec<{ user_id: string; name: string; role: string }>("SELECT user_id, name, role FROM members")
          .toArray()
          // Only roles are ever written here; anything else would be damage, and gets the least.
          .map((r) => [r.user_id, { id: r.user_id, name: r.name, role: isRole(r.role) ? r.role : "guest" }]),
      );
    }
    return this.#members;
  }

  memberIds(): string[] {
    return [...this.#memberMap().keys()];
  }

  member(userId: string): Member | undefined {
    return this.#memberMap().get(userId);
  }

  /** Call inside `append` so the membership change and its event commit together. */
  putMember(member: Member): void {
    this.#sql.exec(
      "INSERT INTO members (user_id, name, role) VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, role = excluded.role",
      member.id,
      member.name,
      member.role,
    );
    this.#members = null;
  }

  /** Call inside `append`. The member's read marker goes with them. */
  removeMember(userId: string): void {
    this.#sql.exec("DELETE FROM members WHERE user_id = ?", userId);
    this.#members = null;
    const { pages, pageOf } = this.#markerPages();
    const page = pageOf.get(userId);
    const markers = page === undefined ? undefined : pages.get(page);
    if (page === undefined || !markers) return;
    markers.delete(userId);
    pageOf.delete(userId);
    this.#writePage(page, markers);
  }

  // Read markers live in pages of up to `MARKERS_PER_PAGE` (docs/architecture.md, decision 7): a
  // flush that moves many readers' markers writes each page once, not a row per reader.

  #markerPages(): { pages: Map<number, Map<string, number>>; pageOf: Map<string, number> } {
    if (!this.#markers) {
      const pages = new Map<number, Map<string, number>>();
      const pageOf = new Map<string, number>();
      for (const r of this.#sql.exec<{ page: number; markers: string }>(
        "SELECT page, markers FROM read_pages",
      )) {
        const markers = new Map(Object.entries(JSON.parse(r.markers) as Record<string, number>));
        pages.set(r.page, markers);
        for (const userId of markers.keys()) pageOf.set(userId, r.page);
      }
      this.#markers = { pages, pageOf };
    }
    return this.#markers;
  }

  #writePage(page: number, markers: ReadonlyMap<string, number>): void {
    if (markers.size === 0) {
      this.#sql.exec("DELETE FROM read_pages WHERE page = ?", page);
      return;
    }
    this.#sql.exec(
      "INSERT INTO read_pages (page, markers) VALUES (?, ?) ON CONFLICT (page) DO UPDATE SET markers = excluded.markers",
      page,
      JSON.stringify(Object.fromEntries(markers)),
    );
  }

  /** Moves each user's read marker forward to its seq, never backwards, in one transaction that
   * writes each page that moved once. Returns the markers that moved, at their new seq. */
  markReadMany(entries: Iterable<readonly [string, number]>): [string, number][] {
    return this.transaction(() => {
      const { pages, pageOf } = this.#markerPages();
      const dirty = new Set<number>();
      const moved: [string, number][] = [];
      for (const [userId, seq] of entries) {
        if (seq <= this.readSeq(userId)) continue;
        let page = pageOf.get(userId);
        if (page === undefined) {
          page = firstPageWithRoom(pages);
          pageOf.set(userId, page);
        }
        const markers = pages.get(page) ?? new Map<string, number>();
        pages.set(page, markers);
        markers.set(userId, seq);
        dirty.add(page);
        moved.push([userId, seq]);
      }
      for (const page of dirty) this.#writePage(page, pages.get(page) ?? new Map());
      return moved;
    });
  }

  /** Moves the user's read marker forward to `seq`; never backwards (a marker it would not move
   * writes nothing). Returns the marker now. */
  markRead(userId: string, seq: number): number {
    this.markReadMany([[userId, seq]]);
    return this.readSeq(userId);
  }

  /** The number of messages with seq ≤ `seq` (deleted ones too), counted from the oldest row when
   * the log was upgraded to count them: differences are exact from the floor up. Null below the
   * floor (no row), where nothing is counted (see `unread`). */
  messagesThrough(seq: number): number | null {
    if (seq >= this.#lastSeq) return this.#msgs;
    const row = this.#one<{ seq: number; msgs: number; kind: string }>(
      "SELECT seq, msgs, kind FROM events WHERE seq >= ? ORDER BY seq LIMIT 1",
      seq,
    );
    if (!row) return null;
    if (row.seq === seq) return row.msgs;
    // `seq` has no row: only the floor itself, whose next row is not expired (else retention, not
    // the floor, bounds the count) and so still has its kind.
    if (seq !== this.#floor || row.seq !== seq + 1 || row.kind === "expired") return null;
    return row.msgs - (row.kind === "message" ? 1 : 0);
  }

  readSeq(userId: string): number {
    const { pages, pageOf } = this.#markerPages();
    const page = pageOf.get(userId);
    return page === undefined ? 0 : (pages.get(page)?.get(userId) ?? 0);
  }

  /** Messages by others after the user's read marker, and the mentions of the user among them. */
  unread(userId: string): { readSeq: number; unread: number; mentions: number } {
    const readSeq = this.readSeq(userId);
    const unread =
      this.#one<{ n: number }>(
        "SELECT COUNT(*) AS n FROM events WHERE seq > ? AND kind = 'message' AND deleted = 0 AND author_id != ?",
        readSeq,
        userId,
      )?.n ?? 0;
    const mentions =
      this.#one<{ n: number }>(
        "SELECT COUNT(*) AS n FROM mentions WHERE user_id = ? AND seq > ?",
        userId,
        readSeq,
      )?.n ?? 0;
    return { readSeq, unread, mentions };
  }
}

/** The lowest page with room for one more marker (pages emptied by leaves are reused). */
function firstPageWithRoom(pages: ReadonlyMap<number, ReadonlyMap<string, number>>): number {
  for (let page = 0; ; page++) {
    const markers = pages.get(page);
    if (!markers || markers.size < MARKERS_PER_PAGE) return page;
  }
}
