/**
 * @module The Parley Worker: wiring only. Routes live in worker/routes/, one module per resource;
 * the Durable Object classes are exported from here for the runtime. The web client is static
 * assets (wrangler.toml `[assets]`), served without running this code.
 */
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { readAuthConfig } from "./auth/config.ts";
import { requireIdentity } from "./auth/identity.ts";
import { errorResponse, onError } from "./errors.ts";
import { readExportKeys } from "./exports/keys.ts";
import { observeRequests } from "./observability/request.ts";
import { consumeQueue } from "./queues.ts";
import { checkResidency } from "./residency.ts";
import { attachmentRoutes } from "./routes/attachments.ts";
import { auditRoutes } from "./routes/audit.ts";
import { authRoutes } from "./routes/auth.ts";
import { deadLetterRoutes } from "./routes/dead-letters.ts";
import { exportRoutes } from "./routes/exports.ts";
import { meRoutes } from "./routes/me.ts";
import { messageRoutes } from "./routes/messages.ts";
import { presenceRoutes } from "./routes/presence.ts";
import { roomRoutes } from "./routes/rooms.ts";
import { searchRoutes } from "./routes/search.ts";
import { statsRoutes } from "./routes/stats.ts";
import { tenantRoutes } from "./routes/tenant.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import { userRoutes } from "./routes/users.ts";
import { wellKnownRoutes } from "./routes/well-known.ts";
import type { AppEnv } from "./types.ts";

export { Presence } from "../durable-objects/presence.ts";
export { Room } from "../durable-objects/room.ts";

// A misconfigured deployment (access mode without its Access applications, dev mode without a
// key, a malformed origin, no valid export signing key) fails here, at start-up, rather than on
// some later request.
readAuthConfig(env);
readExportKeys(env);
checkResidency(env);

const app = new Hono<AppEnv>();
app.onError(onError);
app.notFound(() => errorResponse("not_found", "not found"));

// First, so that it times and logs every request, including refused and failed ones.
app.use("*", observeRequests);
app.get("/healthz", (c) => c.json({ ok: true }));
app.route("/auth", authRoutes);
app.route("/.well-known", wellKnownRoutes);
app.use("/api/*", requireIdentity);
app.route("/api/me", meRoutes);
app.route("/api/rooms", roomRoutes);
app.route("/api/rooms", messageRoutes);
app.route("/api", attachmentRoutes);
app.route("/api/users", userRoutes);
app.route("/api/audit", auditRoutes);
app.route("/api/admin/dead-letters", deadLetterRoutes);
app.route("/api/tokens", tokenRoutes);
app.route("/api/presence", presenceRoutes);
app.route("/api/search", searchRoutes);
app.route("/api/tenant", tenantRoutes);
app.route("/api/admin", exportRoutes);
app.route("/api/admin/stats", statsRoutes);

export default {
  fetch: app.fetch,
  queue: consumeQueue,
} satisfies ExportedHandler<Env>;
