/**
 * @module The D1 schema (drizzle): the tenant directory and the cross-room index. Migrations in
 * migrations/ are generated from this file by `npm run db:generate` (drizzle-kit); never edit the
 * SQL by hand. Every table is keyed or filtered by tenant: a query without a tenant is a bug.
 */
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";

export const tenants = sqliteTable("tenants", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  createdAt: integer("created_at").notNull(),
});

export const ROLES = ["owner", "admin", "member", "guest", "bot"] as const;
export type Role = (typeof ROLES)[number];

export const users = sqliteTable(
  "users",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    email: text("email").notNull(),
    name: text("name").notNull(),
    role: text("role", { enum: ROLES }).notNull(),
    createdAt: integer("created_at").notNull(),
    lastLoginAt: integer("last_login_at").notNull(),
  },
  (t) => [uniqueIndex("users_tenant_email").on(t.tenantId, t.email)],
);

export const ROOM_KINDS = ["channel", "private", "dm"] as const;
export type RoomKind = (typeof ROOM_KINDS)[number];

export const rooms = sqliteTable(
  "rooms",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    name: text("name").notNull(),
    kind: text("kind", { enum: ROOM_KINDS }).notNull(),
    topic: text("topic").notNull().default(""),
    createdBy: text("created_by")
      .notNull()
      .references(() => users.id),
    createdAt: integer("created_at").notNull(),
    /** For a dm: its member ids, sorted and joined, so the same member set finds the same room. */
    dmKey: text("dm_key"),
  },
  (t) => [
    index("rooms_tenant_kind").on(t.tenantId, t.kind),
    uniqueIndex("rooms_tenant_dm").on(t.tenantId, t.dmKey),
  ],
);

/** Who belongs to which room. The room object is the authority for a room's members (it sequences
 * `member_join`/`member_leave`); this table is the directory's copy, used to list a user's rooms. */
export const memberships = sqliteTable(
  "memberships",
  {
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    roomId: text("room_id")
      .notNull()
      .references(() => rooms.id),
    userId: text("user_id")
      .notNull()
      .references(() => users.id),
    joinedAt: integer("joined_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.roomId, t.userId] }), index("memberships_user").on(t.tenantId, t.userId)],
);

/** API tokens for bots: created by a tenant admin, shown once, stored only as a SHA-256 hash. Each
 * token acts as its own bot user; `rooms` (JSON array) optionally limits it to some rooms. */
export const apiTokens = sqliteTable(
  "api_tokens",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    userId: text("user_id")
      .notNull()
      .references(() => users.id),
    name: text("name").notNull(),
    hash: text("hash").notNull(),
    rooms: text("rooms"),
    createdBy: text("created_by")
      .notNull()
      .references(() => users.id),
    createdAt: integer("created_at").notNull(),
    revokedAt: integer("revoked_at"),
  },
  (t) => [index("api_tokens_tenant").on(t.tenantId)],
);

/** Who did what to whom, per tenant, newest last; read by admins through /api/audit. */
export const auditLog = sqliteTable(
  "audit_log",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    actorId: text("actor_id").notNull(),
    action: text("action").notNull(),
    target: text("target").notNull(),
    detail: text("detail").notNull().default("{}"),
    at: integer("at").notNull(),
  },
  (t) => [index("audit_tenant").on(t.tenantId, t.id)],
);

/**
 * The archive: every room event, copied from the room's log by the room-events queue consumer,
 * idempotently on (tenant, room, seq). `text` is the message's current text (edits applied by the
 * highest `text_seq`, cleared by a delete) and is what search indexes (archive_fts, migrations/0003).
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
    index("archived_target").on(t.tenantId, t.roomId, t.target),
  ],
);
