/** @module Finding a tenant's room in the directory and reaching its Durable Object. */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import type { Room } from "../durable-objects/room.ts";
import type { Identity } from "./auth/identity.ts";
import { memberships, rooms } from "./db/schema.ts";
import { ApiError } from "./errors.ts";
import { tenantNamespace } from "./residency.ts";

export type RoomRow = typeof rooms.$inferSelect;

/**
 * The room with this id that the caller may see, or 404: another tenant's room, a private room
 * or dm the caller is not in, and (for guests) any room they were not invited to are all
 * indistinguishable from a room that does not exist.
 */
export async function findRoom(env: Env, identity: Identity, roomId: string): Promise<RoomRow> {
  if (!/^r_[0-9a-z]{20}$/.test(roomId)) throw new ApiError("not_found", "no such room");
  if (identity.roomScope && !identity.roomScope.includes(roomId))
    throw new ApiError("not_found", "no such room");
  const db = drizzle(env.DB);
  const row = await db
    .select()
    .from(rooms)
    .where(and(eq(rooms.id, roomId), eq(rooms.tenantId, identity.tenantId)))
    .get();
  if (!row) throw new ApiError("not_found", "no such room");
  if (row.kind !== "channel" || identity.role === "guest") {
    const member = await db
      .select({ userId: memberships.userId })
      .from(memberships)
      .where(and(eq(memberships.roomId, roomId), eq(memberships.userId, identity.userId)))
      .get();
    if (!member) throw new ApiError("not_found", "no such room");
  }
  return row;
}

/** The namespace a tenant's rooms live in (see residency.ts). */
export function roomNamespace(env: Env, tenantId: string): DurableObjectNamespace<Room> {
  return tenantNamespace(env, env.ROOM, tenantId);
}

/** Every Durable Object name starts with the tenant id. */
export function roomStub(env: Env, tenantId: string, roomId: string) {
  const namespace = roomNamespace(env, tenantId);
  return namespace.get(namespace.idFromName(`${tenantId}:${roomId}`));
}

export const ADMIN_ROLES: ReadonlySet<string> = new Set(["owner", "admin"]);

export function actorOf(identity: Identity) {
  return { id: identity.userId, name: identity.name, role: identity.role };
}

/** Takes a user out of a room: the object first (their sockets close at once), then the directory. */
export async function unenroll(env: Env, room: RoomRow, userId: string, actor: { id: string; name: string }) {
  const result = await roomStub(env, room.tenantId, room.id).leave(userId, actor);
  if (!result.ok) throw ApiError.from(result);
  await drizzle(env.DB)
    .delete(memberships)
    .where(and(eq(memberships.roomId, room.id), eq(memberships.userId, userId)));
  return result.seq !== null;
}
