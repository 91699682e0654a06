import { evictDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { RoomEvent } from "../protocol/index.ts";
import { Client, roomWith } from "./helpers.ts";

const messages = (events: RoomEvent[]) => events.filter((e) => e.kind === "message");

describe("a room's ordered, exactly-once log", () => {
  it("sequences 10 clients × 100 concurrent sends as 1..1000 with no gap, one ack each, every receiver in order", async () => {
    const { roomId, users } = await roomWith(10);
    const clients = await Promise.all(users.map((u) => Client.open(u, roomId)));
    await Promise.all(clients.map((c) => c.ready()));
    const base = clients[0]?.frames.find((f) => f.type === "ready");
    const start = base?.type === "ready" ? base.lastSeq : 0; // the member_join events come first

    // Each client pipelines its sends in windows of 20 so the per-user rate limit is not the subject here.
    await Promise.all(
      clients.map(async (c, i) => {
        for (let w = 0; w < 5; w++) {
          for (let k = 0; k < 20; k++)
            c.send({ type: "send", clientId: `c${i}-m${w * 20 + k}`, text: `from ${i}: ${w * 20 + k}` });
          await c.until((x) => x.acks().length >= (w + 1) * 20, `acks of window ${w}`);
        }
      }),
    );
    await Promise.all(
      clients.map((c) => c.until((x) => messages(x.events).length >= 1000, "1000 message events")),
    );

    const allAcks = clients.flatMap((c) => c.acks());
    expect(allAcks).toHaveLength(1000);
    expect(new Set(allAcks.map((a) => a.clientId)).size).toBe(1000);
    expect(allAcks.map((a) => a.seq).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 1000 }, (_, i) => start + i + 1),
    );
    for (const c of clients) {
      expect(c.errors()).toEqual([]);
      const seqs = c.events.map((e) => e.seq).filter((s) => s > start);
      expect(seqs).toEqual(Array.from({ length: 1000 }, (_, i) => start + i + 1));
      // Each ack names the seq of the event that carries the same clientId.
      const bySeq = new Map(c.events.map((e) => [e.seq, e]));
      for (const a of c.acks()) expect(bySeq.get(a.seq)?.clientId).toBe(a.clientId);
    }
    // Nothing else was appended: a reader connecting now is told the log ends at the 1000th send.
    const late = await Client.open(users[0]!, roomId, start + 1000);
    await late.ready();
    expect(late.frames.find((f) => f.type === "ready")).toEqual({ type: "ready", lastSeq: start + 1000 });
    late.close();
    for (const c of clients) c.close();
  });

  it("answers a repeated clientId with the original seq and creates nothing", async () => {
    const { roomId, users } = await roomWith(2);
    const [alice, bob] = await Promise.all(users.map((u) => Client.open(u, roomId)));
    await Promise.all([alice?.ready(), bob?.ready()]);
    const seq = await alice!.sendMessage("same-id", "hello");
    const again = await alice!.sendMessage("same-id", "hello (retry)");
    expect(again).toBe(seq);
    const later = await alice!.sendMessage("other-id", "next");
    expect(later).toBe(seq + 1);
    await bob!.until((c) => c.events.some((e) => e.seq === later), "the later message");
    expect(messages(bob!.events).map((e) => e.clientId)).toEqual(["same-id", "other-id"]);
    // The same clientId from another author is a different command.
    expect(await bob!.sendMessage("same-id", "bob's own")).toBe(later + 1);
  });

  it("lets only the author edit, and lets the author or an admin delete, scrubbing the text", async () => {
    const { roomId, users } = await roomWith(3); // users[0] owns the tenant
    const [owner, alice, bob] = await Promise.all(users.map((u) => Client.open(u, roomId)));
    await Promise.all([owner, alice, bob].map((c) => c?.ready()));
    const seq = await alice!.sendMessage("m1", "secret plans");

    bob!.send({ type: "edit", clientId: "e1", target: seq, text: "hijacked" });
    expect(await bob!.next("error")).toMatchObject({ code: "forbidden", clientId: "e1" });
    const editSeq = await new Promise<number>((resolve, reject) => {
      const from = alice!.frames.length;
      alice!.send({ type: "edit", clientId: "e2", target: seq, text: "public plans" });
      alice!.next("ack", from).then((a) => resolve(a.seq), reject);
    });
    expect(editSeq).toBe(seq + 1);

    const fromBob = bob!.frames.length;
    bob!.send({ type: "delete", clientId: "d1", target: seq });
    expect(await bob!.next("error", fromBob)).toMatchObject({ code: "forbidden", clientId: "d1" });

    const fromOwner = owner!.frames.length;
    owner!.send({ type: "delete", clientId: "d2", target: seq });
    const ack = await owner!.next("ack", fromOwner);
    expect(ack.seq).toBe(editSeq + 1);

    // A fresh reader sees the message and its edit with their text gone, and the delete.
    const reader = await Client.open({ token: users[2]!.token }, roomId, seq - 1);
    await reader.ready();
    expect(reader.events.map((e) => [e.seq, e.kind])).toEqual([
      [seq, "message"],
      [editSeq, "edit"],
      [ack.seq, "delete"],
    ]);
    expect(reader.events[0]).toMatchObject({ text: "", deleted: true });
    expect(reader.events[1]).toMatchObject({ text: "", deleted: true });
    expect(JSON.stringify(reader.events)).not.toContain("plans");
  });

  it("toggles a reaction on and off, refusing a no-op", async () => {
    const { roomId, users } = await roomWith(2);
    const [alice, bob] = await Promise.all(users.map((u) => Client.open(u, roomId)));
    await Promise.all([alice?.ready(), bob?.ready()]);
    const seq = await alice!.sendMessage("m", "react to me");
    const react = async (clientId: string, on: boolean) => {
      const from = bob!.frames.length;
      bob!.send({ type: "react", clientId, target: seq, emoji: "🎉", on });
      await bob!.until(
        (c) =>
          c.frames
            .slice(from)
            .some((f) => (f.type === "ack" || f.type === "error") && f.clientId === clientId),
        clientId,
      );
      return bob!.frames
        .slice(from)
        .find((f) => (f.type === "ack" || f.type === "error") && f.clientId === clientId);
    };
    expect(await react("r1", true)).toMatchObject({ type: "ack", seq: seq + 1 });
    expect(await react("r2", true)).toMatchObject({ type: "error", code: "conflict" });
    expect(await react("r3", false)).toMatchObject({ type: "ack", seq: seq + 2 });
    expect(await react("r4", false)).toMatchObject({ type: "error", code: "conflict" });
    await alice!.until((c) => c.events.some((e) => e.seq === seq + 2), "both reactions");
    expect(alice!.events.filter((e) => e.kind === "reaction")).toMatchObject([
      { kind: "reaction", target: seq, emoji: "🎉", on: true, author: { id: users[1]!.id } },
      { kind: "reaction", target: seq, emoji: "🎉", on: false },
    ]);
  });

  it("threads replies to a top-level message and refuses a thread root that does not exist", async () => {
    const { roomId, users } = await roomWith(1);
    const c = await Client.open(users[0]!, roomId);
    await c.ready();
    const root = await c.sendMessage("root", "topic");
    const reply = await c.sendMessage("reply", "in thread", { threadRoot: root });
    await c.until((x) => x.events.some((e) => e.seq === reply), "the reply");
    expect(c.events.find((e) => e.seq === reply)).toMatchObject({ kind: "message", threadRoot: root });
    const from = c.frames.length;
    c.send({ type: "send", clientId: "orphan", text: "?", threadRoot: 9999 });
    expect(await c.next("error", from)).toMatchObject({ code: "not_found", clientId: "orphan" });
    const from2 = c.frames.length;
    c.send({ type: "send", clientId: "nested", text: "?", threadRoot: reply });
    expect(await c.next("error", from2)).toMatchObject({ code: "bad_request", clientId: "nested" });
  });
});

describe("replay on reconnect", () => {
  it("replays exactly the missed events, then ready, then live events", async () => {
    const { roomId, users } = await roomWith(2);
    const alice = await Client.open(users[0]!, roomId);
    const bob = await Client.open(users[1]!, roomId);
    await Promise.all([alice.ready(), bob.ready()]);
    const first = await alice.sendMessage("a1", "one");
    await bob.until((c) => c.events.some((e) => e.seq === first), "first");
    bob.close();
    const missed = [
      await alice.sendMessage("a2", "two"),
      await alice.sendMessage("a3", "three"),
      await alice.sendMessage("a4", "four"),
    ];

    const back = await Client.open(users[1]!, roomId, first);
    await back.ready();
    expect(back.events.map((e) => e.seq)).toEqual(missed);
    const readyIndex = back.frames.findIndex((f) => f.type === "ready");
    expect(back.frames[readyIndex]).toEqual({ type: "ready", lastSeq: missed[2] });
    const live = await alice.sendMessage("a5", "five");
    await back.until((c) => c.events.some((e) => e.seq === live), "live event");
    expect(back.events.map((e) => e.seq)).toEqual([...missed, live]);
    expect(back.frames.findIndex((f) => f.type === "event" || f.type === "events")).toBeLessThan(readyIndex);
  });

  it("sends gap instead of a replay when more than the replay cap was missed", async () => {
    const { roomId, users } = await roomWith(3);
    const c = await Client.open(users[0]!, roomId);
    await c.ready();
    const cap = 1000; // config/limits.ts default replayCap
    // Fill the log through the room's command RPC (the HTTP path) from three members, each within
    // the per-user burst, so the rate limiter is not involved.
    const stub = env.ROOM.get(env.ROOM.idFromName(`${users[0]!.tenant}:${roomId}`));
    for (let u = 0; u < 3; u++) {
      const actor = { id: users[u]!.id, name: users[u]!.name, role: "member" as const };
      for (let i = 0; i < 340; i++) {
        const r = await stub.command(actor, { type: "send", clientId: `fill-${i}`, text: `m${i}` });
        expect(r.ok).toBe(true);
      }
    }
    c.close();
    const late = await Client.open(users[0]!, roomId, 1);
    await late.ready();
    const gap = late.frames[0];
    expect(gap?.type).toBe("gap");
    expect(gap).toMatchObject({ type: "gap", after: 1 });
    expect(late.events).toEqual([]);
    // Within the cap, the same client gets a replay.
    const recent = await Client.open(users[0]!, roomId, cap);
    await recent.ready();
    expect(recent.events.length).toBeGreaterThan(0);
    expect(recent.frames.some((f) => f.type === "gap")).toBe(false);
  });
});

describe("hibernation and eviction", () => {
  it("loses nothing and keeps each socket's identity when the object is evicted between messages", async () => {
    const { roomId, users } = await roomWith(2);
    const alice = await Client.open(users[0]!, roomId);
    const bob = await Client.open(users[1]!, roomId);
    await Promise.all([alice.ready(), bob.ready()]);
    const s1 = await alice.sendMessage("before", "before sleep");
    const stub = env.ROOM.get(env.ROOM.idFromName(`${users[0]!.tenant}:${roomId}`));
    await evictDurableObject(stub, { webSockets: "hibernate" });

    // Both sockets are still open; the object wakes on the next frame with its state from storage.
    const s2 = await bob.sendMessage("after", "after sleep");
    expect(s2).toBe(s1 + 1);
    await alice.until((c) => c.events.some((e) => e.seq === s2), "bob's message after eviction");
    expect(alice.events.find((e) => e.seq === s2)?.author).toEqual({
      id: users[1]!.id,
      name: users[1]!.name,
    });

    await evictDurableObject(stub, { webSockets: "hibernate" });
    // Alice's edit of her own message still passes authorization: her identity survived in the attachment.
    const from = alice.frames.length;
    alice.send({ type: "edit", clientId: "edit-after", target: s1, text: "edited after sleep" });
    expect((await alice.next("ack", from)).seq).toBe(s2 + 1);
    const bobFrom = bob.frames.length;
    bob.send({ type: "edit", clientId: "bob-edit", target: s1, text: "not mine" });
    expect(await bob.next("error", bobFrom)).toMatchObject({ code: "forbidden" });

    const reader = await Client.open(users[1]!, roomId, 0);
    await reader.ready();
    expect(reader.events.map((e) => e.seq)).toEqual(Array.from({ length: s2 + 1 }, (_, i) => i + 1));
  });

  it("answers ping with pong without a command", async () => {
    const { roomId, users } = await roomWith(1);
    const c = await Client.open(users[0]!, roomId);
    await c.ready();
    c.send({ type: "ping" });
    await c.next("pong");
    const stub = env.ROOM.get(env.ROOM.idFromName(`${users[0]!.tenant}:${roomId}`));
    await evictDurableObject(stub, { webSockets: "hibernate" });
    const from = c.frames.length;
    c.send('{"type":"ping"}');
    await c.next("pong", from);
  });
});

describe("typing", () => {
  it("forwards typing to the other members only, at most once per user per 2 s, and never sequences it", async () => {
    const { roomId, users } = await roomWith(2);
    const alice = await Client.open(users[0]!, roomId);
    const bob = await Client.open(users[1]!, roomId);
    await Promise.all([alice.ready(), bob.ready()]);
    // A ping that is not byte-identical to the auto-response pair goes through the object, so its
    // pong proves every earlier frame of that socket was processed.
    const roundTrip = async (c: Client) => {
      const from = c.frames.length;
      c.send('{ "type": "ping" }');
      await c.next("pong", from);
    };
    for (let i = 0; i < 5; i++) alice.send({ type: "typing" });
    await roundTrip(alice);
    await roundTrip(bob);
    expect(bob.frames.filter((f) => f.type === "typing")).toEqual([
      { type: "typing", user: { id: users[0]!.id, name: users[0]!.name } },
    ]);
    expect(alice.frames.filter((f) => f.type === "typing")).toEqual([]);
    expect(alice.events.concat(bob.events).filter((e) => e.seq > 2)).toEqual([]);
  });
});

describe("frame sizes", () => {
  it("splits a replay of large messages into bounded frames, in order", async () => {
    const { roomId, users } = await roomWith(1);
    const c = await Client.open(users[0]!, roomId);
    await c.ready();
    const big = "x".repeat(16 * 1024);
    let last = 0;
    for (let i = 0; i < 20; i++) last = await c.sendMessage(`big-${i}`, big);
    const reader = await Client.open(users[0]!, roomId, 0);
    await reader.ready();
    const frames = reader.frames.filter((f) => f.type === "event" || f.type === "events");
    // A frame holds at most 128 Ki characters of events (config/limits.ts maxOutFrameChars).
    expect(frames.length).toBeGreaterThanOrEqual(3);
    for (const f of frames) expect(JSON.stringify(f).length).toBeLessThanOrEqual(128 * 1024 + 64);
    expect(reader.events.map((e) => e.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
  });
});
