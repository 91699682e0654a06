/**
 * Full-text search through the public API, fed by the rooms themselves (durable-objects/search.ts,
 * room-search.ts): what a room commits is in its search part as soon as the room has sent it, which
 * `searchSettled` waits for (the room's own promise, not a poll).
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../durable-objects/room.ts";
import { partOf, type SearchShard, searchStub } from "../durable-objects/search.ts";
import type { SearchHit } from "../protocol/index.ts";
import { roomStub } from "../worker/stubs.ts";
import { api, Client, createRoom, join, json, login, storeWatermark, type User, unique } from "./helpers.ts";

async function search(user: User, q: string, extra = ""): Promise<{ status: number; hits: SearchHit[] }> {
  const res = await api(user, "GET", `/api/search?q=${encodeURIComponent(q)}${extra}`);
  return {
    status: res.status,
    hits: res.status === 200 ? (await res.json<{ hits: SearchHit[] }>()).hits : [],
  };
}

async function send(user: User, roomId: string, text: string, clientId = unique("c")): Promise<number> {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId, text });
  if (res.status !== 201) throw new Error(`send failed: ${res.status} ${await res.text()}`);
  return (await res.json<{ seq: number }>()).seq;
}

/** Waits until the room's search part holds everything the room has committed. */
async function settled(tenant: string, roomId: string) {
  const state = await roomStub(env, tenant, roomId).searchSettled();
  expect(state.indexedThrough).toBe(state.lastSeq);
  return state;
}

describe("search", () => {
  it("finds a message once its sender has the ack, ranked, with highlighted and escaped snippets", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const socket = await Client.open(ada, roomId, 0);
    await socket.ready();
    socket.send({ type: "send", clientId: "a1", text: "the quarterly <b>roadmap</b> review" });
    socket.send({ type: "send", clientId: "a2", text: "lunch?" });
    socket.send({ type: "send", clientId: "a3", text: "roadmap roadmap roadmap" });
    await socket.until((c) => c.acks().some((a) => a.clientId === "a3"), "the last ack");
    await settled(ada.tenant, roomId);
    const found = await search(ada, "roadmap");
    expect(found.status).toBe(200);
    expect(found.hits.map((h) => h.seq)).toEqual([4, 2]);
    expect(found.hits[1]).toMatchObject({
      room: roomId,
      text: "the quarterly <b>roadmap</b> review",
      author: { id: ada.id, name: ada.name },
      snippet: "the quarterly &lt;b&gt;<mark>roadmap</mark>&lt;/b&gt; review",
    });
    socket.close();
  });

  it("follows edits and forgets deleted messages", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const first = await send(ada, roomId, "draft about pelicans");
    const second = await send(ada, roomId, "regret this walrus");
    await settled(ada.tenant, roomId);
    expect((await search(ada, "pelicans")).hits.map((h) => h.seq)).toEqual([first]);
    expect((await search(ada, "walrus")).hits.map((h) => h.seq)).toEqual([second]);

    const edit = await api(ada, "PATCH", `/api/rooms/${roomId}/messages/${first}`, {
      clientId: "e1",
      text: "final note about flamingos",
    });
    expect(edit.status).toBe(201);
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${second}`)).status).toBe(201);
    await settled(ada.tenant, roomId);
    expect((await search(ada, "pelicans")).hits).toEqual([]);
    expect((await search(ada, "flamingos")).hits).toMatchObject([
      { seq: first, text: "final note about flamingos" },
    ]);
    expect((await search(ada, "walrus")).hits).toEqual([]);
  });

  it("searches only rooms the caller belongs to now, never another tenant's, and within a token's scope", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const secret = await json<{ id: string }>(
      api(ada, "POST", "/api/rooms", { name: "secret", kind: "private", members: [bob.id] }),
    );
    const open = await createRoom(ada);
    await join(bob, open);
    await send(ada, secret.id, "merger codename falcon");
    await send(ada, open, "falcon sighted over the office");
    await settled(tenant, secret.id);
    await settled(tenant, open);
    expect((await search(bob, "falcon")).hits).toHaveLength(2);
    expect((await search(bob, "falcon", `&room=${secret.id}`)).hits.map((h) => h.room)).toEqual([secret.id]);
    await api(bob, "POST", `/api/rooms/${secret.id}/leave`);
    expect((await search(bob, "falcon")).hits.map((h) => h.room)).toEqual([open]);
    const eve = await login(unique("t"));
    expect((await search(eve, "falcon")).hits).toEqual([]);
    // A bot token limited to one room finds only that room's messages, even in rooms it is in.
    const token = await json<{ token: string }>(
      api(ada, "POST", "/api/tokens", { name: "bot", rooms: [open] }),
    );
    const bot = { token: token.token } as User;
    const botId = (await json<{ user: { id: string } }>(api(bot, "GET", "/api/me"))).user.id;
    for (const r of [open, secret.id])
      expect((await api(ada, "POST", `/api/rooms/${r}/members`, { userId: botId })).status).toBe(200);
    expect((await search(bot, "falcon")).hits.map((h) => h.room)).toEqual([open]);
  });

  it("filters by author and by date", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    await send(ada, roomId, "quokka from ada");
    const bobSeq = await send(bob, roomId, "quokka from bob");
    await settled(tenant, roomId);
    expect((await search(ada, "quokka", `&author=${bob.id}`)).hits.map((h) => h.seq)).toEqual([bobSeq]);
    const all = (await search(ada, "quokka")).hits;
    expect(all).toHaveLength(2);
    const bobTs = all.find((h) => h.seq === bobSeq)?.ts ?? 0;
    expect((await search(ada, "quokka", `&from=${bobTs + 1}`)).hits).toEqual([]);
    expect((await search(ada, "quokka", `&to=${bobTs}`)).hits).toHaveLength(2);
  });

  it("answers 400, never 500, to input that is not valid FTS syntax", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    await send(ada, roomId, "something to search");
    await settled(ada.tenant, roomId);
    for (const q of ['"unterminated', "a AND", "(", "NEAR(", "*", "col:umn"]) {
      const res = await search(ada, q);
      expect([200, 400], q).toContain(res.status);
    }
    expect((await search(ada, '"unterminated')).status).toBe(400);
    expect((await search(ada, "")).status).toBe(400);
  });

  it("keeps one copy of each message when a room sends its whole log again", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    for (let i = 0; i < 5; i++) await send(ada, roomId, `repeatable okapi ${i}`);
    const deleted = await send(ada, roomId, "okapi to delete");
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${deleted}`)).status).toBe(201);
    await settled(ada.tenant, roomId);
    // As after a lost confirmation, or a rebuild: the room forgets what its part confirmed.
    const stub = roomStub(env, ada.tenant, roomId);
    await runInDurableObject(stub, async (_room: Room, state) => {
      storeWatermark(state.storage.sql, "search_indexed", () => 0);
    });
    await settled(ada.tenant, roomId);
    const hits = (await search(ada, "okapi")).hits;
    expect(hits.map((h) => h.seq).sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6]);
    // Each message is stored once in the part.
    const parts = (await runInDurableObject(stub, (_r: Room, state) =>
      state.storage.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'search_parts'").one(),
    )) as { value: string };
    const at = { tenantId: ada.tenant, part: partOf(roomId, Number(parts.value)), gen: 0 };
    const stats = await runInDurableObject(searchStub(env, at), (shard: SearchShard) => shard.stats());
    expect(stats.messages).toBe(5);
  });
});
