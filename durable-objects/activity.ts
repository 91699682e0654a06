/**
 * @module Activity notices to a user's presence sessions (`{"type":"activity"}`), coalesced per room:
 * the presence shard tells its members' sessions once a room's push to their inbox has applied new
 * events (inbox-store.ts), so a room list read on a notice already counts them. The first notice
 * after a quiet spell goes at once; within the window after it, however many pushes come, one more
 * notice at its end with the latest seq and everyone mentioned meanwhile.
 */
export interface ActivityNotice {
  lastSeq: number;
  mentioned: string[];
}

export class ActivityBatch {
  #lastSeq = 0;
  #mentioned = new Set<string>();
  #pending = false;

  /** Records an event; true when it opened a new batch (the caller starts the window then). */
  add(seq: number, mentioned: readonly string[] = []): boolean {
    const opened = !this.#pending;
    this.#pending = true;
    this.#lastSeq = Math.max(this.#lastSeq, seq);
    for (const id of mentioned) this.#mentioned.add(id);
    return opened;
  }

  /** Closes the batch: its notice, or null if nothing happened. */
  take(): ActivityNotice | null {
    if (!this.#pending) return null;
    const notice = { lastSeq: this.#lastSeq, mentioned: [...this.#mentioned] };
    this.#pending = false;
    this.#mentioned = new Set();
    return notice;
  }
}

type Timer = ReturnType<typeof setTimeout>;

/**
 * One window per room with notices: `news` sends at once when the room has no window open and opens
 * one; news within it is gathered and sent when it closes, which opens the next. A window that
 * closes with nothing gathered ends. So a session hears at most one notice per room per window, and
 * the last news of a burst at most one window late. The timers run only while a room has news.
 */
export class ActivityWindows {
  readonly #windowMs: () => number;
  readonly #send: (room: string, notice: ActivityNotice) => void;
  readonly #schedule: (fn: () => void, ms: number) => Timer;
  readonly #windows = new Map<string, ActivityBatch>();

  constructor(
    windowMs: () => number,
    send: (room: string, notice: ActivityNotice) => void,
    schedule: (fn: () => void, ms: number) => Timer = setTimeout,
  ) {
    this.#windowMs = windowMs;
    this.#send = send;
    this.#schedule = schedule;
  }

  news(room: string, notice: ActivityNotice): void {
    const open = this.#windows.get(room);
    if (open) {
      open.add(notice.lastSeq, notice.mentioned);
      return;
    }
    this.#send(room, notice);
    this.#open(room);
  }

  #open(room: string): void {
    this.#windows.set(room, new ActivityBatch());
    this.#schedule(() => {
      const gathered = this.#windows.get(room)?.take();
      this.#windows.delete(room);
      if (gathered) {
        this.#send(room, gathered);
        this.#open(room);
      }
    }, this.#windowMs());
  }
}
