/**
 * @module The dead-letter queue's consumer: records every message the room-events queue gave up on
 * in D1 (`dead_letters`), where a tenant admin lists and replays it (worker/routes/dead-letters.ts).
 * A letter goes to the directory of the tenant it names (platform/residency.ts); one that names none
 * to the default directory, for the operator.
 *
 * The DLQ delivers at least once too, so the write is idempotent on the queue's message id (a
 * redelivery, or the same batch twice, leaves one row). A message is acknowledged only after its
 * row is written: a D1 failure retries it with backoff, so nothing the archive gave up on is lost
 * on the way to the table.
 */

import { log } from "../../platform/log.ts";
import { directoryDb, directoryIn } from "../../platform/residency.ts";
import { TENANT_ID } from "../../protocol/index.ts";

const MAX_RETRY_DELAY_SECONDS = 300;
/** Room ids are `r_` plus 20 characters; anything much longer is not one, so it is not kept as one. */
const MAX_ROOM_ID_CHARS = 64;

/** What a dead letter says about itself: the tenant owns it (null: only the operator sees it). */
export interface LetterKeys {
  tenantId: string | null;
  roomId: string | null;
  seq: number | null;
}

/**
 * The tenant, room and seq a body names (a pack's: its first event's), each only when present and
 * well-typed. A body that fails
 * the archive's validation (a poison message) is still attributed to the tenant it names: rooms
 * are the only producer and write the tenant from the server's own state, so it can be trusted,
 * and the tenant's admin is the one who can tell what went wrong.
 */
export function letterKeys(body: unknown): LetterKeys {
  const keys: LetterKeys = { tenantId: null, roomId: null, seq: null };
  if (typeof body !== "object" || body === null || Array.isArray(body)) return keys;
  const b = body as Record<string, unknown>;
  if (typeof b.tenantId === "string" && TENANT_ID.test(b.tenantId)) keys.tenantId = b.tenantId;
  if (typeof b.roomId === "string" && b.roomId.length <= MAX_ROOM_ID_CHARS) keys.roomId = b.roomId;
  // A pack (durable-objects/room-archive.ts) is recorded under its first event's seq.
  const first = Array.isArray(b.events) ? (b.events[0] as Record<string, unknown> | undefined) : undefined;
  const event = (first ? first.event : b.event) as Record<string, unknown> | null | undefined;
  if (typeof event === "object" && event !== null && Number.isSafeInteger(event.seq)) {
    keys.seq = event.seq as number;
  }
  return keys;
}

/**
 * The body as JSON text, and whether it is the body itself. Rooms send JSON (`contentType:
 * "json"`), so everything they produce round-trips; anything else (bytes, values JSON cannot
 * write) is kept in a marked wrapper that only the operator sees, never replayed as if it were the
 * original. Queue bodies are at most 128 KB, well within a D1 row.
 */
export function bodyText(body: unknown): { text: string; exact: boolean } {
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
    const bytes =
      body instanceof ArrayBuffer
        ? new Uint8Array(body)
        : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return { text: JSON.stringify({ unreadable: "bytes", base64: btoa(binary) }), exact: false };
  }
  try {
    const text = JSON.stringify(body);
    if (text !== undefined) return { text, exact: true };
  } catch (err) {
    return { text: JSON.stringify({ unreadable: typeof body, error: String(err) }), exact: false };
  }
  return { text: JSON.stringify({ unreadable: typeof body }), exact: false };
}

/** The keys a letter is recorded under: only those of a body kept as itself (see bodyText). */
function recordedKeys(body: unknown): LetterKeys {
  return bodyText(body).exact ? letterKeys(body) : { tenantId: null, roomId: null, seq: null };
}

/** The directory a letter is recorded in: its tenant's, or the default one when it names none. */
function letterDirectory(env: Env, body: unknown): D1Database {
  const { tenantId } = recordedKeys(body);
  return tenantId === null ? directoryIn(env, undefined) : directoryDb(env, tenantId);
}

/** The statement that records one dead letter; a message id already recorded changes nothing. */
export function recordStatement(db: D1Database, message: Message<unknown>, now: number): D1PreparedStatement {
  const { text } = bodyText(message.body);
  const keys = recordedKeys(message.body);
  return db
    .prepare(
      `INSERT INTO dead_letters (id, tenant_id, room_id, seq, body, attempts, received_at)
       VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
    )
    .bind(message.id, keys.tenantId, keys.roomId, keys.seq, text, message.attempts, now);
}

/** The queue handler for parley-room-events-dlq. */
export async function consumeDeadLetters(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  // One message at a time, not one D1 batch: dead letters are rare, and a row D1 refuses must not
  // hold back the others.
  for (const message of batch.messages) {
    try {
      await recordStatement(letterDirectory(env, message.body), message, Date.now()).run();
      log({ event: "dead_letter_recorded", id: message.id, attempts: message.attempts });
      message.ack();
    } catch (err) {
      const delaySeconds = Math.min(MAX_RETRY_DELAY_SECONDS, 2 ** message.attempts);
      log({
        event: "dead_letter_record_failed",
        id: message.id,
        attempts: message.attempts,
        error: String(err),
      });
      message.retry({ delaySeconds });
    }
  }
}
