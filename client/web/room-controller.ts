/**
 * @module One room as the web client holds it: the SDK session (live events, exactly once and in
 * order, and the persisted outbox) feeding a Timeline, plus history loading (older pages, gaps
 * after a jump) and who is typing. Views subscribe to `changed`; they never talk to the network.
 */
import type { HistoryPage, RoomEvent, UserRef } from "../../protocol/index.ts";
import {
  browserSocket,
  DEFAULT_BACKOFF,
  fullJitter,
  HttpError,
  type OutboxStore,
  pollTransport,
  RoomSession,
  type SessionEnded,
  type SessionStatus,
  sseTransport,
  websocketTransport,
} from "../sdk/index.ts";
import { api, conn } from "./api.ts";
import { Emitter } from "./emitter.ts";
import { Timeline } from "./timeline.ts";

const PAGE = 100;
/** How long "X is typing" shows after the last typing signal (the server forwards one per 2 s). */
const TYPING_SHOW_MS = 4_000;

export interface RoomChange {
  /** Rows were added or removed (rebuild the row list). */
  structural: boolean;
  /** Messages whose content changed (re-render those rows). */
  changed: number[];
  /** Events that just arrived live (for notices such as the live region). */
  live: RoomEvent[];
}

export class RoomController {
  readonly roomId: string;
  readonly timeline = new Timeline();
  readonly events = new Emitter<{
    change: RoomChange;
    status: SessionStatus;
    typing: UserRef[];
    /** The user lost access to the room; the session has stopped for good. */
    ended: SessionEnded;
  }>();
  /** Exists from the start, so commands issued while the first page loads are queued, not lost. */
  readonly session: RoomSession;
  #loading: Promise<void> | null = null;
  #closed = false;
  #busy = new Set<string>();
  #typing = new Map<string, { user: UserRef; timer: ReturnType<typeof setTimeout> }>();
  readonly #meId: string;

  constructor(roomId: string, store: OutboxStore, meId: string) {
    this.roomId = roomId;
    this.#meId = meId;
    this.session = new RoomSession({
      conn,
      roomId,
      store,
      transports: [websocketTransport(browserSocket("")), sseTransport(conn), pollTransport(conn)],
      onEvent: (e) => this.#live(e),
      onStatus: (s) => this.events.emit("status", s),
      onTyping: (u) => this.#onTyping(u),
      onEnded: (e) => this.events.emit("ended", e),
    });
  }

  get typing(): UserRef[] {
    return [...this.#typing.values()].map((t) => t.user);
  }

  /** Loads the latest page, then starts the live session after it. Idempotent. */
  start(): Promise<void> {
    this.#loading ??= (async () => {
      // What waits in the outbox shows while the page loads (offline, until the network is back).
      await this.session.restore();
      if (this.session.queued.length > 0)
        this.events.emit("change", { structural: true, changed: [], live: [] });
      const page = await this.#firstPage();
      const changed = this.#applyAll(page.events);
      const last = page.events.at(-1)?.seq ?? 0;
      const first = page.hasMore ? (page.events[0]?.seq ?? 1) : 1;
      if (last === 0) this.timeline.ranges = [[1, 0]];
      else this.timeline.markLoaded(first, last);
      this.events.emit("change", { structural: true, changed, live: [] });
      if (typeof navigator !== "undefined" && !navigator.onLine) this.session.setNetwork(false);
      await this.session.start(last);
    })().catch((err: unknown) => {
      this.#loading = null; // refused (e.g. not joined yet): a later start tries again
      throw err;
    });
    return this.#loading;
  }

  /** The latest page, retried with backoff until it comes (offline, the server restarting):
   * until then the outbox waits, persisted. */
  async #firstPage(): Promise<HistoryPage> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api.latest(this.roomId, PAGE);
      } catch (err) {
        if (this.#closed || (err instanceof HttpError && !err.transient)) throw err;
        await new Promise((resolve) =>
          setTimeout(resolve, fullJitter(attempt, Math.random, DEFAULT_BACKOFF)),
        );
      }
    }
  }

  close(): void {
    this.#closed = true;
    this.session.close();
    for (const t of this.#typing.values()) clearTimeout(t.timer);
  }

  /** Loads the page before the oldest loaded event. */
  loadOlder(before = this.timeline.oldest): Promise<void> {
    return this.#once(`before-${before}`, async () => {
      if (before <= 1) return;
      const page = await api.history(this.roomId, { before }, PAGE);
      const changed = this.#applyAll(page.events);
      const lo = page.hasMore ? (page.events[0]?.seq ?? before) : 1;
      this.timeline.markLoaded(lo, before - 1);
      this.events.emit("change", { structural: true, changed, live: [] });
    });
  }

  /** Loads forward from `after` (filling a gap left by a jump). */
  loadAfter(after: number): Promise<void> {
    return this.#once(`after-${after}`, async () => {
      const page = await api.history(this.roomId, { after }, PAGE);
      const changed = this.#applyAll(page.events);
      const hi = page.events.at(-1)?.seq;
      if (hi !== undefined) this.timeline.markLoaded(after + 1, hi);
      this.events.emit("change", { structural: true, changed, live: [] });
    });
  }

  /** Makes sure `seq` is loaded (a window around it, for a jump from search). */
  async ensureLoaded(seq: number): Promise<void> {
    await this.start();
    if (this.timeline.has(seq)) return;
    const page = await api.history(this.roomId, { before: seq + PAGE / 2 }, PAGE);
    const changed = this.#applyAll(page.events);
    const lo = page.events[0]?.seq;
    const hi = page.events.at(-1)?.seq;
    if (lo !== undefined && hi !== undefined) this.timeline.markLoaded(page.hasMore ? lo : 1, hi);
    this.events.emit("change", { structural: true, changed, live: [] });
  }

  #once(key: string, work: () => Promise<void>): Promise<void> {
    if (this.#busy.has(key)) return Promise.resolve();
    this.#busy.add(key);
    return work().finally(() => this.#busy.delete(key));
  }

  #applyAll(events: RoomEvent[]): number[] {
    const changed = new Set<number>();
    for (const e of events) for (const seq of this.timeline.apply(e)) changed.add(seq);
    return [...changed];
  }

  #live(event: RoomEvent): void {
    const changed = this.timeline.apply(event);
    this.timeline.markLoaded(event.seq, event.seq);
    if (event.kind === "message") this.#stopTyping(event.author.id);
    // A thread reply changes its root's row (the reply count), not the main list's rows.
    const structural =
      (event.kind === "message" && event.threadRoot === undefined) ||
      event.kind === "member_join" ||
      event.kind === "member_leave" ||
      event.kind === "room_update";
    this.events.emit("change", { structural, changed, live: [event] });
  }

  #onTyping(user: UserRef): void {
    if (user.id === this.#meId) return;
    const current = this.#typing.get(user.id);
    if (current) clearTimeout(current.timer);
    const timer = setTimeout(() => this.#stopTyping(user.id), TYPING_SHOW_MS);
    this.#typing.set(user.id, { user, timer });
    this.events.emit("typing", this.typing);
  }

  #stopTyping(userId: string): void {
    const current = this.#typing.get(userId);
    if (!current) return;
    clearTimeout(current.timer);
    this.#typing.delete(userId);
    this.events.emit("typing", this.typing);
  }
}
