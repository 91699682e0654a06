/**
 * @module `/api/admin/dead-letters`: what the archive gave up on, for the tenant's admins: list it,
 * replay one letter, replay them all (in bounded batches).
 *
 * A replay sends the stored body back to the room-events queue and deletes the row only after the
 * send succeeded: a failure in between leaves the letter to replay again, and a duplicate archive
 * write is harmless because the archive is idempotent on (tenant, room, seq). Letters whose body
 * named no tenant are never shown here: they stay in D1 for the operator.
 */
import { and, count, desc, eq, lt, or, sql } from "drizzle-orm";
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import { type Context, Hono } from "hono";
import type { Identity } from "../../platform/identity.ts";
import { log } from "../../platform/log.ts";
import { directoryDb, roomEventsQueue } from "../../platform/residency.ts";
import { auditEntry } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { deadLetters } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { intParam } from "../http.ts";
import type { AppEnv } from "../types.ts";

type Letter = typeof deadLetters.$inferSelect;

/** List page size: default and ceiling, as for the audit log and history. */
const PAGE_DEFAULT = 50;
const PAGE_MAX = 200;
/** Letters one replay-all call sends: bodies are ≤ 128 KB, so a call holds at most ~13 MB and
 * makes a handful of subrequests; the caller repeats it while `remaining` is above zero. */
const REPLAY_ALL_BATCH = 100;
/** `sendBatch` takes at most 100 messages and 256 KB in all; this leaves room for its framing. */
const SEND_BATCH_MESSAGES = 100;
const SEND_BATCH_BYTES = 200_000;
/** Queue message ids are hex; anything else cannot name a letter. */
const LETTER_ID = /^[A-Za-z0-9_-]{1,128}$/;

function admin(c: Context<AppEnv>): Identity {
  const me = c.get("identity");
  requireAdmin(me, "manage dead letters");
  return me;
}

/** `before`: a `receivedAt` (letters received earlier), or the `next` cursor of the previous page
 * (`<receivedAt>:<id>`), which also orders letters received in the same millisecond. */
function beforeParam(c: Context<AppEnv>): { receivedAt: number; id: string | null } | undefined {
  const raw = c.req.query("before");
  if (raw === undefined || raw === "") return undefined;
  const m = /^(\d{1,16})(?::([A-Za-z0-9_-]{1,128}))?$/.exec(raw);
  if (!m) throw new ApiError("bad_request", "before must be a receivedAt or the next cursor of a page");
  return { receivedAt: Number(m[1]), id: m[2] ?? null };
}

function view(r: Letter) {
  return {
    id: r.id,
    roomId: r.roomId,
    seq: r.seq,
    attempts: r.attempts,
    receivedAt: r.receivedAt,
    body: JSON.parse(r.body) as unknown,
  };
}

async function remaining(db: DrizzleD1Database, tenantId: string): Promise<number> {
  const row = await db
    .select({ n: count() })
    .from(deadLetters)
    .where(eq(deadLetters.tenantId, tenantId))
    .get();
  return row?.n ?? 0;
}

/**
 * Sends `letters` back to the room-events queue, then deletes them with one audit entry each (one
 * D1 batch: the deletion and its record commit together). Several sendBatch calls when the bodies
 * pass its size limit; each chunk is deleted as soon as it is sent.
 */
async function replay(env: Env, db: DrizzleD1Database, me: Identity, letters: Letter[]): Promise<void> {
  let chunk: Letter[] = [];
  let bytes = 0;
  const flush = async () => {
    if (chunk.length === 0) return;
    await roomEventsQueue(env, me.tenantId).sendBatch(
      chunk.map((l) => ({ body: JSON.parse(l.body) as unknown, contentType: "json" as const })),
    );
    const ids = JSON.stringify(chunk.map((l) => l.id));
    await db.batch([
      db
        .delete(deadLetters)
        .where(
          and(
            eq(deadLetters.tenantId, me.tenantId),
            sql`${deadLetters.id} IN (SELECT value FROM json_each(${ids}))`,
          ),
        ),
      ...chunk.map((l) => auditEntry(db, me, "dead_letter.replayed", l.id, { roomId: l.roomId, seq: l.seq })),
    ]);
    log({ event: "dead_letters_replayed", tenant: me.tenantId, count: chunk.length });
    chunk = [];
    bytes = 0;
  };
  for (const letter of letters) {
    const size = new TextEncoder().encode(letter.body).byteLength;
    if (chunk.length === SEND_BATCH_MESSAGES || (chunk.length > 0 && bytes + size > SEND_BATCH_BYTES))
      await flush();
    chunk.push(letter);
    bytes += size;
  }
  await flush();
}

export const deadLetterRoutes = new Hono<AppEnv>()
  .get("/", async (c) => {
    const me = admin(c);
    const limit = intParam(c, "limit", { min: 1, max: PAGE_MAX }) ?? PAGE_DEFAULT;
    const before = beforeParam(c);
    const tenant = eq(deadLetters.tenantId, me.tenantId);
    const where =
      before === undefined
        ? tenant
        : and(
            tenant,
            before.id === null
              ? lt(deadLetters.receivedAt, before.receivedAt)
              : or(
                  lt(deadLetters.receivedAt, before.receivedAt),
                  and(eq(deadLetters.receivedAt, before.receivedAt), lt(deadLetters.id, before.id)),
                ),
          );
    const rows = await drizzle(directoryDb(c.env, me.tenantId))
      .select()
      .from(deadLetters)
      .where(where)
      .orderBy(desc(deadLetters.receivedAt), desc(deadLetters.id))
      .limit(limit + 1)
      .all();
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    const hasMore = rows.length > limit;
    return c.json({
      deadLetters: page.map(view),
      hasMore,
      next: hasMore && last ? `${last.receivedAt}:${last.id}` : null,
    });
  })
  .post("/replay", async (c) => {
    const me = admin(c);
    const db = drizzle(directoryDb(c.env, me.tenantId));
    // Oldest first, so that repeated calls drain the letters in the order they failed.
    const letters = await db
      .select()
      .from(deadLetters)
      .where(eq(deadLetters.tenantId, me.tenantId))
      .orderBy(deadLetters.receivedAt, deadLetters.id)
      .limit(REPLAY_ALL_BATCH)
      .all();
    await replay(c.env, db, me, letters);
    return c.json({ replayed: letters.length, remaining: await remaining(db, me.tenantId) });
  })
  .post("/:id/replay", async (c) => {
    const me = admin(c);
    const id = c.req.param("id");
    if (!LETTER_ID.test(id)) throw new ApiError("not_found", "no such dead letter");
    const db = drizzle(directoryDb(c.env, me.tenantId));
    const letter = await db
      .select()
      .from(deadLetters)
      .where(and(eq(deadLetters.id, id), eq(deadLetters.tenantId, me.tenantId)))
      .get();
    if (!letter) throw new ApiError("not_found", "no such dead letter");
    await replay(c.env, db, me, [letter]);
    return c.json({ replayed: 1, remaining: await remaining(db, me.tenantId) });
  });
