/**
 * @module The Node tests' one protocol client: a room socket over real TCP (the `ws` package) that
 * records every frame and when it came, confirms what it reads when flow control asks it to (as the
 * SDK does), and lets a test wait for a condition, failing (never hanging) after a deadline. The
 * workerd tests' counterpart is test/frame-socket.ts.
 */
import WebSocket from "ws";
import { PING_FRAME, parseServerFrame, type RoomEvent, type ServerFrame } from "../../protocol/index.ts";
import { RoomReading } from "../room-reading.ts";
import { Waits } from "../waits.ts";

export interface NodeSocketOptions {
  headers: Record<string, string>;
  /** Send the exact ping frame first, as the SDK does (it lets a room's close complete at once). */
  pingFirst?: boolean;
  /** Confirm what it reads (`received`, flow control). */
  confirming?: boolean;
}

export class NodeRoomSocket {
  readonly frames: ServerFrame[] = [];
  /** performance.now() of the last frame. */
  lastFrameAt = 0;
  closed: { code: number; reason: string; at: number } | null = null;
  /** The events read, their bytes, and flow control's receipts (../room-reading.ts). */
  readonly reading: RoomReading;
  readonly pinged: boolean;
  readonly ws: WebSocket;
  readonly #waits = new Waits();

  constructor(url: string, o: NodeSocketOptions) {
    this.reading = new RoomReading(o.confirming ?? false);
    this.pinged = o.pingFirst ?? false;
    this.ws = new WebSocket(url, { headers: o.headers, perMessageDeflate: false });
    if (this.pinged) this.ws.on("open", () => this.ws.send(PING_FRAME));
    this.ws.on("message", (data) => {
      const text = data.toString();
      const frame = parseServerFrame(text);
      if (!frame) throw new Error(`not a frame: ${text.slice(0, 80)}`);
      this.frames.push(frame);
      this.lastFrameAt = performance.now();
      const due = this.reading.read(frame, text);
      if (due) this.send(due);
      this.#waits.wake();
    });
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString(), at: performance.now() };
      this.#waits.wake();
    });
    this.ws.on("error", () => undefined);
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** Confirms every event received so far (`{"type":"received"}`, flow control). */
  confirm(): void {
    const due = this.reading.confirmAll();
    if (due) this.send(due);
  }

  get events(): RoomEvent[] {
    return this.reading.events;
  }

  get eventBytes(): number {
    return this.reading.eventBytes;
  }

  /** Whether it confirms what it reads (flow control); a test stops and resumes it. */
  get confirming(): boolean {
    return this.reading.confirming;
  }

  set confirming(on: boolean) {
    this.reading.confirming = on;
  }

  /** Milliseconds from `since` (a performance.now()) to the `close` event, which must have come. */
  closeAfter(since: number): number {
    if (!this.closed) throw new Error("not closed");
    return Math.round(this.closed.at - since);
  }

  get lastSeq(): number {
    return this.reading.lastSeq;
  }

  /** Waits for `check`; gives up after `ms`, or when the socket closes first while `check` still
   * fails. */
  async until(check: () => boolean, what: string, ms = 30_000): Promise<void> {
    await this.#waits.until(check, what, ms, () => this.closed?.code ?? null);
  }

  /** Replayed, and (for a socket that pinged first) its ping answered: no frame of the connect is
   * left in flight to be mistaken for a later one. */
  ready(): Promise<void> {
    return this.until(
      () =>
        this.frames.some((f) => f.type === "ready") &&
        (!this.pinged || this.frames.some((f) => f.type === "pong")),
      "ready",
    );
  }

  /** Waits until everything the room wrote before now has been read: a ping that is not the exact
   * auto-answered frame goes through the room, so its pong comes after all of it. */
  async drained(): Promise<void> {
    const from = this.frames.length;
    this.send({ type: "ping", probe: from });
    await this.until(() => this.frames.slice(from).some((f) => f.type === "pong"), "the probe's pong");
  }
}
