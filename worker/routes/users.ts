/** @module The tenant directory: search people, and (admins) change a person's role. */
import { and, eq, or, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { directoryDb } from "../../platform/residency.ts";
import { isRole, type Role } from "../../protocol/index.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { forgetIdentity } from "../auth/identity.ts";
import { memberships, rooms, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { pushMember, unenroll } from "../rooms.ts";
import type { AppEnv } from "../types.ts";

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
      .select({ id: users.id, name: users.name, email: users.email, role: users.role })
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
    return c.json({ users: found });
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
  });
