/**
 * @module `GET /api/admin/stats`: the caller's tenant in numbers, for its owners and admins. Every
 * count comes from D1 in one batch (one round trip), scoped to the tenant; the only live figures
 * come from the tenant's presence shards (at most 64, one small query each). Nothing asks the room
 * objects: a tenant may have thousands, and waking each to read its counters would cost a
 * subrequest per room. docs/observability.md says what each number means.
 */
import { count, eq, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { directoryDb } from "../../platform/residency.ts";
import { ROLES, ROOM_KINDS } from "../../protocol/index.ts";
import { requireAdmin } from "../auth/admin.ts";
import { archivedEvents } from "../db/history-schema.ts";
import { attachments, deadLetters, exports, rooms, users } from "../db/schema.ts";
import { placementsOf, shardDb } from "../history/placement.ts";
import { presenceStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

const EXPORT_STATUSES = ["running", "done", "failed"] as const;

/** Counts keyed by every possible value, so a kind with no rows reads 0 rather than missing. */
function tally<K extends string>(keys: readonly K[], rows: { key: K; n: number }[]): Record<K, number> {
  const out = Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
  for (const r of rows) if (r.key in out) out[r.key] = r.n;
  return out;
}

const sum = (values: Record<string, number>) => Object.values(values).reduce((a, b) => a + b, 0);

/** Live presence: sessions and users by status, summed over the tenant's shards; null when a shard
 * did not answer (a partial sum would read as a drop in users). */
async function presenceOf(env: Env, tenantId: string) {
  const shards = limitsOf(env).presenceShards;
  try {
    const parts = await Promise.all(
      Array.from({ length: shards }, (_, n) => presenceStub(env, tenantId, n).counts()),
    );
    return {
      sessions: parts.reduce((a, p) => a + p.sessions, 0),
      online: parts.reduce((a, p) => a + p.users.online, 0),
      away: parts.reduce((a, p) => a + p.users.away, 0),
      dnd: parts.reduce((a, p) => a + p.users.dnd, 0),
    };
  } catch {
    return null;
  }
}

/** The tenant's archived events in the D1 history's window, summed over the shards its placements
 * name. The one count that reads as many rows as the tenant has archived events in the window (see
 * the module doc and docs/observability.md): fine for an admin page, not for a dashboard polling
 * every second. */
async function archiveCounts(env: Env, tenantId: string) {
  const shards = [...new Set((await placementsOf(env, tenantId)).map((p) => p.shard))];
  const isMessage = sql`${archivedEvents.kind} = 'message'`;
  const parts = await Promise.all(
    shards.map(async (name) => {
      const [row] = await drizzle(shardDb(env, tenantId, name))
        .select({
          events: count(),
          messages: sql<number>`coalesce(sum(${isMessage} AND ${archivedEvents.deleted} = 0), 0)`,
          deletedMessages: sql<number>`coalesce(sum(${isMessage} AND ${archivedEvents.deleted} = 1), 0)`,
        })
        .from(archivedEvents)
        .where(eq(archivedEvents.tenantId, tenantId));
      return row ?? { events: 0, messages: 0, deletedMessages: 0 };
    }),
  );
  return {
    events: parts.reduce((a, p) => a + p.events, 0),
    messages: parts.reduce((a, p) => a + p.messages, 0),
    deletedMessages: parts.reduce((a, p) => a + p.deletedMessages, 0),
  };
}

export const statsRoutes = new Hono<AppEnv>().get("/", async (c) => {
  const me = c.get("identity");
  requireAdmin(me, "read the tenant's stats");
  const t = me.tenantId;
  const db = drizzle(directoryDb(c.env, t));
  const live = presenceOf(c.env, t);
  const archived = archiveCounts(c.env, t);
  const [roomRows, userRows, [files], [letters], exportRows] = await db.batch([
    db.select({ key: rooms.kind, n: count() }).from(rooms).where(eq(rooms.tenantId, t)).groupBy(rooms.kind),
    db.select({ key: users.role, n: count() }).from(users).where(eq(users.tenantId, t)).groupBy(users.role),
    db
      .select({ n: count(), bytes: sql<number>`coalesce(sum(${attachments.size}), 0)` })
      .from(attachments)
      .where(eq(attachments.tenantId, t)),
    db.select({ n: count() }).from(deadLetters).where(eq(deadLetters.tenantId, t)),
    db
      .select({ key: exports.status, n: count(), bytes: sql<number>`coalesce(sum(${exports.bytes}), 0)` })
      .from(exports)
      .where(eq(exports.tenantId, t))
      .groupBy(exports.status),
  ]);
  const roomsByKind = tally(ROOM_KINDS, roomRows);
  const usersByRole = tally(ROLES, userRows);
  const exportsByStatus = tally(EXPORT_STATUSES, exportRows);
  const archive = await archived;
  return c.json({
    tenant: t,
    generatedAt: Date.now(),
    rooms: { total: sum(roomsByKind), byKind: roomsByKind },
    users: { total: sum(usersByRole), byRole: usersByRole },
    archive: {
      events: archive.events,
      messages: archive.messages,
      deletedMessages: archive.deletedMessages,
    },
    attachments: { count: files?.n ?? 0, bytes: files?.bytes ?? 0 },
    deadLetters: { pending: letters?.n ?? 0 },
    exports: {
      total: sum(exportsByStatus),
      byStatus: exportsByStatus,
      bytes: exportRows.reduce((a, r) => a + r.bytes, 0),
    },
    presence: await live,
  });
});
