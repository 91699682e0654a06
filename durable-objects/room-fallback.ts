/**
 * @module The room's fallback transports (PROTOCOL.md): Server-Sent Events streams and long-poll
 * waiters, for clients whose WebSockets cannot connect. Same order and the same events as the
 * socket: the room publishes each flushed batch here right after its sockets.
 *
 * SSE frames: `id: <seq>` + `event: event` + `data: <event JSON>` per event (so `Last-Event-ID`
 * resumes exactly), and `event: ready` / `event: gap` (no id) with the socket's frames as data.
 * A stream whose reader falls more than `MAX_BUFFERED_BYTES` behind is closed: the client
 * reconnects with its Last-Event-ID instead of the room buffering without bound.
 */
import type { SseCloseFrame } from "../protocol/index.ts";

const encoder = new TextEncoder();
/** Bytes a slow SSE reader may have unread before its stream is closed. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Comment lines keep idle streams open through proxies that time out silent connections. */
export const SSE_KEEPALIVE_MS = 15_000;

interface Stream {
  userId: string;
  writer: WritableStreamDefaultWriter<Uint8Array>;
}

/** The seq of a stored event JSON (the log writes `seq` first). */
function seqOf(json: string): number {
  return Number(/^\{"seq":(\d+)/.exec(json)?.[1] ?? 0);
}

export function sseEvents(jsons: readonly string[]): string {
  let out = "";
  for (const json of jsons) out += `id: ${seqOf(json)}\nevent: event\ndata: ${json}\n\n`;
  return out;
}

export function sseClose(code: number, reason: string): string {
  return `event: close\ndata: ${JSON.stringify({ type: "close", code, reason } satisfies SseCloseFrame)}\n\n`;
}

export function sseControl(type: "ready" | "gap", frame: object): string {
  return `event: ${type}\ndata: ${JSON.stringify(frame)}\n\n`;
}

export class FallbackTransports {
  readonly #streams = new Set<Stream>();
  #waiters = new Set<() => void>();
  #keepalive: ReturnType<typeof setInterval> | null = null;

  /** Opens an SSE stream for `userId`; `first` (replay, then ready or gap) is written before any
   * live event. Returns the response to hand back. */
  open(userId: string, first: string): Response {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(
      undefined,
      new ByteLengthQueuingStrategy({ highWaterMark: MAX_BUFFERED_BYTES }),
    );
    const stream: Stream = { userId, writer: writable.getWriter() };
    this.#streams.add(stream);
    this.#write(stream, first);
    this.#keepalive ??= setInterval(() => this.#broadcast(": keepalive\n\n"), SSE_KEEPALIVE_MS);
    return new Response(readable, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      },
    });
  }

  /** Events that just went out on the sockets: to every stream, and wake every long poll. */
  publish(jsons: readonly string[]): void {
    if (jsons.length === 0) return;
    if (this.#streams.size > 0) this.#broadcast(sseEvents(jsons));
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves when events are published (or membership changes), or after `ms`. */
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#waiters.add(wake);
    });
  }

  /** The user lost access: their streams end with an `event: close` frame carrying the socket's
   * close code and reason (an SSE stream has no close code of its own, and a client that only saw
   * the stream end would reconnect), and their polls wake to find out. */
  revoke(userId: string, how: { code: number; reason: string }): void {
    const last = sseClose(how.code, how.reason);
    for (const s of this.#streams) {
      if (s.userId !== userId) continue;
      this.#write(s, last);
      this.#close(s);
    }
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const wake of waiters) wake();
  }

  get streams(): number {
    return this.#streams.size;
  }

  #broadcast(text: string): void {
    for (const s of this.#streams) this.#write(s, text);
  }

  #write(stream: Stream, text: string): void {
    const desired = stream.writer.desiredSize;
    if (desired === null || desired < 0) {
      // Gone, or more than the allowance unread: drop what is queued and end the stream; the
      // client resumes with Last-Event-ID.
      this.#close(stream, true);
      return;
    }
    stream.writer.write(encoder.encode(text)).catch(() => this.#close(stream, true));
  }

  #close(stream: Stream, abort = false): void {
    if (!this.#streams.delete(stream)) return;
    (abort ? stream.writer.abort("slow reader") : stream.writer.close()).catch(() => undefined);
    if (this.#streams.size === 0 && this.#keepalive !== null) {
      clearInterval(this.#keepalive);
      this.#keepalive = null;
    }
  }
}
