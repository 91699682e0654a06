/** @module Dev sign-in: `POST /auth/dev/login` mints a local RS256 token shaped like an Access token.
 * `POST /auth/dev/logout` clears its cookie. Both exist only when AUTH_MODE is "dev"; otherwise
 * they answer 404. */
import { Hono } from "hono";
import { deleteCookie, setCookie } from "hono/cookie";
import { limitsOf } from "../../config/limits.ts";
import { authConfigOf } from "../../platform/auth-config.ts";
import { TENANT_ID } from "../../protocol/index.ts";
import { ACCESS_COOKIE, EMAIL, MAX_NAME_CHARS, provision } from "../auth/identity.ts";
import { mintDevToken } from "../auth/tokens.ts";
import { ApiError } from "../errors.ts";
import { readJsonObject } from "../http.ts";
import type { AppEnv } from "../types.ts";

export const authRoutes = new Hono<AppEnv>()
  // Dev sign-out: the cookie goes (behind Access, the client goes to /cdn-cgi/access/logout).
  .post("/dev/logout", (c) => {
    if (authConfigOf(c.env).mode !== "dev") throw new ApiError("not_found", "not found");
    deleteCookie(c, ACCESS_COOKIE, { path: "/" });
    return c.json({ ok: true });
  })
  .post("/dev/login", async (c) => {
    const config = authConfigOf(c.env);
    if (config.mode !== "dev") throw new ApiError("not_found", "not found");
    const limits = limitsOf(c.env);
    const body = await readJsonObject(c, limits.maxJsonBodyBytes);
    const { email, name, tenant, ttlSeconds } = body;
    if (typeof email !== "string" || !EMAIL.test(email))
      throw new ApiError("bad_request", "email must be an email address");
    if (typeof tenant !== "string" || !TENANT_ID.test(tenant)) {
      throw new ApiError(
        "bad_request",
        "tenant must be 1-40 characters of [a-z0-9-], starting with a letter or digit",
      );
    }
    const display = typeof name === "string" ? name.trim() : "";
    if (display.length === 0 || [...display].length > MAX_NAME_CHARS) {
      throw new ApiError("bad_request", `name must be 1-${MAX_NAME_CHARS} characters`);
    }
    // A shorter life on request, to try what clients do when a token expires (docs/protocol.md).
    const ttl = ttlSeconds ?? limits.devTokenTtlSeconds;
    if (typeof ttl !== "number" || !Number.isInteger(ttl) || ttl < 1 || ttl > limits.devTokenTtlSeconds) {
      throw new ApiError(
        "bad_request",
        `ttlSeconds must be an integer from 1 to ${limits.devTokenTtlSeconds}`,
      );
    }
    const claims = { email: email.toLowerCase(), name: display, tenant };
    const token = await mintDevToken(claims, config.devKey, ttl);
    await provision(c.env, {
      tenantId: tenant,
      tenantName: tenant,
      email: claims.email,
      name: display,
      mappedRole: null,
      firstUserOwns: true,
    });
    setCookie(c, ACCESS_COOKIE, token, {
      path: "/",
      httpOnly: true,
      sameSite: "Lax",
      secure: new URL(c.req.url).protocol === "https:",
      maxAge: ttl,
    });
    return c.json({ token });
  });
