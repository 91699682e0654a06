import { describe, expect, it } from "vitest";
import { RateLimiter, takeFrom } from "../../durable-objects/rate-limit.ts";

describe("RateLimiter", () => {
  it("allows a burst, then refuses with the seconds until the next token", () => {
    const limiter = new RateLimiter(2, 3);
    const t = 1_000_000;
    expect([limiter.take("u", t), limiter.take("u", t), limiter.take("u", t)]).toEqual([0, 0, 0]);
    expect(limiter.take("u", t)).toBeCloseTo(0.5);
    expect(limiter.take("u", t + 250)).toBeCloseTo(0.25);
    expect(limiter.take("u", t + 500)).toBe(0);
  });

  it("keeps users apart and never banks more than the burst", () => {
    const limiter = new RateLimiter(1, 2);
    expect(limiter.take("a", 0)).toBe(0);
    expect(limiter.take("a", 0)).toBe(0);
    expect(limiter.take("a", 0)).toBeGreaterThan(0);
    expect(limiter.take("b", 0)).toBe(0);
    // An hour idle still refills only to the burst.
    expect([
      limiter.take("a", 3_600_000),
      limiter.take("a", 3_600_000),
      limiter.take("a", 3_600_000),
    ]).toEqual([0, 0, 1]);
  });
});

describe("takeFrom", () => {
  it("starts full, takes a cost at once, and leaves the bucket unchanged when it refuses", () => {
    const first = takeFrom(undefined, 1000, 0.5, 5, 4);
    expect(first).toEqual({ bucket: { tokens: 1, at: 1000 }, wait: 0 });
    const refused = takeFrom(first.bucket, 1000, 0.5, 5, 3);
    expect(refused.bucket).toBe(first.bucket);
    expect(refused.wait).toBeCloseTo(4); // 2 tokens short at 0.5/s
    // Refusals cost nothing: four seconds later it is taken.
    expect(takeFrom(refused.bucket, 5000, 0.5, 5, 3)).toEqual({ bucket: { tokens: 0, at: 5000 }, wait: 0 });
  });

  it("never refills past the burst, nor backwards when the clock does", () => {
    expect(takeFrom({ tokens: 0, at: 0 }, 1e9, 1, 3).bucket.tokens).toBe(2);
    expect(takeFrom({ tokens: 1, at: 5000 }, 1000, 1, 3)).toEqual({
      bucket: { tokens: 0, at: 1000 },
      wait: 0,
    });
  });
});
