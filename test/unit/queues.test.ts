/** Which consumer serves a queue: by name suffix, so every environment's queues are consumed. */
import { describe, expect, it } from "vitest";
import { queueKind } from "../../worker/queues.ts";

describe("the queue dispatcher", () => {
  it("serves the local, staging and production queue names alike", () => {
    for (const prefix of ["parley", "parley-eu", "parley-staging", "parley-staging-eu"]) {
      expect(queueKind(`${prefix}-room-events`)).toBe("roomEvents");
      expect(queueKind(`${prefix}-room-events-dlq`)).toBe("deadLetters");
      expect(queueKind(`${prefix}-exports`)).toBe("exports");
      expect(queueKind(`${prefix}-notify`)).toBe("notify");
      expect(queueKind(`${prefix}-notify-dlq`)).toBe("notifyDeadLetters");
    }
  });

  it("knows no other queue (its messages are retried, not dropped)", () => {
    expect(queueKind("parley-room-events-dlq2")).toBeNull();
    expect(queueKind("someone-elses-queue")).toBeNull();
  });
});
