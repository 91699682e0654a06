/**
 * The SDK when the user's access to a room ends (docs/protocol.md, close codes): removed by an
 * admin, or leaving on another device, a session over any transport stops for good, says why, fails
 * what is left in its outbox, and never connects to that room again. Against the real worker and
 * room objects, through the network seam of sdk-helpers.ts (which counts connection attempts).
 */
import { describe, expect, it } from "vitest";
import {
  CommandError,
  MemoryOutboxStore,
  pollTransport,
  type SessionEnded,
  sseTransport,
  type TransportFactory,
} from "../client/sdk/index.ts";
import { api, createRoom, join, login, type User, unique } from "./helpers.ts";
import { Network, session, until } from "./sdk-helpers.ts";

/** Counts every connection attempt a transport factory makes. */
function counted(factory: TransportFactory): { factory: TransportFactory; attempts: () => number } {
  let attempts = 0;
  return {
    factory: (roomId, after, h) => {
      attempts += 1;
      return factory(roomId, after, h);
    },
    attempts: () => attempts,
  };
}

async function pair(): Promise<{ admin: User; bob: User; roomId: string }> {
  const admin = await login(unique("t"));
  const bob = await login(admin.tenant);
  const roomId = await createRoom(admin);
  await join(bob, roomId);
  return { admin, bob, roomId };
}

/** Each transport, and the reason it can give: a socket's 4403 and SSE's `close` frame name who
 * ended access; a long poll only learns that it is refused (403). */
const transports: [string, (n: Network, u: User) => TransportFactory, SessionEnded["reason"]][] = [
  ["a WebSocket", (n, u) => n.socket(u), "removed"],
  ["SSE", (n, u) => sseTransport(n.conn(u)), "removed"],
  ["long polling", (n, u) => pollTransport(n.conn(u), 2), "revoked"],
];

describe("an SDK session whose user loses access to the room", () => {
  for (const [name, make, reason] of transports) {
    it(`over ${name}: removed by an admin, it ends with "${reason}", fails its outbox and stops connecting`, async () => {
      const { admin, bob, roomId } = await pair();
      const net = new Network();
      const transport = counted(make(net, bob));
      const ended: SessionEnded[] = [];
      const store = new MemoryOutboxStore();
      const b = session(bob, roomId, [transport.factory], {
        conn: net.conn(bob),
        store,
        onEnded: (e) => ended.push(e),
      });
      await b.s.start();
      await until(() => b.s.status.state === "online", "online");
      const removed = await api(admin, "DELETE", `/api/rooms/${roomId}/members/${bob.id}`);
      expect(removed.status).toBe(200);
      await until(() => ended.length > 0, "the session's end");
      expect(ended).toEqual([{ roomId, reason }]);
      expect(b.s.ended).toEqual({ roomId, reason });
      expect(b.s.status.state).toBe("closed");
      // A command issued now is not sent anywhere: it fails at once and leaves no outbox entry.
      const late = b.s.send("after removal");
      await expect(late.acked).rejects.toBeInstanceOf(CommandError);
      expect(await store.list(roomId)).toEqual([]);
      // No reconnect follows: the attempts stay at the one that connected. The sessions here back off
      // 5–40 ms, so 200 ms spans several reconnects that would have been made.
      const attempts = transport.attempts();
      expect(attempts).toBe(1);
      await new Promise((r) => setTimeout(r, 200));
      expect(transport.attempts()).toBe(attempts);
    });
  }

  it('leaving on another device ends a socket session with "left"', async () => {
    const { bob, roomId } = await pair();
    const net = new Network();
    const ended: SessionEnded[] = [];
    const b = session(bob, roomId, [net.socket(bob)], { conn: net.conn(bob), onEnded: (e) => ended.push(e) });
    await b.s.start();
    await until(() => b.s.status.state === "online", "online");
    expect((await api(bob, "POST", `/api/rooms/${roomId}/leave`)).status).toBe(200);
    await until(() => ended.length > 0, "the session's end");
    expect(ended).toEqual([{ roomId, reason: "left" }]);
    // Its own member_leave reached it before the close.
    expect(b.events.at(-1)).toMatchObject({ kind: "member_leave", user: { id: bob.id } });
  });

  it("commands still in the outbox when access ends are failed, not resent", async () => {
    const { admin, bob, roomId } = await pair();
    const net = new Network();
    const store = new MemoryOutboxStore();
    const ended: SessionEnded[] = [];
    const b = session(bob, roomId, [net.socket(bob)], {
      conn: net.conn(bob),
      store,
      onEnded: (e) => ended.push(e),
    });
    await b.s.start();
    await until(() => b.s.status.state === "online", "online");
    net.cut(); // offline: the next command waits in the outbox
    const queued = b.s.send("written while offline");
    await until(() => b.s.status.queued === 1, "queued");
    expect((await api(admin, "DELETE", `/api/rooms/${roomId}/members/${bob.id}`)).status).toBe(200);
    net.down = false; // back: the reconnect is refused (403), which ends the session
    await until(() => ended.length > 0, "the session's end");
    expect(ended).toEqual([{ roomId, reason: "revoked" }]);
    await expect(queued.acked).rejects.toMatchObject({ code: "forbidden" });
    expect(await store.list(roomId)).toEqual([]);
    const log = await api(admin, "GET", `/api/rooms/${roomId}/messages?after=0`);
    expect(JSON.stringify(await log.json())).not.toContain("written while offline");
  });
});
