/** @module `GET /api/audit?before=&limit=`: the tenant's audit log for admins, newest first. */
import { and, desc, eq, lt } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { directoryDb } from "../../platform/residency.ts";
import { requireAdmin } from "../auth/admin.ts";
import { auditLog } from "../db/schema.ts";
import { intParam } from "../http.ts";
import type { AppEnv } from "../types.ts";

export const auditRoutes = new Hono<AppEnv>().get("/", async (c) => {
  const me = c.get("identity");
  requireAdmin(me, "read the audit log");
  const before = intParam(c, "before", { min: 1 });
  const limit = intParam(c, "limit", { min: 1, max: 200 }) ?? 50;
  const where =
    before === undefined
      ? eq(auditLog.tenantId, me.tenantId)
      : and(eq(auditLog.tenantId, me.tenantId), lt(auditLog.id, before));
  const rows = await drizzle(directoryDb(c.env, me.tenantId))
    .select()
    .from(auditLog)
    .where(where)
    .orderBy(desc(auditLog.id))
    .limit(limit + 1)
    .all();
  const page = rows.slice(0, limit);
  return c.json({
    entries: page.map((r) => ({
      id: r.id,
      actor: r.actorId,
      action: r.action,
      target: r.target,
      detail: JSON.parse(r.detail),
      at: r.at,
    })),
    next: rows.length > limit ? page.at(-1)?.id : null,
  });
});
