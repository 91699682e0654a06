/**
 * @module The room-events queue under a test's control, for tests of the derived stores: a fake
 * queue installed in one room object (so the test chooses when, and whether, what the room sends is
 * delivered), the worker's queue handler to deliver it, and the room's alarm.
 */
import {
  createExecutionContext,
  createMessageBatch,
  getQueueResult,
  runInDurableObject,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import type { Room } from "../../durable-objects/room.ts";
import type { ArchivePack } from "../../durable-objects/room-archive.ts";
import { type ArchiveMessage, archiveItems } from "../../worker/archive/consumer.ts";
import worker from "../../worker/index.ts";
import { roomStub } from "../../worker/stubs.ts";
import type { User } from "../helpers.ts";

/** A room-events queue message: a room's pack, or one event (hand-made, or from before packs). */
export type QueueBody = ArchivePack | ArchiveMessage;

/** The events queue messages carry, in order (packs unpacked, as the consumer reads them). */
export function eventsIn(bodies: readonly QueueBody[]): ArchiveMessage[] {
  return bodies.flatMap((b) => archiveItems(b) ?? []);
}

/** Stands in for the room-events queue inside one room object. */
export class FakeQueue {
  sent: QueueBody[] = [];
  failing = false;
  async send(body: QueueBody): Promise<void> {
    await this.sendBatch([{ body }]);
  }
  async sendBatch(messages: Iterable<{ body: QueueBody }>): Promise<void> {
    if (this.failing) throw new Error("queue unavailable (simulated)");
    for (const m of messages) this.sent.push(m.body);
  }
  take(): QueueBody[] {
    const out = this.sent;
    this.sent = [];
    return out;
  }
}

export type Stub = DurableObjectStub<Room>;

export async function withFakeQueue(user: User, roomId: string): Promise<{ stub: Stub; queue: FakeQueue }> {
  const stub = roomStub(env, user.tenant, roomId) as Stub;
  const queue = new FakeQueue();
  await runInDurableObject(stub, (room: Room) => {
    const r = room as unknown as { env: Env };
    // Whichever jurisdiction's queue the room's tenant takes.
    r.env = { ...r.env, ROOM_EVENTS: queue as unknown as Queue, ROOM_EVENTS_EU: queue as unknown as Queue };
  });
  return { stub, queue };
}

export const alarm = (stub: Stub) => runInDurableObject(stub, (room: Room) => room.alarm());

let ids = 0;
export async function deliver(messages: readonly QueueBody[], on: Env = env) {
  const batch = createMessageBatch<unknown>(
    "parley-room-events",
    messages.map((body) => ({ id: `p${++ids}`, timestamp: new Date(), attempts: 1, body })),
  );
  const ctx = createExecutionContext();
  await worker.queue(batch, on, ctx);
  return getQueueResult(batch, ctx);
}

/** Runs alarms and delivers what they send until the D1 history has everything of the room. */
export async function drainAll(stub: Stub, queue: FakeQueue): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const state = await stub.archiveState();
    if (state.pending === 0) return;
    await alarm(stub);
    const sent = queue.take();
    if (sent.length > 0) await deliver(sent);
  }
  throw new Error("the room did not catch up with the D1 history");
}
