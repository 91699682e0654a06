/**
 * @module The room-events queue consumer: copies each room event into the D1 history, on the
 * shard its tenant's placement names (worker/history/placement.ts).
 *
 * Queues deliver at least once and in no guaranteed order, so every write is idempotent on
 * (tenant, room, seq) and order-independent: a message archived after its edit or its delete still
 * ends with the latest edit's text or with no text at all. A batch's statements (drizzle, set-based
 * per room) run as one D1 batch (atomic); a failure retries the message with exponential backoff, and after the
 * configured attempts the queue moves it to the dead-letter queue. A batch is archived in one D1
 * round trip; only when that fails are its messages tried one by one.
 *
 * Each room is then told which of its events (and which retention tombstones) are archived
 * (`Room.confirmArchived`), so its watermarks move; a room resends what stays unconfirmed. A tombstone (`expired`, from retention)
 * replaces whatever was archived for its seq, and nothing archived later can bring the text back.
 */
import { and, desc, eq, inArray, lt, type SQLWrapper, sql } from "drizzle-orm";
import type { BatchItem } from "drizzle-orm/batch";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import { alias } from "drizzle-orm/sqlite-core";
import { limitsOf } from "../../config/limits.ts";
import { log } from "../../platform/log.ts";
import type { RoomEvent } from "../../protocol/index.ts";
import { archivedEvents } from "../db/history-schema.ts";
import { noteWrite, placementsOf, shardAt, shardDb } from "../history/placement.ts";
import { type ArchiveMessage, roomStub } from "../stubs.ts";
import { forwardToWebhooks } from "../webhooks.ts";

export type { ArchiveMessage } from "../stubs.ts";

const MAX_RETRY_DELAY_SECONDS = 300;
const DAY_MS = 24 * 60 * 60 * 1000;

function isEvent(e: unknown): e is RoomEvent {
  if (typeof e !== "object" || e === null) return false;
  const o = e as Record<string, unknown>;
  return (
    Number.isSafeInteger(o.seq) &&
    typeof o.kind === "string" &&
    typeof o.ts === "number" &&
    typeof (o.author as { id?: unknown } | undefined)?.id === "string"
  );
}

/** Most events one queue message may carry (a room packs at most `PACK_EVENTS`). */
const MAX_PACK_EVENTS = 1000;

/**
 * The events a queue message carries, each as the consumer archives it, or null for a malformed
 * body. A room sends packs (`ArchivePack`); a message of one event (`ArchiveMessage`, what rooms
 * sent before packs, and what a dead letter of then replays) is still taken.
 */
export function archiveItems(body: unknown): ArchiveMessage[] | null {
  if (typeof body !== "object" || body === null) return null;
  const b = body as Record<string, unknown>;
  if (typeof b.tenantId !== "string" || typeof b.roomId !== "string") return null;
  const { tenantId, roomId } = b;
  if (b.events === undefined) {
    if (!isEvent(b.event)) return null;
    const targetTs = typeof b.targetTs === "number" ? { targetTs: b.targetTs } : {};
    return [{ tenantId, roomId, event: b.event, ...targetTs }];
  }
  if (!Array.isArray(b.events) || b.events.length === 0 || b.events.length > MAX_PACK_EVENTS) return null;
  const items: ArchiveMessage[] = [];
  for (const entry of b.events as unknown[]) {
    if (typeof entry !== "object" || entry === null) return null;
    const { event, targetTs } = entry as Record<string, unknown>;
    if (!isEvent(event) || (targetTs !== undefined && typeof targetTs !== "number")) return null;
    items.push({ tenantId, roomId, event, ...(targetTs !== undefined ? { targetTs } : {}) });
  }
  return items;
}

/** Another row of the archive, for the subqueries that look up a message's edits and delete. */
const other = alias(archivedEvents, "other");
type Batch = BatchItem<"sqlite">;

/** A deleted message or edit keeps no text and no attachments in the archive either. */
const SCRUB = sql`json_remove(json_set(${archivedEvents.json}, '$.text', '', '$.deleted', json('true')), '$.attachments')`;

/** D1 binds at most 100 parameters per statement (more fails the whole batch, which then falls back
 * to one message at a time): rows per multi-row INSERT (12 columns each), and seqs per set-based
 * fix-up, whose room conditions and subqueries bind 13 more. test/unit/archive-statements.test.ts
 * checks every statement of worst-case batches against the limit. */
export const D1_MAX_PARAMS = 100;
/** D1 queries per Worker invocation (Workers Paid): a consumer batch of full packs (100 messages of
 * `PACK_EVENTS` events) must write in fewer statements (test/unit/archive-statements.test.ts). */
export const D1_MAX_QUERIES = 1000;
const INSERT_ROWS = Math.floor(D1_MAX_PARAMS / 12);
const SEQS_PER_UPDATE = D1_MAX_PARAMS - 20;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * The statements (drizzle) that archive a batch of events, for one transaction: per room, the new
 * events in multi-row INSERTs, then tombstones, then what each edit and delete changes in its
 * target, then set-based fix-ups of the batch's messages (their edits or delete may have been
 * archived first). Each statement is idempotent and every one after the INSERTs converges on the
 * same end state whatever order the events arrive in, within a batch or across batches: a message
 * ends with its latest edit's text, or with none once deleted or expired. A batch of N messages of
 * one room costs about N/8 + 2 statements instead of 3 per message.
 */
export function archiveStatements(db: DrizzleD1Database, messages: readonly ArchiveMessage[]): Batch[] {
  const byRoom = new Map<string, ArchiveMessage[]>();
  for (const m of messages) {
    const k = JSON.stringify([m.tenantId, m.roomId]);
    byRoom.set(k, [...(byRoom.get(k) ?? []), m]);
  }
  const statements: Batch[] = [];
  for (const list of byRoom.values()) {
    const { tenantId, roomId } = list[0] as ArchiveMessage;
    const room = (t: typeof archivedEvents | typeof other) =>
      and(eq(t.tenantId, tenantId), eq(t.roomId, roomId));
    const at = (seq: number) => and(room(archivedEvents), eq(archivedEvents.seq, seq));
    const deletedExists = (target: SQLWrapper | number) =>
      sql`EXISTS ${db
        .select({ one: sql`1` })
        .from(other)
        .where(and(room(other), eq(other.kind, "delete"), eq(other.target, target as number)))}`;
    const base = (event: RoomEvent) => ({
      tenantId,
      roomId,
      seq: event.seq,
      kind: event.kind,
      authorId: event.author.id,
      authorName: event.author.name,
      ts: event.ts,
      json: JSON.stringify(event),
    });
    const rows = list
      .map((m) => m.event)
      .filter((e) => e.kind !== "expired")
      .map((event) => {
        const isMessage = event.kind === "message";
        return {
          ...base(event),
          target: "target" in event ? event.target : null,
          text: isMessage && !event.deleted ? event.text : "",
          textSeq: isMessage ? event.seq : 0,
          deleted: "deleted" in event && event.deleted ? 1 : 0,
        };
      });
    for (const chunk of chunks(rows, INSERT_ROWS)) {
      statements.push(db.insert(archivedEvents).values(chunk).onConflictDoNothing());
    }
    for (const { event } of list) {
      if (event.kind === "expired") {
        // A tombstone replaces whatever was archived for its seq.
        const tombstone = { ...base(event), target: null, text: "", textSeq: 0, deleted: 1 };
        statements.push(
          db
            .insert(archivedEvents)
            .values(tombstone)
            .onConflictDoUpdate({
              target: [archivedEvents.tenantId, archivedEvents.roomId, archivedEvents.seq],
              set: { ...tombstone, tenantId: undefined, roomId: undefined, seq: undefined },
            }),
        );
      } else if (event.kind === "edit") {
        statements.push(
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
            .where(and(at(event.seq), deletedExists(event.target))),
        );
      } else if (event.kind === "delete") {
        statements.push(
          db
            .update(archivedEvents)
            .set({ text: "", deleted: 1, json: SCRUB })
            .where(and(at(event.target), eq(archivedEvents.kind, "message"))),
          db
            .update(archivedEvents)
            .set({ json: SCRUB })
            .where(
              and(
                room(archivedEvents),
                eq(archivedEvents.kind, "edit"),
                eq(archivedEvents.target, event.target),
              ),
            ),
        );
      }
    }
    // The batch's messages whose edits or delete were archived first (correlated on the row's seq).
    const editsOfRow = and(room(other), eq(other.kind, "edit"), eq(other.target, archivedEvents.seq));
    const latestEdit = db
      .select({ seq: sql`MAX(${other.seq})` })
      .from(other)
      .where(editsOfRow);
    const latestText = db
      .select({ text: sql`json_extract(${other.json}, '$.text')` })
      .from(other)
      .where(editsOfRow)
      .orderBy(desc(other.seq))
      .limit(1);
    const messageSeqs = list.filter((m) => m.event.kind === "message").map((m) => m.event.seq);
    for (const seqs of chunks(messageSeqs, SEQS_PER_UPDATE)) {
      const mine = and(
        room(archivedEvents),
        inArray(archivedEvents.seq, seqs),
        eq(archivedEvents.deleted, 0),
      );
      statements.push(
        db
          .update(archivedEvents)
          .set({ text: sql`${latestText}`, textSeq: sql`${latestEdit}` })
          .where(and(mine, sql`${archivedEvents.textSeq} < ${latestEdit}`)),
        db
          .update(archivedEvents)
          .set({ text: "", deleted: 1, json: SCRUB })
          .where(and(mine, deletedExists(archivedEvents.seq))),
      );
    }
  }
  return statements;
}

/** Runs statements as one D1 batch (one transaction); the database's size after it, in bytes,
 * when D1 reported it (each statement's result carries `meta.size_after`). */
async function runBatch(db: DrizzleD1Database, statements: Batch[]): Promise<number | null> {
  const [first, ...rest] = statements;
  if (!first) return null;
  const results: unknown[] = await db.batch([first, ...rest]);
  const size = (results.at(-1) as { meta?: { size_after?: unknown } } | undefined)?.meta?.size_after;
  return typeof size === "number" ? size : null;
}

/** The queue handler for room-events. */
export async function consumeRoomEvents(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  const now = Date.now();
  const windowStart = now - limitsOf(env).historyDays * DAY_MS;
  const confirmed = new Map<
    string,
    { tenantId: string; roomId: string; seqs: number[]; tombstones: number[] }
  >();
  const confirm = (item: ArchiveMessage) => {
    const k = `${item.tenantId}:${item.roomId}`;
    const room = confirmed.get(k) ?? {
      tenantId: item.tenantId,
      roomId: item.roomId,
      seqs: [],
      tombstones: [],
    };
    room.seqs.push(item.event.seq);
    // A tombstone confirms retention's watermark as well as the event's.
    if (item.event.kind === "expired") room.tombstones.push(item.event.seq);
    confirmed.set(k, room);
  };
  /** A message is archived when every event of it is; one failing event retries the whole message
   * (writes are idempotent, so what did land is written again harmlessly). */
  const failed = new Set<Message>();
  const fail = (m: Message, first: ArchiveMessage, err: unknown) => {
    if (failed.has(m)) return;
    failed.add(m);
    log({
      event: "archive_failed",
      room: first.roomId,
      seq: first.event.seq,
      attempts: m.attempts,
      error: String(err),
    });
    m.retry({ delaySeconds: Math.min(MAX_RETRY_DELAY_SECONDS, 2 ** m.attempts) });
  };
  // Each event goes to the history shard its tenant's placement names for its time (for an edit,
  // deletion or reaction: its target's time, so a message and its changes share a shard).
  type Entry = { m: Message; item: ArchiveMessage };
  const byShard = new Map<string, { db: D1Database; entries: Entry[]; tenants: Set<string> }>();
  const carried = new Map<Message, ArchiveMessage[]>();
  for (const message of batch.messages) {
    const items = archiveItems(message.body);
    // Every event of a message is of one room, hence one tenant; a message has at least one.
    const [first] = items ?? [];
    if (!items || !first) {
      // Malformed: retrying will not fix it, but the dead-letter queue keeps it for an admin.
      log({ event: "archive_malformed", id: message.id, attempts: message.attempts });
      message.retry({ delaySeconds: MAX_RETRY_DELAY_SECONDS });
      continue;
    }
    carried.set(message, items);
    try {
      const placements = await placementsOf(env, first.tenantId, now);
      for (const item of items) {
        const at = item.targetTs ?? item.event.ts;
        // Older than the window (a log shipped again, a late retry): D1 keeps no such rows (the
        // scheduled job deletes whatever is left of them), R2 and the room have them.
        if (at < windowStart) continue;
        const name = shardAt(placements, at);
        const key = `${item.tenantId}\u0000${name}`;
        const group = byShard.get(key) ?? {
          db: shardDb(env, item.tenantId, name),
          entries: [],
          tenants: new Set(),
        };
        group.entries.push({ m: message, item });
        group.tenants.add(item.tenantId);
        byShard.set(key, group);
      }
    } catch (err) {
      fail(message, first, err);
    }
  }
  for (const [key, { db: shard, entries: all, tenants }] of byShard) {
    const db = drizzle(shard);
    const entries = all.filter((e) => !failed.has(e.m));
    let size: number | null = null;
    try {
      // The whole batch in one D1 round trip (one transaction): the common case.
      size = await runBatch(
        db,
        archiveStatements(
          db,
          entries.map((e) => e.item),
        ),
      );
    } catch {
      // Something in the batch failed: one message at a time, so only the failing ones retry.
      const byMessage = new Map<Message, ArchiveMessage[]>();
      for (const { m, item } of entries) byMessage.set(m, [...(byMessage.get(m) ?? []), item]);
      for (const [m, items] of byMessage) {
        try {
          size = (await runBatch(db, archiveStatements(db, items))) ?? size;
        } catch (err) {
          if (items[0]) fail(m, items[0], err);
        }
      }
    }
    // The shard's size after the write decides where its tenants' next periods go: read from the
    // write's own result, or asked for when no write reported it.
    try {
      size ??= (await shard.prepare("SELECT 1").run()).meta.size_after;
      await noteWrite(env, key.slice(key.indexOf("\u0000") + 1), size, [...tenants], now);
    } catch (err) {
      log({ event: "history_fill_check_failed", error: String(err) });
    }
  }
  // Outgoing webhooks get each archived pack before its room is told it is archived: a pack they
  // did not get is retried, and the room sends again what stays unconfirmed (worker/webhooks.ts).
  await Promise.all(
    [...carried].map(async ([m, items]) => {
      if (failed.has(m) || !items[0]) return;
      try {
        await forwardToWebhooks(env, items);
      } catch (err) {
        fail(m, items[0], err);
      }
    }),
  );
  for (const [m, items] of carried) {
    if (failed.has(m)) continue;
    m.ack();
    for (const item of items) confirm(item);
  }
  // A lost confirmation only means the room sends those events again later (harmless).
  await Promise.all(
    [...confirmed.values()].map(({ tenantId, roomId, seqs, tombstones }) =>
      roomStub(env, tenantId, roomId)
        .confirmArchived(seqs, tombstones)
        .catch((err: unknown) => log({ event: "archive_confirm_failed", room: roomId, error: String(err) })),
    ),
  );
}
