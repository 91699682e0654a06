/**
 * @module The Presence Durable Object: one per tenant shard (`<tenantId>:presence:<n>`, users
 * assigned by hash). It holds the hibernatable sockets of its users' sessions (`/api/presence/ws`),
 * derives each user's status from their sessions' heartbeats, and tells watchers about changes.
 *
 * A user is online (or away/dnd) while any session has sent a heartbeat within the timeout, and
 * offline after it. A heartbeat lives in its socket's attachment and writes nothing to storage
 * unless the user's status changes: the stored row is the status and, once a session closes, its
 * last heartbeat. Expiry runs from one alarm, armed while anyone is present, at the earliest
 * moment someone could go offline but at most every quarter of the timeout; it re-derives the
 * present users' status from their sockets. No timer keeps the object awake for expiry; alarms
 * are at-least-once, so handling one is idempotent. (The one timer is a room's activity window,
 * at most 250 ms after an inbox push that woke the object anyway: activity.ts.) Status changes
 * cross shards by relay: watchers of a user may sit on any shard.
 *
 * What one client can make presence send is bounded: a session's status changes come from a token
 * bucket (a refused change gets `rate_limited` and changes nothing), and a shard tells watchers of
 * its users' changes once per relay window, the latest status per user, in one RPC per other shard
 * (from the alarm), never one per change.
 */
import { DurableObject } from "cloudflare:workers";
import { limitsOf } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { record } from "../platform/metrics.ts";
import { notifyQueue, tenantNamespace } from "../platform/residency.ts";
import {
  CLOSE,
  errorResponse,
  type PresenceServerFrame,
  type PresenceStatus,
  parsePresenceFrame,
} from "../protocol/index.ts";
import type {
  NotifyMode,
  NotifyPrefs,
  PushSubscriptionBody,
  PushSubscriptionView,
  RoomNotifyPref,
} from "../protocol/notify.ts";
import { ActivityWindows } from "./activity.ts";
import { ENDED_USERS_TABLE, EndedUsers } from "./ended-users.ts";
import {
  INBOX_MEMBERS_BY_USER_MIGRATION,
  INBOX_MIGRATIONS,
  INBOX_OWN_RUNS_MIGRATION,
  type InboxAnswer,
  type InboxEntry,
  type InboxPush,
  InboxStore,
} from "./inbox-store.ts";
import { NOTIFY_MIGRATIONS, Notifier, type NotifyJob, type PushNotices } from "./notify-store.ts";
import { type Bucket, takeFrom } from "./rate-limit.ts";
import { migrate } from "./schema.ts";

/** Header through which the worker hands the authenticated caller (URI-encoded JSON). */
export const PRESENCE_IDENTITY_HEADER = "x-parley-identity";

interface SessionInfo {
  userId: string;
  tenantId: string;
  /** When the token that opened the socket expires (ms; absent for an API token): it closes then
   * with `4402` (decision 11). */
  expiresAt?: number;
  /** The session's own status and its last heartbeat (ms). */
  status: "active" | "away" | "dnd";
  beatAt: number;
  watch: string[];
  /** The room the session shows while visible (`focus` frames), and the one it showed before and
   * until when (notifications wait `notifyFocusGraceMs` after a glance away). */
  focus?: string | null;
  left?: { room: string; at: number };
  /** The session's status-change bucket (absent: full). In the attachment, so a wake keeps it. */
  changes?: Bucket;
}

export interface PresenceChange {
  user: string;
  status: PresenceStatus;
  lastSeen: number | null;
}

const MIGRATIONS = [
  `CREATE TABLE users (user_id TEXT PRIMARY KEY, status TEXT NOT NULL, last_seen INTEGER);
   CREATE TABLE expiries (user_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
   CREATE INDEX expiries_at ON expiries(at);
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  // Expiry no longer has a row per user, rewritten by every heartbeat: the alarm sweeps.
  "DROP TABLE expiries;",
  // The inbox of this shard's users (inbox-store.ts).
  ...INBOX_MIGRATIONS,
  // Their notification preferences and push subscriptions (notify-store.ts).
  ...NOTIFY_MIGRATIONS,
  // Those whose account was deactivated: their sockets are refused (ended-users.ts).
  ENDED_USERS_TABLE,
  // The inbox's own messages as runs, not a row each (inbox-store.ts).
  INBOX_OWN_RUNS_MIGRATION,
  // A user's rooms in the inbox, for a room list that asks before the directory answers.
  INBOX_MEMBERS_BY_USER_MIGRATION,
];

export class Presence extends DurableObject<Env> {
  readonly #sql: SqlStorage;
  readonly #sessions = new Map<WebSocket, SessionInfo>();
  /** Sockets whose close was counted (see `#drop`). */
  readonly #closed = new WeakSet<WebSocket>();
  /** watched user → sockets watching them; rebuilt from attachments after a wake. */
  #watchers: Map<string, Set<WebSocket>> | null = null;
  /** What each watching socket was last told of each user, so a relay that changes nothing for it
   * (a flip and back within one window, or the status its watch snapshot already gave) sends no
   * frame. Lost on a wake: then at most one repeated frame per user. */
  readonly #told = new WeakMap<WebSocket, Map<string, PresenceStatus>>();
  /** This shard's users' changes not yet relayed, the latest per user, and when they are due. In
   * memory: a change lost to a restart is like a relay lost before (watchers catch up at their next
   * watch or change), and keeping it out of storage keeps a status change at the writes it had. */
  readonly #relays = new Map<string, PresenceChange>();
  #relayAt: number | null = null;
  readonly #inbox: InboxStore;
  /** Activity notices to this shard's sessions, per room, once its pushes apply (activity.ts). */
  readonly #activity: ActivityWindows;
  readonly #notifier: Notifier;
  /** This shard's users whose account was deactivated: their sockets are refused. */
  readonly #ended: EndedUsers;
  /** Jobs decided in this turn, sent to the queue at its end. */
  #outgoing: NotifyJob[] = [];

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    migrate(this.ctx.storage, MIGRATIONS);
    this.#ended = new EndedUsers(this.#sql);
    this.#activity = new ActivityWindows(
      () => limitsOf(this.env).activityWindowMs,
      (room, notice) => {
        // A hint: one that cannot be sent is lost, never the push that brought it.
        try {
          this.#tellActivity(room, notice.lastSeq, this.#inbox.members(room), notice.mentioned);
        } catch (err) {
          log({ event: "activity_failed", room, error: String(err) });
        }
      },
    );
    this.#inbox = new InboxStore(ctx.storage, {
      read: (userId, room, seq) => this.readMoved(userId, room, seq),
      news: (room, news) => this.#activity.news(room, news),
    });
    this.#notifier = new Notifier({
      sql: this.#sql,
      limits: () => limitsOf(this.env),
      meta: () => this.#meta(),
      dnd: (userId) => this.#derive(userId, Date.now()).status === "dnd",
      looking: (userId, roomId, now) => this.#looking(userId, roomId, now),
      readSeq: (userId, roomId) => this.#inbox.readSeq(userId, roomId),
      previews: () => this.#metaValue("notify_previews") !== "0",
      send: (jobs) => this.#outgoing.push(...jobs),
    });
  }

  // ---- sockets -------------------------------------------------------------------------------

  override async fetch(request: Request): Promise<Response> {
    const raw = request.headers.get(PRESENCE_IDENTITY_HEADER);
    let who: { userId: string; tenantId: string; expiresAt?: number } | null = null;
    try {
      const o = raw ? (JSON.parse(decodeURIComponent(raw)) as Record<string, unknown>) : null;
      if (o && typeof o.userId === "string" && typeof o.tenantId === "string")
        who = {
          userId: o.userId,
          tenantId: o.tenantId,
          ...(typeof o.expiresAt === "number" ? { expiresAt: o.expiresAt } : {}),
        };
    } catch {
      who = null;
    }
    if (!who) return errorResponse("unauthorized", "no identity");
    // The worker may hand over an identity it read before the deactivation (decision 12).
    if (this.#ended.has(who.userId)) return errorResponse("forbidden", "this account is deactivated");
    const [client, server] = Object.values(new WebSocketPair()) as [WebSocket, WebSocket];
    this.ctx.acceptWebSocket(server, [who.userId]);
    const info: SessionInfo = { ...who, status: "active", beatAt: Date.now(), watch: [] };
    server.serializeAttachment(info);
    this.#sessions.set(server, info);
    // Connecting counts as a heartbeat: the user is present from now on.
    await this.#refresh(who.userId);
    // The alarm closes the socket when its token expires.
    if (who.expiresAt !== undefined) await this.#scheduleAlarm(who.expiresAt);
    record(this.env, {
      name: "ws_open",
      tenant: who.tenantId,
      object: "presence",
      room: "",
      sockets: this.ctx.getWebSockets().length,
    });
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const info = this.#info(ws);
    if (!info) return;
    if (info.expiresAt !== undefined && info.expiresAt <= Date.now()) {
      this.#close(ws, CLOSE.expired);
      return;
    }
    const limits = limitsOf(this.env);
    const parsed = parsePresenceFrame(message, limits);
    if (!parsed.ok) {
      send(ws, { type: "error", code: parsed.code, message: parsed.message });
      return;
    }
    const frame = parsed.value;
    if (frame.type === "heartbeat") {
      const now = Date.now();
      if (frame.status !== info.status) {
        // A change costs a token; the same status again (the periodic beat) never does.
        const { bucket, wait } = takeFrom(
          info.changes,
          now,
          1000 / limits.presenceChangeIntervalMs,
          limits.presenceChangeBurst,
        );
        if (wait > 0) {
          send(ws, {
            type: "error",
            code: "rate_limited",
            message: "status changes too often; send it again later",
            retryAfter: Math.max(1, Math.ceil(wait)),
          });
          return;
        }
        info.changes = bucket;
      }
      info.status = frame.status;
      info.beatAt = now;
      ws.serializeAttachment(info);
      await this.#refresh(info.userId);
    } else if (frame.type === "watch") {
      this.#unwatch(ws, info);
      info.watch = frame.users;
      ws.serializeAttachment(info);
      for (const id of info.watch) this.#watchersOf(id).add(ws);
      const told = new Map<string, PresenceStatus>();
      this.#told.set(ws, told);
      for (const change of await this.#lookup(info.watch)) {
        told.set(change.user, change.status);
        send(ws, { type: "presence", ...change });
      }
    } else if (frame.type === "focus") {
      if ((info.focus ?? null) !== frame.room) {
        if (info.focus) info.left = { room: info.focus, at: Date.now() };
        info.focus = frame.room;
        ws.serializeAttachment(info);
      }
    } else {
      send(ws, { type: "pong" });
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#drop(ws, code);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    // 1006: the code a peer sees for a connection that ended without a Close frame.
    this.#drop(ws, 1006);
  }

  // ---- status --------------------------------------------------------------------------------

  /** Recomputes a user's status from their fresh sessions, and persists and announces it if it
   * changed. A heartbeat that changes nothing writes nothing. */
  async #refresh(userId: string, sweep = false): Promise<{ freshUntil: number }> {
    const before = this.#sql
      .exec<{ status: string; last_seen: number | null }>(
        "SELECT status, last_seen FROM users WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    // The sweep keeps what closed sessions said until their heartbeat is as old as the timeout
    // (closing does not make a user offline); a heartbeat decides from the open sessions.
    const { status, beat, freshUntil } = this.#derive(userId, Date.now(), sweep ? before : undefined);
    if (before?.status === status) return { freshUntil };
    const lastSeen = Math.max(before?.last_seen ?? 0, beat) || null;
    this.#sql.exec(
      "INSERT INTO users (user_id, status, last_seen) VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, last_seen = excluded.last_seen",
      userId,
      status,
      lastSeen,
    );
    this.#announce({ user: userId, status, lastSeen });
    if (!sweep) await this.#scheduleAlarm(status === "offline" ? null : freshUntil);
    return { freshUntil };
  }

  /** A user's status from their sessions that beat within the timeout, and their latest heartbeat
   * over all their open sessions (0 with none). */
  #derive(
    userId: string,
    now: number,
    held?: { status: string; last_seen: number | null },
  ): { status: PresenceStatus; beat: number; freshUntil: number } {
    const timeout = limitsOf(this.env).presenceTimeoutMs;
    let beat = 0;
    let freshUntil = 0;
    const statuses = new Set<string>();
    if (held && held.status !== "offline" && (held.last_seen ?? 0) + timeout > now) {
      statuses.add(held.status === "online" ? "active" : held.status);
      freshUntil = (held.last_seen ?? 0) + timeout;
    }
    for (const ws of this.ctx.getWebSockets(userId)) {
      const s = this.#info(ws);
      if (!s) continue;
      beat = Math.max(beat, s.beatAt);
      if (now - s.beatAt >= timeout) continue;
      statuses.add(s.status);
      freshUntil = Math.max(freshUntil, s.beatAt + timeout);
    }
    const status: PresenceStatus =
      statuses.size === 0
        ? "offline"
        : statuses.has("dnd")
          ? "dnd"
          : statuses.has("active")
            ? "online"
            : "away";
    return { status, beat, freshUntil };
  }

  /** One alarm for the schedules: the relay window when one is open, and the sweep while anyone
   * is present (`expiry`: when someone could go offline, or a socket's token expires, if the caller
   * knows). It is only ever moved earlier here; the alarm itself sets the next sweep. */
  async #scheduleAlarm(expiry: number | null = null): Promise<void> {
    const wanted = Math.min(
      this.#relayAt ?? Infinity,
      expiry ?? Infinity,
      this.#notifier.nextDue() ?? Infinity,
    );
    if (wanted === Infinity) return;
    const current = await this.ctx.storage.getAlarm();
    if (current === null || wanted < current) await this.ctx.storage.setAlarm(wanted);
  }

  /** Sockets whose token expired close; users whose last heartbeat is older than the timeout go
   * offline; then every pending change (theirs included) is relayed; then the next sweep: when the
   * first present user could go offline, but not sooner than a quarter of the timeout from now (a
   * busy shard sweeps at that pace, whatever its number of users), or when the next token expires.
   * Idempotent. */
  override async alarm(): Promise<void> {
    const now = Date.now();
    const nextExpiry = this.#closeExpired(now);
    const timeout = limitsOf(this.env).presenceTimeoutMs;
    let next = Infinity;
    const present = this.#sql
      .exec<{ user_id: string }>("SELECT user_id FROM users WHERE status != 'offline'")
      .toArray()
      .map((r) => r.user_id);
    for (const userId of present) {
      const { freshUntil } = await this.#refresh(userId, true);
      if (freshUntil > now) next = Math.min(next, freshUntil);
    }
    await this.#relay();
    // Collapsed notifications whose window is over.
    this.#notifier.flushDue(now);
    await this.#sendJobs();
    // A relay that failed is due again at the end of its next window.
    const sweep = next === Infinity ? Infinity : Math.max(next, now + timeout / 4);
    const at = Math.min(sweep, nextExpiry, this.#relayAt ?? Infinity, this.#notifier.nextDue() ?? Infinity);
    if (at !== Infinity) await this.ctx.storage.setAlarm(at);
  }

  /** Closes the sockets whose token has expired by `now` with `4402` (the client gets a fresh token
   * and reconnects; closing does not make anyone offline). Returns when the next one expires. */
  #closeExpired(now: number): number {
    let next = Infinity;
    for (const ws of this.ctx.getWebSockets()) {
      const at = this.#info(ws)?.expiresAt;
      if (at === undefined) continue;
      if (at <= now) this.#close(ws, CLOSE.expired);
      else next = Math.min(next, at);
    }
    return next;
  }

  /** Closes a session with one of our codes. */
  #close(ws: WebSocket, how: { code: number; reason: string }): void {
    this.#drop(ws, how.code);
    try {
      ws.close(how.code, how.reason);
    } catch {
      // already closed
    }
  }

  /** Records a change of one of this shard's users for the next relay (the latest per user). */
  #announce(change: PresenceChange): void {
    this.#relays.set(change.user, change);
    this.#relayAt ??= Date.now() + limitsOf(this.env).presenceRelayWindowMs;
  }

  /** Tells this shard's watchers of the pending changes, then every other shard (whose sessions
   * may watch the users), one RPC each. A shard that could not be told gets them again next window
   * (with anything newer): watchers that were told already are not sent them twice. */
  async #relay(): Promise<void> {
    const changes = [...this.#relays.values()];
    this.#relays.clear();
    this.#relayAt = null;
    if (changes.length === 0) return;
    this.relayAll(changes);
    const meta = this.#meta();
    if (!meta) return;
    const shards = limitsOf(this.env).presenceShards;
    const results = await Promise.allSettled(
      Array.from({ length: shards }, (_, n) => n)
        .filter((n) => n !== meta.shard)
        .map((n) => presenceStub(this.env, meta.tenantId, n).relayAll(changes)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      log({ event: "presence_relay_failed", shard: meta.shard, error: String(failed.reason) });
      for (const change of changes) if (!this.#relays.has(change.user)) this.#announce(change);
    }
  }

  // ---- RPC -----------------------------------------------------------------------------------

  /** Names this object (tenant and shard), so it can reach its sibling shards. Idempotent. */
  init(tenantId: string, shard: number): void {
    this.#sql.exec(
      "INSERT OR REPLACE INTO meta (key, value) VALUES ('tenant', ?), ('shard', ?)",
      tenantId,
      String(shard),
    );
  }

  /** Status changes from any shard: each pushed to this shard's sessions that watch the user and
   * were not told that status already. */
  relayAll(changes: PresenceChange[]): void {
    for (const change of changes) {
      const frame = JSON.stringify({ type: "presence", ...change } satisfies PresenceServerFrame);
      for (const ws of this.#watchersOf(change.user)) {
        let told = this.#told.get(ws);
        if (told?.get(change.user) === change.status) continue;
        if (!told) {
          told = new Map();
          this.#told.set(ws, told);
        }
        told.set(change.user, change.status);
        sendRaw(ws, frame);
      }
    }
  }

  /** One change (the RPC of shards deployed before `relayAll`). */
  relay(change: PresenceChange): void {
    this.relayAll([change]);
  }

  /** A read marker moved on one of the user's devices: their presence sessions learn it. Rooms now
   * say so in their inbox push (`inboxApply`); kept for rooms deployed before. */
  readMoved(userId: string, room: string, seq: number): void {
    const frame = JSON.stringify({ type: "read", room, seq } satisfies PresenceServerFrame);
    for (const ws of this.ctx.getWebSockets(userId)) sendRaw(ws, frame);
  }

  /** New events in a room, from a room deployed before its inbox pushes carried the notices (the
   * shard now tells its members once a push applies: `inboxApply`). */
  activity(room: string, lastSeq: number, members: string[], mentioned: string[]): void {
    this.#tellActivity(room, lastSeq, members, mentioned);
  }

  /** Each of `members` with a session here hears `activity`. */
  #tellActivity(
    room: string,
    lastSeq: number,
    members: readonly string[],
    mentioned: readonly string[],
  ): void {
    const mentions = new Set(mentioned);
    for (const userId of members) {
      const sockets = this.ctx.getWebSockets(userId);
      if (sockets.length === 0) continue;
      const frame = JSON.stringify({
        type: "activity",
        room,
        lastSeq,
        mention: mentions.has(userId),
      } satisfies PresenceServerFrame);
      for (const ws of sockets) sendRaw(ws, frame);
    }
  }

  /** A room's push to the inbox of this shard's users (inbox-store.ts), and the notifications its
   * messages call for (notify-store.ts), decided once the push is applied: a push applies once,
   * so each message is considered once. */
  async inboxApply(push: InboxPush & PushNotices): Promise<InboxAnswer> {
    const answer = this.#inbox.apply(push);
    if (answer.ok && (push.notices?.length || push.latest)) {
      this.#notifier.pushed(push.roomId, push, Date.now());
      await this.#sendJobs();
      await this.#scheduleAlarm();
    }
    return answer;
  }

  // ---- notifications (notify-store.ts) -------------------------------------------------------

  notifyPrefs(userId: string): NotifyPrefs {
    return this.#notifier.prefs(userId);
  }

  setNotifyPrefs(userId: string, change: { default?: NotifyMode; pausedUntil?: number | null }): NotifyPrefs {
    return this.#prefsChanged(userId, this.#notifier.setPrefs(userId, change));
  }

  /** Null: the user has the most rooms with a preference of their own already. */
  setRoomNotifyPref(userId: string, roomId: string, change: Partial<RoomNotifyPref>): NotifyPrefs | null {
    const prefs = this.#notifier.setRoomPref(userId, roomId, change);
    return prefs && this.#prefsChanged(userId, prefs);
  }

  pushSubscribe(
    userId: string,
    id: string,
    sub: PushSubscriptionBody,
    userAgent: string | null,
  ): { id: string; created: boolean } {
    return this.#notifier.subscribe(userId, id, sub, userAgent, Date.now());
  }

  pushSubscriptions(userId: string): PushSubscriptionView[] {
    return this.#notifier.subscriptions(userId);
  }

  pushUnsubscribe(userId: string, id: string): boolean {
    return this.#notifier.unsubscribe(userId, id);
  }

  /** The dead-letter queue gave up on a notification to this subscription. */
  pushFailed(userId: string, id: string): void {
    this.#notifier.failed(userId, id, Date.now());
  }

  /** A test notification to each of the user's devices; resolves with how many. */
  async pushTest(userId: string): Promise<number> {
    const n = this.#notifier.test(userId);
    await this.#sendJobs();
    return n;
  }

  /** The user's account was deactivated (decision 11): their presence sockets close with 4403
   * `deactivated`, they are offline at once (watchers hear it in the next relay), and their push
   * subscriptions are dropped. Idempotent. */
  async endUser(userId: string): Promise<void> {
    this.#ended.add(userId);
    for (const ws of this.ctx.getWebSockets(userId)) this.#close(ws, CLOSE.deactivated);
    this.#notifier.forget(userId);
    const row = this.#sql
      .exec<{ status: string; last_seen: number | null }>(
        "SELECT status, last_seen FROM users WHERE user_id = ?",
        userId,
      )
      .toArray()[0];
    if (row && row.status !== "offline") {
      this.#sql.exec("UPDATE users SET status = 'offline' WHERE user_id = ?", userId);
      this.#announce({ user: userId, status: "offline", lastSeen: row.last_seen });
      await this.#scheduleAlarm();
    }
  }

  /** The user's account was reactivated: they may connect again (nothing else comes back). */
  restoreUser(userId: string): void {
    this.#ended.remove(userId);
  }

  /** The tenant's setting: whether notifications may show who wrote what. */
  setNotifyPreviews(on: boolean): void {
    this.#sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('notify_previews', ?)", on ? "1" : "0");
  }

  /** `GET /api/rooms`'s counts for one of this shard's users, for the rooms the inbox has (null:
   * the rooms the inbox has them in as a member). */
  inboxList(userId: string, roomIds: string[] | null): Record<string, InboxEntry> {
    return this.#inbox.list(userId, roomIds);
  }

  /** Current presence of users held by this shard (unknown users are offline, never seen). */
  snapshot(userIds: string[]): PresenceChange[] {
    return userIds.map((id) => {
      const row = this.#sql
        .exec<{ status: string; last_seen: number | null }>(
          "SELECT status, last_seen FROM users WHERE user_id = ?",
          id,
        )
        .toArray()[0];
      // A present user's latest heartbeat is in their sessions' attachments, not in storage.
      const beat = row && row.status !== "offline" ? this.#derive(id, Date.now()).beat : 0;
      return {
        user: id,
        status: (row?.status as PresenceStatus) ?? "offline",
        lastSeen: Math.max(row?.last_seen ?? 0, beat) || null,
      };
    });
  }

  /** This shard's live figures for GET /api/admin/stats: open sessions (sockets) and its users by
   * current status. Reads one small table (the shard's users) and no other object. */
  counts(): { sessions: number; users: Record<Exclude<PresenceStatus, "offline">, number> } {
    const users = { online: 0, away: 0, dnd: 0 };
    for (const row of this.#sql.exec<{ status: string; n: number }>(
      "SELECT status, COUNT(*) AS n FROM users WHERE status != 'offline' GROUP BY status",
    )) {
      if (row.status in users) users[row.status as keyof typeof users] = row.n;
    }
    return { sessions: this.ctx.getWebSockets().length, users };
  }

  // ---- helpers -------------------------------------------------------------------------------

  /** Presence of any users, asking each user's own shard. */
  async #lookup(userIds: string[]): Promise<PresenceChange[]> {
    const meta = this.#meta();
    if (!meta || userIds.length === 0) return [];
    const shards = limitsOf(this.env).presenceShards;
    const byShard = new Map<number, string[]>();
    for (const id of userIds) {
      const n = shardOf(id, shards);
      byShard.set(n, [...(byShard.get(n) ?? []), id]);
    }
    const parts = await Promise.all(
      [...byShard].map(([n, ids]) =>
        n === meta.shard ? this.snapshot(ids) : presenceStub(this.env, meta.tenantId, n).snapshot(ids),
      ),
    );
    const found = new Map(parts.flat().map((c) => [c.user, c]));
    return userIds.map((id) => found.get(id) as PresenceChange);
  }

  /** Every session of the user hears their new preferences. */
  #prefsChanged(userId: string, prefs: NotifyPrefs): NotifyPrefs {
    const frame = JSON.stringify({ type: "notify_prefs", prefs } satisfies PresenceServerFrame);
    for (const ws of this.ctx.getWebSockets(userId)) sendRaw(ws, frame);
    return prefs;
  }

  /** Whether a session of the user shows the room, or showed it within the grace. */
  #looking(userId: string, roomId: string, now: number): boolean {
    const grace = limitsOf(this.env).notifyFocusGraceMs;
    for (const ws of this.ctx.getWebSockets(userId)) {
      const info = this.#info(ws);
      if (info?.focus === roomId) return true;
      if (info?.left?.room === roomId && now - info.left.at < grace) return true;
    }
    return false;
  }

  /** Hands this turn's notifications to the queue, a hundred a call (the batch limit). A queue that
   * refuses loses them, logged: a notification is a hint, the room keeps every message. */
  async #sendJobs(): Promise<void> {
    const jobs = this.#outgoing;
    if (jobs.length === 0) return;
    this.#outgoing = [];
    const meta = this.#meta();
    if (!meta) return;
    const queue = notifyQueue(this.env, meta.tenantId);
    for (let i = 0; i < jobs.length; i += 100) {
      try {
        await queue.sendBatch(jobs.slice(i, i + 100).map((body) => ({ body, contentType: "json" as const })));
      } catch (err) {
        log({ event: "notify_enqueue_failed", shard: meta.shard, jobs: jobs.length - i, error: String(err) });
        return;
      }
    }
  }

  #metaValue(key: string): string | undefined {
    return this.#sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value;
  }

  #meta(): { tenantId: string; shard: number } | null {
    const rows = this.#sql.exec<{ key: string; value: string }>("SELECT key, value FROM meta").toArray();
    const m = Object.fromEntries(rows.map((r) => [r.key, r.value]));
    return m.tenant ? { tenantId: m.tenant, shard: Number(m.shard ?? 0) } : null;
  }

  #info(ws: WebSocket): SessionInfo | undefined {
    let info = this.#sessions.get(ws);
    if (!info) {
      info = (ws.deserializeAttachment() as SessionInfo | null) ?? undefined;
      if (info) this.#sessions.set(ws, info);
    }
    return info;
  }

  #watchersOf(userId: string): Set<WebSocket> {
    if (!this.#watchers) {
      this.#watchers = new Map();
      for (const ws of this.ctx.getWebSockets()) {
        for (const id of this.#info(ws)?.watch ?? []) this.#watchersOf(id).add(ws);
      }
    }
    let set = this.#watchers.get(userId);
    if (!set) {
      set = new Set();
      this.#watchers.set(userId, set);
    }
    return set;
  }

  #unwatch(ws: WebSocket, info: SessionInfo): void {
    for (const id of info.watch) this.#watchers?.get(id)?.delete(ws);
  }

  /** Forgets a closed session. Counted once per socket: an error may be followed by a close. */
  #drop(ws: WebSocket, code: number): void {
    const info = this.#sessions.get(ws) ?? (ws.deserializeAttachment() as SessionInfo | null) ?? undefined;
    if (info) {
      this.#unwatch(ws, info);
      // Its last heartbeat outlives it: the user's lastSeen once every session is gone.
      this.#sql.exec(
        "UPDATE users SET last_seen = ? WHERE user_id = ? AND COALESCE(last_seen, 0) < ?",
        info.beatAt,
        info.userId,
        info.beatAt,
      );
    }
    this.#sessions.delete(ws);
    if (!info || this.#closed.has(ws)) return;
    this.#closed.add(ws);
    record(this.env, { name: "ws_close", tenant: info.tenantId, object: "presence", room: "", code });
  }
}

/** FNV-1a of the user id: a stable shard for a user across isolates and deploys. */
export function shardOf(userId: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) {
    h ^= userId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % shards;
}

export function presenceStub(env: Env, tenantId: string, shard: number) {
  const namespace = tenantNamespace(env, env.PRESENCE, tenantId);
  return namespace.get(namespace.idFromName(`${tenantId}:presence:${shard}`));
}

function send(ws: WebSocket, frame: PresenceServerFrame): void {
  sendRaw(ws, JSON.stringify(frame));
}

function sendRaw(ws: WebSocket, frame: string): void {
  try {
    ws.send(frame);
  } catch {
    // closing socket: the client catches up from GET /api/rooms when it reconnects
  }
}
