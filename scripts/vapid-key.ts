/**
 * @module `npm run vapid-key`: makes a new VAPID key (P-256, RFC 8292) for a deployment. Prints the
 * private JWK, to be stored as the Worker's `VAPID_PRIVATE_JWK` secret and nowhere else
 * (`npm run -s vapid-key | npx wrangler secret put VAPID_PRIVATE_JWK --env production`), and, on
 * stderr, the public key browsers subscribe with (`GET /api/push/key` serves the same). Keep the
 * key for the deployment's life: browsers subscribed under it stop receiving when it changes, until
 * their service worker subscribes again.
 */
import { exportJWK, generateKeyPair } from "jose";

const { privateKey } = await generateKeyPair("ES256", { extractable: true });
const jwk = await exportJWK(privateKey);
console.log(JSON.stringify(jwk));
const point = Buffer.concat([
  Buffer.from([4]),
  Buffer.from(jwk.x as string, "base64url"),
  Buffer.from(jwk.y as string, "base64url"),
]);
console.error(`public key (applicationServerKey): ${point.toString("base64url")}`);
