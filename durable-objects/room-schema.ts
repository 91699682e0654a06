/**
 * @module The room object's SQLite schema: its versioned migrations (run once each, in order, by
 * the shared runner in schema.ts, from the room log's constructor), and the R2 key of a segment,
 * which one migration needs to rebuild ranges an old release had deleted. Every table of the room
 * is created here, whichever module uses it (room-log, room-cold, room-archive, room-inbox,
 * room-attachments).
 */
import { chainNext, GENESIS, legacyDigest } from "../protocol/chain.ts";
import { ENDED_USERS_TABLE } from "./ended-users.ts";
import type { Migration } from "./schema.ts";

/** A segment's R2 key: `<tenant>/rooms/<room>/segments/<from>-<to>.ndjson.gz`, `from` zero-padded
 * so that a listing sorts in seq order. */
export function segmentKey(prefix: string, from: number, to: number): string {
  return `${prefix}/segments/${String(from).padStart(12, "0")}-${to}.ndjson.gz`;
}

/** Versioned schema: each entry runs once, in order, recorded in `meta.schema_version`. */
export const ROOM_MIGRATIONS: Migration[] = [
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
  // v2: the hash chain, the transactional outbox and the cold segments.
  `ALTER TABLE events ADD COLUMN digest TEXT NOT NULL DEFAULT '';
   ALTER TABLE events ADD COLUMN chain TEXT NOT NULL DEFAULT '';
   CREATE TABLE outbox (seq INTEGER PRIMARY KEY, sent_at INTEGER);
   CREATE TABLE segments (
     from_seq INTEGER PRIMARY KEY,
     to_seq INTEGER NOT NULL,
     object_key TEXT NOT NULL,
     dirty INTEGER NOT NULL DEFAULT 0
   );
   INSERT INTO outbox (seq) SELECT seq FROM events;`,
  // v2 for a log written before it: chain the events already there, in order.
  (sql) => {
    let chain = GENESIS;
    for (const row of sql.exec<{ seq: number; json: string }>("SELECT seq, json FROM events ORDER BY seq")) {
      const digest = legacyDigest(row.json);
      chain = chainNext(chain, row.seq, digest);
      sql.exec("UPDATE events SET digest = ?, chain = ? WHERE seq = ?", digest, chain, row.seq);
    }
  },
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
  // The alarm asks the outbox what is unsent and what was sent longest ago: from an index, not a
  // scan, so a backlog while the archive is down does not make every alarm slower.
  `CREATE INDEX outbox_sent ON outbox(sent_at);`,
  // v6: digest scheme 2 (protocol/chain.ts) for every event appended from now on. History is not
  // rewritten: the events already here keep their scheme-1 digests and their chain (the column's
  // default says so), and `#reconcile` records them for signed heads.
  `ALTER TABLE events ADD COLUMN scheme INTEGER NOT NULL DEFAULT 1;
   ALTER TABLE events ADD COLUMN nonce TEXT;
   ALTER TABLE events ADD COLUMN content_hash TEXT;
   ALTER TABLE events ADD COLUMN meta_hash TEXT;`,
  // v7: the D1 history is shipped by watermark (room-archive.ts), not by an outbox row per event,
  // to history shards of its own (docs/architecture.md). Those start empty, so the watermarks start
  // at 0: the room sends its log again (the part inside the history's window; room-archive.ts skips
  // the rest), and the consumer is idempotent. Search, new too, starts from 0 the same way.
  `DROP TABLE outbox;
   CREATE TABLE archive_acks (from_seq INTEGER PRIMARY KEY, to_seq INTEGER NOT NULL);`,
  // v8: R2 holds the complete history (docs/architecture.md, decision 4). Segments are sealed as
  // soon as they are due, carry each event's commitments (format 2: protocol/chain.ts
  // segmentLine) and keep retention's tombstones; rows older than the command window go. Segments
  // of the old format (the event's JSON alone) are rewritten from the rows, which are all still
  // here; `redactions` lists messages deleted while older than the command window until their
  // segments are rewritten; `sealed_seq` starts where the old release had moved ranges to.
  `ALTER TABLE segments ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
   ALTER TABLE segments ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE segments ADD COLUMN edit_targets TEXT NOT NULL DEFAULT '[]';
   CREATE INDEX segments_dirty ON segments(from_seq) WHERE dirty > 0;
   CREATE TABLE redactions (seq INTEGER PRIMARY KEY);
   UPDATE segments SET dirty = dirty + 1,
     last_ts = COALESCE((SELECT ts FROM events WHERE events.seq = segments.to_seq), 0);
   INSERT INTO meta (key, value) SELECT 'sealed_seq', value FROM meta WHERE key = 'cold_seq';`,
  // v8, continued: the old release deleted a segment once all its events had expired (their
  // tombstones stayed in rows). Such ranges get a segment again, written from those rows.
  (sql) => {
    const meta = new Map(
      sql
        .exec<{ key: string; value: string }>("SELECT key, value FROM meta")
        .toArray()
        .map((r) => [r.key, r.value]),
    );
    const sealed = Number(meta.get("cold_seq") ?? 0);
    const tenant = meta.get("tenantId");
    const room = meta.get("roomId");
    if (sealed === 0 || tenant === undefined || room === undefined) return;
    const covered = sql
      .exec<{ from_seq: number; to_seq: number }>("SELECT from_seq, to_seq FROM segments ORDER BY from_seq")
      .toArray();
    const gaps: [number, number][] = [];
    let next = 1;
    for (const seg of covered) {
      if (seg.from_seq > next) gaps.push([next, seg.from_seq - 1]);
      next = Math.max(next, seg.to_seq + 1);
    }
    if (next <= sealed) gaps.push([next, sealed]);
    for (const [from, to] of gaps) {
      for (let f = from; f <= to; f += LEGACY_GAP_EVENTS) {
        const t = Math.min(to, f + LEGACY_GAP_EVENTS - 1);
        const lastTs =
          sql.exec<{ ts: number }>("SELECT ts FROM events WHERE seq = ?", t).toArray()[0]?.ts ?? 0;
        sql.exec(
          "INSERT INTO segments (from_seq, to_seq, object_key, dirty, last_ts) VALUES (?, ?, ?, 1, ?)",
          f,
          t,
          segmentKey(`${tenant}/rooms/${room}`, f, t),
          lastTs,
        );
      }
    }
  },
  // v9: `msgs`, the number of messages through this event (its own row: no row more per message),
  // so the inbox (room-inbox.ts) counts the messages between two seqs as a difference. Rows already
  // here count from the oldest one: only differences above the command window's floor and
  // retention are ever used, and there every row's kind is still what it was.
  `ALTER TABLE events ADD COLUMN msgs INTEGER NOT NULL DEFAULT 0;
   UPDATE events SET msgs = c.n FROM (
     SELECT seq, SUM(kind = 'message') OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS n FROM events
   ) AS c WHERE c.seq = events.seq;`,
  // v10: read markers by page (docs/architecture.md, decision 7): up to `MARKERS_PER_PAGE` members'
  // markers in one JSON row, so a flush writes a row per page that moved, not one per reader. The
  // markers so far move over from `members.read_seq`, which is written no more.
  (sql) => {
    sql.exec("CREATE TABLE read_pages (page INTEGER PRIMARY KEY, markers TEXT NOT NULL)");
    const marked = sql
      .exec<{ user_id: string; read_seq: number }>(
        "SELECT user_id, read_seq FROM members WHERE read_seq > 0 ORDER BY user_id",
      )
      .toArray();
    for (let page = 0; page * MARKERS_PER_PAGE < marked.length; page++) {
      const chunk = marked.slice(page * MARKERS_PER_PAGE, (page + 1) * MARKERS_PER_PAGE);
      const markers = Object.fromEntries(chunk.map((r) => [r.user_id, r.read_seq]));
      sql.exec("INSERT INTO read_pages (page, markers) VALUES (?, ?)", page, JSON.stringify(markers));
    }
  },
  // v11: a thread's followers (who wrote in it, who was mentioned in it) are found from its replies
  // when a reply is pushed to its followers' inboxes for notifications (room-inbox.ts).
  "CREATE INDEX IF NOT EXISTS events_thread ON events(thread_root) WHERE thread_root IS NOT NULL;",
  // v12: the people whose account was deactivated (ended-users.ts): their streams are refused here.
  ENDED_USERS_TABLE,
  // v13: the watermarks written behind (room-log.ts `WRITTEN_BEHIND`) share one meta row, so that
  // writing them is one row, not one each. Their rows of a key each stay, no longer written, for
  // one release: a rollback resumes from them (what it sends again is applied idempotently); the
  // next release deletes them (docs/deploy.md, step 10).
  `INSERT INTO meta (key, value)
     SELECT 'watermarks', json_group_object(key, CAST(value AS INTEGER)) FROM meta
     WHERE key IN ('search_indexed', 'archive_confirmed', 'archive_sent', 'archive_sent_at')
     HAVING COUNT(*) > 0;`,
];

/** Members' read markers per row of `read_pages` (docs/architecture.md, decision 7). */
export const MARKERS_PER_PAGE = 100;

/** Events per segment rebuilt for a range the old release had deleted (see migration v8). */
const LEGACY_GAP_EVENTS = 1000;
