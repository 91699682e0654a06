/**
 * @module Incoming webhooks (docs/protocol.md, "Incoming webhooks"): a secret URL through which
 * another system posts into one room as a named integration. A hook is an API token scoped to its
 * room, acting as its own bot member; the URL carries the token, since the systems that call
 * webhooks rarely let one set a header. What it posts is a `send` like any other: the same
 * validation, limits, rate and `clientId` idempotency. Admins create hooks (audited as tokens are)
 * and revoke them like any token (`DELETE /api/tokens/:id`: the bot leaves the room).
 */
import { and, eq, like } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { directoryDb } from "../../platform/residency.ts";
import { parseCommand } from "../../protocol/index.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { identityOfApiToken } from "../auth/api-tokens.ts";
import { apiTokens, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { actorOf, findRoom, reachRoom } from "../rooms.ts";
import { type CommandResult, roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";
import { enroll } from "./rooms.ts";
import { issueBot } from "./tokens.ts";

/** `POST /api/rooms/:roomId/hooks` and `GET` (admins). */
export const hookAdminRoutes = new Hono<AppEnv>()
  .post("/:roomId/hooks", async (c) => {
    const me = c.get("identity");
    requireAdmin(me, "create incoming webhooks");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    if (room.kind === "dm")
      throw new ApiError("bad_request", "a dm's people are fixed: no webhooks into dms");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    const name = typeof body.name === "string" ? body.name.trim() : "";
    if (name.length === 0 || name.length > 80)
      throw new ApiError("bad_request", "name must be 1-80 characters");
    const { id, botId, token } = await issueBot(c.env, me, name, [room.id], "hook");
    await enroll(c.env, room, [{ id: botId, name, role: "bot" }], {
      id: me.userId,
      name: me.name,
      role: me.role,
    });
    await audit(c.env, me, "token.created", id, { botId, scoped: true, hook: room.id });
    const url = `${new URL(c.req.url).origin}/hooks/${token}`;
    return c.json({ id, name, userId: botId, roomId: room.id, url }, 201);
  })
  .get("/:roomId/hooks", async (c) => {
    const me = c.get("identity");
    requireAdmin(me, "list incoming webhooks");
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    const rows = await drizzle(directoryDb(c.env, me.tenantId))
      .select({ token: apiTokens })
      .from(apiTokens)
      .innerJoin(users, eq(users.id, apiTokens.userId))
      .where(
        and(
          eq(apiTokens.tenantId, me.tenantId),
          eq(apiTokens.rooms, JSON.stringify([room.id])),
          like(users.email, "hook:%"),
        ),
      )
      .all();
    const hooks = rows.map(({ token: t }) => ({
      id: t.id,
      name: t.name,
      userId: t.userId,
      createdAt: t.createdAt,
      revokedAt: t.revokedAt,
    }));
    return c.json({ hooks });
  });

/** `POST /hooks/:token`: a message from the hook's system into its room. */
export const hookRoutes = new Hono<AppEnv>().post("/:token", async (c) => {
  const bot = await identityOfApiToken(c.env, c.req.param("token"));
  const roomId = bot?.roomScope?.length === 1 ? bot.roomScope[0] : undefined;
  if (!bot || roomId === undefined) throw new ApiError("unauthorized", "invalid or revoked webhook");
  const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
  // Without a clientId (or an Idempotency-Key header) a repeat is a new message.
  const clientId = body.clientId ?? c.req.header("idempotency-key") ?? `hook-${crypto.randomUUID()}`;
  const parsed = parseCommand("send", { ...body, clientId }, limitsOf(c.env));
  if (!parsed.ok) throw ApiError.from(parsed);
  const room = await reachRoom(c.env, bot, roomId);
  const result = (await roomStub(c.env, room.tenantId, room.id).command(
    actorOf(bot),
    parsed.value,
  )) as CommandResult;
  if (!result.ok) throw ApiError.from(result);
  return c.json({ seq: result.seq }, result.created ? 201 : 200);
});
