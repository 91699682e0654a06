/**
 * @module The room's attachments, in the room object's own SQLite (table created by room-log.ts's
 * migrations): which uploads exist, which message references each, and which are due for deletion.
 *
 * An attachment is in one of three states:
 * - pending: uploaded, no message references it yet (`seq` null). Only its uploader may attach it
 *   or download it. Deleted once `attachmentGraceMs` has passed.
 * - referenced: `seq` is the message that carries it, set in the same transaction as that
 *   message's append, so an event never names an attachment the room does not hold for it.
 * - doomed: its message was deleted (or cleanup has started on it). Nobody may attach or download
 *   it; the next cleanup deletes it without waiting for the grace period.
 *
 * The bytes live in R2 and a directory row in D1; `deleteStored` removes both, then the room row,
 * so an interrupted cleanup is simply repeated (every step is idempotent).
 */
import { type AttachmentRef, type Failure, failure } from "../protocol/index.ts";

/** What the worker registers after an upload: the event's `AttachmentRef` plus where the bytes are. */
export interface AttachmentRecord extends AttachmentRef {
  uploaderId: string;
  objectKey: string;
  createdAt: number;
}

/** Where an attachment's bytes live in the tenant's bucket: tenant-prefixed, so a tenant's files
 * can be listed, exported or erased by prefix. */
export function attachmentKey(tenantId: string, roomId: string, id: string): string {
  return `${tenantId}/attachments/${roomId}/${id}`;
}

interface Row extends Record<string, SqlStorageValue> {
  id: string;
  uploader_id: string;
  name: string;
  content_type: string;
  size: number;
  object_key: string;
  created_at: number;
  seq: number | null;
  doomed: number;
}

const COLUMNS = "id, uploader_id, name, content_type, size, object_key, created_at, seq, doomed";

function recordOf(row: Row): AttachmentRecord {
  return {
    id: row.id,
    name: row.name,
    size: row.size,
    contentType: row.content_type,
    uploaderId: row.uploader_id,
    objectKey: row.object_key,
    createdAt: row.created_at,
  };
}

function refOf(row: Row): AttachmentRef {
  return { id: row.id, name: row.name, size: row.size, contentType: row.content_type };
}

export class RoomAttachments {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  #row(id: string): Row | undefined {
    return this.#sql.exec<Row>(`SELECT ${COLUMNS} FROM attachments WHERE id = ?`, id).toArray()[0];
  }

  /** Registers an upload as pending. Repeating it with the same id changes nothing. */
  add(record: AttachmentRecord): void {
    this.#sql.exec(
      `INSERT INTO attachments (id, uploader_id, name, content_type, size, object_key, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      record.id,
      record.uploaderId,
      record.name,
      record.contentType,
      record.size,
      record.objectKey,
      record.createdAt,
    );
  }

  /** Forgets a pending upload whose bytes never arrived (the body failed). A referenced or doomed
   * attachment is left alone. */
  discardPending(id: string, uploaderId: string): void {
    this.#sql.exec(
      "DELETE FROM attachments WHERE id = ? AND uploader_id = ? AND seq IS NULL AND doomed = 0",
      id,
      uploaderId,
    );
  }

  /**
   * The attachments a new message by `uploaderId` may carry, in the order given, or why not: each
   * must be a pending upload of this room by the same user, at most `max`, none twice. Unknown
   * ids, other people's and other rooms' uploads are all the same `not_found`, so nothing about
   * someone else's upload is revealed. Writes nothing; `attach` does, inside the append.
   */
  claimable(ids: readonly string[], uploaderId: string, max: number): AttachmentRef[] | Failure {
    if (ids.length > max) return failure("bad_request", `at most ${max} attachments per message`);
    if (new Set(ids).size !== ids.length) return failure("bad_request", "an attachment is listed twice");
    const refs: AttachmentRef[] = [];
    for (const id of ids) {
      const row = this.#row(id);
      if (!row || row.uploader_id !== uploaderId || row.doomed === 1) {
        return failure("not_found", `no attachment ${JSON.stringify(id.slice(0, 64))} of yours in this room`);
      }
      if (row.seq !== null) {
        return failure("bad_request", `attachment ${id} is already attached to message ${row.seq}`);
      }
      refs.push(refOf(row));
    }
    return refs;
  }

  /** Marks attachments as carried by message `seq`. Call inside the append of that message. */
  attach(ids: readonly string[], seq: number): void {
    for (const id of ids) {
      this.#sql.exec("UPDATE attachments SET seq = ? WHERE id = ? AND seq IS NULL", seq, id);
    }
  }

  /** Dooms the attachments of a deleted message. Call inside the append of the delete. */
  doomMessage(seq: number): void {
    this.#sql.exec("UPDATE attachments SET doomed = 1 WHERE seq = ?", seq);
  }

  /** Dooms the attachments of every message in (after, through]: retention of events older than
   * the room's command window, which it knows by range, not one by one. */
  doomRange(after: number, through: number): void {
    this.#sql.exec("UPDATE attachments SET doomed = 1 WHERE seq > ? AND seq <= ?", after, through);
  }

  /** The attachment `userId` may download: referenced ones for any member, pending ones for their
   * uploader only, doomed ones for nobody. The caller checks membership. */
  readable(id: string, userId: string): AttachmentRecord | undefined {
    const row = this.#row(id);
    if (!row || row.doomed === 1) return undefined;
    if (row.seq === null && row.uploader_id !== userId) return undefined;
    return recordOf(row);
  }

  /**
   * Attachments to delete now: doomed ones, and pending ones older than `graceMs`. They are
   * doomed here, in the same synchronous step that finds them, so no message can claim one while
   * its bytes are being deleted.
   */
  takeDue(now: number, graceMs: number, limit: number): AttachmentRecord[] {
    const rows = this.#sql
      .exec<Row>(
        `SELECT ${COLUMNS} FROM attachments
         WHERE doomed = 1 OR (seq IS NULL AND created_at <= ?) ORDER BY created_at LIMIT ?`,
        now - graceMs,
        limit,
      )
      .toArray();
    for (const row of rows) this.#sql.exec("UPDATE attachments SET doomed = 1 WHERE id = ?", row.id);
    return rows.map(recordOf);
  }

  /** When cleanup next has work: `now` if something is doomed, else when the oldest pending upload
   * outlives the grace period; null when there is nothing to clean. */
  nextDue(now: number, graceMs: number): number | null {
    const row = this.#sql
      .exec<{ doomed: number; oldest: number | null }>(
        "SELECT COUNT(*) FILTER (WHERE doomed = 1) AS doomed, MIN(created_at) FILTER (WHERE seq IS NULL) AS oldest FROM attachments",
      )
      .one();
    if (row.doomed > 0) return now;
    return row.oldest === null ? null : row.oldest + graceMs;
  }

  /** Forgets attachments whose bytes and directory rows are gone. */
  forget(ids: readonly string[]): void {
    for (const id of ids) this.#sql.exec("DELETE FROM attachments WHERE id = ? AND doomed = 1", id);
  }
}

/** D1 binds at most 100 parameters per statement; one is the tenant. */
const D1_BATCH = 50;

/** Deletes attachments' bytes (R2) and directory rows (D1). Idempotent: deleting what is already
 * gone is not an error, so an interrupted cleanup is repeated safely. */
export async function deleteStored(
  bucket: R2Bucket,
  db: D1Database,
  tenantId: string,
  records: readonly AttachmentRecord[],
): Promise<void> {
  for (let i = 0; i < records.length; i += D1_BATCH) {
    const chunk = records.slice(i, i + D1_BATCH);
    await bucket.delete(chunk.map((r) => r.objectKey));
    await db
      .prepare(`DELETE FROM attachments WHERE tenant_id = ? AND id IN (${chunk.map(() => "?").join(", ")})`)
      .bind(tenantId, ...chunk.map((r) => r.id))
      .run();
  }
}
