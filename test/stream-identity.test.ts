/**
 * A request that opens a stream uses the identity its token was given within the last minute
 * (docs/architecture.md, decision 14), while every other request reads the directory at least
 * every 2 s; what can change meanwhile is enforced by the objects the stream reaches.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { limitsOf } from "../config/limits.ts";
import { presenceStub, shardOf } from "../durable-objects/presence.ts";
import { IDENTITY_MEMORY_MS, STREAM_IDENTITY_MEMORY_MS } from "../worker/auth/identity.ts";
import { roomStub } from "../worker/stubs.ts";
import { FrameSocket } from "./frame-socket.ts";
import {
  api,
  authHeaders,
  Client,
  createRoom,
  fetchWorker,
  join,
  json,
  login,
  type User,
  unique,
} from "./helpers.ts";

afterEach(() => {
  vi.useRealTimers();
});

/** Moves this isolate's clock (the worker's and the objects') `ms` ahead. */
function later(ms: number): void {
  vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + ms });
}

/** Renames a person in the directory the way another isolate (or a script) would: this isolate is
 * not told. */
async function renameElsewhere(user: User, name: string): Promise<void> {
  await env.DB.prepare("UPDATE users SET name = ? WHERE id = ?").bind(name, user.id).run();
}

/** The author name of a message sent over a new socket: the name of the identity it opened with. */
async function nameOnNewSocket(user: User, roomId: string): Promise<string> {
  const socket = await Client.open(user, roomId);
  try {
    await socket.ready();
    const seq = await socket.sendMessage(unique("c"), "who am I");
    const page = await json<{ events: { seq: number; author: { name: string } }[] }>(
      api(user, "GET", `/api/rooms/${roomId}/messages?after=${seq - 1}&limit=1`),
    );
    const event = page.events.find((e) => e.seq === seq);
    if (!event) throw new Error(`message ${seq} not found`);
    return event.author.name;
  } finally {
    socket.close();
  }
}

async function setup() {
  const tenant = unique("t");
  const owner = await login(tenant, "Owner");
  const ada = await login(tenant, "Ada");
  const roomId = await createRoom(owner);
  await join(ada, roomId);
  return { tenant, owner, ada, roomId };
}

describe("the identity a stream opens with", () => {
  it("is the token's, read from the directory within the last minute; other requests read it every 2 s", async () => {
    const { ada, roomId } = await setup();
    expect((await json<{ user: { name: string } }>(api(ada, "GET", "/api/me"))).user.name).toBe("Ada");
    await renameElsewhere(ada, "Ada B");
    later(IDENTITY_MEMORY_MS + 1);
    // The socket opens with what her token was given a moment ago, without reading the directory...
    expect(await nameOnNewSocket(ada, roomId)).toBe("Ada");
    // ...while any other request reads it again after 2 s.
    expect((await json<{ user: { name: string } }>(api(ada, "GET", "/api/me"))).user.name).toBe("Ada B");
    await renameElsewhere(ada, "Ada C");
    // A minute after her token's identity was last read, a stream reads the directory too.
    later(STREAM_IDENTITY_MEMORY_MS + 1);
    expect(await nameOnNewSocket(ada, roomId)).toBe("Ada C");
  });

  it("is read again at once after a change made through this isolate", async () => {
    const { owner, ada, roomId } = await setup();
    expect((await api(ada, "GET", "/api/me")).status).toBe(200);
    await renameElsewhere(ada, "Ada B");
    // A role change through this isolate forgets her: the next stream reads the directory.
    expect((await api(owner, "PATCH", `/api/users/${ada.id}`, { role: "admin" })).status).toBe(200);
    expect(await nameOnNewSocket(ada, roomId)).toBe("Ada B");
  });

  it("cannot open a deactivated person's streams: the room and presence shard refuse them", async () => {
    const { tenant, ada, roomId } = await setup();
    const head = (
      await json<{ events: { seq: number }[] }>(api(ada, "GET", `/api/rooms/${roomId}/messages?after=0`))
    ).events.length;
    // Deactivated elsewhere: the directory and the objects know, this isolate's memory does not.
    await env.DB.prepare("UPDATE users SET active = 0 WHERE id = ?").bind(ada.id).run();
    await roomStub(env, tenant, roomId).endUser(ada.id);
    await presenceStub(env, tenant, shardOf(ada.id, limitsOf(env).presenceShards)).endUser(ada.id);
    expect((await Client.upgrade(ada, roomId)).status).toBe(403);
    expect((await FrameSocket.request("/api/presence/ws", ada.token)).status).toBe(403);
    const sse = await fetchWorker(`/api/rooms/${roomId}/events?after=0`, { headers: authHeaders(ada.token) });
    expect(sse.status).toBe(403);
    expect((await api(ada, "GET", `/api/rooms/${roomId}/poll?after=${head}&timeout=0`)).status).toBe(403);
    // Every other request reads the directory within 2 s and is refused there.
    later(IDENTITY_MEMORY_MS + 1);
    expect((await api(ada, "GET", "/api/me")).status).toBe(403);
  });
});
