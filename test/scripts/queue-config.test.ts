import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ROOM_EVENTS_BATCH } from "../../config/limits.ts";

// The room-events consumer's D1 work per invocation is bounded by its batch size in wrangler.toml
// (config/limits.ts, ROOM_EVENTS_BATCH): the two must not drift apart.

/** The `[[queues.consumers]]` blocks of wrangler.toml, as key → raw value. */
function consumers(toml: string): Record<string, string>[] {
  return toml
    .split(/^\[\[queues\.consumers\]\]\s*$/m)
    .slice(1)
    .map((block) => {
      const body = block.split(/^\[/m)[0] ?? "";
      const entries = [...body.matchAll(/^(\w+)\s*=\s*(.+?)\s*$/gm)].map((m) => [m[1], m[2]]);
      return Object.fromEntries(entries) as Record<string, string>;
    });
}

describe("wrangler.toml's room-events consumers", () => {
  it(`take at most ${ROOM_EVENTS_BATCH} messages a delivery, the batch the consumer's D1 budget assumes`, () => {
    const blocks = consumers(readFileSync("wrangler.toml", "utf8"));
    const roomEvents = blocks.filter((b) => /^"parley-(eu-)?room-events"$/.test(b.queue ?? ""));
    expect(roomEvents.map((b) => b.queue)).toEqual(['"parley-room-events"', '"parley-eu-room-events"']);
    for (const b of roomEvents) expect(b.max_batch_size).toBe(String(ROOM_EVENTS_BATCH));
  });
});
