/**
 * @module A sender that gathers: it sends shortly after the current turn when idle
 * (`IDLE_START_MS`), and otherwise once the send in flight is done and `interval` has passed since
 * it started, so a busy room's commits meanwhile go out in one send, not one each. Also never
 * before `notBefore` (a backoff after a failure). Used by the room's inbox and search feeds
 * (room-inbox.ts, room-search.ts).
 */
/**
 * How long an idle sender waits after the turn that kicked it, in ms. A 0 ms timer fires while that
 * turn's frames are still on their way out of the runtime; locally, where the search part and the
 * presence shards run on the room's thread, their work then landed between one message's frames:
 * at 20 msg/s to 10 readers the last reader got a message 1.4–1.75 ms after the first, against
 * 0.6–0.7 ms for the bare object and for Parley with the search feed off (docs/architecture.md,
 * decision 13). 5 ms lets the frames leave first (3 ms was enough, measured); it is added to an idle
 * room's "findable after the ack" (bound 100 ms) and inbox counts (250 ms) only.
 */
export const IDLE_START_MS = 5;

export class Gather {
  readonly #send: () => Promise<void>;
  readonly #interval: () => number;
  readonly #notBefore: () => number;
  #running: Promise<void> | null = null;
  #again = false;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #lastStart = 0;

  constructor(send: () => Promise<void>, interval: () => number, notBefore: () => number = () => 0) {
    this.#send = send;
    this.#interval = interval;
    this.#notBefore = notBefore;
  }

  /** A send is in flight. */
  get inFlight(): boolean {
    return this.#running !== null;
  }

  /** A send is in flight or waiting for its time. */
  get busy(): boolean {
    return this.#running !== null || this.#timer !== null;
  }

  /** Something is to send: now, or when its time comes. `now` skips the interval (a caller that
   * waits for the send), not `notBefore`. */
  kick(now = false): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    const at = Math.max(now ? 0 : this.#lastStart + this.#interval(), this.#notBefore());
    const wait = at - Date.now();
    // Only a caller that waits sends in its own turn: otherwise even an idle room's send starts on
    // a timer, after the turn that committed has sent its frames, so that it never delays them.
    if (wait > 0 || !now) {
      this.#timer ??= setTimeout(
        () => {
          this.#timer = null;
          this.kick(true);
        },
        Math.max(now ? 0 : IDLE_START_MS, wait),
      );
      return;
    }
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#lastStart = Date.now();
    this.#running = this.#send().finally(() => {
      this.#running = null;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  /** Resolves once nothing is being sent or waiting for the interval (a send waiting for
   * `notBefore` is left to its timer). */
  async settle(): Promise<void> {
    for (;;) {
      if (this.#running) await this.#running;
      else if (this.#timer && this.#notBefore() <= Date.now()) this.kick(true);
      else return;
    }
  }
}
