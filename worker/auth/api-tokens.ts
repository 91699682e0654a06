/**
 * @module API tokens for bots: `pk_<id>_<secret>`, or `pk_<jurisdiction>_<id>_<secret>` for a tenant
 * pinned to a jurisdiction (`pk_eu_k_…`), created by a tenant admin and shown once. The prefix names
 * the directory database that holds the token (platform/residency.ts), so a bearer request asks one
 * database, not every one. Only a SHA-256 hash is stored; a presented token is found by its id and
 * compared in constant time. Each token acts as its own bot user, optionally limited to some rooms.
 */
import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { JURISDICTIONS } from "../../platform/auth-config.ts";
import { base64url, sha256 } from "../../platform/bytes.ts";
import type { Identity } from "../../platform/identity.ts";
import { directories, type Jurisdiction, jurisdictionOf } from "../../platform/residency.ts";
import { apiTokens, tenants, users } from "../db/schema.ts";

/** `pk_`, the jurisdiction if any, the token id, the secret (32 random bytes, base64url). No
 * jurisdiction is `k` (a token id's start), so a token reads one way only. */
const TOKEN = new RegExp(`^pk_(?:(${[...JURISDICTIONS].join("|")})_)?(k_[0-9a-z]{20})_([A-Za-z0-9_-]{43})$`);

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** A new token for the token id of a tenant in `jurisdiction` (undefined: the default one), and the
 * hash to store. */
export async function issueToken(
  id: string,
  jurisdiction: Jurisdiction | undefined,
): Promise<{ token: string; hash: string }> {
  const where = jurisdiction ? `${jurisdiction}_` : "";
  const token = `pk_${where}${id}_${base64url(crypto.getRandomValues(new Uint8Array(32)))}`;
  return { token, hash: hex(await sha256(token)) };
}

/** The unrevoked token row with this id in one directory, with its bot user and tenant name. */
function findToken(db: D1Database, id: string) {
  return drizzle(db)
    .select({ token: apiTokens, user: users, tenantName: tenants.name })
    .from(apiTokens)
    .innerJoin(users, eq(users.id, apiTokens.userId))
    .innerJoin(tenants, eq(tenants.id, apiTokens.tenantId))
    .where(and(eq(apiTokens.id, id), isNull(apiTokens.revokedAt)))
    .get();
}

/** The bot identity of a valid, unrevoked token, or null. */
export async function identityOfApiToken(env: Env, token: string): Promise<Identity | null> {
  const match = TOKEN.exec(token);
  if (!match) return null;
  const id = match[2] as string;
  const named = match[1] as Jurisdiction | undefined;
  // A token names its directory (a name this deployment has no directory for matches none). One
  // without a name is a default-jurisdiction token, or one issued before tokens named theirs: looked
  // for in the default directory, then in each other one. A row counts only in the directory of its
  // tenant's jurisdiction: a stale copy left in another one (say, after the tenant's directory
  // moved) must not outlive a revocation in the real one.
  let row: Awaited<ReturnType<typeof findToken>>;
  for (const directory of directories(env)) {
    if (named !== undefined && directory.jurisdiction !== named) continue;
    const found = await findToken(directory.db, id);
    if (found && jurisdictionOf(env, found.token.tenantId) === directory.jurisdiction) {
      row = found;
      break;
    }
  }
  if (!row) return null;
  const presented = await sha256(token);
  const stored = new Uint8Array((row.token.hash.match(/../g) ?? []).map((h) => Number.parseInt(h, 16)));
  if (stored.byteLength !== presented.byteLength || !crypto.subtle.timingSafeEqual(stored, presented))
    return null;
  const identity: Identity = {
    userId: row.user.id,
    email: row.user.email,
    name: row.user.name,
    role: row.user.role,
    tenantId: row.token.tenantId,
    tenantName: row.tenantName,
  };
  if (row.token.rooms) identity.roomScope = JSON.parse(row.token.rooms) as string[];
  return identity;
}
