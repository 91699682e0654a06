/**
 * @module Token verification: the one function every request's identity goes through. Production
 * tokens are Cloudflare Access JWTs, checked against the team's published keys; dev tokens are
 * minted with a local key pair and checked by the same code against a local key set.
 *
 * Both: RS256 only; `exp` required; `exp`/`nbf` with at most 60 s of skew; issuer and audience
 * must match configuration; headers that point at other keys (jwk, jku, x5u, x5c) are refused and
 * a `kid` must be a plain identifier before any key is looked up. The key set's URL comes from
 * configuration, never from the token.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  importJWK,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from "jose";
import type { AccessTenant, AuthConfig } from "../../platform/auth-config.ts";
import { base64url, sha256 } from "../../platform/bytes.ts";

/** Allowed clock skew between the token's issuer and this edge, in seconds. */
const CLOCK_TOLERANCE_SECONDS = 60;
/** An unknown `kid` refetches the team's keys at most this often (key rotation without a restart,
 * without letting forged kids hammer the key endpoint). */
const JWKS_REFETCH_COOLDOWN_MS = 30_000;
/** Keys are refreshed at least this often even when every kid is known. */
const JWKS_MAX_AGE_MS = 10 * 60_000;
const JWKS_TIMEOUT_MS = 5_000;

export const DEV_ISSUER = "parley-dev";
export const DEV_AUDIENCE = "parley-dev";

const REFUSED_HEADERS = ["jwk", "jku", "x5u", "x5c"] as const;
const KID = /^[A-Za-z0-9._-]{1,128}$/;

export interface TokenClaims extends JWTPayload {
  email?: string;
  name?: string;
  /** Dev tokens name their tenant; Access tokens map to a tenant by issuer and audience. */
  tenant?: string;
  /** Access service tokens (bots) carry this instead of an email. */
  common_name?: string;
  groups?: unknown;
  /** Claims an identity provider passes through Access (e.g. groups). */
  custom?: unknown;
}

export interface Verified {
  claims: TokenClaims;
  /** The Access tenant the token belongs to (access mode). */
  tenant?: AccessTenant;
}

export class TokenError extends Error {}

// ---- key sets, created once per isolate ----------------------------------------------------

const remoteKeySets = new Map<string, JWTVerifyGetKey>();

function accessKeySet(teamDomain: string): JWTVerifyGetKey {
  let keySet = remoteKeySets.get(teamDomain);
  if (!keySet) {
    keySet = createRemoteJWKSet(new URL(`${teamDomain}/cdn-cgi/access/certs`), {
      cooldownDuration: JWKS_REFETCH_COOLDOWN_MS,
      cacheMaxAge: JWKS_MAX_AGE_MS,
      timeoutDuration: JWKS_TIMEOUT_MS,
    });
    remoteKeySets.set(teamDomain, keySet);
  }
  return keySet;
}

interface DevKeys {
  privateKey: CryptoKey;
  kid: string;
  keySet: JWTVerifyGetKey;
}

const devKeysBySecret = new Map<string, Promise<DevKeys>>();

/** Parses the dev private JWK (raw JSON or base64 of it, as `npm start` writes it) once per isolate. */
function devKeys(secret: string): Promise<DevKeys> {
  let keys = devKeysBySecret.get(secret);
  if (!keys) {
    keys = (async () => {
      const json = secret.trimStart().startsWith("{") ? secret : atob(secret.trim());
      const jwk = JSON.parse(json) as JWK;
      const kid = jwk.kid ?? "dev";
      const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = jwk;
      const privateKey = (await importJWK({ ...jwk, alg: "RS256" }, "RS256")) as CryptoKey;
      const keySet = createLocalJWKSet({ keys: [{ ...publicJwk, kid, alg: "RS256", use: "sig" }] });
      return { privateKey, kid, keySet };
    })();
    devKeysBySecret.set(secret, keys);
    keys.catch(() => devKeysBySecret.delete(secret));
  }
  return keys;
}

// ---- verification ----------------------------------------------------------------------------

function checkHeader(token: string): void {
  let header: Record<string, unknown>;
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>;
  } catch {
    throw new TokenError("malformed token");
  }
  if (header.alg !== "RS256") throw new TokenError("only RS256 tokens are accepted");
  for (const name of REFUSED_HEADERS)
    if (name in header) throw new TokenError(`token header ${name} is not accepted`);
  if (header.kid !== undefined && (typeof header.kid !== "string" || !KID.test(header.kid))) {
    throw new TokenError("malformed kid");
  }
}

function audiences(aud: unknown): string[] {
  if (typeof aud === "string") return [aud];
  return Array.isArray(aud) ? aud.filter((a): a is string => typeof a === "string") : [];
}

async function verifyWith(token: string, keySet: JWTVerifyGetKey, issuer: string, audience: string) {
  try {
    const { payload } = await jwtVerify<TokenClaims>(token, keySet, {
      algorithms: ["RS256"],
      issuer,
      audience,
      requiredClaims: ["exp"],
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
    });
    return payload;
  } catch (err) {
    // Every failure, the key set being unreachable included, refuses the token: fail closed.
    throw new TokenError(err instanceof Error ? err.message : "invalid token");
  }
}

// ---- tokens already verified -----------------------------------------------------------------

/** Tokens this isolate has verified, per configuration, by the SHA-256 of the whole token: a page
 * load sends the same token on every request and socket, and a signature once checked stays good
 * until the token's `exp`. An entry goes at `exp` (later requests are verified again, with the
 * skew allowed), and the oldest go first beyond `VERIFIED_TOKENS_MAX` (about 2 MB). */
const verifiedTokens = new WeakMap<AuthConfig, Map<string, { verified: Verified; until: number }>>();
const VERIFIED_TOKENS_MAX = 5_000;

/** Verifies a token and returns its claims (and Access tenant), or throws `TokenError`. */
export async function verifyToken(token: string, config: AuthConfig): Promise<Verified> {
  let known = verifiedTokens.get(config);
  if (!known) {
    known = new Map();
    verifiedTokens.set(config, known);
  }
  const key = base64url(await sha256(token));
  const hit = known.get(key);
  if (hit && hit.until > Date.now()) return hit.verified;
  if (hit) known.delete(key);
  const verified = await verifyUncached(token, config);
  // `exp` is required, so every verified token has one.
  known.set(key, { verified, until: (verified.claims.exp ?? 0) * 1000 });
  if (known.size > VERIFIED_TOKENS_MAX) {
    const oldest = known.keys().next().value;
    if (oldest !== undefined) known.delete(oldest);
  }
  return verified;
}

async function verifyUncached(token: string, config: AuthConfig): Promise<Verified> {
  checkHeader(token);
  if (config.mode === "dev") {
    const { keySet } = await devKeys(config.devKey);
    return { claims: await verifyWith(token, keySet, DEV_ISSUER, DEV_AUDIENCE) };
  }
  // The unverified issuer and audience only choose among configured applications; the chosen
  // one's keys, issuer and AUD are then required of the token.
  let unverified: JWTPayload;
  try {
    unverified = decodeJwt(token);
  } catch {
    throw new TokenError("malformed token");
  }
  const auds = audiences(unverified.aud);
  const tenant = config.tenants.find((t) => t.teamDomain === unverified.iss && auds.includes(t.aud));
  if (!tenant) throw new TokenError("token is not for any configured Access application");
  const claims = await verifyWith(token, accessKeySet(tenant.teamDomain), tenant.teamDomain, tenant.aud);
  return { claims, tenant };
}

/** Mints a dev token shaped like an Access token (email, sub, iss, aud, iat, exp) plus its tenant. */
export async function mintDevToken(
  claims: { email: string; name: string; tenant: string },
  devKey: string,
  ttlSeconds: number,
): Promise<string> {
  const { privateKey, kid } = await devKeys(devKey);
  return new SignJWT({ email: claims.email, name: claims.name, tenant: claims.tenant })
    .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
    .setSubject(`dev:${claims.tenant}:${claims.email}`)
    .setIssuer(DEV_ISSUER)
    .setAudience(DEV_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(privateKey);
}
