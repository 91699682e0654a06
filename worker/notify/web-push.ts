/**
 * @module Web Push from the Worker (docs/architecture.md, decision 10): a notification encrypted to
 * the browser (RFC 8291, aes128gcm) and signed for its push service (RFC 8292, VAPID) by
 * `@block65/webcrypto-web-push` (Web Crypto only), sent with `fetch`, and the push service's answer
 * sorted into what the caller does next: nothing, drop the subscription, retry, or give up.
 */
import { buildPushPayload } from "@block65/webcrypto-web-push";

/** The application server's keys: base64url of the raw P-256 public key (65 bytes) and of the
 * private scalar (the JWK's `d`), and a contact (`mailto:` or https URL) push services may use. */
export interface Vapid {
  subject: string;
  publicKey: string;
  privateKey: string;
}

/** A browser's subscription as `PushSubscription.toJSON()` gives it. */
export interface PushTarget {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** What one notification says. No more than needed: the room, why, and, unless the tenant turned
 * previews off, who wrote and the start of what. `count` is how many messages it stands for (a
 * collapsed burst). */
export interface PushNotice {
  room: string;
  seq: number;
  reason: "dm" | "mention" | "thread";
  author: { id: string; name: string } | null;
  preview: string | null;
  count: number;
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
        urgency: options.urgency ?? (notice.reason === "thread" ? "normal" : "high"),
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
