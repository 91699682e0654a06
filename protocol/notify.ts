/**
 * @module Notifications on the wire (docs/protocol.md, "Notifications"): a user's preferences, a
 * browser's push subscription as it is registered, and the payload a push delivers to the service
 * worker. Parsers validate hostile input and never throw.
 */
import { failure, type Parsed } from "./index.ts";

/** What a room notifies: every message, only what is addressed to the user (direct messages,
 * mentions, replies in threads they follow), or nothing. */
export const NOTIFY_MODES = ["all", "mentions", "nothing"] as const;
export type NotifyMode = (typeof NOTIFY_MODES)[number];

/** Why a notification was sent. `message`: a room set to `all`; `test`: `POST /api/push/test`. */
export type NotifyReason = "dm" | "mention" | "thread" | "message" | "test";

/** A room's own setting: `mode` null follows the user's default; `muteUntil` (ms since the epoch)
 * silences it until then, whatever the mode. */
export interface RoomNotifyPref {
  mode: NotifyMode | null;
  muteUntil: number | null;
}

/** A user's notification preferences, the same on every device (`GET /api/notifications`). */
export interface NotifyPrefs {
  default: NotifyMode;
  /** Do not disturb until then (ms since the epoch), on every device, online or not. */
  pausedUntil: number | null;
  rooms: Record<string, RoomNotifyPref>;
}

/** The default of a user who never chose: direct messages, mentions and threads. */
export const DEFAULT_NOTIFY_MODE: NotifyMode = "mentions";

/** What a push delivers to the service worker, as JSON (at most 3,993 bytes: the preview is
 * shortened to fit). `roomName`, `author` and `preview` are null when the tenant turned previews
 * off; `count` is how many messages it stands for (a burst collapsed into one). */
export interface PushNotice {
  room: string;
  roomName: string | null;
  seq: number;
  reason: NotifyReason;
  author: { id: string; name: string } | null;
  preview: string | null;
  count: number;
}

/** A browser's subscription as `PushSubscription.toJSON()` gives it (the fields Parley keeps). */
export interface PushSubscriptionBody {
  endpoint: string;
  keys: { p256dh: string; auth: string };
}

/** A subscription as `GET /api/push/subscriptions` lists it: never its endpoint or keys, which are
 * the device's capability to be notified. */
export interface PushSubscriptionView {
  id: string;
  /** The push service (`https://fcm.googleapis.com`, …). */
  service: string;
  userAgent: string | null;
  createdAt: number;
  /** Notifications given up on for this device (its push service kept failing). */
  failures: number;
}

export const MAX_ENDPOINT_CHARS = 1024;
const B64URL = /^[A-Za-z0-9_-]+={0,2}$/;
/** The far future a mute or pause may reach: a year (longer is "nothing", said as such). */
export const MAX_MUTE_MS = 366 * 24 * 3600 * 1000;

function bad<T>(message: string): Parsed<T> {
  return failure("bad_request", message);
}

/** Decoded length of base64url text (padding allowed), or -1 when it is not base64url. */
function b64urlBytes(s: string): number {
  if (!B64URL.test(s)) return -1;
  const body = s.replace(/=+$/, "");
  if (body.length % 4 === 1) return -1;
  return Math.floor((body.length * 3) / 4);
}

/**
 * A subscription to register. The endpoint must be https (`allowLoopbackHttp`: also
 * `http://localhost` and `http://127.0.0.1`, for a dev run's local push service); `p256dh` is an
 * uncompressed P-256 point (65 bytes) and `auth` 16 bytes, as RFC 8291 requires.
 */
export function parsePushSubscription(
  body: Record<string, unknown>,
  options: { allowLoopbackHttp: boolean },
): Parsed<PushSubscriptionBody> {
  const { endpoint, keys } = body;
  if (typeof endpoint !== "string" || endpoint.length === 0 || endpoint.length > MAX_ENDPOINT_CHARS)
    return bad(`endpoint must be a URL of at most ${MAX_ENDPOINT_CHARS} characters`);
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return bad("endpoint must be a URL");
  }
  const loopback = url.hostname === "localhost" || url.hostname === "127.0.0.1";
  if (!(url.protocol === "https:" || (options.allowLoopbackHttp && url.protocol === "http:" && loopback)))
    return bad("endpoint must be an https URL");
  if (url.username !== "" || url.password !== "") return bad("endpoint must not carry credentials");
  if (typeof keys !== "object" || keys === null || Array.isArray(keys))
    return bad("keys must be an object with p256dh and auth");
  const { p256dh, auth } = keys as Record<string, unknown>;
  if (typeof p256dh !== "string" || b64urlBytes(p256dh) !== 65)
    return bad("keys.p256dh must be base64url of a 65-byte P-256 public key");
  if (typeof auth !== "string" || b64urlBytes(auth) !== 16)
    return bad("keys.auth must be base64url of 16 bytes");
  return { ok: true, value: { endpoint: url.href, keys: { p256dh, auth } } };
}

function isMode(v: unknown): v is NotifyMode {
  return typeof v === "string" && (NOTIFY_MODES as readonly string[]).includes(v);
}

/** A time until which something holds: null (not at all) or ms since the epoch, at most a year
 * from `now`. */
function until(v: unknown, name: string, now: number): Parsed<number | null> {
  if (v === null) return { ok: true, value: null };
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
    return bad(`${name} must be null or a time in ms since the epoch`);
  if (v > now + MAX_MUTE_MS) return bad(`${name} must be within a year; use mode "nothing" for longer`);
  return { ok: true, value: v };
}

/** `PUT /api/notifications`: `{"default"?, "pausedUntil"?}`, at least one of them. */
export function parsePrefsChange(
  body: Record<string, unknown>,
  now: number,
): Parsed<{ default?: NotifyMode; pausedUntil?: number | null }> {
  const out: { default?: NotifyMode; pausedUntil?: number | null } = {};
  for (const key of Object.keys(body))
    if (key !== "default" && key !== "pausedUntil") return bad(`unknown field ${JSON.stringify(key)}`);
  if ("default" in body) {
    if (!isMode(body.default)) return bad(`default must be one of ${NOTIFY_MODES.join(", ")}`);
    out.default = body.default;
  }
  if ("pausedUntil" in body) {
    const t = until(body.pausedUntil, "pausedUntil", now);
    if (!t.ok) return t;
    out.pausedUntil = t.value;
  }
  if (Object.keys(out).length === 0) return bad("give default, pausedUntil or both");
  return { ok: true, value: out };
}

/** `PUT /api/notifications/rooms/:roomId`: `{"mode": mode | null, "muteUntil": ms | null}`; a field
 * left out keeps its value. */
export function parseRoomPrefChange(
  body: Record<string, unknown>,
  now: number,
): Parsed<Partial<RoomNotifyPref>> {
  const out: Partial<RoomNotifyPref> = {};
  for (const key of Object.keys(body))
    if (key !== "mode" && key !== "muteUntil") return bad(`unknown field ${JSON.stringify(key)}`);
  if ("mode" in body) {
    if (body.mode !== null && !isMode(body.mode))
      return bad(`mode must be null (the default) or one of ${NOTIFY_MODES.join(", ")}`);
    out.mode = body.mode;
  }
  if ("muteUntil" in body) {
    const t = until(body.muteUntil, "muteUntil", now);
    if (!t.ok) return t;
    out.muteUntil = t.value;
  }
  if (Object.keys(out).length === 0) return bad("give mode, muteUntil or both");
  return { ok: true, value: out };
}
