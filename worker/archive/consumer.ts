/**
 * @module The room-events queue consumer: copies each room event into the D1 archive.
 *
 * Queues deliver at least once and in no guaranteed order, so every write is idempotent on
 * (tenant, room, seq) and order-independent: a message archived after its edit or its delete still
 * ends with the latest edit's text or with no text at all. The statements (drizzle) of one event
 * run as one D1 batch (atomic); a failure retries the message with exponential backoff, and after the
 * configured attempts the queue moves it to the dead-letter queue. A batch is archived in one D1
 * round trip; only when that fails are its messages tried one by one.
 *
 * Each room is then told which of its events are archived (`Room.confirmArchived`), so they leave
 * its outbox; a room resends what stays unconfirmed. A tombstone (`expired`, from retention)
 * replaces whatever was archived for its seq, and nothing archived later can bring the text back.
 */
import { and, desc, eq, lt, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import { alias } from "drizzle-orm/sqlite-core";
import type { RoomEvent } from "../../protocol/index.ts";
import { archivedEvents } from "../db/schema.ts";
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

/** Another row of the archive, for the subqueries that look up a message's edits and delete. */
const other = alias(archivedEvents, "other");
type Batch = BatchItem<"sqlite">;

/** A deleted message or edit keeps no text and no attachments in the archive either. */
const SCRUB = sql`json_remove(json_set(${archivedEvents.json}, '$.text', '', '$.deleted', json('true')), '$.attachments')`;

/**
 * The statements (drizzle) that archive one event, in order. Each is idempotent and none depends on
 * the order events arrive in: a message archived after its edits takes the latest edit's text, and
 * one archived after its delete (or its tombstone) keeps no text.
 */
export function archiveStatements(
  db: DrizzleD1Database,
  { tenantId, roomId, event }: ArchiveMessage,
): Batch[] {
  const room = (t: typeof archivedEvents | typeof other) =>
    and(eq(t.tenantId, tenantId), eq(t.roomId, roomId));
  const at = (seq: number) => and(room(archivedEvents), eq(archivedEvents.seq, seq));
  const row = {
    tenantId,
    roomId,
    seq: event.seq,
    kind: event.kind,
    authorId: event.author.id,
    authorName: event.author.name,
    ts: event.ts,
    json: JSON.stringify(event),
  };
  if (event.kind === "expired") {
    const tombstone = { ...row, target: null, text: "", textSeq: 0, deleted: 1 };
    return [
      db
        .insert(archivedEvents)
        .values(tombstone)
        .onConflictDoUpdate({
          target: [archivedEvents.tenantId, archivedEvents.roomId, archivedEvents.seq],
          set: { ...tombstone, tenantId: undefined, roomId: undefined, seq: undefined },
        }),
    ];
  }
  const isMessage = event.kind === "message";
  const insert = db
    .insert(archivedEvents)
    .values({
      ...row,
      target: "target" in event ? event.target : null,
      text: isMessage && !event.deleted ? event.text : "",
      textSeq: isMessage ? event.seq : 0,
      deleted: "deleted" in event && event.deleted ? 1 : 0,
    })
    .onConflictDoNothing();
  const editsOf = (target: number) => and(room(other), eq(other.kind, "edit"), eq(other.target, target));
  const deleted = (target: number) =>
    sql`EXISTS ${db
      .select({ one: sql`1` })
      .from(other)
      .where(and(room(other), eq(other.kind, "delete"), eq(other.target, target)))}`;
  if (isMessage) {
    const latestEdit = db
      .select({ seq: sql`MAX(${other.seq})` })
      .from(other)
      .where(editsOf(event.seq));
    const latestText = db
      .select({ text: sql`json_extract(${other.json}, '$.text')` })
      .from(other)
      .where(editsOf(event.seq))
      .orderBy(desc(other.seq))
      .limit(1);
    return [
      insert,
      // Its edits may have been archived first.
      db
        .update(archivedEvents)
        .set({ text: sql`${latestText}`, textSeq: sql`${latestEdit}` })
        .where(
          and(at(event.seq), eq(archivedEvents.deleted, 0), sql`${archivedEvents.textSeq} < ${latestEdit}`),
        ),
      // Or its delete.
      db
        .update(archivedEvents)
        .set({ text: "", deleted: 1, json: SCRUB })
        .where(and(at(event.seq), eq(archivedEvents.deleted, 0), deleted(event.seq))),
    ];
  }
  if (event.kind === "edit") {
    return [
      insert,
      db
        .update(archivedEvents)
        .set({ text: event.text, textSeq: event.seq })
        .where(
          and(
            at(event.target),
            eq(archivedEvents.kind, "message"),
            eq(archivedEvents.deleted, 0),
            lt(archivedEvents.textSeq, event.seq),
          ),
        ),
      // An edit of a message deleted earlier keeps no text either.
      db
        .update(archivedEvents)
        .set({ json: SCRUB })
        .where(and(at(event.seq), deleted(event.target))),
    ];
  }
  if (event.kind === "delete") {
    return [
      insert,
      db
        .update(archivedEvents)
        .set({ text: "", deleted: 1, json: SCRUB })
        .where(and(at(event.target), eq(archivedEvents.kind, "message"))),
      db
        .update(archivedEvents)
        .set({ json: SCRUB })
        .where(
          and(room(archivedEvents), eq(archivedEvents.kind, "edit"), eq(archivedEvents.target, event.target)),
        ),
    ];
  }
  return [insert];
}

/** Runs statements as one D1 batch (one transaction). */
function runBatch(db: DrizzleD1Database, statements: Batch[]): Promise<unknown> {
  const [first, ...rest] = statements;
  return first ? db.batch([first, ...rest]) : Promise.resolve();
}

/** The queue handler for room-events. */
export async function consumeRoomEvents(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  const db = drizzle(env.DB);
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
    await runBatch(
      db,
      valid.flatMap((m) => archiveStatements(db, m.body)),
    );
    for (const m of valid) archived(m);
  } catch {
    // Something in the batch failed: one message at a time, so only the failing ones retry.
    for (const m of valid) {
      try {
        await runBatch(db, archiveStatements(db, m.body));
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
