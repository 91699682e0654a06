/**
 * Incoming webhooks through the public surface: admins make one per room, the secret URL posts
 * into that room as the hook's bot with the validation, limits and idempotency of any send, and a
 * revoked hook posts nothing.
 */
import { describe, expect, it } from "vitest";
import { api, createRoom, fetchWorker, json, login, type User, unique } from "./helpers.ts";

interface Hook {
  id: string;
  name: string;
  userId: string;
  roomId: string;
  url: string;
}

async function makeHook(admin: User, roomId: string, name = "CI"): Promise<Hook> {
  const res = await api(admin, "POST", `/api/rooms/${roomId}/hooks`, { name });
  expect(res.status).toBe(201);
  return json<Hook>(res);
}

function post(hook: Hook, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  const url = new URL(hook.url);
  return fetchWorker(url.pathname, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function messages(user: User, roomId: string) {
  const page = await json<{
    events: { kind: string; text?: string; author: { id: string; name: string } }[];
  }>(api(user, "GET", `/api/rooms/${roomId}/messages?after=0`));
  return page.events.filter((e) => e.kind === "message");
}

describe("incoming webhooks", () => {
  it("are made by admins for a room, listed, and post into it as the hook, once per clientId", async () => {
    const tenant = unique("t");
    const owner = await login(tenant);
    const member = await login(tenant);
    const roomId = await createRoom(owner);
    expect((await api(member, "POST", `/api/rooms/${roomId}/hooks`, { name: "x" })).status).toBe(403);
    expect((await api(owner, "POST", `/api/rooms/${roomId}/hooks`, { name: "" })).status).toBe(400);
    const hook = await makeHook(owner, roomId, "Build bot");
    expect(hook.url).toMatch(/\/hooks\/pk_k_[0-9a-z]{20}_[A-Za-z0-9_-]{43}$/);
    const listed = await json<{ hooks: { id: string; name: string }[] }>(
      api(owner, "GET", `/api/rooms/${roomId}/hooks`),
    );
    expect(listed.hooks).toEqual([expect.objectContaining({ id: hook.id, name: "Build bot" })]);
    expect(JSON.stringify(listed)).not.toContain(hook.url.split("/").at(-1));

    const first = await post(hook, { text: "build 42 passed", clientId: "build-42" });
    expect(first.status).toBe(201);
    const { seq } = await json<{ seq: number }>(first);
    const again = await post(hook, { text: "build 42 passed", clientId: "build-42" });
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual({ seq });
    // An Idempotency-Key header does the same for systems that cannot add a field.
    const keyed = await post(hook, { text: "deploy" }, { "idempotency-key": "deploy-7" });
    const keyedAgain = await post(hook, { text: "deploy" }, { "idempotency-key": "deploy-7" });
    expect((await json(keyedAgain)).seq).toBe((await json(keyed)).seq);
    expect((await messages(owner, roomId)).map((m) => [m.text, m.author.name])).toEqual([
      ["build 42 passed", "Build bot"],
      ["deploy", "Build bot"],
    ]);
  });

  it("refuse a bad message with the send's error and write nothing", async () => {
    const tenant = unique("t");
    const owner = await login(tenant);
    const roomId = await createRoom(owner);
    const hook = await makeHook(owner, roomId);
    for (const body of [{}, { text: "" }, { text: "x".repeat(20_000) }, { text: 5 }]) {
      const res = await post(hook, body);
      expect([400, 413], JSON.stringify(body).slice(0, 40)).toContain(res.status);
    }
    expect((await post(hook, "not json")).status).toBe(400);
    expect(
      (
        await fetchWorker(new URL(hook.url).pathname, {
          method: "POST",
          headers: { "content-type": "text/plain" },
          body: "text",
        })
      ).status,
    ).toBe(400);
    expect(await messages(owner, roomId)).toEqual([]);
  });

  it("refuse a URL that is not a hook's, and a revoked hook's, and the bot leaves the room", async () => {
    const tenant = unique("t");
    const owner = await login(tenant);
    const roomId = await createRoom(owner);
    const hook = await makeHook(owner, roomId);
    const forged = { ...hook, url: hook.url.replace(/.{4}$/, "AAAA") };
    expect((await post(forged, { text: "hi" })).status).toBe(401);
    // A bot token for two rooms is not a hook.
    const other = await createRoom(owner);
    const token = await json<{ token: string }>(
      api(owner, "POST", "/api/tokens", { name: "b", rooms: [roomId, other] }),
    );
    expect((await post({ ...hook, url: `https://x/hooks/${token.token}` }, { text: "hi" })).status).toBe(401);
    expect((await api(owner, "DELETE", `/api/tokens/${hook.id}`)).status).toBe(200);
    expect((await post(hook, { text: "after revocation" })).status).toBe(401);
    expect(await messages(owner, roomId)).toEqual([]);
    const audit = await json<{ entries: { action: string; target: string }[] }>(
      api(owner, "GET", "/api/audit"),
    );
    expect(audit.entries.map((e) => [e.action, e.target])).toEqual(
      expect.arrayContaining([
        ["token.created", hook.id],
        ["token.revoked", hook.id],
      ]),
    );
  });
});
