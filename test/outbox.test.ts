import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Room } from "../durable-objects/room.ts";
import { api, createRoom, login, type User, unique } from "./helpers.ts";

afterEach(() => {
  vi.useRealTimers();
});

/** Swaps the room object's queue binding (what the object sends through), returning the original. */
async function setQueue(stub: DurableObjectStub<Room>, queue: Queue): Promise<void> {
  await runInDurableObject(stub, (room: Room) => {
    (room as unknown as { env: Env }).env = { ...env, ROOM_EVENTS: queue };
  });
}

const refusing = {
  send: () => Promise.reject(new Error("queue down")),
  sendBatch: () => Promise.reject(new Error("queue down")),
};
const losing = { send: () => Promise.resolve(), sendBatch: () => Promise.resolve() }; // accepts, then dies with the process

async function roomWithMessages(
  n: number,
): Promise<{ user: User; roomId: string; stub: DurableObjectStub<Room> }> {
  const user = await login(unique("t"));
  const roomId = await createRoom(user);
  const stub = env.ROOM.get(env.ROOM.idFromName(`${user.tenant}:${roomId}`));
  for (let i = 0; i < n; i++)
    await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId: `m${i}`, text: `archive me ${i}` });
  return { user, roomId, stub };
}

/** Waits (bounded) until the archive has confirmed every event of the room. */
async function archivedAll(stub: DurableObjectStub<Room>): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await stub.archiveState();
    if (s.outbox === 0 && s.archivedSeq === s.lastSeq) return;
    if (Date.now() > deadline) throw new Error(`archive never caught up: ${JSON.stringify(s)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("the transactional outbox", () => {
  it("keeps every event while the queue refuses sends, and drains them once it accepts", async () => {
    const { user, roomId, stub } = await roomWithMessages(5);
    await setQueue(stub, refusing as unknown as Queue);
    await runDurableObjectAlarm(stub);
    expect(await stub.archiveState()).toMatchObject({ outbox: 6, archivedSeq: 0, lastSeq: 6 }); // join + 5 messages
    await setQueue(stub, env.ROOM_EVENTS);
    await runDurableObjectAlarm(stub); // the backoff alarm, run now
    await archivedAll(stub);
    const { results } = await env.DB.prepare(
      "SELECT seq FROM archived_events WHERE tenant_id = ? AND room_id = ? ORDER BY seq",
    )
      .bind(user.tenant, roomId)
      .all<{ seq: number }>();
    expect(results.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("sends again what the archive has not confirmed in time (a queue that lost its messages)", async () => {
    const { stub } = await roomWithMessages(3);
    await setQueue(stub, losing as unknown as Queue);
    await runDurableObjectAlarm(stub);
    expect(await stub.archiveState()).toMatchObject({ outbox: 0, archivedSeq: 0, lastSeq: 4 });
    await setQueue(stub, env.ROOM_EVENTS);
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 61_000 });
    await runDurableObjectAlarm(stub); // due: requeues the unconfirmed events
    expect((await stub.archiveState()).outbox).toBe(4);
    await runDurableObjectAlarm(stub); // drains them
    vi.useRealTimers();
    await archivedAll(stub);
  });

  it("makes a sent message searchable without any help from the test", async () => {
    const { user, stub } = await roomWithMessages(0);
    const room = (await api(user, "GET", "/api/rooms").then((r) => r.json())) as { id: string }[];
    await api(user, "POST", `/api/rooms/${room[0]!.id}/messages`, {
      clientId: "s",
      text: "zeppelin launch window",
    });
    await archivedAll(stub);
    const res = await api(user, "GET", "/api/search?q=zeppelin");
    expect(((await res.json()) as { hits: { text: string }[] }).hits.map((h) => h.text)).toEqual([
      "zeppelin launch window",
    ]);
  });
});
