/**
 * Read markers coalesced (docs/architecture.md, decision 7): a socket's `read` frames are held and
 * written together, never backwards, in pages of markers: one row per page that moved whatever the
 * number of frames or of readers; a frame lost with the room is sent again by the SDK after it
 * reconnects.
 */
import { env, evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { type SocketOpener, websocketTransport } from "../client/sdk/index.ts";
import { limitsOf } from "../config/limits.ts";
import { shardOf } from "../durable-objects/presence.ts";
import { api, Client, createRoom, join, json, login, roomObject, settleInbox, unique } from "./helpers.ts";
import { Network, session, until } from "./sdk-helpers.ts";

type Cursor = { rowsWritten: number };
/** Rows written by statements on the tables markers live in (their pages, and `members`, where
 * they lived before pages), while counting: in the room, and in the inboxes (`inbox_readers`
 * before pages). */
let markerRows = 0;
let inboxRows = 0;
let patched = false;

/** Counts the rows each `UPDATE members` writes, from the SQL cursors (patched once per file). */
async function countMarkerWrites(stub: DurableObjectStub): Promise<void> {
  await runInDurableObject(stub, (_room, state) => {
    if (patched) return;
    patched = true;
    const proto = Object.getPrototypeOf(state.storage.sql) as { exec: (...a: unknown[]) => Cursor };
    const exec = proto.exec;
    proto.exec = function (this: unknown, query: unknown, ...params: unknown[]): Cursor {
      const cursor = exec.call(this, query, ...params);
      // A write is done when exec returns.
      const q = String(query);
      if (q.startsWith("UPDATE members") || q.includes("read_pages")) markerRows += cursor.rowsWritten;
      if (q.includes("inbox_pages") || q.startsWith("UPDATE inbox_readers")) inboxRows += cursor.rowsWritten;
      return cursor;
    };
  });
}

describe("read markers", () => {
  it("writes one row for many read frames of a user, at the highest, never backwards", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(bob);
    await join(ada, roomId);
    for (let i = 0; i < 10; i++)
      await api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: `m${i}`, text: `m${i}` });
    const stub = roomObject(tenant, roomId);
    const { lastSeq } = await stub.summary(ada.id);
    await countMarkerWrites(stub);
    markerRows = 0;
    const socket = await Client.open(ada, roomId, lastSeq);
    await socket.ready();
    // Fifty frames, out of order, the highest among them in the middle.
    const seqs = Array.from({ length: 50 }, (_, i) => 1 + ((i * 7) % lastSeq));
    for (const seq of seqs) socket.send({ type: "read", seq });
    socket.send({ type: "ping" });
    await socket.next("pong");
    await settleInbox(tenant, roomId);
    expect(markerRows).toBe(1);
    expect(await stub.summary(ada.id)).toMatchObject({ readSeq: lastSeq, unread: 0 });
    const listed = await json<{ id: string; readSeq: number; unread: number }[]>(
      api(ada, "GET", "/api/rooms"),
    );
    expect(listed.find((r) => r.id === roomId)).toMatchObject({ readSeq: lastSeq, unread: 0 });

    // Behind the marker: nothing written, nothing moves.
    for (const seq of [1, 3, lastSeq - 1]) socket.send({ type: "read", seq });
    socket.send({ type: "ping" });
    await socket.next("pong", socket.frames.length);
    await settleInbox(tenant, roomId);
    expect(markerRows).toBe(1);
    expect((await stub.summary(ada.id)).readSeq).toBe(lastSeq);
    // Over HTTP a marker is written before the answer: readable at once.
    expect(await json(api(ada, "PUT", `/api/rooms/${roomId}/read`, { seq: 2 }))).toEqual({
      readSeq: lastSeq,
    });
    socket.close();
  });

  it("writes the markers of many readers moved in one flush as one row", async () => {
    const tenant = unique("t");
    const bob = await login(tenant);
    const readers = await Promise.all(Array.from({ length: 9 }, () => login(tenant)));
    const roomId = await createRoom(bob);
    for (const r of readers) await join(r, roomId);
    const { seq } = await json<{ seq: number }>(
      api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: "one", text: "read me" }),
    );
    const stub = roomObject(tenant, roomId);
    await countMarkerWrites(stub);
    const sockets = await Promise.all(readers.map((r) => Client.open(r, roomId, seq)));
    for (const s of sockets) await s.ready();
    await settleInbox(tenant, roomId);
    markerRows = 0;
    inboxRows = 0;
    for (const s of sockets) s.send({ type: "read", seq });
    for (const s of sockets) {
      s.send({ type: "ping" });
      await s.next("pong");
    }
    await settleInbox(tenant, roomId);
    expect(markerRows).toBe(1);
    // In the inboxes: one row per presence shard holding readers, not one per reader.
    const shards = new Set(readers.map((r) => shardOf(r.id, limitsOf(env).presenceShards)));
    expect(shards.size).toBeLessThan(readers.length);
    expect(inboxRows).toBe(shards.size);
    for (const r of readers) expect(await stub.summary(r.id)).toMatchObject({ readSeq: seq, unread: 0 });
    // One who leaves takes their marker along: back in, they start from nothing read.
    const [first] = readers;
    if (!first) throw new Error("no reader");
    await api(first, "POST", `/api/rooms/${roomId}/leave`);
    await join(first, roomId);
    expect((await stub.summary(first.id)).readSeq).toBe(0);
    for (const s of sockets) s.close();
  });

  it("ends with the marker the SDK set: it sends it again after a reconnect, when the room may have lost it", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(bob);
    await join(ada, roomId);
    for (let i = 0; i < 3; i++)
      await api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: `m${i}`, text: `m${i}` });
    const net = new Network();
    // Every frame the SDK writes to a socket, in order.
    const written: string[] = [];
    const opener = net.opener(ada);
    const recording: SocketOpener = async (path) => {
      const ws = await opener(path);
      const send = ws.send.bind(ws);
      ws.send = (data: string) => {
        written.push(data);
        send(data);
      };
      return ws;
    };
    const a = session(ada, roomId, [websocketTransport(recording)], { conn: net.conn(ada) });
    await a.s.start();
    await until(() => a.s.status.state === "online" && a.s.lastSeq > 0, "ada caught up");
    const seq = a.s.lastSeq;
    await a.s.read(seq);
    // The room goes away (its sockets with it), whether or not it wrote what it held by then.
    net.cut();
    await evictDurableObject(roomObject(tenant, roomId));
    await until(() => a.s.status.state !== "online", "ada offline");
    const before = written.length;
    net.down = false;
    await until(() => a.s.status.state === "online", "ada back");
    // A command after the reconnect: acked once the room has had every frame sent before it.
    await a.s.send("back").acked;
    expect(written.slice(before).map((f) => JSON.parse(f))).toContainEqual({ type: "read", seq });
    await settleInbox(tenant, roomId);
    expect((await roomObject(tenant, roomId).summary(ada.id)).readSeq).toBe(seq);
    a.s.close();
  });
});
