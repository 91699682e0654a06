/**
 * The archive consumer writes a whole queue batch (up to 100 events) in one D1 batch. D1 binds at
 * most 100 parameters per statement; one statement over it fails the batch, and the consumer then
 * falls back to one message at a time: correct, but about a hundred times the D1 work. So every
 * statement of a worst-case batch must stay within the limit, and the batch must run as one.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { ROOM_EVENTS_BATCH } from "../../config/limits.ts";
import { PACK_EVENTS } from "../../durable-objects/room-archive.ts";
import type { RoomEvent } from "../../protocol/index.ts";
import {
  type ArchiveMessage,
  archiveStatements,
  D1_MAX_PARAMS,
  D1_MAX_QUERIES,
} from "../../worker/archive/consumer.ts";
import { unique } from "../helpers.ts";

const author = { id: "u_1", name: "Ann" };

function messages(tenantId: string, roomId: string, kinds: RoomEvent["kind"][]): ArchiveMessage[] {
  return kinds.map((kind, i) => {
    const seq = i + 1;
    const base = { seq, ts: 1_000 + seq, author };
    const target = Math.max(1, seq - 50);
    const event = (
      kind === "message"
        ? { ...base, kind, text: `message ${seq} ${"w".repeat(200)}` }
        : kind === "edit"
          ? { ...base, kind, target, text: `edited ${seq}` }
          : kind === "delete"
            ? { ...base, kind, target }
            : kind === "reaction"
              ? { ...base, kind, target, emoji: "👍", on: true }
              : { ...base, kind: "expired" }
    ) as RoomEvent;
    return { tenantId, roomId, event };
  });
}

const cases: [string, (t: string) => ArchiveMessage[]][] = [
  ["100 messages of one room", (t) => messages(t, "r1", Array(100).fill("message"))],
  [
    "100 mixed events of one room",
    (t) =>
      messages(t, "r1", [
        ...Array(40).fill("message"),
        ...Array(20).fill("edit"),
        ...Array(20).fill("delete"),
        ...Array(10).fill("reaction"),
        ...Array(10).fill("expired"),
      ]),
  ],
  [
    "100 events over three rooms",
    (t) => [
      ...messages(t, "r1", Array(50).fill("message")),
      ...messages(t, "r2", [...Array(20).fill("message"), ...Array(10).fill("edit")]),
      ...messages(t, "r3", Array(20).fill("message")),
    ],
  ],
];

describe("archive statements", () => {
  it(`write a full consumer batch of packs (${ROOM_EVENTS_BATCH} × ${PACK_EVENTS} events) in fewer than ${D1_MAX_QUERIES} queries`, async () => {
    const t = unique("t");
    // The worst case for statements: every pack from another room, each with edits and deletes.
    // One message per pack, the rest edits and deletes (two statements each).
    const kinds: RoomEvent["kind"][] = Array.from({ length: PACK_EVENTS }, (_, i) =>
      i === 0 ? "message" : i % 2 === 1 ? "edit" : "delete",
    );
    const batch = Array.from({ length: ROOM_EVENTS_BATCH }, (_, r) => messages(t, `r${r}`, kinds)).flat();
    const statements = archiveStatements(batch);
    expect(statements.length).toBeLessThan(D1_MAX_QUERIES / 2);
    // And retention's tombstones, one statement each.
    const tombstones = Array.from({ length: ROOM_EVENTS_BATCH }, (_, r) =>
      messages(t, `x${r}`, Array(PACK_EVENTS).fill("expired")),
    ).flat();
    expect(archiveStatements(tombstones).length).toBeLessThan(D1_MAX_QUERIES / 2);
  });

  for (const [name, make] of cases) {
    it(`stay within D1's ${D1_MAX_PARAMS} parameters and run as one batch: ${name}`, async () => {
      const db = env.HISTORY_0;
      const batch = make(unique("t"));
      const statements = archiveStatements(batch);
      const params = statements.map((s) => s.params.length);
      expect(Math.max(...params)).toBeLessThanOrEqual(D1_MAX_PARAMS);
      // Local D1 enforces the same limit: this fails if any statement binds too many.
      await db.batch(statements.map((s) => db.prepare(s.sql).bind(...s.params)));
      const { results } = await env.HISTORY_0.prepare(
        "SELECT COUNT(*) AS n FROM archived_events WHERE tenant_id = ?",
      )
        .bind(batch[0]?.tenantId)
        .all<{ n: number }>();
      expect(results[0]?.n).toBe(batch.length);
    });
  }
});
