/**
 * @module The three ways a room session reaches its room, in order of preference: a WebSocket,
 * then Server-Sent Events, then long polling (docs/protocol.md, fallback transports). Each delivers
 * the socket's frames (events, ready, gap, acks, errors, typing) to the session; only the socket
 * carries commands, the others leave them to HTTP.
 */
import {
  CLIENT_CLOSE,
  type ClientFrame,
  eventsOf,
  FLOW_PARAM,
  PING_FRAME,
  parseServerFrame,
  Receipts,
  type RoomEvent,
  type ServerFrame,
  type SseCloseFrame,
  utf8Bytes,
} from "../../protocol/index.ts";
import type { StreamEnd } from "./close-policy.ts";
import { type Connection, HttpError, request } from "./http.ts";
import { SseParser } from "./sse.ts";

export type TransportKind = "websocket" | "sse" | "poll";

export interface TransportHandlers {
  /** Handles a frame; settles once the session has processed it (flow control confirms then). */
  frame(frame: ServerFrame): Promise<void> | void;
  /** The transport ended (after having opened); the session decides what next from how
   * (close-policy.ts). */
  closed(end: StreamEnd): void;
}

export interface Transport {
  readonly kind: TransportKind;
  /** Sends a frame over a socket; false when this transport cannot (commands go over HTTP). */
  send(frame: ClientFrame): boolean;
  close(): void;
}

/** Opens a transport resuming after `after`; rejects when it cannot connect at all (with an
 * `HttpError` when the server refused it). */
export type TransportFactory = (
  roomId: string,
  after: number,
  handlers: TransportHandlers,
) => Promise<Transport>;

/** The subset of the WebSocket API the SDK uses (browsers' WebSocket, `ws` in Node, workerd's). */
export interface SocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "message", listener: (e: { data: unknown }) => void): void;
  addEventListener(
    type: "close" | "error",
    listener: (e: { code?: unknown; reason?: unknown }) => void,
  ): void;
}

/** Opens an accepted socket to a path such as `/api/rooms/r_…/ws?after=5`. An opener that can see
 * why an upgrade was refused rejects with an `HttpError` of its status (a browser cannot: its
 * sessions learn a 403/404 from the fallback transports instead). */
export type SocketOpener = (path: string) => Promise<SocketLike>;

/** The browser's opener: same-origin (or `baseUrl`) with the Access cookie. */
export function browserSocket(baseUrl: string): SocketOpener {
  return (path) =>
    new Promise((resolve, reject) => {
      const origin = baseUrl || (globalThis as { location?: { origin: string } }).location?.origin || "";
      const ws = new WebSocket(`${origin.replace(/^http/, "ws")}${path}`);
      ws.addEventListener("open", () => resolve(ws as unknown as SocketLike), { once: true });
      ws.addEventListener("error", () => reject(new Error("websocket failed to connect")), { once: true });
    });
}

export function websocketTransport(open: SocketOpener): TransportFactory {
  return async (roomId, after, h) => {
    const ws = await open(`/api/rooms/${roomId}/ws?after=${after}&${FLOW_PARAM}`);
    // The first frame is always the ping, answered by the runtime without waking the room. It is
    // what lets the server's closes (4403 when access ends, 4008, 1008) complete: in workerd a
    // Close answering the server's before the peer has sent any frame leaves the connection open
    // until the client gives up on it (durable-objects/room-sockets.ts, `close`).
    try {
      ws.send(PING_FRAME);
    } catch {}
    let done = false;
    const end = (how: StreamEnd) => {
      if (done) return;
      done = true;
      h.closed(how);
    };
    // Flow control (docs/protocol.md): event bytes processed since the last confirmation. A frame is
    // confirmed once the session has handled it, so a session that falls behind (paging a gap, a
    // slow application) holds the room back instead of piling frames up in memory.
    const receipts = new Receipts();
    ws.addEventListener("message", (e) => {
      const text = typeof e.data === "string" ? e.data : "";
      const frame = parseServerFrame(text);
      if (!frame) return;
      const handled = h.frame(frame);
      const seq = eventsOf(frame).at(-1)?.seq;
      if (seq === undefined) return;
      const bytes = utf8Bytes(text);
      void Promise.resolve(handled).then(() => {
        const due = receipts.handled(bytes, seq);
        if (!due || done) return;
        try {
          ws.send(JSON.stringify(due));
        } catch {}
      });
    });
    ws.addEventListener("close", (e) =>
      end({
        ...(typeof e.code === "number" ? { code: e.code } : {}),
        reason: typeof e.reason === "string" ? e.reason : "",
      }),
    );
    ws.addEventListener("error", () => end({ reason: "socket error" }));
    return {
      kind: "websocket",
      send(frame) {
        try {
          ws.send(JSON.stringify(frame));
          return true;
        } catch {
          return false;
        }
      },
      close() {
        done = true;
        try {
          ws.close(CLIENT_CLOSE.bye.code, CLIENT_CLOSE.bye.reason);
        } catch {}
      },
    };
  };
}

export function sseTransport(conn: Connection): TransportFactory {
  return async (roomId, after, h) => {
    const abort = new AbortController();
    const res = await request(
      conn,
      "GET",
      `/api/rooms/${roomId}/events?after=${after}`,
      undefined,
      abort.signal,
    );
    if (!res.body) throw new Error("event stream without a body");
    const reader = res.body.getReader();
    const parser = new SseParser();
    let done = false;
    // The room ends a stream whose user lost access with `event: close` (the socket's close code).
    let ending: StreamEnd = { reason: "event stream ended" };
    void (async () => {
      try {
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          for (const f of parser.push(value)) {
            if (f.event === "event") h.frame({ type: "event", event: JSON.parse(f.data) as RoomEvent });
            else if (f.event === "ready" || f.event === "gap") {
              const frame = parseServerFrame(f.data);
              if (frame) h.frame(frame);
            } else if (f.event === "close") ending = parseSseClose(f.data) ?? ending;
          }
        }
      } catch {}
      if (!done) {
        done = true;
        h.closed(ending);
      }
    })();
    return {
      kind: "sse",
      send: () => false,
      close() {
        done = true;
        abort.abort();
      },
    };
  };
}

export function pollTransport(conn: Connection, timeoutSeconds = 25): TransportFactory {
  return async (roomId, after, h) => {
    const abort = new AbortController();
    const poll = async (from: number, timeout: number) => {
      const res = await request(
        conn,
        "GET",
        `/api/rooms/${roomId}/poll?after=${from}&timeout=${timeout}`,
        undefined,
        abort.signal,
      );
      return (await res.json()) as { events: RoomEvent[]; lastSeq: number };
    };
    // The first poll answers at once: it is the replay, and proves the transport works.
    const first = await poll(after, 0);
    let done = false;
    let cursor = after;
    const deliver = (page: { events: RoomEvent[] }) => {
      if (page.events.length > 0) h.frame({ type: "events", events: page.events });
      cursor = page.events.at(-1)?.seq ?? cursor;
    };
    deliver(first);
    void (async () => {
      try {
        // Catch up to the lastSeq of the first answer before saying ready, as a socket would.
        let target = first.lastSeq;
        while (!done && cursor < target) {
          const page = await poll(cursor, 0);
          deliver(page);
          target = Math.max(target, page.lastSeq);
        }
        if (!done) h.frame({ type: "ready", lastSeq: target });
        while (!done) deliver(await poll(cursor, timeoutSeconds));
      } catch (err) {
        // A poll refused because the user lost access (403/404) ends the session, not just the turn.
        if (!done) {
          done = true;
          h.closed({
            reason: "long poll failed",
            ...(err instanceof HttpError ? { status: err.status } : {}),
          });
        }
      }
      if (!done) {
        done = true;
        h.closed({ reason: "long poll failed" });
      }
    })();
    return {
      kind: "poll",
      send: () => false,
      close() {
        done = true;
        abort.abort();
      },
    };
  };
}

function parseSseClose(data: string): StreamEnd | null {
  try {
    const frame = JSON.parse(data) as Partial<SseCloseFrame>;
    return typeof frame.code === "number"
      ? { code: frame.code, reason: typeof frame.reason === "string" ? frame.reason : "" }
      : null;
  } catch {
    return null;
  }
}
