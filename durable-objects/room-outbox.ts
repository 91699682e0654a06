/**
 * @module The room's transactional outbox, in the room's SQLite. `RoomLog.append` writes an
 * event's outbox row in the event's own transaction; the room's alarm sends due rows to the
 * room-events queue and stamps them `sent_at`; a row leaves only when the archive consumer confirms
 * the event (`confirm`). A row sent but not confirmed within `archiveResendMs` is due again: queues
 * deliver at least once, but a local queue lives in memory and dies with the process, and the
 * archive is idempotent on (tenant, room, seq), so sending twice is harmless and losing is not.
 */

export type OutboxRow = {
  seq: number;
  json: string;
};

export class Outbox {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  /** The oldest rows due for sending (never sent, or sent `resendMs` ago unconfirmed), with the
   * events' current JSON: a message deleted meanwhile goes out scrubbed. */
  due(now: number, resendMs: number, limit: number): OutboxRow[] {
    return this.#sql
      .exec<OutboxRow>(
        `SELECT o.seq, e.json FROM outbox o JOIN events e ON e.seq = o.seq
         WHERE o.sent_at IS NULL OR o.sent_at <= ? ORDER BY o.seq LIMIT ?`,
        now - resendMs,
        limit,
      )
      .toArray();
  }

  markSent(seqs: readonly number[], now: number): void {
    this.#sql.exec(
      "UPDATE outbox SET sent_at = ? WHERE seq IN (SELECT value FROM json_each(?))",
      now,
      JSON.stringify(seqs),
    );
  }

  /** The archive holds these events: they leave the outbox. Unknown seqs are ignored. */
  confirm(seqs: readonly number[]): void {
    this.#sql.exec("DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))", JSON.stringify(seqs));
  }

  /** Every event up to this seq is confirmed archived. */
  archivedThrough(lastSeq: number): number {
    const min = this.#sql.exec<{ s: number | null }>("SELECT MIN(seq) AS s FROM outbox").one().s;
    return min === null ? lastSeq : min - 1;
  }

  /** When the outbox next has work: 0 if a row was never sent, the earliest resend time of a sent
   * one, or null when empty. */
  nextDue(resendMs: number): number | null {
    const row = this.#sql
      .exec<{ unsent: number; oldest: number | null }>(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL) AS unsent, (SELECT MIN(sent_at) FROM outbox) AS oldest",
      )
      .one();
    if (row.unsent > 0) return 0;
    return row.oldest === null ? null : row.oldest + resendMs;
  }

  size(): number {
    return this.#sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM outbox").one().n;
  }
}

/** Queue limits: 100 messages and 256 KB per batch, 128 KB per message (an event is at most about
 * 70 KB: 16 KiB of text escaped, plus its envelope). */
export function queueBatches<T extends { json: string }>(rows: readonly T[]): T[][] {
  const batches: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const row of rows) {
    const size = row.json.length * 3 + 256;
    if (batch.length > 0 && (batch.length >= 100 || bytes + size > 240_000)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(row);
    bytes += size;
  }
  if (batch.length > 0) batches.push(batch);
  return batches;
}
