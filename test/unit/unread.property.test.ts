import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RoomAttachments } from "../../durable-objects/room-attachments.ts";
import { applyCommand } from "../../durable-objects/room-commands.ts";
import { RoomLog } from "../../durable-objects/room-log.ts";

// Any sequence of sends (some mentioning the reader), deletes, reads (forwards or backwards) and
// reopenings of the log (the object restarting) leaves unread and mention counts equal to a model.

type Op =
  | { kind: "send"; by: number; mention: boolean }
  | { kind: "delete"; pick: number }
  | { kind: "read"; pick: number }
  | { kind: "reopen" };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("send" as const),
    by: fc.integer({ min: 0, max: 2 }),
    mention: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("delete" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("read" as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant("reopen" as const) }),
);

let run = 0;

describe("unread and mention counts", () => {
  it("match a model after any sequence of sends, deletes, reads and restarts", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
        run += 1;
        const stub = env.ROOM.get(env.ROOM.idFromName(`unit:unread-${run}`));
        await runInDurableObject(stub, (_room, state) => {
          const people = ["u_reader", "u_alice", "u_bob"].map((id) => ({
            id,
            name: id,
            role: "admin" as const,
          }));
          let log = new RoomLog(state.storage);
          const attachments = new RoomAttachments(state.storage.sql);
          const stores = () => ({ log, attachments, maxAttachments: 10 });
          for (const p of people)
            log.transaction(() =>
              log.append(
                { kind: "member_join", ts: 0, author: p, user: p },
                { apply: () => log.putMember(p) },
              ),
            );
          const messages: { seq: number; by: string; mention: boolean; deleted: boolean }[] = [];
          let read = 0;
          let n = 0;
          for (const o of ops) {
            if (o.kind === "send") {
              const by = people[o.by]!;
              const text = o.mention ? "hey @<u_reader>" : "hello";
              const r = applyCommand(stores(), by, { type: "send", clientId: `c${n++}`, text }, 1);
              if (!r.ok) throw new Error(r.message);
              messages.push({
                seq: r.seq,
                by: by.id,
                mention: o.mention && by.id !== "u_reader",
                deleted: false,
              });
            } else if (o.kind === "delete" && messages.length > 0) {
              const m = messages[o.pick % messages.length]!;
              const r = applyCommand(
                stores(),
                people[1]!,
                { type: "delete", clientId: `c${n++}`, target: m.seq },
                1,
              );
              expect(r.ok).toBe(!m.deleted);
              m.deleted = true;
            } else if (o.kind === "read") {
              const seq = 1 + (o.pick % log.lastSeq);
              read = Math.max(read, seq);
              expect(log.markRead("u_reader", seq)).toBe(read);
            } else if (o.kind === "reopen") {
              log = new RoomLog(state.storage);
            }
            const live = messages.filter((m) => !m.deleted && m.by !== "u_reader" && m.seq > read);
            expect(log.unread("u_reader")).toEqual({
              readSeq: read,
              unread: live.length,
              mentions: live.filter((m) => m.mention).length,
            });
          }
        });
      }),
      { numRuns: 60 },
    );
  });
});
