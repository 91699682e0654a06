/**
 * @module Every limit Parley enforces, with the reason for each number, and how a deployment
 * overrides it through wrangler variables (`[vars]` in wrangler.toml, `.dev.vars` locally).
 */
import { perEnv } from "./per-env.ts";

export interface Limits {
  /** Largest WebSocket frame accepted from a client, in bytes. The runtime itself only stops frames
   * at 32 MiB; a 16 KiB message plus JSON framing fits comfortably in 64 KiB, so anything larger
   * is abuse or a bug and is refused with `too_large` before it is parsed. */
  maxFrameBytes: number;
  /** Largest message text in UTF-8 bytes (docs/protocol.md: ≤ 16 KiB). */
  maxTextBytes: number;
  /** Most events replayed on connect before the server answers `gap` instead (docs/protocol.md: ≥ 500).
   * Bounded so that one reconnect cannot make the room's single thread serialise its whole log. */
  replayCap: number;
  /** Sustained commands per user per second in one room (token bucket). Generous for a human,
   * small enough that one client cannot monopolise a room's thread. Load tests raise it. */
  userCommandsPerSecond: number;
  /** Burst allowance of that bucket: a user may send this many at once after being idle. */
  userCommandBurst: number;
  /** Malformed frames tolerated per socket within `badFrameWindowMs` before close 1008. A client
   * with a bug gets errors it can log; only one that keeps sending garbage is disconnected. */
  badFrameLimit: number;
  badFrameWindowMs: number;
  /** Typing notices forwarded per user (docs/protocol.md: at most one per 2 s). */
  typingIntervalMs: number;
  /** History page size: default and ceiling (docs/protocol.md: limit ≤ 200). */
  historyDefaultLimit: number;
  historyMaxLimit: number;
  /** Attachment ids one message may reference. */
  maxAttachmentsPerMessage: number;
  /** Emoji in a reaction (docs/protocol.md: ≤ 32 chars). */
  maxEmojiChars: number;
  /** Room name and topic lengths, in characters. */
  maxRoomNameChars: number;
  maxRoomTopicChars: number;
  /** Largest JSON request body accepted by the HTTP API, in bytes. */
  maxJsonBodyBytes: number;
  /** Events per outgoing `events` frame and the size budget of one such frame (in characters of
   * JSON, at most three bytes each): big enough to amortise the per-frame cost (Cloudflare advises
   * 10–100 messages a frame), small enough that a burst of large messages does not buffer
   * megabytes per socket. */
  maxEventsPerFrame: number;
  maxOutFrameChars: number;
  /** Flow control of room sockets (durable-objects/room-flow.ts): bytes of event frames a socket
   * opened with `flow=1` may have unconfirmed before the room stops writing to it (the events wait
   * in the log, not in memory). 1 MiB carries a chat room's busiest minute at any real round-trip
   * time and keeps 1,000 stalled readers under 1 GB of buffers in the runtime, not in the object. */
  flowWindowBytes: number;
  /** A paused socket that confirms nothing for this long is closed (4008) and resumes with `after`:
   * a reader stuck this long is gone or hopeless, and its slot is better given back. The same for an
   * SSE stream catching up whose reader takes nothing. */
  flowStallMs: number;
  /** A socket without `flow=1` never confirms, so this is all it is sent on one connection before
   * it is closed (4008) to resume with `after`. It is also what an SSE stream may have unread before
   * it is paused (room-fallback.ts): either way the most one reader makes the room buffer. */
  unconfirmedStreamBytes: number;
  /** SSE streams and waiting long polls one user may hold open in one room at once. Each stream may
   * hold up to `unconfirmedStreamBytes` of a slow reader's events in the room's memory (128 MB for
   * everything the object holds), so without a bound a member could fill a shared room's memory with
   * a few opens. Five covers one person's devices and tabs on a network that blocks WebSockets (the
   * web client holds one stream per open room per tab) and bounds one member to 20 MiB of buffers. */
  maxStreamsPerUser: number;
  /** Lifetime of a dev login token, in seconds. */
  devTokenTtlSeconds: number;
  /** A user is offline when none of their sessions has sent a heartbeat for this long
   * (docs/protocol.md: 60 s; clients beat at least every 30 s, so one lost beat is tolerated). */
  presenceTimeoutMs: number;
  /** Users one presence session may watch (docs/protocol.md: ≤ 500). */
  maxWatch: number;
  /** Presence shards per tenant (users assigned by hash): one object holds every session of its
   * users, so a very large tenant spreads them over several. */
  presenceShards: number;
  /** Status changes one presence session may make (a heartbeat whose status differs from the
   * session's; the same status is always free): a burst, then one per interval. Each change reaches
   * every watcher of the user on every shard, so an alternating burst is amplification; a person
   * toggling away/dnd, or a client following focus and idleness, stays well within 5 and one per 2 s.
   * A refused change gets `rate_limited` and changes nothing. */
  presenceChangeBurst: number;
  presenceChangeIntervalMs: number;
  /** A shard tells watchers (its own and, in one RPC each, the other shards) of its users' status
   * changes once per window, the latest status per user, instead of once per change. */
  presenceRelayWindowMs: number;
  /** Activity notices from a room to presence are coalesced over this window: one notice per
   * window per shard instead of one per message (a busy room would otherwise flood presence). */
  activityWindowMs: number;
  /** Largest upload, in bytes (docs/protocol.md leaves it to the deployment; 25 MiB by default). */
  maxAttachmentBytes: number;
  /** An upload no message references is deleted (object and row) this long after it was made. */
  attachmentGraceMs: number;
  /** Per-user quotas (durable-objects/quota.ts), shared by all of a user's requests wherever they
   * land. Rooms created (channels, private rooms, new dms): a bucket of this many, refilled at this
   * many an hour. Each room is a directory row, an object and, for a channel, an entry in every
   * member's list: a person sets up a handful at a time (an admin seeding a team's channels, 20),
   * while a script creating hundreds spams the whole tenant. */
  roomsPerUserPerHour: number;
  /** Uploads per user per UTC day, by count and by bytes. A day of real use (screenshots, documents)
   * is tens of files; 500 and 1 GiB (forty uploads of the largest size) leave room for heavy days
   * and stop a client from filling the tenant's bucket in a loop. The bytes are never fewer than
   * one largest upload. */
  uploadsPerUserPerDay: number;
  uploadBytesPerUserPerDay: number;
  /** Full-text searches per user: a bucket of this many, refilled at this many a minute. Each one
   * runs an FTS query over every room the user is in; the web client searches when the user submits
   * a query (not per keystroke), so 20 back to back is a person refining a search, far fewer than
   * a script sweeping the archive. */
  searchesPerUserPerMinute: number;
  /** Search parts per tenant (durable-objects/search.ts): a tenant's rooms are spread over this many
   * search shard objects by a hash of the room id, and a query asks only the parts holding rooms the
   * caller may read. Four parts keep each under ~250,000 messages for a tenant of a million, where
   * a broad FTS5 query stays near 100 ms (docs/architecture.md). Fixed per tenant when it is first
   * used, so changing it affects only tenants that have not searched or sent yet. */
  searchParts: number;
  /** Messages one search shard generation holds before the next generation of its part opens: about
   * 0.5 GB of FTS5 index and rows at ~250 bytes a message, a twentieth of a Durable Object's 10 GB,
   * and small enough that a generation's broad query stays fast. */
  searchShardMessages: number;
  /** D1 history (worker/history/placement.ts): a history shard past this many bytes takes no new
   * period; its tenants' next periods go to other shards. 4 GB is 40% of D1's 10 GB cap, which
   * leaves room for what is written between the check and the move, for the window's deletions to
   * catch up, and for a restore; small values exist for tests. */
  historyShardBytes: number;
  /** Days of history the D1 shards keep (older rows are deleted by the scheduled job; R2 and the
   * rooms keep everything). 90 days covers the queries people run across rooms (last quarter). */
  historyDays: number;
  /** Hits one search returns (each part returns at most this many, merged by rank). */
  searchHits: number;
  /** The least time between two sends of a room to its search part. An idle room sends at once;
   * a busy one gathers what it commits meanwhile into one RPC and one index transaction instead of
   * one per flush. 20 ms adds at most that to "findable after the ack" (bound: 100 ms p99) and
   * caps a room at 50 index RPCs a second. */
  searchShipIntervalMs: number;
  /** The least time between two pushes of a room to its members' inboxes (the counts of
   * `GET /api/rooms`, durable-objects/room-inbox.ts): an idle room pushes at once, a busy one
   * gathers what it commits meanwhile into one RPC per presence shard, so a room sends at most 10
   * a second per shard whatever its traffic, and the list lags a socket's ack by at most this.
   * 100 ms: under the 250 ms the web client waits after an activity notice before it reads the
   * list (each notice itself comes 250 ms after the first commit it covers), and a
   * fifth of the pushes (each an RPC and a transaction in the shard) of the 20 ms it was; measured
   * in issue 15 as the largest share of a small busy room's derived work. */
  inboxShipIntervalMs: number;
  /** How long a socket's `read` frame is held before it is written, with every other held marker of
   * the room in one transaction: a reader scrolling through a busy room sends a frame per screen,
   * and a row each would be the room's busiest writes after messages. A second keeps what a crash
   * can lose to the last second of reading (the SDK sends its marker again on reconnect) and is
   * shorter than anyone switches device. */
  readFlushMs: number;
  /** Longest stored file name, in characters: enough for any real name, short enough for every
   * file system a download lands on (most cap a name at 255 bytes). */
  maxFilenameChars: number;
  /** The outbox drain: how soon after an event the room sends it to the queue (events written in
   * between go in the same pass), and the most events per pass. */
  outboxDrainDelayMs: number;
  outboxBatch: number;
  /** Longest backoff after the queue refused a send. */
  outboxMaxBackoffMs: number;
  /** An event the archive has not confirmed this long after it was sent is sent again: queues
   * deliver at least once, but locally they live in memory and die with the process. */
  archiveResendMs: number;
  /** The hot window: the room keeps the JSON of at least this many newest events in its SQLite
   * (never fewer than `replayCap`, so a replay never reaches R2); older events are served from their
   * segments in R2. Segments hold `segmentEvents` each, or fewer when sealed by age. */
  hotEvents: number;
  segmentEvents: number;
  /** R2 holds every room's complete history (docs/architecture.md, decision 4): the alarm seals the
   * oldest unsealed events into a segment once `segmentEvents` of them are waiting, or once the
   * oldest of them is this old, whichever comes first. An hour bounds what a quiet room has only in
   * its own SQLite (the D1 history has it within seconds, so R2 is its second copy, not its first)
   * while keeping a quiet room to at most 24 small segments a day. */
  sealAfterMs: number;
  /** The command window: the room keeps a slim row (ids, flags, commitments; ~100 bytes) for the
   * newest this many events, and nothing for older ones, whose copy of record is their segment.
   * Retries, edits and reactions work inside the window (a week of a very busy room at 200,000);
   * deletes and replies read older targets back from R2. Never fewer than `hotEvents`. At ~100
   * bytes a row it is ~20 MB of the object's 10 GB, whatever the room's age. */
  commandWindowEvents: number;
  /** How often a room re-checks its retention policy and cleans up attachments. */
  housekeepingMs: number;
  /** Notifications (docs/architecture.md, decision 10): one per user and room per this window; what
   * comes during it is sent at its end as one notification with a count, so a busy direct message
   * rings once, not forty times. Ten seconds: a conversation's replies come faster than that. */
  notifyCollapseMs: number;
  /** A room a session showed stays "looked at" this long after the page was hidden or switched
   * away, so a glance elsewhere does not ring for what was just on screen. */
  notifyFocusGraceMs: number;
  /** Push subscriptions per user (one per browser or device): a new one past it replaces the one
   * registered longest ago, which is the most likely to be a browser no longer used. */
  maxPushSubscriptions: number;
  /** Rooms with a preference of their own, per user. */
  maxRoomNotifyPrefs: number;
  /** Longest wait before a notification whose push service failed is tried again (the backoff
   * doubles from 2 s up to it, unless the service said `Retry-After`). Five minutes: with the
   * queue's 8 tries a notification is given up on after about ten minutes, when it is stale. */
  notifyRetryMaxSeconds: number;
  /** Outgoing webhooks (durable-objects/webhook.ts): the longest wait between tries of a failing
   * endpoint (an hour: a receiver down for a day is tried 24 times, not thousands), and how long it
   * may fail without one success before it is disabled (a day, the design's "sustained failure"). */
  webhookMaxBackoffMs: number;
  webhookDisableAfterMs: number;
}

/**
 * Messages per delivery to the room-events consumer (`max_batch_size` of the room-events queues in
 * wrangler.toml; test/scripts/queue-config.test.ts keeps them equal). A message is a room's pack of
 * up to `PACK_EVENTS` (20) events, and a Worker invocation may make 1,000 D1 queries: 10 packs are
 * 200 events, at most about 450 statements even when every event is an edit or a delete (two
 * statements each; test/unit/archive-statements.test.ts).
 */
export const ROOM_EVENTS_BATCH = 10;

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFrameBytes: 64 * 1024,
  maxTextBytes: 16 * 1024,
  replayCap: 1000,
  userCommandsPerSecond: 20,
  userCommandBurst: 40,
  badFrameLimit: 10,
  badFrameWindowMs: 10_000,
  typingIntervalMs: 2_000,
  historyDefaultLimit: 50,
  historyMaxLimit: 200,
  maxAttachmentsPerMessage: 10,
  maxEmojiChars: 32,
  maxRoomNameChars: 80,
  maxRoomTopicChars: 250,
  maxJsonBodyBytes: 64 * 1024,
  maxEventsPerFrame: 100,
  maxOutFrameChars: 128 * 1024,
  flowWindowBytes: 1024 * 1024,
  flowStallMs: 30_000,
  unconfirmedStreamBytes: 4 * 1024 * 1024,
  maxStreamsPerUser: 5,
  devTokenTtlSeconds: 12 * 60 * 60,
  presenceTimeoutMs: 60_000,
  maxWatch: 500,
  presenceShards: 1,
  presenceChangeBurst: 5,
  presenceChangeIntervalMs: 2_000,
  presenceRelayWindowMs: 250,
  activityWindowMs: 250,
  maxAttachmentBytes: 25 * 1024 * 1024,
  attachmentGraceMs: 24 * 60 * 60 * 1000,
  maxFilenameChars: 200,
  roomsPerUserPerHour: 20,
  uploadsPerUserPerDay: 500,
  uploadBytesPerUserPerDay: 1024 * 1024 * 1024,
  searchesPerUserPerMinute: 20,
  searchParts: 4,
  searchShardMessages: 2_000_000,
  searchHits: 50,
  searchShipIntervalMs: 20,
  inboxShipIntervalMs: 100,
  readFlushMs: 1000,
  historyShardBytes: 4_000_000_000,
  historyDays: 90,
  outboxDrainDelayMs: 200,
  outboxBatch: 500,
  outboxMaxBackoffMs: 60_000,
  archiveResendMs: 60_000,
  hotEvents: 20_000,
  segmentEvents: 1_000,
  sealAfterMs: 60 * 60 * 1000,
  commandWindowEvents: 200_000,
  housekeepingMs: 60 * 60 * 1000,
  notifyCollapseMs: 10_000,
  notifyFocusGraceMs: 5_000,
  maxPushSubscriptions: 20,
  maxRoomNotifyPrefs: 5_000,
  notifyRetryMaxSeconds: 300,
  webhookMaxBackoffMs: 60 * 60 * 1000,
  webhookDisableAfterMs: 24 * 60 * 60 * 1000,
});

/** The wrangler variables that override a limit, and the floor each must respect. */
const OVERRIDES = {
  PARLEY_USER_COMMANDS_PER_SECOND: { key: "userCommandsPerSecond", min: 1, max: 1_000_000 },
  PARLEY_MAX_FRAME_BYTES: { key: "maxFrameBytes", min: 4096, max: 1024 * 1024 },
  // docs/protocol.md caps message text at 16 KiB: a deployment may lower it, not raise it.
  PARLEY_MAX_TEXT_BYTES: { key: "maxTextBytes", min: 1, max: 16 * 1024 },
  PARLEY_REPLAY_CAP: { key: "replayCap", min: 500, max: 100_000 },
  // Changing it moves users between shards: set it before a tenant's first sign-in.
  PARLEY_PRESENCE_SHARDS: { key: "presenceShards", min: 1, max: 64 },
  // Workers accept request bodies up to 100 MB on most plans.
  PARLEY_MAX_ATTACHMENT_BYTES: { key: "maxAttachmentBytes", min: 1024, max: 100 * 1000 * 1000 },
  PARLEY_ATTACHMENT_GRACE_MS: { key: "attachmentGraceMs", min: 0, max: 30 * 24 * 60 * 60 * 1000 },
  // The derived stores' gathering of a busy room (0: a send per flush). The search one bounds how
  // long after its ack a message of a busy room is findable: issue 14 allows 100 ms p99.
  PARLEY_SEARCH_SHIP_INTERVAL_MS: { key: "searchShipIntervalMs", min: 0, max: 100 },
  PARLEY_INBOX_SHIP_INTERVAL_MS: { key: "inboxShipIntervalMs", min: 0, max: 10_000 },
  PARLEY_ARCHIVE_RESEND_MS: { key: "archiveResendMs", min: 1000, max: 24 * 60 * 60 * 1000 },
  PARLEY_HOT_EVENTS: { key: "hotEvents", min: 500, max: 10_000_000 },
  PARLEY_SEGMENT_EVENTS: { key: "segmentEvents", min: 10, max: 100_000 },
  // Small values exist for tests; a day at most, so R2 is never far behind a quiet room.
  PARLEY_SEAL_AFTER_MS: { key: "sealAfterMs", min: 1000, max: 24 * 60 * 60 * 1000 },
  // Raised to PARLEY_HOT_EVENTS when below it (in readLimits): the hot window's rows are rows.
  PARLEY_COMMAND_WINDOW_EVENTS: { key: "commandWindowEvents", min: 500, max: 100_000_000 },
  // At least twice what a client may leave unconfirmed (RECEIVED_EVERY_BYTES), or a reader that
  // keeps up could be paused.
  PARLEY_FLOW_WINDOW_BYTES: { key: "flowWindowBytes", min: 512 * 1024, max: 64 * 1024 * 1024 },
  PARLEY_FLOW_STALL_MS: { key: "flowStallMs", min: 1000, max: 60 * 60 * 1000 },
  PARLEY_UNCONFIRMED_STREAM_BYTES: {
    key: "unconfirmedStreamBytes",
    min: 512 * 1024,
    max: 1024 * 1024 * 1024,
  },
  PARLEY_MAX_STREAMS_PER_USER: { key: "maxStreamsPerUser", min: 1, max: 100 },
  PARLEY_USER_ROOMS_PER_HOUR: { key: "roomsPerUserPerHour", min: 1, max: 1_000_000 },
  PARLEY_USER_UPLOADS_PER_DAY: { key: "uploadsPerUserPerDay", min: 1, max: 1_000_000_000 },
  // At least one largest upload (checked in readLimits).
  PARLEY_USER_UPLOAD_BYTES_PER_DAY: {
    key: "uploadBytesPerUserPerDay",
    min: 1024,
    max: 1024 * 1024 * 1024 * 1024,
  },
  PARLEY_USER_SEARCHES_PER_MINUTE: { key: "searchesPerUserPerMinute", min: 1, max: 1_000_000 },
  PARLEY_SEARCH_PARTS: { key: "searchParts", min: 1, max: 64 },
  PARLEY_HISTORY_SHARD_BYTES: { key: "historyShardBytes", min: 16_384, max: 9_000_000_000 },
  PARLEY_HISTORY_DAYS: { key: "historyDays", min: 1, max: 36_500 },
  // Small values exist for tests, which fill generations with a handful of messages.
  PARLEY_SEARCH_SHARD_MESSAGES: { key: "searchShardMessages", min: 2, max: 20_000_000 },
  // Small values exist for tests, which would otherwise wait out the window.
  PARLEY_NOTIFY_COLLAPSE_MS: { key: "notifyCollapseMs", min: 100, max: 10 * 60 * 1000 },
  PARLEY_NOTIFY_FOCUS_GRACE_MS: { key: "notifyFocusGraceMs", min: 0, max: 10 * 60 * 1000 },
  // 0 retries at once: tests reach the dead-letter queue without waiting minutes.
  PARLEY_NOTIFY_RETRY_MAX_SECONDS: { key: "notifyRetryMaxSeconds", min: 0, max: 12 * 3600 },
  // Small values exist for tests: a dead endpoint is disabled within seconds.
  PARLEY_WEBHOOK_MAX_BACKOFF_MS: { key: "webhookMaxBackoffMs", min: 500, max: 24 * 3600 * 1000 },
  PARLEY_WEBHOOK_DISABLE_AFTER_MS: { key: "webhookDisableAfterMs", min: 1000, max: 30 * 24 * 3600 * 1000 },
} as const satisfies Record<string, { key: keyof Limits; min: number; max: number }>;

export type LimitVars = Partial<Record<keyof typeof OVERRIDES, string | undefined>>;

/**
 * Reads the limits of this deployment. A variable that is set but not a number at or above its
 * floor is a configuration mistake: it throws, so the deployment fails on its first request with
 * a clear message instead of silently running with a different limit.
 */
export function readLimits(vars: LimitVars): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [name, { key, min, max }] of Object.entries(OVERRIDES)) {
    const raw = vars[name as keyof LimitVars];
    if (raw === undefined || raw.trim() === "") continue;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new Error(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
    }
    limits[key] = value;
  }
  // The burst follows a raised rate so that a load test's ack-paced window is not throttled.
  limits.userCommandBurst = Math.max(DEFAULT_LIMITS.userCommandBurst, limits.userCommandsPerSecond * 2);
  // A replay is served from the room's SQLite, never from cold segments.
  limits.hotEvents = Math.max(limits.hotEvents, limits.replayCap);
  // The hot window's events keep their rows (with their JSON), so the command window holds it.
  limits.commandWindowEvents = Math.max(limits.commandWindowEvents, limits.hotEvents);
  // The text limit can never exceed what a frame can carry.
  limits.maxTextBytes = Math.min(limits.maxTextBytes, limits.maxFrameBytes - 1024);
  // A day's bytes that cannot hold one largest upload would refuse a valid file all day.
  if (limits.uploadBytesPerUserPerDay < limits.maxAttachmentBytes) {
    throw new Error(
      `PARLEY_USER_UPLOAD_BYTES_PER_DAY (${limits.uploadBytesPerUserPerDay}) must be at least PARLEY_MAX_ATTACHMENT_BYTES (${limits.maxAttachmentBytes})`,
    );
  }
  return limits;
}

/** `readLimits` memoised per env object. */
export const limitsOf = perEnv((env: LimitVars & object): Limits => readLimits(env));
