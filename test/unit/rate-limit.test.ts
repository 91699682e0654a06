import { describe, expect, it } from "vitest";
import { RateLimiter } from "../../durable-objects/rate-limit.ts";

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
