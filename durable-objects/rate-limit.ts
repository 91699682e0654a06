/**
 * @module Token buckets: `rate` tokens a second up to `burst`. `takeFrom` is the arithmetic on one
 * bucket, kept wherever its owner keeps state (a presence session's attachment, a quota object's
 * SQLite); `RateLimiter` keeps buckets per key in memory, on purpose: a bucket only matters while its
 * user is active, which keeps the object awake anyway.
 */

/** A bucket's tokens as of `at` (ms). */
export interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Takes `cost` tokens at `now` from `bucket` (undefined: a full one). Returns the bucket after it
 * and 0 when they were taken; when they were not, the bucket unchanged and the seconds until they
 * could be. A refusal therefore costs nothing: retrying at once is refused again, never longer.
 * A `cost` above `burst` can never be taken (the caller bounds it).
 */
export function takeFrom(
  bucket: Bucket | undefined,
  now: number,
  rate: number,
  burst: number,
  cost = 1,
): { bucket: Bucket; wait: number } {
  const before = bucket ?? { tokens: burst, at: now };
  const tokens = Math.min(burst, before.tokens + (Math.max(0, now - before.at) / 1000) * rate);
  if (tokens >= cost) return { bucket: { tokens: tokens - cost, at: now }, wait: 0 };
  return { bucket: before, wait: (cost - tokens) / rate };
}

export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>();
  readonly #rate: number;
  readonly #burst: number;

  constructor(rate: number, burst: number) {
    this.#rate = rate;
    this.#burst = burst;
  }

  /** Takes one token for `key`: 0 if allowed, otherwise the seconds until one is available. */
  take(key: string, now: number): number {
    if (!this.#buckets.has(key) && this.#buckets.size > 10_000) this.#prune(now);
    const { bucket, wait } = takeFrom(this.#buckets.get(key), now, this.#rate, this.#burst);
    this.#buckets.set(key, bucket);
    return wait;
  }

  /** Forgets buckets that have refilled completely: they are the same as no bucket. */
  #prune(now: number): void {
    for (const [key, b] of this.#buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.#rate >= this.#burst) this.#buckets.delete(key);
    }
  }
}
