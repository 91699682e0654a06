/**
 * @module Where a tenant's D1 history lives (docs/architecture.md, decision 3). The directory's
 * `history_placements` says, for each tenant, which history shard of its jurisdiction holds its
 * events from `from_ts` until its next placement. A tenant is placed when it is created, on the
 * least-filled shard. A shard past `PARLEY_HISTORY_SHARD_BYTES` takes no new period: each tenant on
 * it is given its next period, from now, on the least-filled other shard, when the consumer next
 * writes for it. An event's row goes to the period of its own time; an edit's, deletion's or
 * reaction's to its target's, so that a message and what changes it are always in one shard.
 */
import { asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { limitsOf } from "../../config/limits.ts";
import { log } from "../../platform/log.ts";
import {
  directoryDb,
  type HistoryShard,
  historyShard,
  historyShardsIn,
  jurisdictionOf,
} from "../../platform/residency.ts";
import { historyPlacements } from "../db/schema.ts";

export interface Placement {
  fromTs: number;
  shard: string;
}

/** Placements change rarely (a shard filling up); an isolate keeps a tenant's for this long, and
 * forgets them at once when it moves the tenant itself. */
const CACHE_MS = 60_000;
const cached = new Map<string, { placements: Placement[]; at: number }>();

/** What an isolate last saw of each shard's size (bytes), from its own writes and checks. */
const sizes = new Map<string, number>();

/** The shard holding what happened at `ts`: the last placement from at or before it (the first one
 * for anything older, which only a re-shipped log sends). */
export function shardAt(placements: readonly Placement[], ts: number): string {
  let shard = placements[0]?.shard;
  for (const p of placements) if (p.fromTs <= ts) shard = p.shard;
  if (shard === undefined) throw new Error("a tenant without placements");
  return shard;
}

/** A tenant's placements, oldest first; a tenant created before placements existed is placed now. */
export async function placementsOf(env: Env, tenantId: string, now = Date.now()): Promise<Placement[]> {
  const hit = cached.get(tenantId);
  if (hit && now - hit.at < CACHE_MS) return hit.placements;
  let placements = await readPlacements(env, tenantId);
  if (placements.length === 0) {
    await place(env, tenantId, 0);
    placements = await readPlacements(env, tenantId);
  }
  cached.set(tenantId, { placements, at: now });
  return placements;
}

async function readPlacements(env: Env, tenantId: string): Promise<Placement[]> {
  return drizzle(directoryDb(env, tenantId))
    .select({ fromTs: historyPlacements.fromTs, shard: historyPlacements.shard })
    .from(historyPlacements)
    .where(eq(historyPlacements.tenantId, tenantId))
    .orderBy(asc(historyPlacements.fromTs))
    .all();
}

/**
 * Places a tenant's period starting at `fromTs` on the least-filled shard of its jurisdiction (not
 * `avoid`). Idempotent on (tenant, fromTs): two isolates placing at once keep the first row.
 */
export async function place(env: Env, tenantId: string, fromTs: number, avoid?: string): Promise<string> {
  const shards = historyShardsIn(env, jurisdictionOf(env, tenantId));
  const candidates = shards.filter((s) => s.name !== avoid);
  const pool = candidates.length > 0 ? candidates : shards;
  const measured = await Promise.all(pool.map(async (s) => ({ shard: s, bytes: await sizeOf(s) })));
  measured.sort((a, b) => a.bytes - b.bytes);
  const chosen = measured[0];
  if (!chosen) throw new Error(`no history shard for tenant ${tenantId}`);
  const limit = limitsOf(env).historyShardBytes;
  if (chosen.bytes >= limit) {
    log({ event: "history_shards_full", tenant: tenantId, shard: chosen.shard.name, bytes: chosen.bytes });
  }
  await drizzle(directoryDb(env, tenantId))
    .insert(historyPlacements)
    .values({ tenantId, fromTs, shard: chosen.shard.name })
    .onConflictDoNothing();
  cached.delete(tenantId);
  return chosen.shard.name;
}

/** A shard's size: D1 reports it with every query's result (`size_after`). */
async function sizeOf(shard: HistoryShard): Promise<number> {
  const known = sizes.get(shard.name);
  if (known !== undefined) return known;
  const result = await shard.db.prepare("SELECT 1").run();
  sizes.set(shard.name, result.meta.size_after);
  return result.meta.size_after;
}

/**
 * After writing to `shard` (whose size is now `bytes`): past the fill limit, every tenant written
 * there whose newest period is on it gets its next period, from `now`, on another shard.
 */
export async function noteWrite(
  env: Env,
  shard: string,
  bytes: number,
  tenantIds: readonly string[],
  now = Date.now(),
): Promise<void> {
  sizes.set(shard, bytes);
  if (bytes < limitsOf(env).historyShardBytes) return;
  for (const tenantId of tenantIds) {
    const placements = await readPlacements(env, tenantId);
    if (placements.at(-1)?.shard !== shard) continue;
    const moved = await place(env, tenantId, now, shard);
    log({ event: "history_tenant_moved", tenant: tenantId, from: shard, to: moved, bytes });
  }
}

/** The shard database of a tenant's placement (checked to be of its jurisdiction). */
export function shardDb(env: Env, tenantId: string, name: string): D1Database {
  return historyShard(env, tenantId, name).db;
}
