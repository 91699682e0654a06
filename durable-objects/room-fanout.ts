/**
 * @module What follows a commit in the room: the events go to every reader (room-sockets.ts, and
 * the SSE streams behind it), to the derived stores' feeds (search, the inboxes, the D1 history),
 * and, coalesced, to the presence shards as activity notices. And what the room reports about it
 * (platform/metrics.ts): appends, refusals, sockets opened and closed.
 */
import type { Limits } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { type Metric, record } from "../platform/metrics.ts";
import type { ClientFrame, ErrorCode, RoomEvent } from "../protocol/index.ts";
import { ActivityBatch } from "./activity.ts";
import { presenceStub, shardOf } from "./presence.ts";
import type { ArchiveFeed } from "./room-archive.ts";
import type { InboxFeed } from "./room-inbox.ts";
import type { RoomLog } from "./room-log.ts";
import type { SearchFeed } from "./room-search.ts";
import type { RoomSockets } from "./room-sockets.ts";

/** The room's metric points, tagged with its tenant and id (none before it is initialised). */
export class RoomMetrics {
  readonly #env: () => Env;
  readonly #log: RoomLog;

  /** `env` is read when a point is written (tests give the room a dataset of their own). */
  constructor(env: () => Env, roomLog: RoomLog) {
    this.#env = env;
    this.#log = roomLog;
  }

  /** Writes the point `make` builds from the room's tenant and id, once the room has them. */
  #record(make: (room: { tenant: string; room: string }) => Metric): void {
    const meta = this.#log.meta();
    if (meta) record(this.#env(), make({ tenant: meta.tenantId, room: meta.roomId }));
  }

  /** One `append` point per call that appended (`count` events, the last at `seq`), not per event. */
  appended(kind: RoomEvent["kind"], count: number, seq: number): void {
    this.#record((r) => ({ name: "append", ...r, kind, count, seq }));
  }

  /** A frame or command refused with an error (the client was told; this counts it). */
  refused(code: ErrorCode, command: ClientFrame["type"] | "frame", transport: "ws" | "http"): void {
    this.#record((r) => ({ name: "command_error", ...r, code, command, transport }));
  }

  socketOpened(sockets: number): void {
    this.#record((r) => ({ name: "ws_open", ...r, object: "room", sockets }));
  }

  socketClosed(code: number): void {
    this.#record((r) => ({ name: "ws_close", ...r, object: "room", code }));
  }
}

export interface FanoutDeps {
  /** Read when a notice is sent, like the room's own `env`. */
  env: () => Env;
  limits: Limits;
  log: RoomLog;
  sockets: RoomSockets;
  search: SearchFeed;
  inbox: InboxFeed;
  archive: ArchiveFeed;
  metrics: RoomMetrics;
  /** Arms the room's alarm for `at` at the latest (room-maintenance.ts). */
  wakeAt(at: number): void;
  waitUntil(p: Promise<unknown>): void;
}

export class RoomFanout {
  readonly #d: FanoutDeps;
  readonly #activity = new ActivityBatch();

  constructor(deps: FanoutDeps) {
    this.#d = deps;
  }

  /** Events of `kind` just committed together, in seq order: out to every reader and store, and
   * one `append` metric point. `mentioned`: the members a message mentions. */
  committed(
    kind: RoomEvent["kind"],
    events: readonly { seq: number; json: string }[],
    mentioned: readonly string[] = [],
  ): void {
    const { sockets, search, inbox, archive, limits } = this.#d;
    for (const { seq, json } of events) {
      sockets.publish(seq, json);
      // Findable a send after the commit (the output gate holds the send until it is durable).
      search.committed(seq, json);
      inbox.committed(seq, mentioned);
      if (this.#activity.add(seq, mentioned)) setTimeout(() => this.#sendActivity(), limits.activityWindowMs);
    }
    const last = events.at(-1);
    if (!last) return;
    archive.kick();
    // The net under both feeds' timers, for an instance that goes away before they fire: an alarm
    // already armed before then costs nothing more (one row when it is armed).
    this.#d.wakeAt(Date.now() + limits.archiveResendMs);
    this.#d.metrics.appended(kind, events.length, last.seq);
  }

  /** One coalesced activity notice per presence shard with members of this room. A notice lost to a
   * crash is a lost hint, not lost data: clients read lastSeq and unread from GET /api/rooms. */
  #sendActivity(): void {
    const { env, limits, log: roomLog } = this.#d;
    const notice = this.#activity.take();
    const meta = roomLog.meta();
    if (!notice || !meta) return;
    const shards = limits.presenceShards;
    const byShard = new Map<number, string[]>();
    for (const id of roomLog.memberIds()) {
      const n = shardOf(id, shards);
      byShard.set(n, [...(byShard.get(n) ?? []), id]);
    }
    for (const [n, members] of byShard) {
      const mentioned = notice.mentioned.filter((id) => shardOf(id, shards) === n);
      this.#d.waitUntil(
        presenceStub(env(), meta.tenantId, n)
          .activity(meta.roomId, notice.lastSeq, members, mentioned)
          .catch((err: unknown) => log({ event: "activity_failed", room: meta.roomId, error: String(err) })),
      );
    }
  }
}
