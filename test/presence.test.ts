import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import type { InboxPush } from "../durable-objects/inbox-store.ts";
import { presenceStub, shardOf } from "../durable-objects/presence.ts";
import { parseServerFrame } from "../protocol/index.ts";
import { FrameSocket } from "./frame-socket.ts";
import { api, inboxPush, json, login, type User, unique, watchQueries } from "./helpers.ts";

type Frame = Record<string, unknown> & { type: string };

/** A presence session (frame-socket.ts): records frames, lets a test wait for one. */
class Session extends FrameSocket<Frame> {
  private constructor(ws: WebSocket) {
    super(ws, (text) => parseServerFrame(text) as unknown as Frame | null);
  }
  static async open(user: User): Promise<Session> {
    return new Session(await FrameSocket.socket("/api/presence/ws", user.token));
  }
  /** Resolves with the first frame after index `from` that matches; fails (never hangs) after 10 s. */
  next(match: (f: Frame) => boolean, from = 0): Promise<Frame> {
    return this.find(match, "a presence frame", from, 10_000);
  }
  /** A ping round trip: every earlier frame of this session has been processed. */
  async sync(): Promise<void> {
    const from = this.frames.length;
    this.send({ type: "ping" });
    await this.next((f) => f.type === "pong", from);
  }
}

const presenceOf = (user: string) => (f: Frame) => f.type === "presence" && f.user === user;
const SHARDS = 3; // vitest.config.ts

/** Two users of one tenant whose presence lives on different shards. */
async function usersOnTwoShards(): Promise<[User, User]> {
  const tenant = unique("t");
  const first = await login(tenant);
  for (;;) {
    const other = await login(tenant);
    if (shardOf(other.id, SHARDS) !== shardOf(first.id, SHARDS)) return [first, other];
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe("presence", () => {
  it("keeps a user online while any device is, then offline 60 s after the last heartbeat, by alarm", async () => {
    const [ada, watcher] = await usersOnTwoShards();
    const laptop = await Session.open(ada);
    const phone = await Session.open(ada);
    const w = await Session.open(watcher);
    w.send({ type: "watch", users: [ada.id] });
    expect(await w.next(presenceOf(ada.id))).toMatchObject({
      status: "online",
      lastSeen: expect.any(Number),
    });

    laptop.close();
    phone.send({ type: "heartbeat", status: "active" });
    await phone.sync();
    phone.close();
    const stub = presenceStub(env, ada.tenant, shardOf(ada.id, SHARDS));
    // Not yet due: the alarm changes nothing.
    await runDurableObjectAlarm(stub);
    expect(w.frames.filter(presenceOf(ada.id))).toHaveLength(1);

    const from = w.frames.length;
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 61_000 });
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const offline = await w.next(presenceOf(ada.id), from);
    expect(offline).toMatchObject({ status: "offline", lastSeen: expect.any(Number) });
    // lastSeen persisted: a new watcher sees the same.
    const late = await Session.open(watcher);
    late.send({ type: "watch", users: [ada.id] });
    expect(await late.next(presenceOf(ada.id))).toEqual({
      type: "presence",
      user: ada.id,
      status: "offline",
      lastSeen: offline.lastSeen,
    });
  });

  it("writes nothing for a heartbeat that changes no status, and writes a change", async () => {
    const ada = await login(unique("t"));
    const phone = await Session.open(ada);
    await phone.sync();
    const stub = presenceStub(env, ada.tenant, shardOf(ada.id, SHARDS));
    // Every statement that writes, and every alarm change, the shard makes from here on.
    const writes: string[] = [];
    await runInDurableObject(stub, (_shard: unknown, state) => {
      watchQueries(state.storage.sql, (query) => {
        if (!/^\s*(SELECT|PRAGMA)/i.test(query)) writes.push(query.trim().split(/\s+/).slice(0, 3).join(" "));
      });
      const storage = state.storage as { setAlarm: DurableObjectStorage["setAlarm"] };
      const setAlarm = storage.setAlarm.bind(storage);
      storage.setAlarm = (...args) => {
        writes.push("setAlarm");
        return setAlarm(...args);
      };
    });
    for (let i = 0; i < 10; i++) phone.send({ type: "heartbeat", status: "active" });
    await phone.sync();
    expect(writes).toEqual([]);
    // A change is written (and the counting sees it).
    phone.send({ type: "heartbeat", status: "away" });
    await phone.sync();
    expect(writes.length).toBeGreaterThan(0);
    phone.close();
  });

  it("reports away and dnd across shards, dnd winning over another device's active", async () => {
    const [ada, watcher] = await usersOnTwoShards();
    const w = await Session.open(watcher);
    const laptop = await Session.open(ada);
    w.send({ type: "watch", users: [ada.id] });
    await w.next(presenceOf(ada.id));
    let from = w.frames.length;
    laptop.send({ type: "heartbeat", status: "away" });
    expect(await w.next(presenceOf(ada.id), from)).toMatchObject({ status: "away" });
    from = w.frames.length;
    const phone = await Session.open(ada); // a new session is active
    expect(await w.next(presenceOf(ada.id), from)).toMatchObject({ status: "online" });
    from = w.frames.length;
    laptop.send({ type: "heartbeat", status: "dnd" });
    expect(await w.next(presenceOf(ada.id), from)).toMatchObject({ status: "dnd" });
    phone.close();
  });

  it("bounds a session's status changes and relays them coalesced: 200 alternating heartbeats give a watcher on another shard a handful of frames, converging on the last accepted status", async () => {
    const [ada, watcher] = await usersOnTwoShards();
    const w = await Session.open(watcher);
    const ws = await Session.open(ada);
    await ws.sync();
    w.send({ type: "watch", users: [ada.id] });
    expect(await w.next(presenceOf(ada.id))).toMatchObject({ status: "online" });
    const watched = w.frames.length;

    // Each heartbeat followed by a ping: an error before its pong says that heartbeat was refused.
    const sent = ["dnd", "active"] as const;
    const start = ws.frames.length;
    const began = Date.now();
    for (let i = 0; i < 200; i++) {
      ws.send({ type: "heartbeat", status: sent[i % 2] });
      ws.send({ type: "ping" });
    }
    await ws.next(() => ws.frames.filter((f) => f.type === "pong").length >= 201, start);
    const elapsed = Date.now() - began;
    const accepted: boolean[] = [];
    let refused = false;
    for (const f of ws.frames.slice(start)) {
      if (f.type === "error") {
        expect(f).toMatchObject({ code: "rate_limited", retryAfter: expect.any(Number) });
        expect(f.retryAfter).toBeGreaterThanOrEqual(1);
        refused = true;
      } else if (f.type === "pong") {
        accepted.push(!refused);
        refused = false;
      }
    }
    expect(accepted).toHaveLength(200);
    // Replaying the outcomes: a heartbeat of the status the session has is free (and accepted).
    let status: string = "active";
    let changes = 0;
    for (const [i, ok] of accepted.entries()) {
      if (ok && sent[i % 2] !== status) {
        status = sent[i % 2] as string;
        changes++;
      }
    }
    expect(accepted.filter((ok) => !ok).length).toBeGreaterThan(0);
    // The burst of 5, then one per 2 s of however long the 200 took: the rest were refused.
    expect(changes).toBeGreaterThanOrEqual(DEFAULT_LIMITS.presenceChangeBurst);
    expect(changes).toBeLessThanOrEqual(
      DEFAULT_LIMITS.presenceChangeBurst + Math.ceil(elapsed / DEFAULT_LIMITS.presenceChangeIntervalMs),
    );

    // The watcher converges on the last accepted status, having heard no more than one frame per
    // accepted change (the relays are coalesced: usually far fewer).
    const expected = status === "dnd" ? "dnd" : "online";
    await w.next(() => w.frames.filter(presenceOf(ada.id)).at(-1)?.status === expected, watched);
    const heard = w.frames.slice(watched).filter(presenceOf(ada.id));
    expect(heard.length).toBeLessThanOrEqual(changes);
    // The refused changes changed nothing: the user's shard holds the last accepted status too.
    const late = await Session.open(watcher);
    late.send({ type: "watch", users: [ada.id] });
    expect(await late.next(presenceOf(ada.id))).toMatchObject({ status: expected });

    // A heartbeat that changes nothing is never refused, however many.
    const quiet = ws.frames.length;
    for (let i = 0; i < 50; i++) ws.send({ type: "heartbeat", status });
    await ws.sync();
    expect(ws.frames.slice(quiet).filter((f) => f.type === "error")).toEqual([]);
    console.log(
      `presence burst: ${changes} of 200 changes accepted in ${elapsed} ms; watcher heard ${heard.length} frames`,
    );
  });

  it("limits a watch set to 500 users and refuses malformed frames without closing", async () => {
    const ada = await login(unique("t"));
    const s = await Session.open(ada);
    s.send({ type: "watch", users: Array.from({ length: 501 }, (_, i) => `u_${i}`) });
    expect(await s.next((f) => f.type === "error")).toMatchObject({ code: "too_large" });
    s.send({ type: "heartbeat", status: "sleeping" });
    s.send("{nope");
    await s.next((f) => f.type === "error", s.frames.findIndex((f) => f.type === "error") + 1);
    await s.sync();
    expect(s.closed).toBeNull();
  });

  it("never reveals presence across tenants", async () => {
    const ada = await login(unique("t"));
    const eve = await login(unique("t"));
    const adaSession = await Session.open(ada);
    await adaSession.sync();
    const spy = await Session.open(eve);
    spy.send({ type: "watch", users: [ada.id] });
    // Another tenant's user is indistinguishable from a user never seen.
    expect(await spy.next(presenceOf(ada.id))).toEqual({
      type: "presence",
      user: ada.id,
      status: "offline",
      lastSeen: null,
    });
    const from = spy.frames.length;
    adaSession.send({ type: "heartbeat", status: "dnd" });
    await adaSession.sync();
    await spy.sync();
    expect(spy.frames.slice(from).filter(presenceOf(ada.id))).toEqual([]);
  });
});

describe("activity and read markers", () => {
  it("tells a member's sessions about new events in each of their rooms, with mentions, and counts them", async () => {
    const tenant = unique("t");
    const bob = await login(tenant);
    const ada = await login(tenant);
    const rooms: string[] = [];
    for (let i = 0; i < 3; i++) {
      const room = await json<{ id: string }>(
        api(bob, "POST", "/api/rooms", { name: `r${i}`, members: [ada.id] }),
      );
      rooms.push(room.id);
    }
    const session = await Session.open(ada);
    await session.sync();
    const post = async (room: string, text: string) =>
      (
        await json<{ seq: number }>(
          api(bob, "POST", `/api/rooms/${room}/messages`, { clientId: unique("c"), text }),
        )
      ).seq;
    const last = [
      [await post(rooms[0]!, "one"), await post(rooms[0]!, "two"), await post(rooms[0]!, "three")].at(-1),
      await post(rooms[1]!, `look @<${ada.id}>`),
      [await post(rooms[2]!, "a"), await post(rooms[2]!, "b")].at(-1),
    ];
    for (const [i, room] of rooms.entries()) {
      const notice = await session.next(
        (f) => f.type === "activity" && f.room === room && f.lastSeq === last[i],
      );
      expect(notice.mention).toBe(i === 1);
      // A notice comes once the room list counts its events: a refresh on it shows them.
      const listed = await json<{ id: string; lastSeq: number; unread: number }[]>(
        api(ada, "GET", "/api/rooms"),
      );
      expect(listed.find((r) => r.id === room)).toMatchObject({
        lastSeq: last[i],
        unread: i === 0 ? 3 : i === 1 ? 1 : 2,
      });
      // Coalesced: never more notices than events, and none after the last.
      const forRoom = session.frames.filter((f) => f.type === "activity" && f.room === room);
      expect(forRoom.length).toBeLessThanOrEqual(i === 0 ? 3 : i === 1 ? 1 : 2);
      expect(forRoom.at(-1)?.lastSeq).toBe(last[i]);
    }
    const view = await json<{ id: string; unread: number; mentions: number }[]>(
      api(ada, "GET", "/api/rooms"),
    );
    const byId = new Map(view.map((r) => [r.id, r]));
    expect(rooms.map((r) => [byId.get(r)?.unread, byId.get(r)?.mentions])).toEqual([
      [3, 0],
      [1, 1],
      [2, 0],
    ]);
  });

  it("tells a room's members on the shard of its news once their inbox has it, never for a probe or markers alone", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    let bob = await login(tenant);
    while (shardOf(bob.id, SHARDS) !== shardOf(ada.id, SHARDS)) bob = await login(tenant);
    const [adaSession, bobSession] = [await Session.open(ada), await Session.open(bob)];
    await Promise.all([adaSession.sync(), bobSession.sync()]);
    const shard = presenceStub(env, tenant, shardOf(ada.id, SHARDS));
    const room = unique("r");
    const push = (from: number | null, to: number, parts: Partial<InboxPush>) =>
      inboxPush(tenant, room, from, to, parts);
    // The room's first push: ada a member (bob, on the same shard, is not), three events.
    const snapshot = { user: ada.id, readSeq: 0, accRead: 0, own: [], mentions: [] };
    expect(await shard.inboxApply(push(null, 3, { full: true, snapshots: [snapshot] }))).toMatchObject({
      ok: true,
    });
    expect(await adaSession.next((f) => f.type === "activity")).toEqual({
      type: "activity",
      room,
      lastSeq: 3,
      mention: false,
    });
    // A probe applies nothing, a push of markers alone brings no event: neither is news.
    expect(await shard.inboxApply(push(null, 3, {}))).toMatchObject({ ok: false, have: 3 });
    const markers = [{ user: ada.id, readSeq: 2, accRead: 2 }];
    expect(await shard.inboxApply(push(3, 3, { markers }))).toMatchObject({ ok: true });
    await adaSession.next((f) => f.type === "read" && f.seq === 2);
    // Two events, the second mentioning ada: within the window or after it, one more notice.
    expect(await shard.inboxApply(push(3, 5, { own: [[ada.id, 4]], mentions: [[ada.id, 5]] }))).toMatchObject(
      { ok: true },
    );
    const from = adaSession.frames.findIndex((f) => f.type === "activity") + 1;
    expect(await adaSession.next((f) => f.type === "activity", from)).toEqual({
      type: "activity",
      room,
      lastSeq: 5,
      mention: true,
    });
    await Promise.all([adaSession.sync(), bobSession.sync()]);
    expect(adaSession.frames.filter((f) => f.type === "activity")).toHaveLength(2);
    expect(bobSession.frames.filter((f) => f.type === "activity")).toEqual([]);
    // A room deployed before the pushes carried its news still tells the shard itself.
    await shard.activity(room, 6, [ada.id], []);
    expect(await adaSession.next((f) => f.type === "activity" && f.lastSeq === 6)).toEqual({
      type: "activity",
      room,
      lastSeq: 6,
      mention: false,
    });
  });

  it("pushes a read marker moved on one device to the user's other sessions, never backwards", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const room = await json<{ id: string }>(api(ada, "POST", "/api/rooms", { name: "reads" }));
    for (let i = 0; i < 4; i++)
      await api(ada, "POST", `/api/rooms/${room.id}/messages`, { clientId: `m${i}`, text: `${i}` });
    const laptop = await Session.open(ada);
    const phone = await Session.open(ada);
    await Promise.all([laptop.sync(), phone.sync()]);
    expect((await api(ada, "PUT", `/api/rooms/${room.id}/read`, { seq: 4 })).status).toBe(200);
    for (const s of [laptop, phone])
      expect(await s.next((f) => f.type === "read")).toEqual({ type: "read", room: room.id, seq: 4 });
    // Backwards changes nothing and pushes nothing; the next forward move is the next frame.
    await api(ada, "PUT", `/api/rooms/${room.id}/read`, { seq: 2 });
    await api(ada, "PUT", `/api/rooms/${room.id}/read`, { seq: 5 });
    const from = phone.frames.findIndex((f) => f.type === "read") + 1;
    expect(await phone.next((f) => f.type === "read", from)).toEqual({ type: "read", room: room.id, seq: 5 });
    expect(phone.frames.filter((f) => f.type === "read").map((f) => f.seq)).toEqual([4, 5]);
  });
});
