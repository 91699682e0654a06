/**
 * @module The D1 schema (drizzle) of the directory, one database per jurisdiction (DB, DB_EU):
 * tenants, users, rooms, memberships, tokens, audit, attachment and export records, dead letters and
 * where each tenant's history lives. Migrations in migrations/ are generated from this file by
 * `npm run db:generate` (drizzle-kit); never edit the SQL by hand (the FTS5 one, which drizzle
 * cannot describe, is a `--custom` migration). The history shards have their own schema
 * (history-schema.ts). Every table is keyed or filtered by tenant: a query without a tenant is a bug.
 */
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import { ROLES, ROOM_KINDS } from "../../protocol/index.ts";

export const tenants = sqliteTable("tenants", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  createdAt: integer("created_at").notNull(),
  /** Retention policy: events older than this many days are removed everywhere (tombstones keep
   * their seqs); null keeps history forever. Pushed to every room object when changed. */
  retentionDays: integer("retention_days"),
  /** Whether push notifications may show the room, who wrote and the start of the text (1), or only
   * that something came (0): some tenants' compliance forbids message text on lock screens. Pushed
   * to every presence shard of the tenant when changed. */
  notificationPreviews: integer("notification_previews").notNull().default(1),
  /** SCIM groups whose members get a role (JSON `{"admin":[name],"guest":[name]}`): being in an
   * admin group makes an admin, leaving the last one demotes (worker/routes/scim-groups.ts). */
  scimRoleGroups: text("scim_role_groups"),
});

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
    /** 0: deactivated (docs/architecture.md, decision 11): every request refused, every session
     * closed; the user's messages stay. */
    active: integer("active").notNull().default(1),
    deactivatedAt: integer("deactivated_at"),
    /** SCIM (worker/routes/scim.ts): the identity provider's id for the person, their name parts,
     * and when the provider deleted them (then SCIM answers 404; the row stays for their messages). */
    externalId: text("external_id"),
    givenName: text("given_name"),
    familyName: text("family_name"),
    scimDeletedAt: integer("scim_deleted_at"),
  },
  (t) => [
    uniqueIndex("users_tenant_email").on(t.tenantId, t.email),
    index("users_tenant_external").on(t.tenantId, t.externalId),
  ],
);

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
 * Where each tenant's D1 history lives (worker/history/placement.ts): from `from_ts` on, until the
 * tenant's next placement, its events go to the history shard bound as `shard` (a binding name such
 * as HISTORY_1) of its jurisdiction. A tenant is placed when it is created; a shard past its fill
 * limit gets the tenant's next period on another shard.
 */
export const historyPlacements = sqliteTable(
  "history_placements",
  {
    tenantId: text("tenant_id").notNull(),
    fromTs: integer("from_ts").notNull(),
    shard: text("shard").notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.fromTs] })],
);

/**
 * The first round's archive (with its FTS5 index `archive_fts`, migrations/0003), which every tenant
 * shared: nothing writes or reads it any more (the history shards and the search shards replaced
 * it, docs/architecture.md). It stays one release, so that a rollback finds the tables its code
 * expects (docs/deploy.md, "migrations only add"); the next release's migration drops both.
 */
export const legacyArchivedEvents = sqliteTable(
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
    index("archived_target").on(t.tenantId, t.roomId, t.target, t.seq),
  ],
);

/** Uploaded files. The bytes live in R2 under `object_key` (tenant-prefixed); the room object is the
 * authority on whether a message references an attachment, and deletes unreferenced ones (row and
 * object) after a grace period. */
export const attachments = sqliteTable(
  "attachments",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    roomId: text("room_id").notNull(),
    uploaderId: text("uploader_id").notNull(),
    name: text("name").notNull(),
    contentType: text("content_type").notNull(),
    size: integer("size").notNull(),
    objectKey: text("object_key").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("attachments_room").on(t.tenantId, t.roomId)],
);

/** Messages the room-events queue gave up on (its dead-letter queue's consumer records them here),
 * for a tenant admin to list and replay. `tenant_id` is null when the body was unreadable. */
export const deadLetters = sqliteTable(
  "dead_letters",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id"),
    roomId: text("room_id"),
    seq: integer("seq"),
    body: text("body").notNull(),
    attempts: integer("attempts").notNull(),
    receivedAt: integer("received_at").notNull(),
  },
  (t) => [index("dead_letters_tenant").on(t.tenantId, t.receivedAt)],
);

/** eDiscovery exports: NDJSON files in R2 with a hash chain per room (see worker/exports). */
export const exports = sqliteTable(
  "exports",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    /** One room, or null for the whole tenant. */
    roomId: text("room_id"),
    requestedBy: text("requested_by").notNull(),
    status: text("status", { enum: ["running", "done", "failed"] }).notNull(),
    objectKey: text("object_key").notNull(),
    events: integer("events").notNull().default(0),
    bytes: integer("bytes").notNull().default(0),
    error: text("error"),
    createdAt: integer("created_at").notNull(),
    finishedAt: integer("finished_at"),
  },
  (t) => [index("exports_tenant").on(t.tenantId, t.createdAt)],
);

/** Outgoing webhooks (worker/routes/webhooks.ts): what the consumer forwards to, per tenant. The
 * signing secret and the delivery state live in the endpoint's own object (durable-objects/webhook.ts),
 * never here. */
export const webhooks = sqliteTable(
  "webhooks",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    url: text("url").notNull(),
    /** JSON arrays, or null for every room / every kind. */
    rooms: text("rooms"),
    kinds: text("kinds"),
    createdBy: text("created_by")
      .notNull()
      .references(() => users.id),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [index("webhooks_tenant").on(t.tenantId)],
);

/** SCIM groups (worker/routes/scim-groups.ts): what the identity provider says, kept to map roles. */
export const scimGroups = sqliteTable(
  "scim_groups",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id")
      .notNull()
      .references(() => tenants.id),
    displayName: text("display_name").notNull(),
    externalId: text("external_id"),
    createdAt: integer("created_at").notNull(),
  },
  (t) => [uniqueIndex("scim_groups_tenant_name").on(t.tenantId, t.displayName)],
);

export const scimGroupMembers = sqliteTable(
  "scim_group_members",
  {
    groupId: text("group_id")
      .notNull()
      .references(() => scimGroups.id),
    userId: text("user_id")
      .notNull()
      .references(() => users.id),
  },
  (t) => [primaryKey({ columns: [t.groupId, t.userId] }), index("scim_group_members_user").on(t.userId)],
);
