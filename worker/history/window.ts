/**
 * @module The D1 history's window (docs/architecture.md, decision 3): the scheduled job deletes, from
 * every history shard, the rows older than PARLEY_HISTORY_DAYS, and from every directory the
 * placements whose period ended before the window (they no longer hold a row). Bounded per run, so
 * a backlog (a shard just added, a long outage) is worked off over several runs rather than in one
 * that runs out of time. R2 and the rooms keep everything; older history pages come from there.
 */
import { limitsOf } from "../../config/limits.ts";
import { log } from "../../platform/log.ts";
import { allHistoryShards, directories } from "../../platform/residency.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
/** Rows deleted per statement, and statements per shard per run: a statement stays well within
 * D1's 30 s limit, and one run removes up to 250,000 rows a shard. */
const DELETE_ROWS = 5_000;
const ROUNDS = 50;

export async function trimHistory(
  env: Env,
  now = Date.now(),
): Promise<{ deleted: number; placements: number }> {
  const cutoff = now - limitsOf(env).historyDays * DAY_MS;
  let deleted = 0;
  for (const shard of allHistoryShards(env)) {
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const result = await shard.db
          .prepare(
            "DELETE FROM archived_events WHERE rowid IN (SELECT rowid FROM archived_events WHERE ts < ? LIMIT ?)",
          )
          .bind(cutoff, DELETE_ROWS)
          .run();
        deleted += result.meta.changes;
        if (result.meta.changes < DELETE_ROWS) break;
      }
    } catch (err) {
      log({ event: "history_window_failed", shard: shard.name, error: String(err) });
    }
  }
  let placements = 0;
  for (const { db } of directories(env)) {
    // A period ended when the tenant's next one began; one that ended before the window is empty.
    const result = await db
      .prepare(
        `DELETE FROM history_placements AS p WHERE EXISTS (
           SELECT 1 FROM history_placements n
           WHERE n.tenant_id = p.tenant_id AND n.from_ts > p.from_ts AND n.from_ts <= ?)`,
      )
      .bind(cutoff)
      .run();
    placements += result.meta.changes;
  }
  return { deleted, placements };
}
