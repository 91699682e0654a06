/**
 * @module A room's WebSockets: who is on each (its hibernation attachment), the fan-out of committed
 * events (coalesced per flush, each ack behind its event), flow control (room-flow.ts), typing
 * notices, strikes for malformed frames, and closing. The Room (room.ts) decides what happens; this
 * module owns how it reaches the sockets. Sockets are the runtime's (`ctx.getWebSockets()`), so they
 * survive hibernation; what this module keeps in memory is rebuilt from their attachments.
 */
import type { Limits } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { CLOSE, type ErrorCode, type ServerFrame, utf8Bytes } from "../protocol/index.ts";
import type { Actor } from "./room-commands.ts";
import { type FlowAttachment, FlowState } from "./room-flow.ts";
import type { RoomLog } from "./room-log.ts";

/** Who is on a socket (handed over by the worker in the identity header). */
export interface SocketInfo extends Actor {
  tenantId: string;
  /** When the token that opened the stream expires (ms): the stream ends then with `4402`. Absent
   * for an API token (it lasts until revoked) and for sockets opened before expiry was kept. */
  expiresAt?: number;
}

/** What each socket carries through hibernation (its serialized attachment). Sockets accepted before
 * flow control existed have no flow fields (see `#flowOf`). */
export type SocketAttachment = SocketInfo & Partial<FlowAttachment>;

/** One outgoing `event`/`events` frame, with what flow control counts of it. */
interface OutFrame {
  text: string;
  lastSeq: number;
  bytes: number;
}

/** What the sockets need from their room. */
export interface SocketHost {
  readonly log: RoomLog;
  readonly limits: Limits;
  /** Events below this seq are in R2 only: a replay never reaches them. */
  coldSeq(): number;
  /** A socket closed, ours or the peer's, counted once (`code` as the peer sees it). */
  closed(code: number): void;
  /** Events just written to the sockets, for the room's other streams (SSE, long poll). */
  published(jsons: string[]): void;
}

/** Events read to estimate a woken socket's unconfirmed bytes (room-flow.ts): bounds the cost. */
const FLOW_ESTIMATE_ROWS = 1000;
/** Acks a paused socket may have waiting (a rate-limited sender's burst is far less); past it the
 * socket is closed as slow. */
const MAX_HELD_ACKS = 1000;
/**
 * A commit within this long of the previous flush (plus `BUSY_FLUSH_MS_PER_SOCKET` for each socket
 * that flush wrote to) means the room is busy: coalesce on a timer. workerd's clock stands still
 * while an event runs, so the next frame of a burst reads a time about one flush later: a flush to
 * 500 sockets takes tens of milliseconds, and frames that waited behind it must go out together.
 */
const BUSY_FLUSH_MS = 2;
const BUSY_FLUSH_MS_PER_SOCKET = 0.1;

export class RoomSockets {
  readonly #ctx: DurableObjectState;
  readonly #host: SocketHost;
  /** Attachments deserialized once per wake, not once per frame. */
  readonly #info = new Map<WebSocket, SocketAttachment>();
  /** Flow control per socket (room-flow.ts), rebuilt from the attachment after a wake. */
  readonly #flow = new Map<WebSocket, FlowState>();
  /** Every event up to here has been written to every socket that is not paused. */
  #flushedSeq: number;
  /** Woken sockets' byte estimates, by range: sockets tend to share them. */
  readonly #estimates = new Map<string, number>();
  readonly #strikes = new Map<WebSocket, { count: number; since: number }>();
  /** Sockets whose close was counted (see `forget`). */
  readonly #closed = new WeakSet<WebSocket>();
  readonly #typingAt = new Map<string, number>();
  /** Events committed but not yet sent, and acks waiting behind them (see `flush`). */
  #pending: { seq: number; json: string }[] = [];
  #pendingAcks = new Map<WebSocket, string[]>();
  #flushScheduled = false;
  /** Until when a new commit finds the room busy: the last flush's time plus its window (see
   * `#scheduleFlush`). */
  #busyUntil = 0;
  #count: number | null = null;
  /** The earliest `expiresAt` of the sockets (null: none expires; undefined: not read yet in this
   * life). A socket that closes may leave it early: the alarm then finds nothing due and reads the
   * sockets again. */
  #expiry: number | null | undefined;

  constructor(ctx: DurableObjectState, host: SocketHost) {
    this.#ctx = ctx;
    this.#host = host;
    // Nothing is pending in a new life: whatever was committed went out before the room slept.
    this.#flushedSeq = host.log.lastSeq;
  }

  /** Sockets connected, for the metrics: counted once per life and on each open, recounted after a
   * close (listing every socket on every open made opening N sockets cost N²). */
  get count(): number {
    this.#count ??= this.#ctx.getWebSockets().length;
    return this.#count;
  }

  /** Every event up to here has been written to the sockets and published (`flush`). */
  get flushedSeq(): number {
    return this.#flushedSeq;
  }

  /**
   * Takes a socket the room accepted (`ctx.acceptWebSocket`) and starts its stream after `after`:
   * the replay then `ready` (or as much of the replay as its flow window allows, the rest on
   * resume), or `gap` then `ready` when it is further behind than a replay reaches. `flow`: the
   * client confirms what it reads (`flow=1`).
   */
  open(ws: WebSocket, info: SocketInfo, after: number, flow: boolean): void {
    // The room accepted it (`ctx.acceptWebSocket`) before calling here.
    if (this.#count !== null) this.#count++;
    if (info.expiresAt !== undefined && this.#expiry !== undefined)
      this.#expiry = Math.min(this.#expiry ?? Infinity, info.expiresAt);
    // Everything already committed goes to the existing sockets first, so this socket's replay and
    // the live stream after it neither overlap nor leave a hole.
    this.flush();
    const lastSeq = this.#host.log.lastSeq;
    // Replays come from SQLite only: a client further behind than the cap (or than the cold archive
    // boundary, which is never closer than the cap) pages history instead.
    if (lastSeq - after > this.#host.limits.replayCap || after < this.#host.coldSeq()) {
      this.#admit(ws, info, new FlowState(flow, lastSeq, lastSeq));
      send(ws, { type: "gap", after, lastSeq });
      send(ws, { type: "ready", lastSeq });
    } else {
      const state = new FlowState(flow, after, after);
      state.readyOwed = true;
      this.#admit(ws, info, state);
      this.#catchUp(ws, state);
    }
  }

  /** Who is on `ws` (from its attachment after a wake); undefined for a socket we never admitted. */
  info(ws: WebSocket): SocketAttachment | undefined {
    let info = this.#info.get(ws);
    if (!info) {
      info = (ws.deserializeAttachment() as SocketAttachment | null) ?? undefined;
      if (info) this.#info.set(ws, info);
    }
    return info;
  }

  /** A committed event: it goes to every socket at the next flush. */
  publish(seq: number, json: string): void {
    this.#pending.push({ seq, json });
    this.#scheduleFlush();
  }

  /** An ack for a command from `ws`: sent after the flush that carries its event. */
  queueAck(ws: WebSocket, frame: string): void {
    const acks = this.#pendingAcks.get(ws);
    if (acks) acks.push(frame);
    else this.#pendingAcks.set(ws, [frame]);
    this.#scheduleFlush();
  }

  /** Forwards a typing notice to everyone else in the room (at most one per user per interval). */
  typing(ws: WebSocket, info: SocketInfo): void {
    const now = Date.now();
    const last = this.#typingAt.get(info.id) ?? 0;
    if (now - last < this.#host.limits.typingIntervalMs) return;
    this.#typingAt.set(info.id, now);
    const frame = JSON.stringify({
      type: "typing",
      user: { id: info.id, name: info.name },
    } satisfies ServerFrame);
    for (const other of this.#ctx.getWebSockets()) {
      // A paused socket is not reading: an ephemeral notice is dropped, not queued.
      if (other !== ws && this.info(other)?.id !== info.id && !this.#flow.get(other)?.paused)
        sendRaw(other, frame);
    }
  }

  /** Counts a malformed frame; a socket that keeps sending them is closed with 1008. */
  strike(ws: WebSocket): void {
    const now = Date.now();
    let s = this.#strikes.get(ws);
    if (!s || now - s.since > this.#host.limits.badFrameWindowMs) {
      s = { count: 0, since: now };
      this.#strikes.set(ws, s);
    }
    if (++s.count >= this.#host.limits.badFrameLimit) {
      // Committed events and their acks go out before the close, so a client closed for bad frames
      // does not have to retry commands that were stored.
      this.flush();
      this.close(ws, CLOSE.policy);
    }
  }

  /**
   * `{"type":"received","seq"}`: frees the socket's window up to `seq` and resumes it if paused.
   * Returns "repeat" when it confirms nothing new (the room charges it like a command), or the
   * refusal for a seq never sent on this socket.
   */
  received(ws: WebSocket, seq: number): "ok" | "repeat" | { code: ErrorCode; message: string } {
    const state = this.#flowOf(ws);
    const info = this.info(ws);
    if (!state || !info) return "ok";
    let advanced: boolean;
    try {
      advanced = state.confirm(seq);
    } catch (err) {
      return { code: "bad_request", message: (err as Error).message };
    }
    if (!advanced) return "repeat";
    if (state.paused && !state.over(this.#host.limits)) this.#catchUp(ws, state);
    else this.#save(ws, info, state);
    return "ok";
  }

  /**
   * Closes a socket with one of our codes.
   *
   * Whether the closing handshake completes is not up to the room. In workerd a hibernatable
   * socket's first frame from the peer goes through the runtime's WebSocket pipe in a state
   * (kj's `WebSocketPipeImpl::BlockedReceive::tryPumpFrom`: the object's read loop was already
   * waiting when the upgrade response was coupled to the connection) that, after delivering that
   * first frame, goes on pumping from the connection even when the frame was a Close. So when
   * the room closes a socket whose peer has not sent a single frame yet, the peer's answering
   * Close reaches `webSocketClose` but the connection is not ended: the peer, which by RFC 6455
   * waits for the server to close TCP, stays in CLOSING until its own timeout (Chromium 2 s,
   * Node's `ws` 30 s) or until the runtime drops the socket (about 10 s locally). Once any frame (the auto-answered ping included) has gone through, the
   * pipe stops at a Close as it should, and every close completes in milliseconds. Where the close
   * is issued (an RPC such as `leave`, a socket's own handler, an alarm) does not matter: the 1008
   * of `strike` only ever looked different because it follows the peer's bad frames. Nothing the
   * object can call ends such a connection afterwards (`close()` after our own Close is a no-op,
   * and the runtime keeps the socket until it is garbage-collected), so the fix is on the peer's
   * side of the protocol: clients send `{"type":"ping"}` as their first frame (docs/protocol.md,
   * close codes); the SDK does (client/sdk/transports.ts). test/system/close.test.ts measures it.
   */
  close(ws: WebSocket, how: { code: number; reason: string }): void {
    this.forget(ws, how.code);
    closeQuietly(ws, how.code, how.reason);
  }

  /** When the first socket's token expires (ms), or null when none does: the room's alarm is due
   * then (room-maintenance.ts). Read from the attachments once per life. */
  nextExpiry(): number | null {
    if (this.#expiry === undefined) {
      let earliest = Infinity;
      for (const ws of this.#ctx.getWebSockets()) {
        const at = this.info(ws)?.expiresAt;
        if (at !== undefined && at < earliest) earliest = at;
      }
      this.#expiry = earliest === Infinity ? null : earliest;
    }
    return this.#expiry;
  }

  /** Whether the token that opened `ws` has expired by `now`: its frames are no longer served. */
  expired(info: SocketInfo, now: number): boolean {
    return info.expiresAt !== undefined && info.expiresAt <= now;
  }

  /** Closes the sockets whose token has expired by `now` with `4402` (decision 11): the client gets
   * a fresh token and resumes with `after`. What is committed goes out first. */
  closeExpired(now: number): void {
    let earliest = Infinity;
    const due: WebSocket[] = [];
    for (const ws of this.#ctx.getWebSockets()) {
      const info = this.info(ws);
      if (!info || info.expiresAt === undefined) continue;
      if (this.expired(info, now)) due.push(ws);
      else earliest = Math.min(earliest, info.expiresAt);
    }
    if (due.length > 0) this.flush();
    for (const ws of due) this.close(ws, CLOSE.expired);
    this.#expiry = earliest === Infinity ? null : earliest;
  }

  /** Closes every socket of a user (who left or was removed). What is committed goes out first,
   * so they see their own `member_leave` before the close, as a socket closed by `strike` does. */
  closeUser(userId: string, how: { code: number; reason: string }): void {
    const sockets = this.#ctx.getWebSockets(userId);
    if (sockets.length === 0) return;
    this.flush();
    for (const ws of sockets) this.close(ws, how);
  }

  /** Drops a socket's state as it closes (`code`: ours, or the peer's), and counts the close once: a
   * socket we close is reported closed again when the peer's Close frame arrives. (The set lives in
   * memory, so a hibernation between the two counts that socket twice; rare enough for a metric.) */
  forget(ws: WebSocket, code: number): void {
    this.#count = null;
    this.#info.delete(ws);
    this.#flow.delete(ws);
    this.#strikes.delete(ws);
    this.#pendingAcks.delete(ws);
    if (this.#closed.has(ws)) return;
    this.#closed.add(ws);
    this.#host.closed(code);
  }

  /** Writes what is pending to every socket: the events that became ready together in one frame
   * per socket (per-frame cost dominates fan-out), then each socket's acks. */
  flush(): void {
    this.#flushScheduled = false;
    const now = Date.now();
    this.#busyUntil = now + BUSY_FLUSH_MS;
    if (this.#pending.length === 0 && this.#pendingAcks.size === 0) return;
    const events = this.#pending;
    const acks = this.#pendingAcks;
    this.#pending = [];
    this.#pendingAcks = new Map();
    const limits = this.#host.limits;
    const frames = eventFrames(events, limits);
    const sockets = this.#ctx.getWebSockets();
    this.#busyUntil += sockets.length * BUSY_FLUSH_MS_PER_SOCKET;
    for (const ws of sockets) {
      const state = this.#flowOf(ws);
      if (!state) continue;
      if (!state.paused) this.#write(ws, state, frames);
      const mine = acks.get(ws);
      // An ack goes after its event: a paused socket gets it when it has caught up.
      if (mine && state.paused) state.held.push(...mine);
      else if (mine) for (const ack of mine) sendRaw(ws, ack);
      if (state.stalled(now, limits) || state.held.length > MAX_HELD_ACKS) this.#closeSlow(ws);
    }
    this.#flushedSeq = this.#host.log.lastSeq;
    if (events.length > 0) this.#host.published(events.map((e) => e.json));
  }

  /**
   * A quiet room flushes at the end of the turn that committed: a timer, even of 0 ms, costs a
   * message several milliseconds in workerd. A busy one (the last flush within `BUSY_FLUSH_MS`,
   * more in a room of many sockets) waits for a 0 ms timer, so that the frames arriving meanwhile
   * leave in the same frame per socket: per-frame cost is what fan-out pays.
   */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    if (Date.now() >= this.#busyUntil) queueMicrotask(() => this.flush());
    else setTimeout(() => this.flush(), 0);
  }

  // ---- flow control (room-flow.ts) ---------------------------------------------------------

  #admit(ws: WebSocket, info: SocketInfo, state: FlowState): void {
    this.#flow.set(ws, state);
    this.#save(ws, info, state);
  }

  /** Writes the socket's attachment: its identity and the flow state a wake must find. */
  #save(ws: WebSocket, info: SocketInfo, state: FlowState): void {
    const attachment: SocketAttachment = {
      id: info.id,
      name: info.name,
      role: info.role,
      tenantId: info.tenantId,
      ...(info.expiresAt === undefined ? {} : { expiresAt: info.expiresAt }),
      ...state.attachment(),
    };
    try {
      ws.serializeAttachment(attachment);
    } catch {
      // closed meanwhile
    }
    this.#info.set(ws, attachment);
  }

  /** A socket's flow state; after a wake, rebuilt from its attachment. */
  #flowOf(ws: WebSocket): FlowState | undefined {
    const known = this.#flow.get(ws);
    if (known) return known;
    const info = this.info(ws);
    if (!info) return undefined;
    const state = FlowState.restore(
      {
        flow: info.flow ?? false,
        confirmed: info.confirmed ?? this.#flushedSeq,
        ...(info.paused ? { paused: info.paused } : {}),
      },
      this.#flushedSeq,
      (after, until) => this.#estimate(after, until),
    );
    this.#flow.set(ws, state);
    return state;
  }

  #estimate(after: number, until: number): number {
    if (after >= until) return 0;
    const key = `${after}:${until}`;
    let bytes = this.#estimates.get(key);
    if (bytes === undefined) {
      if (this.#estimates.size > 1000) this.#estimates.clear();
      bytes = this.#host.log.eventBytes(after, until, FLOW_ESTIMATE_ROWS);
      this.#estimates.set(key, bytes);
    }
    return bytes;
  }

  /**
   * Writes a socket everything flushed that it has not been sent yet (its connect replay, or what
   * it missed while paused), straight from the log, until its window is full. Once it has caught
   * up it is live again: `ready` if it is still owed, then the acks held while it was paused.
   */
  #catchUp(ws: WebSocket, state: FlowState): void {
    const until = this.#flushedSeq;
    const behind = until - state.sentSeq;
    const limits = this.#host.limits;
    if (behind > limits.replayCap || (behind > 0 && state.sentSeq < this.#host.coldSeq())) {
      // Further behind than a replay reaches: reconnecting gets it `gap`, and it pages history.
      this.#closeSlow(ws);
      return;
    }
    for (let from = state.sentSeq; from < until; ) {
      const rows = this.#host.log.rowsAfter(from, limits.maxEventsPerFrame, until);
      const last = rows.at(-1);
      if (!last) break;
      if (rows.some((r) => r.json === "")) {
        this.#closeSlow(ws);
        return;
      }
      if (!this.#write(ws, state, eventFrames(rows, limits))) return;
      from = last.seq;
    }
    const wasPaused = state.paused || state.readyOwed;
    state.resume();
    if (state.readyOwed) {
      state.readyOwed = false;
      send(ws, { type: "ready", lastSeq: until });
    }
    for (const ack of state.held) sendRaw(ws, ack);
    state.held = [];
    const info = this.info(ws);
    if (wasPaused && info) this.#save(ws, info, state);
  }

  /** Writes frames the socket has not been sent, until its window is full; false if it then had
   * to stop (paused, or closed for never confirming). */
  #write(ws: WebSocket, state: FlowState, frames: readonly OutFrame[]): boolean {
    for (const frame of frames) {
      if (frame.lastSeq <= state.sentSeq) continue;
      sendRaw(ws, frame.text);
      state.sent(frame.lastSeq, frame.bytes);
      if (state.over(this.#host.limits)) {
        if (!state.confirms) {
          this.#closeSlow(ws);
          return false;
        }
        state.pause(Date.now());
        const info = this.info(ws);
        if (info) this.#save(ws, info, state);
        return false;
      }
    }
    return true;
  }

  /** Closes a socket that stopped reading (4008): the client reconnects with `after`. */
  #closeSlow(ws: WebSocket): void {
    const state = this.#flow.get(ws);
    const info = this.info(ws);
    const meta = this.#host.log.meta();
    if (meta && info && state)
      log({
        event: "slow_consumer_closed",
        room: meta.roomId,
        user: info.id,
        sentSeq: state.sentSeq,
        confirmedSeq: state.confirmedSeq,
        unconfirmedBytes: state.unconfirmed,
        paused: state.paused,
      });
    this.close(ws, CLOSE.slow);
  }
}

/** Consecutive events as `event`/`events` frames of at most `maxEventsPerFrame` events and about
 * `maxOutFrameChars` characters (one event larger than that still goes alone). */
function eventFrames(events: readonly { seq: number; json: string }[], limits: Limits): OutFrame[] {
  const frames: OutFrame[] = [];
  let batch: string[] = [];
  let chars = 0;
  let lastSeq = 0;
  const cut = () => {
    if (batch.length === 0) return;
    const text =
      batch.length === 1
        ? `{"type":"event","event":${batch[0]}}`
        : `{"type":"events","events":[${batch.join(",")}]}`;
    frames.push({ text, lastSeq, bytes: utf8Bytes(text) });
    batch = [];
    chars = 0;
  };
  for (const { seq, json } of events) {
    const full =
      batch.length >= limits.maxEventsPerFrame ||
      (batch.length > 0 && chars + json.length > limits.maxOutFrameChars);
    if (full) cut();
    batch.push(json);
    chars += json.length;
    lastSeq = seq;
  }
  cut();
  return frames;
}

export function send(ws: WebSocket, frame: ServerFrame): void {
  sendRaw(ws, JSON.stringify(frame));
}

export function sendError(
  ws: WebSocket,
  code: ErrorCode,
  message: string,
  clientId?: string,
  retryAfter?: number,
): void {
  const frame: ServerFrame = { type: "error", code, message };
  if (clientId !== undefined) frame.clientId = clientId;
  if (retryAfter !== undefined) frame.retryAfter = retryAfter;
  send(ws, frame);
}

/** A socket may close between our last look and this send; that is not an error of the room. */
function sendRaw(ws: WebSocket, frame: string): void {
  try {
    ws.send(frame);
  } catch {
    // closed or closing: the client resumes with `after` when it reconnects
  }
}

export function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closed
  }
}
