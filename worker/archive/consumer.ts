/**
 * @module The room-events queue consumer: copies each room event into the D1 archive.
 *
 * Queues deliver at least once and in no guaranteed order, so every write is idempotent on
 * (tenant, room, seq) and order-independent: a message archived after its edit or its delete still
 * ends with the latest edit's text or with no text at all. The statements of one event run as one
 * D1 batch (atomic); a failure retries the message with exponential backoff, and after the
 * configured attempts the queue moves it to the dead-letter queue. A batch is archived in one D1
 * round trip; only when that fails are its messages tried one by one.
 *
 * Each room is then told which of its events are archived (`Room.confirmArchived`), so they leave
 * its outbox; a room resends what stays unconfirmed. A tombstone (`expired`, from retention)
 * replaces whatever was archived for its seq, and nothing archived later can bring the text back.
 */
import type { RoomEvent } from "../../protocol/index.ts";
import { roomStub } from "../rooms.ts";

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

/** A deleted message or edit keeps no text and no attachments in the archive either. */
const SCRUB = `json_remove(json_set(json, '$.text', '', '$.deleted', json('true')), '$.attachments')`;

/** The D1 statements that archive one event, in order. */
export function archiveStatements(
  db: D1Database,
  { tenantId, roomId, event }: ArchiveMessage,
): D1PreparedStatement[] {
  const key = [tenantId, roomId] as const;
  const isMessage = event.kind === "message";
  const text = isMessage && !event.deleted ? event.text : "";
  const target = "target" in event ? event.target : null;
  if (event.kind === "expired") {
    return [
      db
        .prepare(
          `INSERT INTO archived_events (tenant_id, room_id, seq, kind, author_id, author_name, ts, target, text, text_seq, deleted, json)
           VALUES (?, ?, ?, 'expired', ?, ?, ?, NULL, '', 0, 1, ?)
           ON CONFLICT (tenant_id, room_id, seq) DO UPDATE SET kind = 'expired', author_id = excluded.author_id,
             author_name = excluded.author_name, target = NULL, text = '', text_seq = 0, deleted = 1, json = excluded.json`,
        )
        .bind(...key, event.seq, event.author.id, event.author.name, event.ts, JSON.stringify(event)),
    ];
  }
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
  const valid: Message<ArchiveMessage>[] = [];
  for (const message of batch.messages) {
    if (isArchiveMessage(message.body)) valid.push(message as Message<ArchiveMessage>);
    else {
      // Malformed: retrying will not fix it, but the dead-letter queue keeps it for an admin.
      console.error(
        JSON.stringify({ event: "archive_malformed", id: message.id, attempts: message.attempts }),
      );
      message.retry({ delaySeconds: MAX_RETRY_DELAY_SECONDS });
    }
  }
  const confirmed = new Map<string, { tenantId: string; roomId: string; seqs: number[] }>();
  const archived = (m: Message<ArchiveMessage>) => {
    m.ack();
    const k = `${m.body.tenantId}:${m.body.roomId}`;
    const room = confirmed.get(k) ?? { tenantId: m.body.tenantId, roomId: m.body.roomId, seqs: [] };
    room.seqs.push(m.body.event.seq);
    confirmed.set(k, room);
  };
  try {
    // The whole batch in one D1 round trip (one transaction): the common case.
    if (valid.length > 0) await env.DB.batch(valid.flatMap((m) => archiveStatements(env.DB, m.body)));
    for (const m of valid) archived(m);
  } catch {
    // Something in the batch failed: one message at a time, so only the failing ones retry.
    for (const m of valid) {
      try {
        await env.DB.batch(archiveStatements(env.DB, m.body));
        archived(m);
      } catch (err) {
        const delaySeconds = Math.min(MAX_RETRY_DELAY_SECONDS, 2 ** m.attempts);
        console.error(
          JSON.stringify({
            event: "archive_failed",
            room: m.body.roomId,
            seq: m.body.event.seq,
            attempts: m.attempts,
            error: String(err),
          }),
        );
        m.retry({ delaySeconds });
      }
    }
  }
  // A lost confirmation only means the room sends those events again later (harmless).
  await Promise.all(
    [...confirmed.values()].map(({ tenantId, roomId, seqs }) =>
      roomStub(env, tenantId, roomId)
        .confirmArchived(seqs)
        .catch((err: unknown) =>
          console.error(
            JSON.stringify({ event: "archive_confirm_failed", room: roomId, error: String(err) }),
          ),
        ),
    ),
  );
}
