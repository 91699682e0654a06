/**
 * @module Cloudflare Access as the tests' worker sees it: the teams of vitest.config.ts's "access"
 * project, their published signing keys (served by a spy on fetch, since the worker runs in the
 * tests' isolate), and tokens minted as Access would mint them.
 */
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { beforeAll, vi } from "vitest";

// This project runs with AUTH_MODE=access and the applications of vitest.config.ts. The teams'
// key endpoints are served by a spy on fetch, so the production path is exercised: jose's remote
// key set, fetched from the configured URL.

export const ACME = { iss: "https://acme.cloudflareaccess.com", aud: "acmeaud0123456789abcdef" };
export const GLOBEX = { iss: "https://globex.cloudflareaccess.com", aud: "globexaud0123456789abcd" };
export const INITECH = { iss: "https://initech.cloudflareaccess.com", aud: "initechaud0123456789abc" };

export type Key = { kid: string; privateKey: CryptoKey; publicJwk: JWK };
export async function newKey(kid: string): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  return { kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" } };
}

/** What each team's key endpoint publishes (tests rotate keys by changing it). */
export const published = new Map<string, Key[]>();
/** The origins of every key fetch, in order. */
export const certFetches: string[] = [];
/** The teams' current keys, set before the file's tests run. */
export const keys = {} as { acme: Key; globex: Key };

/** Publishes acme's and globex's keys (initech's endpoint stays down) for the calling test file. */
export function publishAccessKeys(): void {
  beforeAll(async () => {
    keys.acme = await newKey("acme-1");
    keys.globex = await newKey("globex-1");
    published.set(ACME.iss, [keys.acme]);
    published.set(GLOBEX.iss, [keys.globex]);
    const realFetch = globalThis.fetch;
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      if (url.pathname === "/cdn-cgi/access/certs") {
        certFetches.push(url.origin);
        const teamKeys = published.get(url.origin);
        if (!teamKeys) return new Response("unavailable", { status: 503 });
        return Response.json({ keys: teamKeys.map((k) => k.publicJwk) });
      }
      return realFetch(input, init);
    });
  });
}

export interface MintOptions {
  key?: Key;
  team?: { iss: string; aud: string };
  header?: Record<string, unknown>;
  exp?: number | null;
  nbf?: number;
}

export const now = () => Math.floor(Date.now() / 1000);

/** A token as Access mints it (acme's key and team unless told otherwise). */
export function mint(claims: Record<string, unknown>, o: MintOptions = {}): Promise<string> {
  const key = o.key ?? keys.acme;
  const team = o.team ?? ACME;
  const jwt = new SignJWT({ ...claims, aud: [team.aud] })
    .setProtectedHeader({ alg: "RS256", kid: key.kid, typ: "JWT", ...o.header })
    .setIssuer(team.iss)
    .setIssuedAt()
    .setSubject(String(claims.email ?? claims.common_name ?? "x"));
  if (o.exp !== null) jwt.setExpirationTime(o.exp ?? now() + 3600);
  if (o.nbf !== undefined) jwt.setNotBefore(o.nbf);
  return jwt.sign(key.privateKey);
}
