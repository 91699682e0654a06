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
import { MARKERS_PER_PAGE } from "./room-schema.ts";
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

/** The parts of a push that carry changes, all empty (a probe's, or a base to fill). */
export function noChanges(): Pick<
  InboxPush,
  "own" | "mentions" | "deleted" | "markers" | "snapshots" | "removed"
> {
  return { own: [], mentions: [], deleted: [], markers: [], snapshots: [], removed: [] };
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
  // Markers by page (decision 7), filled from the row per reader they had before.
  (sql) => {
    sql.exec(
      `CREATE TABLE inbox_members (
         room_id TEXT NOT NULL, user_id TEXT NOT NULL, page INTEGER NOT NULL, slot INTEGER NOT NULL,
         PRIMARY KEY (room_id, user_id)
       ) WITHOUT ROWID;
       CREATE TABLE inbox_pages (
         room_id TEXT NOT NULL, page INTEGER NOT NULL, markers TEXT NOT NULL, PRIMARY KEY (room_id, page)
       ) WITHOUT ROWID;`,
    );
    let room: string | null = null;
    let page: PageMarkers = [];
    let pageNo = 0;
    const put = () => {
      if (room !== null && page.length > 0)
        sql.exec(
          "INSERT INTO inbox_pages (room_id, page, markers) VALUES (?, ?, ?)",
          room,
          pageNo,
          JSON.stringify(page),
        );
    };
    const rows = sql.exec<{ user_id: string; room_id: string; read_seq: number; acc_read: number }>(
      "SELECT user_id, room_id, read_seq, acc_read FROM inbox_readers ORDER BY room_id, user_id",
    );
    for (const r of rows) {
      if (r.room_id !== room || page.length === MARKERS_PER_PAGE) {
        put();
        pageNo = r.room_id === room ? pageNo + 1 : 0;
        room = r.room_id;
        page = [];
      }
      sql.exec(
        "INSERT INTO inbox_members (room_id, user_id, page, slot) VALUES (?, ?, ?, ?)",
        r.room_id,
        r.user_id,
        pageNo,
        page.length,
      );
      page.push([r.read_seq, r.acc_read]);
    }
    put();
    sql.exec("DROP TABLE inbox_readers");
  },
];

/**
 * A user's own messages as runs of consecutive seqs, a row per run, instead of a row per message
 * (and one more in its index): a member who posts several messages in a row (a bot, a burst, anyone
 * whose marker does not follow their own messages) writes one row per push, not two per message.
 * Appended after the presence object's later migrations (presence.ts). The rows it converts stay in
 * `inbox_own`, no longer written, for one release: a rollback finds its table (docs/deploy.md,
 * step 10); the next release drops it.
 */
export const INBOX_OWN_RUNS_MIGRATION: Migration = (sql) => {
  sql.exec(
    `CREATE TABLE IF NOT EXISTS inbox_own_runs (
       room_id TEXT NOT NULL, user_id TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
       PRIMARY KEY (room_id, user_id, first_seq)
     ) WITHOUT ROWID;`,
  );
  const runs = new OwnRuns(sql);
  const rows = sql
    .exec<{ room_id: string; user_id: string; seq: number }>(
      "SELECT room_id, user_id, seq FROM inbox_own ORDER BY room_id, user_id, seq",
    )
    .toArray();
  const groups = new Map<string, { room: string; user: string; seqs: number[] }>();
  for (const r of rows) {
    const key = `${r.room_id}\n${r.user_id}`;
    const group = groups.get(key);
    if (group) group.seqs.push(r.seq);
    else groups.set(key, { room: r.room_id, user: r.user_id, seqs: [r.seq] });
  }
  for (const g of groups.values()) runs.add(g.room, g.user, g.seqs);
};

/** The rooms of a user in the shard, for the room list's first call (`list(user, null)`), which
 * starts before the directory has said which rooms are listed. Appended after the presence object's
 * later migrations (presence.ts); a member's arrival writes one more row here. */
export const INBOX_MEMBERS_BY_USER_MIGRATION: Migration =
  "CREATE INDEX IF NOT EXISTS inbox_members_user ON inbox_members(user_id);";

/** A room as `InboxStore.list` reads it, with the user's marker out of its page (JSON, or null). */
type ListedRow = {
  room_id: string;
  synced: number;
  acc_last: number;
  floor: number;
  acc_floor: number;
  marker: string | null;
};

/** A page of markers: per slot, `[readSeq, accRead]`, or null for a slot whose member left. */
type PageMarkers = ([number, number] | null)[];

/** New events of a room that a push applied: its lastSeq now, and the users of this shard that a
 * message among them mentions. */
export interface InboxNews {
  lastSeq: number;
  mentioned: string[];
}

export interface InboxListeners {
  /** A marker a push moved, once written (the user's presence sessions hear it). */
  read?: (userId: string, roomId: string, seq: number) => void;
  /** A push that took the room past the seq the shard had, once written: the room list now counts
   * those events (the members' presence sessions hear of it). */
  news?: (roomId: string, news: InboxNews) => void;
}

/** What an applied push tells the listeners once its transaction is written. */
interface Told {
  moved: [string, number][];
  news: InboxNews | null;
}

export class InboxStore {
  readonly #sql: SqlStorage;
  readonly #storage: DurableObjectStorage;
  readonly #own: OwnRuns;
  readonly #on: InboxListeners;

  constructor(storage: DurableObjectStorage, on: InboxListeners = {}) {
    this.#storage = storage;
    this.#sql = storage.sql;
    this.#own = new OwnRuns(storage.sql);
    this.#on = on;
  }

  /** Applies a room's push (see the module comment); one transaction. */
  apply(push: InboxPush): InboxAnswer {
    const told: Told = { moved: [], news: null };
    const answer = this.#storage.transactionSync(() => this.#apply(push, told));
    for (const [user, seq] of told.moved) this.#on.read?.(user, push.roomId, seq);
    if (told.news) this.#on.news?.(push.roomId, told.news);
    return answer;
  }

  #apply(push: InboxPush, told: Told): InboxAnswer {
    const { moved } = told;
    this.#checkTenant(push.tenantId);
    const room = push.roomId;
    // How far the shard had the room before this push: what is after it is news.
    let before: number;
    if (push.full) {
      before =
        this.#sql
          .exec<{ synced: number }>("SELECT synced FROM inbox_rooms WHERE room_id = ?", room)
          .toArray()[0]?.synced ?? 0;
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
        .exec<{ synced: number; acc_last: number; floor: number; acc_floor: number }>(
          "SELECT synced, acc_last, floor, acc_floor FROM inbox_rooms WHERE room_id = ?",
          room,
        )
        .toArray()[0];
      if (!have || push.from === null || have.synced !== push.from) {
        const readers = this.#sql
          .exec<{ n: number }>("SELECT COUNT(*) AS n FROM inbox_members WHERE room_id = ?", room)
          .one().n;
        const readSum = this.#sql
          .exec<{ s: number }>(
            `SELECT COALESCE(SUM(j.value ->> 0), 0) AS s FROM inbox_pages p, json_each(p.markers) j
             WHERE p.room_id = ? AND j.type = 'array'`,
            room,
          )
          .one().s;
        return { ok: false, have: have?.synced ?? null, readers, readSum };
      }
      before = have.synced;
      // A push of markers alone leaves the room's row as it was: not written again.
      const same =
        have.synced === push.to &&
        have.acc_last === push.accLast &&
        have.floor === push.floor &&
        have.acc_floor === push.accFloor;
      if (!same)
        this.#sql.exec(
          "UPDATE inbox_rooms SET synced = ?, acc_last = ?, floor = ?, acc_floor = ? WHERE room_id = ?",
          push.to,
          push.accLast,
          push.floor,
          push.accFloor,
          room,
        );
    }
    const pages = new MarkerPages(this.#sql, room);
    for (const s of push.snapshots) {
      const before = pages.marker(s.user)?.[0] ?? 0;
      this.#putReader(pages, s);
      if (s.readSeq > before) moved.push([s.user, s.readSeq]);
    }
    for (const user of push.removed) this.#forgetReader(pages, user);
    // Markers before the rows after them: a member who read past their own message (or a mention
    // of them) in the same push writes no row for it.
    const missing: string[] = [];
    for (const m of push.markers) {
      const known = pages.marker(m.user);
      if (!known) missing.push(m.user);
      else if (known[0] < m.readSeq) {
        this.#moveReader(pages, m);
        moved.push([m.user, m.readSeq]);
      }
    }
    // A user's rows are kept only while they have a marker here: one without is sent whole.
    for (const [user, seqs] of byUser(push.own)) {
      const after = pages.marker(user)?.[0];
      if (after !== undefined)
        this.#own.add(
          room,
          user,
          seqs.filter((seq) => seq > after),
        );
    }
    for (const [user, seq] of push.mentions) this.#addMention(pages, user, seq);
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
    pages.write();
    // Nothing at or below the floor counts any more.
    this.#sql.exec("DELETE FROM inbox_deleted WHERE room_id = ? AND seq <= ?", room, push.floor);
    if (!push.full && push.floor > 0) {
      this.#own.dropRoomThrough(room, push.floor);
      this.#sql.exec("DELETE FROM inbox_mentions WHERE room_id = ? AND seq <= ?", room, push.floor);
    }
    if (push.to > before) {
      const mentioned = new Set(push.mentions.filter(([, seq]) => seq > before).map(([user]) => user));
      for (const s of push.snapshots) if (s.mentions.some((seq) => seq > before)) mentioned.add(s.user);
      told.news = { lastSeq: push.to, mentioned: [...mentioned] };
    }
    return { ok: true, missing };
  }

  /** The room's members among this shard's users, as the room last pushed them. */
  members(roomId: string): string[] {
    return this.#sql
      .exec<{ user_id: string }>("SELECT user_id FROM inbox_members WHERE room_id = ?", roomId)
      .toArray()
      .map((r) => r.user_id);
  }

  /** The counts of these rooms for this user; rooms the inbox has never heard of are left out. With
   * `roomIds` null: the rooms the user is a member of, as the inbox has them (what a room list can
   * ask for before it knows which rooms it lists). Two queries: the rooms with the user's marker
   * (read from its page once per room), then the counts after each marker. */
  list(userId: string, roomIds: readonly string[] | null): Record<string, InboxEntry> {
    const columns = "r.room_id, r.synced, r.acc_last, r.floor, r.acc_floor, p.markers -> m.slot AS marker";
    const rooms = (
      roomIds === null
        ? this.#sql.exec<ListedRow>(
            `SELECT ${columns}
             FROM inbox_members m
               JOIN inbox_rooms r ON r.room_id = m.room_id
               LEFT JOIN inbox_pages p ON p.room_id = m.room_id AND p.page = m.page
             WHERE m.user_id = ?1`,
            userId,
          )
        : this.#sql.exec<ListedRow>(
            `SELECT ${columns}
             FROM inbox_rooms r
               LEFT JOIN inbox_members m ON m.room_id = r.room_id AND m.user_id = ?1
               LEFT JOIN inbox_pages p ON p.room_id = r.room_id AND p.page = m.page
             WHERE r.room_id IN (SELECT value FROM json_each(?2))`,
            userId,
            JSON.stringify(roomIds),
          )
    ).toArray();
    const out: Record<string, InboxEntry> = {};
    /** Per room with a marker and something after it: what counts is after max(marker, floor). */
    const after: Record<string, number> = {};
    const marked = new Map<string, { row: ListedRow; readSeq: number; accRead: number }>();
    const entry = (
      m: { row: ListedRow; readSeq: number; accRead: number },
      own = 0,
      deleted = 0,
      mentions = 0,
    ) => {
      const { row } = m;
      const base = m.readSeq >= row.floor ? m.accRead : row.acc_floor;
      out[row.room_id] = {
        lastSeq: row.synced,
        readSeq: m.readSeq,
        unread: row.acc_last - base - own - deleted,
        mentions,
      };
    };
    for (const row of rooms) {
      const pair = row.marker === null ? null : (JSON.parse(row.marker) as [number, number] | null);
      if (!pair) {
        out[row.room_id] = { lastSeq: row.synced, readSeq: null, unread: 0, mentions: 0 };
        continue;
      }
      const m = { row, readSeq: pair[0], accRead: pair[1] };
      const from = Math.max(pair[0], row.floor);
      // Read through the room's last seq (most rooms of a sidebar): no row of it counts, since every
      // row the inbox holds is at or below the seq it has synced to.
      if (from >= row.synced) entry(m);
      else {
        after[row.room_id] = from;
        marked.set(row.room_id, m);
      }
    }
    if (marked.size === 0) return out;
    const counts = this.#sql.exec<{ room_id: string; own: number; deleted: number; mentions: number }>(
      `SELECT t.key AS room_id,
         (SELECT COALESCE(SUM(o.last_seq - MAX(o.first_seq, t.value + 1) + 1), 0) FROM inbox_own_runs o
           WHERE o.room_id = t.key AND o.user_id = ?1 AND o.last_seq > t.value) AS own,
         (SELECT COUNT(*) FROM inbox_deleted d
           WHERE d.room_id = t.key AND d.seq > t.value AND d.author_id != ?1) AS deleted,
         (SELECT COUNT(*) FROM inbox_mentions x WHERE x.user_id = ?1 AND x.room_id = t.key AND x.seq > t.value) AS mentions
       FROM json_each(?2) t`,
      userId,
      JSON.stringify(after),
    );
    for (const c of counts) {
      const m = marked.get(c.room_id);
      if (m) entry(m, c.own, c.deleted, c.mentions);
    }
    return out;
  }

  /** The user's read marker in the room (0 when the inbox has none for them). */
  readSeq(userId: string, roomId: string): number {
    return new MarkerPages(this.#sql, roomId).marker(userId)?.[0] ?? 0;
  }

  /** A row of `inbox_mentions` for a seq after the user's marker here. */
  #addMention(pages: MarkerPages, user: string, seq: number): void {
    const marker = pages.marker(user);
    if (!marker || marker[0] >= seq) return;
    this.#sql.exec(
      "INSERT OR IGNORE INTO inbox_mentions (user_id, room_id, seq) VALUES (?, ?, ?)",
      user,
      pages.room,
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
    for (const table of [
      "inbox_rooms",
      "inbox_deleted",
      "inbox_members",
      "inbox_pages",
      "inbox_own_runs",
      "inbox_mentions",
    ])
      this.#sql.exec(`DELETE FROM ${table} WHERE room_id = ?`, room);
  }

  #forgetReader(pages: MarkerPages, user: string): void {
    pages.remove(user);
    this.#own.forget(pages.room, user);
    this.#sql.exec("DELETE FROM inbox_mentions WHERE user_id = ? AND room_id = ?", user, pages.room);
  }

  #putReader(pages: MarkerPages, s: InboxSnapshot): void {
    this.#forgetReader(pages, s.user);
    pages.add(s.user, [s.readSeq, s.accRead]);
    this.#own.add(pages.room, s.user, s.own);
    for (const seq of s.mentions)
      this.#sql.exec(
        "INSERT OR IGNORE INTO inbox_mentions (user_id, room_id, seq) VALUES (?, ?, ?)",
        s.user,
        pages.room,
        seq,
      );
  }

  /** Moves a marker forward; what is at or before it no longer counts. */
  #moveReader(pages: MarkerPages, m: InboxMarker): void {
    pages.set(m.user, [m.readSeq, m.accRead]);
    this.#own.dropThrough(pages.room, m.user, m.readSeq);
    this.#sql.exec(
      "DELETE FROM inbox_mentions WHERE user_id = ? AND room_id = ? AND seq <= ?",
      m.user,
      pages.room,
      m.readSeq,
    );
  }
}

/** The push's [user, seq] pairs by user, each user's seqs in the order they came (seq order). */
function byUser(pairs: readonly [string, number][]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [user, seq] of pairs) {
    const seqs = out.get(user);
    if (seqs) seqs.push(seq);
    else out.set(user, [seq]);
  }
  return out;
}

/**
 * The seqs of each member's own messages after their marker, as runs `[first_seq, last_seq]` of
 * consecutive seqs that never overlap (`inbox_own_runs`). A run may begin at or below the marker
 * or the floor (it is dropped once it ends there): counting clamps it (`list`).
 */
class OwnRuns {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  /** Adds `seqs` (ascending) of `user`'s messages in `room`: the newest run grows when they follow
   * it, a seq already held changes nothing. */
  add(room: string, user: string, seqs: readonly number[]): void {
    if (seqs.length === 0) return;
    let newest =
      this.#sql
        .exec<{ first_seq: number; last_seq: number }>(
          "SELECT first_seq, last_seq FROM inbox_own_runs WHERE room_id = ? AND user_id = ? ORDER BY first_seq DESC LIMIT 1",
          room,
          user,
        )
        .toArray()[0] ?? null;
    for (let i = 0; i < seqs.length; ) {
      const first = seqs[i] as number;
      if (newest && first <= newest.last_seq) {
        // Already held (a snapshot in the same push had it), unless it falls between two runs.
        if (!this.#holds(room, user, first)) this.#insert(room, user, first, first);
        i++;
        continue;
      }
      let last = first;
      for (i++; i < seqs.length && seqs[i] === last + 1; i++) last++;
      if (newest && first === newest.last_seq + 1) {
        this.#sql.exec(
          "UPDATE inbox_own_runs SET last_seq = ? WHERE room_id = ? AND user_id = ? AND first_seq = ?",
          last,
          room,
          user,
          newest.first_seq,
        );
        newest = { first_seq: newest.first_seq, last_seq: last };
      } else {
        this.#insert(room, user, first, last);
        newest = { first_seq: first, last_seq: last };
      }
    }
  }

  /** `user` has read through `seq`: their runs that end there go. */
  dropThrough(room: string, user: string, seq: number): void {
    this.#sql.exec(
      "DELETE FROM inbox_own_runs WHERE room_id = ? AND user_id = ? AND last_seq <= ?",
      room,
      user,
      seq,
    );
  }

  /** Nothing at or below the room's floor counts: the runs that end there go. */
  dropRoomThrough(room: string, floor: number): void {
    this.#sql.exec("DELETE FROM inbox_own_runs WHERE room_id = ? AND last_seq <= ?", room, floor);
  }

  forget(room: string, user: string): void {
    this.#sql.exec("DELETE FROM inbox_own_runs WHERE room_id = ? AND user_id = ?", room, user);
  }

  #holds(room: string, user: string, seq: number): boolean {
    return (
      this.#sql
        .exec(
          `SELECT 1 FROM inbox_own_runs WHERE room_id = ? AND user_id = ? AND first_seq <= ? AND last_seq >= ?
           LIMIT 1`,
          room,
          user,
          seq,
          seq,
        )
        .toArray().length > 0
    );
  }

  #insert(room: string, user: string, first: number, last: number): void {
    this.#sql.exec(
      "INSERT INTO inbox_own_runs (room_id, user_id, first_seq, last_seq) VALUES (?, ?, ?, ?)",
      room,
      user,
      first,
      last,
    );
  }
}

/** One room's marker pages during one push: read when first needed, changed in memory, and each
 * page that changed written once at the end (`write`). A member's page and slot are written only
 * when they arrive or leave. */
class MarkerPages {
  readonly room: string;
  readonly #sql: SqlStorage;
  /** Members looked up: their page and slot, or null when they have no marker here. */
  readonly #where = new Map<string, { page: number; slot: number } | null>();
  readonly #pages = new Map<number, PageMarkers>();
  readonly #dirty = new Set<number>();
  /** Members per page, loaded when a member is first added. */
  #counts: Map<number, number> | null = null;

  constructor(sql: SqlStorage, room: string) {
    this.#sql = sql;
    this.room = room;
  }

  /** The member's `[readSeq, accRead]` here, or undefined when they have none. */
  marker(user: string): [number, number] | undefined {
    const at = this.#locate(user);
    return at ? (this.#page(at.page)[at.slot] ?? undefined) : undefined;
  }

  set(user: string, marker: [number, number]): void {
    const at = this.#locate(user);
    if (!at) throw new Error(`no marker for ${user} in ${this.room}`);
    this.#page(at.page)[at.slot] = marker;
    this.#dirty.add(at.page);
  }

  /** A member arrives: the lowest page with room, the first free slot in it. */
  add(user: string, marker: [number, number]): void {
    const counts = this.#memberCounts();
    let page = 0;
    while ((counts.get(page) ?? 0) >= MARKERS_PER_PAGE) page++;
    const markers = this.#page(page);
    let slot = markers.indexOf(null);
    if (slot < 0) slot = markers.length;
    markers[slot] = marker;
    counts.set(page, (counts.get(page) ?? 0) + 1);
    this.#dirty.add(page);
    this.#where.set(user, { page, slot });
    this.#sql.exec(
      "INSERT INTO inbox_members (room_id, user_id, page, slot) VALUES (?, ?, ?, ?)",
      this.room,
      user,
      page,
      slot,
    );
  }

  remove(user: string): void {
    const at = this.#locate(user);
    if (!at) return;
    this.#page(at.page)[at.slot] = null;
    this.#dirty.add(at.page);
    // Counts not loaded yet are read after this delete.
    if (this.#counts) this.#counts.set(at.page, (this.#counts.get(at.page) ?? 1) - 1);
    this.#where.set(user, null);
    this.#sql.exec("DELETE FROM inbox_members WHERE room_id = ? AND user_id = ?", this.room, user);
  }

  /** Writes each page that changed: one row each (a page left empty is deleted). */
  write(): void {
    for (const page of this.#dirty) {
      const markers = this.#page(page);
      while (markers.length > 0 && markers[markers.length - 1] === null) markers.pop();
      if (markers.length === 0)
        this.#sql.exec("DELETE FROM inbox_pages WHERE room_id = ? AND page = ?", this.room, page);
      else
        this.#sql.exec(
          "INSERT INTO inbox_pages (room_id, page, markers) VALUES (?, ?, ?) ON CONFLICT (room_id, page) DO UPDATE SET markers = excluded.markers",
          this.room,
          page,
          JSON.stringify(markers),
        );
    }
    this.#dirty.clear();
  }

  #locate(user: string): { page: number; slot: number } | null {
    let at = this.#where.get(user);
    if (at === undefined) {
      at =
        this.#sql
          .exec<{ page: number; slot: number }>(
            "SELECT page, slot FROM inbox_members WHERE room_id = ? AND user_id = ?",
            this.room,
            user,
          )
          .toArray()[0] ?? null;
      this.#where.set(user, at);
    }
    return at;
  }

  #page(page: number): PageMarkers {
    let markers = this.#pages.get(page);
    if (!markers) {
      const row = this.#sql
        .exec<{ markers: string }>(
          "SELECT markers FROM inbox_pages WHERE room_id = ? AND page = ?",
          this.room,
          page,
        )
        .toArray()[0];
      markers = row ? (JSON.parse(row.markers) as PageMarkers) : [];
      this.#pages.set(page, markers);
    }
    return markers;
  }

  #memberCounts(): Map<number, number> {
    if (!this.#counts) {
      this.#counts = new Map();
      for (const r of this.#sql.exec<{ page: number; n: number }>(
        "SELECT page, COUNT(*) AS n FROM inbox_members WHERE room_id = ? GROUP BY page",
        this.room,
      ))
        this.#counts.set(r.page, r.n);
    }
    return this.#counts;
  }
}
