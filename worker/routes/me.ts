/** @module `GET /api/me`: the signed-in user and their tenant. */
import { Hono } from "hono";
import type { Me } from "../../protocol/index.ts";
import type { AppEnv } from "../types.ts";

export const meRoutes = new Hono<AppEnv>().get("/", (c) => {
  const me = c.get("identity");
  return c.json({
    user: { id: me.userId, email: me.email, name: me.name, role: me.role },
    tenant: { id: me.tenantId, name: me.tenantName },
  } satisfies Me);
});
