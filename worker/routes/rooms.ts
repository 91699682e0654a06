/**
 * @module Rooms in the directory: list, create (channel, private, dm), join, leave, add and remove
 * members. The room object is the authority for membership (it sequences member_join/member_leave);
 * D1 keeps the directory's copy. Adding goes D1 then object, removing goes object then D1, so a
 * failure half-way leaves a user with less access, never more, and retrying the same call repairs it.
 */
import { and, eq, inArray, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb } from "../../platform/residency.ts";
import {
  isAdmin,
  ROOM_KINDS,
  type Role,
  type RoomKind,
  type RoomSummary,
  type UserRef,
} from "../../protocol/index.ts";
import { audit } from "../audit.ts";
import { memberships, rooms, tenants, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { newId } from "../ids.ts";
import { spend } from "../quota.ts";
import { findRoom, type RoomRow, unenroll } from "../rooms.ts";
import { type InboxEntry, roomStub, userShard } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

export type Person = { id: string; name: string; role: Role };

/** Most users one request may add to a room (`members` on create), and the size of a group dm. */
const MAX_MEMBERS_PER_REQUEST = 50; // one D1 query binds them all, and D1 allows 100 parameters
const MAX_DM_MEMBERS = 9;

type Counts = Pick<RoomSummary, "lastSeq" | "readSeq" | "unread" | "mentions">;

/** What the room list reads of a room's directory row. */
type ListedRoom = Pick<RoomRow, "id" | "tenantId" | "name" | "kind" | "topic" | "dmKey">;

/** Room as `GET /api/rooms` lists it (docs/protocol.md), plus whether the caller has joined. */
function roomView(room: ListedRoom, joined: boolean, counts: Counts, members?: UserRef[]): RoomSummary {
  return {
    id: room.id,
    name: room.name,
    kind: room.kind,
    topic: room.topic,
    joined,
    lastSeq: counts.lastSeq,
    readSeq: counts.readSeq,
    unread: counts.unread,
    mentions: counts.mentions,
    ...(members ? { members } : {}),
  };
}

/** One room's view, its counts asked of the room itself (create, join, update answer it). */
async function describe(env: Env, me: Identity, room: RoomRow, joined: boolean): Promise<RoomSummary> {
  const [summary, members] = await Promise.all([
    roomStub(env, room.tenantId, room.id).summary(me.userId),
    room.kind === "dm" && room.dmKey ? dmMembers(env, room.tenantId, room.dmKey) : undefined,
  ]);
  return roomView(room, joined, summary, members);
}

/**
 * The counts of every listed room from one place: the caller's inbox. `inbox` is what it holds of
 * the rooms the caller is a member of, asked for while the directory said which rooms are listed;
 * listed rooms it left out (channels the caller has not joined, a room joined moments ago) are asked
 * for in a second call, with their ids. A room the inbox does not have yet, or a joined one where it
 * has no marker of the caller (an upgrade, a shard that lost it, a join half done), is asked itself,
 * which also sends the inbox what it lacked.
 */
async function countsOf(
  env: Env,
  me: Identity,
  inbox: Record<string, InboxEntry>,
  visible: ListedRoom[],
  joined: Set<string>,
) {
  const unasked = visible.filter((r) => !(r.id in inbox)).map((r) => r.id);
  if (unasked.length > 0)
    Object.assign(inbox, await userShard(env, me.tenantId, me.userId).stub.inboxList(me.userId, unasked));
  const counts = new Map<string, Counts>();
  const missing: ListedRoom[] = [];
  for (const room of visible) {
    const entry = inbox[room.id];
    if (entry && (entry.readSeq !== null || !joined.has(room.id)))
      counts.set(room.id, {
        lastSeq: entry.lastSeq,
        readSeq: entry.readSeq ?? 0,
        unread: entry.unread,
        mentions: entry.mentions,
      });
    else missing.push(room);
  }
  await Promise.all(
    missing.map(async (room) =>
      counts.set(room.id, await roomStub(env, room.tenantId, room.id).inboxSummary(me.userId)),
    ),
  );
  return counts;
}

/** The names of the people of every dm listed, in one query (not one per dm). */
async function dmNames(env: Env, tenantId: string, listed: ListedRoom[]): Promise<Map<string, string>> {
  const ids = [...new Set(listed.flatMap((r) => (r.kind === "dm" && r.dmKey ? r.dmKey.split(",") : [])))];
  if (ids.length === 0) return new Map();
  const rows = await drizzle(directoryDb(env, tenantId))
    .select({ id: users.id, name: users.name })
    .from(users)
    // One bound parameter, however many dms: D1 allows 100 per statement.
    .where(
      and(
        eq(users.tenantId, tenantId),
        sql`${users.id} IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`,
      ),
    )
    .all();
  return new Map(rows.map((u) => [u.id, u.name]));
}

/** A dm's people from the names found, sorted by name as `dmMembers` sorts them. */
function dmPeople(dmKey: string, names: Map<string, string>): UserRef[] {
  return dmKey
    .split(",")
    .flatMap((id) => {
      const name = names.get(id);
      return name === undefined ? [] : [{ id, name }];
    })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** A dm's people, from its member key (sorted user ids), with their current names. */
async function dmMembers(env: Env, tenantId: string, dmKey: string): Promise<UserRef[]> {
  const ids = dmKey.split(",");
  return drizzle(directoryDb(env, tenantId))
    .select({ id: users.id, name: users.name })
    .from(users)
    .where(and(eq(users.tenantId, tenantId), inArray(users.id, ids)))
    .orderBy(users.name)
    .all();
}

/**
 * Puts users in a room: directory rows (one D1 batch), then one call to the room object, which
 * sequences a member_join by `actor` for each newcomer in one transaction, with each user's role
 * as the directory has it now (not as a possibly older request saw it). Idempotent; returns the
 * ids that joined.
 */
export async function enroll(env: Env, room: RoomRow, given: Person[], actor: Person): Promise<string[]> {
  if (given.length === 0) return [];
  const db = drizzle(directoryDb(env, room.tenantId));
  const ids = given.map((u) => u.id);
  const roles = new Map(
    (await db.select({ id: users.id, role: users.role }).from(users).where(inArray(users.id, ids)).all()).map(
      (u) => [u.id, u.role],
    ),
  );
  const now = Date.now();
  const [first, ...rest] = given.map((u) =>
    db
      .insert(memberships)
      .values({ tenantId: room.tenantId, roomId: room.id, userId: u.id, joinedAt: now })
      .onConflictDoNothing(),
  );
  if (first) await db.batch([first, ...rest]);
  const stub = roomStub(env, room.tenantId, room.id);
  const tenant = await db
    .select({ retentionDays: tenants.retentionDays })
    .from(tenants)
    .where(eq(tenants.id, room.tenantId))
    .get();
  await stub.init(
    { tenantId: room.tenantId, roomId: room.id, name: room.name, kind: room.kind },
    tenant?.retentionDays ?? null,
  );
  const members = given.map((u) => ({ id: u.id, name: u.name, role: roles.get(u.id) ?? u.role }));
  const result = await stub.join(members, { id: actor.id, name: actor.name });
  if (!result.ok) throw ApiError.from(result);
  return result.joined;
}

/** Audits each user an actor added to a room (not the actor joining on their own). */
async function auditAdded(env: Env, me: Identity, roomId: string, joined: string[]) {
  for (const userId of joined)
    if (userId !== me.userId) await audit(env, me, "room.member_added", roomId, { userId });
}

/** The tenant's users with these ids, in that order (404 if one is not), as people a room can take:
 * a deactivated one is refused (their streams are refused by the rooms that know, and a new room
 * would not), unless `anyone` (a removal). */
async function tenantUsers(env: Env, me: Identity, ids: unknown, anyone = false): Promise<Person[]> {
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
  const found = await drizzle(directoryDb(env, me.tenantId))
    .select({ id: users.id, name: users.name, role: users.role, active: users.active })
    .from(users)
    .where(and(eq(users.tenantId, me.tenantId), inArray(users.id, wanted)))
    .all();
  if (found.length !== wanted.length) throw new ApiError("not_found", "no such user");
  const ended = found.find((u) => u.active === 0);
  if (ended && !anyone) throw new ApiError("bad_request", `${ended.name}'s account is deactivated`);
  return found
    .map(({ id, name, role }) => ({ id, name, role }))
    .sort((a, b) => wanted.indexOf(a.id) - wanted.indexOf(b.id));
}

const personOf = (me: Identity): Person => ({ id: me.userId, name: me.name, role: me.role });

/** Creates a dm, or finds the one with exactly this member set (the creator included). */
async function openDm(
  env: Env,
  me: Identity,
  others: Person[],
  topic: string,
): Promise<{ room: RoomRow; created: boolean }> {
  const members = [personOf(me), ...others.filter((u) => u.id !== me.userId)];
  if (members.length < 2 || members.length > MAX_DM_MEMBERS) {
    throw new ApiError("bad_request", `a dm has 2-${MAX_DM_MEMBERS} people, you included`);
  }
  const dmKey = members
    .map((u) => u.id)
    .sort()
    .join(",");
  const db = drizzle(directoryDb(env, me.tenantId));
  const existing = () =>
    db
      .select()
      .from(rooms)
      .where(and(eq(rooms.tenantId, me.tenantId), eq(rooms.dmKey, dmKey)))
      .get();
  const found = await existing();
  if (found) {
    // Anyone of the set who left comes back: a dm belongs to exactly its member set.
    await auditAdded(env, me, found.id, await enroll(env, found, members, personOf(me)));
    return { room: found, created: false };
  }
  // Only a dm that does not exist yet is a room created (opening one again is free).
  await spend(env, me, "rooms");
  const room: RoomRow = {
    id: newId("r"),
    tenantId: me.tenantId,
    name: members
      .map((u) => u.name)
      .join(", ")
      .slice(0, 80),
    kind: "dm",
    topic,
    createdBy: me.userId,
    createdAt: Date.now(),
    dmKey,
  };
  // Two people opening the same dm at once: the unique (tenant, dm_key) index lets one insert win.
  const inserted = await db.insert(rooms).values(room).onConflictDoNothing().returning({ id: rooms.id });
  if (inserted.length === 0) {
    const winner = await existing();
    if (!winner) throw new Error("dm insert lost a race to a row that is gone");
    return { room: winner, created: false };
  }
  await auditAdded(env, me, room.id, await enroll(env, room, members, personOf(me)));
  return { room, created: true };
}

export const roomRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = c.get("identity");
    // Channels are visible to the tenant's members; guests see only rooms they were invited to.
    const visibleTo =
      me.role === "guest" ? "m.user_id IS NOT NULL" : "(r.kind = 'channel' OR m.user_id IS NOT NULL)";
    // One query: each visible room with whether the caller has joined it (a join on the membership's
    // key); meanwhile, the counts of the caller's rooms from their inbox (most of what is listed), so
    // that the two wait together. Plain SQL and rows as arrays, of the columns the list shows: for a
    // user in 500 rooms this query is the list's longest wait (13 ms locally with drizzle building
    // it and mapping whole rows, 11 ms so, issue 15).
    const [listed, inbox] = await Promise.all([
      directoryDb(c.env, me.tenantId)
        .prepare(
          `SELECT r.id, r.name, r.kind, r.topic, r.dm_key, m.user_id IS NOT NULL FROM rooms r
           LEFT JOIN memberships m ON m.room_id = r.id AND m.user_id = ?1 AND m.tenant_id = ?2
           WHERE r.tenant_id = ?2 AND ${visibleTo} ORDER BY r.name, r.id`,
        )
        .bind(me.userId, me.tenantId)
        .raw<[string, string, RoomKind, string, string | null, number]>(),
      // The inbox is the user's presence shard (docs/architecture.md, decision 6).
      userShard(c.env, me.tenantId, me.userId).stub.inboxList(me.userId, null),
    ]);
    const all: ListedRoom[] = listed.map(([id, name, kind, topic, dmKey]) => ({
      id,
      tenantId: me.tenantId,
      name,
      kind,
      topic,
      dmKey,
    }));
    const joinedIds = new Set(listed.filter((r) => r[5] === 1).map((r) => r[0]));
    const visible = me.roomScope ? all.filter((r) => me.roomScope?.includes(r.id)) : all;
    const [counts, names] = await Promise.all([
      countsOf(c.env, me, inbox, visible, joinedIds),
      dmNames(c.env, me.tenantId, visible),
    ]);
    return c.json(
      visible.map((room) =>
        roomView(
          room,
          joinedIds.has(room.id),
          counts.get(room.id) as Counts,
          room.kind === "dm" && room.dmKey ? dmPeople(room.dmKey, names) : undefined,
        ),
      ),
    );
  })
  .post("/", async (c) => {
    const me = c.get("identity");
    if (me.role === "guest") throw new ApiError("forbidden", "guests cannot create rooms");
    if (me.roomScope) throw new ApiError("forbidden", "a token limited to some rooms cannot create rooms");
    const limits = limitsOf(c.env);
    const body = await readJsonObject(c, limits.maxJsonBodyBytes);
    const kind = (body.kind ?? "channel") as RoomKind;
    if (!ROOM_KINDS.includes(kind))
      throw new ApiError("bad_request", `kind must be one of ${ROOM_KINDS.join(", ")}`);
    const topic = body.topic === undefined ? "" : body.topic;
    if (typeof topic !== "string" || topic.length > limits.maxRoomTopicChars) {
      throw new ApiError(
        "bad_request",
        `topic must be a string of at most ${limits.maxRoomTopicChars} characters`,
      );
    }
    const invited = await tenantUsers(c.env, me, body.members ?? []);
    if (kind === "dm") {
      const { room, created } = await openDm(c.env, me, invited, topic);
      return c.json(await describe(c.env, me, room, true), created ? 201 : 200);
    }
    const name = typeof body.name === "string" ? body.name.trim() : "";
    if (name.length === 0 || name.length > limits.maxRoomNameChars) {
      throw new ApiError("bad_request", `name must be 1-${limits.maxRoomNameChars} characters`);
    }
    // Last, after every check of the request: a refused or bad request creates nothing and spends
    // nothing.
    await spend(c.env, me, "rooms");
    const room: RoomRow = {
      id: newId("r"),
      tenantId: me.tenantId,
      name,
      kind,
      topic,
      createdBy: me.userId,
      createdAt: Date.now(),
      dmKey: null,
    };
    await drizzle(directoryDb(c.env, me.tenantId)).insert(rooms).values(room);
    const creator = personOf(me);
    await auditAdded(c.env, me, room.id, await enroll(c.env, room, [creator, ...invited], creator));
    return c.json(await describe(c.env, me, room, true), 201);
  })
  .patch("/:roomId", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    if (room.createdBy !== me.userId && !isAdmin(me.role)) {
      throw new ApiError("forbidden", "only the room's creator or an admin manages it");
    }
    const limits = limitsOf(c.env);
    const body = await readJsonObject(c, limits.maxJsonBodyBytes);
    const fields: { name?: string; topic?: string } = {};
    if (body.name !== undefined) {
      const name = typeof body.name === "string" ? body.name.trim() : "";
      if (name.length === 0 || name.length > limits.maxRoomNameChars) {
        throw new ApiError("bad_request", `name must be 1-${limits.maxRoomNameChars} characters`);
      }
      fields.name = name;
    }
    if (body.topic !== undefined) {
      if (typeof body.topic !== "string" || body.topic.length > limits.maxRoomTopicChars) {
        throw new ApiError(
          "bad_request",
          `topic must be a string of at most ${limits.maxRoomTopicChars} characters`,
        );
      }
      fields.topic = body.topic;
    }
    if (Object.keys(fields).length === 0) throw new ApiError("bad_request", "give a name or a topic");
    await drizzle(directoryDb(c.env, room.tenantId)).update(rooms).set(fields).where(eq(rooms.id, room.id));
    const { seq } = await roomStub(c.env, room.tenantId, room.id).update(fields, {
      id: me.userId,
      name: me.name,
    });
    return c.json({ ...(await describe(c.env, me, { ...room, ...fields }, true)), updateSeq: seq });
  })
  .post("/:roomId/join", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    // findRoom already hid private rooms and dms from non-members; their members joining is a no-op.
    if ((await enroll(c.env, room, [personOf(me)], personOf(me))).length > 0) {
      await audit(c.env, me, "room.member_joined", room.id, { userId: me.userId });
    }
    return c.json(await describe(c.env, me, room, true));
  })
  .post("/:roomId/leave", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    if (await unenroll(c.env, room, me.userId, { id: me.userId, name: me.name })) {
      await audit(c.env, me, "room.member_left", room.id, { userId: me.userId });
    }
    return c.json({ ok: true });
  })
  .post("/:roomId/members", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    if (me.role === "guest") throw new ApiError("forbidden", "guests cannot add people to rooms");
    if (room.kind === "dm")
      throw new ApiError("bad_request", "a dm's people are fixed: open a new dm with everyone");
    const stub = roomStub(c.env, room.tenantId, room.id);
    if (!(await stub.isMember(me.userId)) && !isAdmin(me.role)) {
      throw new ApiError("forbidden", "only members and admins may add people to a room");
    }
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    if (typeof body.userId !== "string") throw new ApiError("bad_request", "userId must be a string");
    const [user] = await tenantUsers(c.env, me, [body.userId]);
    if (user) await auditAdded(c.env, me, room.id, await enroll(c.env, room, [user], personOf(me)));
    return c.json({ ok: true });
  })
  .delete("/:roomId/members/:userId", async (c) => {
    const me = c.get("identity");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    const userId = c.req.param("userId");
    if (userId !== me.userId && !isAdmin(me.role))
      throw new ApiError("forbidden", "only admins remove others");
    await tenantUsers(c.env, me, [userId], true);
    if (await unenroll(c.env, room, userId, { id: me.userId, name: me.name })) {
      await audit(c.env, me, "room.member_removed", room.id, { userId });
    }
    return c.json({ ok: true });
  });
