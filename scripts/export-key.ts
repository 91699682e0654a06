/**
 * @module `npm run export-key -- [kid]`: makes a new export signing key (Ed25519) for a deployment.
 * Prints the private JWK, to be stored as the Worker's `EXPORT_SIGNING_JWK` secret and nowhere else
 * (`npm run -s export-key -- <kid> | npx wrangler secret put EXPORT_SIGNING_JWK --env production`),
 * and, on stderr, its public JWK and fingerprint, which auditors compare with what
 * `npm run verify-export` prints and operators keep for `EXPORT_RETIRED_KEYS` after a rotation.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from "jose";

const kid = process.argv[2] ?? `export-${new Date().toISOString().slice(0, 10)}`;
if (!/^[A-Za-z0-9._-]{1,64}$/.test(kid)) {
  console.error("usage: npm run export-key -- [kid]   (kid: 1-64 characters of [A-Za-z0-9._-])");
  process.exit(2);
}
const { privateKey } = await generateKeyPair("Ed25519", { extractable: true });
const jwk = await exportJWK(privateKey);
const publicJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x, kid, alg: "Ed25519", use: "sig" };
console.log(JSON.stringify({ ...jwk, kid }));
console.error(`public key (keep it; list it in EXPORT_RETIRED_KEYS once this key is rotated out):`);
console.error(JSON.stringify(publicJwk));
console.error(`fingerprint (RFC 7638 SHA-256): ${await calculateJwkThumbprint(publicJwk, "sha256")}`);
