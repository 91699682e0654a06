/** @module The tenant directory: search people, and (admins) change a person's role, deactivate and
 * reactivate them. */
import { and, eq, isNull, or, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb } from "../../platform/residency.ts";
import { isRole, type Role } from "../../protocol/index.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { forgetIdentity } from "../auth/identity.ts";
import { apiTokens, memberships, rooms, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { pushMember, unenroll } from "../rooms.ts";
import { type presenceStub, roomStub, userShard } from "../stubs.ts";
import type { AppEnv } from "../types.ts";
import { revokeToken } from "./tokens.ts";

const DIRECTORY_PAGE = 20;
const ASSIGNABLE: readonly Role[] = ["owner", "admin", "member", "guest"];

export const userRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = c.get("identity");
    if (me.role === "guest" || me.roomScope) {
      throw new ApiError("forbidden", "guests and room-limited tokens cannot search the directory");
    }
    const q = (c.req.query("q") ?? "").trim();
    if (q.length > 100) throw new ApiError("bad_request", "q must be at most 100 characters");
    // instr, not LIKE: D1 caps LIKE patterns at 50 bytes, and q's own % and _ must match literally.
    const needle = q.toLowerCase();
    const found = await drizzle(directoryDb(c.env, me.tenantId))
      .select({ id: users.id, name: users.name, email: users.email, role: users.role, active: users.active })
      .from(users)
      .where(
        and(
          eq(users.tenantId, me.tenantId),
          or(sql`instr(lower(${users.name}), ${needle}) > 0`, sql`instr(${users.email}, ${needle}) > 0`),
        ),
      )
      .orderBy(users.name)
      .limit(DIRECTORY_PAGE)
      .all();
    return c.json({ users: found.map((u) => ({ ...u, active: u.active === 1 })) });
  })
  .patch("/:userId", async (c) => {
    const me = c.get("identity");
    requireAdmin(me, "change roles");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    const role = body.role;
    if (!isRole(role) || !ASSIGNABLE.includes(role))
      throw new ApiError("bad_request", `role must be one of ${ASSIGNABLE.join(", ")}`);
    const db = drizzle(directoryDb(c.env, me.tenantId));
    const user = await db
      .select()
      .from(users)
      .where(and(eq(users.id, c.req.param("userId")), eq(users.tenantId, me.tenantId)))
      .get();
    if (!user) throw new ApiError("not_found", "no such user");
    if (user.id === me.userId) throw new ApiError("forbidden", "you cannot change your own role");
    if (user.role === "bot") throw new ApiError("bad_request", "bots keep the bot role");
    if ((role === "owner" || user.role === "owner") && me.role !== "owner") {
      throw new ApiError("forbidden", "only an owner grants or removes ownership");
    }
    if (user.role !== role) {
      await db.update(users).set({ role }).where(eq(users.id, user.id));
      forgetIdentity(c.env, me.tenantId, user.email);
      await audit(c.env, me, "user.role_changed", user.id, { from: user.role, to: role });
    }
    // Always, not only on a change: a retry of a call that failed half-way repairs the rooms.
    await pushMember(c.env, me.tenantId, { id: user.id, name: user.name, role });
    if (role === "guest") {
      // Guests see only rooms they were invited to: channels they were in as a member are left;
      // an admin re-invites them where they belong.
      const channels = await db
        .select({ room: rooms })
        .from(memberships)
        .innerJoin(rooms, eq(rooms.id, memberships.roomId))
        .where(and(eq(memberships.userId, user.id), eq(rooms.kind, "channel")))
        .all();
      for (const { room } of channels) {
        if (await unenroll(c.env, room, user.id, { id: me.userId, name: me.name })) {
          await audit(c.env, me, "room.member_removed", room.id, { userId: user.id });
        }
      }
    }
    return c.json({ user: { id: user.id, name: user.name, email: user.email, role } });
  })
  .post("/:userId/deactivate", async (c) => {
    const me = c.get("identity");
    const user = await manageable(c, "deactivate people");
    const started = Date.now();
    const ended = await deactivate(c.env, me, user);
    return c.json({ user: { id: user.id, active: false }, rooms: ended, ms: Date.now() - started });
  })
  .post("/:userId/reactivate", async (c) => {
    const me = c.get("identity");
    const user = await manageable(c, "reactivate people");
    await reactivate(c.env, me, user);
    // Sessions are not restored: the person signs in again.
    return c.json({ user: { id: user.id, active: true } });
  });

/** The user of the path, whom the caller (an admin; an owner for an owner) may (de)activate. */
async function manageable(c: Context<AppEnv>, what: string): Promise<typeof users.$inferSelect> {
  const me = c.get("identity");
  requireAdmin(me, what);
  const user = await drizzle(directoryDb(c.env, me.tenantId))
    .select()
    .from(users)
    .where(and(eq(users.id, c.req.param("userId") ?? ""), eq(users.tenantId, me.tenantId)))
    .get();
  if (!user) throw new ApiError("not_found", "no such user");
  if (user.id === me.userId) throw new ApiError("forbidden", "you cannot deactivate yourself");
  if (user.role === "bot")
    throw new ApiError("bad_request", "bots are revoked, not deactivated (DELETE /api/tokens/:id)");
  if (user.role === "owner" && me.role !== "owner")
    throw new ApiError("forbidden", "only an owner deactivates an owner");
  return user;
}

/** Rooms told at once when a user is deactivated. */
const END_CONCURRENCY = 20;

/**
 * Ends a user's access everywhere (docs/architecture.md, decision 11), each step idempotent so that
 * repeating the request completes one that failed half-way: refused from now on (D1, and this
 * isolate's memory of them), the API tokens they created revoked, every room they are in told to
 * close their sockets and streams, their presence shard to close theirs, drop their push
 * subscriptions and show them offline. Returns how many rooms were told.
 */
export async function deactivate(env: Env, me: Identity, user: typeof users.$inferSelect): Promise<number> {
  const db = drizzle(directoryDb(env, me.tenantId));
  if (user.active !== 0) {
    await db.update(users).set({ active: 0, deactivatedAt: Date.now() }).where(eq(users.id, user.id));
    await audit(env, me, "user.deactivated", user.id, {});
  }
  forgetIdentity(env, me.tenantId, user.email);
  const { rooms: told, failed } = await tellObjects(
    env,
    me.tenantId,
    user.id,
    (shard) => shard.endUser(user.id),
    (room) => room.endUser(user.id),
  );
  const tokens = await db
    .select()
    .from(apiTokens)
    .where(and(eq(apiTokens.createdBy, user.id), isNull(apiTokens.revokedAt)))
    .all();
  for (const token of tokens) await revokeToken(env, me, token);
  if (failed > 0)
    throw new ApiError(
      "internal",
      `deactivated, but ${failed} rooms or shards did not close their sessions yet; retry`,
    );
  return told;
}

/**
 * Lets a user in again: the directory first, then their presence shard and every room they belong
 * to forget that they ended (decision 12), so that they may open streams there again. Sessions are
 * not restored: the person signs in again. Idempotent: a retry completes one that failed half-way.
 */
export async function reactivate(
  env: Env,
  me: Identity,
  user: typeof users.$inferSelect,
  detail: Record<string, string> = {},
): Promise<void> {
  if (user.active === 0) {
    await drizzle(directoryDb(env, me.tenantId))
      .update(users)
      .set({ active: 1, deactivatedAt: null })
      .where(eq(users.id, user.id));
    forgetIdentity(env, me.tenantId, user.email);
    await audit(env, me, "user.reactivated", user.id, detail);
  }
  const { failed } = await tellObjects(
    env,
    me.tenantId,
    user.id,
    (shard) => shard.restoreUser(user.id),
    (room) => room.restoreUser(user.id),
  );
  if (failed > 0)
    throw new ApiError(
      "internal",
      `reactivated, but ${failed} rooms or shards did not let them in yet; retry`,
    );
}

/** Calls the user's presence shard and every room they belong to (rooms in parallel, bounded);
 * returns how many rooms there were and how many calls failed. */
async function tellObjects(
  env: Env,
  tenantId: string,
  userId: string,
  shardCall: (shard: ReturnType<typeof presenceStub>) => Promise<unknown>,
  roomCall: (room: ReturnType<typeof roomStub>) => Promise<unknown>,
): Promise<{ rooms: number; failed: number }> {
  const theirRooms = await drizzle(directoryDb(env, tenantId))
    .select({ id: memberships.roomId })
    .from(memberships)
    .where(eq(memberships.userId, userId))
    .all();
  // The shard beside the rooms, not before them: each call waits for its object's write.
  const shardDone = Promise.allSettled([shardCall(userShard(env, tenantId, userId).stub)]);
  const results: PromiseSettledResult<unknown>[] = [];
  for (let i = 0; i < theirRooms.length; i += END_CONCURRENCY)
    results.push(
      ...(await Promise.allSettled(
        theirRooms.slice(i, i + END_CONCURRENCY).map((r) => roomCall(roomStub(env, tenantId, r.id))),
      )),
    );
  results.push(...(await shardDone));
  return { rooms: theirRooms.length, failed: results.filter((r) => r.status === "rejected").length };
}
