/**
 * @module Who is told of a message, decided in the user's presence shard (docs/architecture.md,
 * decision 10). The shard holds each of its users' notification preferences and push subscriptions
 * (the user's own data, synced to every device), and hears from rooms, in their inbox push, which of
 * its users a message concerns and why (`dm`, `mention`, `thread`) and which message came last
 * (for rooms set to `all`). It skips a user who is paused, in `dnd`, has muted or silenced the room,
 * is looking at the room on some device, or has read past the message; it collapses a burst into one
 * notification per room per `notifyCollapseMs`; and it hands each notification to the queue, one job
 * per device (worker/notify/consumer.ts sends them).
 *
 * Pending collapses are in memory: a shard that restarts mid-window sends the next message's
 * notification at once, which is one more ring, never a lost message (the app shows all of them).
 */
import type { Limits } from "../config/limits.ts";
import {
  DEFAULT_NOTIFY_MODE,
  type NotifyMode,
  type NotifyPrefs,
  type NotifyReason,
  type PushNotice,
  type PushSubscriptionBody,
  type PushSubscriptionView,
  type RoomNotifyPref,
} from "../protocol/notify.ts";
import type { Migration } from "./schema.ts";

/** A message as a room's push describes it to a shard: its author, the start of its text, and which
 * of the shard's users it concerns and why. */
export interface MessageNotice {
  seq: number;
  author: { id: string; name: string };
  preview: string;
  users: [string, "dm" | "mention" | "thread"][];
}

/** What a push carries for notifications (optional: rooms deployed before send none). */
export interface PushNotices {
  roomName?: string;
  /** Messages in the push's range that concern some of this shard's users. */
  notices?: MessageNotice[];
  /** The range's last message and how many messages the range holds (for rooms set to `all`). */
  latest?: (Omit<MessageNotice, "users"> & { count: number }) | null;
}

/** One notification to one device: what the queue carries. */
export interface NotifyJob {
  tenantId: string;
  shard: number;
  userId: string;
  subscription: { id: string } & PushSubscriptionBody;
  notice: PushNotice;
}

/** `IF NOT EXISTS`: tests that replay an upgrade rewind the schema version past these tables. */
export const NOTIFY_MIGRATIONS: Migration[] = [
  `CREATE TABLE IF NOT EXISTS notify_users (
     user_id TEXT PRIMARY KEY, default_mode TEXT NOT NULL, paused_until INTEGER
   ) WITHOUT ROWID;
   CREATE INDEX IF NOT EXISTS notify_users_mode ON notify_users(default_mode);
   CREATE TABLE IF NOT EXISTS notify_rooms (
     user_id TEXT NOT NULL, room_id TEXT NOT NULL, mode TEXT, mute_until INTEGER,
     PRIMARY KEY (user_id, room_id)
   ) WITHOUT ROWID;
   CREATE INDEX IF NOT EXISTS notify_rooms_mode ON notify_rooms(room_id, mode);
   CREATE TABLE IF NOT EXISTS push_subscriptions (
     id TEXT PRIMARY KEY, user_id TEXT NOT NULL, endpoint TEXT NOT NULL, p256dh TEXT NOT NULL,
     auth TEXT NOT NULL, user_agent TEXT, created_at INTEGER NOT NULL,
     failures INTEGER NOT NULL DEFAULT 0, last_failure_at INTEGER
   );
   CREATE INDEX IF NOT EXISTS push_subscriptions_user ON push_subscriptions(user_id, created_at);`,
];

export interface NotifierDeps {
  sql: SqlStorage;
  limits: () => Limits;
  /** The tenant and shard this object is (null before `init`). */
  meta: () => { tenantId: string; shard: number } | null;
  /** Whether the user's presence is `dnd` now. */
  dnd: (userId: string) => boolean;
  /** Whether a session of the user shows the room now, or did within the grace. */
  looking: (userId: string, roomId: string, now: number) => boolean;
  /** The user's read marker in the room as the inbox has it (0 when none). */
  readSeq: (userId: string, roomId: string) => number;
  /** Whether the tenant lets notifications show who wrote what (else only that something came). */
  previews: () => boolean;
  /** Hands jobs to the queue. */
  send: (jobs: NotifyJob[]) => void;
}

type Reason = Exclude<NotifyReason, "test">;

/** A device of the user's, as a job carries it. */
type Subscription = { id: string } & PushSubscriptionBody;

/** Which reason a collapsed notification shows: the most personal of its messages. */
const WEIGHT: Record<Reason, number> = { message: 0, thread: 1, mention: 2, dm: 3 };

export class Notifier {
  readonly #deps: NotifierDeps;
  /** Per user and room: when the last notification went, and what came since. */
  readonly #recent = new Map<string, { sentAt: number; pending: PushNotice | null }>();

  constructor(deps: NotifierDeps) {
    this.#deps = deps;
  }

  // ---- preferences ---------------------------------------------------------------------------

  prefs(userId: string): NotifyPrefs {
    const { sql } = this.#deps;
    const user = sql
      .exec<{ default_mode: string; paused_until: number | null }>(
        "SELECT default_mode, paused_until FROM notify_users WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    const rooms: Record<string, RoomNotifyPref> = {};
    for (const r of sql.exec<{ room_id: string; mode: string | null; mute_until: number | null }>(
      "SELECT room_id, mode, mute_until FROM notify_rooms WHERE user_id = ?",
      userId,
    ))
      rooms[r.room_id] = { mode: r.mode as NotifyMode | null, muteUntil: r.mute_until };
    return {
      default: (user?.default_mode as NotifyMode | undefined) ?? DEFAULT_NOTIFY_MODE,
      pausedUntil: user?.paused_until ?? null,
      rooms,
    };
  }

  setPrefs(userId: string, change: { default?: NotifyMode; pausedUntil?: number | null }): NotifyPrefs {
    const before = this.prefs(userId);
    this.#deps.sql.exec(
      `INSERT INTO notify_users (user_id, default_mode, paused_until) VALUES (?, ?, ?)
       ON CONFLICT (user_id) DO UPDATE SET default_mode = excluded.default_mode, paused_until = excluded.paused_until`,
      userId,
      change.default ?? before.default,
      change.pausedUntil !== undefined ? change.pausedUntil : before.pausedUntil,
    );
    return this.prefs(userId);
  }

  /** A room's own preference; one that follows the default and mutes nothing is deleted. Null when
   * the user already has `maxRoomNotifyPrefs` rooms with one and this is another. */
  setRoomPref(userId: string, roomId: string, change: Partial<RoomNotifyPref>): NotifyPrefs | null {
    const { sql } = this.#deps;
    const before = sql
      .exec<{ mode: string | null; mute_until: number | null }>(
        "SELECT mode, mute_until FROM notify_rooms WHERE user_id = ? AND room_id = ?",
        userId,
        roomId,
      )
      .toArray()[0];
    const mode = change.mode !== undefined ? change.mode : ((before?.mode as NotifyMode | null) ?? null);
    const muteUntil = change.muteUntil !== undefined ? change.muteUntil : (before?.mute_until ?? null);
    if (mode === null && muteUntil === null) {
      sql.exec("DELETE FROM notify_rooms WHERE user_id = ? AND room_id = ?", userId, roomId);
      return this.prefs(userId);
    }
    if (!before) {
      const n = sql
        .exec<{ n: number }>("SELECT COUNT(*) AS n FROM notify_rooms WHERE user_id = ?", userId)
        .one().n;
      if (n >= this.#deps.limits().maxRoomNotifyPrefs) return null;
    }
    sql.exec(
      `INSERT INTO notify_rooms (user_id, room_id, mode, mute_until) VALUES (?, ?, ?, ?)
       ON CONFLICT (user_id, room_id) DO UPDATE SET mode = excluded.mode, mute_until = excluded.mute_until`,
      userId,
      roomId,
      mode,
      muteUntil,
    );
    return this.prefs(userId);
  }

  // ---- subscriptions -------------------------------------------------------------------------

  /** Registers a device (again: same endpoint, same id, keys updated). Past the limit, the user's
   * oldest subscription makes room. */
  subscribe(
    userId: string,
    id: string,
    sub: PushSubscriptionBody,
    userAgent: string | null,
    now: number,
  ): { id: string; created: boolean } {
    const { sql } = this.#deps;
    const existing = sql
      .exec<{ user_id: string }>("SELECT user_id FROM push_subscriptions WHERE id = ?", id)
      .toArray()[0];
    if (existing && existing.user_id === userId) {
      sql.exec(
        "UPDATE push_subscriptions SET p256dh = ?, auth = ?, user_agent = ?, failures = 0, last_failure_at = NULL WHERE id = ?",
        sub.keys.p256dh,
        sub.keys.auth,
        userAgent,
        id,
      );
      return { id, created: false };
    }
    // The same browser signed in as someone else: the device is theirs now.
    if (existing) sql.exec("DELETE FROM push_subscriptions WHERE id = ?", id);
    const mine = sql
      .exec<{ id: string }>("SELECT id FROM push_subscriptions WHERE user_id = ? ORDER BY created_at", userId)
      .toArray();
    const max = this.#deps.limits().maxPushSubscriptions;
    for (const old of mine.slice(0, Math.max(0, mine.length - max + 1)))
      sql.exec("DELETE FROM push_subscriptions WHERE id = ?", old.id);
    sql.exec(
      `INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth, user_agent, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
      id,
      userId,
      sub.endpoint,
      sub.keys.p256dh,
      sub.keys.auth,
      userAgent,
      now,
    );
    return { id, created: true };
  }

  subscriptions(userId: string): PushSubscriptionView[] {
    return this.#deps.sql
      .exec<{
        id: string;
        endpoint: string;
        user_agent: string | null;
        created_at: number;
        failures: number;
      }>(
        "SELECT id, endpoint, user_agent, created_at, failures FROM push_subscriptions WHERE user_id = ? ORDER BY created_at",
        userId,
      )
      .toArray()
      .map((r) => ({
        id: r.id,
        service: new URL(r.endpoint).origin,
        userAgent: r.user_agent,
        createdAt: r.created_at,
        failures: r.failures,
      }));
  }

  /** Removes a subscription of the user's (the user, or the push service's 404/410); false when
   * they have none by that id. */
  unsubscribe(userId: string, id: string): boolean {
    const cursor = this.#deps.sql.exec(
      "DELETE FROM push_subscriptions WHERE id = ? AND user_id = ?",
      id,
      userId,
    );
    return cursor.rowsWritten > 0;
  }

  /** Drops every subscription of the user (deactivated) and what was pending for them. */
  forget(userId: string): void {
    this.#deps.sql.exec("DELETE FROM push_subscriptions WHERE user_id = ?", userId);
    for (const key of this.#recent.keys()) if (key.startsWith(`${userId}\n`)) this.#recent.delete(key);
  }

  /** A notification to this subscription was given up on (the dead-letter queue): counted, so the
   * settings panel can show a device that stopped receiving. */
  failed(userId: string, id: string, at: number): void {
    this.#deps.sql.exec(
      "UPDATE push_subscriptions SET failures = failures + 1, last_failure_at = ? WHERE id = ? AND user_id = ?",
      at,
      id,
      userId,
    );
  }

  /** A test notification to each of the user's devices; the number of devices. */
  test(userId: string): number {
    const subs = this.#subs(userId);
    const notice: PushNotice = {
      room: "",
      roomName: null,
      seq: 0,
      reason: "test",
      author: null,
      preview: null,
      count: 1,
    };
    this.#jobs(userId, subs, notice);
    return subs.length;
  }

  // ---- deciding ------------------------------------------------------------------------------

  /** A room's push was applied: each concerned user is considered for each message, and every user
   * here with the room set to `all` for its last one. */
  pushed(roomId: string, push: PushNotices, now: number): void {
    const candidates = new Map<string, PushNotice>();
    const add = (userId: string, notice: PushNotice) => {
      const held = candidates.get(userId);
      candidates.set(userId, held ? merge(held, notice) : notice);
    };
    const roomName = push.roomName ?? null;
    for (const m of push.notices ?? [])
      for (const [userId, reason] of m.users)
        add(userId, {
          room: roomId,
          roomName,
          seq: m.seq,
          reason,
          author: m.author,
          preview: m.preview,
          count: 1,
        });
    const latest = push.latest;
    if (latest) {
      for (const userId of this.#allModeMembers(roomId)) {
        if (userId === latest.author.id) continue;
        const notice: PushNotice = {
          room: roomId,
          roomName,
          seq: latest.seq,
          reason: "message",
          author: latest.author,
          preview: latest.preview,
          count: latest.count,
        };
        const held = candidates.get(userId);
        // A concerned user's own notices already count their messages; `all` adds the rest.
        candidates.set(userId, held ? merge(notice, { ...held, count: 0 }) : notice);
      }
    }
    for (const [userId, notice] of candidates) this.#consider(userId, notice, now);
  }

  /** Sends what collapsed windows held, once their window is over. */
  flushDue(now: number): void {
    const window = this.#deps.limits().notifyCollapseMs;
    for (const [key, state] of this.#recent) {
      if (state.sentAt + window > now) continue;
      if (!state.pending) {
        this.#recent.delete(key);
        continue;
      }
      const notice = state.pending;
      state.pending = null;
      const userId = key.slice(0, key.indexOf("\n"));
      const devices = this.#devicesFor(userId, notice, now);
      if (devices.length > 0) {
        state.sentAt = now;
        this.#jobs(userId, devices, notice);
      } else this.#recent.delete(key);
    }
  }

  /** When `flushDue` has something to send (null: nothing pending). */
  nextDue(): number | null {
    const window = this.#deps.limits().notifyCollapseMs;
    let at: number | null = null;
    for (const state of this.#recent.values())
      if (state.pending) at = Math.min(at ?? Infinity, state.sentAt + window);
    return at;
  }

  #consider(userId: string, notice: PushNotice, now: number): void {
    const devices = this.#devicesFor(userId, notice, now);
    if (devices.length === 0) return;
    const key = `${userId}\n${notice.room}`;
    const state = this.#recent.get(key);
    if (state && state.sentAt + this.#deps.limits().notifyCollapseMs > now) {
      state.pending = state.pending ? merge(state.pending, notice) : notice;
      return;
    }
    this.#recent.set(key, { sentAt: now, pending: null });
    this.#jobs(userId, devices, notice);
  }

  /** The user's devices this notification should reach now: none when anything stops it. */
  #devicesFor(userId: string, notice: PushNotice, now: number): Subscription[] {
    const { sql, dnd, looking, readSeq } = this.#deps;
    if (notice.author?.id === userId) return [];
    const subs = this.#subs(userId);
    if (subs.length === 0) return [];
    const user = sql
      .exec<{ default_mode: string; paused_until: number | null }>(
        "SELECT default_mode, paused_until FROM notify_users WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    if ((user?.paused_until ?? 0) > now) return [];
    const room = sql
      .exec<{ mode: string | null; mute_until: number | null }>(
        "SELECT mode, mute_until FROM notify_rooms WHERE user_id = ? AND room_id = ?",
        userId,
        notice.room,
      )
      .toArray()[0];
    if ((room?.mute_until ?? 0) > now) return [];
    const mode = (room?.mode ?? user?.default_mode ?? DEFAULT_NOTIFY_MODE) as NotifyMode;
    if (mode === "nothing" || (mode === "mentions" && notice.reason === "message")) return [];
    if (dnd(userId)) return [];
    if (looking(userId, notice.room, now)) return [];
    return readSeq(userId, notice.room) < notice.seq ? subs : [];
  }

  /** This shard's members of the room whose preference for it is `all` (their own, or their default
   * when the room has none). Reads the users set to `all`, not every member. */
  #allModeMembers(roomId: string): string[] {
    return this.#deps.sql
      .exec<{ user_id: string }>(
        `SELECT r.user_id FROM notify_rooms r JOIN inbox_members m ON m.room_id = r.room_id AND m.user_id = r.user_id
           WHERE r.room_id = ?1 AND r.mode = 'all'
         UNION
         SELECT u.user_id FROM notify_users u JOIN inbox_members m ON m.room_id = ?1 AND m.user_id = u.user_id
           WHERE u.default_mode = 'all'`,
        roomId,
      )
      .toArray()
      .map((r) => r.user_id);
  }

  #subs(userId: string): Subscription[] {
    return this.#deps.sql
      .exec<{ id: string; endpoint: string; p256dh: string; auth: string }>(
        "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = ?",
        userId,
      )
      .toArray()
      .map((r) => ({ id: r.id, endpoint: r.endpoint, keys: { p256dh: r.p256dh, auth: r.auth } }));
  }

  #jobs(userId: string, subs: Subscription[], notice: PushNotice): void {
    const meta = this.#deps.meta();
    if (!meta || subs.length === 0) return;
    const told = this.#deps.previews() ? notice : bare(notice);
    this.#deps.send(
      subs.map((subscription) => ({
        tenantId: meta.tenantId,
        shard: meta.shard,
        userId,
        subscription,
        notice: told,
      })),
    );
  }
}

/** Two notices for one room as one: the later message, the more personal reason, both counts. */
function merge(a: PushNotice, b: PushNotice): PushNotice {
  const later = b.seq >= a.seq ? b : a;
  const reason = WEIGHT[b.reason as Reason] > WEIGHT[a.reason as Reason] ? b.reason : a.reason;
  return { ...later, reason, count: a.count + b.count };
}

/** A notice without the message's words or who wrote it (the tenant turned previews off). */
function bare(notice: PushNotice): PushNotice {
  return { ...notice, roomName: null, author: null, preview: null };
}
