/** @module Reconnect delays: exponential backoff with full jitter (a uniformly random delay up to
 * the exponential bound), so clients cut off together do not come back together. */
export interface Backoff {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 250, capMs: 30_000 };

export function fullJitter(attempt: number, random: () => number, b: Backoff = DEFAULT_BACKOFF): number {
  return Math.floor(random() * Math.min(b.capMs, b.baseMs * 2 ** Math.min(attempt, 20)));
}
