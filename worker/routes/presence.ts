/** @module `GET /api/presence/ws`: a session's presence socket, on its user's shard of the tenant. */
import { Hono } from "hono";
import { streamExpiry } from "../auth/identity.ts";
import { ApiError } from "../errors.ts";
import { checkSocketOrigin } from "../origins.ts";
import { openStreamAt, PRESENCE_IDENTITY_HEADER, userShard } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

export const presenceRoutes = new Hono<AppEnv>().get("/ws", async (c) => {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError("bad_request", "this endpoint needs a WebSocket upgrade");
  }
  checkSocketOrigin(c);
  const me = c.get("identity");
  // The shard closes the socket when the token that opened it expires (`4402`).
  const expiresAt = streamExpiry(c);
  const { shard, stub } = userShard(c.env, me.tenantId, me.userId);
  await stub.init(me.tenantId, shard);
  return openStreamAt(
    stub,
    c.req.raw,
    PRESENCE_IDENTITY_HEADER,
    encodeURIComponent(JSON.stringify({ userId: me.userId, tenantId: me.tenantId, expiresAt })),
  );
});
