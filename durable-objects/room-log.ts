/**
 * @module The room's ordered event log and membership, in the room object's own SQLite.
 *
 * Invariants:
 * - `seq` is assigned 1, 2, 3… with no gaps, inside the same transaction as the idempotency check
 *   on (author, clientId): a command either commits once with the next seq or creates nothing.
 * - Each event is stored as the exact JSON sent to clients, so replay concatenates strings.
 * - A deleted message keeps its seq; its text (and the text of its edits) is scrubbed.
 */
import type { RoomEvent } from "../protocol/index.ts";

/** Versioned schema: each entry runs once, in order, recorded in `meta.schema_version`. */
const MIGRATIONS: string[] = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE events (
     seq INTEGER PRIMARY KEY,
     kind TEXT NOT NULL,
     author_id TEXT NOT NULL,
     client_id TEXT,
     target INTEGER,
     thread_root INTEGER,
     deleted INTEGER NOT NULL DEFAULT 0,
     ts INTEGER NOT NULL,
     json TEXT NOT NULL
   );
   CREATE UNIQUE INDEX events_client ON events(author_id, client_id) WHERE client_id IS NOT NULL;
   CREATE INDEX events_target ON events(target) WHERE target IS NOT NULL;
   CREATE TABLE members (
     user_id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     role TEXT NOT NULL,
     read_seq INTEGER NOT NULL DEFAULT 0
   );
   CREATE TABLE reactions (
     target INTEGER NOT NULL,
     user_id TEXT NOT NULL,
     emoji TEXT NOT NULL,
     PRIMARY KEY (target, user_id, emoji)
   );
   CREATE TABLE mentions (user_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (user_id, seq));`,
  // Attachments (room-attachments.ts): pending while seq is null, referenced by message seq, doomed
  // once that message is deleted or cleanup has begun on them.
  `CREATE TABLE attachments (
     id TEXT PRIMARY KEY,
     uploader_id TEXT NOT NULL,
     name TEXT NOT NULL,
     content_type TEXT NOT NULL,
     size INTEGER NOT NULL,
     object_key TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     seq INTEGER,
     doomed INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX attachments_seq ON attachments(seq) WHERE seq IS NOT NULL;`,
];

export interface RoomMeta {
  tenantId: string;
  roomId: string;
  name: string;
  kind: string;
}

export interface Member {
  id: string;
  name: string;
  role: string;
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

export type AppendResult = { created: true; seq: number; json: string } | { created: false; seq: number };

export class RoomLog {
  readonly #sql: SqlStorage;
  readonly #storage: DurableObjectStorage;
  #lastSeq: number;
  #members: Map<string, Member> | null = null;

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
    this.#sql = storage.sql;
    this.#migrate();
    this.#lastSeq = 0;
    this.#reload();
  }

  #migrate(): void {
    const hasMeta = this.#one<{ n: number }>(
      "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    );
    let version = 0;
    if (hasMeta?.n) {
      version = Number(
        this.#one<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'")?.value ?? 0,
      );
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.#storage.transactionSync(() => {
        this.#sql.exec(MIGRATIONS[v] as string);
        this.#sql.exec(
          "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          String(v + 1),
        );
      });
    }
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

  // ---- room metadata -----------------------------------------------------------------------

  meta(): RoomMeta | null {
    const rows = this.#sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray();
    const m = Object.fromEntries(rows.map((r) => [r.key, r.value]));
    if (!m.tenantId || !m.roomId) return null;
    return { tenantId: m.tenantId, roomId: m.roomId, name: m.name ?? "", kind: m.kind ?? "channel" };
  }

  setMeta(meta: RoomMeta): void {
    this.#storage.transactionSync(() => {
      for (const [key, value] of Object.entries(meta)) {
        this.#sql.exec(
          "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
          key,
          value,
        );
      }
    });
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
    this.#lastSeq = this.#one<{ s: number | null }>("SELECT MAX(seq) AS s FROM events")?.s ?? 0;
    this.#members = null;
  }

  /**
   * Appends one event with the next seq. The insert and `extras.apply` commit together or not at
   * all (then `lastSeq` is unchanged). A command calls this inside the same `transaction` as its
   * idempotency check (room-commands.ts); the unique index on (author, clientId) backs that check:
   * a second insert of the same pair throws and rolls back instead of creating a duplicate.
   */
  append(event: NewEvent, extras: AppendExtras = {}): AppendResult & { created: true } {
    return this.transaction(() => {
      const seq = this.#lastSeq + 1;
      const full = { seq, ...event } as RoomEvent;
      const json = JSON.stringify(full);
      const target = "target" in full ? full.target : null;
      const threadRoot = full.kind === "message" ? (full.threadRoot ?? null) : null;
      this.#sql.exec(
        "INSERT INTO events (seq, kind, author_id, client_id, target, thread_root, ts, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        seq,
        full.kind,
        full.author.id,
        full.clientId ?? null,
        target,
        threadRoot,
        full.ts,
        json,
      );
      for (const userId of extras.mentions ?? []) {
        this.#sql.exec("INSERT OR IGNORE INTO mentions (user_id, seq) VALUES (?, ?)", userId, seq);
      }
      extras.apply?.(seq);
      // Only after every statement succeeded; an enclosing transaction that rolls back later
      // reloads it (see `transaction`).
      this.#lastSeq = seq;
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

  /** Removes a message's text (and its edits' text) from the log; the seqs stay. Call inside `append`. */
  scrubMessage(target: number): void {
    for (const row of this.#sql
      .exec<{ seq: number; json: string }>(
        "SELECT seq, json FROM events WHERE (seq = ? AND kind = 'message') OR (target = ? AND kind = 'edit')",
        target,
        target,
      )
      .toArray()) {
      const event = JSON.parse(row.json) as RoomEvent;
      if (event.kind === "message" || event.kind === "edit") {
        event.text = "";
        event.deleted = true;
        if (event.kind === "message") delete event.attachments;
      }
      this.#sql.exec("UPDATE events SET json = ?, deleted = 1 WHERE seq = ?", JSON.stringify(event), row.seq);
    }
    this.#sql.exec("DELETE FROM reactions WHERE target = ?", target);
    this.#sql.exec("DELETE FROM mentions WHERE seq = ?", target);
  }

  /** Stored events with seq in (after, until], ascending, at most `limit`. */
  rowsAfter(after: number, limit: number, until = this.#lastSeq): { seq: number; json: string }[] {
    return this.#sql
      .exec<{ seq: number; json: string }>(
        "SELECT seq, json FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
        after,
        until,
        limit,
      )
      .toArray();
  }

  /** Stored JSON of events with seq in (after, until], ascending, at most `limit`. */
  jsonAfter(after: number, limit: number, until = this.#lastSeq): string[] {
    return this.rowsAfter(after, limit, until).map((r) => r.json);
  }

  /** Stored JSON of events with seq < before, the newest `limit` of them, returned ascending. */
  jsonBefore(before: number, limit: number): string[] {
    return this.#sql
      .exec<{ json: string }>(
        "SELECT json FROM events WHERE seq < ? ORDER BY seq DESC LIMIT ?",
        before,
        limit,
      )
      .toArray()
      .map((r) => r.json)
      .reverse();
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
          .map((r) => [r.user_id, { id: r.user_id, name: r.name, role: r.role }]),
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

  /** Call inside `append`. */
  removeMember(userId: string): void {
    this.#sql.exec("DELETE FROM members WHERE user_id = ?", userId);
    this.#members = null;
  }

  /** Moves the user's read marker forward to `seq`; never backwards. Returns the marker now. */
  markRead(userId: string, seq: number): number {
    this.#sql.exec("UPDATE members SET read_seq = MAX(read_seq, ?) WHERE user_id = ?", seq, userId);
    return this.readSeq(userId);
  }

  readSeq(userId: string): number {
    return (
      this.#one<{ read_seq: number }>("SELECT read_seq FROM members WHERE user_id = ?", userId)?.read_seq ?? 0
    );
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
