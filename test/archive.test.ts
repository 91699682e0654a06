import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ArchivePack } from "../durable-objects/room-archive.ts";
import type { RoomEvent } from "../protocol/index.ts";
import type { ArchiveMessage } from "../worker/archive/consumer.ts";
import { letterKeys } from "../worker/archive/dead-letters.ts";
import worker from "../worker/index.ts";
import { createRoom, historyAll, historyDown, historyWrapped, login, type User, unique } from "./helpers.ts";

let ids = 0;
function batchOf(messages: (ArchiveMessage | ArchivePack)[], attempts = 1) {
  return createMessageBatch<unknown>(
    "parley-room-events",
    messages.map((body) => ({ id: `m${++ids}`, timestamp: new Date(), attempts, body })),
  );
}

async function deliver(messages: (ArchiveMessage | ArchivePack)[], targetEnv: Env = env) {
  const batch = batchOf(messages);
  const ctx = createExecutionContext();
  await worker.queue(batch, targetEnv, ctx);
  return getQueueResult(batch, ctx);
}

/** Events of today: the D1 history keeps a window (PARLEY_HISTORY_DAYS) and drops older ones. */
const NOW = Date.now();
const author = (u: User) => ({ id: u.id, name: u.name });
const message = (u: User, seq: number, text: string): RoomEvent => ({
  kind: "message",
  seq,
  ts: NOW + seq,
  author: author(u),
  text,
});

async function archived(tenantId: string, roomId: string) {
  const rows = await historyAll<{ seq: number; kind: string; text: string; deleted: number; json: string }>(
    "SELECT seq, kind, text, deleted, json FROM archived_events WHERE tenant_id = ? AND room_id = ?",
    tenantId,
    roomId,
  );
  return rows.sort((a, b) => a.seq - b.seq);
}

describe("the archive consumer", () => {
  it("archives a batch delivered twice exactly once", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const batch = [1, 2, 3].map((seq) => ({
      tenantId: ada.tenant,
      roomId,
      event: message(ada, seq, `hello ${seq}`),
    }));
    expect((await deliver(batch)).explicitAcks).toHaveLength(3);
    expect((await deliver(batch)).explicitAcks).toHaveLength(3);
    expect((await archived(ada.tenant, roomId)).map((r) => r.seq)).toEqual([1, 2, 3]);
  });

  it("retries a failing D1 write with backoff, and succeeds on the next delivery", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const msg = { tenantId: ada.tenant, roomId, event: message(ada, 1, "flaky") };
    const failed = await deliver([msg], historyDown(env));
    expect(failed.explicitAcks).toEqual([]);
    expect(failed.retryMessages).toMatchObject([{ msgId: expect.any(String) }]);
    expect(await archived(ada.tenant, roomId)).toEqual([]);
    expect((await deliver([msg])).explicitAcks).toHaveLength(1);
    expect(await archived(ada.tenant, roomId)).toHaveLength(1);
  });

  it("archives a room's pack of events as one message, and retries the whole pack when D1 fails", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const pack: ArchivePack = {
      tenantId: ada.tenant,
      roomId,
      events: [1, 2, 3].map((seq) => ({ event: message(ada, seq, `packed ${seq}`) })),
    };
    const failed = await deliver([pack], historyDown(env));
    expect(failed.explicitAcks).toEqual([]);
    expect(failed.retryMessages).toHaveLength(1);
    expect(await archived(ada.tenant, roomId)).toEqual([]);
    expect((await deliver([pack])).explicitAcks).toHaveLength(1);
    expect((await archived(ada.tenant, roomId)).map((r) => [r.seq, r.text])).toEqual([
      [1, "packed 1"],
      [2, "packed 2"],
      [3, "packed 3"],
    ]);
    // Recorded as a dead letter, a pack is filed under its room and first event.
    expect(letterKeys(pack)).toEqual({ tenantId: ada.tenant, roomId, seq: 1 });
  });

  it("archives a batch in one round trip to its history shard, its size read from the write", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const calls: string[] = [];
    const counted = historyWrapped(env, (method, name) =>
      name === "batch" || name === "prepare" || name === "exec"
        ? (...args: unknown[]) => {
            calls.push(
              name === "prepare" ? `prepare ${String(args[0]).split(" ")[0]?.toLowerCase()}` : String(name),
            );
            return method(...args);
          }
        : method,
    );
    const packs: ArchivePack[] = [1, 4].map((from) => ({
      tenantId: ada.tenant,
      roomId,
      events: [from, from + 1, from + 2].map((seq) => ({ event: message(ada, seq, `counted ${seq}`) })),
    }));
    expect((await deliver(packs, counted)).explicitAcks).toHaveLength(2);
    expect((await archived(ada.tenant, roomId)).map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    // The batch's statements are prepared, then sent together: the one call that reaches D1 (a
    // separate query, such as one for the database's size, would be another).
    expect(calls.filter((c) => c !== "prepare insert" && c !== "prepare update")).toEqual(["batch"]);
  });

  it("refuses a pack with one malformed event whole, writing none of it", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const good = { event: message(ada, 1, "fine") };
    for (const events of [
      [good, { event: { seq: "2" } }],
      [good, { event: message(ada, 2, "x"), targetTs: "soon" }],
      [],
    ]) {
      const result = await deliver([{ tenantId: ada.tenant, roomId, events } as unknown as ArchivePack]);
      expect(result.explicitAcks).toEqual([]);
      expect(result.retryMessages).toHaveLength(1);
    }
    expect(await archived(ada.tenant, roomId)).toEqual([]);
  });

  it("sends a malformed message towards the dead-letter queue instead of dropping it", async () => {
    const result = await deliver([{ nonsense: true } as unknown as ArchiveMessage]);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages).toHaveLength(1);
  });

  it("ends with the latest edit's text or none after a delete, in whatever order events arrive", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const k = { tenantId: ada.tenant, roomId };
    const edit = (seq: number, target: number, text: string): RoomEvent => ({
      kind: "edit",
      seq,
      ts: NOW + 2_000,
      author: author(ada),
      target,
      text,
    });
    // Edits arrive before their message, the older edit last.
    await deliver([{ ...k, event: edit(3, 1, "third draft") }]);
    await deliver([{ ...k, event: message(ada, 1, "first draft") }]);
    await deliver([{ ...k, event: edit(2, 1, "second draft") }]);
    expect((await archived(ada.tenant, roomId)).find((r) => r.seq === 1)?.text).toBe("third draft");
    // A delete arriving before its message.
    await deliver([
      { ...k, event: { kind: "delete", seq: 5, ts: NOW + 3_000, author: author(ada), target: 4 } },
    ]);
    await deliver([{ ...k, event: message(ada, 4, "regret this") }]);
    const rows = await archived(ada.tenant, roomId);
    expect(rows.find((r) => r.seq === 4)).toMatchObject({ text: "", deleted: 1 });
    expect(rows.find((r) => r.seq === 4)?.json).not.toContain("regret");
  });

  it("reaches the same end state when a batch holds a message with its edits and deletes, in any order", async () => {
    const ada = await login(unique("t"));
    const events = (roomId: string): ArchiveMessage[] =>
      [
        message(ada, 1, "first draft"),
        { kind: "edit", seq: 2, ts: NOW + 2_000, author: author(ada), target: 1, text: "second draft" },
        { kind: "edit", seq: 3, ts: NOW + 2_001, author: author(ada), target: 1, text: "third draft" },
        message(ada, 4, "regret this"),
        { kind: "edit", seq: 5, ts: NOW + 2_002, author: author(ada), target: 4, text: "regret this more" },
        { kind: "delete", seq: 6, ts: NOW + 3_000, author: author(ada), target: 4 },
        message(ada, 7, "keep me"),
      ].map((event) => ({ tenantId: ada.tenant, roomId, event: event as RoomEvent }));
    const orders: ((list: ArchiveMessage[]) => ArchiveMessage[])[] = [
      (l) => l,
      (l) => [...l].reverse(),
      (l) => [l[5], l[2], l[6], l[0], l[4], l[1], l[3], l[0]] as ArchiveMessage[],
    ];
    for (const order of orders) {
      const roomId = await createRoom(ada);
      expect((await deliver(order(events(roomId)))).retryMessages).toEqual([]);
      const rows = await archived(ada.tenant, roomId);
      expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(rows[0]).toMatchObject({ text: "third draft", deleted: 0 });
      expect(rows[3]).toMatchObject({ text: "", deleted: 1 });
      expect(rows[3]?.json).not.toContain("regret");
      expect(rows[4]?.json).not.toContain("regret");
      expect(rows[6]).toMatchObject({ text: "keep me", deleted: 0 });
    }
  });
});
