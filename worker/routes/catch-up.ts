/**
 * @module `POST /api/admin/history/catch-up?after=&limit=`: wakes the tenant's rooms, a page at a
 * time, so that each brings its derived stores (its search part, its D1 history shard) up to its
 * log, and reports how far each is. Rooms catch up by themselves whenever they are busy; this is for
 * the idle ones after the upgrade to sharded history and search (docs/deploy.md), and for an
 * operator checking that nothing is behind. Admins only; safe to repeat.
 */
import { and, asc, eq, gt } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { directoryDb } from "../../platform/residency.ts";
import { requireAdmin } from "../auth/admin.ts";
import { rooms } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { intParam } from "../http.ts";
import { roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

/** Rooms woken per request, and at once: each wake may send a batch to search and arm an alarm. */
const MAX_ROOMS = 100;
const AT_ONCE = 10;

export const catchUpRoutes = new Hono<AppEnv>().post("/catch-up", async (c) => {
  const me = c.get("identity");
  requireAdmin(me, "run the history catch-up");
  const after = c.req.query("after") ?? "";
  if (after !== "" && !/^r_[0-9a-z]{20}$/.test(after))
    throw new ApiError("bad_request", "after must be a room id");
  const limit = intParam(c, "limit", { min: 1, max: MAX_ROOMS }) ?? 50;
  const page = await drizzle(directoryDb(c.env, me.tenantId))
    .select({ id: rooms.id })
    .from(rooms)
    .where(and(eq(rooms.tenantId, me.tenantId), gt(rooms.id, after)))
    .orderBy(asc(rooms.id))
    .limit(limit)
    .all();
  const states: { id: string; lastSeq: number; indexedThrough: number; archivedThrough: number }[] = [];
  for (let i = 0; i < page.length; i += AT_ONCE) {
    const batch = page.slice(i, i + AT_ONCE);
    states.push(
      ...(await Promise.all(
        batch.map(async (r) => ({ id: r.id, ...(await roomStub(c.env, me.tenantId, r.id).catchUp()) })),
      )),
    );
  }
  return c.json({
    rooms: states,
    behind: states.filter((s) => s.indexedThrough < s.lastSeq || s.archivedThrough < s.lastSeq).length,
    next: page.length === limit ? (page.at(-1)?.id ?? null) : null,
  });
});
