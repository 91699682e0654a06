/**
 * @module The Parley Worker: wiring only. The Hono app is worker/app.ts (routes in worker/routes/,
 * one module per resource); the Durable Object classes are exported from here for the runtime. The
 * web client is another Worker of static assets only (client/web/wrangler.toml): a request for any
 * path that is not the API's goes to it unchanged, before the app runs (docs/architecture.md,
 * decision 15).
 */
import { env } from "cloudflare:workers";
import { limitsOf } from "../config/limits.ts";
import { readAuthConfig } from "../platform/auth-config.ts";
import { checkResidency } from "../platform/residency.ts";
import { app, isAppPath } from "./app.ts";
import { readExportKeys } from "./exports/keys.ts";
import { trimHistory } from "./history/window.ts";
import { readVapid } from "./notify/web-push.ts";
import { consumeQueue } from "./queues.ts";

export { Presence } from "../durable-objects/presence.ts";
export { Quota } from "../durable-objects/quota.ts";
export { Room } from "../durable-objects/room.ts";
export { SearchShard } from "../durable-objects/search.ts";
export { WebhookEndpoint } from "../durable-objects/webhook.ts";

// A misconfigured deployment (access mode without its Access applications, dev mode without a
// key, a malformed origin, a limit out of its range, no valid export signing or VAPID key) fails
// here, at start-up, rather than on some later request.
readAuthConfig(env);
limitsOf(env);
readExportKeys(env);
readVapid(env);
checkResidency(env);

export default {
  fetch(request, env, ctx) {
    if (isAppPath(new URL(request.url).pathname)) return app.fetch(request, env, ctx);
    return env.WEB.fetch(request);
  },
  queue: consumeQueue,
  // The D1 history's window (wrangler.toml [triggers]).
  scheduled: async (controller, env) => {
    await trimHistory(env, controller.scheduledTime);
  },
} satisfies ExportedHandler<Env>;
