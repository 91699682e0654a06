/**
 * @module The deployment's export signing key: read and checked at start-up (a missing or malformed
 * key fails the Worker before it serves anything, like the rest of its configuration), used to sign
 * each room head an export or `GET /api/admin/rooms/:id/head` states, and published with any retired
 * keys as a JWKS at `/.well-known/parley-export-keys` so that anyone can check those signatures.
 *
 * `EXPORT_SIGNING_JWK` (a secret): the private Ed25519 JWK (`{"kty":"OKP","crv":"Ed25519","x","d",
 * "kid"}`), as JSON or base64 of it. `EXPORT_RETIRED_KEYS` (a plain var, optional): a JSON array (or
 * JWKS) of the public JWKs of keys used before a rotation, so heads they signed stay verifiable.
 * Ed25519 because workerd and Node 22 both implement it in Web Crypto, its signatures are
 * deterministic, and its keys are 32 bytes.
 */
import { createPrivateKey, createPublicKey } from "node:crypto";
import { CompactSign, importJWK, type JWK } from "jose";
import { perEnv } from "../../config/per-env.ts";
import { HEAD_ALG, headPayload, type RoomHead, type SignedHead } from "../../protocol/chain.ts";

export interface ExportKeyVars {
  EXPORT_SIGNING_JWK?: string;
  EXPORT_RETIRED_KEYS?: string;
}

/** A public key as the JWKS lists it. */
export interface PublicExportKey {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
  alg: typeof HEAD_ALG;
  use: "sig";
}

export interface ExportKeys {
  kid: string;
  /** The private JWK, for signing (imported lazily: Web Crypto imports are asynchronous). */
  privateJwk: JWK;
  current: PublicExportKey;
  /** The current key first, then the retired ones: the JWKS. */
  published: PublicExportKey[];
}

const KID = /^[A-Za-z0-9._-]{1,64}$/;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

class ExportKeyError extends Error {}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function publicKey(x: string, kid: string): PublicExportKey {
  return { kty: "OKP", crv: "Ed25519", x, kid, alg: HEAD_ALG, use: "sig" };
}

function parseSigningKey(raw: string): { privateJwk: JWK; current: PublicExportKey } {
  let jwk: unknown;
  try {
    jwk = JSON.parse(raw.trimStart().startsWith("{") ? raw : atob(raw.trim()));
  } catch {
    throw new ExportKeyError("EXPORT_SIGNING_JWK must be a JWK as JSON or base64 of it");
  }
  if (!isRecord(jwk) || jwk.kty !== "OKP" || jwk.crv !== "Ed25519")
    throw new ExportKeyError('EXPORT_SIGNING_JWK must be an Ed25519 key ({"kty":"OKP","crv":"Ed25519",…})');
  if (typeof jwk.d !== "string" || !B64URL_32.test(jwk.d))
    throw new ExportKeyError("EXPORT_SIGNING_JWK must be the private key (its d)");
  if (typeof jwk.kid !== "string" || !KID.test(jwk.kid))
    throw new ExportKeyError(`EXPORT_SIGNING_JWK needs a kid matching ${KID}`);
  // The public half is derived from d, so a key whose x does not belong to it is caught here rather
  // than by every verifier later.
  let x: string;
  try {
    const derived = createPublicKey(
      createPrivateKey({
        key: { kty: "OKP", crv: "Ed25519", d: jwk.d, x: typeof jwk.x === "string" ? jwk.x : "" },
        format: "jwk",
      }),
    ).export({ format: "jwk" });
    x = String(derived.x);
  } catch {
    throw new ExportKeyError("EXPORT_SIGNING_JWK is not a valid Ed25519 private key");
  }
  if (jwk.x !== undefined && jwk.x !== x)
    throw new ExportKeyError("EXPORT_SIGNING_JWK: x is not the public key of d");
  return {
    privateJwk: { kty: "OKP", crv: "Ed25519", d: jwk.d, x, kid: jwk.kid },
    current: publicKey(x, jwk.kid),
  };
}

function parseRetired(raw: string): PublicExportKey[] {
  if (raw.trim() === "") return [];
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw new ExportKeyError("EXPORT_RETIRED_KEYS must be JSON");
  }
  if (isRecord(list) && Array.isArray(list.keys)) list = list.keys;
  if (!Array.isArray(list))
    throw new ExportKeyError("EXPORT_RETIRED_KEYS must be an array of public JWKs or a JWKS");
  return list.map((k: unknown, i) => {
    const where = `EXPORT_RETIRED_KEYS[${i}]`;
    if (
      !isRecord(k) ||
      k.kty !== "OKP" ||
      k.crv !== "Ed25519" ||
      typeof k.x !== "string" ||
      !B64URL_32.test(k.x)
    )
      throw new ExportKeyError(`${where} must be a public Ed25519 JWK`);
    // A private key in a plain variable would be published: refuse it outright.
    if (k.d !== undefined) throw new ExportKeyError(`${where} holds a private key: list only public keys`);
    if (typeof k.kid !== "string" || !KID.test(k.kid))
      throw new ExportKeyError(`${where} needs a kid matching ${KID}`);
    return publicKey(k.x, k.kid);
  });
}

/** Reads and checks the export keys; throws a message that names the variable at fault. */
export function readExportKeys(vars: ExportKeyVars): ExportKeys {
  const raw = vars.EXPORT_SIGNING_JWK ?? "";
  if (raw.trim() === "") {
    throw new ExportKeyError(
      "EXPORT_SIGNING_JWK is not set: exports and heads must be signed (npm run export-key makes one; docs/deploy.md)",
    );
  }
  const { privateJwk, current } = parseSigningKey(raw);
  const retired = parseRetired(vars.EXPORT_RETIRED_KEYS ?? "");
  const kids = new Set([current.kid]);
  for (const k of retired) {
    if (kids.has(k.kid))
      throw new ExportKeyError(`EXPORT_RETIRED_KEYS repeats the kid ${JSON.stringify(k.kid)}`);
    kids.add(k.kid);
  }
  return { kid: current.kid, privateJwk, current, published: [current, ...retired] };
}

/** `readExportKeys` memoised per env object. */
export const exportKeysOf = perEnv((env: ExportKeyVars & object): ExportKeys => readExportKeys(env));

const imported = new WeakMap<ExportKeys, Promise<CryptoKey>>();

function signingKey(keys: ExportKeys): Promise<CryptoKey> {
  let key = imported.get(keys);
  if (!key) {
    key = importJWK(keys.privateJwk, HEAD_ALG) as Promise<CryptoKey>;
    imported.set(keys, key);
  }
  return key;
}

/**
 * Signs a room's head: a compact JWS (Ed25519) whose payload is the head's canonical JSON and whose
 * protected header names the key (`kid`) and carries its public half (`jwk`), so a verifier without
 * the JWKS at hand can still report which key signed and its fingerprint.
 */
async function signHead(env: ExportKeyVars & object, head: Omit<SignedHead, "format">): Promise<string> {
  const keys = exportKeysOf(env);
  const { kty, crv, x } = keys.current;
  return new CompactSign(new TextEncoder().encode(headPayload(head)))
    .setProtectedHeader({ alg: HEAD_ALG, kid: keys.kid, jwk: { kty, crv, x } })
    .sign(await signingKey(keys));
}

/** A room's head as the deployment states it now: bound to tenant, room and time, and signed. */
export async function signRoomHead(
  env: ExportKeyVars & object,
  tenant: string,
  room: string,
  head: RoomHead,
): Promise<{ head: Omit<SignedHead, "format">; jws: string }> {
  const signed = { ...head, tenant, room, at: Date.now() };
  return { head: signed, jws: await signHead(env, signed) };
}

/** The published JWKS: the current key and the retired ones, each with its kid. */
export function exportJwks(env: ExportKeyVars & object): { keys: PublicExportKey[] } {
  return { keys: exportKeysOf(env).published };
}
