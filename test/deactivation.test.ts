/**
 * Deactivation through the public surface (docs/architecture.md, decision 11): an admin
 * deactivates a person who holds a room socket, a presence socket, an SSE stream, a waiting long
 * poll, a bot token they created and a push subscription; every one of them ends, every request of
 * theirs is refused after, their messages stay, and reactivation lets them sign in again without
 * restoring a session.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { PRESENCE_IDENTITY_HEADER, presenceStub, shardOf } from "../durable-objects/presence.ts";
import { encodeIdentity, IDENTITY_HEADER } from "../durable-objects/room-streams.ts";
import { CLOSE } from "../protocol/index.ts";
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

class Presence extends FrameSocket<{ type: string }> {
  static async open(user: User): Promise<Presence> {
    return new Presence(await FrameSocket.socket("/api/presence/ws", user.token), (t) => JSON.parse(t));
  }
}

async function setup() {
  const tenant = unique("t");
  const owner = await login(tenant);
  const ada = await login(tenant);
  const roomId = await createRoom(owner);
  await join(ada, roomId);
  return { tenant, owner, ada, roomId };
}

describe("deactivating a person", () => {
  it("ends their sockets, stream, poll, tokens and devices at once, and refuses them after", async () => {
    const { owner, ada, roomId } = await setup();
    // Ada is an admin, so she can have made a bot token.
    expect((await api(owner, "PATCH", `/api/users/${ada.id}`, { role: "admin" })).status).toBe(200);
    const sent = await api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: "a1", text: "before" });
    expect(sent.status).toBe(201);
    const bot = await json<{ token: string; userId: string }>(
      api(ada, "POST", "/api/tokens", { name: "ci" }),
    );
    await api(owner, "POST", `/api/rooms/${roomId}/members`, { userId: bot.userId });
    const botSocket = await Client.open({ token: bot.token }, roomId);
    await botSocket.ready();
    expect(
      (
        await api(ada, "POST", "/api/push/subscriptions", {
          endpoint: "https://push.parley.test/ada",
          keys: { p256dh: `B${"A".repeat(86)}`, auth: "A".repeat(22) },
        })
      ).status,
    ).toBe(201);
    const socket = await Client.open(ada, roomId);
    await socket.ready();
    const presence = await Presence.open(ada);
    const sse = await fetchWorker(`/api/rooms/${roomId}/events?after=0`, { headers: authHeaders(ada.token) });
    expect(sse.status).toBe(200);
    const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
    const head = (
      await json<{ events: { seq: number }[] }>(api(ada, "GET", `/api/rooms/${roomId}/messages?after=0`))
    ).events.length;
    // Waiting: nothing after the head yet.
    const poll = api(ada, "GET", `/api/rooms/${roomId}/poll?after=${head}&timeout=25`);

    // Not by a member, not by herself.
    expect((await api(bot, "POST", `/api/users/${ada.id}/deactivate`)).status).toBe(403);
    expect((await api(ada, "POST", `/api/users/${ada.id}/deactivate`)).status).toBe(403);
    const res = await api(owner, "POST", `/api/users/${ada.id}/deactivate`);
    expect(res.status).toBe(200);
    expect(await json(res)).toMatchObject({ user: { id: ada.id, active: false }, rooms: 1 });

    await socket.until((c) => c.closed !== null, "the room socket to close");
    expect(socket.closed).toEqual({ code: CLOSE.deactivated.code, reason: CLOSE.deactivated.reason });
    await presence.until((p) => p.closed !== null, "the presence socket to close");
    expect(presence.closed).toEqual({ code: CLOSE.deactivated.code, reason: CLOSE.deactivated.reason });
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain('"reason":"deactivated"');
    // Answered at once, not at its 25 s timeout.
    expect((await poll).status).toBe(403);
    // Her bot: revoked, and out of the room.
    await botSocket.until((c) => c.closed !== null, "the bot's socket to close");
    expect((await api(bot, "GET", "/api/me")).status).toBe(401);

    // Refused everywhere from now on, sockets included.
    expect((await api(ada, "GET", "/api/me")).status).toBe(403);
    expect(
      (await api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: "a2", text: "after" })).status,
    ).toBe(403);
    expect(
      (
        await fetchWorker("/api/presence/ws", {
          headers: { ...authHeaders(ada.token), upgrade: "websocket" },
        })
      ).status,
    ).toBe(403);
    // Her messages stay.
    const history = await json<{ events: { kind: string; text?: string }[] }>(
      api(owner, "GET", `/api/rooms/${roomId}/messages?after=0`),
    );
    expect(history.events.filter((e) => e.kind === "message").map((e) => e.text)).toEqual(["before"]);
    const audit = await json<{ entries: { action: string; target: string }[] }>(
      api(owner, "GET", "/api/audit"),
    );
    expect(audit.entries).toContainEqual(
      expect.objectContaining({ action: "user.deactivated", target: ada.id }),
    );
    const directory = await json<{ users: { id: string; active: boolean }[] }>(
      api(owner, "GET", "/api/users?q="),
    );
    expect(directory.users.find((u) => u.id === ada.id)?.active).toBe(false);

    // Back: she can sign in again; nothing of before is restored (no device, no session).
    expect((await api(owner, "POST", `/api/users/${ada.id}/reactivate`)).status).toBe(200);
    expect((await api(ada, "GET", "/api/me")).status).toBe(200);
    expect(await json(api(ada, "GET", "/api/push/subscriptions"))).toEqual({ subscriptions: [] });
    expect(socket.closed).not.toBeNull();
    // The room and her presence shard let her streams in again.
    const again = await Client.open(ada, roomId);
    await again.ready();
    const presenceAgain = await Presence.open(ada);
    presenceAgain.send({ type: "ping" });
    await presenceAgain.until((p) => p.frames.some((f) => f.type === "pong"), "a pong");
  });

  it("has the rooms and presence refuse her streams themselves, whatever identity a worker remembers", async () => {
    const { owner, ada, tenant, roomId } = await setup();
    const last = (
      await json<{ events: { seq: number }[] }>(api(ada, "GET", `/api/rooms/${roomId}/messages?after=0`))
    ).events.length;
    expect((await api(owner, "POST", `/api/users/${ada.id}/deactivate`)).status).toBe(200);
    // As another isolate would, one that read her as active a moment before: straight to the objects.
    const room = roomStub(env, tenant, roomId);
    const identity = encodeIdentity({ id: ada.id, name: "Ada", role: "member", tenantId: tenant });
    const socket = await room.fetch(
      new Request(`http://room/api/rooms/${roomId}/ws?after=0`, {
        headers: { upgrade: "websocket", [IDENTITY_HEADER]: identity },
      }),
    );
    expect(socket.status).toBe(403);
    const sse = await room.fetch(
      new Request(`http://room/api/rooms/${roomId}/events?after=0`, {
        headers: { [IDENTITY_HEADER]: identity },
      }),
    );
    expect(sse.status).toBe(403);
    expect(await room.poll(ada.id, last, 0)).toMatchObject({ ok: false, code: "forbidden" });
    const shard = presenceStub(env, tenant, shardOf(ada.id, 3));
    const presence = await shard.fetch(
      new Request("http://presence/api/presence/ws", {
        headers: {
          upgrade: "websocket",
          [PRESENCE_IDENTITY_HEADER]: encodeURIComponent(
            JSON.stringify({ userId: ada.id, tenantId: tenant }),
          ),
        },
      }),
    );
    expect(presence.status).toBe(403);
    // Nobody adds her to a room meanwhile either.
    const other = await createRoom(owner);
    const added = await api(owner, "POST", `/api/rooms/${other}/members`, { userId: ada.id });
    expect(added.status).toBe(400);
    expect(await json(added)).toMatchObject({ error: { message: expect.stringContaining("deactivated") } });
  });

  it("is for admins, and an owner only by an owner", async () => {
    const { owner, ada } = await setup();
    const other = await login(owner.tenant);
    expect((await api(ada, "POST", `/api/users/${other.id}/deactivate`)).status).toBe(403);
    expect((await api(owner, "PATCH", `/api/users/${ada.id}`, { role: "admin" })).status).toBe(200);
    expect((await api(ada, "POST", `/api/users/${owner.id}/deactivate`)).status).toBe(403);
    expect((await api(owner, "POST", "/api/users/u_nobody/deactivate")).status).toBe(404);
    // Nothing changed by the refusals.
    expect((await api(owner, "GET", "/api/me")).status).toBe(200);
    expect((await api(other, "GET", "/api/me")).status).toBe(200);
  });
});
