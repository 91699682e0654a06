/**
 * @module How a room keeps its members' inboxes current (docs/architecture.md, decisions 6 and 7):
 * the counts `GET /api/rooms` reads from each user's presence shard (inbox-store.ts), and the
 * coalescing of socket `read` frames.
 *
 * Pushes are derived from the log: a push to a shard covers `(synced, lastSeq]`, what this instance
 * knows the shard has through, and carries the messages' authors and mentions in that range, the
 * messages deleted in it and the window floor, plus absolute markers and member snapshots. One
 * cycle runs at a time, at most every `inboxShipIntervalMs` (an idle room pushes at once). Nothing
 * is written in the room per push: after a restart (or a failed push) the first push to a shard is
 * a probe, answered with how far the shard has and a sum of its markers for the room, and the room
 * sends the gap from its log, the markers that differ, or a full snapshot.
 */
import type { Limits } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import type { MessageEvent } from "../protocol/index.ts";
import { Gather } from "./gather.ts";
import {
  type InboxAnswer,
  type InboxMarker,
  type InboxPush,
  type InboxSnapshot,
  noChanges,
} from "./inbox-store.ts";
import type { MessageNotice, PushNotices } from "./notify-store.ts";
import { presenceStub, shardOf } from "./presence.ts";
import type { RoomLog, RoomMeta } from "./room-log.ts";

/** The longest gap sent from the log as a range; a shard further behind gets a full snapshot (the
 * range's member events need their JSON, which the hot window always has for this many). */
const MAX_GAP = 500;
/** Mentions of messages this instance committed, kept until pushed (beyond this, read back). */
const RECENT_MENTIONS = 10_000;
/** Characters of a message a notification previews (the payload is shortened further if needed). */
const PREVIEW_CHARS = 200;
/** Tries of one shard in one cycle (probe, gap, full snapshot, missing members) before backing off. */
const TRIES_PER_CYCLE = 5;

export interface InboxFeedDeps {
  env: Env;
  limits: Limits;
  log: RoomLog;
  sql: SqlStorage;
  meta: () => RoomMeta | null;
  /** Makes sure the room's alarm fires by then (the net for an instance that goes away). */
  wakeAt: (at: number) => void;
}

export class InboxFeed {
  readonly #deps: InboxFeedDeps;
  /** Per shard: the seq through which this instance knows the shard has the room, and the floor it
   * has. Absent: unknown (a new instance, or a failed push): the next push is a probe. */
  readonly #synced = new Map<number, { seq: number; floor: number }>();
  /** Per shard, what to send beyond the range: members whose marker moved, members to send whole
   * (joined, left, or missing there), and whether the room must be sent whole. */
  readonly #markers = new Map<number, Set<string>>();
  readonly #snapshots = new Map<number, Set<string>>();
  readonly #full = new Set<number>();
  /** Mentions of the messages committed by this instance after `#coveredFrom` (seq → users). */
  readonly #mentions = new Map<number, readonly string[]>();
  #coveredFrom: number;
  /** The shards that hold members (channels: every shard), until membership changes. */
  #memberShards: Set<number> | null = null;
  /** Until a cycle has run clean since this instance started (or since a failure): the alarm then
   * pushes, so what an earlier instance committed and did not push gets there. */
  #unchecked = true;
  /** Pushes, at most every `inboxShipIntervalMs`, never before a failed one's backoff ends. */
  readonly #gather: Gather;
  #retryAt = 0;
  #attempts = 0;
  /** Socket `read` frames not written yet: the highest per user (decision 7). */
  readonly #reads = new Map<string, number>();
  #readTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(deps: InboxFeedDeps) {
    this.#deps = deps;
    this.#coveredFrom = deps.log.lastSeq;
    this.#gather = new Gather(
      () => this.#cycle(),
      () => deps.limits.inboxShipIntervalMs,
      () => this.#retryAt,
    );
  }

  // ---- commits and membership -----------------------------------------------------------------

  /** An event was committed (with the members a message mentions): push it. */
  committed(seq: number, mentioned: readonly string[] = []): void {
    if (mentioned.length > 0) {
      if (this.#mentions.size >= RECENT_MENTIONS) {
        this.#mentions.clear();
        this.#coveredFrom = seq - 1;
      }
      this.#mentions.set(seq, mentioned);
    }
    this.kick();
  }

  /** Members joined or left (their events are committed): each is sent whole to their shard. */
  membersChanged(userIds: readonly string[]): void {
    this.#memberShards = null;
    for (const id of userIds) this.#add(this.#snapshots, this.#shard(id), id);
    this.kick();
  }

  /** The room's floor or retention moved (or anything else the counts depend on): push. */
  changed(): void {
    this.kick();
  }

  /** `GET /api/rooms` found no inbox entry for this user here: send them (and, if the shard lacks
   * it, the room) whole, and resolve once pushed. */
  async fill(userId: string): Promise<void> {
    this.#add(this.#snapshots, this.#shard(userId), userId);
    this.kick(true);
    await this.settle();
  }

  // ---- read markers (decision 7) -------------------------------------------------------------

  /** The marker a socket's `read` frame asks for, held and written with the others due within
   * `readFlushMs`. The caller checked membership and that `seq` is within the log. */
  readLater(userId: string, seq: number): void {
    if (seq <= (this.#reads.get(userId) ?? 0) || seq <= this.#deps.log.readSeq(userId)) return;
    this.#reads.set(userId, seq);
    this.#readTimer ??= setTimeout(() => {
      this.#readTimer = null;
      this.flushReads();
    }, this.#deps.limits.readFlushMs);
  }

  /** Writes a marker now, with any held for the same user (`PUT …/read`); returns the marker. */
  readNow(userId: string, seq: number): number {
    const held = this.#reads.get(userId) ?? 0;
    this.#reads.delete(userId);
    const { log: roomLog } = this.#deps;
    const before = roomLog.readSeq(userId);
    const after = roomLog.transaction(() => roomLog.markRead(userId, Math.max(seq, held)));
    if (after > before) this.#moved([[userId, after]]);
    return after;
  }

  /** The marker as the room will have it: written, or held to be written. */
  readSeq(userId: string): number {
    return Math.max(this.#deps.log.readSeq(userId), this.#reads.get(userId) ?? 0);
  }

  /** Writes every held marker in one transaction: a row per page of markers that moved (room-log.ts),
   * not one per reader. */
  flushReads(): void {
    if (this.#readTimer) {
      clearTimeout(this.#readTimer);
      this.#readTimer = null;
    }
    if (this.#reads.size === 0) return;
    const held = [...this.#reads];
    this.#reads.clear();
    const { log: roomLog } = this.#deps;
    this.#moved(roomLog.markReadMany(held.filter(([userId]) => roomLog.member(userId) !== undefined)));
  }

  /** Markers moved: their inboxes learn it in the next push, and tell the users' presence
   * sessions (one call per shard, not one per reader). */
  #moved(moved: readonly [string, number][]): void {
    if (moved.length === 0) return;
    for (const [userId] of moved) this.#add(this.#markers, this.#shard(userId), userId);
    // The net under the push: an instance that goes away first leaves the alarm to a new one.
    this.#deps.wakeAt(Date.now() + this.#deps.limits.archiveResendMs);
    this.kick();
  }

  // ---- pushing ---------------------------------------------------------------------------------

  /** Something changed: push now, or once the cycle in flight is done and the interval since it
   * started has passed. `now` skips the interval. */
  kick(now = false): void {
    this.#gather.kick(now);
  }

  /** Resolves once nothing is being pushed or due (a push backing off after a failure is left to
   * its timer and the alarm). */
  settle(): Promise<void> {
    return this.#gather.settle();
  }

  /** Held markers written and everything pushed (tests and the bench, which must not poll). */
  async settleAll(): Promise<void> {
    this.flushReads();
    this.kick(true);
    await this.settle();
  }

  /** When the alarm should push (null: no need): after a failure, when its backoff ends. */
  nextDue(now: number): number | null {
    return this.#attempts > 0 ? Math.max(now, this.#retryAt) : null;
  }

  /** From the alarm: a new instance checks every shard once (what an earlier one left unpushed),
   * and a failed push is tried again. */
  async fromAlarm(): Promise<void> {
    this.flushReads();
    if (this.#unchecked || this.#attempts > 0) {
      this.#synced.clear();
      this.kick(true);
    }
    await this.settle();
  }

  async #cycle(): Promise<void> {
    const meta = this.#deps.meta();
    if (!meta) return;
    const shards = this.#targets(meta);
    const results = await Promise.allSettled([...shards].map((n) => this.#pushShard(meta, n)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      this.#attempts += 1;
      this.#retryAt =
        Date.now() + Math.min(this.#deps.limits.outboxMaxBackoffMs, 1000 * 2 ** (this.#attempts - 1));
      this.#deps.wakeAt(this.#retryAt);
      // Again once the backoff ends (the gatherer waits for it).
      this.kick();
      log({
        event: "inbox_push_failed",
        room: meta.roomId,
        attempts: this.#attempts,
        error: String(failed.reason),
      });
      return;
    }
    this.#attempts = 0;
    this.#retryAt = 0;
    this.#unchecked = false;
    // Mentions every shard has been sent are not needed again.
    const low = Math.min(...[...shards].map((n) => this.#synced.get(n)?.seq ?? 0));
    for (const seq of this.#mentions.keys()) if (seq <= low) this.#mentions.delete(seq);
  }

  /** Shards this room pushes to: those holding members (every shard for a public channel, whose
   * lastSeq non-members see), and any with something pending. */
  #targets(meta: RoomMeta): Set<number> {
    const count = this.#deps.limits.presenceShards;
    if (!this.#memberShards) {
      this.#memberShards = new Set(
        meta.kind === "channel"
          ? Array.from({ length: count }, (_, n) => n)
          : this.#deps.log.memberIds().map((id) => shardOf(id, count)),
      );
    }
    return new Set([
      ...this.#memberShards,
      ...this.#markers.keys(),
      ...this.#snapshots.keys(),
      ...this.#full,
    ]);
  }

  async #pushShard(meta: RoomMeta, n: number): Promise<void> {
    const stub = presenceStub(this.#deps.env, meta.tenantId, n);
    for (let i = 0; i < TRIES_PER_CYCLE; i++) {
      const synced = this.#synced.get(n);
      if (!synced && !this.#full.has(n)) {
        this.#learn(n, await stub.inboxApply(this.#probe(meta)));
        continue;
      }
      const markers = this.#take(this.#markers, n);
      const snapshots = this.#take(this.#snapshots, n);
      const full = this.#full.has(n);
      this.#full.delete(n);
      let push: (InboxPush & PushNotices) | null;
      try {
        push =
          full || !synced ? this.#fullPush(meta, n) : this.#rangePush(meta, n, synced, markers, snapshots);
      } catch (err) {
        this.#restore(n, markers, snapshots, full);
        throw err;
      }
      if (!push) {
        // The range could not be sent from the log: the room goes whole.
        this.#restore(n, markers, snapshots, true);
        continue;
      }
      if (push.from === push.to && !full && push.floor === synced?.floor) {
        if (push.markers.length === 0 && push.snapshots.length === 0 && push.removed.length === 0) return;
      }
      let answer: InboxAnswer;
      try {
        answer = await stub.inboxApply(push);
      } catch (err) {
        this.#synced.delete(n);
        this.#restore(n, markers, snapshots, full);
        throw err;
      }
      if (!answer.ok) {
        this.#restore(n, markers, snapshots, full);
        this.#learn(n, answer);
        continue;
      }
      this.#synced.set(n, { seq: push.to, floor: push.floor });
      if (answer.missing.length === 0) return;
      for (const id of answer.missing) this.#add(this.#snapshots, n, id);
    }
    // Still not done: the next cycle goes on from where this one got.
    this.kick();
  }

  /** What a shard said of itself: how far it has the room (or nothing), and whether its markers
   * for the room are the room's (same count and sum; else every member's marker is sent). */
  #learn(n: number, answer: InboxAnswer): void {
    if (answer.ok) return;
    const lastSeq = this.#deps.log.lastSeq;
    if (answer.have === null || answer.have > lastSeq || lastSeq - answer.have > MAX_GAP) {
      this.#synced.delete(n);
      this.#full.add(n);
      return;
    }
    this.#synced.set(n, { seq: answer.have, floor: -1 });
    const mine = this.#membersOf(n);
    const sum = mine.reduce((s, m) => s + m.readSeq, 0);
    if (mine.length !== answer.readers || sum !== answer.readSum)
      for (const m of mine) this.#add(this.#markers, n, m.user);
  }

  #probe(meta: RoomMeta): InboxPush {
    return {
      ...this.#head(meta),
      from: null,
      full: false,
      ...noChanges(),
    };
  }

  /** The room's lastSeq, floor and message counts through both, as of now. */
  #head(meta: RoomMeta): Pick<InboxPush, "tenantId" | "roomId" | "to" | "accLast" | "floor" | "accFloor"> {
    const { log: roomLog } = this.#deps;
    const to = roomLog.lastSeq;
    const floor = this.#floor();
    return {
      tenantId: meta.tenantId,
      roomId: meta.roomId,
      to,
      accLast: roomLog.messagesThrough(to) ?? 0,
      floor,
      accFloor: roomLog.messagesThrough(floor) ?? 0,
    };
  }

  /** F: events at or below it are past the command window or expired, and are never counted. */
  #floor(): number {
    return Math.max(this.#deps.log.floor, this.#deps.log.expiredThrough);
  }

  /** The range `(synced, lastSeq]` for shard `n`, with the markers and members asked for; null when
   * a member event in it has no JSON left (then the room is sent whole). */
  #rangePush(
    meta: RoomMeta,
    n: number,
    synced: { seq: number },
    markerIds: Set<string>,
    snapshotIds: Set<string>,
  ): (InboxPush & PushNotices) | null {
    const head = this.#head(meta);
    const from = synced.seq;
    const count = this.#deps.limits.presenceShards;
    const mine = (id: string) => shardOf(id, count) === n;
    const own: [string, number][] = [];
    const deleted: [number, string][] = [];
    /** [seq, thread root] of the range's messages. */
    const messages: [number, number | null][] = [];
    if (head.to > from) {
      const rows = this.#deps.sql
        .exec<{
          seq: number;
          kind: string;
          author_id: string;
          t_seq: number | null;
          t_author: string | null;
          t_kind: string | null;
          json: string | null;
          thread_root: number | null;
        }>(
          `SELECT e.seq, e.kind, e.author_id, e.thread_root, t.seq AS t_seq, t.author_id AS t_author, t.kind AS t_kind,
             CASE WHEN e.kind IN ('member_join', 'member_leave') THEN e.json END AS json
           FROM events e LEFT JOIN events t ON e.kind = 'delete' AND t.seq = e.target
           WHERE e.seq > ? AND e.seq <= ? ORDER BY e.seq`,
          from,
          head.to,
        )
        .toArray();
      for (const r of rows) {
        if (r.kind === "message") messages.push([r.seq, r.thread_root]);
        if (r.kind === "message" && mine(r.author_id)) own.push([r.author_id, r.seq]);
        else if (r.kind === "delete" && r.t_kind === "message" && r.t_seq !== null && r.t_author !== null)
          deleted.push([r.t_seq, r.t_author]);
        else if (r.json !== null) {
          if (r.json === "") return null;
          const user = (JSON.parse(r.json) as { user?: { id?: string } }).user?.id;
          if (typeof user === "string") {
            this.#memberShards = null;
            if (mine(user)) snapshotIds.add(user);
          }
        }
      }
    }
    const mentions = this.#mentionsIn(from, head.to).filter(([user]) => mine(user));
    const markers: InboxMarker[] = [];
    for (const id of markerIds)
      if (!snapshotIds.has(id) && this.#deps.log.member(id)) markers.push(this.#marker(id));
    const snapshots: InboxSnapshot[] = [];
    const removed: string[] = [];
    for (const id of snapshotIds) {
      if (this.#deps.log.member(id)) snapshots.push(this.#snapshot(id, head.floor));
      else removed.push(id);
    }
    return {
      ...head,
      from,
      full: false,
      own,
      mentions,
      deleted,
      markers,
      snapshots,
      removed,
      ...this.#notices(meta, messages, mentions, mine),
    };
  }

  /** Who of shard `n`'s users each message in the range concerns, and why (notify-store.ts): every
   * other member of a dm, the members it mentions, and the followers of the thread it replies in
   * (who wrote its root or in it, or was mentioned there); and the range's last message, for
   * members who want every message. Only members now: nobody hears of a room they cannot read. */
  #notices(
    meta: RoomMeta,
    messages: [number, number | null][],
    mentions: [string, number][],
    mine: (id: string) => boolean,
  ): PushNotices {
    if (messages.length === 0) return {};
    const { log: roomLog } = this.#deps;
    const mentioned = new Map<number, string[]>();
    for (const [user, seq] of mentions) mentioned.set(seq, [...(mentioned.get(seq) ?? []), user]);
    const dmMembers = meta.kind === "dm" ? roomLog.memberIds().filter(mine) : [];
    const notices: MessageNotice[] = [];
    let latest: Omit<MessageNotice, "users"> | null = null;
    const last = messages[messages.length - 1]?.[0];
    for (const [seq, root] of messages) {
      const reasons = new Map<string, "dm" | "mention" | "thread">();
      for (const u of dmMembers) reasons.set(u, "dm");
      for (const u of mentioned.get(seq) ?? []) if (!reasons.has(u)) reasons.set(u, "mention");
      if (root !== null)
        for (const u of this.#followers(root)) if (mine(u) && !reasons.has(u)) reasons.set(u, "thread");
      // The message's words are read only when someone may be told of it.
      if (reasons.size === 0 && seq !== last) continue;
      const message = this.#message(seq);
      if (!message) continue;
      if (seq === last) latest = message;
      reasons.delete(message.author.id);
      const users: MessageNotice["users"] = [];
      for (const [u, why] of reasons) if (roomLog.member(u)) users.push([u, why]);
      if (users.length > 0) notices.push({ ...message, users });
    }
    const out: PushNotices = { roomName: meta.name, notices };
    if (latest) out.latest = { ...latest, count: messages.length };
    return out;
  }

  /** A message's author and preview, from its row (null when deleted or past the hot window). */
  #message(seq: number): Omit<MessageNotice, "users"> | null {
    const row = this.#deps.sql
      .exec<{ json: string; deleted: number }>("SELECT json, deleted FROM events WHERE seq = ?", seq)
      .toArray()[0];
    if (!row || row.deleted || row.json === "") return null;
    const event = JSON.parse(row.json) as MessageEvent;
    return {
      seq,
      author: { id: event.author.id, name: event.author.name },
      preview: [...event.text].slice(0, PREVIEW_CHARS).join(""),
    };
  }

  /** Who follows a thread: its root's author, everyone who replied, everyone mentioned in it. */
  #followers(root: number): string[] {
    return this.#deps.sql
      .exec<{ user_id: string }>(
        `SELECT author_id AS user_id FROM events WHERE seq = ?1 AND kind = 'message'
         UNION SELECT author_id FROM events WHERE thread_root = ?1 AND kind = 'message'
         UNION SELECT m.user_id FROM mentions m WHERE m.seq = ?1
           OR m.seq IN (SELECT seq FROM events WHERE thread_root = ?1)`,
        root,
      )
      .toArray()
      .map((r) => r.user_id);
  }

  /** The room whole for shard `n`: its counts, its deleted messages after the floor, and each of
   * the shard's members with their marker, own messages and mentions after it. */
  #fullPush(meta: RoomMeta, n: number): InboxPush {
    const head = this.#head(meta);
    const deleted = this.#deps.sql
      .exec<{ seq: number; author_id: string }>(
        "SELECT seq, author_id FROM events WHERE seq > ? AND kind = 'message' AND deleted = 1",
        head.floor,
      )
      .toArray()
      .map((r): [number, string] => [r.seq, r.author_id]);
    const snapshots = this.#membersOf(n).map((m) => this.#snapshot(m.user, head.floor));
    return {
      ...head,
      from: null,
      full: true,
      ...noChanges(),
      deleted,
      snapshots,
    };
  }

  #marker(userId: string): InboxMarker {
    const readSeq = this.#deps.log.readSeq(userId);
    const accRead = readSeq >= this.#floor() ? (this.#deps.log.messagesThrough(readSeq) ?? 0) : 0;
    return { user: userId, readSeq, accRead };
  }

  /** A member as their inbox needs them: marker, and their own messages and mentions after it. */
  #snapshot(userId: string, floor: number): InboxSnapshot {
    const marker = this.#marker(userId);
    const after = Math.max(marker.readSeq, floor);
    const own = this.#deps.sql
      .exec<{ seq: number }>(
        "SELECT seq FROM events WHERE seq > ? AND author_id = ? AND kind = 'message' ORDER BY seq",
        after,
        userId,
      )
      .toArray()
      .map((r) => r.seq);
    const mentions = this.#deps.sql
      .exec<{ seq: number }>(
        "SELECT seq FROM mentions WHERE user_id = ? AND seq > ? ORDER BY seq",
        userId,
        after,
      )
      .toArray()
      .map((r) => r.seq);
    return { ...marker, own, mentions };
  }

  /** [user, seq] of the mentions in (from, to]: from memory when this instance committed them all,
   * else from the log's table (a message deleted since has none left there; here its delete, later
   * in the range or in a later push, removes them). */
  #mentionsIn(from: number, to: number): [string, number][] {
    const out: [string, number][] = [];
    if (to <= from) return out;
    if (from >= this.#coveredFrom) {
      for (const [seq, users] of this.#mentions)
        if (seq > from && seq <= to) for (const u of users) out.push([u, seq]);
      return out;
    }
    for (const r of this.#deps.sql.exec<{ user_id: string; seq: number }>(
      "SELECT user_id, seq FROM mentions WHERE seq > ? AND seq <= ?",
      from,
      to,
    ))
      out.push([r.user_id, r.seq]);
    return out;
  }

  /** This shard's members with their written markers. */
  #membersOf(n: number): { user: string; readSeq: number }[] {
    const { log: roomLog, limits } = this.#deps;
    return roomLog
      .memberIds()
      .filter((id) => shardOf(id, limits.presenceShards) === n)
      .map((id) => ({ user: id, readSeq: roomLog.readSeq(id) }));
  }

  #shard(userId: string): number {
    return shardOf(userId, this.#deps.limits.presenceShards);
  }

  #add(map: Map<number, Set<string>>, n: number, id: string): void {
    let set = map.get(n);
    if (!set) {
      set = new Set();
      map.set(n, set);
    }
    set.add(id);
  }

  #take(map: Map<number, Set<string>>, n: number): Set<string> {
    const set = map.get(n) ?? new Set<string>();
    map.delete(n);
    return set;
  }

  #restore(n: number, markers: Set<string>, snapshots: Set<string>, full: boolean): void {
    for (const id of markers) this.#add(this.#markers, n, id);
    for (const id of snapshots) this.#add(this.#snapshots, n, id);
    if (full) this.#full.add(n);
  }
}
