/** @module Finding a tenant's room in the directory and reaching its Durable Object. */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import type { Room } from "../durable-objects/room.ts";
import type { Identity } from "./auth/identity.ts";
import { memberships, rooms } from "./db/schema.ts";
import { ApiError } from "./errors.ts";
import { directoryDb, tenantNamespace } from "./residency.ts";

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
  const db = drizzle(directoryDb(env, identity.tenantId));
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

/** Takes a user out of a room: the directory row first (what findRoom checks, so a private room
 * vanishes for them at once and cannot be rejoined), then the object (a sequenced member_leave;
 * their sockets close). Retrying after a failure half-way finishes the job. */
export async function unenroll(env: Env, room: RoomRow, userId: string, actor: { id: string; name: string }) {
  await drizzle(directoryDb(env, room.tenantId))
    .delete(memberships)
    .where(and(eq(memberships.roomId, room.id), eq(memberships.userId, userId)));
  const result = await roomStub(env, room.tenantId, room.id).leave(userId, actor);
  if (!result.ok) throw ApiError.from(result);
  return result.seq !== null;
}

/** Pushes a user's directory role and name to every room they are in, so each room authorizes by
 * the current role. Idempotent: repeating it after a partial failure repairs the rooms it missed. */
export async function pushMember(
  env: Env,
  tenantId: string,
  user: { id: string; name: string; role: string },
) {
  const joined = await drizzle(directoryDb(env, tenantId))
    .select({ roomId: memberships.roomId })
    .from(memberships)
    .where(and(eq(memberships.tenantId, tenantId), eq(memberships.userId, user.id)))
    .all();
  await Promise.all(joined.map((r) => roomStub(env, tenantId, r.roomId).updateMember(user)));
}
