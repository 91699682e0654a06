import { describe, expect, it } from "vitest";
import { ActivityBatch, type ActivityNotice, ActivityWindows } from "../../durable-objects/activity.ts";

describe("ActivityBatch", () => {
  it("coalesces any number of events into one notice with the latest seq and every mention", () => {
    const batch = new ActivityBatch();
    expect(batch.take()).toBeNull();
    expect(batch.add(5)).toBe(true); // opens the window
    expect(batch.add(6, ["u_a"])).toBe(false);
    expect(batch.add(7, ["u_b", "u_a"])).toBe(false);
    expect(batch.take()).toEqual({ lastSeq: 7, mentioned: ["u_a", "u_b"] });
    expect(batch.take()).toBeNull();
    expect(batch.add(8)).toBe(true); // a new window
    expect(batch.take()).toEqual({ lastSeq: 8, mentioned: [] });
  });
});

describe("ActivityWindows", () => {
  /** Windows whose timers the test fires by hand. */
  function windows() {
    const sent: [string, ActivityNotice][] = [];
    const timers: (() => void)[] = [];
    const w = new ActivityWindows(
      () => 250,
      (room, notice) => sent.push([room, notice]),
      (fn) => {
        timers.push(fn);
        return 0 as unknown as ReturnType<typeof setTimeout>;
      },
    );
    return { w, sent, fire: () => timers.shift()?.(), pending: () => timers.length };
  }

  it("sends a quiet room's news at once, then gathers the window's news into one notice at its end", () => {
    const { w, sent, fire, pending } = windows();
    w.news("r1", { lastSeq: 3, mentioned: [] });
    expect(sent).toEqual([["r1", { lastSeq: 3, mentioned: [] }]]);
    w.news("r1", { lastSeq: 5, mentioned: ["u_a"] });
    w.news("r1", { lastSeq: 6, mentioned: ["u_b"] });
    w.news("r2", { lastSeq: 9, mentioned: [] }); // another room: its own window
    expect(sent).toHaveLength(2);
    fire(); // r1's window ends: what it gathered goes, and the next window opens
    expect(sent.slice(2)).toEqual([["r1", { lastSeq: 6, mentioned: ["u_a", "u_b"] }]]);
    fire(); // r2's window ends with nothing gathered
    fire(); // so does r1's second: both rooms are quiet again, no timer left
    expect(sent).toHaveLength(3);
    expect(pending()).toBe(0);
    w.news("r1", { lastSeq: 7, mentioned: [] });
    expect(sent.at(-1)).toEqual(["r1", { lastSeq: 7, mentioned: [] }]);
  });
});
