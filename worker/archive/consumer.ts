/**
 * @module The room-events queue consumer: copies each room event into the D1 history, on the
 * shard its tenant's placement names (worker/history/placement.ts).
 *
 * Queues deliver at least once and in no guaranteed order, so every write is idempotent on
 * (tenant, room, seq) and order-independent: a message archived after its edit or its delete still
 * ends with the latest edit's text or with no text at all. A batch's statements (plain SQL, set-based
 * per room) run as one D1 batch (atomic); a failure retries the message with exponential backoff, and after the
 * configured attempts the queue moves it to the dead-letter queue. A batch is archived in one D1
 * round trip; only when that fails are its messages tried one by one.
 *
 * Each room is then told which of its events (and which retention tombstones) are archived
 * (`Room.confirmArchived`), so its watermarks move; a room resends what stays unconfirmed. A tombstone (`expired`, from retention)
 * replaces whatever was archived for its seq, and nothing archived later can bring the text back.
 */
import { limitsOf } from "../../config/limits.ts";
import { perKey } from "../../config/per-env.ts";
import { log } from "../../platform/log.ts";
import type { RoomEvent } from "../../protocol/index.ts";
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

/** One statement of a consumer batch: its SQL and what it binds (D1 prepares and runs them). */
export interface Statement {
  sql: string;
  params: (string | number | null)[];
}

/** A deleted message or edit keeps no text and no attachments in the archive either. */
const SCRUB = `json_remove(json_set(archived_events.json, '$.text', '', '$.deleted', json('true')), '$.attachments')`;

/** D1 binds at most 100 parameters per statement (more fails the whole batch, which then falls back
 * to one message at a time): rows per multi-row INSERT (12 columns each), and seqs per set-based
 * fix-up, whose room conditions and subqueries bind 11 more. test/unit/archive-statements.test.ts
 * checks every statement of worst-case batches against the limit. */
export const D1_MAX_PARAMS = 100;
/** D1 queries per Worker invocation (Workers Paid): a consumer batch of full packs (100 messages of
 * `PACK_EVENTS` events) must write in fewer statements (test/unit/archive-statements.test.ts). */
export const D1_MAX_QUERIES = 1000;
const INSERT_ROWS = Math.floor(D1_MAX_PARAMS / 12);
const SEQS_PER_UPDATE = D1_MAX_PARAMS - 20;

const COLUMNS =
  "tenant_id, room_id, seq, kind, author_id, author_name, ts, target, text, text_seq, deleted, json";
const ROW = `(${Array(12).fill("?").join(", ")})`;
/** The multi-row INSERT of `n` new events (each statement's text is built once per row or seq
 * count). */
const insertSql = perKey(
  (n: number) =>
    `INSERT INTO archived_events (${COLUMNS}) VALUES ${Array(n).fill(ROW).join(", ")} ON CONFLICT DO NOTHING`,
);
/** A tombstone replaces whatever was archived for its seq. */
const TOMBSTONE_SQL = `INSERT INTO archived_events (${COLUMNS}) VALUES ${ROW} ON CONFLICT (tenant_id, room_id, seq) DO UPDATE SET kind = excluded.kind, author_id = excluded.author_id, author_name = excluded.author_name, ts = excluded.ts, target = excluded.target, text = excluded.text, text_seq = excluded.text_seq, deleted = excluded.deleted, json = excluded.json`;
/** Another row of the room (`other`) that is `kind` and targets `target` (an SQL expression). */
const OTHER = (target: string) =>
  `FROM archived_events other WHERE other.tenant_id = ? AND other.room_id = ? AND other.kind = ? AND other.target = ${target}`;
const DELETED_EXISTS = (target: string) => `EXISTS (SELECT 1 ${OTHER(target)})`;
const AT = "tenant_id = ? AND room_id = ? AND seq = ?";
/** An edit sets its target message's text, unless the message is deleted or a later edit is in. */
const EDIT_TEXT_SQL = `UPDATE archived_events SET text = ?, text_seq = ? WHERE ${AT} AND kind = 'message' AND deleted = 0 AND text_seq < ?`;
/** An edit of a message deleted earlier keeps no text either. */
const EDIT_SCRUB_SQL = `UPDATE archived_events SET json = ${SCRUB} WHERE ${AT} AND ${DELETED_EXISTS("?")}`;
const DELETE_TARGET_SQL = `UPDATE archived_events SET text = '', deleted = 1, json = ${SCRUB} WHERE ${AT} AND kind = 'message'`;
const DELETE_EDITS_SQL = `UPDATE archived_events SET json = ${SCRUB} WHERE tenant_id = ? AND room_id = ? AND kind = 'edit' AND target = ?`;
/** The batch's messages whose edits were archived first take the latest one's text (correlated on
 * the row's seq), and those whose delete was archived first lose theirs. */
const fixupSql = perKey((n: number): [string, string] => {
  const mine = `tenant_id = ? AND room_id = ? AND seq IN (${Array(n).fill("?").join(", ")}) AND deleted = 0`;
  const latestEdit = `(SELECT MAX(other.seq) ${OTHER("archived_events.seq")})`;
  const latestText = `(SELECT json_extract(other.json, '$.text') ${OTHER("archived_events.seq")} ORDER BY other.seq DESC LIMIT 1)`;
  return [
    `UPDATE archived_events SET text = ${latestText}, text_seq = ${latestEdit} WHERE ${mine} AND text_seq < ${latestEdit}`,
    `UPDATE archived_events SET text = '', deleted = 1, json = ${SCRUB} WHERE ${mine} AND ${DELETED_EXISTS("archived_events.seq")}`,
  ];
});

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * The statements that archive a batch of events, for one transaction: per room, the new events in
 * multi-row INSERTs, then tombstones, then what each edit and delete changes in its target, then
 * set-based fix-ups of the batch's messages (their edits or delete may have been archived first).
 * Each statement is idempotent and every one after the INSERTs converges on the same end state
 * whatever order the events arrive in, within a batch or across batches: a message ends with its
 * latest edit's text, or with none once deleted or expired. A batch of N messages of one room costs
 * about N/8 + 2 statements instead of 3 per message. Plain SQL built from templates, not a query
 * builder: building a batch's statements with drizzle took more of the consumer's CPU than the rest
 * of it (docs/architecture.md, decision 13).
 */
export function archiveStatements(messages: readonly ArchiveMessage[]): Statement[] {
  const byRoom = new Map<string, ArchiveMessage[]>();
  for (const m of messages) {
    const k = JSON.stringify([m.tenantId, m.roomId]);
    const list = byRoom.get(k);
    if (list) list.push(m);
    else byRoom.set(k, [m]);
  }
  const statements: Statement[] = [];
  for (const list of byRoom.values()) {
    const { tenantId, roomId } = list[0] as ArchiveMessage;
    /** The 12 columns of an event's row, in `COLUMNS` order. */
    const row = (event: RoomEvent, target: number | null, text: string, textSeq: number, deleted: number) => [
      tenantId,
      roomId,
      event.seq,
      event.kind,
      event.author.id,
      event.author.name,
      event.ts,
      target,
      text,
      textSeq,
      deleted,
      JSON.stringify(event),
    ];
    const rows = list
      .map((m) => m.event)
      .filter((e) => e.kind !== "expired")
      .map((event) => {
        const isMessage = event.kind === "message";
        return row(
          event,
          "target" in event ? event.target : null,
          isMessage && !event.deleted ? event.text : "",
          isMessage ? event.seq : 0,
          "deleted" in event && event.deleted ? 1 : 0,
        );
      });
    for (const chunk of chunks(rows, INSERT_ROWS)) {
      statements.push({ sql: insertSql(chunk.length), params: chunk.flat() });
    }
    for (const { event } of list) {
      if (event.kind === "expired") {
        statements.push({ sql: TOMBSTONE_SQL, params: row(event, null, "", 0, 1) });
      } else if (event.kind === "edit") {
        statements.push(
          {
            sql: EDIT_TEXT_SQL,
            params: [event.text, event.seq, tenantId, roomId, event.target, event.seq],
          },
          {
            sql: EDIT_SCRUB_SQL,
            params: [tenantId, roomId, event.seq, tenantId, roomId, "delete", event.target],
          },
        );
      } else if (event.kind === "delete") {
        statements.push(
          { sql: DELETE_TARGET_SQL, params: [tenantId, roomId, event.target] },
          { sql: DELETE_EDITS_SQL, params: [tenantId, roomId, event.target] },
        );
      }
    }
    const messageSeqs = list.filter((m) => m.event.kind === "message").map((m) => m.event.seq);
    for (const seqs of chunks(messageSeqs, SEQS_PER_UPDATE)) {
      const [texts, deletes] = fixupSql(seqs.length);
      const mine = [tenantId, roomId, ...seqs];
      const edits = [tenantId, roomId, "edit"];
      statements.push(
        { sql: texts, params: [...edits, ...edits, ...mine, ...edits] },
        { sql: deletes, params: [...mine, tenantId, roomId, "delete"] },
      );
    }
  }
  return statements;
}

/** Runs statements as one D1 batch (one transaction); the database's size after it, in bytes,
 * when D1 reported it (each statement's result carries `meta.size_after`). */
async function runBatch(db: D1Database, statements: readonly Statement[]): Promise<number | null> {
  if (statements.length === 0) return null;
  const results = await db.batch(statements.map((s) => db.prepare(s.sql).bind(...s.params)));
  const size = (results.at(-1)?.meta as { size_after?: unknown } | undefined)?.size_after;
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
    const entries = all.filter((e) => !failed.has(e.m));
    let size: number | null = null;
    try {
      // The whole batch in one D1 round trip (one transaction): the common case.
      size = await runBatch(shard, archiveStatements(entries.map((e) => e.item)));
    } catch {
      // Something in the batch failed: one message at a time, so only the failing ones retry.
      const byMessage = new Map<Message, ArchiveMessage[]>();
      for (const { m, item } of entries) byMessage.set(m, [...(byMessage.get(m) ?? []), item]);
      for (const [m, items] of byMessage) {
        try {
          size = (await runBatch(shard, archiveStatements(items))) ?? size;
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
