/**
 * @module Parley wire protocol v1 (docs/protocol.md): the one definition of every frame, event
 * and error, shared by the worker, the Durable Objects, the SDK, the bench and the tests.
 * Parsers validate hostile input and return a typed value or an error; they never throw.
 */

import type { NotifyPrefs } from "./notify.ts";

export const PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// Errors

export const ERROR_STATUS = {
  bad_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  rate_limited: 429,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** What a command or request that failed answers, before it is framed for HTTP or WebSocket. */
export interface Failure {
  ok: false;
  code: ErrorCode;
  message: string;
  /** Seconds, only with `rate_limited`. */
  retryAfter?: number;
}

export function failure(code: ErrorCode, message: string, retryAfter?: number): Failure {
  return retryAfter === undefined ? { ok: false, code, message } : { ok: false, code, message, retryAfter };
}

/** The HTTP error envelope: `{"error":{"code","message"}}` (plus `retryAfter` when rate limited). */
export interface HttpErrorBody {
  error: { code: ErrorCode; message: string; retryAfter?: number };
}

/** The one builder of an HTTP refusal, for the worker and the objects alike (the worker passes an
 * object's response through unchanged): the envelope, its status, and `Retry-After` (whole seconds)
 * beside `retryAfter`. */
export function errorResponse(code: ErrorCode, message: string, retryAfter?: number): Response {
  const body: HttpErrorBody = {
    error: retryAfter === undefined ? { code, message } : { code, message, retryAfter },
  };
  const headers: Record<string, string> = { "content-type": "application/json; charset=utf-8" };
  if (retryAfter !== undefined) headers["retry-after"] = String(Math.ceil(retryAfter));
  return new Response(JSON.stringify(body), { status: ERROR_STATUS[code], headers });
}

/** WebSocket close codes Parley uses, each with its reason (docs/protocol.md, close codes). The
 * reasons of 4403 are a named set clients may switch on: who ended the user's access. */
export const CLOSE = {
  /** The client kept sending malformed frames. */
  policy: { code: 1008, reason: "too many bad frames" },
  /** The user left the room (from this device or another). */
  left: { code: 4403, reason: "left" },
  /** Someone else took the user out of the room (an admin, the room's creator; a revoked token). */
  removed: { code: 4403, reason: "removed" },
  /** The user is no longer a member for a reason the room cannot tell (found on a later frame). */
  revoked: { code: 4403, reason: "membership revoked" },
  /** The user's account was deactivated: every room and presence socket closes with it. */
  deactivated: { code: 4403, reason: "deactivated" },
  /** The client stopped reading (flow control, docs/protocol.md): it reconnects with `after`. */
  slow: { code: 4008, reason: "slow consumer: reconnect with after" },
  /** The token that opened the stream expired: the client gets a fresh one and resumes with `after`. */
  expired: { code: 4402, reason: "token_expired" },
} as const;

/** The closes a client makes itself (the SDK): both normal, told apart by reason in the logs. */
export const CLIENT_CLOSE = {
  /** The application closed the session. */
  bye: { code: 1000, reason: "bye" },
  /** The device went offline; the session reconnects when it is back. */
  offline: { code: 1000, reason: "offline" },
} as const;

/** Close code: the user's access to the room ended; final (never reconnect to that room). */
export const CLOSE_REVOKED = 4403;
/** Close code: the client stopped reading; resume at once with `after`. */
export const CLOSE_SLOW = 4008;
/** Close code: the token that opened the stream expired; re-authenticate, then resume with `after`. */
export const CLOSE_EXPIRED = 4402;
/** Close code: the client broke the protocol; reconnect only after backing off. */
export const CLOSE_POLICY = 1008;

/** Why a user's access to a room ended, as a 4403 close (or the SSE `close` frame) says it. */
export type RevokedReason = "left" | "removed" | "revoked" | "deactivated";

export function revokedReason(reason: string): RevokedReason {
  if (reason === CLOSE.left.reason) return "left";
  if (reason === CLOSE.removed.reason) return "removed";
  return reason === CLOSE.deactivated.reason ? "deactivated" : "revoked";
}

/** The last frame of an SSE stream that the room ends because the user lost access:
 * `event: close` with this as data (the stream's stand-in for a WebSocket close code). */
export interface SseCloseFrame {
  type: "close";
  code: number;
  reason: string;
}

/** Flow control (docs/protocol.md): a room socket opened with this query parameter confirms what it
 * reads with `{"type":"received","seq"}` at least every `RECEIVED_EVERY_BYTES` of event frames. */
export const FLOW_PARAM = "flow=1";
export const RECEIVED_EVERY_BYTES = 256 * 1024;

/** A client's side of flow control: counts the UTF-8 bytes of the event frames it has handled and
 * says when to confirm them (at least every `RECEIVED_EVERY_BYTES`). */
export class Receipts {
  #bytes = 0;

  /** An event frame of `bytes` whose last event is `seq` was handled: the confirmation due now, or
   * null. */
  handled(bytes: number, seq: number): ClientFrame | null {
    this.#bytes += bytes;
    return this.#bytes < RECEIVED_EVERY_BYTES ? null : this.confirm(seq);
  }

  /** A confirmation of everything up to `seq`, now. */
  confirm(seq: number): ClientFrame {
    this.#bytes = 0;
    return { type: "received", seq };
  }
}

// ---------------------------------------------------------------------------------------------
// Events: the room's totally ordered log

export interface UserRef {
  id: string;
  name: string;
}

export interface AttachmentRef {
  id: string;
  name: string;
  size: number;
  contentType: string;
}

interface EventBase {
  seq: number;
  ts: number;
  author: UserRef;
  clientId?: string;
}

export interface MessageEvent extends EventBase {
  kind: "message";
  text: string;
  threadRoot?: number;
  attachments?: AttachmentRef[];
  /** Set once the message was deleted: its text is gone from every store, its seq stays. */
  deleted?: true;
}
export interface EditEvent extends EventBase {
  kind: "edit";
  target: number;
  text: string;
  deleted?: true;
}
export interface DeleteEvent extends EventBase {
  kind: "delete";
  target: number;
}
export interface ReactionEvent extends EventBase {
  kind: "reaction";
  target: number;
  emoji: string;
  on: boolean;
}
/** A message pinned to the room (`on`) or unpinned; per message, the latest pin event decides. */
export interface PinEvent extends EventBase {
  kind: "pin";
  target: number;
  on: boolean;
}
export interface MemberEvent extends EventBase {
  kind: "member_join" | "member_leave";
  user: UserRef;
}
export interface RoomUpdateEvent extends EventBase {
  kind: "room_update";
  name?: string;
  topic?: string;
}

/** What retention leaves of an expired event: its seq and time, nothing of its content (see
 * docs/protocol.md). Clients render nothing for it; it keeps the log gapless. */
export interface ExpiredEvent extends EventBase {
  kind: "expired";
}

/** The author of a tombstone: the retention policy, not a user. */
export const RETENTION_AUTHOR: UserRef = Object.freeze({ id: "system", name: "retention policy" });

export type RoomEvent =
  | ExpiredEvent
  | MessageEvent
  | EditEvent
  | DeleteEvent
  | ReactionEvent
  | PinEvent
  | MemberEvent
  | RoomUpdateEvent;

// ---------------------------------------------------------------------------------------------
// Frames

export interface SendCommand {
  type: "send";
  clientId: string;
  text: string;
  threadRoot?: number;
  attachments?: string[];
}
export interface EditCommand {
  type: "edit";
  clientId: string;
  target: number;
  text: string;
}
export interface DeleteCommand {
  type: "delete";
  clientId: string;
  target: number;
}
export interface ReactCommand {
  type: "react";
  clientId: string;
  target: number;
  emoji: string;
  on: boolean;
}
export interface PinCommand {
  type: "pin";
  clientId: string;
  target: number;
  on: boolean;
}
/** Commands that become sequenced events, and so carry a `clientId` for idempotency. */
export type SequencedCommand = SendCommand | EditCommand | DeleteCommand | ReactCommand | PinCommand;

export type ClientFrame =
  | SequencedCommand
  | { type: "typing" }
  | { type: "read"; seq: number }
  | { type: "received"; seq: number }
  | { type: "ping" };

export type ServerFrame =
  | { type: "event"; event: RoomEvent }
  | { type: "events"; events: RoomEvent[] }
  | { type: "ack"; clientId: string; seq: number }
  | { type: "typing"; user: UserRef }
  | { type: "ready"; lastSeq: number }
  | { type: "gap"; after: number; lastSeq: number }
  | { type: "error"; code: ErrorCode; message: string; clientId?: string; retryAfter?: number }
  | { type: "pong" };

/** The exact ping frame answered by the runtime's auto-response without waking a hibernated room. */
export const PING_FRAME = '{"type":"ping"}';
export const PONG_FRAME = '{"type":"pong"}';

// ---------------------------------------------------------------------------------------------
// Validation

export interface FieldLimits {
  maxFrameBytes: number;
  maxTextBytes: number;
  maxAttachmentsPerMessage: number;
  maxEmojiChars: number;
}

export type Parsed<T> = { ok: true; value: T } | (Failure & { clientId?: string });

const CLIENT_ID = /^[A-Za-z0-9_-]{1,64}$/;
const encoder = new TextEncoder();

/** UTF-8 length of `s` in bytes, without allocating when the answer is obviously small. */
export function utf8Bytes(s: string): number {
  if (s.length * 3 <= 4096) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        // A surrogate pair; a lone surrogate is sent as U+FFFD, three bytes like the rest.
        n += 4;
        i++;
      } else n += 3;
    }
    return n;
  }
  return encoder.encode(s).byteLength;
}

/** Whether `s` is longer than `limit` UTF-8 bytes. A UTF-8 encoding is never shorter than the
 * UTF-16 length nor longer than three times it, so most strings are decided without encoding. */
export function exceedsUtf8(s: string, limit: number): boolean {
  if (s.length > limit) return true;
  if (s.length * 3 <= limit) return false;
  return utf8Bytes(s) > limit;
}

export function isClientId(v: unknown): v is string {
  return typeof v === "string" && CLIENT_ID.test(v);
}

/**
 * A tenant (workspace) id: 1–40 of lowercase letters, digits and `-`, not starting with `-`. The
 * source is valid both as a RegExp and as an HTML `pattern`, which browsers compile with the `v`
 * flag (where a `-` inside a class must be escaped: unescaped, the pattern is invalid and the
 * browser silently skips the check). Compiling it with `v` here keeps it valid in both.
 */
export const TENANT_ID_PATTERN = "[a-z0-9][a-z0-9\\-]{0,39}";
export const TENANT_ID = new RegExp(`^(?:${TENANT_ID_PATTERN})$`, "v");

/** A sequence number: a positive safe integer. */
export function isSeq(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 1;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

const bad = (message: string, clientId?: string): Failure & { clientId?: string } =>
  clientId === undefined ? failure("bad_request", message) : { ...failure("bad_request", message), clientId };

function checkText(text: unknown, limits: FieldLimits, clientId: string, allowEmpty: boolean) {
  if (typeof text !== "string") return bad("text must be a string", clientId);
  if (!allowEmpty && text.trim() === "") return bad("text must not be empty", clientId);
  if (exceedsUtf8(text, limits.maxTextBytes)) {
    return { ...failure("too_large", `text exceeds ${limits.maxTextBytes} bytes`), clientId };
  }
  return null;
}

/**
 * Validates the fields of a sequenced command (from a WebSocket frame or an HTTP body) and returns
 * it with only the known fields: nothing a client adds is ever stored or rebroadcast.
 */
export function parseCommand(
  type: string,
  o: Record<string, unknown>,
  limits: FieldLimits,
): Parsed<SequencedCommand> {
  const clientId = o.clientId;
  if (!isClientId(clientId)) return bad("clientId must be 1-64 characters of [A-Za-z0-9_-]");
  switch (type) {
    case "send": {
      let attachments: string[] | undefined;
      if (o.attachments !== undefined) {
        if (
          !Array.isArray(o.attachments) ||
          !o.attachments.every((a) => typeof a === "string" && a.length <= 64)
        ) {
          return bad("attachments must be an array of attachment ids", clientId);
        }
        if (o.attachments.length > limits.maxAttachmentsPerMessage) {
          return bad(`at most ${limits.maxAttachmentsPerMessage} attachments per message`, clientId);
        }
        attachments = o.attachments as string[];
      }
      const textError = checkText(o.text, limits, clientId, (attachments?.length ?? 0) > 0);
      if (textError) return textError;
      if (o.threadRoot !== undefined && o.threadRoot !== null && !isSeq(o.threadRoot)) {
        return bad("threadRoot must be a seq", clientId);
      }
      const value: SendCommand = { type: "send", clientId, text: o.text as string };
      if (isSeq(o.threadRoot)) value.threadRoot = o.threadRoot;
      if (attachments && attachments.length > 0) value.attachments = attachments;
      return { ok: true, value };
    }
    case "edit": {
      if (!isSeq(o.target)) return bad("target must be a seq", clientId);
      const textError = checkText(o.text, limits, clientId, false);
      if (textError) return textError;
      return { ok: true, value: { type: "edit", clientId, target: o.target, text: o.text as string } };
    }
    case "delete":
      if (!isSeq(o.target)) return bad("target must be a seq", clientId);
      return { ok: true, value: { type: "delete", clientId, target: o.target } };
    case "react": {
      if (!isSeq(o.target)) return bad("target must be a seq", clientId);
      const emoji = o.emoji;
      if (typeof emoji !== "string" || emoji.trim() === "" || [...emoji].length > limits.maxEmojiChars) {
        return bad(`emoji must be 1-${limits.maxEmojiChars} characters`, clientId);
      }
      if (typeof o.on !== "boolean") return bad("on must be a boolean", clientId);
      return { ok: true, value: { type: "react", clientId, target: o.target, emoji, on: o.on } };
    }
    case "pin":
      if (!isSeq(o.target)) return bad("target must be a seq", clientId);
      if (typeof o.on !== "boolean") return bad("on must be a boolean", clientId);
      return { ok: true, value: { type: "pin", clientId, target: o.target, on: o.on } };
    default:
      return bad(`unknown command type ${JSON.stringify(type).slice(0, 40)}`);
  }
}

/**
 * The envelope every client frame shares: text (binary is refused), at most `maxFrameBytes` (checked
 * before parsing, so an oversized frame costs nothing), JSON, an object.
 */
function parseFrameObject(raw: string | ArrayBuffer, maxFrameBytes: number): Parsed<Record<string, unknown>> {
  if (typeof raw !== "string") {
    if (raw.byteLength > maxFrameBytes) return failure("too_large", `frame exceeds ${maxFrameBytes} bytes`);
    return bad("binary frames are not supported; send JSON text");
  }
  if (exceedsUtf8(raw, maxFrameBytes)) return failure("too_large", `frame exceeds ${maxFrameBytes} bytes`);
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    return bad("frame is not valid JSON");
  }
  if (!isRecord(o)) return bad("frame must be a JSON object");
  return { ok: true, value: o };
}

/** Parses one client frame of a room socket. */
export function parseClientFrame(raw: string | ArrayBuffer, limits: FieldLimits): Parsed<ClientFrame> {
  const envelope = parseFrameObject(raw, limits.maxFrameBytes);
  if (!envelope.ok) return envelope;
  const o = envelope.value;
  const clientId = isClientId(o.clientId) ? o.clientId : undefined;
  switch (o.type) {
    case "ping":
      return { ok: true, value: { type: "ping" } };
    case "typing":
      return { ok: true, value: { type: "typing" } };
    case "read":
      if (!isSeq(o.seq)) return bad("seq must be a positive integer");
      return { ok: true, value: { type: "read", seq: o.seq } };
    case "received":
      if (!isSeq(o.seq)) return bad("seq must be a positive integer");
      return { ok: true, value: { type: "received", seq: o.seq } };
    case "send":
    case "edit":
    case "delete":
    case "react":
    case "pin":
      return parseCommand(o.type, o, limits);
    default:
      return bad(
        typeof o.type === "string"
          ? `unknown frame type ${JSON.stringify(o.type.slice(0, 40))}`
          : "frame needs a type",
        clientId,
      );
  }
}

/** Server frames the SDK, bench and tests read: parsed leniently, as the server is trusted. */
export function parseServerFrame(raw: string): ServerFrame | null {
  try {
    const o = JSON.parse(raw) as unknown;
    return isRecord(o) && typeof o.type === "string" ? (o as unknown as ServerFrame) : null;
  } catch {
    return null;
  }
}

/** The events a server frame carries, in order, whichever of the two forms it used. */
export function eventsOf(frame: ServerFrame): RoomEvent[] {
  if (frame.type === "event") return [frame.event];
  if (frame.type === "events") return frame.events;
  return [];
}

/** Mentions in message text: `@<userId>`, inserted by clients from the directory. */
export const MENTION = /@<([A-Za-z0-9_-]{1,64})>/g;

export function mentionsIn(text: string): string[] {
  const ids = new Set<string>();
  for (const m of text.matchAll(MENTION)) if (m[1]) ids.add(m[1]);
  return [...ids];
}

// ---------------------------------------------------------------------------------------------
// Presence and activity: WebSocket `GET /api/presence/ws`

export type PresenceStatus = "online" | "away" | "dnd" | "offline";

export type PresenceClientFrame =
  | { type: "heartbeat"; status: "active" | "away" | "dnd" }
  | { type: "watch"; users: string[] }
  /** The room this session shows while its page is visible; null when hidden or showing none. */
  | { type: "focus"; room: string | null }
  | { type: "ping" };

export type PresenceServerFrame =
  | { type: "presence"; user: string; status: PresenceStatus; lastSeen: number | null }
  | { type: "activity"; room: string; lastSeq: number; mention: boolean }
  | { type: "read"; room: string; seq: number }
  /** The user's notification preferences changed (on any device): the whole new set. */
  | { type: "notify_prefs"; prefs: NotifyPrefs }
  | { type: "pong" }
  | { type: "error"; code: ErrorCode; message: string; retryAfter?: number };

const HEARTBEAT_STATUSES = new Set(["active", "away", "dnd"]);
const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Parses one presence frame; never throws. */
export function parsePresenceFrame(
  raw: string | ArrayBuffer,
  limits: { maxFrameBytes: number; maxWatch: number },
): Parsed<PresenceClientFrame> {
  const envelope = parseFrameObject(raw, limits.maxFrameBytes);
  if (!envelope.ok) return envelope;
  const o = envelope.value;
  switch (o.type) {
    case "heartbeat":
      if (typeof o.status !== "string" || !HEARTBEAT_STATUSES.has(o.status))
        return bad("status must be active, away or dnd");
      return { ok: true, value: { type: "heartbeat", status: o.status as "active" | "away" | "dnd" } };
    case "watch": {
      if (!Array.isArray(o.users) || !o.users.every((u) => typeof u === "string" && USER_ID.test(u))) {
        return bad("users must be an array of user ids");
      }
      const users = [...new Set(o.users as string[])];
      if (users.length > limits.maxWatch)
        return failure("too_large", `watch at most ${limits.maxWatch} users`);
      return { ok: true, value: { type: "watch", users } };
    }
    case "focus":
      if (o.room !== null && !(typeof o.room === "string" && USER_ID.test(o.room)))
        return bad("room must be a room id or null");
      return { ok: true, value: { type: "focus", room: o.room } };
    case "ping":
      return { ok: true, value: { type: "ping" } };
    default:
      return bad("unknown frame type");
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP resources (docs/protocol.md "HTTP resources"): the shapes the worker answers with, written
// with `satisfies` there and read by the SDK and the web client.

export const ROOM_KINDS = ["channel", "private", "dm"] as const;
export type RoomKind = (typeof ROOM_KINDS)[number];

/** A person's role in their tenant (docs/protocol.md, "Roles"): what the directory stores, what
 * every command is authorized by. */
export const ROLES = ["owner", "admin", "member", "guest", "bot"] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: unknown): value is Role {
  return typeof value === "string" && (ROLES as readonly string[]).includes(value);
}

/** The roles that administer a tenant. */
export function isAdmin(role: Role): boolean {
  return role === "owner" || role === "admin";
}

export interface Me {
  user: { id: string; email: string; name: string; role: Role };
  tenant: { id: string; name: string };
}

/** One entry of `GET /api/rooms` (and the answer of create/join). */
export interface RoomSummary {
  id: string;
  name: string;
  kind: RoomKind;
  topic: string;
  /** Whether the caller is a member (a channel can be listed without being joined). */
  joined: boolean;
  lastSeq: number;
  readSeq: number;
  unread: number;
  mentions: number;
  /** For a dm: its people (the caller included), so clients can name it and show presence. */
  members?: UserRef[];
}

export interface DirectoryUser {
  id: string;
  name: string;
  email: string;
  role: Role;
  /** False once deactivated (docs/protocol.md, "Deactivation"). */
  active: boolean;
}

export interface SearchHit {
  room: string;
  seq: number;
  text: string;
  author: UserRef;
  ts: number;
  /** HTML-escaped text around the match, the matches wrapped in `<mark>…</mark>`. */
  snippet: string;
}

export interface HistoryPage {
  events: RoomEvent[];
  hasMore: boolean;
}
