/**
 * @module Outgoing webhooks, for tenant admins (docs/protocol.md, "Outgoing webhooks"): register an
 * endpoint with a filter (rooms, event kinds) and get its signing secret once; list, re-enable,
 * delete; read an endpoint's delivery log and replay from it. The directory row says where the
 * consumer forwards (worker/archive/consumer.ts); the endpoint's object holds the secret and
 * delivers (durable-objects/webhook.ts).
 */
import { and, eq, inArray } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { base64url } from "../../platform/bytes.ts";
import { directoryDb } from "../../platform/residency.ts";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { rooms, webhooks } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { intParam, readJsonObject } from "../http.ts";
import { newId } from "../ids.ts";
import { webhookStub, webhookTargetRefusal } from "../stubs.ts";
import type { AppEnv } from "../types.ts";
import { forgetWebhooks } from "../webhooks.ts";

/** Event kinds a filter may name (protocol/index.ts, RoomEvent). */
const KINDS = [
  "message",
  "edit",
  "delete",
  "reaction",
  "pin",
  "member_join",
  "member_leave",
  "room_update",
  "expired",
];
const MAX_ROOMS = 50;
const MAX_URL_CHARS = 2048;
/** Endpoints per tenant: each receives every event it takes, so each is a cost on every message. */
const MAX_WEBHOOKS = 20;

type Row = typeof webhooks.$inferSelect;

function view(row: Row) {
  return {
    id: row.id,
    url: row.url,
    rooms: row.rooms ? (JSON.parse(row.rooms) as string[]) : null,
    kinds: row.kinds ? (JSON.parse(row.kinds) as string[]) : null,
    createdAt: row.createdAt,
  };
}

async function find(c: Context<AppEnv>): Promise<Row> {
  const me = c.get("identity");
  const row = await drizzle(directoryDb(c.env, me.tenantId))
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.id, c.req.param("id") ?? ""), eq(webhooks.tenantId, me.tenantId)))
    .get();
  if (!row) throw new ApiError("not_found", "no such webhook");
  return row;
}

function stringList(value: unknown, name: string, max: number): string[] | null {
  if (value === undefined || value === null) return null;
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    value.length > max ||
    !value.every((v) => typeof v === "string")
  )
    throw new ApiError("bad_request", `${name} must be null or an array of 1-${max} strings`);
  return [...new Set(value as string[])];
}

export const webhookRoutes = new Hono<AppEnv>()
  .use(async (c, next) => {
    requireAdmin(c.get("identity"), "manage webhooks");
    await next();
  })
  .post("/", async (c) => {
    const me = c.get("identity");
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    const url = typeof body.url === "string" ? body.url.trim() : "";
    if (url.length === 0 || url.length > MAX_URL_CHARS)
      throw new ApiError("bad_request", `url must be 1-${MAX_URL_CHARS} characters`);
    const allowLoopback = c.env.AUTH_MODE === "dev";
    const refusal = webhookTargetRefusal(url, allowLoopback);
    if (refusal) throw new ApiError("bad_request", `url refused: ${refusal}`);
    const roomIds = stringList(body.rooms, "rooms", MAX_ROOMS);
    const kinds = stringList(body.kinds, "kinds", KINDS.length);
    if (kinds?.some((k) => !KINDS.includes(k)))
      throw new ApiError("bad_request", `kinds may name ${KINDS.join(", ")}`);
    const db = drizzle(directoryDb(c.env, me.tenantId));
    if (roomIds) {
      const found = await db
        .select({ id: rooms.id })
        .from(rooms)
        .where(and(eq(rooms.tenantId, me.tenantId), inArray(rooms.id, roomIds)))
        .all();
      if (found.length !== roomIds.length) throw new ApiError("not_found", "no such room");
    }
    const count = (
      await db.select({ id: webhooks.id }).from(webhooks).where(eq(webhooks.tenantId, me.tenantId)).all()
    ).length;
    if (count >= MAX_WEBHOOKS) throw new ApiError("too_large", `at most ${MAX_WEBHOOKS} webhooks per tenant`);
    const id = newId("w");
    const secret = `whsec_${base64url(crypto.getRandomValues(new Uint8Array(32)))}`;
    const row: Row = {
      id,
      tenantId: me.tenantId,
      url: new URL(url).href,
      rooms: roomIds ? JSON.stringify(roomIds) : null,
      kinds: kinds ? JSON.stringify(kinds) : null,
      createdBy: me.userId,
      createdAt: Date.now(),
    };
    // The object first: a row without its object would be forwarded to and deliver nothing.
    await webhookStub(c.env, me.tenantId, id).configure({
      tenantId: me.tenantId,
      id,
      url: row.url,
      secret,
      rooms: roomIds,
      kinds,
      allowLoopback,
    });
    await db.insert(webhooks).values(row);
    forgetWebhooks(me.tenantId);
    await audit(c.env, me, "webhook.created", id, { url: row.url });
    return c.json({ ...view(row), secret, state: "active" }, 201);
  })
  .get("/", async (c) => {
    const me = c.get("identity");
    const rows = await drizzle(directoryDb(c.env, me.tenantId))
      .select()
      .from(webhooks)
      .where(eq(webhooks.tenantId, me.tenantId))
      .all();
    const states = await Promise.all(rows.map((r) => webhookStub(c.env, me.tenantId, r.id).status()));
    return c.json({ webhooks: rows.map((r, i) => ({ ...view(r), ...states[i] })) });
  })
  .post("/:id/enable", async (c) => {
    const me = c.get("identity");
    const row = await find(c);
    const stub = webhookStub(c.env, me.tenantId, row.id);
    await stub.enable();
    await audit(c.env, me, "webhook.enabled", row.id, {});
    return c.json({ ...view(row), ...(await stub.status()) });
  })
  .delete("/:id", async (c) => {
    const me = c.get("identity");
    const row = await find(c);
    await drizzle(directoryDb(c.env, me.tenantId)).delete(webhooks).where(eq(webhooks.id, row.id));
    forgetWebhooks(me.tenantId);
    await webhookStub(c.env, me.tenantId, row.id).destroy();
    await audit(c.env, me, "webhook.deleted", row.id, { url: row.url });
    return c.json({ ok: true });
  })
  .get("/:id/deliveries", async (c) => {
    const me = c.get("identity");
    const row = await find(c);
    const limit = intParam(c, "limit", { min: 1, max: 200 }) ?? 50;
    const before = intParam(c, "before", { min: 1 });
    const stub = webhookStub(c.env, me.tenantId, row.id);
    const deliveries = await stub.deliveries(limit, before);
    return c.json({ deliveries, ...(await stub.status()) });
  })
  .post("/:id/replay", async (c) => {
    const me = c.get("identity");
    const row = await find(c);
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    const from = body.from;
    if (!(typeof from === "number" && Number.isSafeInteger(from) && from >= 1))
      throw new ApiError("bad_request", "from must be a delivery id");
    const replayed = await webhookStub(c.env, me.tenantId, row.id).replay(from, 100);
    await audit(c.env, me, "webhook.replayed", row.id, { from, replayed });
    return c.json({ replayed }, 202);
  });
