/**
 * @module The room's fallback transports (docs/protocol.md): Server-Sent Events streams and long-poll
 * waiters, for clients whose WebSockets cannot connect. Same order and the same events as the
 * socket: the room publishes each flushed batch here right after its sockets.
 *
 * SSE frames: `id: <seq>` + `event: event` + `data: <event JSON>` per event (so `Last-Event-ID`
 * resumes exactly), and `event: ready` / `event: gap` (no id) with the socket's frames as data.
 *
 * What a stream may make the room hold is bounded, whoever opens it (flow control, as for sockets
 * in room-flow.ts, with the reader's TCP window as its confirmation):
 * - A stream starts by catching up: its replay (and whatever was published meanwhile) is read from
 *   the log a chunk at a time (`SSE_CHUNK_BYTES` of whole frames), and the next chunk is written
 *   only once the reader has taken the last one. A stream that reads nothing holds one chunk, not
 *   its replay: the events wait in the log.
 * - Once caught up it is live: each published batch is written to it at once, as long as that
 *   leaves at most `unconfirmedStreamBytes` unread. A batch that would not fit pauses it instead:
 *   it catches up from the log again, a chunk at a time.
 * - A stream catching up that takes nothing for `flowStallMs`, or falls further behind than a
 *   replay reaches, is closed: the client resumes with Last-Event-ID (and gets `gap` if need be).
 * - A user holds at most `maxStreamsPerUser` streams and waiting polls in a room.
 */
import type { Limits } from "../config/limits.ts";
import { CLOSE, type Failure, failure, type SseCloseFrame } from "../protocol/index.ts";

const encoder = new TextEncoder();
/** Comment lines keep idle streams open through proxies that time out silent connections. */
export const SSE_KEEPALIVE_MS = 15_000;
/** Bytes of event JSON one catch-up write carries (whole frames; the event that crosses it is the
 * last of the write, and no event reaches 64 KiB). Small against the room's memory however many
 * streams stall, and large enough that a reader catching up takes few round trips. */
export const SSE_CHUNK_BYTES = 128 * 1024;
/** The retryAfter of a refused stream: a slot frees when a stream ends, and one whose client went
 * away without the runtime telling the room is found by the next keepalive write at the latest. */
const STREAM_RETRY_SECONDS = SSE_KEEPALIVE_MS / 1000;

/** What the streams read from their room. */
export interface StreamSource {
  /** Every event up to here has been published to the live streams (RoomSockets.flush). */
  flushedSeq(): number;
  /** Events at or below this seq are in R2 only: a catch-up never reaches them. */
  coldSeq(): number;
  /** Events after `after` up to `until`: at most `maxRows`, and no more than about `maxBytes`. */
  jsonAfter(after: number, until: number, maxRows: number, maxBytes: number): { seq: number; json: string }[];
}

/** One stream as the room accounts for it (for tests and operators). */
export interface StreamState {
  userId: string;
  /** false while it catches up from the log (its replay, or after a pause). */
  live: boolean;
  /** Bytes written to it that its reader has not taken yet. */
  queuedBytes: number;
  /** The most it ever had queued, counted right after each write. */
  peakQueuedBytes: number;
}

interface Stream {
  userId: string;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** The last event written to it (catching up: read from the log after this). */
  sentSeq: number;
  /** Catching up: `ready` is still owed, with this lastSeq (null once sent, or for a `gap` start). */
  readyAt: number | null;
  live: boolean;
  /** When its reader last took a catch-up chunk (or it started catching up). */
  progressAt: number;
  /** Settles when the reader has taken everything written so far (the last write's promise). */
  drained: Promise<void>;
  peak: number;
  /** Ends the stream when the token that opened it expires (null: it does not). */
  expiry: ReturnType<typeof setTimeout> | null;
}

/** The seq of a stored event JSON (the log writes `seq` first). */
function seqOf(json: string): number {
  return Number(/^\{"seq":(\d+)/.exec(json)?.[1] ?? 0);
}

function sseEvent(seq: number, json: string): string {
  return `id: ${seq}\nevent: event\ndata: ${json}\n\n`;
}

export function sseEvents(jsons: readonly string[]): string {
  let out = "";
  for (const json of jsons) out += sseEvent(seqOf(json), json);
  return out;
}

export function sseClose(code: number, reason: string): string {
  return `event: close\ndata: ${JSON.stringify({ type: "close", code, reason } satisfies SseCloseFrame)}\n\n`;
}

export function sseControl(type: "ready" | "gap", frame: object): string {
  return `event: ${type}\ndata: ${JSON.stringify(frame)}\n\n`;
}

export class FallbackTransports {
  readonly #source: StreamSource;
  readonly #limits: Limits;
  readonly #streams = new Set<Stream>();
  /** Waiting long polls: wake → its user. */
  #waiters = new Map<() => void, string>();
  #keepalive: ReturnType<typeof setInterval> | null = null;

  constructor(source: StreamSource, limits: Limits) {
    this.#source = source;
    this.#limits = limits;
  }

  /** Null if `userId` may open one more stream or waiting poll here; else `rate_limited`. */
  admit(userId: string): Failure | null {
    let held = 0;
    for (const s of this.#streams) if (s.userId === userId) held++;
    for (const user of this.#waiters.values()) if (user === userId) held++;
    if (held < this.#limits.maxStreamsPerUser) return null;
    return failure(
      "rate_limited",
      `at most ${this.#limits.maxStreamsPerUser} event streams and long polls per user in a room; close one first`,
      STREAM_RETRY_SECONDS,
    );
  }

  /**
   * Opens an SSE stream for `userId` (the caller has `admit`ted it) and returns the response to hand
   * back. `start.gap`: it gets `gap` and `ready` and goes live at `lastSeq`; otherwise it replays the
   * events after `start.after`, then `ready` with `lastSeq` (which must be the room's flushed seq),
   * then what was published since, then goes live.
   */
  open(
    userId: string,
    start: { after: number; lastSeq: number; gap: boolean },
    expiresAt?: number,
  ): Response {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(
      undefined,
      new ByteLengthQueuingStrategy({ highWaterMark: this.#limits.unconfirmedStreamBytes }),
    );
    const stream: Stream = {
      userId,
      writer: writable.getWriter(),
      sentSeq: start.gap ? start.lastSeq : start.after,
      readyAt: start.gap ? null : start.lastSeq,
      live: start.gap,
      progressAt: Date.now(),
      drained: Promise.resolve(),
      peak: 0,
      expiry: null,
    };
    this.#streams.add(stream);
    // A stream lives no longer than its token: it ends with `event: close` and 4402, and the client
    // resumes with a fresh token and Last-Event-ID. (Streams keep the room awake, so a timer does.)
    if (expiresAt !== undefined) {
      stream.expiry = setTimeout(() => this.#end(stream, CLOSE.expired), Math.max(0, expiresAt - Date.now()));
    }
    // The reader went away (the runtime cancels the body): the slot frees at once, not at the next
    // write. A normal close resolves it, which is just as final.
    stream.writer.closed.then(
      () => this.#close(stream),
      () => this.#close(stream),
    );
    if (start.gap) {
      const { after, lastSeq } = start;
      this.#write(
        stream,
        sseControl("gap", { type: "gap", after, lastSeq }) + sseControl("ready", { type: "ready", lastSeq }),
        lastSeq,
      );
    } else {
      void this.#catchUp(stream);
    }
    this.#keepalive ??= setInterval(() => this.#tick(), SSE_KEEPALIVE_MS);
    return new Response(readable, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      },
    });
  }

  /** Events that just went out on the sockets: to every live stream, and wake every long poll.
   * Streams catching up read them from the log (and are closed if that leaves them too far behind). */
  publish(jsons: readonly string[]): void {
    if (jsons.length === 0) return;
    if (this.#streams.size > 0) {
      const text = sseEvents(jsons);
      const lastSeq = seqOf(jsons[jsons.length - 1] ?? "");
      const now = Date.now();
      for (const s of this.#streams) {
        if (s.live) this.#write(s, text, lastSeq);
        else this.#checkBehind(s, now);
      }
    }
    this.#wakeAll();
  }

  /** Resolves when events are published (or membership changes), or after `ms`. The caller has
   * `admit`ted `userId`: a waiting poll holds one of the user's slots. */
  wait(userId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#waiters.set(wake, userId);
    });
  }

  /** The user lost access: their streams end (`#end`), and their polls wake to find out. */
  revoke(userId: string, how: { code: number; reason: string }): void {
    for (const s of this.#streams) if (s.userId === userId) this.#end(s, how);
    this.#wakeAll();
  }

  /** Ends a stream with an `event: close` frame carrying a socket's close code and reason (an SSE
   * stream has no close code of its own, and a client that only saw the stream end would
   * reconnect). The frame is written past flow control: it is the stream's last, a few dozen bytes,
   * and the writer closes right after. */
  #end(stream: Stream, how: { code: number; reason: string }): void {
    stream.writer.write(encoder.encode(sseClose(how.code, how.reason))).catch(() => undefined);
    this.#close(stream);
  }

  get streams(): number {
    return this.#streams.size;
  }

  /** Each open stream as the room accounts for it. */
  state(): StreamState[] {
    return [...this.#streams].map((s) => ({
      userId: s.userId,
      live: s.live,
      queuedBytes: this.#queued(s),
      peakQueuedBytes: s.peak,
    }));
  }

  #wakeAll(): void {
    const waiters = this.#waiters;
    this.#waiters = new Map();
    for (const wake of waiters.keys()) wake();
  }

  /** Every keepalive period: a comment line to live streams (one catching up is being written, or
   * is stalled), and the stall rule for the others even in a room with no events. */
  #tick(): void {
    const now = Date.now();
    for (const s of this.#streams) {
      if (s.live) this.#write(s, ": keepalive\n\n", s.sentSeq);
      else this.#checkBehind(s, now);
    }
  }

  /** A stream catching up whose reader took nothing for the stall time, or that is further behind
   * than a replay reaches, is closed; it resumes with Last-Event-ID. */
  #checkBehind(stream: Stream, now: number): void {
    if (
      now - stream.progressAt >= this.#limits.flowStallMs ||
      this.#source.flushedSeq() - stream.sentSeq > this.#limits.replayCap
    ) {
      this.#close(stream, true);
    }
  }

  /**
   * Writes the stream its replay and whatever it missed, a chunk at a time from the log, each write
   * once the reader has taken the one before (a TransformStream resolves a write when its reader
   * pulls it), then makes it live. Publishing cannot interleave: the check that it has caught up to
   * the flushed seq and the switch to live happen in one turn.
   */
  async #catchUp(stream: Stream): Promise<void> {
    try {
      // After a pause, what it was written live goes first: the room then holds at most one chunk.
      await stream.drained;
      stream.progressAt = Date.now();
      while (this.#streams.has(stream)) {
        const text = this.#nextChunk(stream);
        if (text === null) {
          stream.live = true;
          return;
        }
        if (text === "") {
          // Further behind than a replay reaches, or into the cold range: it resumes with `gap`.
          this.#close(stream, true);
          return;
        }
        const bytes = encoder.encode(text);
        const written = stream.writer.write(bytes);
        this.#account(stream);
        await written;
        stream.progressAt = Date.now();
      }
    } catch {
      this.#close(stream, true);
    }
  }

  /** The next chunk of a catching-up stream (advancing its `sentSeq`, and `ready` once due); null
   * when it has caught up; "" when it fell too far behind. */
  #nextChunk(stream: Stream): string | null {
    const flushed = this.#source.flushedSeq();
    const until = stream.readyAt ?? flushed;
    if (flushed - stream.sentSeq > this.#limits.replayCap) return "";
    let text = "";
    if (stream.sentSeq < until) {
      if (stream.sentSeq < this.#source.coldSeq()) return "";
      const rows = this.#source.jsonAfter(
        stream.sentSeq,
        until,
        this.#limits.maxEventsPerFrame,
        SSE_CHUNK_BYTES,
      );
      if (rows.length === 0 || rows.some((r) => r.json === "")) return "";
      for (const row of rows) text += sseEvent(row.seq, row.json);
      stream.sentSeq = (rows.at(-1) as { seq: number }).seq;
    }
    if (stream.readyAt !== null && stream.sentSeq >= stream.readyAt) {
      text += sseControl("ready", { type: "ready", lastSeq: stream.readyAt });
      stream.readyAt = null;
    }
    return text === "" ? null : text;
  }

  /** A live write of frames up to `lastSeq`. If it would leave more than the stream's allowance
   * unread, the stream is paused instead: it catches up from the log as its reader takes chunks. */
  #write(stream: Stream, text: string, lastSeq: number): void {
    const desired = stream.writer.desiredSize;
    if (desired === null) {
      this.#close(stream, true);
      return;
    }
    const bytes = encoder.encode(text);
    if (bytes.byteLength > desired) {
      stream.live = false;
      stream.progressAt = Date.now();
      void this.#catchUp(stream);
      return;
    }
    stream.drained = stream.writer.write(bytes);
    stream.drained.catch(() => this.#close(stream, true));
    stream.sentSeq = lastSeq;
    this.#account(stream);
  }

  #queued(stream: Stream): number {
    return this.#limits.unconfirmedStreamBytes - (stream.writer.desiredSize ?? 0);
  }

  #account(stream: Stream): void {
    stream.peak = Math.max(stream.peak, this.#queued(stream));
  }

  #close(stream: Stream, abort = false): void {
    if (!this.#streams.delete(stream)) return;
    if (stream.expiry !== null) clearTimeout(stream.expiry);
    (abort ? stream.writer.abort("slow reader") : stream.writer.close()).catch(() => undefined);
    if (this.#streams.size === 0 && this.#keepalive !== null) {
      clearInterval(this.#keepalive);
      this.#keepalive = null;
    }
  }
}
