/**
 * @module The Room Durable Object: one per room, named `<tenantId>:<roomId>`. This file holds the
 * room's dispatch (each frame and RPC to the part that owns it, after authorization and the rate
 * limit) and its RPC surface. The parts, each in its own module:
 *
 * - the log, members and read markers: room-log.ts (schema: room-schema.ts);
 * - the rules of commands: room-commands.ts; attachments: room-attachments.ts;
 * - the streams' entry (WebSocket, SSE, long poll): room-streams.ts; what sockets carry (fan-out,
 *   flow control, closing): room-sockets.ts; SSE and the long poll's wait: room-fallback.ts;
 * - what follows a commit (readers, derived stores, presence notices, metrics): room-fanout.ts;
 * - the derived stores' feeds: room-archive.ts (D1 history), room-search.ts, room-inbox.ts; the
 *   segments in R2: room-cold.ts;
 * - the background work on the alarm: room-maintenance.ts (on scheduler.ts).
 *
 * The worker authenticates and forwards the upgrade unchanged (with the caller's identity in a
 * header only it can set). Per-socket state lives in the socket's attachment, so nothing is lost
 * when the object hibernates.
 */
import { DurableObject } from "cloudflare:workers";
import { type Limits, limitsOf } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { directoryDb, filesBucket, roomEventsQueue } from "../platform/residency.ts";
import { exportLine, type RoomHead } from "../protocol/chain.ts";
import { COMMANDS } from "../protocol/commands.ts";
import {
  CLOSE,
  type ClientFrame,
  type Failure,
  failure,
  PING_FRAME,
  PONG_FRAME,
  parseClientFrame,
  type SequencedCommand,
  type ServerFrame,
  type UserRef,
} from "../protocol/index.ts";
import { EndedUsers } from "./ended-users.ts";
import { RateLimiter } from "./rate-limit.ts";
import { ArchiveFeed, type ArchiveState } from "./room-archive.ts";
import { type AttachmentRecord, RoomAttachments } from "./room-attachments.ts";
import { ColdArchive } from "./room-cold.ts";
import {
  type Actor,
  type ArchivedTargets,
  applyCommand,
  archivedTargetsOf,
  type CommandResult,
  type CommandStores,
} from "./room-commands.ts";
import { FallbackTransports, type StreamState } from "./room-fallback.ts";
import { RoomFanout, RoomMetrics } from "./room-fanout.ts";
import { InboxFeed } from "./room-inbox.ts";
import { type Member, RoomLog, type RoomMeta, type StoredRow, type TargetRow } from "./room-log.ts";
import { RoomMaintenance } from "./room-maintenance.ts";
import { SearchFeed } from "./room-search.ts";
import { closeQuietly, RoomSockets, type SocketInfo, send, sendError } from "./room-sockets.ts";
import { RoomStreams } from "./room-streams.ts";

export type { SocketInfo } from "./room-sockets.ts";

export { encodeIdentity, IDENTITY_HEADER } from "./room-streams.ts";

export interface HistoryQuery {
  before?: number;
  after?: number;
  limit: number;
}

export interface RoomSummary {
  lastSeq: number;
  readSeq: number;
  unread: number;
  mentions: number;
}

export class Room extends DurableObject<Env> {
  readonly #log: RoomLog;
  readonly #archive: ArchiveFeed;
  readonly #cold: ColdArchive;
  readonly #attachments: RoomAttachments;
  readonly #stores: CommandStores;
  readonly #limits: Limits;
  /** The background work on the alarm (room-maintenance.ts). Not an RPC method: tests reach it
   * through `runInDurableObject` to run a step with a given clock. */
  readonly maintenance: RoomMaintenance;
  readonly #rate: RateLimiter;
  readonly #sockets: RoomSockets;
  readonly #fanout: RoomFanout;
  readonly #streams: RoomStreams;
  readonly #metrics: RoomMetrics;
  readonly #fallback: FallbackTransports;
  /** Members whose account was deactivated (ended-users.ts). */
  readonly #ended: EndedUsers;
  readonly #search: SearchFeed;
  readonly #inbox: InboxFeed;
  /** Per user, the command waiting for R2 that their next commands wait behind (see `#apply`). */
  readonly #inFlight = new Map<string, Promise<void>>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#limits = limitsOf(env);
    this.#log = new RoomLog(ctx.storage);
    this.#cold = new ColdArchive({
      storage: ctx.storage,
      log: this.#log,
      limits: this.#limits,
      // Read when used (tests put a bucket of their own in `env`, as they do a queue).
      bucket: () => filesBucket(this.env, this.#meta().tenantId),
      prefix: () => `${this.#meta().tenantId}/rooms/${this.#meta().roomId}`,
    });
    this.#archive = new ArchiveFeed({
      storage: ctx.storage,
      limits: this.#limits,
      log: this.#log,
      cold: this.#cold,
      // Read when sending (tests put a queue of their own in `env`).
      queue: () => roomEventsQueue(this.env, this.#meta().tenantId),
      meta: () => this.#log.meta(),
      reschedule: () => this.#scheduleNext(),
    });
    this.#search = new SearchFeed({
      env,
      limits: this.#limits,
      log: this.#log,
      cold: this.#cold,
      meta: () => this.#log.meta(),
    });
    this.#inbox = new InboxFeed({
      env,
      limits: this.#limits,
      log: this.#log,
      sql: ctx.storage.sql,
      meta: () => this.#log.meta(),
      wakeAt: (at) => this.#wakeAt(at),
    });
    // After the log: its migrations create the attachments table.
    this.#attachments = new RoomAttachments(ctx.storage.sql);
    this.#ended = new EndedUsers(ctx.storage.sql);
    this.#stores = {
      log: this.#log,
      attachments: this.#attachments,
      maxAttachments: this.#limits.maxAttachmentsPerMessage,
    };
    this.#rate = new RateLimiter(this.#limits.userCommandsPerSecond, this.#limits.userCommandBurst);
    this.#fallback = new FallbackTransports(
      {
        flushedSeq: () => this.#sockets.flushedSeq,
        coldSeq: () => this.#cold.coldSeq,
        jsonAfter: (after, until, maxRows, maxBytes) => this.#log.jsonAfter(after, until, maxRows, maxBytes),
      },
      this.#limits,
    );
    this.#sockets = new RoomSockets(ctx, {
      log: this.#log,
      limits: this.#limits,
      coldSeq: () => this.#cold.coldSeq,
      closed: (code) => this.#metrics.socketClosed(code),
      published: (jsons) => this.#fallback.publish(jsons),
    });
    this.#metrics = new RoomMetrics(() => this.env, this.#log);
    this.#fanout = new RoomFanout({
      limits: this.#limits,
      sockets: this.#sockets,
      search: this.#search,
      inbox: this.#inbox,
      archive: this.#archive,
      metrics: this.#metrics,
      wakeAt: (at) => this.#wakeAt(at),
    });
    this.#streams = new RoomStreams({
      ctx,
      limits: this.#limits,
      log: this.#log,
      cold: this.#cold,
      sockets: this.#sockets,
      fallback: this.#fallback,
      metrics: this.#metrics,
      wakeAt: (at) => this.#wakeAt(at),
      ended: (userId) => this.#ended.has(userId),
    });
    this.maintenance = new RoomMaintenance({
      storage: ctx.storage,
      env,
      limits: this.#limits,
      log: this.#log,
      cold: this.#cold,
      archive: this.#archive,
      search: this.#search,
      inbox: this.#inbox,
      attachments: this.#attachments,
      sockets: this.#sockets,
    });
    // Pings are answered by the runtime without waking a hibernated room.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
    // Work left by an earlier life (an outbox not drained, a segment not rewritten) is resumed:
    // the alarm is re-derived from the stored state.
    void ctx.blockConcurrencyWhile(async () => {
      await this.maintenance.load();
      this.#scheduleNext();
    });
  }

  #meta(): RoomMeta {
    const meta = this.#log.meta();
    if (!meta) throw new Error("room not initialised");
    return meta;
  }

  // ---- RPC: called by the worker -------------------------------------------------------------

  /** Records which tenant and room this object is. Idempotent; refuses to change tenant. */
  init(meta: RoomMeta, retentionDays?: number | null): void {
    const current = this.#log.meta();
    if (current && (current.tenantId !== meta.tenantId || current.roomId !== meta.roomId)) {
      throw new Error("room object already belongs to another room");
    }
    this.#log.setMeta(meta);
    if (retentionDays !== undefined && retentionDays !== this.#log.retentionDays)
      this.setRetention(retentionDays);
  }

  /**
   * Adds members: one sequenced `member_join` (by `actor`: the joiner themself, or whoever added
   * them) for each who is not a member yet, all in one transaction. Existing members are skipped.
   * Rate-limited per actor like one command. Returns the ids that joined.
   */
  async join(members: Member[], actor: UserRef): Promise<{ ok: true; joined: string[] } | Failure> {
    const newcomers = members.filter(
      (m, i) => !this.#log.member(m.id) && members.findIndex((o) => o.id === m.id) === i,
    );
    if (newcomers.length === 0) return { ok: true, joined: [] };
    const refused = this.#admit(actor.id);
    if (refused) return refused;
    const author = { id: actor.id, name: actor.name };
    const appended = this.#log.transaction(() =>
      newcomers.map((member) =>
        this.#log.append(
          { kind: "member_join", ts: Date.now(), author, user: { id: member.id, name: member.name } },
          { apply: () => this.#log.putMember(member) },
        ),
      ),
    );
    this.#fanout.committed("member_join", appended);
    // Answered once the newcomers' inboxes have the room (a room list right after shows it).
    this.#inbox.membersChanged(newcomers.map((m) => m.id));
    await this.#inbox.settle();
    return { ok: true, joined: newcomers.map((m) => m.id) };
  }

  /** Removes a member (a sequenced `member_leave`) and closes their sockets at once. Never
   * rate-limited: losing access must not wait (re-joining is limited, which bounds join/leave loops). */
  async leave(userId: string, actor: UserRef): Promise<{ ok: true; seq: number | null } | Failure> {
    const member = this.#log.member(userId);
    if (!member) return { ok: true, seq: null };
    const result = this.#log.append(
      { kind: "member_leave", ts: Date.now(), author: actor, user: { id: member.id, name: member.name } },
      { apply: () => this.#log.removeMember(userId) },
    );
    this.#fanout.committed("member_leave", [result]);
    // 4403's reason tells the client who ended its access ("left": itself, on any device).
    const how = actor.id === userId ? CLOSE.left : CLOSE.removed;
    this.#fallback.revoke(userId, how);
    this.#sockets.closeUser(userId, how);
    this.#inbox.membersChanged([userId]);
    await this.#inbox.settle();
    return { ok: true, seq: result.seq };
  }

  /** The user's account was deactivated (decision 11): their sockets close and their streams end
   * with 4403 `deactivated`, and waiting polls return refused; they stay a member (their messages
   * stay, and every new request of theirs is refused before it reaches a room). The room keeps that
   * they ended, and refuses their streams itself until they are reactivated (decision 12).
   * Idempotent. */
  endUser(userId: string): void {
    this.#ended.add(userId);
    this.#fallback.revoke(userId, CLOSE.deactivated);
    this.#sockets.closeUser(userId, CLOSE.deactivated);
  }

  /** The user's account was reactivated: they may open streams here again. Idempotent. */
  restoreUser(userId: string): void {
    this.#ended.remove(userId);
  }

  /** A sequenced command over HTTP: the same rules, limits and idempotency as over a socket. */
  async command(actor: Actor, cmd: SequencedCommand): Promise<CommandResult> {
    const refused = this.#admit(actor.id);
    const result: CommandResult = refused
      ? { ...refused, clientId: cmd.clientId }
      : await this.#apply(actor, cmd);
    if (!result.ok) this.#metrics.refused(result.code, cmd.type, "http");
    // Over HTTP the answer waits for the inboxes (a room list after it counts the event).
    else await this.#inbox.settle();
    return result;
  }

  /** A page of the log as the JSON body `{"events":[…],"hasMore"}`, built from the stored JSON;
   * what the room's SQLite no longer holds is read back from the segments in R2. */
  async history(userId: string, q: HistoryQuery): Promise<{ ok: true; body: string } | Failure> {
    if (!this.#log.member(userId)) return failure("forbidden", "join the room to read it");
    const limit = q.limit;
    let rows: StoredRow[];
    let hasMore: boolean;
    if (q.after !== undefined) {
      rows = await this.#cold.readAfter(q.after, limit + 1);
      hasMore = rows.length > limit;
      if (hasMore) rows.pop();
    } else {
      rows = await this.#cold.readBefore(q.before ?? this.#log.lastSeq + 1, limit + 1);
      hasMore = rows.length > limit;
      if (hasMore) rows.shift();
    }
    return { ok: true, body: `{"events":[${rows.map((r) => r.json).join(",")}],"hasMore":${hasMore}}` };
  }

  /** Moves the caller's read marker (never backwards): written before the answer, which waits
   * for the user's inbox too (`PUT /api/rooms/:id/read`). */
  async markRead(userId: string, seq: number): Promise<{ ok: true; readSeq: number } | Failure> {
    const refused = this.#readRefused(userId, seq);
    if (refused) return refused;
    const readSeq = this.#inbox.readNow(userId, seq);
    await this.#inbox.settle();
    return { ok: true, readSeq };
  }

  #readRefused(userId: string, seq: number): Failure | null {
    if (!this.#log.member(userId)) return failure("forbidden", "join the room first");
    if (seq > this.#log.lastSeq)
      return failure("bad_request", `seq ${seq} is beyond the log (lastSeq ${this.#log.lastSeq})`);
    return null;
  }

  summary(userId: string): RoomSummary {
    const lastSeq = this.#log.lastSeq;
    if (!this.#log.member(userId)) return { lastSeq, readSeq: 0, unread: 0, mentions: 0 };
    return { lastSeq, ...this.#log.unread(userId) };
  }

  /** The summary, for a room list whose inbox lacked this room or this member (an upgrade, a shard
   * that lost it): answered as before, and the user's shard is sent what it lacks, so the next list
   * finds it there (docs/architecture.md, decision 6). */
  async inboxSummary(userId: string): Promise<RoomSummary> {
    const summary = this.summary(userId);
    await this.#inbox.fill(userId);
    return summary;
  }

  /** Writes the held read markers and waits until every inbox has what the room has (tests and
   * the bench, which must not poll). */
  async inboxSettled(): Promise<void> {
    await this.#inbox.settleAll();
  }

  /** Renames the room or changes its topic: a sequenced `room_update` with the changed fields. */
  async update(fields: { name?: string; topic?: string }, actor: UserRef): Promise<{ seq: number | null }> {
    const meta = this.#log.meta();
    if (!meta) throw new Error("room not initialised");
    const changed: { name?: string; topic?: string } = {};
    if (fields.name !== undefined && fields.name !== meta.name) changed.name = fields.name;
    if (fields.topic !== undefined) changed.topic = fields.topic;
    if (Object.keys(changed).length === 0) return { seq: null };
    const result = this.#log.append(
      { kind: "room_update", ts: Date.now(), author: { id: actor.id, name: actor.name }, ...changed },
      { apply: () => changed.name !== undefined && this.#log.setMeta({ ...meta, name: changed.name }) },
    );
    this.#fanout.committed("room_update", [result]);
    await this.#inbox.settle();
    return { seq: result.seq };
  }

  // ---- RPC: the derived stores -----------------------------------------------------------------

  /** The D1 history holds these events (and these retention tombstones). Idempotent: unknown or
   * repeated seqs change nothing. */
  confirmArchived(events: number[], tombstones: number[] = []): void {
    if (this.#archive.confirm(events, tombstones)) this.#scheduleNext();
  }

  /** Writes the derived stores' watermarks now (the room writes them behind, at most a second
   * late) and goes by what storage holds from then on: before a planned restart, or to edit them. */
  writeWatermarks(): void {
    this.#log.writeCounters();
  }

  /** Waits until the room's search part has everything committed so far (or a send failed), and
   * says how far it has: for tests and the bench, which must not poll. */
  async searchSettled(): Promise<{ lastSeq: number; indexedThrough: number; expiredThrough: number }> {
    this.#search.kick(true);
    await this.#search.settle();
    return {
      lastSeq: this.#log.lastSeq,
      indexedThrough: this.#log.counter("search_indexed"),
      expiredThrough: this.#log.counter("search_expired"),
    };
  }

  /** Brings the derived stores up to the log now: sends to search (and waits for it), and arms the
   * alarm to send to the D1 history. What the catch-up route asks of idle rooms after an upgrade. */
  async catchUp(): Promise<{ lastSeq: number; indexedThrough: number; archivedThrough: number }> {
    const search = await this.searchSettled();
    this.#wakeAt(Date.now());
    return {
      lastSeq: search.lastSeq,
      indexedThrough: search.indexedThrough,
      archivedThrough: this.#archive.archivedThrough,
    };
  }

  /** Where the room's D1 history and its segments in R2 stand (operators, tests, the bench):
   * `sealedSeq`, every event through it is in R2; `coldSeq`, past the hot window (no JSON in
   * SQLite); `floor`, past the command window (no row); `dirtySegments`, waiting for a rewrite. */
  archiveState(): ArchiveState & {
    sealedSeq: number;
    coldSeq: number;
    floor: number;
    dirtySegments: number;
    head: { seq: number; chain: string };
  } {
    return {
      ...this.#archive.state(),
      sealedSeq: this.#cold.sealedSeq,
      coldSeq: this.#cold.coldSeq,
      floor: this.#log.floor,
      dirtySegments: this.#cold.dirtySegments,
      head: this.#log.head,
    };
  }

  /** The tenant's retention policy (days to keep, or null: forever), applied by the next alarm. */
  setRetention(days: number | null): void {
    this.#log.retentionDays = days;
    if (days !== null) this.#wakeAt(Date.now());
  }

  /** The room's SSE streams as it accounts for them: who holds each, whether it is still catching
   * up, and the bytes written to it that its reader has not taken (tests, operators). */
  fallbackState(): { streams: StreamState[] } {
    return { streams: this.#fallback.state() };
  }

  /** The running hash of the log (the last event's seq and chain link) and what a signed head
   * states with it: the retention policy, how far retention has gone, where digest scheme 2 began. */
  head(): RoomHead {
    return this.#log.headState();
  }

  /**
   * Export lines (protocol/chain.ts) for up to `limit` events after `after`, what SQLite no longer
   * holds read back from R2. `head` is the room's head taken with these rows when they reach the end
   * of the log, else null: the export job pages until it gets one, so its head is never older than a
   * line it wrote (a redaction that changed a line it read is then in the file too, and within the
   * head). A page that starts older than the command window ends at the floor, without a head.
   */
  async exportRange(
    after: number,
    limit: number,
  ): Promise<{ lines: string[]; last: number; head: RoomHead | null }> {
    const roomId = this.#meta().roomId;
    const floor = this.#log.floor;
    if (after < floor) {
      const rows = await this.#cold.readAfter(after, limit, floor);
      return { lines: rows.map((r) => exportLine(roomId, r)), last: rows.at(-1)?.seq ?? after, head: null };
    }
    // Rows and head in the same synchronous step: nothing can commit between them.
    const stored = this.#log.rowsAfter(after, limit);
    const head = this.#log.headState();
    const last = stored.at(-1)?.seq ?? after;
    const rows = await this.#cold.fill(stored);
    return {
      lines: rows.map((r) => exportLine(roomId, r)),
      last,
      head: last === head.seq ? head : null,
    };
  }

  // ---- the alarm: derived stores, segments, retention -------------------------------------------

  /**
   * One pass of the room's background work, each step bounded and independent of the others'
   * failures: ship to the D1 history and to search, seal what is due into segments (and let the
   * hot and command windows move on), rewrite dirty segments, apply retention. Then re-arm for
   * whatever is left. Alarms are at-least-once and every step is idempotent.
   */
  override async alarm(): Promise<void> {
    if (!this.#log.meta()) return;
    await this.maintenance.alarm();
  }

  /** Arms the alarm for the earliest work the stored state calls for. */
  #scheduleNext(): void {
    this.maintenance.scheduleNext();
  }

  #wakeAt(at: number): void {
    this.maintenance.wakeAt(at);
  }

  /** Records a member's new role or name (no event: roles are not part of the log). */
  updateMember(member: Member): void {
    if (this.#log.member(member.id)) this.#log.transaction(() => this.#log.putMember(member));
  }

  isMember(userId: string): boolean {
    return this.#log.member(userId) !== undefined;
  }

  // ---- RPC: attachments (room-attachments.ts) ----------------------------------------------

  /**
   * Registers an upload as pending before its bytes are stored: from then on the room's cleanup
   * owns it, so an upload that fails at any later step is still deleted after the grace period.
   * Only a member may upload; anyone else gets `not_found`, as for a room they cannot see.
   */
  addAttachment(record: AttachmentRecord): { ok: true } | Failure {
    const meta = this.#log.meta();
    if (!meta || !this.#log.member(record.uploaderId)) return failure("not_found", "no such room");
    this.#attachments.add(record);
    this.#scheduleNext();
    return { ok: true };
  }

  /** Forgets a pending upload whose bytes never arrived (the request body was refused). */
  discardAttachment(id: string, uploaderId: string): void {
    this.#attachments.discardPending(id, uploaderId);
  }

  /** The attachment `userId` may download now, or null: members only, as for history; a pending
   * upload only for its uploader; a doomed one (its message was deleted) for nobody. */
  attachment(userId: string, id: string): AttachmentRecord | null {
    if (!this.#log.member(userId)) return null;
    return this.#attachments.readable(id, userId) ?? null;
  }

  // ---- streams (room-streams.ts) and WebSocket events ----------------------------------------

  /** Long poll (room-streams.ts): the worker's `GET /api/rooms/:roomId/poll`. */
  poll(userId: string, after: number, timeoutMs: number): Promise<{ ok: true; body: string } | Failure> {
    return this.#streams.poll(userId, after, timeoutMs);
  }

  /** The streams: a WebSocket upgrade, or SSE at `…/events` (room-streams.ts). */
  override async fetch(request: Request): Promise<Response> {
    return this.#streams.open(request);
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const info = this.#sockets.info(ws);
    if (!info) {
      closeQuietly(ws, CLOSE.revoked.code, CLOSE.revoked.reason);
      return;
    }
    // A socket lives no longer than its token: a frame after it expired is not served (the
    // alarm closes the idle ones).
    if (this.#sockets.expired(info, Date.now())) {
      // What is committed (its earlier commands' acks among it) goes out before the close.
      this.#sockets.flush();
      this.#sockets.close(ws, CLOSE.expired);
      return;
    }
    const parsed = parseClientFrame(message, this.#limits);
    if (!parsed.ok) {
      sendError(ws, parsed.code, parsed.message, parsed.clientId);
      this.#metrics.refused(parsed.code, "frame", "ws");
      this.#sockets.strike(ws);
      return;
    }
    await this.#onFrame(ws, info, parsed.value);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#sockets.forget(ws, code);
    // Reciprocate the peer's Close frame, or clients report 1006 instead of their own code.
    closeQuietly(ws, code === 1005 || code === 1006 ? 1000 : code, reason);
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    // 1006: the code a peer sees for a connection that ended without a Close frame.
    this.#sockets.forget(ws, 1006);
  }

  // ---- frames ------------------------------------------------------------------------------

  /** Handles one frame; a promise only when a command waits for R2 (see `#apply`). */
  #onFrame(ws: WebSocket, info: SocketInfo, frame: ClientFrame): undefined | Promise<void> {
    // Authorization on every command: a member removed since connecting is refused and closed.
    if (!this.#log.member(info.id)) {
      this.#sockets.close(ws, CLOSE.revoked);
      return;
    }
    if (frame.type === "received") {
      this.#received(ws, info, frame.seq);
      return;
    }
    // Every frame that reaches the object costs its thread, pings included (the exact
    // PING_FRAME is answered by the runtime for free and never gets here).
    const clientId = "clientId" in frame ? frame.clientId : undefined;
    const refused = this.#admit(info.id);
    if (refused) {
      sendError(ws, refused.code, refused.message, clientId, refused.retryAfter);
      this.#metrics.refused(refused.code, frame.type, "ws");
      return;
    }
    switch (frame.type) {
      case "ping":
        send(ws, { type: "pong" });
        break;
      case "typing":
        this.#sockets.typing(ws, info);
        break;
      case "read": {
        // No reply: held and written with the others within `readFlushMs` (decision 7).
        const refused = this.#readRefused(info.id, frame.seq);
        if (refused) {
          sendError(ws, refused.code, refused.message);
          this.#metrics.refused(refused.code, "read", "ws");
        } else this.#inbox.readLater(info.id, frame.seq);
        break;
      }
      default: {
        const result = this.#apply(info, frame);
        if (result instanceof Promise) return result.then((r) => this.#answer(ws, frame, r));
        this.#answer(ws, frame, result);
      }
    }
  }

  #answer(ws: WebSocket, cmd: SequencedCommand, result: CommandResult): void {
    if (!result.ok) {
      sendError(ws, result.code, result.message, result.clientId);
      this.#metrics.refused(result.code, cmd.type, "ws");
      return;
    }
    // The ack waits behind the event in the same flush, so a sender sees its event, then its ack;
    // either way the output gate holds both until the write is durable.
    this.#sockets.queueAck(
      ws,
      JSON.stringify({ type: "ack", clientId: cmd.clientId, seq: result.seq } satisfies ServerFrame),
    );
  }

  /**
   * Runs a command now, or, when its rules need an event older than the command window (a delete's
   * target, a reply's thread root: read from R2), once that is read. A user's commands commit in
   * the order they came: while one of theirs waits for R2, their next ones wait behind it.
   */
  #apply(actor: Actor, cmd: SequencedCommand): CommandResult | Promise<CommandResult> {
    const waiting = this.#inFlight.get(actor.id);
    if (!waiting && archivedTargetsOf(this.#log, cmd).length === 0)
      return this.#applyNow(actor, cmd, new Map());
    const run = (waiting ?? Promise.resolve()).then(async () => {
      let archived: ArchivedTargets = new Map();
      // A retry is answered from its row before any rule, so it needs nothing from R2.
      if (this.#log.seqForClientId(actor.id, cmd.clientId) === undefined) {
        try {
          archived = await this.#readArchived(archivedTargetsOf(this.#log, cmd));
        } catch (err) {
          log({ event: "room_archive_read_failed", room: this.#meta().roomId, error: String(err) });
          return {
            ...failure("internal", "could not read the room's archive; try again"),
            clientId: cmd.clientId,
          };
        }
      }
      return this.#applyNow(actor, cmd, archived);
    });
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight.set(actor.id, tail);
    void tail.then(() => {
      if (this.#inFlight.get(actor.id) === tail) this.#inFlight.delete(actor.id);
    });
    return run;
  }

  async #readArchived(seqs: readonly number[]): Promise<ArchivedTargets> {
    const read = new Map<number, TargetRow>();
    for (const seq of seqs) {
      const target = await this.#cold.targetOf(seq);
      if (target) read.set(seq, target);
    }
    return read;
  }

  #applyNow(actor: Actor, cmd: SequencedCommand, archived: ArchivedTargets): CommandResult {
    const member = this.#log.member(actor.id);
    if (!member) return { ...failure("forbidden", "join the room first"), clientId: cmd.clientId };
    // The role that authorizes is the member's current one (updated by `updateMember` when an admin
    // changes it), not the one the socket was opened with.
    const result = applyCommand(this.#stores, { ...actor, role: member.role }, cmd, Date.now(), archived);
    if (result.ok && result.created && cmd.type === "delete" && result.targetAuthor !== actor.id) {
      this.#auditAdminDeletion(actor, cmd.target, result.targetAuthor);
    }
    if (result.ok && result.created) {
      this.#fanout.committed(COMMANDS[cmd.type].kind, [result], result.mentioned);
    }
    // A delete may leave a cold segment to rewrite and attachments to remove.
    if (result.ok && result.created && cmd.type === "delete") this.#scheduleNext();
    return result;
  }

  /** Rate limit per user per room; null when the command may proceed. */
  #admit(userId: string): Failure | null {
    const wait = this.#rate.take(userId, Date.now());
    if (wait === 0) return null;
    return failure("rate_limited", "too many commands; slow down", Math.max(1, Math.ceil(wait)));
  }

  /** An admin deleted someone else's message: the tenant's audit log records it (ids only). */
  #auditAdminDeletion(actor: Actor, target: number, author: string | undefined): void {
    const meta = this.#log.meta();
    if (!meta) return;
    const entry = directoryDb(this.env, meta.tenantId)
      .prepare(
        "INSERT INTO audit_log (tenant_id, actor_id, action, target, detail, at) VALUES (?, ?, 'message.deleted_by_admin', ?, ?, ?)",
      )
      .bind(
        meta.tenantId,
        actor.id,
        meta.roomId,
        JSON.stringify({ seq: target, authorId: author ?? null }),
        Date.now(),
      );
    this.ctx.waitUntil(
      entry.run().then(
        () => undefined,
        (err: unknown) => log({ event: "audit_write_failed", room: meta.roomId, error: String(err) }),
      ),
    );
  }

  // ---- flow control (room-sockets.ts) ------------------------------------------------------

  /** `{"type":"received","seq"}` (flow control, room-sockets.ts): a repeat that confirms nothing
   * new costs the sender like a command; a seq never sent on the socket is refused. */
  #received(ws: WebSocket, info: SocketInfo, seq: number): void {
    const result = this.#sockets.received(ws, seq);
    if (result === "ok") return;
    if (result === "repeat") {
      const refused = this.#admit(info.id);
      if (refused) {
        sendError(ws, refused.code, refused.message, undefined, refused.retryAfter);
        this.#metrics.refused(refused.code, "received", "ws");
      }
      return;
    }
    sendError(ws, result.code, result.message);
    this.#metrics.refused(result.code, "received", "ws");
    this.#sockets.strike(ws);
  }
}
