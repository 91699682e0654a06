/**
 * Flow control of room sockets (docs/protocol.md, "Flow control"; durable-objects/room-flow.ts),
 * through the protocol: a reader that stops confirming is paused at its window while the room keeps
 * serving everyone else, and resumes exactly where it stopped; a reader that never confirms is
 * closed (4008) at its budget and resumes with `after`. A reader whose TCP socket really stops is
 * test/system/slow-consumer.test.ts.
 */
import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import { CLOSE } from "../protocol/index.ts";
import { Client, roomWith, type User } from "./helpers.ts";

const WINDOW = DEFAULT_LIMITS.flowWindowBytes;
/** The most one frame adds past a limit: a coalesced frame of ASCII text plus its envelope. */
const FRAME = DEFAULT_LIMITS.maxOutFrameChars + 64;
const TEXT = "x".repeat(12 * 1024);

/** A socket that reads and confirms like the SDK. */
async function reader(user: User, roomId: string): Promise<Client> {
  const c = await Client.open(user, roomId, 0, "&flow=1");
  c.confirming = true;
  await c.ready();
  return c;
}

/** Sends `n` messages of 12 KiB, 20 in flight at a time; resolves when all are acked. */
async function sendMany(c: Client, n: number, prefix: string): Promise<void> {
  for (let i = 0; i < n; i += 20) {
    const batch = Array.from({ length: Math.min(20, n - i) }, (_, k) => `${prefix}-${i + k}`);
    await Promise.all(batch.map((id) => c.sendMessage(id, `${id} ${TEXT}`)));
  }
}

/** Waits until every frame the room wrote to `c` before now has arrived: a ping that is not the
 * exact auto-answered frame goes through the room, so its pong comes after them. */
async function drained(c: Client): Promise<void> {
  const from = c.frames.length;
  c.send({ type: "ping", probe: from });
  await c.next("pong", from);
}

const seqsOf = (c: Client) => c.events.map((e) => e.seq);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("flow control of room sockets", () => {
  it("pauses a reader that stops confirming at its window, keeps serving the others, and resumes it exactly where it stopped", async () => {
    const { roomId, users } = await roomWith(3);
    const [s, f, p] = users as [User, User, User];
    const sender = await reader(s, roomId);
    const fast = await reader(f, roomId);
    const slow = await Client.open(p, roomId, 0, "&flow=1"); // reads, but confirms nothing
    await slow.ready();
    const start = seqsOf(slow).at(-1) ?? 0;

    await sendMany(sender, 200, "m"); // 2.4 MiB, more than twice the window
    await fast.until((c) => c.events.length >= start + 200, "the fast reader has everything");
    // While paused, the slow reader sends a command of its own: stored at once, acked only after it
    // has been sent the event (acks follow their events).
    slow.send({ type: "send", clientId: "from-slow", text: "sent while paused" });
    await fast.until((c) => c.events.some((e) => e.clientId === "from-slow"), "the paused reader's message");
    const last = start + 201;

    await drained(slow);
    expect(slow.eventBytes).toBeGreaterThan(WINDOW); // paused at the window, not before it
    expect(slow.eventBytes).toBeLessThanOrEqual(WINDOW + FRAME);
    expect(seqsOf(slow)).toEqual(range(1, seqsOf(slow).at(-1) ?? 0));
    expect(seqsOf(slow).at(-1)).toBeLessThan(last - 100);
    expect(slow.acks()).toEqual([]);
    expect(slow.closed).toBeNull();

    // Confirming resumes it from the log: the rest, each event once and in order, then the ack.
    slow.confirming = true;
    slow.confirm();
    await slow.until((c) => c.acks().length === 1, "the held ack");
    expect(seqsOf(slow)).toEqual(range(1, last));
    const eventAt = slow.frames.findIndex(
      (f) =>
        (f.type === "event" && f.event.clientId === "from-slow") ||
        (f.type === "events" && f.events.some((e) => e.clientId === "from-slow")),
    );
    const ackAt = slow.frames.findIndex((f) => f.type === "ack");
    expect(eventAt).toBeGreaterThanOrEqual(0);
    expect(ackAt).toBeGreaterThan(eventAt);
    expect(slow.acks()[0]).toEqual({ type: "ack", clientId: "from-slow", seq: last });

    // Live again: the next message arrives like anyone else's.
    await sender.sendMessage("after", "after the catch-up");
    await slow.until((c) => c.events.some((e) => e.clientId === "after"), "a live event after resuming");
    expect(seqsOf(slow)).toEqual(range(1, last + 1));
    expect(sender.errors()).toEqual([]);
    expect(slow.errors()).toEqual([]);
    for (const c of [sender, fast, slow]) c.close();
  });

  it("keeps a paused reader paused through hibernation and resumes it from its attachment", async () => {
    const { roomId, users } = await roomWith(2);
    const [s, p] = users as [User, User];
    const sender = await reader(s, roomId);
    const slow = await Client.open(p, roomId, 0, "&flow=1");
    await slow.ready();
    const start = seqsOf(slow).at(-1) ?? 0;
    await sendMany(sender, 150, "h");
    await drained(slow);
    const pausedAt = seqsOf(slow).at(-1) ?? 0;
    expect(pausedAt).toBeLessThan(start + 150);

    const stub = env.ROOM.get(env.ROOM.idFromName(`${s.tenant}:${roomId}`));
    await evictDurableObject(stub, { webSockets: "hibernate" });
    // Still paused after waking: more events do not reach it.
    await sender.sendMessage("woken", "after the room slept");
    await drained(slow);
    expect(seqsOf(slow).at(-1)).toBe(pausedAt);

    slow.confirming = true;
    slow.confirm();
    await slow.until((c) => c.events.some((e) => e.clientId === "woken"), "the rest after waking");
    expect(seqsOf(slow)).toEqual(range(1, start + 151));
    expect(slow.errors()).toEqual([]);
    sender.close();
    slow.close();
  });

  it("closes a reader that never confirms (no flow=1) with 4008 at its budget; resuming with after loses and repeats nothing", async () => {
    const { roomId, users } = await roomWith(2);
    const [s, p] = users as [User, User];
    const sender = await reader(s, roomId);
    const legacy = await Client.open(p, roomId, 0);
    await legacy.ready();
    const start = seqsOf(legacy).at(-1) ?? 0;
    const budget = DEFAULT_LIMITS.unconfirmedStreamBytes;

    await sendMany(sender, 400, "l"); // 4.8 MiB
    await legacy.until((c) => c.closed !== null, "the close");
    expect(legacy.closed?.code).toBe(CLOSE.slow.code);
    expect(legacy.eventBytes).toBeGreaterThan(budget);
    expect(legacy.eventBytes).toBeLessThanOrEqual(budget + FRAME);
    const seen = seqsOf(legacy);
    expect(seen).toEqual(range(1, seen.at(-1) ?? 0));

    const again = await Client.open(p, roomId, seen.at(-1) ?? 0);
    await again.ready();
    expect([...seen, ...seqsOf(again)]).toEqual(range(1, start + 400));
    expect(sender.closed).toBeNull(); // it confirms, so it is never cut off
    sender.close();
    again.close();
  });

  it("refuses a confirmation of a seq never sent on the socket, and it changes nothing", async () => {
    const { roomId, users } = await roomWith(1);
    const c = await reader(users[0] as User, roomId);
    const last = seqsOf(c).at(-1) ?? 0;
    c.send({ type: "received", seq: last + 5 });
    const err = await c.next("error");
    expect(err.code).toBe("bad_request");
    c.send({ type: "received", seq: "1" });
    await c.until((x) => x.errors().length === 2, "the second refusal");
    expect(c.errors()[1]?.code).toBe("bad_request");
    // The socket still works, and confirming what it has is accepted silently.
    c.send({ type: "received", seq: last });
    const seq = await c.sendMessage("ok", "still here");
    expect(seq).toBe(last + 1);
    expect(c.errors()).toHaveLength(2);
    c.close();
  });
});
