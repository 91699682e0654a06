/**
 * @module Who is calling: reads the token (Access header or cookie), verifies it, and provisions the
 * tenant and user just in time from the claims. Every /api route runs behind `requireIdentity`.
 */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { getCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { type Role, tenants, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { newId } from "../ids.ts";
import type { AppEnv } from "../types.ts";
import { type TokenClaims, TokenError, verifyToken } from "./tokens.ts";

/** The caller as every handler and Durable Object sees it. */
export interface Identity {
  userId: string;
  email: string;
  name: string;
  role: Role;
  tenantId: string;
  tenantName: string;
}

export const ACCESS_HEADER = "cf-access-jwt-assertion";
export const ACCESS_COOKIE = "CF_Authorization";

export const MAX_NAME_CHARS = 80;
export const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,39}$/;
export const EMAIL = /^[^\s@<>()[\]\\,;:"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$/;

/** Finds or creates the tenant and the user named by verified claims. */
export async function provision(
  db: D1Database,
  claims: { email: string; name: string; tenant: string },
): Promise<Identity> {
  const orm = drizzle(db);
  const now = Date.now();
  const email = claims.email.toLowerCase();
  const found = await orm
    .select({ user: users, tenantName: tenants.name })
    .from(users)
    .innerJoin(tenants, eq(tenants.id, users.tenantId))
    .where(and(eq(users.tenantId, claims.tenant), eq(users.email, email)))
    .get();
  if (found) return toIdentity(found.user, found.tenantName);

  // Whoever creates the tenant row owns the tenant: the insert either creates it (and returns it)
  // or finds it there, atomically, so two first sign-ins cannot both become owner. Everyone after
  // is a member (role mapping grows with the Access work).
  const created = await orm
    .insert(tenants)
    .values({ id: claims.tenant, name: claims.tenant, createdAt: now })
    .onConflictDoNothing()
    .returning({ id: tenants.id });
  const role: Role = created.length > 0 ? "owner" : "member";
  await orm
    .insert(users)
    .values({
      id: newId("u"),
      tenantId: claims.tenant,
      email,
      name: claims.name,
      role,
      createdAt: now,
      lastLoginAt: now,
    })
    .onConflictDoNothing();
  const row = await orm
    .select({ user: users, tenantName: tenants.name })
    .from(users)
    .innerJoin(tenants, eq(tenants.id, users.tenantId))
    .where(and(eq(users.tenantId, claims.tenant), eq(users.email, email)))
    .get();
  if (!row) throw new Error("user provisioning failed");
  return toIdentity(row.user, row.tenantName);
}

function toIdentity(user: typeof users.$inferSelect, tenantName: string): Identity {
  return {
    userId: user.id,
    email: user.email,
    name: user.name,
    role: user.role,
    tenantId: user.tenantId,
    tenantName,
  };
}

function claimsToProfile(claims: TokenClaims): { email: string; name: string; tenant: string } {
  const tenant = claims.tenant;
  const email = claims.email;
  if (
    typeof tenant !== "string" ||
    !TENANT_ID.test(tenant) ||
    typeof email !== "string" ||
    !EMAIL.test(email)
  ) {
    throw new ApiError("unauthorized", "token lacks a valid tenant or email");
  }
  const given = typeof claims.name === "string" ? claims.name.trim() : "";
  // Names travel in every event and socket attachment: keep them to a display length.
  const name = [...(given === "" ? email : given)].slice(0, MAX_NAME_CHARS).join("");
  return { email, name, tenant };
}

export const requireIdentity = createMiddleware<AppEnv>(async (c, next) => {
  const token = c.req.header(ACCESS_HEADER) ?? getCookie(c, ACCESS_COOKIE);
  if (!token) throw new ApiError("unauthorized", "sign in first: no Access token on the request");
  let claims: TokenClaims;
  try {
    claims = await verifyToken(token, c.env);
  } catch (err) {
    if (err instanceof TokenError) throw new ApiError("unauthorized", "invalid or expired token");
    throw err;
  }
  c.set("identity", await provision(c.env.DB, claimsToProfile(claims)));
  await next();
});
