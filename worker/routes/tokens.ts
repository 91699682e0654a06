/**
 * @module API tokens for bots (tenant admins only): create (the token is shown once), list, revoke.
 * Revoking also takes the bot out of every room, which closes its open sockets at once.
 */
import { and, eq, inArray } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb, jurisdictionOf } from "../../platform/residency.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { issueToken } from "../auth/api-tokens.ts";
import { apiTokens, memberships, rooms, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { newId } from "../ids.ts";
import { unenroll } from "../rooms.ts";
import type { AppEnv } from "../types.ts";

const MAX_SCOPED_ROOMS = 50; // one D1 query binds them all, and D1 allows 100 parameters

/**
 * A bot user and its API token, in one D1 batch: the token is returned this once (only its hash is
 * stored). `kind` names what the bot is for in its user's email (`token:<id>` for an API token,
 * `hook:<id>` for an incoming webhook, worker/routes/hooks.ts; `scim:<id>` for the tenant's SCIM
 * client, worker/routes/scim.ts).
 */
export async function issueBot(
  env: Env,
  me: Identity,
  name: string,
  scope: string[] | null,
  kind: "token" | "hook" | "scim",
): Promise<{ id: string; botId: string; token: string }> {
  const id = newId("k");
  const botId = newId("u");
  const now = Date.now();
  const { token, hash } = await issueToken(id, jurisdictionOf(env, me.tenantId));
  const db = drizzle(directoryDb(env, me.tenantId));
  await db.batch([
    db.insert(users).values({
      id: botId,
      tenantId: me.tenantId,
      email: `${kind}:${id}`,
      name,
      role: "bot",
      createdAt: now,
      lastLoginAt: now,
    }),
    db.insert(apiTokens).values({
      id,
      tenantId: me.tenantId,
      userId: botId,
      name,
      hash,
      rooms: scope ? JSON.stringify(scope) : null,
      createdBy: me.userId,
      createdAt: now,
    }),
  ]);
  return { id, botId, token };
}

/**
 * Revokes a token: first it stops authenticating, then its bot leaves every room (its sockets
 * close). The removal runs on every call, so repeating a revocation that failed half-way finishes
 * it.
 */
export async function revokeToken(
  env: Env,
  me: Identity,
  token: typeof apiTokens.$inferSelect,
): Promise<void> {
  const db = drizzle(directoryDb(env, me.tenantId));
  if (token.revokedAt === null) {
    await db.update(apiTokens).set({ revokedAt: Date.now() }).where(eq(apiTokens.id, token.id));
    await audit(env, me, "token.revoked", token.id, { botId: token.userId });
  }
  const joined = await db
    .select({ room: rooms })
    .from(memberships)
    .innerJoin(rooms, eq(rooms.id, memberships.roomId))
    .where(eq(memberships.userId, token.userId))
    .all();
  for (const { room } of joined) await unenroll(env, room, token.userId, { id: me.userId, name: me.name });
}

export const tokenRoutes = new Hono<AppEnv>()
  .use(async (c, next) => {
    requireAdmin(c.get("identity"), "manage API tokens");
    await next();
  })
  .post("/", async (c) => {
    const me = c.get("identity");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    const name = typeof body.name === "string" ? body.name.trim() : "";
    if (name.length === 0 || name.length > 80)
      throw new ApiError("bad_request", "name must be 1-80 characters");
    let scope: string[] | null = null;
    if (body.rooms !== undefined) {
      const ids = body.rooms;
      if (
        !Array.isArray(ids) ||
        ids.length === 0 ||
        ids.length > MAX_SCOPED_ROOMS ||
        !ids.every((r) => typeof r === "string")
      ) {
        throw new ApiError("bad_request", `rooms must be an array of 1-${MAX_SCOPED_ROOMS} room ids`);
      }
      scope = [...new Set(ids as string[])];
      const found = await drizzle(directoryDb(c.env, me.tenantId))
        .select({ id: rooms.id })
        .from(rooms)
        .where(and(eq(rooms.tenantId, me.tenantId), inArray(rooms.id, scope)))
        .all();
      if (found.length !== scope.length) throw new ApiError("not_found", "no such room");
    }
    const { id, botId, token } = await issueBot(c.env, me, name, scope, "token");
    await audit(c.env, me, "token.created", id, { botId, scoped: scope !== null });
    return c.json({ id, name, userId: botId, rooms: scope, token }, 201);
  })
  .get("/", async (c) => {
    const me = c.get("identity");
    const rows = await drizzle(directoryDb(c.env, me.tenantId))
      .select()
      .from(apiTokens)
      .where(eq(apiTokens.tenantId, me.tenantId))
      .all();
    return c.json({
      tokens: rows.map((t) => ({
        id: t.id,
        name: t.name,
        userId: t.userId,
        rooms: t.rooms ? (JSON.parse(t.rooms) as string[]) : null,
        createdAt: t.createdAt,
        revokedAt: t.revokedAt,
      })),
    });
  })
  .delete("/:tokenId", async (c) => {
    const me = c.get("identity");
    const db = drizzle(directoryDb(c.env, me.tenantId));
    const token = await db
      .select()
      .from(apiTokens)
      .where(and(eq(apiTokens.id, c.req.param("tokenId")), eq(apiTokens.tenantId, me.tenantId)))
      .get();
    if (!token) throw new ApiError("not_found", "no such token");
    await revokeToken(c.env, me, token);
    return c.json({ ok: true });
  });
