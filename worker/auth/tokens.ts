/**
 * @module Token verification: the one function every request's identity goes through. Dev tokens
 * are RS256 JWTs minted with a local key pair and checked exactly as Cloudflare Access tokens are
 * (issue 3 adds the Access key set behind the same `verifyToken`).
 */
import { createLocalJWKSet, importJWK, type JWK, type JWTPayload, jwtVerify, SignJWT } from "jose";

/** Allowed clock skew between the token's issuer and this edge, in seconds. */
const CLOCK_TOLERANCE_SECONDS = 60;
export const DEV_ISSUER = "parley-dev";
export const DEV_AUDIENCE = "parley-dev";

export interface TokenClaims extends JWTPayload {
  email?: string;
  name?: string;
  /** Dev tokens name their tenant; Access tokens map to a tenant by their issuer and audience. */
  tenant?: string;
  common_name?: string;
}

interface DevKeys {
  privateKey: CryptoKey;
  kid: string;
  keySet: ReturnType<typeof createLocalJWKSet>;
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

export interface AuthConfig {
  AUTH_MODE: string;
  DEV_JWT_PRIVATE_JWK: string;
}

export class TokenError extends Error {}

/**
 * Verifies a token and returns its claims, or throws `TokenError`. RS256 only; `exp` and `iat` are
 * required, `exp`/`nbf` checked with bounded skew; issuer and audience must match.
 */
export async function verifyToken(token: string, config: AuthConfig): Promise<TokenClaims> {
  if (config.AUTH_MODE !== "dev") throw new TokenError(`AUTH_MODE ${config.AUTH_MODE} is not supported yet`);
  if (!config.DEV_JWT_PRIVATE_JWK) throw new TokenError("dev signing key is not configured");
  const { keySet } = await devKeys(config.DEV_JWT_PRIVATE_JWK);
  try {
    const { payload } = await jwtVerify<TokenClaims>(token, keySet, {
      algorithms: ["RS256"],
      issuer: DEV_ISSUER,
      audience: DEV_AUDIENCE,
      requiredClaims: ["exp", "iat", "sub"],
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
    });
    return payload;
  } catch (err) {
    throw new TokenError(err instanceof Error ? err.message : "invalid token");
  }
}

/** Mints a dev token shaped like an Access token (email, sub, iss, aud, iat, exp) plus its tenant. */
export async function mintDevToken(
  claims: { email: string; name: string; tenant: string },
  config: AuthConfig,
  ttlSeconds: number,
): Promise<string> {
  const { privateKey, kid } = await devKeys(config.DEV_JWT_PRIVATE_JWK);
  return new SignJWT({ email: claims.email, name: claims.name, tenant: claims.tenant })
    .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
    .setSubject(`dev:${claims.tenant}:${claims.email}`)
    .setIssuer(DEV_ISSUER)
    .setAudience(DEV_AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(privateKey);
}
