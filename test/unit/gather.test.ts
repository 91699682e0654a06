/**
 * The feeds' sender (durable-objects/gather.ts): when it starts a send. Fake timers, so the times
 * are exact and nothing waits.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Gather, IDLE_START_MS } from "../../durable-objects/gather.ts";

describe("a gathering sender", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A sender whose sends stay in flight until `finish()`. */
  function counted(interval: number) {
    let finish = () => {};
    const sends: number[] = [];
    const gather = new Gather(
      () => {
        sends.push(Date.now());
        return new Promise<void>((resolve) => {
          finish = resolve;
        });
      },
      () => interval,
    );
    return { gather, sends, finish: () => finish() };
  }

  it("starts an idle room's send after the turn's frames have left, not on a 0 ms timer", async () => {
    const { gather, sends } = counted(20);
    const t0 = Date.now();
    gather.kick();
    expect(sends).toEqual([]);
    await vi.advanceTimersByTimeAsync(IDLE_START_MS - 1);
    expect(sends).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sends).toEqual([t0 + IDLE_START_MS]);
  });

  it("sends at once for a caller that waits, and gathers what comes meanwhile into one send", async () => {
    const { gather, sends, finish } = counted(20);
    const t0 = Date.now();
    gather.kick(true);
    expect(sends).toEqual([t0]);
    gather.kick();
    gather.kick();
    await vi.advanceTimersByTimeAsync(30);
    finish();
    await vi.advanceTimersByTimeAsync(0);
    // The next send waits for the interval since the last one started (passed) and the idle start.
    await vi.advanceTimersByTimeAsync(IDLE_START_MS);
    expect(sends).toEqual([t0, t0 + 30 + IDLE_START_MS]);
  });
});
