/**
 * @module What follows a commit in the room: the events go to every reader (room-sockets.ts, and
 * the SSE streams behind it) and to the derived stores' feeds (search, the inboxes, the D1 history;
 * the presence shards tell their sessions of the activity when the inbox push applies). And what
 * the room reports about it (platform/metrics.ts): appends, refusals, sockets opened and closed.
 */
import type { Limits } from "../config/limits.ts";
import { type Metric, record } from "../platform/metrics.ts";
import type { ClientFrame, ErrorCode, RoomEvent } from "../protocol/index.ts";
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
  limits: Limits;
  sockets: RoomSockets;
  search: SearchFeed;
  inbox: InboxFeed;
  archive: ArchiveFeed;
  metrics: RoomMetrics;
  /** Arms the room's alarm for `at` at the latest (room-maintenance.ts). */
  wakeAt(at: number): void;
}

export class RoomFanout {
  readonly #d: FanoutDeps;

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
    }
    const last = events.at(-1);
    if (!last) return;
    archive.kick();
    // The net under both feeds' timers, for an instance that goes away before they fire: an alarm
    // already armed before then costs nothing more (one row when it is armed).
    this.#d.wakeAt(Date.now() + limits.archiveResendMs);
    this.#d.metrics.appended(kind, events.length, last.seq);
  }
}
