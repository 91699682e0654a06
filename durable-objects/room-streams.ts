/**
 * @module How a stream into a room opens: the identity the worker hands over, and the one parser
 * of an opening request (WebSocket or SSE): who is asking, whether they may read the room, and
 * where their stream starts. The long poll starts from the same `after` rules (`checkAfter`).
 */
import { type ErrorCode, errorResponse, isRole } from "../protocol/index.ts";
import type { RoomMeta } from "./room-log.ts";
import type { SocketInfo } from "./room-sockets.ts";

/** Header through which the worker hands the authenticated caller to the object. The worker always
 * overwrites it, and only the worker can reach the object, so a client cannot forge it. The value is
 * URI-encoded JSON: header values are bytes, names are Unicode. */
export const IDENTITY_HEADER = "x-parley-identity";

export function encodeIdentity(info: SocketInfo): string {
  return encodeURIComponent(JSON.stringify(info));
}

export function parseIdentity(raw: string | null): SocketInfo | null {
  if (!raw) return null;
  try {
    const o = JSON.parse(decodeURIComponent(raw)) as Record<string, unknown>;
    if (
      typeof o.id !== "string" ||
      typeof o.name !== "string" ||
      !isRole(o.role) ||
      typeof o.tenantId !== "string"
    ) {
      return null;
    }
    return { id: o.id, name: o.name, role: o.role, tenantId: o.tenantId };
  } catch {
    return null;
  }
}

/** `after` must be a seq the log has reached (0: from the start). */
export function checkAfter(
  raw: string,
  lastSeq: number,
): { ok: true; after: number } | { ok: false; code: ErrorCode; message: string } {
  const after = /^\d{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(after))
    return { ok: false, code: "bad_request", message: "after must be a non-negative integer" };
  if (after > lastSeq)
    return {
      ok: false,
      code: "bad_request",
      message: `after ${after} is beyond the log (lastSeq ${lastSeq})`,
    };
  return { ok: true, after };
}

export interface StreamOpening {
  ok: true;
  info: SocketInfo;
  /** The stream replays the events after this seq, then goes live. */
  after: number;
  /** The client confirms what it reads (`flow=1`; sockets only). */
  flow: boolean;
}

/** What the parser needs of the room. */
export interface StreamRoom {
  meta: RoomMeta | null;
  lastSeq: number;
  isMember(userId: string): boolean;
}

/**
 * Parses a request that opens a stream, or answers why not: 404 for a room of another tenant (or
 * none), 403 for someone not in it, 400 for a bad `after`. SSE takes `Last-Event-ID` before `after`,
 * as a reconnecting EventSource sends the last id it saw.
 */
export function parseStreamRequest(
  request: Request,
  room: StreamRoom,
  transport: "ws" | "sse",
): StreamOpening | { ok: false; response: Response } {
  const refuse = (code: ErrorCode, message: string) => ({
    ok: false as const,
    response: errorResponse(code, message),
  });
  const info = parseIdentity(request.headers.get(IDENTITY_HEADER));
  if (!info || !room.meta || room.meta.tenantId !== info.tenantId) return refuse("not_found", "no such room");
  if (!room.isMember(info.id)) return refuse("forbidden", "join the room before connecting");
  const params = new URL(request.url).searchParams;
  const raw =
    (transport === "sse" ? request.headers.get("last-event-id") : null) ?? params.get("after") ?? "0";
  const after = checkAfter(raw, room.lastSeq);
  if (!after.ok) return refuse(after.code, after.message);
  return { ok: true, info, after: after.after, flow: transport === "ws" && params.get("flow") === "1" };
}
