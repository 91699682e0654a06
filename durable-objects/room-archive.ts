/**
 * @module How a room keeps its D1 history current (docs/architecture.md, decision 2): by watermark,
 * not by outbox row. The log is ordered and gapless, so what the history has is a number:
 * `archive_confirmed`, the seq through which the consumer has confirmed every event. The alarm
 * sends `(archive_sent, lastSeq]` to the room-events queue and moves `archive_sent`; confirmations
 * move `archive_confirmed` (ranges confirmed out of order wait in `archive_acks` until the gap
 * below them closes). What stays unconfirmed `archiveResendMs` after the history's last progress is sent again from
 * `archive_confirmed`: queues deliver at least once, a local queue dies with its process, and the
 * consumer is idempotent on (tenant, room, seq). Retention has its own pair of watermarks: the
 * tombstones of `(archive_expired, expiredThrough]` are sent until confirmed.
 *
 * Nothing is written per event, nor per send: the watermarks live in memory and are written behind,
 * at most once a second (RoomLog.setCounter); only a range confirmed beyond a gap takes a row.
 */
import type { Limits } from "../config/limits.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

import { log as logEvent } from "../platform/log.ts";
import type { RoomEvent } from "../protocol/index.ts";
import type { ColdArchive } from "./room-cold.ts";
import type { RoomLog, RoomMeta, StoredRow } from "./room-log.ts";

/** One event of a room's log as the D1 history consumer takes it (worker/archive/consumer.ts). It
 * was also a queue message of its own before rooms sent packs; the consumer still accepts one. */
export interface ArchiveMessage {
  tenantId: string;
  roomId: string;
  event: RoomEvent;
  /** For an edit, delete or reaction: when its target was written, so the history finds the
   * target's row in whichever period (shard) holds it. */
  targetTs?: number;
}

/** What a room sends to the room-events queue: consecutive events of its log in one message, so a
 * busy room pays one queue message (three billed operations) per pack, not per event. */
export interface ArchivePack {
  tenantId: string;
  roomId: string;
  events: { event: RoomEvent; targetTs?: number }[];
}

/** Events per pack. A consumer batch (up to 100 messages, wrangler.toml) then carries up to 2,000
 * events, whose D1 statements stay well inside a Worker invocation's 1,000 queries. */
export const PACK_EVENTS = 20;

/** Where the room's D1 history stands (operators, tests, the bench). */
export interface ArchiveState {
  lastSeq: number;
  /** Every event through here is confirmed in the D1 history. */
  archivedThrough: number;
  /** Every event through here has been sent (maybe not yet confirmed). */
  sentThrough: number;
  /** Retention's tombstones through here are confirmed in the D1 history. */
  expiredArchivedThrough: number;
  /** Events sent and not yet confirmed, or not yet sent (what a lost queue would have to resend). */
  pending: number;
}

/** An upper bound of what an event weighs in a queue message: its JSON's UTF-16 length, three
 * bytes a unit at most in UTF-8, plus its envelope. */
const weight = (row: { json: string }) => row.json.length * 3 + 256;

/** Splits `items` into groups of at most `count` whose weights sum to at most `bytes` (an item
 * heavier than that alone in its group), in order. */
function groups<T>(items: readonly T[], count: number, bytes: number, weigh: (item: T) => number): T[][] {
  const out: T[][] = [];
  let group: T[] = [];
  let used = 0;
  for (const item of items) {
    const w = weigh(item);
    if (group.length > 0 && (group.length >= count || used + w > bytes)) {
      out.push(group);
      group = [];
      used = 0;
    }
    group.push(item);
    used += w;
  }
  if (group.length > 0) out.push(group);
  return out;
}

/**
 * Queue limits: 128 KB per message, 100 messages and 256 KB per `sendBatch`. Rows become packs of
 * at most `PACK_EVENTS` events and about 120 KB (an event is at most about 70 KB: 16 KiB of text
 * escaped, plus its envelope, so one that heavy travels alone), and packs become `sendBatch` calls
 * of at most 240 KB.
 */
export function queueBatches<T extends { json: string }>(rows: readonly T[]): T[][][] {
  const packs = groups(rows, PACK_EVENTS, 120_000, weight);
  return groups(packs, 100, 240_000, (pack) => pack.reduce((sum, row) => sum + weight(row), 0));
}

/** Consecutive seqs as [from, to] ranges, in order. */
export function rangesOf(seqs: readonly number[]): [number, number][] {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const ranges: [number, number][] = [];
  for (const seq of sorted) {
    const last = ranges.at(-1);
    if (last && seq === last[1] + 1) last[1] = seq;
    else ranges.push([seq, seq]);
  }
  return ranges;
}

export interface ArchiveFeedDeps {
  storage: DurableObjectStorage;
  limits: Limits;
  log: RoomLog;
  cold: ColdArchive;
  /** The queue the tenant's room events go to (env read when called, so tests can replace it). */
  queue: () => Queue;
  /** The room's name and tenant (null before it is set up). */
  meta: () => RoomMeta | null;
  /** After a pass from the timer: the room re-arms its alarm for what is left (a backoff). */
  reschedule: () => void;
}

export class ArchiveFeed {
  readonly #deps: ArchiveFeedDeps;
  /** When this instance last sent events: the next pass waits `outboxDrainDelayMs` after it (0
   * after a restart: the first pass goes at once). */
  #lastSendAt = 0;
  /** The pass a commit asked for, on a timer: an alarm per commit would be a billed row written
   * per message. The room keeps an alarm armed as the net for an instance that goes away first. */
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** Passes run one after another (the timer's and the alarm's). */
  #chain: Promise<void> = Promise.resolve();
  /** Whether `archive_acks` holds ranges beyond a gap (null: not known since this instance began). */
  #gapped: boolean | null = null;

  constructor(deps: ArchiveFeedDeps) {
    this.#deps = deps;
  }

  /** The room committed: a pass one drain delay after the last send (one timer at a time). */
  kick(): void {
    if (this.#timer) return;
    const wait = Math.max(0, this.#lastSendAt + this.#deps.limits.outboxDrainDelayMs - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#fromTimer();
    }, wait);
  }

  async #fromTimer(): Promise<void> {
    const meta = this.#deps.meta();
    if (!meta) return;
    const { log, storage } = this.#deps;
    const before = log.counter("archive_sent");
    try {
      await this.drain(meta, Date.now());
    } catch (err) {
      logEvent({ event: "room_alarm_step_failed", step: "archive", error: String(err) });
    }
    this.#deps.reschedule();
    // A pass sends at most `outboxBatch`: more waiting goes after the delay. A pass that moved
    // nothing (backing off, or nothing it may send) leaves the rest to the alarm: no timer loop.
    const sent = log.counter("archive_sent");
    const backingOff = Number(storage.kv.get("archive_retry_at") ?? 0) > Date.now();
    if (sent > before && sent < log.lastSeq && !backingOff) this.kick();
  }

  get archivedThrough(): number {
    return this.#deps.log.counter("archive_confirmed");
  }

  state(): ArchiveState {
    const { log } = this.#deps;
    const confirmed = log.counter("archive_confirmed");
    const acked = this.#sql
      .exec<{ n: number }>("SELECT COALESCE(SUM(to_seq - from_seq + 1), 0) AS n FROM archive_acks")
      .one().n;
    return {
      lastSeq: log.lastSeq,
      archivedThrough: confirmed,
      sentThrough: log.counter("archive_sent"),
      expiredArchivedThrough: log.counter("archive_expired"),
      pending: log.lastSeq - confirmed - acked + (log.expiredThrough - log.counter("archive_expired")),
    };
  }

  /**
   * Sends what is due, oldest first, in queue batches: new events, then (after the resend timeout)
   * what stayed unconfirmed, then retention's tombstones. A watermark moves only after its batch
   * was accepted. A refused send backs off exponentially (the alarm comes back then).
   */
  drain(meta: RoomMeta, now: number): Promise<void> {
    const pass = this.#chain.then(() => this.#drain(meta, now));
    this.#chain = pass.catch(() => {});
    return pass;
  }

  async #drain(meta: RoomMeta, now: number): Promise<void> {
    const kv = this.#deps.storage.kv;
    if (Number(kv.get("archive_retry_at") ?? 0) > now) return;
    try {
      await this.#sendEvents(meta, now);
      await this.#sendTombstones(meta, now);
      kv.delete("archive_attempts");
      kv.delete("archive_retry_at");
    } catch (err) {
      const attempts = Number(kv.get("archive_attempts") ?? 0) + 1;
      kv.put("archive_attempts", attempts);
      kv.put(
        "archive_retry_at",
        Date.now() + Math.min(this.#deps.limits.outboxMaxBackoffMs, 1000 * 2 ** (attempts - 1)),
      );
      throw err;
    }
  }

  /** The consumer holds these events (and these tombstones). Unknown or repeated seqs change
   * nothing. Returns whether the confirmed watermark moved. */
  confirm(events: readonly number[], tombstones: readonly number[] = []): boolean {
    return this.#confirmRanges(rangesOf(events), rangesOf(tombstones));
  }

  #confirmRanges(events: readonly [number, number][], tombstones: readonly [number, number][]): boolean {
    const { log, storage } = this.#deps;
    return log.transaction(() => {
      const before = log.counter("archive_confirmed");
      // In order (the common case), a range joins the watermark in memory; one beyond a gap waits
      // in `archive_acks` (a row) until the gap below it closes.
      let confirmed = before;
      for (const [from, to] of events) {
        if (to <= confirmed) continue;
        if (from <= confirmed + 1) {
          confirmed = to;
          continue;
        }
        this.#sql.exec(
          "INSERT INTO archive_acks (from_seq, to_seq) VALUES (?, ?) ON CONFLICT (from_seq) DO UPDATE SET to_seq = MAX(to_seq, excluded.to_seq)",
          from,
          to,
        );
        this.#gapped = true;
      }
      if (this.#gapped !== false) {
        // Close the gap: every waiting range that starts at or below the watermark's next seq joins it.
        const waiting = this.#sql
          .exec<{ from_seq: number; to_seq: number }>(
            "SELECT from_seq, to_seq FROM archive_acks ORDER BY from_seq",
          )
          .toArray();
        for (const r of waiting) {
          if (r.from_seq > confirmed + 1) break;
          confirmed = Math.max(confirmed, r.to_seq);
        }
        if (waiting.some((r) => r.to_seq <= confirmed))
          this.#sql.exec("DELETE FROM archive_acks WHERE to_seq <= ?", confirmed);
        this.#gapped = waiting.some((r) => r.to_seq > confirmed);
      }
      if (confirmed > before) {
        log.setCounter("archive_confirmed", confirmed);
        // Progress: what is still outstanding waits `archiveResendMs` from now, and a resend
        // after that waits the plain timeout again.
        if (confirmed < log.counter("archive_sent")) log.setCounter("archive_sent_at", Date.now());
        if (storage.kv.get("archive_resends") !== undefined) storage.kv.delete("archive_resends");
      }
      // Tombstones are sent in order from `archive_expired`; confirmed ranges from there move it.
      let expired = log.counter("archive_expired");
      for (const [from, to] of tombstones) if (from <= expired + 1) expired = Math.max(expired, to);
      if (expired > log.counter("archive_expired")) log.setCounter("archive_expired", expired);
      return confirmed > before;
    });
  }

  /** When the alarm should drain next (null: nothing to send or wait for). */
  nextDue(now: number): number | null {
    const { log, limits, storage } = this.#deps;
    const retryAt = Number(storage.kv.get("archive_retry_at") ?? 0);
    const times: number[] = [];
    // New events wait `outboxDrainDelayMs` after the last send, so that a busy room sends one
    // batch per pass instead of a pass per commit; a full batch goes at once. While the timer is set
    // it sends them: the alarm is only the net (see `kick`).
    const sent = log.counter("archive_sent");
    const unsent = log.lastSeq - sent;
    if (this.#timer && unsent > 0) times.push(now + limits.archiveResendMs);
    else if (unsent >= limits.outboxBatch) times.push(now);
    else if (unsent > 0) times.push(Math.max(now, this.#lastSendAt + limits.outboxDrainDelayMs));
    if (log.counter("archive_confirmed") < sent)
      times.push(log.counter("archive_sent_at") + this.#resendWait());
    const expired = this.#tombstoneLimit();
    if (log.counter("archive_expire_sent") < expired) times.push(now);
    if (log.counter("archive_expired") < log.counter("archive_expire_sent"))
      times.push(log.counter("archive_expire_sent_at") + limits.archiveResendMs);
    return times.length === 0 ? null : Math.max(Math.min(...times), retryAt);
  }

  /**
   * The D1 history keeps only its window (PARLEY_HISTORY_DAYS), so events older than it are not
   * sent: they count as confirmed at once (a log shipped again after an upgrade sends only its
   * window). Returns where sending starts now.
   */
  #skipOlderThanWindow(sent: number, until: number, now: number, what: "events" | "tombstones"): number {
    const { log, limits } = this.#deps;
    const first = this.#deps.cold.firstSeqSince(sent, until, now - limits.historyDays * DAY_MS);
    const through = first === null ? until : first - 1;
    if (through <= sent) return sent;
    const skipped: [number, number][] = [[sent + 1, through]];
    if (what === "events") {
      this.#confirmRanges(skipped, []);
      log.setCounter("archive_sent", Math.max(log.counter("archive_sent"), through));
    } else {
      this.#confirmRanges([], skipped);
      log.setCounter("archive_expire_sent", Math.max(log.counter("archive_expire_sent"), through));
    }
    return through;
  }

  /** Tombstones to send on their own: those of events already sent. An event expired before it was
   * ever sent goes out as its tombstone with the events (its row holds the tombstone now). */
  #tombstoneLimit(): number {
    const { log } = this.#deps;
    return Math.min(
      log.expiredThrough,
      Math.max(log.counter("archive_sent"), log.counter("archive_confirmed")),
    );
  }

  /** How long unconfirmed events wait for progress before they are sent again: the timeout,
   * doubled for each resend since the history last made progress (at most 64 times it). */
  #resendWait(): number {
    const resends = Number(this.#deps.storage.kv.get("archive_resends") ?? 0);
    return this.#deps.limits.archiveResendMs * 2 ** Math.min(resends, 6);
  }

  get #sql(): SqlStorage {
    return this.#deps.storage.sql;
  }

  async #sendEvents(meta: RoomMeta, now: number): Promise<void> {
    const { log, limits } = this.#deps;
    const confirmed = log.counter("archive_confirmed");
    let sent = log.counter("archive_sent");
    // `archive_sent_at` is when the history last made progress while something was outstanding:
    // set by a send that starts the wait, moved by each confirmation (`#confirmRanges`). No
    // progress for `archiveResendMs`: send it all again from the confirmed watermark.
    let starts = confirmed >= sent;
    if (!starts && log.counter("archive_sent_at") + this.#resendWait() <= now) {
      sent = confirmed;
      starts = true;
      // A history that is only slow (a consumer far behind) would get every resend on top of its
      // backlog: each resend without progress waits twice as long as the one before.
      const kv = this.#deps.storage.kv;
      kv.put("archive_resends", Number(kv.get("archive_resends") ?? 0) + 1);
    }
    if (sent >= log.lastSeq) return;
    sent = this.#skipOlderThanWindow(sent, log.lastSeq, now, "events");
    if (sent >= log.lastSeq) return;
    const rows = await this.#deps.cold.readAfter(sent, limits.outboxBatch);
    await this.#send(meta, rows);
    this.#lastSendAt = now;
    const through = rows.at(-1)?.seq ?? sent;
    log.setCounter("archive_sent", through);
    if (starts) log.setCounter("archive_sent_at", now);
  }

  async #sendTombstones(meta: RoomMeta, now: number): Promise<void> {
    const { log, limits } = this.#deps;
    const done = log.counter("archive_expired");
    let sent = log.counter("archive_expire_sent");
    if (done < sent && log.counter("archive_expire_sent_at") + limits.archiveResendMs <= now) sent = done;
    const expired = this.#tombstoneLimit();
    if (sent >= expired) return;
    sent = this.#skipOlderThanWindow(sent, expired, now, "tombstones");
    if (sent >= expired) return;
    // Below the command window they come from the segments, as retention left them.
    const rows = await this.#deps.cold.readAfter(sent, limits.outboxBatch, expired);
    await this.#send(meta, rows);
    log.setCounter("archive_expire_sent", rows.at(-1)?.seq ?? sent);
    log.setCounter("archive_expire_sent_at", now);
  }

  async #send(meta: RoomMeta, rows: StoredRow[]): Promise<void> {
    // A target older than the command window has no row: its time comes from its segment.
    const targets = await this.#deps.cold.timesOf(
      rows.map((r) => r.target).filter((t): t is number => t !== null),
    );
    for (const batch of queueBatches(rows)) {
      await this.#deps.queue().sendBatch(
        batch.map((pack) => {
          const body: ArchivePack = {
            tenantId: meta.tenantId,
            roomId: meta.roomId,
            events: pack.map((r) => {
              const targetTs = r.target === null ? undefined : targets.get(r.target);
              return {
                event: JSON.parse(r.json) as RoomEvent,
                ...(targetTs !== undefined ? { targetTs } : {}),
              };
            }),
          };
          return { body, contentType: "json" as const };
        }),
      );
    }
  }
}
