/**
 * @module The room's background work on its one alarm (durable-objects/scheduler.ts): shipping to
 * the D1 history and to search, sealing the log into segments in R2 and rewriting dirty ones,
 * retention, file cleanup, the inbox counts, and closing sockets whose token expired. Each task says from stored state when it is next
 * due, so a new instance after an eviction finds the same work. The Room owns this and reaches it
 * for `scheduleNext` and `wakeAt`; tests run its steps with a given clock through
 * `runInDurableObject` (they are not RPC methods).
 */
import type { Limits } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { directoryDb, filesBucket } from "../platform/residency.ts";
import type { ArchiveFeed } from "./room-archive.ts";
import { deleteStored, type RoomAttachments } from "./room-attachments.ts";
import type { ColdArchive } from "./room-cold.ts";
import type { InboxFeed } from "./room-inbox.ts";
import type { RoomLog } from "./room-log.ts";
import type { SearchFeed } from "./room-search.ts";
import type { RoomSockets } from "./room-sockets.ts";
import { Scheduler } from "./scheduler.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** Attachments deleted per cleanup round: one R2 delete and one D1 statement each. */
const CLEANUP_BATCH = 50;

/** Dirty segments one alarm pass rewrites (a read and a write of R2 each); the alarm comes back at
 * once for the rest, so retention reaching many old segments never holds one pass long. */
const REWRITES_PER_PASS = 4;

/** The room's alarm tasks, in the order an alarm runs them. */
type RoomTask = "archive" | "search" | "seal" | "segments" | "housekeeping" | "inbox" | "expiry";

export interface MaintenanceDeps {
  storage: DurableObjectStorage;
  env: Env;
  limits: Limits;
  log: RoomLog;
  cold: ColdArchive;
  archive: ArchiveFeed;
  search: SearchFeed;
  inbox: InboxFeed;
  attachments: RoomAttachments;
  sockets: Pick<RoomSockets, "nextExpiry" | "closeExpired">;
}

export class RoomMaintenance {
  readonly #d: MaintenanceDeps;
  readonly #scheduler: Scheduler<RoomTask>;
  /** The last retention pass stopped at its batch: the next one is due at once. */
  #housekeepingMore = false;

  constructor(deps: MaintenanceDeps) {
    this.#d = deps;
    this.#scheduler = this.#tasks();
  }

  /**
   * The room's background work, in the order one alarm runs it: ship to the D1 history and to
   * search, seal what is due into segments (so the hot and command windows move on), rewrite dirty
   * segments, apply retention and clean up files, then the inbox counts (after sealing and
   * retention, which move the floor they start from). Each task is bounded and idempotent, and
   * says from what its module has stored when it needs the alarm. All but housekeeping run on every
   * alarm and do whatever is possible then (a send a timer was about to make, a resend whose wait
   * an operator or a test cut short): the alarm is their net, not their clock.
   */
  #tasks(): Scheduler<RoomTask> {
    const { storage, log: roomLog, archive, search, cold, inbox, sockets } = this.#d;
    const failed = (step: RoomTask, err: unknown) =>
      log({ event: "room_alarm_step_failed", step, error: String(err) });
    const scheduler = new Scheduler<RoomTask>(storage, failed);
    scheduler.add("archive", {
      due: (now) => archive.nextDue(now),
      run: async (now) => {
        const meta = roomLog.meta();
        if (meta) await archive.drain(meta, now);
      },
      everyAlarm: true,
    });
    scheduler.add("search", {
      due: (now) => search.nextDue(now),
      run: (now) => search.fromAlarm(now),
      everyAlarm: true,
    });
    // After a failed upload or read of R2, sealing and rewriting wait for the backoff to end.
    scheduler.add("seal", {
      due: (now) => cold.nextDue(now),
      run: async (now) => {
        if (cold.retryAt <= now) await cold.maintain(now);
      },
      everyAlarm: true,
    });
    scheduler.add("segments", {
      // The seal task's due time already covers dirty segments (`ColdArchive.nextDue`).
      due: () => null,
      run: async (now) => {
        if (cold.retryAt > now) return;
        for (let i = 0; i < REWRITES_PER_PASS && (await cold.rewriteOneDirty()); i++) {
          // next dirty segment
        }
      },
      everyAlarm: true,
    });
    scheduler.add("housekeeping", {
      due: (now) => this.#housekeepingDue(now),
      run: (now) => this.housekeep(now),
    });
    // A new instance checks each member's shard once (what an earlier one left unpushed) and
    // flushes held read markers; the inbox arms the alarm itself only to retry a failed push.
    scheduler.add("inbox", {
      due: (now) => inbox.nextDue(now),
      run: () => inbox.fromAlarm(),
      everyAlarm: true,
    });
    // Sockets whose token expired close (decision 11); the attachments say when the next one does.
    scheduler.add("expiry", {
      due: () => sockets.nextExpiry(),
      run: async (now) => sockets.closeExpired(now),
    });
    return scheduler;
  }

  /** Retention (when the room has a policy: at the stored time, or at once while a pass left
   * more), or the next file whose grace period ends. */
  #housekeepingDue(now: number): number | null {
    const { attachments, limits, log: roomLog, storage } = this.#d;
    let due = attachments.nextDue(now, limits.attachmentGraceMs);
    if (roomLog.retentionDays !== null) {
      const retention = this.#housekeepingMore ? now : Number(storage.kv.get("housekeeping_at") ?? now);
      due = due === null ? retention : Math.min(due, retention);
    }
    return due;
  }

  /** Reads the stored due times once per instance (inside the room's blockConcurrencyWhile). */
  load(): Promise<void> {
    return this.#scheduler.load();
  }

  /** One pass of whatever is due, then the alarm armed again for what is left. */
  alarm(): Promise<void> {
    return this.#scheduler.alarm();
  }

  /** Arms the alarm for the earliest work the stored state calls for. */
  scheduleNext(): void {
    this.#scheduler.schedule(Date.now());
  }

  /** Arms the alarm for `at` at the latest. */
  wakeAt(at: number): void {
    this.#scheduler.wakeAt(at);
  }

  /** Sealing as the alarm does it, with a given clock: what is due at `now` goes to R2, and the hot
   * and command windows move on. Returns where the segments stand then. */
  async seal(now: number): Promise<{ sealedSeq: number; coldSeq: number; floor: number }> {
    const { cold, inbox, log: roomLog } = this.#d;
    await cold.maintain(now);
    inbox.changed();
    this.scheduleNext();
    return { sealedSeq: cold.sealedSeq, coldSeq: cold.coldSeq, floor: roomLog.floor };
  }

  /** Retention: events older than the policy become tombstones (and leave D1, search and R2 through
   * the watermarks and segment rewrites), their files are doomed, and files due for cleanup are
   * deleted. Events older than the command window expire first, found in their segments. */
  async housekeep(now: number): Promise<{ expired: number }> {
    const { log: roomLog, cold, attachments, search, inbox, storage, limits } = this.#d;
    const days = roomLog.retentionDays;
    let expired = 0;
    if (days !== null) {
      const cutoff = now - days * DAY_MS;
      const from = roomLog.expiredThrough;
      let through = from;
      try {
        through = await cold.expiryPoint(cutoff);
      } catch (err) {
        // R2 could not be read: the events older than the command window wait for the next pass
        // (within `housekeepingMs`), and so do the newer ones, which expire only after them.
        log({ event: "room_alarm_step_failed", step: "retention", error: String(err) });
      }
      if (through > from) {
        expired += roomLog.transaction(() => {
          const n = roomLog.expireThrough(from, through, cutoff);
          // Files of expired messages go with them (attachments belong to messages only).
          if (n > 0) attachments.doomRange(from, through);
          return n;
        });
      }
      const result = roomLog.transaction(() => {
        const r = roomLog.expireBefore(cutoff, 1000);
        // Files of expired messages go with them.
        for (const seq of r.messages) attachments.doomMessage(seq);
        return r;
      });
      expired += result.expired;
      this.#housekeepingMore = result.more;
      if (expired > 0) search.kick();
    }
    await this.cleanupAttachments(now);
    if (expired > 0) inbox.changed();
    storage.kv.put("housekeeping_at", now + limits.housekeepingMs);
    if (expired > 0 || this.#housekeepingMore) this.wakeAt(Date.now());
    return { expired };
  }

  /**
   * Deletes (bytes in R2, row in D1, row here) every attachment that is doomed, or pending and
   * older than `attachmentGraceMs` at `now`. Returns how many. Idempotent, so it may run from an
   * alarm that is delivered more than once; a failure leaves the rest doomed for the next run.
   */
  async cleanupAttachments(now: number): Promise<number> {
    const { log: roomLog, env, attachments, limits } = this.#d;
    const meta = roomLog.meta();
    if (!meta) return 0;
    const bucket = filesBucket(env, meta.tenantId);
    let removed = 0;
    for (;;) {
      const due = attachments.takeDue(now, limits.attachmentGraceMs, CLEANUP_BATCH);
      if (due.length === 0) return removed;
      await deleteStored(bucket, directoryDb(env, meta.tenantId), meta.tenantId, due);
      attachments.forget(due.map((r) => r.id));
      removed += due.length;
      if (due.length < CLEANUP_BATCH) return removed;
    }
  }
}
