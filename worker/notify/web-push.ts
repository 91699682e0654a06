/**
 * @module Web Push from the Worker (docs/architecture.md, decision 10): a notification encrypted to
 * the browser (RFC 8291, aes128gcm) and signed for its push service (RFC 8292, VAPID) by
 * `@block65/webcrypto-web-push` (Web Crypto only), sent with `fetch`, and the push service's answer
 * sorted into what the caller does next: nothing, drop the subscription, retry, or give up.
 */
import { createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { buildPushPayload } from "@block65/webcrypto-web-push";
import { perEnv } from "../../config/per-env.ts";
import { base64url, fromBase64url } from "../../platform/bytes.ts";
import type { PushNotice } from "../../protocol/notify.ts";

/** The application server's keys: base64url of the raw P-256 public key (65 bytes) and of the
 * private scalar (the JWK's `d`), and a contact (`mailto:` or https URL) push services may use. */
export interface Vapid {
  subject: string;
  publicKey: string;
  privateKey: string;
}

export class VapidKeyError extends Error {}

const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;
const SUBJECT = /^(mailto:[^\s@]+@[^\s@]+|https:\/\/\S+)$/;

/**
 * The application server's keys from the private P-256 JWK a deployment keeps as a secret (JSON,
 * or base64 of it, as `npm start` writes it) and its contact. Refuses anything else, and a key
 * whose public half (`x`, `y`) is not that of its `d`: a push service would refuse every
 * notification signed with it, and this says why at once. Synchronous (node:crypto), so the Worker
 * checks it at start-up like the rest of its configuration.
 */
export function vapidFromJwk(raw: string, subject: string): Vapid {
  let jwk: unknown;
  try {
    jwk = JSON.parse(raw.trimStart().startsWith("{") ? raw : atob(raw.trim()));
  } catch {
    throw new VapidKeyError("the VAPID key must be a JWK as JSON or base64 of it");
  }
  const field = (k: string) =>
    typeof jwk === "object" && jwk !== null ? (jwk as Record<string, unknown>)[k] : undefined;
  if (field("kty") !== "EC" || field("crv") !== "P-256")
    throw new VapidKeyError('the VAPID key must be a P-256 key ({"kty":"EC","crv":"P-256",…})');
  const [x, y, d] = [field("x"), field("y"), field("d")];
  if (typeof d !== "string" || !B64URL_32.test(d))
    throw new VapidKeyError("the VAPID key must be the private key (its d)");
  if (typeof x !== "string" || typeof y !== "string" || !B64URL_32.test(x) || !B64URL_32.test(y))
    throw new VapidKeyError("the VAPID key needs its public half (x and y)");
  if (!SUBJECT.test(subject))
    throw new VapidKeyError("the VAPID subject must be a mailto: address or an https URL");
  // d signs, x and y verify: the same pair. (A key made from a JWK keeps the x and y it was given,
  // so comparing them with its exported public half would prove nothing.)
  const probe = new TextEncoder().encode("parley-vapid-probe");
  let pair: boolean;
  try {
    const signing = createPrivateKey({ key: { kty: "EC", crv: "P-256", x, y, d }, format: "jwk" });
    const verifying = createPublicKey({ key: { kty: "EC", crv: "P-256", x, y }, format: "jwk" });
    pair = verify("sha256", probe, verifying, sign("sha256", probe, signing));
  } catch {
    throw new VapidKeyError("the VAPID key is not a valid P-256 key");
  }
  if (!pair) throw new VapidKeyError("the VAPID key's x and y are not the public key of its d");
  const point = new Uint8Array(65);
  point[0] = 4;
  point.set(fromBase64url(x), 1);
  point.set(fromBase64url(y), 33);
  return { subject, publicKey: base64url(point), privateKey: d };
}

/** A browser's subscription as `PushSubscription.toJSON()` gives it. */
export interface PushTarget {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** The largest plaintext one record of the library's fixed 4096-byte body holds. */
export const PUSH_MAX_PAYLOAD_BYTES = 3993;
/** How long a push service keeps a notification for a device that is offline. Six hours: a phone
 * off for a night should not wake to a pile of stale alerts about messages the app then shows. */
export const PUSH_TTL_SECONDS = 6 * 3600;
/** RFC 8030 `Topic`: at most 32 characters of the URL-safe base64 alphabet. */
const TOPIC = /^[A-Za-z0-9_-]{1,32}$/;

export type PushOutcome =
  | { kind: "delivered" }
  /** The subscription is no more (404, 410): delete it. */
  | { kind: "gone"; status: number }
  /** Try again later (429, 5xx, or no answer); `retryAfterSeconds` when the service said. */
  | { kind: "retry"; status: number | null; retryAfterSeconds: number | null }
  /** Refused as sent (400, 401, 403, 413, …): retrying the same request would not help. */
  | { kind: "refused"; status: number };

/** The notice as its JSON payload, the preview shortened (by whole characters, with an ellipsis)
 * until the payload fits one record; the other fields are short (ids, a name of at most 80
 * characters), so without a preview it always fits. */
export function pushPayload(notice: PushNotice): string {
  const bytes = (s: string) => new TextEncoder().encode(s).length;
  const json = JSON.stringify(notice);
  if (bytes(json) <= PUSH_MAX_PAYLOAD_BYTES) return json;
  const chars = [...(notice.preview ?? "")];
  for (let keep = Math.floor(chars.length * 0.9); ; keep = Math.floor(keep * 0.9)) {
    const shorter = JSON.stringify({
      ...notice,
      preview: keep > 0 ? `${chars.slice(0, keep).join("")}…` : null,
    });
    if (keep === 0 || bytes(shorter) <= PUSH_MAX_PAYLOAD_BYTES) return shorter;
  }
}

/**
 * Sends one notice to one subscription. `fetchUrl` sends to another URL than the one signed for
 * (tests: a local push service on http, which the library refuses to sign for).
 */
export async function sendPush(
  target: PushTarget,
  notice: PushNotice,
  vapid: Vapid,
  options: { fetchUrl?: string; urgency?: "low" | "normal" | "high" } = {},
): Promise<PushOutcome> {
  const request = await buildPushPayload(
    {
      data: pushPayload(notice),
      options: {
        ttl: PUSH_TTL_SECONDS,
        urgency:
          options.urgency ?? (notice.reason === "thread" || notice.reason === "message" ? "normal" : "high"),
        ...(TOPIC.test(notice.room) ? { topic: notice.room } : {}),
      },
    },
    { endpoint: target.endpoint, expirationTime: null, keys: target.keys },
    vapid,
  );
  let res: Response;
  try {
    res = await fetch(options.fetchUrl ?? target.endpoint, request);
  } catch {
    return { kind: "retry", status: null, retryAfterSeconds: null };
  }
  // The body is not needed; read it so the connection can be reused.
  await res.body?.cancel();
  return outcomeOf(res.status, res.headers.get("retry-after"));
}

/** What a push service's status means for the subscription and the notice. */
export function outcomeOf(status: number, retryAfter: string | null = null): PushOutcome {
  if (status >= 200 && status < 300) return { kind: "delivered" };
  if (status === 404 || status === 410) return { kind: "gone", status };
  if (status === 429 || status >= 500)
    return { kind: "retry", status, retryAfterSeconds: seconds(retryAfter) };
  return { kind: "refused", status };
}

/** `Retry-After` as seconds from now: a number of seconds or an HTTP date; null when absent or bad. */
function seconds(value: string | null): number | null {
  if (value === null) return null;
  if (/^\d{1,9}$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** The deployment's VAPID configuration (wrangler.toml: the `VAPID_PRIVATE_JWK` secret and the
 * `VAPID_SUBJECT` var). */
export interface VapidVars {
  AUTH_MODE?: string;
  VAPID_PRIVATE_JWK?: string;
  VAPID_SUBJECT?: string;
}

/** The subject a dev run signs with when none is set; a deployment must name its own contact. */
export const DEV_VAPID_SUBJECT = "mailto:parley@localhost";

/** Reads and checks the VAPID key and subject; throws a message that names the variable at fault. */
export function readVapid(vars: VapidVars): Vapid {
  const raw = vars.VAPID_PRIVATE_JWK ?? "";
  if (raw.trim() === "")
    throw new VapidKeyError(
      "VAPID_PRIVATE_JWK is not set: Web Push needs it (npm run vapid-key makes one; docs/deploy.md)",
    );
  let subject = (vars.VAPID_SUBJECT ?? "").trim();
  if (subject === "") {
    if (vars.AUTH_MODE !== "dev")
      throw new VapidKeyError(
        "VAPID_SUBJECT is not set: push services need a contact (mailto: or https URL) for this deployment",
      );
    subject = DEV_VAPID_SUBJECT;
  }
  try {
    return vapidFromJwk(raw, subject);
  } catch (err) {
    if (err instanceof VapidKeyError)
      throw new VapidKeyError(`VAPID_PRIVATE_JWK / VAPID_SUBJECT: ${err.message}`);
    throw err;
  }
}

/** `readVapid` memoised per env object. */
export const vapidOf = perEnv((env: VapidVars & object): Vapid => readVapid(env));
