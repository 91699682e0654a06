/**
 * @module The Parley SDK (framework-free; browsers, Node and workerd): room sessions with
 * reconnect, resume, gap filling, transport fallback and a persisted outbox. Browsers add
 * `IndexedDbOutboxStore` from ./outbox-idb.ts.
 */
export { type Backoff, DEFAULT_BACKOFF, fullJitter } from "./backoff.ts";
export { type CloseAction, closeAction, type StreamEnd } from "./close-policy.ts";
export { type Connection, HttpError, reauthenticate, request, requestJson } from "./http.ts";
export { MemoryOutboxStore, type OutboxEntry, type OutboxStore } from "./outbox.ts";
export { type MyStatus, PresenceSession, type PresenceSessionOptions } from "./presence.ts";
export {
  CommandError,
  type NewCommand,
  RoomSession,
  type RoomSessionOptions,
  type SessionEnded,
  type SessionState,
  type SessionStatus,
} from "./room.ts";
export { type SseFrame, SseParser } from "./sse.ts";
export {
  browserSocket,
  pollTransport,
  type SocketLike,
  type SocketOpener,
  sseTransport,
  type Transport,
  type TransportFactory,
  type TransportKind,
  websocketTransport,
} from "./transports.ts";
