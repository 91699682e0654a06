/**
 * @module `/api/admin/exports`: eDiscovery exports for the tenant's admins. `POST` with
 * `{"roomId"?}` (one room, or the whole tenant) records the export and queues the job
 * (worker/exports/job.ts) → 202; `GET` lists them; `GET /:id` reports one; `GET /:id/download`
 * streams the NDJSON file as an attachment; `DELETE /:id` removes file and record. An export is
 * an admin's deliberate copy (often for a legal hold), so retention does not delete it: admins do.
 * `GET /api/admin/rooms/:id/head` gives a room's live head (seq and chain link, with what it states
 * about retention and digest schemes) signed with the deployment's key, as an export's head lines
 * are: an auditor checks an export against it, and an operator anchors it elsewhere.
 */
import { and, desc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb, filesBucket } from "../../platform/residency.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { exports, rooms } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { signRoomHead } from "../exports/keys.ts";
import { readJsonObject } from "../http.ts";
import { newId } from "../ids.ts";
import { roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

function admin(c: Context<AppEnv>): Identity {
  const me = c.get("identity");
  requireAdmin(me, "export history");
  return me;
}

async function tenantRoom(env: Env, tenantId: string, roomId: unknown) {
  if (typeof roomId !== "string" || !/^r_[0-9a-z]{20}$/.test(roomId)) return undefined;
  return drizzle(directoryDb(env, tenantId))
    .select({ id: rooms.id })
    .from(rooms)
    .where(and(eq(rooms.id, roomId), eq(rooms.tenantId, tenantId)))
    .get();
}

function view(r: typeof exports.$inferSelect) {
  return {
    id: r.id,
    roomId: r.roomId,
    status: r.status,
    events: r.events,
    bytes: r.bytes,
    error: r.error,
    createdAt: r.createdAt,
    finishedAt: r.finishedAt,
  };
}

async function findExport(c: Context<AppEnv>, me: Identity) {
  const row = await drizzle(directoryDb(c.env, me.tenantId))
    .select()
    .from(exports)
    .where(and(eq(exports.id, c.req.param("id") ?? ""), eq(exports.tenantId, me.tenantId)))
    .get();
  if (!row) throw new ApiError("not_found", "no such export");
  return row;
}

export const exportRoutes = new Hono<AppEnv>()
  .post("/exports", async (c) => {
    const me = admin(c);
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    let roomId: string | null = null;
    if (body.roomId !== undefined) {
      const room = await tenantRoom(c.env, me.tenantId, body.roomId);
      if (!room) throw new ApiError("not_found", "no such room");
      roomId = room.id;
    }
    const id = newId("x");
    const row = {
      id,
      tenantId: me.tenantId,
      roomId,
      requestedBy: me.userId,
      status: "running" as const,
      objectKey: `${me.tenantId}/exports/${id}.ndjson`,
      createdAt: Date.now(),
    };
    await drizzle(directoryDb(c.env, me.tenantId)).insert(exports).values(row);
    await c.env.EXPORTS.send({ exportId: id, tenantId: me.tenantId }, { contentType: "json" });
    await audit(c.env, me, "export.requested", roomId ?? me.tenantId, { export: id });
    return c.json(view({ ...row, events: 0, bytes: 0, error: null, finishedAt: null }), 202);
  })
  .get("/exports", async (c) => {
    const me = admin(c);
    const rows = await drizzle(directoryDb(c.env, me.tenantId))
      .select()
      .from(exports)
      .where(eq(exports.tenantId, me.tenantId))
      .orderBy(desc(exports.createdAt))
      .limit(100)
      .all();
    return c.json({ exports: rows.map(view) });
  })
  .get("/exports/:id", async (c) => c.json(view(await findExport(c, admin(c)))))
  .get("/exports/:id/download", async (c) => {
    const me = admin(c);
    const row = await findExport(c, me);
    if (row.status !== "done") throw new ApiError("conflict", `export is ${row.status}`);
    const object = await filesBucket(c.env, me.tenantId).get(row.objectKey);
    if (!object) throw new ApiError("not_found", "export file is gone");
    await audit(c.env, me, "export.downloaded", row.roomId ?? me.tenantId, { export: row.id });
    return new Response(object.body, {
      headers: {
        "content-type": "application/x-ndjson; charset=utf-8",
        "content-length": String(object.size),
        "content-disposition": `attachment; filename="parley-export-${row.id}.ndjson"`,
        "x-content-type-options": "nosniff",
        "cache-control": "private, no-store",
      },
    });
  })
  .delete("/exports/:id", async (c) => {
    const me = admin(c);
    const row = await findExport(c, me);
    if (row.status === "running") throw new ApiError("conflict", "export is still running");
    await filesBucket(c.env, me.tenantId).delete(row.objectKey);
    await drizzle(directoryDb(c.env, me.tenantId)).delete(exports).where(eq(exports.id, row.id));
    await audit(c.env, me, "export.deleted", row.roomId ?? me.tenantId, { export: row.id });
    return c.json({ ok: true });
  })
  .get("/rooms/:id/head", async (c) => {
    const me = admin(c);
    const room = await tenantRoom(c.env, me.tenantId, c.req.param("id"));
    if (!room) throw new ApiError("not_found", "no such room");
    const signed = await signRoomHead(
      c.env,
      me.tenantId,
      room.id,
      await roomStub(c.env, me.tenantId, room.id).head(),
    );
    return c.json({ ...signed.head, jws: signed.jws });
  });
