/** @module Which pages may act for a signed-in browser: the exact allow-list of origins. */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { authConfigOf } from "../platform/auth-config.ts";
import { ApiError } from "./errors.ts";
import type { AppEnv } from "./types.ts";

/** Methods that change nothing: a browser may send them from any page. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Whether `origin` is one of Parley's pages: exactly one of ALLOWED_ORIGINS, or, when that is
 * empty, the deployment's own origin. A missing Origin, `null` and look-alikes are not.
 */
export function isOurOrigin(c: Context<AppEnv>, origin: string | undefined): boolean {
  if (origin === undefined) return false;
  const allowed = authConfigOf(c.env).allowedOrigins;
  return allowed.length > 0 ? allowed.includes(origin) : origin === new URL(c.req.url).origin;
}

/**
 * Whether a browser may have sent this request for a signed-in user: it carries cookies (Access's
 * CF_Authorization is one), or the browser's Fetch Metadata says it came from another origin.
 * Bots and the SDK in Node send neither.
 */
function browserMaySend(c: Context<AppEnv>): boolean {
  if (c.req.header("cookie") !== undefined) return true;
  const site = c.req.header("sec-fetch-site");
  return site !== undefined && site !== "same-origin";
}

/**
 * Cross-site request forgery. Access's cookie may be SameSite=None, and behind a hostname-level
 * Access application Access adds `Cf-Access-Jwt-Assertion` to every request it forwards, the forged
 * ones included: neither the cookie nor that header says which page sent the request. So every
 * state-changing request a browser could have sent must name one of our pages in Origin (browsers
 * always send it on such requests), whatever credentials come with it, before anything reads the
 * body or acts. JSON-only bodies are not relied on: uploads and empty-body routes take none.
 */
export const refuseCrossSiteWrites = createMiddleware<AppEnv>(async (c, next) => {
  if (!SAFE_METHODS.has(c.req.method) && browserMaySend(c) && !isOurOrigin(c, c.req.header("origin"))) {
    throw new ApiError("forbidden", "cross-site request refused: Origin is not one of Parley's pages");
  }
  await next();
});

/**
 * Browsers send Origin on every WebSocket; Access's cookie may be SameSite=None, so without this a
 * page on another site could open an authenticated socket (cross-site WebSocket hijacking). Clients
 * that send no Origin (bots, the SDK in Node) are not browsers.
 */
export function checkSocketOrigin(c: Context<AppEnv>): void {
  const origin = c.req.header("origin");
  if (origin === undefined) return;
  if (!isOurOrigin(c, origin)) throw new ApiError("forbidden", "this origin may not open Parley sockets");
}
