/**
 * @module A client's presence session (`GET /api/presence/ws`): heartbeats with the user's status
 * (at least every 30 s, here every 20 s by default), the watched set, and what the server pushes:
 * watched users' presence, activity in the user's rooms, read markers moved by the user's other
 * sessions. It reconnects with full-jitter backoff and, on every connect, says its status and its
 * watched set again, so a dropped socket costs nothing but the time away. A status change the
 * server refuses as too frequent (`rate_limited`) is said again after its `retryAfter`, so the
 * latest status always gets through. The room the client shows (`setFocus`) is said on every
 * connect too: the server does not notify a user of a room they are looking at. A socket closed
 * because its token expired (4402) renews the credential (`conn`) and reconnects at once.
 */
import {
  CLIENT_CLOSE,
  CLOSE_EXPIRED,
  CLOSE_REVOKED,
  type PresenceClientFrame,
  type PresenceServerFrame,
  type PresenceStatus,
} from "../../protocol/index.ts";
import type { NotifyPrefs } from "../../protocol/notify.ts";
import { type Backoff, DEFAULT_BACKOFF, fullJitter } from "./backoff.ts";
import { type Connection, reauthenticate } from "./http.ts";
import type { SocketLike, SocketOpener } from "./transports.ts";

export type MyStatus = "active" | "away" | "dnd";

export interface PresenceSessionOptions {
  open: SocketOpener;
  /** The connection whose credential is renewed when the socket's token expires (`4402`); without
   * it the session reconnects with the credential it has. */
  conn?: Connection;
  status?: MyStatus;
  heartbeatMs?: number;
  random?: () => number;
  backoff?: Backoff;
  onPresence?: (user: string, status: PresenceStatus, lastSeen: number | null) => void;
  onActivity?: (room: string, lastSeq: number, mention: boolean) => void;
  onRead?: (room: string, seq: number) => void;
  /** The user's notification preferences changed (on any device). */
  onNotifyPrefs?: (prefs: NotifyPrefs) => void;
  onConnection?: (connected: boolean) => void;
}

const FRAME_TYPES = new Set(["presence", "activity", "read", "notify_prefs", "pong", "error"]);

function parse(data: unknown): PresenceServerFrame | null {
  if (typeof data !== "string") return null;
  try {
    const f = JSON.parse(data) as { type?: unknown };
    return typeof f === "object" && f !== null && FRAME_TYPES.has(String(f.type))
      ? (f as PresenceServerFrame)
      : null;
  } catch {
    return null;
  }
}

export class PresenceSession {
  /** The latest presence of each watched user. */
  readonly presence = new Map<string, { status: PresenceStatus; lastSeen: number | null }>();
  readonly #opts: PresenceSessionOptions;
  #status: MyStatus;
  #watched: string[] = [];
  #focus: string | null = null;
  #socket: SocketLike | null = null;
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  /** The status said again after a `rate_limited` refusal. */
  #retry: ReturnType<typeof setTimeout> | null = null;
  #closed = false;
  #wake: (() => void) | null = null;
  #networkDown = false;
  #networkUp: (() => void) | null = null;

  constructor(opts: PresenceSessionOptions) {
    this.#opts = opts;
    this.#status = opts.status ?? "active";
  }

  get connected(): boolean {
    return this.#socket !== null;
  }

  start(): void {
    void this.#run();
  }

  setStatus(status: MyStatus): void {
    this.#status = status;
    this.#send({ type: "heartbeat", status });
  }

  /** The room this client shows while its page is visible (null: hidden, or no room). */
  setFocus(room: string | null): void {
    if (room === this.#focus) return;
    this.#focus = room;
    this.#send({ type: "focus", room });
  }

  /** Replaces the watched set (at most 500 users, docs/protocol.md). */
  watch(users: string[]): void {
    this.#watched = [...new Set(users)];
    for (const user of this.presence.keys()) if (!this.#watched.includes(user)) this.presence.delete(user);
    this.#send({ type: "watch", users: this.#watched });
  }

  /** The device's network state (see RoomSession.setNetwork): offline drops the socket and holds
   * reconnecting until the network is back, then reconnects at once. */
  setNetwork(online: boolean): void {
    if (this.#closed || online === !this.#networkDown) return;
    this.#networkDown = !online;
    if (!online) {
      try {
        this.#socket?.close(CLIENT_CLOSE.offline.code, CLIENT_CLOSE.offline.reason);
      } catch {}
    } else {
      this.#networkUp?.();
      this.#wake?.();
    }
  }

  close(): void {
    this.#closed = true;
    this.#networkUp?.();
    this.#stopHeartbeat();
    try {
      this.#socket?.close(CLIENT_CLOSE.bye.code, CLIENT_CLOSE.bye.reason);
    } catch {}
    this.#socket = null;
    this.#wake?.();
  }

  #send(frame: PresenceClientFrame): void {
    try {
      this.#socket?.send(JSON.stringify(frame));
    } catch {}
  }

  async #run(): Promise<void> {
    const random = this.#opts.random ?? Math.random;
    let attempt = 0;
    while (!this.#closed) {
      if (this.#networkDown) {
        await new Promise<void>((resolve) => {
          this.#networkUp = resolve;
        });
        this.#networkUp = null;
        continue;
      }
      try {
        const socket = await this.#opts.open("/api/presence/ws");
        if (this.#closed || this.#networkDown) {
          socket.close(CLIENT_CLOSE.bye.code, CLIENT_CLOSE.bye.reason);
          if (this.#closed) break;
          continue;
        }
        const ended = new Promise<boolean>((resolve) => {
          socket.addEventListener("close", (e) => {
            // 4403: the account was deactivated (docs/protocol.md): reconnecting would be refused.
            if (e.code === CLOSE_REVOKED) this.#closed = true;
            resolve(e.code === CLOSE_EXPIRED);
          });
          socket.addEventListener("error", () => resolve(false));
        });
        socket.addEventListener("message", (e) => this.#onFrame(parse(e.data)));
        this.#socket = socket;
        attempt = 0;
        this.#send({ type: "heartbeat", status: this.#status });
        if (this.#watched.length > 0) this.#send({ type: "watch", users: this.#watched });
        if (this.#focus !== null) this.#send({ type: "focus", room: this.#focus });
        this.#heartbeat = setInterval(
          () => this.#send({ type: "heartbeat", status: this.#status }),
          this.#opts.heartbeatMs ?? 20_000,
        );
        this.#opts.onConnection?.(true);
        // 4402: the token expired: a fresh one, and reconnect at once.
        if ((await ended) && !this.#closed) {
          this.#stopHeartbeat();
          this.#socket = null;
          this.#opts.onConnection?.(false);
          const renewed = await (this.#opts.conn ? reauthenticate(this.#opts.conn) : Promise.resolve()).then(
            () => true,
            () => false,
          );
          if (renewed) continue;
        }
      } catch {}
      this.#stopHeartbeat();
      if (this.#socket) {
        this.#socket = null;
        this.#opts.onConnection?.(false);
      }
      if (this.#closed) break;
      if (this.#networkDown) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(
          resolve,
          fullJitter(attempt++, random, this.#opts.backoff ?? DEFAULT_BACKOFF),
        );
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = null;
    }
  }

  #stopHeartbeat(): void {
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    if (this.#retry !== null) clearTimeout(this.#retry);
    this.#retry = null;
  }

  #onFrame(frame: PresenceServerFrame | null): void {
    if (!frame) return;
    if (frame.type === "presence") {
      this.presence.set(frame.user, { status: frame.status, lastSeen: frame.lastSeen });
      this.#opts.onPresence?.(frame.user, frame.status, frame.lastSeen);
    } else if (frame.type === "activity") {
      this.#opts.onActivity?.(frame.room, frame.lastSeq, frame.mention);
    } else if (frame.type === "read") {
      this.#opts.onRead?.(frame.room, frame.seq);
    } else if (frame.type === "notify_prefs") {
      this.#opts.onNotifyPrefs?.(frame.prefs);
    } else if (frame.type === "error" && frame.code === "rate_limited") {
      // Only a status change is refused this way; whatever the status is by then goes again.
      if (this.#retry !== null) clearTimeout(this.#retry);
      this.#retry = setTimeout(
        () => {
          this.#retry = null;
          this.#send({ type: "heartbeat", status: this.#status });
        },
        (frame.retryAfter ?? 1) * 1000,
      );
    }
  }
}
