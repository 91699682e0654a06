/**
 * @module `/api/tenant`: the caller's tenant, its retention policy and whether notifications show
 * previews (`PATCH {"notificationPreviews": bool}`, owners and admins). `GET` for everyone in it;
 * `PATCH {"retentionDays": N | null}` for owners and admins: events older than N days are removed
 * from every store (the logs keep tombstones), null keeps history forever. The policy is recorded
 * in D1 and pushed to every room object, which applies it from its alarm; rooms created later get
 * it when they are set up.
 */
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb } from "../../platform/residency.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { rooms, tenants } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { presenceStub, roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

/** A hundred years: long enough for any legal hold, short enough to stay a safe integer in ms. */
const MAX_RETENTION_DAYS = 36_500;
/** Room objects updated concurrently. */
const PUSH_CONCURRENCY = 20;

/** Whether notifications show the room, author and text: recorded, then told to every presence
 * shard of the tenant (which strip them from what they queue when off). A shard that missed it is
 * told again when the admin repeats the request (idempotent). */
async function setPreviews(c: Context<AppEnv>, me: Identity, on: unknown): Promise<Response> {
  requireAdmin(me, "set notification previews");
  if (typeof on !== "boolean")
    throw new ApiError("bad_request", "notificationPreviews must be true or false");
  await drizzle(directoryDb(c.env, me.tenantId))
    .update(tenants)
    .set({ notificationPreviews: on ? 1 : 0 })
    .where(eq(tenants.id, me.tenantId));
  const shards = limitsOf(c.env).presenceShards;
  const results = await Promise.allSettled(
    Array.from({ length: shards }, (_, n) => presenceStub(c.env, me.tenantId, n).setNotifyPreviews(on)),
  );
  await audit(c.env, me, "tenant.notification_previews_changed", me.tenantId, { notificationPreviews: on });
  const failed = results.filter((r) => r.status === "rejected").length;
  if (failed > 0)
    throw new ApiError("internal", `setting saved, but ${failed} presence shards did not take it yet; retry`);
  return c.json({ notificationPreviews: on });
}

export const tenantRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = c.get("identity");
    const row = await drizzle(directoryDb(c.env, me.tenantId))
      .select()
      .from(tenants)
      .where(eq(tenants.id, me.tenantId))
      .get();
    if (!row) throw new ApiError("not_found", "no such tenant");
    return c.json({
      id: row.id,
      name: row.name,
      retentionDays: row.retentionDays,
      notificationPreviews: row.notificationPreviews === 1,
      scimRoleGroups: row.scimRoleGroups ? JSON.parse(row.scimRoleGroups) : { admin: [], guest: [] },
    });
  })
  .patch("/", async (c) => {
    const me = c.get("identity");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    if ("scimRoleGroups" in body) {
      if (Object.keys(body).length > 1) throw new ApiError("bad_request", "change scimRoleGroups on its own");
      requireAdmin(me, "map SCIM groups to roles");
      const groups = body.scimRoleGroups as Record<string, unknown> | null;
      const list = (v: unknown) =>
        v === undefined ||
        (Array.isArray(v) &&
          v.length <= 50 &&
          v.every((n) => typeof n === "string" && n.length > 0 && n.length <= 200));
      if (
        typeof groups !== "object" ||
        groups === null ||
        Object.keys(groups).some((k) => k !== "admin" && k !== "guest") ||
        !list(groups.admin) ||
        !list(groups.guest)
      )
        throw new ApiError(
          "bad_request",
          'scimRoleGroups must be {"admin"?: [group name], "guest"?: [group name]} (≤ 50 each)',
        );
      const value = { admin: (groups.admin as string[]) ?? [], guest: (groups.guest as string[]) ?? [] };
      await drizzle(directoryDb(c.env, me.tenantId))
        .update(tenants)
        .set({ scimRoleGroups: JSON.stringify(value) })
        .where(eq(tenants.id, me.tenantId));
      await audit(c.env, me, "tenant.scim_role_groups_changed", me.tenantId, {
        groups: JSON.stringify(value),
      });
      return c.json({ scimRoleGroups: value });
    }
    if ("notificationPreviews" in body) {
      if (Object.keys(body).length > 1)
        throw new ApiError("bad_request", "change notificationPreviews on its own");
      return setPreviews(c, me, body.notificationPreviews);
    }
    requireAdmin(me, "set the retention policy");
    const days = body.retentionDays;
    if (
      days !== null &&
      !(typeof days === "number" && Number.isInteger(days) && days >= 1 && days <= MAX_RETENTION_DAYS)
    ) {
      throw new ApiError(
        "bad_request",
        `retentionDays must be null (keep forever) or an integer from 1 to ${MAX_RETENTION_DAYS}`,
      );
    }
    const db = drizzle(directoryDb(c.env, me.tenantId));
    await db.update(tenants).set({ retentionDays: days }).where(eq(tenants.id, me.tenantId));
    const ids = (
      await db.select({ id: rooms.id }).from(rooms).where(eq(rooms.tenantId, me.tenantId)).all()
    ).map((r) => r.id);
    let failed = 0;
    for (let i = 0; i < ids.length; i += PUSH_CONCURRENCY) {
      const results = await Promise.allSettled(
        ids.slice(i, i + PUSH_CONCURRENCY).map((id) => roomStub(c.env, me.tenantId, id).setRetention(days)),
      );
      failed += results.filter((r) => r.status === "rejected").length;
    }
    await audit(c.env, me, "tenant.retention_changed", me.tenantId, { retentionDays: days });
    // A room that missed the push keeps its previous policy until the admin repeats the request
    // (idempotent): say so rather than pretend.
    if (failed > 0)
      throw new ApiError("internal", `policy saved, but ${failed} rooms did not take it yet; retry`);
    return c.json({ retentionDays: days, rooms: ids.length });
  });
