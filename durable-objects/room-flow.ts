/**
 * @module Flow control of room sockets (docs/protocol.md, "Flow control"). A Durable Object cannot
 * see how much of what it sent a socket is still waiting in buffers (the runtime has no
 * `bufferedAmount`), and a client that stops reading would otherwise make the room buffer without
 * bound. So the room counts, per socket, the bytes of event frames it has written beyond what the
 * client has confirmed reading (`{"type":"received","seq"}`), and stops writing at a limit.
 *
 * - A socket opened with `flow=1` promises confirmations. Past `flowWindowBytes` it is *paused*:
 *   events wait in the log (SQLite), not in memory, and the next confirmation resumes it from its
 *   last seq. One paused longer than `flowStallMs` is closed (4008); the client resumes with `after`.
 * - A socket without `flow=1` (a v1 client that predates flow control) never confirms, so nothing tells the room it
 *   reads: after `unconfirmedStreamBytes` it is closed (4008) and resumes with `after`.
 *
 * This module owns the bookkeeping; the room does the sending (room.ts, "fan-out").
 */

/** What a socket's attachment carries for flow control through hibernation. */
export interface FlowAttachment {
  /** Connected with `flow=1`: confirms what it reads, and is paused rather than closed. */
  flow: boolean;
  /** The last seq the client confirmed (its `after` on connect). */
  confirmed: number;
  /** Set while paused: the last seq written to it, since when, and whether `ready` is still owed. */
  paused?: { seq: number; since: number; ready: boolean };
}

export interface FlowLimits {
  flowWindowBytes: number;
  flowStallMs: number;
  unconfirmedStreamBytes: number;
}

/** Most frame marks a socket keeps (see `#marks`). */
const MAX_MARKS = 32;

export class FlowState {
  /** Last seq written to the socket. */
  sentSeq: number;
  /** Last seq the client confirmed. */
  confirmedSeq: number;
  /** Event-frame bytes written since the socket opened (or since the room woke), and how many of
   * them the client has confirmed. */
  #total: number;
  #freed = 0;
  /** After each frame: its last seq and `#total`, flat pairs from `#head`, to free by confirmation.
   * At most `MAX_MARKS` of them: past that every other one is dropped (the newest always kept), so
   * a confirmation may free a little less than it could (never more), and a socket that seldom or
   * never confirms holds a few hundred bytes, not one pair per frame for the connection's life. */
  #marks: number[] = [];
  #head = 0;
  /** Paused since (ms), or null while flowing. */
  pausedSince: number | null = null;
  /** `ready` is owed: the connect replay was paused before it finished. */
  readyOwed = false;
  /** Acks that arrived while paused: each goes after its event, so after the catch-up. */
  held: string[] = [];
  /** Connected with `flow=1`: confirms what it reads, and is paused rather than closed. */
  readonly confirms: boolean;

  constructor(confirms: boolean, sentSeq: number, confirmedSeq: number, unconfirmedBytes = 0) {
    this.confirms = confirms;
    this.sentSeq = sentSeq;
    this.confirmedSeq = confirmedSeq;
    // Bytes written before a hibernation have no marks: they are freed only by a confirmation of
    // `sentSeq` or later (conservative, never unbounded).
    this.#total = unconfirmedBytes;
    if (unconfirmedBytes > 0) this.#marks.push(sentSeq, unconfirmedBytes);
  }

  get unconfirmed(): number {
    return this.#total - this.#freed;
  }

  get paused(): boolean {
    return this.pausedSince !== null;
  }

  /** The limit past which this socket is paused (or, if it never confirms, closed). */
  limit(limits: FlowLimits): number {
    return this.confirms ? limits.flowWindowBytes : limits.unconfirmedStreamBytes;
  }

  over(limits: FlowLimits): boolean {
    return this.unconfirmed > this.limit(limits);
  }

  /** Records a frame of `bytes` whose last event is `lastSeq`. */
  sent(lastSeq: number, bytes: number): void {
    this.sentSeq = lastSeq;
    this.#total += bytes;
    this.#marks.push(lastSeq, this.#total);
    if (this.#marks.length - this.#head > 2 * MAX_MARKS) this.#thin();
  }

  /** Marks kept (for tests). */
  get marks(): number {
    return (this.#marks.length - this.#head) / 2;
  }

  /** Keeps every other live mark, counted from the newest, so the newest stays. */
  #thin(): void {
    const live = this.#marks;
    const n = (live.length - this.#head) / 2;
    const kept: number[] = [];
    for (let k = (n - 1) % 2; k < n; k += 2) {
      const i = this.#head + 2 * k;
      kept.push(live[i] as number, live[i + 1] as number);
    }
    this.#marks = kept;
    this.#head = 0;
  }

  /**
   * The client has read every event up to `seq`. Returns false when that is nothing new, and throws
   * a RangeError for a seq never written to this socket (the caller refuses the frame).
   */
  confirm(seq: number): boolean {
    if (seq > this.sentSeq)
      throw new RangeError(`seq ${seq} was not sent on this socket (${this.sentSeq} was)`);
    if (seq <= this.confirmedSeq) return false;
    this.confirmedSeq = seq;
    const marks = this.#marks;
    while (this.#head < marks.length && (marks[this.#head] as number) <= seq) {
      this.#freed = marks[this.#head + 1] as number;
      this.#head += 2;
    }
    // Drop freed marks now and then, not on every confirmation.
    if (this.#head > 64 && this.#head * 2 > marks.length) {
      this.#marks = marks.slice(this.#head);
      this.#head = 0;
    }
    return true;
  }

  pause(now: number): void {
    if (this.pausedSince === null) this.pausedSince = now;
  }

  resume(): void {
    this.pausedSince = null;
  }

  stalled(now: number, limits: FlowLimits): boolean {
    return this.pausedSince !== null && now - this.pausedSince > limits.flowStallMs;
  }

  /** The attachment fields that must survive a hibernation. */
  attachment(): FlowAttachment {
    const a: FlowAttachment = { flow: this.confirms, confirmed: this.confirmedSeq };
    if (this.pausedSince !== null)
      a.paused = { seq: this.sentSeq, since: this.pausedSince, ready: this.readyOwed };
    return a;
  }

  /**
   * Rebuilds a socket's state after the room woke from hibernation: a paused socket stands where it
   * was paused; any other has been sent everything flushed before the room slept (`flushedSeq`).
   * `bytesBetween` sums the log's event bytes in (after, until].
   */
  static restore(
    a: FlowAttachment,
    flushedSeq: number,
    bytesBetween: (after: number, until: number) => number,
  ): FlowState {
    const sentSeq = a.paused ? a.paused.seq : flushedSeq;
    const confirmed = Math.min(a.confirmed, sentSeq);
    const state = new FlowState(a.flow, sentSeq, confirmed, bytesBetween(confirmed, sentSeq));
    if (a.paused) {
      state.pausedSince = a.paused.since;
      state.readyOwed = a.paused.ready;
    }
    return state;
  }
}
