import { describe, expect, it } from "vitest";
import { ActivityBatch } from "../../durable-objects/activity.ts";

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
