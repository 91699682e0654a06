import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { FlowState } from "../../durable-objects/room-flow.ts";

const LIMITS = { flowWindowBytes: 1000, flowStallMs: 5000, unconfirmedStreamBytes: 4000 };

describe("FlowState", () => {
  it("counts what was sent beyond the last confirmation, frame by frame", () => {
    const s = new FlowState(true, 10, 10);
    s.sent(12, 300);
    s.sent(15, 400);
    s.sent(16, 400);
    expect(s.unconfirmed).toBe(1100);
    expect(s.over(LIMITS)).toBe(true);
    // A confirmation frees whole frames: a frame is freed once its last event is confirmed.
    expect(s.confirm(13)).toBe(true);
    expect(s.unconfirmed).toBe(800);
    expect(s.confirm(15)).toBe(true);
    expect(s.unconfirmed).toBe(400);
    expect(s.over(LIMITS)).toBe(false);
    expect(s.confirm(15)).toBe(false); // nothing new
    expect(s.confirm(14)).toBe(false); // never backwards
    expect(() => s.confirm(17)).toThrow(RangeError); // never sent
    expect(s.confirmedSeq).toBe(15);
  });

  it("a socket that never confirms gets the larger budget", () => {
    const s = new FlowState(false, 0, 0);
    s.sent(1, 3000);
    expect(s.over(LIMITS)).toBe(false);
    s.sent(2, 1001);
    expect(s.over(LIMITS)).toBe(true);
  });

  it("stalls only after being paused longer than the limit", () => {
    const s = new FlowState(true, 0, 0);
    expect(s.stalled(1_000_000, LIMITS)).toBe(false);
    s.pause(1000);
    s.pause(2000); // the first pause time stays
    expect(s.stalled(6000, LIMITS)).toBe(false);
    expect(s.stalled(6001, LIMITS)).toBe(true);
    s.resume();
    expect(s.stalled(1_000_000, LIMITS)).toBe(false);
  });

  it("survives hibernation through its attachment: paused where it stood, bytes estimated from the log", () => {
    const s = new FlowState(true, 0, 0);
    s.sent(40, 900);
    s.sent(50, 500);
    s.confirm(40);
    s.pause(7);
    s.readyOwed = true;
    const a = s.attachment();
    expect(a).toEqual({ flow: true, confirmed: 40, paused: { seq: 50, since: 7, ready: true } });
    const ranges: [number, number][] = [];
    const r = FlowState.restore(a, 80, (after, until) => {
      ranges.push([after, until]);
      return 500;
    });
    expect(ranges).toEqual([[40, 50]]);
    expect(r.sentSeq).toBe(50);
    expect(r.paused).toBe(true);
    expect(r.readyOwed).toBe(true);
    expect(r.unconfirmed).toBe(500);
    // Bytes from before the wake are freed by confirming their last seq.
    expect(r.confirm(45)).toBe(true);
    expect(r.unconfirmed).toBe(500);
    expect(r.confirm(50)).toBe(true);
    expect(r.unconfirmed).toBe(0);

    // A flowing socket stands where the room had flushed to.
    const live = FlowState.restore({ flow: false, confirmed: 3 }, 80, () => 123);
    expect([live.sentSeq, live.confirmedSeq, live.unconfirmed, live.paused]).toEqual([80, 3, 123, false]);
  });

  it("never frees more than a model of sent and confirmed bytes, frees everything when all is confirmed, and keeps few marks", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({ bytes: fc.integer({ min: 1, max: 500 }), events: fc.integer({ min: 1, max: 5 }) }),
            fc.nat({ max: 100 }),
          ),
          { maxLength: 300 },
        ),
        (ops) => {
          const s = new FlowState(true, 0, 0);
          const frames: { last: number; bytes: number }[] = [];
          let seq = 0;
          let confirmed = 0;
          for (const op of ops) {
            if (typeof op === "number") {
              const target = Math.min(seq, confirmed + op);
              expect(s.confirm(target)).toBe(target > confirmed);
              confirmed = Math.max(confirmed, target);
            } else {
              seq += op.events;
              frames.push({ last: seq, bytes: op.bytes });
              s.sent(seq, op.bytes);
            }
            const model = frames.filter((f) => f.last > confirmed).reduce((n, f) => n + f.bytes, 0);
            // Thinned marks free less than they could, never more; the newest mark is always kept.
            expect(s.unconfirmed).toBeGreaterThanOrEqual(model);
            if (confirmed === seq) expect(s.unconfirmed).toBe(0);
            expect(s.marks).toBeLessThanOrEqual(32);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("frees exactly while it keeps every mark", () => {
    const s = new FlowState(true, 0, 0);
    for (let i = 1; i <= 30; i++) s.sent(i, 10);
    s.confirm(17);
    expect(s.unconfirmed).toBe(130);
  });
});
