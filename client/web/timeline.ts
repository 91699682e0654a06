/**
 * @module One room's timeline as the web client shows it: the room's events folded into messages
 * (edits, deletes, reactions and pins applied to their targets, replies counted on their thread roots),
 * plus which stretches of the log are loaded. Pure (no DOM), so it is unit-tested directly.
 *
 * Events arrive in any order: live ones in seq order, history pages backwards, a jump from search
 * somewhere in the middle. Folding is therefore order-independent: the latest edit by seq wins, a
 * delete wins, and for each (emoji, user) the reaction toggle with the highest seq decides, as does
 * the pin event with the highest seq for a message. A
 * modification whose target is not loaded yet waits and applies when the target arrives.
 */
import type { AttachmentRef, RoomEvent, UserRef } from "../../protocol/index.ts";

export interface MessageView {
  seq: number;
  ts: number;
  author: UserRef;
  text: string;
  edited: boolean;
  deleted: boolean;
  threadRoot?: number;
  attachments: AttachmentRef[];
  /** emoji → the users who reacted with it, in first-reaction order. */
  reactions: Map<string, UserRef[]>;
  /** Replies in this message's thread (loaded ones). */
  replies: number[];
  /** Who pinned the message to the room, while it is pinned. */
  pinnedBy?: UserRef;
}

/** A non-message event worth a line in the list (joins, leaves, renames). */
export interface NoticeView {
  seq: number;
  ts: number;
  text: string;
}

export type Row =
  | { kind: "start"; key: string }
  | { kind: "more"; key: string; before: number }
  | { kind: "gap"; key: string; after: number; before: number }
  | { kind: "day"; key: string; label: string }
  | { kind: "message"; key: string; seq: number; continued: boolean }
  | { kind: "notice"; key: string; seq: number };

type Toggle = { seq: number; on: boolean; user: UserRef };

/** Messages from the same author within this time read as one block (no repeated header). */
const CONTINUE_MS = 5 * 60_000;

export class Timeline {
  readonly messages = new Map<number, MessageView>();
  readonly notices = new Map<number, NoticeView>();
  /** Loaded stretches of the log, sorted and disjoint: [lo, hi] inclusive. */
  ranges: Array<[number, number]> = [];
  /** Top-level items (messages not in a thread, notices) by seq. */
  #order: number[] = [];
  #edits = new Map<number, { seq: number; text: string }>();
  #deleted = new Set<number>();
  #toggles = new Map<number, Map<string, Toggle>>();
  #pins = new Map<number, Toggle>();
  #replies = new Map<number, Set<number>>();
  #version = 0;

  /** Bumped by every change, so views can skip work when nothing changed. */
  get version(): number {
    return this.#version;
  }

  get head(): number {
    return this.ranges.at(-1)?.[1] ?? 0;
  }

  get oldest(): number {
    return this.ranges[0]?.[0] ?? 0;
  }

  has(seq: number): boolean {
    return this.ranges.some(([lo, hi]) => seq >= lo && seq <= hi);
  }

  /** Records that every event in [lo, hi] is loaded (after applying them). */
  markLoaded(lo: number, hi: number): void {
    if (hi < lo) return;
    const all = [...this.ranges, [lo, hi] as [number, number]].sort((a, b) => a[0] - b[0]);
    const merged: Array<[number, number]> = [];
    for (const r of all) {
      const last = merged.at(-1);
      if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
      else merged.push([r[0], r[1]]);
    }
    this.ranges = merged;
    this.#version++;
  }

  /** Folds one event in; returns the seqs of the messages whose view changed. */
  apply(event: RoomEvent): number[] {
    this.#version++;
    switch (event.kind) {
      case "message": {
        if (this.messages.has(event.seq)) return [];
        const view: MessageView = {
          seq: event.seq,
          ts: event.ts,
          author: event.author,
          text: event.text,
          edited: false,
          deleted: event.deleted === true,
          attachments: event.attachments ?? [],
          reactions: new Map(),
          replies: [...(this.#replies.get(event.seq) ?? [])].sort((a, b) => a - b),
          ...(event.threadRoot !== undefined ? { threadRoot: event.threadRoot } : {}),
        };
        this.messages.set(event.seq, view);
        this.#refold(view);
        if (event.threadRoot === undefined) this.#insert(event.seq);
        else return [event.seq, ...this.#addReply(event.threadRoot, event.seq)];
        return [event.seq];
      }
      case "edit": {
        const current = this.#edits.get(event.target);
        if (!current || current.seq < event.seq)
          this.#edits.set(event.target, { seq: event.seq, text: event.text });
        return this.#touch(event.target);
      }
      case "delete":
        this.#deleted.add(event.target);
        return this.#touch(event.target);
      case "reaction": {
        const toggles = this.#toggles.get(event.target) ?? new Map<string, Toggle>();
        this.#toggles.set(event.target, toggles);
        const key = `${event.emoji}\n${event.author.id}`;
        const current = toggles.get(key);
        if (!current || current.seq < event.seq)
          toggles.set(key, { seq: event.seq, on: event.on, user: event.author });
        return this.#touch(event.target);
      }
      case "pin": {
        const current = this.#pins.get(event.target);
        if (!current || current.seq < event.seq)
          this.#pins.set(event.target, { seq: event.seq, on: event.on, user: event.author });
        return this.#touch(event.target);
      }
      case "member_join":
      case "member_leave":
      case "room_update": {
        if (this.notices.has(event.seq)) return [];
        this.notices.set(event.seq, { seq: event.seq, ts: event.ts, text: noticeText(event) });
        this.#insert(event.seq);
        return [];
      }
      default:
        // An expired event, or a kind this build does not know: a newer server may append kinds an
        // open tab (or an installed app) predates, and a client ignores them (docs/protocol.md).
        return [];
    }
  }

  /** The list's rows: a top marker, day separators, messages, notices, and gaps between ranges. */
  rows(): Row[] {
    const rows: Row[] = [];
    const first = this.ranges[0];
    if (!first) return rows;
    rows.push(
      first[0] <= 1 ? { kind: "start", key: "start" } : { kind: "more", key: "more", before: first[0] },
    );
    let range = 0;
    let lastDay = "";
    let prev: MessageView | undefined;
    for (const seq of this.#order) {
      while (range < this.ranges.length - 1 && seq > (this.ranges[range] as [number, number])[1]) {
        const [, hi] = this.ranges[range] as [number, number];
        const [lo] = this.ranges[range + 1] as [number, number];
        rows.push({ kind: "gap", key: `gap-${hi}`, after: hi, before: lo });
        range++;
        prev = undefined;
        lastDay = "";
      }
      const item = this.messages.get(seq) ?? this.notices.get(seq);
      if (!item) continue;
      const day = dayKey(item.ts);
      if (day !== lastDay) {
        rows.push({ kind: "day", key: `day-${seq}`, label: dayLabel(item.ts) });
        lastDay = day;
        prev = undefined;
      }
      const message = this.messages.get(seq);
      if (message) {
        const continued =
          prev !== undefined && prev.author.id === message.author.id && message.ts - prev.ts < CONTINUE_MS;
        rows.push({ kind: "message", key: `m-${seq}`, seq, continued });
        prev = message;
      } else {
        rows.push({ kind: "notice", key: `n-${seq}`, seq });
        prev = undefined;
      }
    }
    return rows;
  }

  /** A thread: its root (if loaded) and its loaded replies, in order. */
  thread(root: number): MessageView[] {
    const out: MessageView[] = [];
    const r = this.messages.get(root);
    if (r) out.push(r);
    for (const seq of [...(this.#replies.get(root) ?? [])].sort((a, b) => a - b)) {
      const m = this.messages.get(seq);
      if (m) out.push(m);
    }
    return out;
  }

  #insert(seq: number): void {
    const order = this.#order;
    if (order.length === 0 || (order.at(-1) as number) < seq) {
      order.push(seq);
      return;
    }
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((order[mid] as number) < seq) lo = mid + 1;
      else hi = mid;
    }
    if (order[lo] !== seq) order.splice(lo, 0, seq);
  }

  #addReply(root: number, seq: number): number[] {
    const set = this.#replies.get(root) ?? new Set<number>();
    this.#replies.set(root, set);
    set.add(seq);
    const rootView = this.messages.get(root);
    if (!rootView) return [];
    rootView.replies = [...set].sort((a, b) => a - b);
    return [root];
  }

  #touch(target: number): number[] {
    const view = this.messages.get(target);
    if (!view) return [];
    this.#refold(view);
    return [target];
  }

  /** Applies everything known about a message's modifications to its view. */
  #refold(view: MessageView): void {
    const edit = this.#edits.get(view.seq);
    if (edit) {
      view.text = edit.text;
      view.edited = true;
    }
    if (this.#deleted.has(view.seq)) {
      view.deleted = true;
    }
    if (view.deleted) {
      view.text = "";
      view.attachments = [];
    }
    const reactions = new Map<string, UserRef[]>();
    const toggles = [...(this.#toggles.get(view.seq)?.entries() ?? [])].sort((a, b) => a[1].seq - b[1].seq);
    for (const [key, t] of toggles) {
      if (!t.on || view.deleted) continue;
      const emoji = key.slice(0, key.indexOf("\n"));
      const users = reactions.get(emoji) ?? [];
      users.push(t.user);
      reactions.set(emoji, users);
    }
    view.reactions = reactions;
    const pin = this.#pins.get(view.seq);
    if (pin?.on && !view.deleted) view.pinnedBy = pin.user;
    else delete view.pinnedBy;
  }
}

function noticeText(event: RoomEvent): string {
  switch (event.kind) {
    case "member_join":
      return event.author.id === event.user.id
        ? `${event.user.name} joined`
        : `${event.author.name} added ${event.user.name}`;
    case "member_leave":
      return event.author.id === event.user.id
        ? `${event.user.name} left`
        : `${event.author.name} removed ${event.user.name}`;
    case "room_update": {
      const parts = [
        event.name !== undefined ? `renamed the room to “${event.name}”` : "",
        event.topic !== undefined ? `set the topic to “${event.topic}”` : "",
      ].filter(Boolean);
      return `${event.author.name} ${parts.join(" and ")}`;
    }
    default:
      return "";
  }
}

function dayKey(ts: number): string {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ts: number, now = Date.now()): string {
  const key = dayKey(ts);
  if (key === dayKey(now)) return "Today";
  if (key === dayKey(now - 86_400_000)) return "Yesterday";
  return new Date(ts).toLocaleDateString(undefined, {
    weekday: "long",
    month: "long",
    day: "numeric",
    ...(new Date(ts).getFullYear() !== new Date(now).getFullYear() ? { year: "numeric" } : {}),
  });
}
