/**
 * Notifications through the public surface (docs/protocol.md, "Notifications"): preferences and
 * push subscriptions over HTTP, their validation (a refused request changes nothing), their sync
 * to every device (`notify_prefs`), and who is told of what. What the presence shard hands to the
 * notify queue is observed by a spy on the queue binding, so no job reaches a push service here;
 * delivery itself, through a real push service stand-in, is test/system/notify.test.ts.
 */
import { env } from "cloudflare:workers";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { NotifyJob } from "../durable-objects/notify-store.ts";
import type { NotifyPrefs, PushSubscriptionView } from "../protocol/notify.ts";
import { FrameSocket } from "./frame-socket.ts";
import { api, json, login, type User, unique } from "./helpers.ts";

type Frame = Record<string, unknown> & { type: string };

class Session extends FrameSocket<Frame> {
  private constructor(ws: WebSocket) {
    super(ws, (text) => JSON.parse(text) as Frame);
  }
  static async open(user: User): Promise<Session> {
    return new Session(await FrameSocket.socket("/api/presence/ws", user.token));
  }
  /** Sends a frame and waits for the pong of a ping sent after it: the frame was handled. */
  async handled(frame: unknown): Promise<void> {
    const from = this.frames.length;
    this.send(frame);
    this.send({ type: "ping" });
    await this.find((f) => f.type === "pong", "pong", from, 10_000);
  }
}

/** A subscription body as a browser's `PushSubscription.toJSON()` gives it. */
function subscription(n: number | string = unique("d")) {
  return {
    endpoint: `https://push.parley.test/send/${n}`,
    keys: { p256dh: `B${"A".repeat(86)}`, auth: "A".repeat(22) },
  };
}

let jobs: NotifyJob[] = [];

beforeEach(() => {
  jobs = [];
  vi.spyOn(env.NOTIFY, "sendBatch").mockImplementation(async (messages) => {
    for (const m of messages) jobs.push(m.body as NotifyJob);
    return { metadata: { metrics: { backlogCount: 0, backlogBytes: 0 } } } as QueueSendBatchResponse;
  });
});

afterEach(() => {
  vi.restoreAllMocks();
});

async function people(n: number): Promise<User[]> {
  const tenant = unique("t");
  const out: User[] = [];
  for (let i = 0; i < n; i++) out.push(await login(tenant));
  return out;
}

async function subscribe(user: User, body: unknown = subscription()): Promise<Response> {
  return api(user, "POST", "/api/push/subscriptions", body);
}

async function listed(user: User): Promise<PushSubscriptionView[]> {
  return (await json<{ subscriptions: PushSubscriptionView[] }>(api(user, "GET", "/api/push/subscriptions")))
    .subscriptions;
}

async function privateRoom(owner: User, ...members: User[]): Promise<string> {
  const res = await api(owner, "POST", "/api/rooms", {
    name: unique("room"),
    kind: "private",
    members: members.map((m) => m.id),
  });
  expect(res.status).toBe(201);
  return (await json<{ id: string }>(res)).id;
}

async function say(user: User, roomId: string, text: string): Promise<number> {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("c"), text });
  expect(res.status).toBe(201);
  return (await json<{ seq: number }>(res)).seq;
}

/** The jobs queued for a user so far, as [room, seq, reason, count]. */
function told(user: User): [string, number, string, number][] {
  return jobs
    .filter((j) => j.userId === user.id)
    .map((j) => [j.notice.room, j.notice.seq, j.notice.reason, j.notice.count]);
}

describe("push subscriptions", () => {
  it("serves the application server key: an uncompressed P-256 point", async () => {
    const [ada] = (await people(1)) as [User];
    const { publicKey } = await json<{ publicKey: string }>(api(ada, "GET", "/api/push/key"));
    const bytes = Uint8Array.from(atob(publicKey.replace(/-/g, "+").replace(/_/g, "/")), (c) =>
      c.charCodeAt(0),
    );
    expect(bytes.length).toBe(65);
    expect(bytes[0]).toBe(4);
  });

  it("refuses a subscription that is not https or whose keys are not RFC 8291's, and keeps nothing", async () => {
    const [ada] = (await people(1)) as [User];
    const good = subscription();
    const bad: unknown[] = [
      { ...good, endpoint: "http://push.parley.test/x" },
      { ...good, endpoint: "ftp://push.parley.test/x" },
      { ...good, endpoint: "not a url" },
      { ...good, endpoint: `https://push.parley.test/${"x".repeat(1100)}` },
      { ...good, endpoint: "https://user:pw@push.parley.test/x" },
      { ...good, keys: { ...good.keys, p256dh: "AAAA" } },
      { ...good, keys: { ...good.keys, auth: "A".repeat(30) } },
      { ...good, keys: { ...good.keys, auth: "not base64!" } },
      { endpoint: good.endpoint },
    ];
    for (const body of bad) {
      const res = await subscribe(ada, body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect((await json<{ error: { code: string } }>(res)).error.code).toBe("bad_request");
    }
    expect((await subscribe(ada, "not json")).status).toBe(400);
    expect(await listed(ada)).toEqual([]);
  });

  it("registers a device once, lists it without its endpoint or keys, and removes it for its owner only", async () => {
    const [ada, bob] = (await people(2)) as [User, User];
    const body = subscription("ada-laptop");
    const first = await subscribe(ada, body);
    expect(first.status).toBe(201);
    const { id } = await json<{ id: string }>(first);
    // The same device again: the same subscription.
    const again = await subscribe(ada, body);
    expect(again.status).toBe(200);
    expect((await json<{ id: string }>(again)).id).toBe(id);
    const list = await listed(ada);
    expect(list).toEqual([
      {
        id,
        service: "https://push.parley.test",
        userAgent: null,
        createdAt: expect.any(Number),
        failures: 0,
      },
    ]);
    expect(JSON.stringify(list)).not.toContain("ada-laptop");
    expect(await listed(bob)).toEqual([]);
    expect((await api(bob, "DELETE", `/api/push/subscriptions/${id}`)).status).toBe(404);
    expect((await api(ada, "DELETE", `/api/push/subscriptions/${id}`)).status).toBe(200);
    expect((await api(ada, "DELETE", `/api/push/subscriptions/${id}`)).status).toBe(404);
    expect(await listed(ada)).toEqual([]);
  });

  it("keeps at most 20 devices per user: a new one replaces the oldest", async () => {
    const [ada] = (await people(1)) as [User];
    const ids: string[] = [];
    for (let i = 0; i < 21; i++)
      ids.push((await json<{ id: string }>(subscribe(ada, subscription(`d${i}`)))).id);
    const now = (await listed(ada)).map((s) => s.id);
    expect(now).toHaveLength(20);
    expect(now).not.toContain(ids[0]);
    expect(now).toContain(ids[20]);
  });

  it("sends a test notification to each of the user's devices", async () => {
    const [ada] = (await people(1)) as [User];
    await subscribe(ada, subscription("one"));
    await subscribe(ada, subscription("two"));
    const res = await api(ada, "POST", "/api/push/test");
    expect(res.status).toBe(202);
    expect(await json(res)).toEqual({ devices: 2 });
    expect(jobs.map((j) => [j.subscription.endpoint, j.notice.reason])).toEqual([
      ["https://push.parley.test/send/one", "test"],
      ["https://push.parley.test/send/two", "test"],
    ]);
  });
});

describe("notification preferences", () => {
  it("start at the default, change on request, and reach every device of the user", async () => {
    const [ada] = (await people(1)) as [User];
    expect(await json(api(ada, "GET", "/api/notifications"))).toEqual({
      default: "mentions",
      pausedUntil: null,
      rooms: {},
    } satisfies NotifyPrefs);
    const phone = await Session.open(ada);
    await phone.handled({ type: "ping" });
    const from = phone.frames.length;
    const until = Date.now() + 3_600_000;
    const prefs = await json<NotifyPrefs>(
      api(ada, "PUT", "/api/notifications", { default: "all", pausedUntil: until }),
    );
    expect(prefs).toEqual({ default: "all", pausedUntil: until, rooms: {} });
    const frame = await phone.find((f) => f.type === "notify_prefs", "notify_prefs", from, 10_000);
    expect(frame.prefs).toEqual(prefs);
    const room = await json<NotifyPrefs>(
      api(ada, "PUT", "/api/notifications/rooms/r_abc", { mode: "nothing" }),
    );
    expect(room.rooms).toEqual({ r_abc: { mode: "nothing", muteUntil: null } });
    // Following the default again, unmuted: the room has no preference of its own.
    const cleared = await json<NotifyPrefs>(
      api(ada, "PUT", "/api/notifications/rooms/r_abc", { mode: null }),
    );
    expect(cleared.rooms).toEqual({});
    phone.close();
  });

  it("refuses a bad change with 400 and changes nothing", async () => {
    const [ada] = (await people(1)) as [User];
    await api(ada, "PUT", "/api/notifications", { default: "nothing" });
    const before = await json(api(ada, "GET", "/api/notifications"));
    const bad: [string, unknown][] = [
      ["/api/notifications", { default: "loud" }],
      ["/api/notifications", { pausedUntil: "tomorrow" }],
      ["/api/notifications", { pausedUntil: Date.now() + 400 * 86_400_000 }],
      ["/api/notifications", {}],
      ["/api/notifications", { default: "all", extra: 1 }],
      ["/api/notifications/rooms/r_abc", { mode: "loud" }],
      ["/api/notifications/rooms/r_abc", { muteUntil: -1 }],
      ["/api/notifications/rooms/r_abc", {}],
      ["/api/notifications/rooms/not%20an%20id", { mode: "all" }],
    ];
    for (const [path, body] of bad) expect((await api(ada, "PUT", path, body)).status, path).toBe(400);
    expect(await json(api(ada, "GET", "/api/notifications"))).toEqual(before);
  });
});

describe("who is told", () => {
  it("a subscribed member mentioned or written to directly, never the author, never for a plain message", async () => {
    const [bob, ada, cy] = (await people(3)) as [User, User, User];
    await subscribe(ada);
    await subscribe(bob);
    const room = await privateRoom(bob, ada, cy);
    const plain = await say(bob, room, "hello all");
    const mention = await say(bob, room, `ping @<${ada.id}> and @<${bob.id}>`);
    const dm = await json<{ id: string }>(api(bob, "POST", "/api/rooms", { kind: "dm", members: [ada.id] }));
    const direct = await say(bob, dm.id, "just you");
    expect(told(ada)).toEqual([
      [room, mention, "mention", 1],
      [dm.id, direct, "dm", 1],
    ]);
    expect(told(bob)).toEqual([]);
    expect(plain).toBeLessThan(mention);
    // Previews by default: who wrote, the room's name, the start of the text.
    expect(jobs[0]?.notice).toMatchObject({
      author: { id: bob.id },
      preview: `ping @<${ada.id}> and @<${bob.id}>`,
    });
  });

  it("followers of a thread when someone replies in it", async () => {
    const [bob, ada, cy] = (await people(3)) as [User, User, User];
    await subscribe(ada);
    await subscribe(cy);
    const room = await privateRoom(bob, ada, cy);
    const root = await say(ada, room, "a question");
    const res = await api(bob, "POST", `/api/rooms/${room}/messages`, {
      clientId: unique("c"),
      text: "an answer",
      threadRoot: root,
    });
    const reply = (await json<{ seq: number }>(res)).seq;
    expect(told(ada)).toEqual([[room, reply, "thread", 1]]);
    expect(told(cy)).toEqual([]);
  });

  it("nobody who paused, muted the room, set it to nothing, is in dnd, or is looking at it", async () => {
    const [bob, ada] = (await people(2)) as [User, User];
    await subscribe(ada);
    const room = await privateRoom(bob, ada);
    const mention = () => say(bob, room, `@<${ada.id}>`);
    const later = Date.now() + 3_600_000;

    await api(ada, "PUT", "/api/notifications", { pausedUntil: later });
    await mention();
    await api(ada, "PUT", "/api/notifications", { pausedUntil: null });

    await api(ada, "PUT", `/api/notifications/rooms/${room}`, { muteUntil: later });
    await mention();
    await api(ada, "PUT", `/api/notifications/rooms/${room}`, { muteUntil: null, mode: "nothing" });
    await mention();
    await api(ada, "PUT", `/api/notifications/rooms/${room}`, { mode: null });

    const session = await Session.open(ada);
    await session.handled({ type: "heartbeat", status: "dnd" });
    await mention();
    await session.handled({ type: "heartbeat", status: "active" });
    await session.handled({ type: "focus", room });
    await mention();
    await session.handled({ type: "focus", room: null });
    expect(told(ada)).toEqual([]);
    // Within the grace after looking away (5 s by default) it still counts as looked at.
    await mention();
    expect(told(ada)).toEqual([]);
    session.close();
  });

  it("a member removed from the room no more", async () => {
    const [bob, ada] = (await people(2)) as [User, User];
    await subscribe(ada);
    const room = await privateRoom(bob, ada);
    expect((await api(bob, "DELETE", `/api/rooms/${room}/members/${ada.id}`)).status).toBe(200);
    await say(bob, room, `@<${ada.id}> still there?`);
    expect(told(ada)).toEqual([]);
  });

  it("one notification per room per window: the rest at its end, with a count", async () => {
    const [bob, ada] = (await people(2)) as [User, User];
    await subscribe(ada);
    const room = await privateRoom(bob, ada);
    const first = await say(bob, room, `@<${ada.id}> 1`);
    await say(bob, room, `@<${ada.id}> 2`);
    await say(bob, room, "not a mention");
    expect(told(ada)).toEqual([[room, first, "mention", 1]]);
  });

  it("every message of a room set to all; no room, author or text once the tenant turns previews off", async () => {
    const [bob, ada, cy] = (await people(3)) as [User, User, User];
    await subscribe(ada);
    const room = await privateRoom(bob, ada);
    await api(ada, "PUT", `/api/notifications/rooms/${room}`, { mode: "all" });
    const seq = await say(bob, room, "plain words");
    expect(told(ada)).toEqual([[room, seq, "message", 1]]);
    expect(jobs[0]?.notice).toMatchObject({ preview: "plain words", author: { id: bob.id } });

    // Only admins decide, and only with a boolean; the refused requests change nothing.
    expect((await api(cy, "PATCH", "/api/tenant", { notificationPreviews: false })).status).toBe(403);
    expect((await api(bob, "PATCH", "/api/tenant", { notificationPreviews: "no" })).status).toBe(400);
    expect(await json(api(cy, "GET", "/api/tenant"))).toMatchObject({ notificationPreviews: true });
    const off = await api(bob, "PATCH", "/api/tenant", { notificationPreviews: false });
    expect(off.status).toBe(200);
    expect(await json(api(cy, "GET", "/api/tenant"))).toMatchObject({ notificationPreviews: false });
    const other = await privateRoom(bob, ada);
    await api(ada, "PUT", `/api/notifications/rooms/${other}`, { mode: "all" });
    const next = await say(bob, other, "secret words");
    const last = jobs[jobs.length - 1];
    expect(last?.notice).toEqual({
      room: other,
      roomName: null,
      seq: next,
      reason: "message",
      author: null,
      preview: null,
      count: 1,
    });
    expect(JSON.stringify(jobs.slice(1))).not.toContain("secret");
  });
});
