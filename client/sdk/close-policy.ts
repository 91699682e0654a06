/**
 * @module What a room session does when its stream ends, decided from how it ended (docs/protocol.md,
 * close codes): the one rule every transport's end goes through, pure so that it is tested alone.
 */
import { CLOSE_EXPIRED, CLOSE_POLICY, CLOSE_REVOKED, CLOSE_SLOW } from "../../protocol/index.ts";

/** How a transport ended (or failed to open). */
export interface StreamEnd {
  /** The WebSocket close code, or the code of an SSE stream's `close` frame. */
  code?: number;
  /** The close reason (a named set for 4403: "left", "removed"). */
  reason?: string;
  /** The HTTP status that refused a connection (SSE, long poll; a browser hides a socket's). */
  status?: number;
}

/**
 * - `end`: the user's access to the room is gone: stop for good, tell the application, drop the
 *   outbox (nothing more can be delivered to that room as this user).
 * - `resume`: the server cut a reader that fell behind (4008): reconnect at once with `after`.
 * - `reauth`: the token expired (4402, or a request answered 401): get a fresh credential
 *   (`Connection.reauthenticate`), then reconnect with `after`.
 * - `back-off`: the client broke the protocol (1008): reconnect only after a growing delay, so a
 *   buggy client does not hammer the room.
 * - `reconnect`: anything else (a network drop, a restart, 1006): reconnect with backoff as usual.
 */
export type CloseAction = "end" | "resume" | "reauth" | "back-off" | "reconnect";

export function closeAction(end: StreamEnd): CloseAction {
  if (end.code === CLOSE_REVOKED) return "end";
  // 403: a member of the tenant who is not in the room (a channel left); 404: a private room or
  // dm they are not in, which does not exist for them. Retrying cannot change either.
  if (end.status === 403 || end.status === 404) return "end";
  if (end.code === CLOSE_SLOW) return "resume";
  if (end.code === CLOSE_EXPIRED || end.status === 401) return "reauth";
  if (end.code === CLOSE_POLICY) return "back-off";
  return "reconnect";
}
