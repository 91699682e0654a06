/**
 * Web Push end to end, against the real app (`npm start`'s server, with its queues and consumers)
 * and a real push service stand-in (`web-push-testing`, test/push/mock-push-service.ts), which
 * checks each request's VAPID signature and decrypts its payload per RFC 8291.
 *
 * "Nothing was sent" is checked after a barrier: once a later message that must notify the same
 * user has arrived, the user's notifications are exactly the ones expected. A message sent over
 * HTTP is answered after its room's push to the inbox, where who is told is decided and the jobs
 * are queued (durable-objects/notify-store.ts), so a notification it called for is queued before
 * the barrier's message is even sent.
 *
 * The server runs with a 2 s collapse window, no focus grace and retries without backoff
 * (test/browser/server.ts).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";
import {
  type MockPushService,
  type MockSubscription,
  startMockPushService,
} from "../../bench/push-service.ts";
import type { PushNotice, PushSubscriptionView } from "../../protocol/notify.ts";
import { Api, type User } from "../../scripts/chaos/api.ts";
import type {} from "../browser/global-setup.ts";

/** How long a test waits for something the queue delivers before failing. */
const DELIVERY_MS = 30_000;

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = DELIVERY_MS): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("notifications through a push service", () => {
  const base = inject("baseUrl");
  const api = new Api(base);
  const tenant = `notify${Date.now().toString(36)}`;
  const user = (name: string): User => ({ email: `${name}@${tenant}.test`, name, tenant, token: "", id: "" });
  const admin = user("admin");
  const bob = user("bob");
  let push: MockPushService;
  let publicKey = "";
  const sockets: WebSocket[] = [];
  const figures: number[] = [];

  /** A user signed in with one device subscribed; what that device has received so far is `seen`. */
  interface Device {
    user: User;
    sub: MockSubscription;
    seen: number;
  }

  const device = async (name: string): Promise<Device> => {
    const u = user(name);
    await api.login(u);
    const sub = await push.subscribe(publicKey);
    const res = await api.request(u, "POST", "/api/push/subscriptions", {
      endpoint: sub.url,
      keys: sub.keys,
    });
    expect(res.status).toBe(201);
    return { user: u, sub, seen: 0 };
  };

  /** A private room of bob's with these members. */
  const room = async (name: string, ...members: User[]): Promise<string> => {
    const res = await api.request(bob, "POST", "/api/rooms", {
      name,
      kind: "private",
      members: members.map((m) => m.id),
    });
    expect(res.status).toBe(201);
    return (res.body as { id: string }).id;
  };

  const say = async (roomId: string, text: string): Promise<{ seq: number; at: number }> => {
    const res = await api.request(bob, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: crypto.randomUUID(),
      text,
    });
    expect(res.status).toBe(201);
    return { seq: (res.body as { seq: number }).seq, at: performance.now() };
  };

  /** Waits for the device's next notifications until one is for (room, seq); they must be exactly
   * that one: nothing else arrived since the last check. */
  const expectOnly = async (d: Device, roomId: string, seq: number, at?: number): Promise<PushNotice> => {
    const fresh = await until(`a notification for ${roomId}#${seq}`, async () => {
      const all = (await push.received(d.sub.clientHash)) as PushNotice[];
      const mine = all.slice(d.seen);
      return mine.some((n) => n.room === roomId && n.seq === seq) ? mine : undefined;
    });
    if (at !== undefined) figures.push(performance.now() - at);
    d.seen += fresh.length;
    expect(fresh.map((n) => [n.room, n.seq])).toEqual([[roomId, seq]]);
    return fresh[0] as PushNotice;
  };

  /** A presence session of the user, ready once the server answered a ping. */
  const session = async (u: User): Promise<{ send(frame: unknown): Promise<void>; ws: WebSocket }> => {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/api/presence/ws`, {
      headers: { "Cf-Access-Jwt-Assertion": u.token },
    });
    sockets.push(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    /** Sends a frame, then a ping, and resolves at the pong: the frame was handled. */
    const send = async (frame: unknown) => {
      const pong = new Promise<void>((resolve) => {
        const onMessage = (data: WebSocket.RawData) => {
          if ((JSON.parse(String(data)) as { type: string }).type !== "pong") return;
          ws.off("message", onMessage);
          resolve();
        };
        ws.on("message", onMessage);
      });
      ws.send(JSON.stringify(frame));
      ws.send(JSON.stringify({ type: "ping" }));
      await pong;
    };
    await send({ type: "ping" });
    return { send, ws };
  };

  beforeAll(async () => {
    push = await startMockPushService();
    await api.login(admin); // the tenant's first sign-in: its owner
    await api.login(bob);
    const key = await api.request(bob, "GET", "/api/push/key");
    expect(key.status).toBe(200);
    publicKey = (key.body as { publicKey: string }).publicKey;
  });

  afterAll(async () => {
    for (const ws of sockets) ws.terminate();
    await push?.close();
    const sorted = [...figures].sort((a, b) => a - b);
    const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]?.toFixed(0);
    console.info(
      `notification latency (HTTP answer → push service), n=${sorted.length}: p50 ${at(0.5)} ms, max ${at(1)} ms`,
    );
  });

  it("tells an offline user of a mention and a direct message, once each, with room, author and preview", async () => {
    const ada = await device("ada");
    const r = await room("plans", ada.user);
    const m = await say(r, `lunch at noon, @<${ada.user.id}>?`);
    const got = await expectOnly(ada, r, m.seq, m.at);
    expect(got).toMatchObject({
      room: r,
      roomName: "plans",
      reason: "mention",
      author: { id: bob.id, name: "bob" },
      count: 1,
    });
    expect(got.preview).toContain("lunch at noon");
    // A message that does not mention her notifies nothing by default; a direct message does.
    await say(r, "anyone else?");
    const dm = await api.request(bob, "POST", "/api/rooms", { kind: "dm", members: [ada.user.id] });
    const d = await say((dm.body as { id: string }).id, "psst");
    expect((await expectOnly(ada, (dm.body as { id: string }).id, d.seq, d.at)).reason).toBe("dm");
  });

  it("sends nothing for a muted room, and again once unmuted", async () => {
    const cy = await device("cy");
    const r = await room("muted", cy.user);
    const mute = await api.request(cy.user, "PUT", `/api/notifications/rooms/${r}`, {
      muteUntil: Date.now() + 3_600_000,
    });
    expect(mute.status).toBe(200);
    await say(r, `@<${cy.user.id}> one`);
    await api.request(cy.user, "PUT", `/api/notifications/rooms/${r}`, { muteUntil: null });
    const m = await say(r, `@<${cy.user.id}> two`);
    expect((await expectOnly(cy, r, m.seq, m.at)).count).toBe(1);
  });

  it("sends nothing while the user is in do-not-disturb, or has the room on screen", async () => {
    const di = await device("di");
    const r = await room("focus", di.user);
    const s = await session(di.user);
    await s.send({ type: "heartbeat", status: "dnd" });
    await say(r, `@<${di.user.id}> while dnd`);
    await s.send({ type: "heartbeat", status: "active" });
    await s.send({ type: "focus", room: r });
    await say(r, `@<${di.user.id}> while looking`);
    await s.send({ type: "focus", room: null });
    const m = await say(r, `@<${di.user.id}> after`);
    expect((await expectOnly(di, r, m.seq, m.at)).count).toBe(1);
  });

  it("sends nothing of a room the user was removed from", async () => {
    const ed = await device("ed");
    // The admin's room, so that the admin can remove him.
    const made = await api.request(admin, "POST", "/api/rooms", {
      name: "removed",
      kind: "private",
      members: [bob.id, ed.user.id],
    });
    const gone = (made.body as { id: string }).id;
    const still = await room("still", ed.user);
    expect((await api.request(admin, "DELETE", `/api/rooms/${gone}/members/${ed.user.id}`)).status).toBe(200);
    await say(gone, `@<${ed.user.id}> can you see this?`);
    const m = await say(still, `@<${ed.user.id}> this one`);
    await expectOnly(ed, still, m.seq, m.at);
  });

  it("collapses a burst into one notification per room per window, with a count", async () => {
    const fi = await device("fi");
    const r = await room("burst", fi.user);
    const first = await say(r, `@<${fi.user.id}> 1`);
    expect((await expectOnly(fi, r, first.seq)).count).toBe(1);
    await say(r, `@<${fi.user.id}> 2`);
    const third = await say(r, `@<${fi.user.id}> 3`);
    // The rest of the window's messages, at its end, as one.
    const rest = await expectOnly(fi, r, third.seq);
    expect(rest.count).toBe(2);
    expect(rest.preview).toBe(`@<${fi.user.id}> 3`);
  });

  it("notifies every message of a room set to all", async () => {
    const gu = await device("gu");
    const r = await room("all", gu.user);
    const prefs = await api.request(gu.user, "PUT", `/api/notifications/rooms/${r}`, { mode: "all" });
    expect(prefs.body).toMatchObject({ rooms: { [r]: { mode: "all", muteUntil: null } } });
    const m = await say(r, "no mention here");
    expect((await expectOnly(gu, r, m.seq, m.at)).reason).toBe("message");
  });

  it("drops a subscription its push service says is gone (410)", async () => {
    const ha = await device("ha");
    const r = await room("expired", ha.user);
    await push.expire(ha.sub.clientHash);
    await say(r, `@<${ha.user.id}> hello?`);
    await until("the subscription to be dropped", async () => {
      const res = await api.request(ha.user, "GET", "/api/push/subscriptions");
      return (res.body as { subscriptions: unknown[] }).subscriptions.length === 0 ? true : undefined;
    });
  });

  it("retries a push service that keeps failing, then gives the notification up to the dead-letter queue", async () => {
    let requests = 0;
    const failing: Server = createServer((req, res) => {
      requests++;
      req.resume();
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => failing.listen(0, "127.0.0.1", r));
    try {
      const io = user("io");
      await api.login(io);
      const stray = await push.subscribe(publicKey);
      const endpoint = `http://127.0.0.1:${(failing.address() as AddressInfo).port}/push/io`;
      expect(
        (await api.request(io, "POST", "/api/push/subscriptions", { endpoint, keys: stray.keys })).status,
      ).toBe(201);
      const r = await room("failing", io);
      await say(r, `@<${io.id}> are you there?`);
      const sub = await until("the failure to be counted", async () => {
        const res = await api.request(io, "GET", "/api/push/subscriptions");
        const [s] = (res.body as { subscriptions: PushSubscriptionView[] }).subscriptions;
        return s && s.failures > 0 ? s : undefined;
      });
      expect(sub.failures).toBe(1);
      // The first try and wrangler.toml's max_retries (8) more.
      expect(requests).toBe(9);
    } finally {
      await new Promise((r) => failing.close(r));
    }
  });
});
