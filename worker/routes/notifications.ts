/**
 * @module Notifications (docs/protocol.md, "Notifications"): the caller's preferences
 * (`/api/notifications`) and push subscriptions (`/api/push`), both kept in the caller's presence
 * shard, which decides who is told of what (durable-objects/notify-store.ts). Preferences change on
 * every device at once: the shard sends `notify_prefs` to the user's presence sockets.
 */
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { base64url, sha256 } from "../../platform/bytes.ts";
import type { Identity } from "../../platform/identity.ts";
import type { NotifyPrefs, PushSubscriptionView } from "../../protocol/notify.ts";
import { parsePrefsChange, parsePushSubscription, parseRoomPrefChange } from "../../protocol/notify.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import { vapidOf } from "../notify/web-push.ts";
import { userShard } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

const ID = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest user agent kept with a subscription (it only helps the user tell devices apart). */
const MAX_USER_AGENT_CHARS = 200;

function shardOfMe(c: Context<AppEnv>, me: Identity) {
  return userShard(c.env, me.tenantId, me.userId);
}

/** Bots (API tokens) have no device to notify. */
function person(c: Context<AppEnv>): Identity {
  const me = c.get("identity");
  if (me.role === "bot") throw new ApiError("forbidden", "bots are not notified");
  return me;
}

async function body(c: Context<AppEnv>): Promise<Record<string, unknown>> {
  return readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
}

export const notificationRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = person(c);
    const { stub } = shardOfMe(c, me);
    return c.json((await stub.notifyPrefs(me.userId)) satisfies NotifyPrefs);
  })
  .put("/", async (c) => {
    const me = person(c);
    const parsed = parsePrefsChange(await body(c), Date.now());
    if (!parsed.ok) throw new ApiError(parsed.code, parsed.message);
    const { stub, shard } = shardOfMe(c, me);
    await stub.init(me.tenantId, shard);
    return c.json((await stub.setNotifyPrefs(me.userId, parsed.value)) satisfies NotifyPrefs);
  })
  .put("/rooms/:roomId", async (c) => {
    const me = person(c);
    const roomId = c.req.param("roomId");
    if (!ID.test(roomId)) throw new ApiError("bad_request", "not a room id");
    const parsed = parseRoomPrefChange(await body(c), Date.now());
    if (!parsed.ok) throw new ApiError(parsed.code, parsed.message);
    const { stub, shard } = shardOfMe(c, me);
    await stub.init(me.tenantId, shard);
    const prefs = await stub.setRoomNotifyPref(me.userId, roomId, parsed.value);
    if (!prefs)
      throw new ApiError(
        "too_large",
        `at most ${limitsOf(c.env).maxRoomNotifyPrefs} rooms may have a preference of their own; reset some`,
      );
    return c.json(prefs satisfies NotifyPrefs);
  });

export const pushRoutes = new Hono<AppEnv>()
  // The application server key browsers subscribe with (`applicationServerKey`).
  .get("/key", (c) => c.json({ publicKey: vapidOf(c.env).publicKey }))
  .get("/subscriptions", async (c) => {
    const me = person(c);
    const { stub } = shardOfMe(c, me);
    const subscriptions: PushSubscriptionView[] = await stub.pushSubscriptions(me.userId);
    return c.json({ subscriptions });
  })
  .post("/subscriptions", async (c) => {
    const me = person(c);
    const parsed = parsePushSubscription(await body(c), {
      // A dev run's local push service (tests' web-push-testing) listens on http://localhost.
      allowLoopbackHttp: c.env.AUTH_MODE === "dev",
    });
    if (!parsed.ok) throw new ApiError(parsed.code, parsed.message);
    // The same device registering again finds its subscription by its endpoint.
    const id = base64url(await sha256(parsed.value.endpoint)).slice(0, 32);
    const userAgent = (c.req.header("user-agent") ?? "").slice(0, MAX_USER_AGENT_CHARS) || null;
    const { stub, shard } = shardOfMe(c, me);
    await stub.init(me.tenantId, shard);
    const result = await stub.pushSubscribe(me.userId, id, parsed.value, userAgent);
    return c.json({ id: result.id }, result.created ? 201 : 200);
  })
  .delete("/subscriptions/:id", async (c) => {
    const me = person(c);
    const id = c.req.param("id");
    if (!ID.test(id)) throw new ApiError("bad_request", "not a subscription id");
    const { stub } = shardOfMe(c, me);
    if (!(await stub.pushUnsubscribe(me.userId, id))) throw new ApiError("not_found", "no such subscription");
    return c.json({ ok: true });
  })
  .post("/test", async (c) => {
    const me = person(c);
    const { stub, shard } = shardOfMe(c, me);
    await stub.init(me.tenantId, shard);
    return c.json({ devices: await stub.pushTest(me.userId) }, 202);
  });
