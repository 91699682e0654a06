import { describe, expect, it } from "vitest";
import { api, Client, createRoom, json, login, type User, unique } from "./helpers.ts";

interface Created {
  id: string;
  token: string;
  userId: string;
  rooms: string[] | null;
}

async function createToken(admin: User, body: Record<string, unknown>): Promise<Created> {
  const res = await api(admin, "POST", "/api/tokens", body);
  expect(res.status).toBe(201);
  return json<Created>(res);
}

describe("bot API tokens", () => {
  it("are created by admins only and shown once, never listed", async () => {
    const tenant = unique("t");
    const owner = await login(tenant);
    const member = await login(tenant);
    expect((await api(member, "POST", "/api/tokens", { name: "ci" })).status).toBe(403);
    const created = await createToken(owner, { name: "ci" });
    expect(created.token).toMatch(/^pk_k_[0-9a-z]{20}_[A-Za-z0-9_-]{43}$/);
    const listed = await json<{ tokens: Record<string, unknown>[] }>(api(owner, "GET", "/api/tokens"));
    expect(listed.tokens).toEqual([expect.objectContaining({ id: created.id, name: "ci", revokedAt: null })]);
    expect(JSON.stringify(listed)).not.toContain(created.token.slice(-43));
  });

  it("authenticate a bot over HTTP and WebSocket with Authorization: Bearer", async () => {
    const owner = await login(unique("t"));
    const roomId = await createRoom(owner);
    const bot = await createToken(owner, { name: "deploy-bot" });
    const asBot = { token: bot.token };
    expect(await json(api(asBot, "GET", "/api/me"))).toMatchObject({
      user: { id: bot.userId, role: "bot", name: "deploy-bot" },
    });
    await api(owner, "POST", `/api/rooms/${roomId}/members`, { userId: bot.userId });
    const socket = await Client.open(asBot, roomId);
    await socket.ready();
    const seq = await socket.sendMessage("deploy-1", "deployed v42");
    await socket.until((c) => c.events.some((e) => e.seq === seq), "the bot's message");
    expect(socket.events.find((e) => e.seq === seq)?.author).toEqual({ id: bot.userId, name: "deploy-bot" });
  });

  it("can be limited to some rooms: every other room answers 404", async () => {
    const owner = await login(unique("t"));
    const allowed = await createRoom(owner);
    const other = await createRoom(owner);
    const bot = await createToken(owner, { name: "scoped", rooms: [allowed] });
    const asBot = { token: bot.token };
    expect((await api(asBot, "POST", `/api/rooms/${allowed}/join`)).status).toBe(200);
    expect((await api(asBot, "POST", `/api/rooms/${other}/join`)).status).toBe(404);
    expect((await Client.upgrade(asBot, other)).status).toBe(404);
    expect((await json<{ id: string }[]>(api(asBot, "GET", "/api/rooms"))).map((r) => r.id)).toEqual([
      allowed,
    ]);
    expect(
      (await api(owner, "POST", "/api/tokens", { name: "x", rooms: ["r_00000000000000000000"] })).status,
    ).toBe(404);
    // A room-limited bot cannot widen its reach by creating rooms or browsing the directory.
    expect((await api(asBot, "POST", "/api/rooms", { name: "escape" })).status).toBe(403);
    expect((await api(asBot, "POST", "/api/rooms", { kind: "dm", members: [owner.id] })).status).toBe(403);
    expect((await api(asBot, "GET", "/api/users?q=")).status).toBe(403);
  });

  it("stop working when revoked: the next request is 401 and the open socket closes", async () => {
    const owner = await login(unique("t"));
    const roomId = await createRoom(owner);
    const bot = await createToken(owner, { name: "temp" });
    const asBot = { token: bot.token };
    await api(asBot, "POST", `/api/rooms/${roomId}/join`);
    const socket = await Client.open(asBot, roomId);
    await socket.ready();
    expect((await api(owner, "DELETE", `/api/tokens/${bot.id}`)).status).toBe(200);
    await socket.until((c) => c.closed !== null, "the close");
    expect(socket.closed?.code).toBe(4403);
    const res = await api(asBot, "GET", "/api/me");
    expect(res.status).toBe(401);
    expect((await Client.upgrade(asBot, roomId)).status).toBe(401);
    const audit = await json<{ entries: { action: string; target: string }[] }>(
      api(owner, "GET", "/api/audit"),
    );
    expect(audit.entries.filter((e) => e.target === bot.id).map((e) => e.action)).toEqual([
      "token.revoked",
      "token.created",
    ]);
  });

  it("refuse malformed tokens and tokens with a wrong secret", async () => {
    const owner = await login(unique("t"));
    const bot = await createToken(owner, { name: "real" });
    const wrongSecret = `${bot.token.slice(0, -1)}${bot.token.endsWith("A") ? "B" : "A"}`;
    for (const token of [wrongSecret, "pk_nope", `${bot.token}x`]) {
      expect((await api({ token }, "GET", "/api/me")).status, token).toBe(401);
    }
    const other = await login(unique("t"));
    expect((await api(other, "DELETE", `/api/tokens/${bot.id}`)).status).toBe(404); // owner of another tenant
  });
});
