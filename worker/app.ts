/**
 * @module The Hono app: middleware and one `app.route()` per resource (routes live in
 * worker/routes/). Kept apart from worker/index.ts so that tests can read its route table, e.g. to
 * prove a rule holds for every state-changing route.
 */
import { Hono } from "hono";
import { errorResponse } from "../protocol/index.ts";
import { requireIdentity } from "./auth/identity.ts";
import { onError } from "./errors.ts";
import { observeRequests } from "./observability/request.ts";
import { refuseCrossSiteWrites } from "./origins.ts";
import { attachmentRoutes } from "./routes/attachments.ts";
import { auditRoutes } from "./routes/audit.ts";
import { authRoutes } from "./routes/auth.ts";
import { catchUpRoutes } from "./routes/catch-up.ts";
import { deadLetterRoutes } from "./routes/dead-letters.ts";
import { exportRoutes } from "./routes/exports.ts";
import { hookAdminRoutes, hookRoutes } from "./routes/hooks.ts";
import { meRoutes } from "./routes/me.ts";
import { messageRoutes } from "./routes/messages.ts";
import { notificationRoutes, pushRoutes } from "./routes/notifications.ts";
import { presenceRoutes } from "./routes/presence.ts";
import { roomRoutes } from "./routes/rooms.ts";
import { scimRoutes, scimTokenRoutes } from "./routes/scim.ts";
import { searchRoutes } from "./routes/search.ts";
import { statsRoutes } from "./routes/stats.ts";
import { tenantRoutes } from "./routes/tenant.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import { userRoutes } from "./routes/users.ts";
import { webhookRoutes } from "./routes/webhooks.ts";
import { wellKnownRoutes } from "./routes/well-known.ts";
import type { AppEnv } from "./types.ts";

export const app = new Hono<AppEnv>();

/** Whether a path is one of the app's, by the prefixes mounted below: the API, sign-in, inbound
 * hooks, SCIM, health and the well-known documents. worker/index.ts hands every other path to the
 * web client's Worker (its files, and index.html wherever the client routes). */
export function isAppPath(pathname: string): boolean {
  return APP_PATH.test(pathname);
}
const APP_PATH = /^\/(?:(?:api|auth|hooks|scim|\.well-known)(?:\/|$)|healthz$)/;

app.onError(onError);
app.notFound(() => errorResponse("not_found", "not found"));

// First, so that it times and logs every request, including refused and failed ones.
app.use("*", observeRequests);
// Before any route and before identity: a write a browser was made to send from another site is
// refused whatever credentials came with it (worker/origins.ts).
app.use("*", refuseCrossSiteWrites);
app.get("/healthz", (c) => c.json({ ok: true }));
app.route("/auth", authRoutes);
app.route("/.well-known", wellKnownRoutes);
// Incoming webhooks: the URL is the credential (worker/routes/hooks.ts), so no identity middleware.
app.route("/hooks", hookRoutes);
// SCIM provisioning: its own bearer token and SCIM error bodies (worker/routes/scim.ts).
app.route("/scim/v2", scimRoutes);
app.use("/api/*", requireIdentity);
app.route("/api/me", meRoutes);
app.route("/api/rooms", roomRoutes);
app.route("/api/rooms", messageRoutes);
app.route("/api/rooms", hookAdminRoutes);
app.route("/api", attachmentRoutes);
app.route("/api/users", userRoutes);
app.route("/api/audit", auditRoutes);
app.route("/api/admin/dead-letters", deadLetterRoutes);
app.route("/api/tokens", tokenRoutes);
app.route("/api/presence", presenceRoutes);
app.route("/api/notifications", notificationRoutes);
app.route("/api/push", pushRoutes);
app.route("/api/search", searchRoutes);
app.route("/api/tenant", tenantRoutes);
app.route("/api/admin", exportRoutes);
app.route("/api/admin/stats", statsRoutes);
app.route("/api/admin/history", catchUpRoutes);
app.route("/api/admin/webhooks", webhookRoutes);
app.route("/api/admin/scim-token", scimTokenRoutes);
