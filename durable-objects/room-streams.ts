/**
 * @module The room's streams: a WebSocket, SSE at `…/events`, and the long poll. The identity the
 * worker hands over, the one parser of an opening request (who is asking, whether they may read
 * the room, where their stream starts), and `RoomStreams`, which opens each kind. The long poll
 * starts from the same `after` rules (`checkAfter`). What a stream carries once open is
 * room-sockets.ts's (sockets) and room-fallback.ts's (SSE, and the long poll's wait).
 */
import type { Limits } from "../config/limits.ts";
import {
  type ErrorCode,
  errorResponse,
  type Failure,
  failure,
  isRole,
  utf8Bytes,
} from "../protocol/index.ts";
import type { ColdArchive } from "./room-cold.ts";
import { type FallbackTransports, SSE_CHUNK_BYTES } from "./room-fallback.ts";
import type { RoomMetrics } from "./room-fanout.ts";
import type { RoomLog, RoomMeta } from "./room-log.ts";
import type { RoomSockets, SocketInfo } from "./room-sockets.ts";

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
    const info: SocketInfo = { id: o.id, name: o.name, role: o.role, tenantId: o.tenantId };
    if (o.expiresAt !== undefined) {
      if (typeof o.expiresAt !== "number" || !Number.isFinite(o.expiresAt)) return null;
      info.expiresAt = o.expiresAt;
    }
    return info;
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
  /** The user's account was deactivated: the worker may hand over an identity it read before. */
  ended(userId: string): boolean;
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
  if (room.ended(info.id)) return refuse("forbidden", "this account is deactivated");
  const params = new URL(request.url).searchParams;
  const raw =
    (transport === "sse" ? request.headers.get("last-event-id") : null) ?? params.get("after") ?? "0";
  const after = checkAfter(raw, room.lastSeq);
  if (!after.ok) return refuse(after.code, after.message);
  return { ok: true, info, after: after.after, flow: transport === "ws" && params.get("flow") === "1" };
}

export interface StreamsDeps {
  ctx: DurableObjectState;
  limits: Limits;
  log: RoomLog;
  cold: ColdArchive;
  sockets: RoomSockets;
  fallback: FallbackTransports;
  metrics: RoomMetrics;
  /** Makes sure the room's alarm fires by `at` (a socket's token expiry). */
  wakeAt(at: number): void;
  /** Whether the user's account was deactivated (ended-users.ts). */
  ended(userId: string): boolean;
}

export class RoomStreams {
  readonly #d: StreamsDeps;

  constructor(deps: StreamsDeps) {
    this.#d = deps;
  }

  /** The streams' entry: a WebSocket upgrade, or SSE at `…/events`, each opened after the same
   * parser has said who may read from where. */
  open(request: Request): Response {
    const { log } = this.#d;
    const sse = new URL(request.url).pathname.endsWith("/events");
    if (!sse && request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse("bad_request", "expected a WebSocket upgrade");
    }
    const room = {
      meta: log.meta(),
      lastSeq: log.lastSeq,
      isMember: (id: string) => log.member(id) !== undefined,
      ended: this.#d.ended,
    };
    const opening = parseStreamRequest(request, room, sse ? "sse" : "ws");
    if (!opening.ok) return opening.response;
    return sse ? this.#openEventStream(opening) : this.#openSocket(opening);
  }

  #openSocket({ info, after, flow }: StreamOpening): Response {
    const { ctx, sockets, metrics, wakeAt } = this.#d;
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    ctx.acceptWebSocket(server, [info.id]);
    sockets.open(server, info, after, flow);
    // The alarm closes it when its token expires, asleep or not.
    if (info.expiresAt !== undefined) wakeAt(info.expiresAt);
    metrics.socketOpened(sockets.count);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** SSE: the same replay, `ready`/`gap` and live events as a socket. The replay is written as the
   * reader takes it (room-fallback.ts), never built whole. */
  #openEventStream({ info, after }: StreamOpening): Response {
    const { log, fallback, sockets, limits, cold } = this.#d;
    const lastSeq = log.lastSeq;
    const refused = fallback.admit(info.id);
    if (refused) return errorResponse(refused.code, refused.message, refused.retryAfter);
    // As for a socket: what is committed goes out first, so replay and live stream meet exactly.
    sockets.flush();
    const gap = lastSeq - after > limits.replayCap || after < cold.coldSeq;
    return fallback.open(info.id, { after, lastSeq, gap }, info.expiresAt);
  }

  /**
   * Long poll: events after `after` (at most one frame's worth: 100 events, and about 128 KiB of
   * them) as soon as there is one, or none when `timeoutMs` passes. The body is
   * `{"events":[…],"lastSeq"}`, built from the stored JSON. A poll that has to wait holds one of
   * the caller's stream slots (`maxStreamsPerUser`) while it waits.
   */
  async poll(
    userId: string,
    after: number,
    timeoutMs: number,
  ): Promise<{ ok: true; body: string } | Failure> {
    const { log, cold, limits, fallback, ended } = this.#d;
    const deadline = Date.now() + timeoutMs;
    let admitted = false;
    for (;;) {
      if (!log.member(userId)) return failure("forbidden", "join the room to read it");
      // Checked again on each wake: a poll waiting when the account is deactivated is refused.
      if (ended(userId)) return failure("forbidden", "this account is deactivated");
      const lastSeq = log.lastSeq;
      if (after > lastSeq)
        return failure("bad_request", `after ${after} is beyond the log (lastSeq ${lastSeq})`);
      const left = deadline - Date.now();
      if (lastSeq > after || left <= 0) {
        // Slim rows weigh nothing in SQLite's sum (their JSON is in R2), and events older than the
        // command window have no row: the budget is applied again once they are read.
        const read =
          after < log.floor
            ? await cold.readAfter(after, limits.maxEventsPerFrame, lastSeq)
            : await cold.fill(log.jsonAfter(after, lastSeq, limits.maxEventsPerFrame, SSE_CHUNK_BYTES));
        const rows = read.filter(withinBudget(SSE_CHUNK_BYTES));
        return { ok: true, body: `{"events":[${rows.map((r) => r.json).join(",")}],"lastSeq":${lastSeq}}` };
      }
      if (!admitted) {
        const refused = fallback.admit(userId);
        if (refused) return refused;
        admitted = true;
      }
      await fallback.wait(userId, left);
    }
  }
}

/** A filter keeping rows while the JSON before each is under `bytes` (so at least one, and the
 * one that crosses the budget is the last). */
function withinBudget(bytes: number): (row: { json: string }) => boolean {
  let used = 0;
  return (row) => {
    if (used >= bytes) return false;
    used += utf8Bytes(row.json);
    return true;
  };
}
