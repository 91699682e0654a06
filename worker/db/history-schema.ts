/**
 * @module The D1 schema (drizzle) of the history shards (HISTORY_<n>, HISTORY_<J>_<n>): a window
 * (PARLEY_HISTORY_DAYS) of every room event of the tenants placed on the shard. Migrations in
 * migrations/history/ are generated from this file by `npm run db:generate`
 * (drizzle.history.config.ts). Every query filters by tenant.
 */
import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * The history: every room event, copied from the room's log by the room-events queue consumer,
 * idempotently on (tenant, room, seq). `text` is the message's current text (edits applied by the
 * highest `text_seq`, cleared by a delete; search has its own shards, durable-objects/search.ts).
 */
export const archivedEvents = sqliteTable(
  "archived_events",
  {
    tenantId: text("tenant_id").notNull(),
    roomId: text("room_id").notNull(),
    seq: integer("seq").notNull(),
    kind: text("kind").notNull(),
    authorId: text("author_id").notNull(),
    authorName: text("author_name").notNull(),
    ts: integer("ts").notNull(),
    target: integer("target"),
    text: text("text").notNull().default(""),
    textSeq: integer("text_seq").notNull().default(0),
    deleted: integer("deleted").notNull().default(0),
    json: text("json").notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.roomId, t.seq] }),
    // With seq last, the latest edit of a message (MAX(seq) by target) is read from the index alone;
    // without it SQLite walked the room's primary key backwards: O(archived events) per message.
    index("archived_target").on(t.tenantId, t.roomId, t.target, t.seq),
    // The window's deletions find the oldest rows from here, not by a scan of the shard.
    index("archived_ts").on(t.ts),
  ],
);
