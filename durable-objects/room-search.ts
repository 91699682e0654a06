/**
 * @module How a room keeps its search part current (docs/architecture.md, decisions 1 and 2): after
 * each commit it sends the events its part has not confirmed, `(search_indexed, lastSeq]`, as
 * search operations, and then its retention, `(search_expired, expiredThrough]`. The watermarks move
 * only once the part has applied a batch, so a failure (or the object going away mid-send) leaves
 * the rest to the next send: the alarm retries while the part is behind. Nothing is written per
 * event or per batch: the watermark is written behind, at most once a second (RoomLog.setCounter).
 */
import type { Limits } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { Gather } from "./gather.ts";
import type { ColdArchive } from "./room-cold.ts";
import type { RoomLog, RoomMeta } from "./room-log.ts";
import { partOf, type SearchOp, type ShardAddress, searchStub } from "./search.ts";

/** Events read per send: one RPC carries at most this many (each at most ~64 KiB of JSON). */
const BATCH_EVENTS = 200;
/** Committed events kept in memory for the next send (a part that far behind is read from the log). */
const RECENT_EVENTS = 4 * BATCH_EVENTS;
/** While a send is in flight or due the alarm checks back this much later (see `nextDue`): the
 * room's net alarm (armed at each commit) is due by then anyway. */
const RECHECK_MS = 60_000;

/** What an event changes in the index, or null (members, reactions, room updates, deleted ones). */
export function searchOpOf(json: string): SearchOp | null {
  const event = JSON.parse(json) as RoomEvent;
  switch (event.kind) {
    case "message":
      // A message deleted before it was shipped is shipped as what it now is: nothing to find.
      if (event.deleted || event.text.trim() === "") return null;
      return { op: "put", seq: event.seq, ts: event.ts, author: event.author, text: event.text };
    case "edit":
      return event.deleted ? null : { op: "edit", seq: event.seq, target: event.target, text: event.text };
    case "delete":
      return { op: "delete", target: event.target };
    default:
      return null;
  }
}

export interface SearchFeedDeps {
  env: Env;
  limits: Limits;
  log: RoomLog;
  cold: ColdArchive;
  meta: () => RoomMeta | null;
}

export class SearchFeed {
  readonly #deps: SearchFeedDeps;
  /** Sends one at a time, at most every `searchShipIntervalMs` while busy (gather.ts). */
  readonly #gather: Gather;
  /** After a failed send, when the alarm should try again (backoff), else 0. */
  #retryAt = 0;
  #attempts = 0;
  /** Events committed by this instance and not yet confirmed by the part (seq → JSON), so that a
   * send need not read back from SQLite what the room has just written; bounded, and a send whose
   * range it does not cover whole reads the log as before. */
  readonly #recent = new Map<number, string>();
  /** The tenant's number of parts once known (it never changes for a tenant). */
  #parts = 0;

  constructor(deps: SearchFeedDeps) {
    this.#deps = deps;
    this.#gather = new Gather(
      () => this.#run(),
      () => deps.limits.searchShipIntervalMs,
    );
  }

  /** The room committed this event (its JSON as stored): keep it for the next send, and send. */
  committed(seq: number, json: string): void {
    if (this.#recent.size >= RECENT_EVENTS) this.#recent.clear();
    this.#recent.set(seq, json);
    this.kick();
  }

  /** Something was committed: send it after this turn, or once the send in flight is done and the
   * interval since it started has passed. `now` sends at once (a caller that waits for the part). */
  kick(now = false): void {
    this.#gather.kick(now);
  }

  /** Resolves once nothing is being sent (tests, and the alarm before it decides). */
  settle(): Promise<void> {
    return this.#gather.settle();
  }

  /** Whether the part lacks events or retention the room has. */
  get behind(): boolean {
    const { log: roomLog } = this.#deps;
    return (
      roomLog.counter("search_indexed") < roomLog.lastSeq ||
      roomLog.counter("search_expired") < roomLog.expiredThrough
    );
  }

  /**
   * When the alarm should send next (null: nothing to send). A send in flight or about to start
   * will see to what is behind: the alarm only checks back later, in case this instance goes away
   * first. Armed for now instead, every alarm would re-arm the next at once while a busy room's
   * part is behind, and the alarm would run back to back.
   */
  nextDue(now: number): number | null {
    if (!this.behind) return null;
    if (this.#gather.busy) return now + RECHECK_MS;
    return Math.max(now, this.#retryAt);
  }

  /** One catch-up from the alarm, unless a send is in flight or backing off. */
  async fromAlarm(now: number): Promise<void> {
    if (this.#gather.inFlight || now < this.#retryAt || !this.behind) return this.settle();
    this.kick(true);
    return this.settle();
  }

  async #run(): Promise<void> {
    const meta = this.#deps.meta();
    if (!meta) return;
    try {
      while (await this.#sendBatch(meta)) {
        // next batch
      }
      this.#attempts = 0;
      this.#retryAt = 0;
    } catch (err) {
      this.#attempts += 1;
      this.#retryAt =
        Date.now() + Math.min(this.#deps.limits.outboxMaxBackoffMs, 1000 * 2 ** (this.#attempts - 1));
      log({ event: "search_ship_failed", room: meta.roomId, attempts: this.#attempts, error: String(err) });
    }
  }

  /** Sends one batch (events, then retention); true if there may be more. */
  async #sendBatch(meta: RoomMeta): Promise<boolean> {
    const { log: roomLog, cold } = this.#deps;
    const indexed = roomLog.counter("search_indexed");
    const lastSeq = roomLog.lastSeq;
    if (indexed < lastSeq) {
      // What this instance committed since the watermark, from memory; otherwise from the log (and,
      // from a watermark older than the command window, a rebuild or an upgrade, from R2).
      const rows = this.#recentAfter(indexed, lastSeq) ?? (await cold.readAfter(indexed, BATCH_EVENTS));
      const through = rows.at(-1)?.seq ?? indexed;
      const ops = rows.map((r) => searchOpOf(r.json)).filter((op): op is SearchOp => op !== null);
      if (ops.length > 0) {
        const at = await this.#address(meta);
        await searchStub(this.#deps.env, at).index(at, meta.roomId, ops);
      }
      // Only forward: a concurrent send (there is none: one runs at a time) could not move it back.
      if (through > roomLog.counter("search_indexed")) roomLog.setCounter("search_indexed", through);
      for (const seq of this.#recent.keys()) if (seq <= through) this.#recent.delete(seq);
      return true;
    }
    const expired = roomLog.expiredThrough;
    if (roomLog.counter("search_expired") < expired) {
      const at = await this.#address(meta);
      await searchStub(this.#deps.env, at).expire(at, meta.roomId, expired);
      roomLog.setCounter("search_expired", expired);
      return true;
    }
    return false;
  }

  /** The events (after, lastSeq], at most a batch, if this instance holds every one of them. A
   * message deleted since is sent as it was, then its deletion: the part ends the same. */
  #recentAfter(after: number, lastSeq: number): { seq: number; json: string }[] | null {
    const rows: { seq: number; json: string }[] = [];
    for (let seq = after + 1; seq <= Math.min(lastSeq, after + BATCH_EVENTS); seq++) {
      const json = this.#recent.get(seq);
      if (json === undefined) return null;
      rows.push({ seq, json });
    }
    return rows;
  }

  /** The coordinator of this room's part. The tenant's number of parts is asked of part 0 once and
   * kept: it never changes for a tenant. */
  async #address(meta: RoomMeta): Promise<ShardAddress> {
    const { log: roomLog, env, limits } = this.#deps;
    let parts = this.#parts || roomLog.counter("search_parts");
    if (parts === 0) {
      const root = { tenantId: meta.tenantId, part: 0, gen: 0 };
      parts = (await searchStub(env, root).layout(root, limits.searchParts)).parts;
      roomLog.setCounter("search_parts", parts);
    }
    this.#parts = parts;
    return { tenantId: meta.tenantId, part: partOf(meta.roomId, parts), gen: 0 };
  }
}
