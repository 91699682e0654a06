/**
 * @module The Quota Durable Object: one per user (`<tenantId>:quota:<userId>`), holding what that
 * user may still do of the things that cost the deployment: create rooms, search, upload. Rooms and
 * searches are token buckets; uploads are counted per UTC day, by number and by bytes. Each route
 * asks with one RPC before it does anything, and a refusal has done nothing.
 *
 * Why an object per user: a quota must count every request of the user, whichever isolate or
 * location serves it, so in-memory counters in the worker would not do (each isolate would grant
 * the whole quota). The alternatives each fail one way: the Workers rate-limiting binding counts
 * per location and only over 10 or 60 s, so it cannot hold a daily upload count; KV is eventually
 * consistent (a burst from two locations is never seen whole) and takes one write per key a
 * second; a row in the D1 directory would put a write per search into the one database every
 * request of the jurisdiction already shares (and that is being moved off the hot path). A
 * per-user object is strongly consistent, serialises the user's own requests only, and its SQLite
 * keeps the counters through eviction, so a quota cannot be reset by waiting for the object to be
 * unloaded. It costs one RPC and one small write per counted request, on an object no one else
 * uses.
 */
import { DurableObject } from "cloudflare:workers";
import { limitsOf } from "../config/limits.ts";
import { tenantNamespace } from "../platform/residency.ts";
import { type Failure, failure } from "../protocol/index.ts";
import { type Bucket, takeFrom } from "./rate-limit.ts";
import { migrate } from "./schema.ts";

/** What a token bucket counts. */
export type QuotaKind = "rooms" | "searches";

const DAY_MS = 24 * 60 * 60 * 1000;

const MIGRATIONS = [
  `CREATE TABLE buckets (name TEXT PRIMARY KEY, tokens REAL NOT NULL, at INTEGER NOT NULL);
   CREATE TABLE daily (name TEXT PRIMARY KEY, day INTEGER NOT NULL, used INTEGER NOT NULL);
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
];

const REFUSED: Record<QuotaKind, string> = {
  rooms: "too many rooms created; try again later",
  searches: "too many searches; try again later",
};

export class Quota extends DurableObject<Env> {
  readonly #sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    migrate(this.ctx.storage, MIGRATIONS);
  }

  // ---- RPC -----------------------------------------------------------------------------------

  /** Takes one of `kind` (a room created, a search run), or says when one will be available. */
  take(kind: QuotaKind): { ok: true } | Failure {
    const limits = limitsOf(this.env);
    const [perSecond, burst] =
      kind === "rooms"
        ? [limits.roomsPerUserPerHour / 3600, limits.roomsPerUserPerHour]
        : [limits.searchesPerUserPerMinute / 60, limits.searchesPerUserPerMinute];
    const stored = this.#sql
      .exec<{ tokens: number; at: number }>("SELECT tokens, at FROM buckets WHERE name = ?", kind)
      .toArray()[0];
    const { bucket, wait } = takeFrom(stored, Date.now(), perSecond, burst);
    if (wait > 0) return failure("rate_limited", REFUSED[kind], Math.max(1, Math.ceil(wait)));
    this.#putBucket(kind, bucket);
    return { ok: true };
  }

  /**
   * Counts an upload of `bytes` against today's allowance before a byte of it is stored. `day` is
   * what `releaseUpload` needs if the upload then fails. Refused (until the next UTC day) when it
   * would make the day's uploads or bytes exceed the limits.
   */
  reserveUpload(bytes: number): { ok: true; day: number } | Failure {
    const limits = limitsOf(this.env);
    const now = Date.now();
    const day = Math.floor(now / DAY_MS);
    const count = this.#usedToday("uploads", day);
    const total = this.#usedToday("upload_bytes", day);
    const untilTomorrow = Math.max(1, Math.ceil(((day + 1) * DAY_MS - now) / 1000));
    if (count + 1 > limits.uploadsPerUserPerDay) {
      return failure(
        "rate_limited",
        `at most ${limits.uploadsPerUserPerDay} uploads a day; try again tomorrow (UTC)`,
        untilTomorrow,
      );
    }
    if (total + bytes > limits.uploadBytesPerUserPerDay) {
      return failure(
        "rate_limited",
        `at most ${limits.uploadBytesPerUserPerDay} bytes of uploads a day; ${Math.max(0, limits.uploadBytesPerUserPerDay - total)} left today (UTC)`,
        untilTomorrow,
      );
    }
    this.ctx.storage.transactionSync(() => {
      this.#putDaily("uploads", day, count + 1);
      this.#putDaily("upload_bytes", day, total + bytes);
    });
    return { ok: true, day };
  }

  /** Gives back a reservation whose upload failed (nothing of it was kept). A new day has started
   * from zero anyway, so a reservation of an earlier day changes nothing. */
  releaseUpload(bytes: number, day: number): void {
    this.ctx.storage.transactionSync(() => {
      this.#putDaily("uploads", day, Math.max(0, this.#usedToday("uploads", day) - 1));
      this.#putDaily("upload_bytes", day, Math.max(0, this.#usedToday("upload_bytes", day) - bytes));
    });
  }

  // ---- helpers -------------------------------------------------------------------------------

  #putBucket(name: string, bucket: Bucket): void {
    this.#sql.exec(
      "INSERT INTO buckets (name, tokens, at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
      name,
      bucket.tokens,
      bucket.at,
    );
  }

  /** What was used of `name` on `day` (0 once the stored day has passed). */
  #usedToday(name: string, day: number): number {
    const row = this.#sql
      .exec<{ day: number; used: number }>("SELECT day, used FROM daily WHERE name = ?", name)
      .toArray()[0];
    return row?.day === day ? row.used : 0;
  }

  /** Stores `used` for `day`, unless the stored counter is already of a later day. */
  #putDaily(name: string, day: number, used: number): void {
    this.#sql.exec(
      "INSERT INTO daily (name, day, used) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET day = excluded.day, used = excluded.used WHERE excluded.day >= daily.day",
      name,
      day,
      used,
    );
  }
}

/** The quota object of one user of a tenant (in the tenant's jurisdiction, like all its objects). */
export function quotaStub(env: Env, tenantId: string, userId: string) {
  const namespace = tenantNamespace(env, env.QUOTA, tenantId);
  return namespace.get(namespace.idFromName(`${tenantId}:quota:${userId}`));
}
