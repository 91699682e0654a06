/** @module Finding a tenant's room in the directory and reaching its Durable Object. */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import type { Identity } from "../platform/identity.ts";
import { directoryDb } from "../platform/residency.ts";
import type { Role } from "../protocol/index.ts";
import { memberships, rooms } from "./db/schema.ts";
import { ApiError } from "./errors.ts";
import { roomStub } from "./stubs.ts";

export type RoomRow = typeof rooms.$inferSelect;

/** What never changes about a room once it exists: rooms are never deleted, and neither their
 * tenant nor their kind changes (name and topic do, and are not here). */
export type RoomFacts = Pick<RoomRow, "id" | "tenantId" | "kind">;

/** Facts of rooms this isolate has looked up, by `<tenantId>:<roomId>`: a socket's connect and a
 * command over HTTP then need no directory query to find a channel. Bounded; the oldest go first. */
const known = new Map<string, RoomFacts>();
const KNOWN_ROOMS = 10_000;

function remember(row: RoomFacts): void {
  if (known.size >= KNOWN_ROOMS) known.delete(known.keys().next().value as string);
  known.set(`${row.tenantId}:${row.id}`, { id: row.id, tenantId: row.tenantId, kind: row.kind });
}

/**
 * The room with this id that the caller may see, or 404: another tenant's room, a private room
 * or dm the caller is not in, and (for guests) any room they were not invited to are all
 * indistinguishable from a room that does not exist.
 */
export async function findRoom(env: Env, identity: Identity, roomId: string): Promise<RoomRow> {
  checkScope(identity, roomId);
  const row = await drizzle(directoryDb(env, identity.tenantId))
    .select()
    .from(rooms)
    .where(and(eq(rooms.id, roomId), eq(rooms.tenantId, identity.tenantId)))
    .get();
  if (!row) throw new ApiError("not_found", "no such room");
  remember(row);
  await checkMember(env, identity, row);
  return row;
}

/** As `findRoom`, for a caller that needs only the room's facts (to reach its object): a channel
 * this isolate has seen needs no query. The room object checks membership again, as it does on
 * every command. */
export async function reachRoom(env: Env, identity: Identity, roomId: string): Promise<RoomFacts> {
  checkScope(identity, roomId);
  const facts = known.get(`${identity.tenantId}:${roomId}`);
  if (!facts) return findRoom(env, identity, roomId);
  await checkMember(env, identity, facts);
  return facts;
}

function checkScope(identity: Identity, roomId: string): void {
  if (!/^r_[0-9a-z]{20}$/.test(roomId)) throw new ApiError("not_found", "no such room");
  if (identity.roomScope && !identity.roomScope.includes(roomId))
    throw new ApiError("not_found", "no such room");
}

/** Private rooms and dms (and every room, for guests) are visible to their members only. */
async function checkMember(env: Env, identity: Identity, room: RoomFacts): Promise<void> {
  if (room.kind === "channel" && identity.role !== "guest") return;
  const member = await drizzle(directoryDb(env, identity.tenantId))
    .select({ userId: memberships.userId })
    .from(memberships)
    .where(and(eq(memberships.roomId, room.id), eq(memberships.userId, identity.userId)))
    .get();
  if (!member) throw new ApiError("not_found", "no such room");
}

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
export async function pushMember(env: Env, tenantId: string, user: { id: string; name: string; role: Role }) {
  const joined = await drizzle(directoryDb(env, tenantId))
    .select({ roomId: memberships.roomId })
    .from(memberships)
    .where(and(eq(memberships.tenantId, tenantId), eq(memberships.userId, user.id)))
    .all();
  await Promise.all(joined.map((r) => roomStub(env, tenantId, r.roomId).updateMember(user)));
}
