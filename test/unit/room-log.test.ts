import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { RoomLog } from "../../durable-objects/room-log.ts";

const author = { id: "u_a", name: "A" };

describe("RoomLog (the room's SQLite)", () => {
  it("rolls back an append whose side effect fails: no event, no seq consumed", async () => {
    const stub = env.ROOM.get(env.ROOM.idFromName("unit:room-log-rollback"));
    await runInDurableObject(stub, (_room, state) => {
      const log = new RoomLog(state.storage);
      const first = log.append({ kind: "message", ts: 1, author, clientId: "c1", text: "one" });
      expect(first.seq).toBe(1);
      expect(() =>
        log.append(
          { kind: "message", ts: 2, author, clientId: "c2", text: "two" },
          {
            apply: () => {
              throw new Error("side effect failed");
            },
          },
        ),
      ).toThrow("side effect failed");
      expect(log.lastSeq).toBe(1);
      expect(log.seqForClientId(author.id, "c2")).toBeUndefined();
      expect(log.append({ kind: "message", ts: 3, author, clientId: "c3", text: "three" }).seq).toBe(2);
      expect(log.rowsAfter(0, 10).map((r) => JSON.parse(r.json).clientId)).toEqual(["c1", "c3"]);
    });
  });

  it("refuses a second event with the same (author, clientId) at the storage level", async () => {
    const stub = env.ROOM.get(env.ROOM.idFromName("unit:room-log-unique"));
    await runInDurableObject(stub, (_room, state) => {
      const log = new RoomLog(state.storage);
      log.append({ kind: "message", ts: 1, author, clientId: "same", text: "one" });
      expect(() => log.append({ kind: "message", ts: 2, author, clientId: "same", text: "again" })).toThrow();
      expect(log.lastSeq).toBe(1);
      // Another author may use the same clientId.
      expect(
        log.append({ kind: "message", ts: 3, author: { id: "u_b", name: "B" }, clientId: "same", text: "b" })
          .seq,
      ).toBe(2);
      // A command's append answers the earlier event instead, and writes nothing.
      expect(log.appendOnce({ kind: "message", ts: 4, author, clientId: "same", text: "retry" })).toEqual({
        created: false,
        seq: 1,
      });
      expect(log.lastSeq).toBe(2);
      expect(log.rowsAfter(0, 10).map((r) => JSON.parse(r.json).text)).toEqual(["one", "b"]);
    });
  });

  it("reopens with the same lastSeq and schema (the object restarted)", async () => {
    const stub = env.ROOM.get(env.ROOM.idFromName("unit:room-log-reopen"));
    await runInDurableObject(stub, (_room, state) => {
      const log = new RoomLog(state.storage);
      for (let i = 0; i < 5; i++)
        log.append({ kind: "message", ts: i, author, clientId: `r${i}`, text: `${i}` });
      const reopened = new RoomLog(state.storage);
      expect(reopened.lastSeq).toBe(5);
      expect(reopened.seqForClientId(author.id, "r3")).toBe(4);
    });
  });
});
