/**
 * @module One room as the web client holds it: the SDK session (live events, exactly once and in
 * order, and the persisted outbox) feeding a Timeline, plus history loading (older pages, gaps
 * after a jump) and who is typing. Views subscribe to `changed`; they never talk to the network.
 */
import type { RoomEvent, UserRef } from "../../protocol/index.ts";
import {
  browserSocket,
  type OutboxStore,
  pollTransport,
  RoomSession,
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
  /** Message seqs whose content changed (re-render only those), or "all" for structure changes. */
  changed: number[] | "all";
  /** Events that just arrived live (for notices such as the live region). */
  live: RoomEvent[];
}

export class RoomController {
  readonly roomId: string;
  readonly timeline = new Timeline();
  readonly events = new Emitter<{ change: RoomChange; status: SessionStatus; typing: UserRef[] }>();
  session: RoomSession | null = null;
  #loading: Promise<void> | null = null;
  #busy = new Set<string>();
  #typing = new Map<string, { user: UserRef; timer: ReturnType<typeof setTimeout> }>();
  readonly #store: OutboxStore;
  readonly #meId: string;

  constructor(roomId: string, store: OutboxStore, meId: string) {
    this.roomId = roomId;
    this.#store = store;
    this.#meId = meId;
  }

  get typing(): UserRef[] {
    return [...this.#typing.values()].map((t) => t.user);
  }

  /** Loads the latest page, then starts the live session after it. Idempotent. */
  start(): Promise<void> {
    this.#loading ??= (async () => {
      const page = await api.latest(this.roomId, PAGE);
      for (const e of page.events) this.timeline.apply(e);
      const last = page.events.at(-1)?.seq ?? 0;
      const first = page.hasMore ? (page.events[0]?.seq ?? 1) : 1;
      if (last === 0) this.timeline.ranges = [[1, 0]];
      else this.timeline.markLoaded(first, last);
      this.events.emit("change", { changed: "all", live: [] });
      this.session = new RoomSession({
        conn,
        roomId: this.roomId,
        store: this.#store,
        after: last,
        transports: [websocketTransport(browserSocket("")), sseTransport(conn), pollTransport(conn)],
        onEvent: (e) => this.#live(e),
        onStatus: (s) => this.events.emit("status", s),
        onTyping: (u) => this.#onTyping(u),
      });
      await this.session.start();
      if (typeof navigator !== "undefined" && !navigator.onLine) this.session.setNetwork(false);
    })();
    return this.#loading;
  }

  close(): void {
    this.session?.close();
    for (const t of this.#typing.values()) clearTimeout(t.timer);
  }

  /** Loads the page before the oldest loaded event. */
  loadOlder(before = this.timeline.oldest): Promise<void> {
    return this.#once(`before-${before}`, async () => {
      if (before <= 1) return;
      const page = await api.history(this.roomId, { before }, PAGE);
      for (const e of page.events) this.timeline.apply(e);
      const lo = page.hasMore ? (page.events[0]?.seq ?? before) : 1;
      this.timeline.markLoaded(lo, before - 1);
      this.events.emit("change", { changed: "all", live: [] });
    });
  }

  /** Loads forward from `after` (filling a gap left by a jump). */
  loadAfter(after: number): Promise<void> {
    return this.#once(`after-${after}`, async () => {
      const page = await api.history(this.roomId, { after }, PAGE);
      for (const e of page.events) this.timeline.apply(e);
      const hi = page.events.at(-1)?.seq;
      if (hi !== undefined) this.timeline.markLoaded(after + 1, hi);
      this.events.emit("change", { changed: "all", live: [] });
    });
  }

  /** Makes sure `seq` is loaded (a window around it, for a jump from search). */
  async ensureLoaded(seq: number): Promise<void> {
    await this.start();
    if (this.timeline.has(seq)) return;
    const page = await api.history(this.roomId, { before: seq + PAGE / 2 }, PAGE);
    for (const e of page.events) this.timeline.apply(e);
    const lo = page.events[0]?.seq;
    const hi = page.events.at(-1)?.seq;
    if (lo !== undefined && hi !== undefined) this.timeline.markLoaded(page.hasMore ? lo : 1, hi);
    this.events.emit("change", { changed: "all", live: [] });
  }

  #once(key: string, work: () => Promise<void>): Promise<void> {
    if (this.#busy.has(key)) return Promise.resolve();
    this.#busy.add(key);
    return work().finally(() => this.#busy.delete(key));
  }

  #live(event: RoomEvent): void {
    const changed = this.timeline.apply(event);
    this.timeline.markLoaded(event.seq, event.seq);
    if (event.kind === "message") this.#stopTyping(event.author.id);
    const structural = event.kind === "message" || event.kind.startsWith("member") || event.kind === "room_update";
    this.events.emit("change", { changed: structural ? "all" : changed, live: [event] });
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
