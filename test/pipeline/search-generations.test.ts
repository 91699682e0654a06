/**
 * Search shards past their fill bound (this project runs with PARLEY_SEARCH_SHARD_MESSAGES=20 and
 * PARLEY_SEARCH_PARTS=2): a full generation keeps answering and applying edits, deletions and
 * retention, while its part's new messages go to the next generation.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../../durable-objects/room.ts";
import { partOf, type SearchShard, searchStub } from "../../durable-objects/search.ts";
import type { SearchHit } from "../../protocol/index.ts";
import { roomStub } from "../../worker/stubs.ts";
import { api, createRoom, login, type User, unique } from "../helpers.ts";

const DAY = 24 * 60 * 60 * 1000;

async function search(user: User, q: string): Promise<SearchHit[]> {
  const res = await api(user, "GET", `/api/search?q=${encodeURIComponent(q)}`);
  expect(res.status).toBe(200);
  return (await res.json<{ hits: SearchHit[] }>()).hits;
}

async function messagesOf(tenantId: string, part: number, gen: number): Promise<number> {
  const at = { tenantId, part, gen };
  return (await runInDurableObject(searchStub(env, at), (s: SearchShard) => s.stats())).messages;
}

describe("search shard generations", () => {
  it("open the next generation when one is full, and every generation answers and forgets", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const seqs: number[] = [];
    for (let i = 0; i < 45; i++) {
      const res = await api(ada, "POST", `/api/rooms/${roomId}/messages`, {
        clientId: `m${i}`,
        text: `heron number ${i} word${i}`,
      });
      seqs.push((await res.json<{ seq: number }>()).seq);
    }
    const stub = roomStub(env, ada.tenant, roomId);
    expect(await stub.searchSettled()).toMatchObject({ indexedThrough: seqs.at(-1) });
    const part = partOf(roomId, 2);
    expect([
      await messagesOf(ada.tenant, part, 0),
      await messagesOf(ada.tenant, part, 1),
      await messagesOf(ada.tenant, part, 2),
    ]).toEqual([20, 20, 5]);
    const all = await search(ada, "heron");
    expect(all).toHaveLength(45);
    expect(new Set(all.map((h) => h.seq))).toEqual(new Set(seqs));

    // An edit of a message in generation 1, a deletion in generation 0: each reaches its message.
    const [inFirst, inSecond] = [seqs[3] as number, seqs[25] as number];
    expect(
      (
        await api(ada, "PATCH", `/api/rooms/${roomId}/messages/${inSecond}`, {
          clientId: "e",
          text: "egret now",
        })
      ).status,
    ).toBe(201);
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${inFirst}`)).status).toBe(201);
    await stub.searchSettled();
    expect((await search(ada, "egret")).map((h) => h.seq)).toEqual([inSecond]);
    expect((await search(ada, "word3")).map((h) => h.seq)).toEqual([]);
    expect(await search(ada, "heron")).toHaveLength(43);

    // Retention reaches every generation.
    expect((await api(ada, "PATCH", "/api/tenant", { retentionDays: 1 })).status).toBe(200);
    const later = Date.now() + 2 * DAY;
    for (let more = true, i = 0; more && i < 10; i++) {
      more = (await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(later))).expired > 0;
    }
    const state = await stub.searchSettled();
    expect(state.expiredThrough).toBeGreaterThanOrEqual(seqs.at(-1) as number);
    expect(await search(ada, "heron")).toEqual([]);
    expect(await search(ada, "egret")).toEqual([]);
    for (const gen of [0, 1, 2]) expect(await messagesOf(ada.tenant, part, gen)).toBe(0);
  });
});
