/**
 * @module Activity notices from a room to the presence shards, coalesced: however many events a
 * room gets within one window, each shard hears one notice with the latest seq and everyone
 * mentioned since the last notice. Pure bookkeeping; the room object owns the timer.
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
