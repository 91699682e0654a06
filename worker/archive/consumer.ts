/**
 * @module The room-events queue consumer: copies each room event into the D1 archive.
 *
 * Queues deliver at least once and in no guaranteed order, so every write is idempotent on
 * (tenant, room, seq) and order-independent: a message archived after its edit or its delete still
 * ends with the latest edit's text or with no text at all. The statements of one event run as one
 * D1 batch (atomic); a failure retries the message with exponential backoff, and after the
 * configured attempts the queue moves it to the dead-letter queue.
 */
import type { RoomEvent } from "../../protocol/index.ts";

/** What a room sends to the room-events queue for each event of its log. */
export interface ArchiveMessage {
  tenantId: string;
  roomId: string;
  event: RoomEvent;
}

const MAX_RETRY_DELAY_SECONDS = 300;

function isArchiveMessage(body: unknown): body is ArchiveMessage {
  if (typeof body !== "object" || body === null) return false;
  const b = body as Record<string, unknown>;
  const e = b.event as Record<string, unknown> | undefined;
  return (
    typeof b.tenantId === "string" &&
    typeof b.roomId === "string" &&
    typeof e === "object" &&
    e !== null &&
    Number.isSafeInteger(e.seq) &&
    typeof e.kind === "string" &&
    typeof e.ts === "number" &&
    typeof (e.author as { id?: unknown } | undefined)?.id === "string"
  );
}

const SCRUB = `json_set(json, '$.text', '', '$.deleted', json('true'))`;

/** The D1 statements that archive one event, in order. */
export function archiveStatements(
  db: D1Database,
  { tenantId, roomId, event }: ArchiveMessage,
): D1PreparedStatement[] {
  const key = [tenantId, roomId] as const;
  const isMessage = event.kind === "message";
  const text = isMessage && !event.deleted ? event.text : "";
  const target = "target" in event ? event.target : null;
  const statements = [
    db
      .prepare(
        `INSERT INTO archived_events (tenant_id, room_id, seq, kind, author_id, author_name, ts, target, text, text_seq, deleted, json)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
      )
      .bind(
        ...key,
        event.seq,
        event.kind,
        event.author.id,
        event.author.name,
        event.ts,
        target,
        text,
        isMessage ? event.seq : 0,
        "deleted" in event && event.deleted ? 1 : 0,
        JSON.stringify(event),
      ),
  ];
  if (isMessage) {
    // Its edits or delete may have been archived first.
    statements.push(
      db
        .prepare(
          `UPDATE archived_events SET
             text = (SELECT json_extract(e.json, '$.text') FROM archived_events e
                     WHERE e.tenant_id = ?1 AND e.room_id = ?2 AND e.kind = 'edit' AND e.target = ?3 ORDER BY e.seq DESC LIMIT 1),
             text_seq = (SELECT MAX(e.seq) FROM archived_events e
                         WHERE e.tenant_id = ?1 AND e.room_id = ?2 AND e.kind = 'edit' AND e.target = ?3)
           WHERE tenant_id = ?1 AND room_id = ?2 AND seq = ?3 AND deleted = 0
             AND text_seq < (SELECT MAX(e.seq) FROM archived_events e
                             WHERE e.tenant_id = ?1 AND e.room_id = ?2 AND e.kind = 'edit' AND e.target = ?3)`,
        )
        .bind(...key, event.seq),
      db
        .prepare(
          `UPDATE archived_events SET text = '', deleted = 1, json = ${SCRUB}
           WHERE tenant_id = ?1 AND room_id = ?2 AND seq = ?3 AND deleted = 0
             AND EXISTS (SELECT 1 FROM archived_events d WHERE d.tenant_id = ?1 AND d.room_id = ?2 AND d.kind = 'delete' AND d.target = ?3)`,
        )
        .bind(...key, event.seq),
    );
  } else if (event.kind === "edit") {
    statements.push(
      db
        .prepare(
          `UPDATE archived_events SET text = ?4, text_seq = ?5
           WHERE tenant_id = ?1 AND room_id = ?2 AND seq = ?3 AND kind = 'message' AND deleted = 0 AND text_seq < ?5`,
        )
        .bind(...key, event.target, event.text, event.seq),
      // An edit of a message deleted earlier keeps no text either.
      db
        .prepare(
          `UPDATE archived_events SET json = ${SCRUB}
           WHERE tenant_id = ?1 AND room_id = ?2 AND seq = ?3
             AND EXISTS (SELECT 1 FROM archived_events d WHERE d.tenant_id = ?1 AND d.room_id = ?2 AND d.kind = 'delete' AND d.target = ?4)`,
        )
        .bind(...key, event.seq, event.target),
    );
  } else if (event.kind === "delete") {
    statements.push(
      db
        .prepare(
          `UPDATE archived_events SET text = '', deleted = 1, json = ${SCRUB}
           WHERE tenant_id = ?1 AND room_id = ?2 AND seq = ?3 AND kind = 'message'`,
        )
        .bind(...key, event.target),
      db
        .prepare(
          `UPDATE archived_events SET json = ${SCRUB}
           WHERE tenant_id = ?1 AND room_id = ?2 AND kind = 'edit' AND target = ?3`,
        )
        .bind(...key, event.target),
    );
  }
  return statements;
}

/** The queue handler for room-events. */
export async function consumeRoomEvents(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  for (const message of batch.messages) {
    if (!isArchiveMessage(message.body)) {
      // Malformed: retrying will not fix it, but the dead-letter queue keeps it for an admin.
      console.error(
        JSON.stringify({ event: "archive_malformed", id: message.id, attempts: message.attempts }),
      );
      message.retry({ delaySeconds: MAX_RETRY_DELAY_SECONDS });
      continue;
    }
    try {
      await env.DB.batch(archiveStatements(env.DB, message.body));
      message.ack();
    } catch (err) {
      const delaySeconds = Math.min(MAX_RETRY_DELAY_SECONDS, 2 ** message.attempts);
      console.error(
        JSON.stringify({
          event: "archive_failed",
          room: message.body.roomId,
          seq: message.body.event.seq,
          attempts: message.attempts,
          error: String(err),
        }),
      );
      message.retry({ delaySeconds });
    }
  }
}
