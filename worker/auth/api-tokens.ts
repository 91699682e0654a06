/**
 * @module API tokens for bots: `pk_<id>_<secret>`, created by a tenant admin and shown once. Only a
 * SHA-256 hash is stored; a presented token is found by its id and compared in constant time.
 * Each token acts as its own bot user, optionally limited to some rooms.
 */
import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { apiTokens, tenants, users } from "../db/schema.ts";
import type { Identity } from "./identity.ts";

const TOKEN = /^pk_(k_[0-9a-z]{20})_([A-Za-z0-9_-]{43})$/;

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** A new token for the token id, and the hash to store. */
export async function issueToken(id: string): Promise<{ token: string; hash: string }> {
  const token = `pk_${id}_${base64url(crypto.getRandomValues(new Uint8Array(32)))}`;
  return { token, hash: hex(await sha256(token)) };
}

/** The bot identity of a valid, unrevoked token, or null. */
export async function identityOfApiToken(db: D1Database, token: string): Promise<Identity | null> {
  const match = TOKEN.exec(token);
  if (!match) return null;
  const row = await drizzle(db)
    .select({ token: apiTokens, user: users, tenantName: tenants.name })
    .from(apiTokens)
    .innerJoin(users, eq(users.id, apiTokens.userId))
    .innerJoin(tenants, eq(tenants.id, apiTokens.tenantId))
    .where(and(eq(apiTokens.id, match[1] as string), isNull(apiTokens.revokedAt)))
    .get();
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
