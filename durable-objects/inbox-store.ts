/**
 * @module The inbox (docs/architecture.md, decision 6): what `GET /api/rooms` needs of every room a
 * user sees, kept in the user's presence shard so that the list is one RPC, not one per room. Rooms
 * push to it (durable-objects/room-inbox.ts): per room its `lastSeq` and message counts, per member
 * their read marker and, after it, their own messages and their mentions; deleted messages after
 * the room's floor. Counts are differences, so a message writes a constant number of rows here,
 * whatever the number of members.
 *
 * A push covers a seq range `(from, to]` of the room's log and is applied only when it continues
 * what the shard has (`synced`): otherwise the shard answers how far it has and the room sends the
 * gap, or a full snapshot. Markers and snapshots are absolute (a marker never moves back), so
 * applying one twice changes nothing.
 */
import type { Migration } from "./schema.ts";

/** A member's read marker as the room has it: `accRead` is the number of messages through it
 * (room-log.ts `messagesThrough`), 0 when the marker is at or below the room's floor. */
export interface InboxMarker {
  user: string;
  readSeq: number;
  accRead: number;
}

/** Everything the inbox holds of one member of one room: their marker and, after it (and after the
 * floor), the seqs of their own messages and of the messages that mention them. */
export interface InboxSnapshot extends InboxMarker {
  own: number[];
  mentions: number[];
}

export interface InboxPush {
  tenantId: string;
  roomId: string;
  /** The range the push covers starts after this seq; null: a probe (the room does not know how
   * far this shard has), which applies nothing and is answered with where the shard stands. */
  from: number | null;
  /** A full snapshot of the room for this shard: replaces whatever the shard had of it. */
  full: boolean;
  /** The room's lastSeq, and the messages through it. */
  to: number;
  accLast: number;
  /** `F`: max(command window floor, retention): nothing at or below it counts. */
  floor: number;
  accFloor: number;
  /** In (from, to]: [user, seq] of messages by this shard's users, of mentions of them; and
   * [seq, author] of messages after the floor deleted (a full snapshot: all of them). */
  own: [string, number][];
  mentions: [string, number][];
  deleted: [number, string][];
  /** Markers moved (absolute), members whose whole state is sent, members who left. */
  markers: InboxMarker[];
  snapshots: InboxSnapshot[];
  removed: string[];
}

export type InboxAnswer =
  | { ok: true; missing: string[] }
  | { ok: false; have: number | null; readers: number; readSum: number };

/** What a room looks like in a user's room list (the counts part of protocol's RoomSummary). */
export interface InboxEntry {
  lastSeq: number;
  /** Null: the user has no marker here (not a member, as the room last said). */
  readSeq: number | null;
  unread: number;
  mentions: number;
}

export const INBOX_MIGRATIONS: Migration[] = [
  `CREATE TABLE inbox_rooms (
     room_id TEXT PRIMARY KEY,
     synced INTEGER NOT NULL,
     acc_last INTEGER NOT NULL,
     floor INTEGER NOT NULL,
     acc_floor INTEGER NOT NULL
   );
   CREATE TABLE inbox_deleted (
     room_id TEXT NOT NULL, seq INTEGER NOT NULL, author_id TEXT NOT NULL, PRIMARY KEY (room_id, seq)
   ) WITHOUT ROWID;
   CREATE TABLE inbox_readers (
     user_id TEXT NOT NULL, room_id TEXT NOT NULL, read_seq INTEGER NOT NULL, acc_read INTEGER NOT NULL,
     PRIMARY KEY (user_id, room_id)
   ) WITHOUT ROWID;
   CREATE INDEX inbox_readers_room ON inbox_readers(room_id);
   CREATE TABLE inbox_own (
     user_id TEXT NOT NULL, room_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (user_id, room_id, seq)
   ) WITHOUT ROWID;
   CREATE TABLE inbox_mentions (
     user_id TEXT NOT NULL, room_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (user_id, room_id, seq)
   ) WITHOUT ROWID;
   CREATE INDEX inbox_mentions_room ON inbox_mentions(room_id, seq);`,
  // Each push drops the own messages at or below the room's floor: by room, not by a scan of every
  // room's rows (18,000 rows read per message in a shard whose senders rarely read).
  "CREATE INDEX inbox_own_room ON inbox_own(room_id, seq);",
];

export class InboxStore {
  readonly #sql: SqlStorage;
  readonly #storage: DurableObjectStorage;

  constructor(storage: DurableObjectStorage) {
    this.#storage = storage;
    this.#sql = storage.sql;
  }

  /** Applies a room's push (see the module comment); one transaction. */
  apply(push: InboxPush): InboxAnswer {
    return this.#storage.transactionSync(() => {
      this.#checkTenant(push.tenantId);
      const room = push.roomId;
      if (push.full) {
        this.#forgetRoom(room);
        this.#sql.exec(
          "INSERT INTO inbox_rooms (room_id, synced, acc_last, floor, acc_floor) VALUES (?, ?, ?, ?, ?)",
          room,
          push.to,
          push.accLast,
          push.floor,
          push.accFloor,
        );
      } else {
        const have = this.#sql
          .exec<{ synced: number }>("SELECT synced FROM inbox_rooms WHERE room_id = ?", room)
          .toArray()[0];
        if (!have || push.from === null || have.synced !== push.from) {
          const stats = this.#sql
            .exec<{ n: number; s: number }>(
              "SELECT COUNT(*) AS n, COALESCE(SUM(read_seq), 0) AS s FROM inbox_readers WHERE room_id = ?",
              room,
            )
            .one();
          return { ok: false, have: have?.synced ?? null, readers: stats.n, readSum: stats.s };
        }
        this.#sql.exec(
          "UPDATE inbox_rooms SET synced = ?, acc_last = ?, floor = ?, acc_floor = ? WHERE room_id = ?",
          push.to,
          push.accLast,
          push.floor,
          push.accFloor,
          room,
        );
      }
      for (const s of push.snapshots) this.#putReader(room, s);
      for (const user of push.removed) this.#forgetReader(room, user);
      // A user's rows are kept only while they have a marker here: one without is sent whole.
      for (const [user, seq] of push.own) this.#addAfterMarker("inbox_own", room, user, seq);
      for (const [user, seq] of push.mentions) this.#addAfterMarker("inbox_mentions", room, user, seq);
      // After the inserts: a message deleted in the same range goes with its mentions.
      for (const [seq, author] of push.deleted) {
        if (seq <= push.floor) continue;
        this.#sql.exec(
          "INSERT OR IGNORE INTO inbox_deleted (room_id, seq, author_id) VALUES (?, ?, ?)",
          room,
          seq,
          author,
        );
        this.#sql.exec("DELETE FROM inbox_mentions WHERE room_id = ? AND seq = ?", room, seq);
      }
      const missing: string[] = [];
      for (const m of push.markers) {
        const known = this.#sql
          .exec<{ read_seq: number }>(
            "SELECT read_seq FROM inbox_readers WHERE user_id = ? AND room_id = ?",
            m.user,
            room,
          )
          .toArray()[0];
        if (!known) missing.push(m.user);
        else if (known.read_seq < m.readSeq) this.#moveReader(room, m);
      }
      // Nothing at or below the floor counts any more.
      this.#sql.exec("DELETE FROM inbox_deleted WHERE room_id = ? AND seq <= ?", room, push.floor);
      if (!push.full && push.floor > 0) {
        this.#sql.exec("DELETE FROM inbox_own WHERE room_id = ? AND seq <= ?", room, push.floor);
        this.#sql.exec("DELETE FROM inbox_mentions WHERE room_id = ? AND seq <= ?", room, push.floor);
      }
      return { ok: true, missing };
    });
  }

  /** The counts of these rooms for this user; rooms the inbox has never heard of are left out. */
  list(userId: string, roomIds: readonly string[]): Record<string, InboxEntry> {
    const rows = this.#sql
      .exec<{
        room_id: string;
        synced: number;
        acc_last: number;
        floor: number;
        acc_floor: number;
        read_seq: number | null;
        acc_read: number | null;
        own: number;
        deleted: number;
        mentions: number;
      }>(
        `SELECT r.room_id, r.synced, r.acc_last, r.floor, r.acc_floor, m.read_seq, m.acc_read,
           CASE WHEN m.read_seq IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM inbox_own o
             WHERE o.user_id = ?1 AND o.room_id = r.room_id AND o.seq > MAX(m.read_seq, r.floor)) END AS own,
           CASE WHEN m.read_seq IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM inbox_deleted d
             WHERE d.room_id = r.room_id AND d.seq > MAX(m.read_seq, r.floor) AND d.author_id != ?1) END AS deleted,
           CASE WHEN m.read_seq IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM inbox_mentions x
             WHERE x.user_id = ?1 AND x.room_id = r.room_id AND x.seq > MAX(m.read_seq, r.floor)) END AS mentions
         FROM inbox_rooms r LEFT JOIN inbox_readers m ON m.user_id = ?1 AND m.room_id = r.room_id
         WHERE r.room_id IN (SELECT value FROM json_each(?2))`,
        userId,
        JSON.stringify(roomIds),
      )
      .toArray();
    const out: Record<string, InboxEntry> = {};
    for (const r of rows) {
      if (r.read_seq === null) {
        out[r.room_id] = { lastSeq: r.synced, readSeq: null, unread: 0, mentions: 0 };
        continue;
      }
      const base = r.read_seq >= r.floor ? (r.acc_read ?? 0) : r.acc_floor;
      out[r.room_id] = {
        lastSeq: r.synced,
        readSeq: r.read_seq,
        unread: r.acc_last - base - r.own - r.deleted,
        mentions: r.mentions,
      };
    }
    return out;
  }

  /** A row of `table` (own messages or mentions) for a seq after the user's marker here. */
  #addAfterMarker(table: "inbox_own" | "inbox_mentions", room: string, user: string, seq: number): void {
    this.#sql.exec(
      `INSERT OR IGNORE INTO ${table} (user_id, room_id, seq) SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM inbox_readers WHERE user_id = ? AND room_id = ? AND read_seq < ?)`,
      user,
      room,
      seq,
      user,
      room,
      seq,
    );
  }

  #checkTenant(tenantId: string): void {
    const known = this.#sql
      .exec<{ value: string }>("SELECT value FROM meta WHERE key = 'inbox_tenant'")
      .toArray()[0]?.value;
    if (known === undefined)
      this.#sql.exec("INSERT INTO meta (key, value) VALUES ('inbox_tenant', ?)", tenantId);
    else if (known !== tenantId) throw new Error("inbox belongs to another tenant");
  }

  #forgetRoom(room: string): void {
    for (const table of ["inbox_rooms", "inbox_deleted", "inbox_readers", "inbox_own", "inbox_mentions"])
      this.#sql.exec(`DELETE FROM ${table} WHERE room_id = ?`, room);
  }

  #forgetReader(room: string, user: string): void {
    for (const table of ["inbox_readers", "inbox_own", "inbox_mentions"])
      this.#sql.exec(`DELETE FROM ${table} WHERE user_id = ? AND room_id = ?`, user, room);
  }

  #putReader(room: string, s: InboxSnapshot): void {
    this.#forgetReader(room, s.user);
    this.#sql.exec(
      "INSERT INTO inbox_readers (user_id, room_id, read_seq, acc_read) VALUES (?, ?, ?, ?)",
      s.user,
      room,
      s.readSeq,
      s.accRead,
    );
    for (const seq of s.own)
      this.#sql.exec(
        "INSERT OR IGNORE INTO inbox_own (user_id, room_id, seq) VALUES (?, ?, ?)",
        s.user,
        room,
        seq,
      );
    for (const seq of s.mentions)
      this.#sql.exec(
        "INSERT OR IGNORE INTO inbox_mentions (user_id, room_id, seq) VALUES (?, ?, ?)",
        s.user,
        room,
        seq,
      );
  }

  /** Moves a marker forward; what is at or before it no longer counts. */
  #moveReader(room: string, m: InboxMarker): void {
    this.#sql.exec(
      "UPDATE inbox_readers SET read_seq = ?, acc_read = ? WHERE user_id = ? AND room_id = ?",
      m.readSeq,
      m.accRead,
      m.user,
      room,
    );
    this.#sql.exec(
      "DELETE FROM inbox_own WHERE user_id = ? AND room_id = ? AND seq <= ?",
      m.user,
      room,
      m.readSeq,
    );
    this.#sql.exec(
      "DELETE FROM inbox_mentions WHERE user_id = ? AND room_id = ? AND seq <= ?",
      m.user,
      room,
      m.readSeq,
    );
  }
}
