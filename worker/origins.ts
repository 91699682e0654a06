/** @module Which pages may act for a signed-in browser: the exact allow-list of origins. */
import type { Context } from "hono";
import { authConfigOf } from "./auth/config.ts";
import { ApiError } from "./errors.ts";
import type { AppEnv } from "./types.ts";

/** Whether `origin` is this deployment's own or one of ALLOWED_ORIGINS (exact matches only). */
export function isOurOrigin(c: Context<AppEnv>, origin: string | undefined): boolean {
  if (origin === undefined) return false;
  const allowed = authConfigOf(c.env).allowedOrigins;
  return allowed.includes(origin) || origin === new URL(c.req.url).origin;
}

/**
 * Browsers send Origin on every WebSocket; Access's cookie may be SameSite=None, so without this a
 * page on another site could open an authenticated socket (cross-site WebSocket hijacking). Clients
 * that send no Origin (bots, the SDK in Node) are not browsers.
 */
export function checkSocketOrigin(c: Context<AppEnv>): void {
  const origin = c.req.header("origin");
  if (origin === undefined) return;
  const allowed = authConfigOf(c.env).allowedOrigins;
  const ok = allowed.length > 0 ? allowed.includes(origin) : origin === new URL(c.req.url).origin;
  if (!ok) throw new ApiError("forbidden", "this origin may not open Parley sockets");
}
