/**
 * @module Rooms in the directory: list, create, join, leave, add a member. The room object is the
 * authority for membership (it sequences member_join/member_leave); D1 keeps the directory's copy.
 * Adding goes D1 then object, removing goes object then D1, so a failure half-way leaves a user
 * with less access, never more, and retrying the same call repairs it.
 */
import { and, eq, inArray, or } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../auth/identity.ts";
import { memberships, ROOM_KINDS, rooms, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { newId } from "../ids.ts";
import { findRoom, type RoomRow, roomStub } from "../rooms.ts";
import type { AppEnv } from "../types.ts";

/** Room as `GET /api/rooms` lists it (PROTOCOL.md), plus whether the caller has joined. */
async function describe(env: Env, me: Identity, room: RoomRow, joined: boolean) {
  const summary = await roomStub(env, room.tenantId, room.id).summary(me.userId);
  return {
    id: room.id,
    name: room.name,
    kind: room.kind,
    topic: room.topic,
    joined,
    lastSeq: summary.lastSeq,
    readSeq: summary.readSeq,
    unread: summary.unread,
    mentions: summary.mentions,
  };
}

type Person = { id: string; name: string; role: string };

/** Most users one request may add to a room (`members` on create). */
const MAX_MEMBERS_PER_REQUEST = 100;

/** Puts a user in a room: directory row, then the room object's sequenced join by `actor`.
 * Idempotent. */
async function enroll(env: Env, room: RoomRow, user: Person, actor: Person = user) {
  await drizzle(env.DB)
    .insert(memberships)
    .values({ tenantId: room.tenantId, roomId: room.id, userId: user.id, joinedAt: Date.now() })
    .onConflictDoNothing();
  const stub = roomStub(env, room.tenantId, room.id);
  await stub.init({ tenantId: room.tenantId, roomId: room.id, name: room.name, kind: room.kind });
  const result = await stub.join(user, { id: actor.id, name: actor.name });
  if (!result.ok) throw ApiError.from(result);
}

/** The users of the caller's tenant with these ids; 404 if any is not one of them. */
async function tenantUsers(env: Env, me: Identity, ids: unknown): Promise<Person[]> {
  if (
    !Array.isArray(ids) ||
    ids.length > MAX_MEMBERS_PER_REQUEST ||
    !ids.every((id) => typeof id === "string")
  ) {
    throw new ApiError(
      "bad_request",
      `members must be an array of at most ${MAX_MEMBERS_PER_REQUEST} user ids`,
    );
  }
  const wanted = [...new Set(ids as string[])];
  if (wanted.length === 0) return [];
  const found = await drizzle(env.DB)
    .select({ id: users.id, name: users.name, role: users.role })
    .from(users)
    .where(and(eq(users.tenantId, me.tenantId), inArray(users.id, wanted)))
    .all();
  if (found.length !== wanted.length) throw new ApiError("not_found", "no such user");
  // In the order the caller gave, so the join events are sequenced as asked.
  return found.sort((a, b) => wanted.indexOf(a.id) - wanted.indexOf(b.id));
}

export const roomRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = c.get("identity");
    const db = drizzle(c.env.DB);
    const mine = db
      .select({ roomId: memberships.roomId })
      .from(memberships)
      .where(and(eq(memberships.tenantId, me.tenantId), eq(memberships.userId, me.userId)));
    const joinedIds = new Set((await mine.all()).map((r) => r.roomId));
    const visible = await db
      .select()
      .from(rooms)
      .where(and(eq(rooms.tenantId, me.tenantId), or(eq(rooms.kind, "channel"), inArray(rooms.id, mine))))
      .orderBy(rooms.name)
      .all();
    return c.json(
      await Promise.all(visible.map((room) => describe(c.env, me, room, joinedIds.has(room.id)))),
    );
  })
  .post("/", async (c) => {
    const me = c.get("identity");
    const limits = limitsOf(c.env);
    const body = await readJsonObject(c, limits.maxJsonBodyBytes);
    const name = typeof body.name === "string" ? body.name.trim() : "";
    if (name.length === 0 || name.length > limits.maxRoomNameChars) {
      throw new ApiError("bad_request", `name must be 1-${limits.maxRoomNameChars} characters`);
    }
    const topic = body.topic === undefined ? "" : body.topic;
    if (typeof topic !== "string" || topic.length > limits.maxRoomTopicChars) {
      throw new ApiError(
        "bad_request",
        `topic must be a string of at most ${limits.maxRoomTopicChars} characters`,
      );
    }
    const kind = body.kind ?? "channel";
    if (!ROOM_KINDS.includes(kind as never))
      throw new ApiError("bad_request", `kind must be one of ${ROOM_KINDS.join(", ")}`);
    if (kind !== "channel")
      throw new ApiError("bad_request", "only kind channel can be created in this version");
    const invited = await tenantUsers(c.env, me, body.members ?? []);
    const room: RoomRow = {
      id: newId("r"),
      tenantId: me.tenantId,
      name,
      kind: "channel",
      topic,
      createdBy: me.userId,
      createdAt: Date.now(),
    };
    await drizzle(c.env.DB).insert(rooms).values(room);
    const creator = { id: me.userId, name: me.name, role: me.role };
    await enroll(c.env, room, creator);
    for (const user of invited) if (user.id !== me.userId) await enroll(c.env, room, user, creator);
    return c.json(await describe(c.env, me, room, true), 201);
  })
  .post("/:roomId/join", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    if (room.kind !== "channel") throw new ApiError("not_found", "no such room");
    await enroll(c.env, room, { id: me.userId, name: me.name, role: me.role });
    return c.json(await describe(c.env, me, room, true));
  })
  .post("/:roomId/leave", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    const result = await roomStub(c.env, room.tenantId, room.id).leave(me.userId, {
      id: me.userId,
      name: me.name,
    });
    if (!result.ok) throw ApiError.from(result);
    await drizzle(c.env.DB)
      .delete(memberships)
      .where(and(eq(memberships.roomId, room.id), eq(memberships.userId, me.userId)));
    return c.json({ ok: true });
  })
  .post("/:roomId/members", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    const stub = roomStub(c.env, room.tenantId, room.id);
    if (!(await stub.isMember(me.userId)))
      throw new ApiError("forbidden", "only members may add people to a room");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    if (typeof body.userId !== "string") throw new ApiError("bad_request", "userId must be a string");
    const [user] = await tenantUsers(c.env, me, [body.userId]);
    if (user) await enroll(c.env, room, user, { id: me.userId, name: me.name, role: me.role });
    return c.json({ ok: true });
  });
