/**
 * @module Who is calling: reads the token (Access header or cookie), verifies it, and provisions the
 * tenant and user just in time from the claims. Every /api route runs behind `requireIdentity`.
 */
import { and, eq, sql } from "drizzle-orm";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import type { Context } from "hono";
import { getCookie } from "hono/cookie";
import { createMiddleware } from "hono/factory";
import { authConfigOf } from "../../platform/auth-config.ts";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb } from "../../platform/residency.ts";
import { type Role, TENANT_ID } from "../../protocol/index.ts";
import { audit } from "../audit.ts";
import { tenants, users } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { place } from "../history/placement.ts";
import { newId } from "../ids.ts";
import { pushMember } from "../rooms.ts";
import type { AppEnv } from "../types.ts";
import { identityOfApiToken } from "./api-tokens.ts";
import { TokenError, type Verified, verifyToken } from "./tokens.ts";

export const ACCESS_HEADER = "cf-access-jwt-assertion";
export const ACCESS_COOKIE = "CF_Authorization";

export const MAX_NAME_CHARS = 80;
export const EMAIL = /^[^\s@<>()[\]\\,;:"]{1,64}@[A-Za-z0-9.-]{1,189}\.[A-Za-z]{2,63}$/;

/** Who a verified token says the caller is, before provisioning. */
export interface Profile {
  tenantId: string;
  tenantName: string;
  /** The user's key in the tenant: their email, or `service:<common_name>` for a bot. */
  email: string;
  name: string;
  /** The role configuration gives this person (owners and admins by email or group; bots); null: default. */
  mappedRole: Role | null;
  /** Dev mode only: the first person in a new tenant owns it. In access mode owners are configured. */
  firstUserOwns: boolean;
  /** The identity provider's id of the person, when the token carries one: it finds the person
   * provisioned by SCIM under that `externalId` even if their email has changed since. */
  externalId?: string;
}

const RANK: Record<Role, number> = { guest: 0, bot: 0, member: 1, admin: 2, owner: 3 };

/** The lookup every request makes, built once per directory database (building a drizzle query
 * costs about as much as running it locally). */
function userLookup(orm: DrizzleD1Database) {
  return orm
    .select({ user: users, tenantName: tenants.name })
    .from(users)
    .innerJoin(tenants, eq(tenants.id, users.tenantId))
    .where(and(eq(users.tenantId, sql.placeholder("tenantId")), eq(users.email, sql.placeholder("email"))))
    .prepare();
}
/**
 * How long this isolate answers a user's identity from memory after reading it from the directory.
 * A page load makes several requests and opens several sockets within a second, each of which
 * would otherwise read the directory (D1, possibly far from this edge). A change made through this
 * isolate (a role change) is seen at once; one made elsewhere reaches the requests this isolate
 * serves within this time, well inside the 5 s in which a deactivated user's access must end.
 */
export const IDENTITY_MEMORY_MS = 2_000;
const IDENTITIES_MAX = 10_000;

/**
 * How long a request that opens a stream (a room's socket, SSE stream or long poll, a presence
 * socket) may use the identity its token was last given here, read from the directory (decision
 * 14). Longer than `IDENTITY_MEMORY_MS` because a stream's objects do not rely on it for what can
 * change: a room and a presence shard refuse a deactivated person themselves (decision 12), and a
 * room authorizes commands by its own member row's role. So a page load, a reconnect after a
 * network blip or a long poll every 25 s reads the directory once a minute per token, not once per
 * stream.
 */
export const STREAM_IDENTITY_MEMORY_MS = 60_000;

/** When each identity handed out was read from the directory: what both memories (2 s for any
 * request, 60 s for a stream's opening) are measured from. */
const readAt = new WeakMap<Identity, number>();
/** Per verified token (tokens.ts keeps one object per token until its `exp`): the identity its
 * last request here was given. */
const tokenIdentities = new WeakMap<Verified, Identity>();

/** A person by the identity provider's id (SCIM's `externalId`). */
function externalLookup(orm: DrizzleD1Database) {
  return orm
    .select({ user: users, tenantName: tenants.name })
    .from(users)
    .innerJoin(tenants, eq(tenants.id, users.tenantId))
    .where(
      and(
        eq(users.tenantId, sql.placeholder("tenantId")),
        eq(users.externalId, sql.placeholder("externalId")),
      ),
    )
    .prepare();
}

interface Directory {
  orm: DrizzleD1Database;
  find: ReturnType<typeof userLookup>;
  findExternal: ReturnType<typeof externalLookup>;
  /** By tenant and email: identities read in the last `IDENTITY_MEMORY_MS`, oldest first, with the
   * identity provider's id of the person (a token carrying another one is looked up). */
  recent: Map<string, { identity: Identity; externalId: string | null }>;
  /** By tenant and email: when a change made through this isolate was last forgotten (a stream's
   * identity read before then is not used), kept for `STREAM_IDENTITY_MEMORY_MS`. */
  forgotten: Map<string, number>;
}
const lookups = new WeakMap<D1Database, Directory>();

function directoryOf(env: Env, tenantId: string): Directory {
  const db = directoryDb(env, tenantId);
  let entry = lookups.get(db);
  if (!entry) {
    const orm = drizzle(db);
    entry = {
      orm,
      find: userLookup(orm),
      findExternal: externalLookup(orm),
      recent: new Map(),
      forgotten: new Map(),
    };
    lookups.set(db, entry);
  }
  return entry;
}

const recentKey = (tenantId: string, email: string) => `${tenantId}\n${email.toLowerCase()}`;

function remember(dir: Directory, user: typeof users.$inferSelect, tenantName: string): Identity {
  const identity = toIdentity(user, tenantName);
  readAt.set(identity, Date.now());
  const key = recentKey(identity.tenantId, identity.email);
  dir.recent.delete(key);
  dir.recent.set(key, { identity, externalId: user.externalId });
  if (dir.recent.size > IDENTITIES_MAX) {
    const oldest = dir.recent.keys().next().value;
    if (oldest !== undefined) dir.recent.delete(oldest);
  }
  return identity;
}

/** A user changed through this isolate: their next request reads the directory again. */
export function forgetIdentity(env: Env, tenantId: string, email: string): void {
  const dir = directoryOf(env, tenantId);
  const key = recentKey(tenantId, email);
  dir.recent.delete(key);
  const now = Date.now();
  dir.forgotten.delete(key);
  dir.forgotten.set(key, now);
  // Oldest first: what a stream's memory can no longer reach goes.
  for (const [old, at] of dir.forgotten) {
    if (at > now - STREAM_IDENTITY_MEMORY_MS && dir.forgotten.size <= IDENTITIES_MAX) break;
    dir.forgotten.delete(old);
  }
}

/**
 * The identity a token was given here within `STREAM_IDENTITY_MEMORY_MS`, for a request that opens
 * a stream; undefined when there is none, it is older, a change to the person was made through this
 * isolate since, or the token's configured role would now promote them (provision applies that).
 */
function recalled(env: Env, verified: Verified, profile: Profile): Identity | undefined {
  const identity = tokenIdentities.get(verified);
  const at = identity && readAt.get(identity);
  if (!identity || at === undefined || Date.now() - at >= STREAM_IDENTITY_MEMORY_MS) return undefined;
  const forgotten = directoryOf(env, identity.tenantId).forgotten.get(
    recentKey(identity.tenantId, identity.email),
  );
  if (forgotten !== undefined && forgotten >= at) return undefined;
  if (promotes(profile.mappedRole, identity.role)) return undefined;
  return identity;
}

/** Requests that open a stream: a room's socket, SSE stream or long poll (routes/messages.ts), a
 * presence socket (routes/presence.ts). The middleware runs before routing, so a new stream route
 * is named here too; one that is not reads the directory as any request does. */
const STREAM_PATH = /^\/api\/(?:rooms\/[^/]+\/(?:ws|events|poll)|presence\/ws)$/;

/** Whether a configured role raises this one (promotion only: a mapping never demotes). */
function promotes(mapped: Role | null, role: Role): mapped is Role {
  return mapped !== null && mapped !== "bot" && role !== "bot" && RANK[mapped] > RANK[role];
}

/** Finds or creates the tenant and the user of a profile, in the tenant's directory; applies a
 * configured admin promotion. */
export async function provision(env: Env, profile: Profile): Promise<Identity> {
  const dir = directoryOf(env, profile.tenantId);
  const { orm, find: lookup } = dir;
  const now = Date.now();
  const email = profile.email.toLowerCase();
  const recent = dir.recent.get(recentKey(profile.tenantId, email));
  if (
    recent &&
    now - (readAt.get(recent.identity) ?? 0) < IDENTITY_MEMORY_MS &&
    (profile.externalId === undefined || profile.externalId === recent.externalId) &&
    !promotes(profile.mappedRole, recent.identity.role)
  )
    return recent.identity;
  const find = () => lookup.get({ tenantId: profile.tenantId, email });
  const found = (await byExternalId(env, dir, profile, email)) ?? (await find());
  if (found) {
    // Deactivated (decision 11): refused whatever token they bring, until reactivated.
    if (found.user.active === 0) throw new ApiError("forbidden", "this account is deactivated");
    const mapped = profile.mappedRole;
    if (!promotes(mapped, found.user.role)) return remember(dir, found.user, found.tenantName);
    await orm.update(users).set({ role: mapped }).where(eq(users.id, found.user.id));
    await audit(
      env,
      { tenantId: profile.tenantId, userId: found.user.id },
      "user.role_changed",
      found.user.id,
      {
        from: found.user.role,
        to: mapped,
        by: "access-mapping",
      },
    );
    await pushMember(env, profile.tenantId, {
      id: found.user.id,
      name: found.user.name,
      role: mapped,
    });
    return remember(dir, { ...found.user, role: mapped }, found.tenantName);
  }

  // Whoever creates the tenant row owns the tenant: the insert either creates it (and returns it)
  // or finds it there, atomically, so two first sign-ins cannot both become owner.
  const created = await orm
    .insert(tenants)
    .values({ id: profile.tenantId, name: profile.tenantName, createdAt: now })
    .onConflictDoNothing()
    .returning({ id: tenants.id });
  // A new tenant is placed on a history shard of its jurisdiction at once (worker/history).
  if (created.length > 0) await place(env, profile.tenantId, 0);
  const role: Role = profile.mappedRole ?? (created.length > 0 && profile.firstUserOwns ? "owner" : "member");
  await orm
    .insert(users)
    .values({
      id: newId("u"),
      tenantId: profile.tenantId,
      email,
      name: profile.name,
      role,
      createdAt: now,
      lastLoginAt: now,
    })
    .onConflictDoNothing();
  const row = await find();
  if (!row) throw new Error("user provisioning failed");
  if (row.user.createdAt === now) {
    await audit(env, { tenantId: profile.tenantId, userId: row.user.id }, "user.provisioned", row.user.id, {
      role: row.user.role,
    });
  }
  return remember(dir, row.user, row.tenantName);
}

/**
 * The person the identity provider's id names (SCIM's `externalId`), when the token carries one
 * and the directory has it. Their email follows the token's when the provider has changed it (and
 * no one else has that email); otherwise the row stands as it is.
 */
async function byExternalId(env: Env, dir: Directory, profile: Profile, email: string) {
  if (!profile.externalId) return undefined;
  const found = await dir.findExternal.get({ tenantId: profile.tenantId, externalId: profile.externalId });
  if (!found || found.user.email === email) return found;
  const taken = await dir.find.get({ tenantId: profile.tenantId, email });
  if (taken) return found;
  await dir.orm.update(users).set({ email }).where(eq(users.id, found.user.id));
  await audit(
    env,
    { tenantId: profile.tenantId, userId: found.user.id },
    "user.email_changed",
    found.user.id,
    {
      by: "access-external-id",
    },
  );
  return { ...found, user: { ...found.user, email } };
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

function displayName(given: unknown, fallback: string): string {
  const name = typeof given === "string" ? given.trim() : "";
  // Names travel in every event and socket attachment: keep them to a display length.
  return [...(name === "" ? fallback : name)].slice(0, MAX_NAME_CHARS).join("");
}

/** The profile a verified token describes, or 401 when it names nobody we can provision. */
export function profileOf({ claims, tenant }: Verified): Profile {
  if (tenant) {
    // Access: a person (email) or a service token (common_name, no email) acting as a bot.
    if (typeof claims.email === "string" && EMAIL.test(claims.email)) {
      const email = claims.email.toLowerCase();
      // Groups arrive as a top-level claim or, from an OIDC/SAML identity provider configured to
      // pass them, under Access's `custom` claims.
      const rawGroups = claims.groups ?? (claims.custom as { groups?: unknown } | undefined)?.groups;
      const groups = Array.isArray(rawGroups)
        ? rawGroups.filter((g): g is string => typeof g === "string")
        : [];
      const domain = email.slice(email.lastIndexOf("@") + 1);
      // An identity provider may pass its own id of the person (SCIM's `externalId`) as a claim,
      // top-level or among Access's `custom` claims.
      const custom = (claims.custom ?? {}) as Record<string, unknown>;
      const rawExternal = claims.externalId ?? custom.externalId ?? claims.external_id ?? custom.external_id;
      const externalId =
        typeof rawExternal === "string" && rawExternal.length > 0 && rawExternal.length <= 200
          ? rawExternal
          : undefined;
      const mappedRole: Role | null = tenant.owners.includes(email)
        ? "owner"
        : tenant.admins.includes(email) || groups.some((g) => tenant.adminGroups.includes(g))
          ? "admin"
          : // Only ever a role at arrival: a guest mapping never lowers an existing person.
            tenant.guestDomains.includes(domain)
            ? "guest"
            : null;
      return {
        tenantId: tenant.id,
        tenantName: tenant.name,
        email,
        name: displayName(claims.name, email.split("@")[0] ?? email),
        mappedRole,
        firstUserOwns: false,
        ...(externalId === undefined ? {} : { externalId }),
      };
    }
    if (typeof claims.common_name === "string" && /^[A-Za-z0-9._-]{1,128}$/.test(claims.common_name)) {
      return {
        tenantId: tenant.id,
        tenantName: tenant.name,
        email: `service:${claims.common_name}`,
        name: displayName(claims.common_name, "bot"),
        mappedRole: "bot",
        firstUserOwns: false,
      };
    }
    throw new ApiError("unauthorized", "token names neither a user nor a service");
  }
  const { tenant: tenantId, email } = claims;
  if (
    typeof tenantId !== "string" ||
    !TENANT_ID.test(tenantId) ||
    typeof email !== "string" ||
    !EMAIL.test(email)
  ) {
    throw new ApiError("unauthorized", "token lacks a valid tenant or email");
  }
  return {
    tenantId,
    tenantName: tenantId,
    email,
    name: displayName(claims.name, email),
    mappedRole: null,
    firstUserOwns: true,
  };
}

/** Whether a token's bot is the tenant's SCIM client (worker/routes/scim.ts). */
export function isScimClient(identity: Identity): boolean {
  return identity.role === "bot" && identity.email.startsWith("scim:");
}

export const requireIdentity = createMiddleware<AppEnv>(async (c, next) => {
  // Bots: `Authorization: Bearer <api token>`.
  const bearer = /^Bearer (\S+)$/.exec(c.req.header("authorization") ?? "")?.[1];
  if (bearer) {
    const bot = await identityOfApiToken(c.env, bearer);
    if (!bot) throw new ApiError("unauthorized", "invalid or revoked API token");
    // A SCIM token provisions people; it is nobody in the rooms.
    if (isScimClient(bot)) throw new ApiError("unauthorized", "a SCIM token works at /scim/v2 only");
    c.set("identity", bot);
    await next();
    return;
  }
  const header = c.req.header(ACCESS_HEADER);
  const token = header ?? getCookie(c, ACCESS_COOKIE);
  if (!token) throw new ApiError("unauthorized", "sign in first: no Access token on the request");
  let verified: Verified;
  try {
    verified = await verifyToken(token, authConfigOf(c.env));
  } catch (err) {
    if (err instanceof TokenError) throw new ApiError("unauthorized", "invalid or expired token");
    throw err;
  }
  const profile = profileOf(verified);
  const stream = c.req.method === "GET" && STREAM_PATH.test(c.req.path);
  const identity =
    (stream ? recalled(c.env, verified, profile) : undefined) ?? (await provision(c.env, profile));
  tokenIdentities.set(verified, identity);
  c.set("identity", identity);
  // `exp` is required, so every verified token has one.
  c.set("tokenExpiresAt", (verified.claims.exp ?? 0) * 1000);
  await next();
});

/**
 * When a stream this request opens must end (ms; decision 11): the `exp` of the token that opened
 * it, so that a socket, SSE stream or long poll lives no longer than its token. Undefined for an
 * API token, which lasts until it is revoked (and revoking it ends its bot's streams). A token past
 * its `exp`, which verification still accepts within the clock skew it allows, opens nothing: 401,
 * so the client gets a fresh token rather than a stream that would end at once.
 */
export function streamExpiry(c: Context<AppEnv>): number | undefined {
  const at = c.get("tokenExpiresAt");
  if (at !== undefined && at <= Date.now()) {
    throw new ApiError("unauthorized", "the token has expired: sign in again");
  }
  return at;
}
