/**
 * @module A client's session with one room: the SDK's core. It keeps the room's events flowing to
 * the application exactly once and in seq order across reconnects, transports and gaps, and it
 * owns the outbox of commands the server has not acknowledged.
 *
 * - Connects with the first transport that works (WebSocket, then SSE, then long poll; a transport
 *   that fails `fallbackAfter` times in a row gives way to the next, and every `probeMs` on a
 *   fallback the preferred one is tried again), reconnecting after a drop with
 *   exponential backoff and full jitter, always resuming with `after` = the last seq delivered.
 * - Frames are handled one at a time, in arrival order. An event at or below the last seq is a
 *   duplicate and dropped; a hole (or a `gap`) is filled by paging history over HTTP first.
 * - Every command gets a clientId and goes into the outbox (persisted by the store) before it is
 *   sent (a store that refuses the write does not hold it back); after each `ready` every outbox entry is sent again, over the socket or over HTTP, until
 *   acknowledged. The server's idempotency on (author, clientId) answers a repeat with the original
 *   seq, and an event carrying a pending clientId settles it even if its ack was lost.
 * - How a stream ended decides what comes next (close-policy.ts): when the user's access to the room
 *   ends (4403, or a connection refused with 403/404) the session stops for good, fails what is
 *   left in its outbox and says so through `onEnded`; 4008 resumes at once; 1008 backs off; an
 *   expired token (4402, or a 401) is renewed through `Connection.reauthenticate` before resuming.
 */
import { commandRequest } from "../../protocol/commands.ts";
import {
  type ErrorCode,
  type RevokedReason,
  type RoomEvent,
  revokedReason,
  type SequencedCommand,
  type ServerFrame,
  type UserRef,
} from "../../protocol/index.ts";
import { type Backoff, DEFAULT_BACKOFF, fullJitter } from "./backoff.ts";
import { closeAction, type StreamEnd } from "./close-policy.ts";
import { type Connection, HttpError, reauthenticate, request, requestJson } from "./http.ts";
import { MemoryOutboxStore, type OutboxEntry, type OutboxStore } from "./outbox.ts";
import type { Transport, TransportFactory, TransportKind } from "./transports.ts";

export type SessionState = "connecting" | "online" | "offline" | "closed";

/** The session ended because the user's access to the room did (it will not reconnect). */
export interface SessionEnded {
  roomId: string;
  /** "left": the user left (here or on another device); "removed": someone else took them out;
   * "revoked": access ended for a reason the server did not name (a refused reconnect). */
  reason: RevokedReason;
}

export interface SessionStatus {
  state: SessionState;
  transport: TransportKind | null;
  /** Commands waiting for the server's acknowledgement. */
  queued: number;
}

/** A command the server refused for good (not a transient failure). */
export class CommandError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface RoomSessionOptions {
  conn: Connection;
  roomId: string;
  transports: TransportFactory[];
  store?: OutboxStore;
  /** The last seq the application already has (0: from the start). */
  after?: number;
  random?: () => number;
  backoff?: Backoff;
  fallbackAfter?: number;
  /** On a fallback transport, how often to try the preferred one again (default 60 s). */
  probeMs?: number;
  onEvent?: (event: RoomEvent) => void;
  onStatus?: (status: SessionStatus) => void;
  onTyping?: (user: UserRef) => void;
  /** Called once if the session ends because the user lost access to the room. */
  onEnded?: (ended: SessionEnded) => void;
}

type Distributive<T> = T extends unknown ? Omit<T, "clientId"> : never;
export type NewCommand = Distributive<SequencedCommand>;

interface Pending {
  entry: OutboxEntry;
  resolve: (seq: number) => void;
  reject: (err: Error) => void;
  acked: Promise<number>;
}

const HISTORY_PAGE = 200;
/** After a 1008 the next reconnect waits at least as long as this many failed attempts would:
 * with the default backoff, up to 4 s, doubling with each further 1008. */
const POLICY_BACKOFF_ATTEMPT = 4;

export class RoomSession {
  readonly roomId: string;
  #lastSeq: number;
  readonly #opts: RoomSessionOptions;
  readonly #store: OutboxStore;
  readonly #pending = new Map<string, Pending>();
  /** The highest read marker the application set in this session (0: none). */
  #readSeq = 0;
  #transport: Transport | null = null;
  #status: SessionStatus = { state: "connecting", transport: null, queued: 0 };
  #chain: Promise<void> = Promise.resolve();
  #closed = false;
  #wasReady = false;
  #wake: (() => void) | null = null;
  /** Ends the current transport's turn in the run loop (set while one is open), saying how. */
  #endTurn: ((how?: StreamEnd) => void) | null = null;
  /** The device says it has no network (browsers: the `offline` event); see setNetwork. */
  #networkDown = false;
  #networkUp: (() => void) | null = null;
  #retryTimer: ReturnType<typeof setTimeout> | null = null;
  #ended: SessionEnded | null = null;

  constructor(opts: RoomSessionOptions) {
    this.#opts = opts;
    this.roomId = opts.roomId;
    this.#lastSeq = opts.after ?? 0;
    this.#store = opts.store ?? new MemoryOutboxStore();
  }

  get lastSeq(): number {
    return this.#lastSeq;
  }

  get status(): SessionStatus {
    return this.#status;
  }

  /** Why the session ended for good (the user lost access to the room), or null. */
  get ended(): SessionEnded | null {
    return this.#ended;
  }

  /** The outbox as it stands (oldest first): what the UI shows as pending. */
  get queued(): OutboxEntry[] {
    return [...this.#pending.values()].map((p) => p.entry);
  }

  /**
   * Loads the persisted outbox (a reload's unsent messages) and starts connecting, after `after`
   * if given (the application may learn what it has, e.g. from a history page, after constructing
   * the session: commands issued meanwhile are already queued and persisted).
   */
  async start(after?: number): Promise<void> {
    if (after !== undefined) this.#lastSeq = after;
    await this.restore();
    this.#setStatus({});
    void this.#run();
  }

  /** Loads the persisted outbox into `queued` without connecting (idempotent): an application
   * that cannot reach the server yet (offline after a reload) shows what waits to be sent. */
  async restore(): Promise<void> {
    for (const entry of await this.#store.list(this.roomId)) {
      if (!this.#pending.has(entry.clientId)) this.#track(entry);
    }
  }

  send(text: string, extra: { threadRoot?: number; attachments?: string[] } = {}) {
    return this.command({ type: "send", text, ...extra });
  }

  /** Queues a command: it is persisted, sent when connected, and resent until acknowledged.
   * `acked` resolves with the event's seq, or rejects with a CommandError the server gave. */
  command(cmd: NewCommand): { clientId: string; acked: Promise<number> } {
    const clientId = newClientId();
    if (this.#ended) {
      // Access is gone: nothing is queued, persisted or sent to a room this user cannot reach.
      const acked = Promise.reject(new CommandError("forbidden", "you no longer have access to this room"));
      acked.catch(() => undefined);
      return { clientId, acked };
    }
    const entry: OutboxEntry = {
      roomId: this.roomId,
      clientId,
      command: { ...cmd, clientId } as SequencedCommand,
      createdAt: Date.now(),
    };
    const pending = this.#track(entry);
    // Sent once the outbox holds it, so that a page gone before the ack still has it to resend; a
    // store that refuses the write (full, or private browsing) does not hold the message back.
    const transmit = () => {
      if (this.#status.state === "online" && this.#pending.has(clientId)) void this.#transmit(pending);
    };
    void this.#store.put(entry).then(transmit, transmit);
    return { clientId, acked: pending.acked };
  }

  /** Tells the room the user is typing (ephemeral: dropped, returning false, when not connected). */
  typing(): boolean {
    return this.#transport?.send({ type: "typing" }) ?? false;
  }

  /** Moves the read marker (over the socket, or HTTP otherwise). A socket's `read` frame may be
   * lost with the room's last second before a crash (docs/protocol.md), so the highest marker is
   * sent again after every reconnect. */
  async read(seq: number): Promise<void> {
    this.#readSeq = Math.max(this.#readSeq, seq);
    if (this.#transport?.send({ type: "read", seq })) return;
    await request(this.#opts.conn, "PUT", `/api/rooms/${this.roomId}/read`, { seq });
  }

  /**
   * Tells the session whether the device has a network (in browsers, from `navigator.onLine` and
   * the `online`/`offline` events). Going offline drops the transport at once, rather than waiting
   * for a dead socket to time out, and holds reconnecting until the network is back; commands
   * queue in the outbox meanwhile. Coming back reconnects at once, skipping any backoff wait.
   */
  setNetwork(online: boolean): void {
    if (this.#closed || online === !this.#networkDown) return;
    this.#networkDown = !online;
    if (!online) {
      this.#transport?.close();
      this.#endTurn?.();
      this.#setStatus({ state: "offline", transport: null });
    } else {
      this.#networkUp?.();
      this.#wake?.();
    }
  }

  /** The user's access to the room ended: stop for good, fail the outbox (it cannot be delivered
   * to this room as this user), and tell the application once. */
  #end(how: StreamEnd): void {
    if (this.#ended) return;
    const ended: SessionEnded = {
      roomId: this.roomId,
      reason: how.code !== undefined ? revokedReason(how.reason ?? "") : "revoked",
    };
    this.#ended = ended;
    this.close();
    for (const clientId of [...this.#pending.keys()])
      this.#fail(clientId, new CommandError("forbidden", "you no longer have access to this room"));
    this.#opts.onEnded?.(ended);
  }

  close(): void {
    this.#closed = true;
    this.#networkUp?.();
    this.#transport?.close();
    this.#transport = null;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#wake?.();
    this.#setStatus({ state: "closed", transport: null });
  }

  // ---- connection --------------------------------------------------------------------------

  async #run(): Promise<void> {
    const { transports, fallbackAfter = 2, backoff = DEFAULT_BACKOFF, probeMs = 60_000 } = this.#opts;
    const random = this.#opts.random ?? Math.random;
    let attempt = 0;
    let kind = 0;
    let failures = 0;
    while (!this.#closed) {
      if (this.#networkDown) {
        await new Promise<void>((resolve) => {
          this.#networkUp = resolve;
        });
        this.#networkUp = null;
        if (this.#closed) break;
        this.#setStatus({ state: "connecting" });
      }
      let ended!: (how?: StreamEnd) => void;
      const done = new Promise<StreamEnd>((resolve) => {
        ended = (how) => resolve(how ?? { reason: "closed by the session" });
      });
      let how: StreamEnd;
      try {
        const factory = transports[kind];
        if (!factory) throw new Error("no transport");
        const transport = await factory(this.roomId, this.#lastSeq, {
          frame: (f) => this.#enqueue(f),
          closed: (end) => ended(end),
        });
        if (this.#closed || this.#networkDown) {
          transport.close();
          if (this.#closed) break;
          continue; // the network went away while connecting: wait for it
        }
        this.#transport = transport;
        this.#endTurn = ended;
        failures = 0;
        // A network that blocked sockets may stop doing so: from time to time, leave the fallback
        // and try the preferred transport again (resuming by seq makes the switch invisible).
        const probe =
          kind > 0
            ? setTimeout(() => {
                kind = 0;
                transport.close();
                ended();
              }, probeMs)
            : null;
        how = await done;
        if (probe) clearTimeout(probe);
        this.#transport = null;
        this.#endTurn = null;
      } catch (err) {
        how = { reason: String(err), ...(err instanceof HttpError ? { status: err.status } : {}) };
        // An expired token is no reason to think the transport is blocked.
        if (how.status !== 401) failures += 1;
        if (failures >= fallbackAfter && kind < transports.length - 1) {
          kind += 1;
          failures = 0;
        }
      }
      if (this.#closed) break;
      const action = closeAction(how);
      if (action === "end") {
        // Frames already received (their own member_leave, say) are handled before the end.
        await this.#chain;
        this.#end(how);
        break;
      }
      const wasReady = this.#wasReady;
      this.#wasReady = false;
      if (wasReady && action !== "back-off") attempt = 0;
      if (action === "back-off") attempt = Math.max(attempt, POLICY_BACKOFF_ATTEMPT);
      this.#setStatus({ state: "offline", transport: null });
      if (this.#networkDown) continue; // wait for the network, not for a backoff timer
      // A reader cut for falling behind resumes at once (it was live: nothing is wrong with the
      // connection); a 4008 on a connection that never got ready backs off like any failure.
      if (action === "resume" && wasReady) {
        this.#setStatus({ state: "connecting" });
        continue;
      }
      // The token expired: a fresh one, then resume at once with `after` (the outbox is resent on
      // `ready`). Backing off when renewing fails, or when a fresh token was refused too.
      if (action === "reauth") {
        const renewed = await reauthenticate(this.#opts.conn).then(
          () => true,
          () => false,
        );
        if (this.#closed) break;
        if (renewed && wasReady) {
          this.#setStatus({ state: "connecting" });
          continue;
        }
      }
      await this.#sleep(fullJitter(attempt++, random, backoff));
      if (!this.#closed) this.#setStatus({ state: "connecting" });
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }

  // ---- frames ------------------------------------------------------------------------------

  /** A frame that cannot be handled (say, history failed while filling a hole) drops the connection
   * so that the next one resumes from the last seq delivered. Ending the turn matters: a transport
   * closed by the session does not report `closed`, and the run loop would wait on it for ever. */
  #enqueue(frame: ServerFrame): Promise<void> {
    this.#chain = this.#chain
      .then(() => this.#handle(frame))
      .catch((err) => {
        this.#transport?.close();
        this.#endTurn?.(err instanceof HttpError ? { status: err.status, reason: err.message } : undefined);
      });
    return this.#chain;
  }

  async #handle(frame: ServerFrame): Promise<void> {
    if (this.#closed) return;
    switch (frame.type) {
      case "event":
        await this.#deliver(frame.event);
        break;
      case "events":
        for (const e of frame.events) await this.#deliver(e);
        break;
      case "gap":
        await this.#catchUp(frame.lastSeq);
        break;
      case "ready":
        await this.#catchUp(frame.lastSeq);
        if (this.#closed) break;
        this.#wasReady = true;
        this.#setStatus({ state: "online", transport: this.#transport?.kind ?? null });
        // Idempotent (a marker never moves back): the room writes it only if it had lost it.
        if (this.#readSeq > 0) this.#transport?.send({ type: "read", seq: this.#readSeq });
        for (const p of this.#pending.values()) await this.#transmit(p);
        break;
      case "ack":
        this.#settle(frame.clientId, frame.seq);
        break;
      case "error":
        if (frame.clientId === undefined) break;
        if (frame.code === "rate_limited") this.#retrySoon((frame.retryAfter ?? 1) * 1000);
        else this.#fail(frame.clientId, new CommandError(frame.code, frame.message));
        break;
      case "typing":
        this.#opts.onTyping?.(frame.user);
        break;
      default:
        break;
    }
  }

  async #deliver(event: RoomEvent): Promise<void> {
    if (event.seq <= this.#lastSeq) return; // already delivered: a replay overlap or a resend
    if (event.seq > this.#lastSeq + 1) await this.#catchUp(event.seq - 1);
    if (this.#closed || event.seq !== this.#lastSeq + 1) return;
    this.#lastSeq = event.seq;
    this.#opts.onEvent?.(event);
    if (event.clientId !== undefined) this.#settle(event.clientId, event.seq);
  }

  /** Pages history until everything up to `target` is delivered (or the session is closed: a page
   * answered after close() must not reach an application that may have resumed elsewhere). */
  async #catchUp(target: number): Promise<void> {
    while (this.#lastSeq < target) {
      const page = await requestJson<{ events: RoomEvent[] }>(
        this.#opts.conn,
        "GET",
        `/api/rooms/${this.roomId}/messages?after=${this.#lastSeq}&limit=${HISTORY_PAGE}`,
      );
      if (this.#closed) return;
      const before = this.#lastSeq;
      for (const e of page.events) {
        if (e.seq === this.#lastSeq + 1) {
          this.#lastSeq = e.seq;
          this.#opts.onEvent?.(e);
          if (e.clientId !== undefined) this.#settle(e.clientId, e.seq);
        }
      }
      if (this.#lastSeq === before) throw new Error(`history has nothing after ${before}`);
    }
  }

  // ---- the outbox --------------------------------------------------------------------------

  #track(entry: OutboxEntry): Pending {
    let resolve!: (seq: number) => void;
    let reject!: (err: Error) => void;
    const acked = new Promise<number>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    acked.catch(() => undefined); // a caller that ignores the promise must not see an unhandled rejection
    const pending = { entry, resolve, reject, acked };
    this.#pending.set(entry.clientId, pending);
    this.#setStatus({});
    return pending;
  }

  async #transmit(p: Pending): Promise<void> {
    if (this.#transport?.send(p.entry.command)) return;
    try {
      const seq = await this.#overHttp(p.entry.command);
      this.#settle(p.entry.clientId, seq);
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) {
        // The token expired: the command stays queued; the session renews it and reconnects, and
        // `ready` sends the outbox again.
        this.#transport?.close();
        this.#endTurn?.({ status: 401, reason: err.message });
      } else if (err instanceof HttpError && !err.transient) {
        this.#fail(p.entry.clientId, new CommandError(err.code as ErrorCode, err.message));
      } else {
        this.#retrySoon(err instanceof HttpError && err.retryAfter ? err.retryAfter * 1000 : 2000);
      }
    }
  }

  /** The command over HTTP, in the form the registry gives it (protocol/commands.ts). */
  async #overHttp(cmd: SequencedCommand): Promise<number> {
    const req = commandRequest(this.roomId, cmd);
    const { seq } = await requestJson<{ seq: number }>(this.#opts.conn, req.method, req.path, req.body);
    return seq;
  }

  /** Sends the outbox again after `ms` (a rate limit, or HTTP trouble while the stream is up). */
  #retrySoon(ms: number): void {
    if (this.#retryTimer || this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      if (this.#status.state !== "online") return; // the next ready resends anyway
      for (const p of this.#pending.values()) void this.#transmit(p);
    }, ms);
  }

  #settle(clientId: string, seq: number): void {
    const p = this.#pending.get(clientId);
    if (!p) return;
    this.#pending.delete(clientId);
    void this.#store.remove(this.roomId, clientId);
    p.resolve(seq);
    this.#setStatus({});
  }

  #fail(clientId: string, err: CommandError): void {
    const p = this.#pending.get(clientId);
    if (!p) return;
    this.#pending.delete(clientId);
    void this.#store.remove(this.roomId, clientId);
    p.reject(err);
    this.#setStatus({});
  }

  #setStatus(change: Partial<SessionStatus>): void {
    this.#status = { ...this.#status, ...change, queued: this.#pending.size };
    this.#opts.onStatus?.(this.#status);
  }
}

function newClientId(): string {
  return crypto.randomUUID().replaceAll("-", "");
}
