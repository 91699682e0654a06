/**
 * The D1 history and search of a tenant pinned to the EU stay in the EU (vitest.config.ts pins
 * `eu-umbrella`): its placement names an EU history shard, its room events take the EU queue and
 * land in HISTORY_EU_* and in no default shard, and its search shards are reached through the EU
 * namespace. The reverse for a
 * tenant pinned nowhere.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../durable-objects/room.ts";
import { allHistoryShards, directoryDb } from "../platform/residency.ts";
import { roomStub } from "../worker/stubs.ts";
import { Client, createRoom, login, unique } from "./helpers.ts";
import { alarm, deliver, FakeQueue, type Stub } from "./pipeline/queue.ts";

async function shardsHolding(tenant: string): Promise<string[]> {
  const names: string[] = [];
  for (const { name, db } of allHistoryShards(env)) {
    const row = await db
      .prepare("SELECT COUNT(*) AS n FROM archived_events WHERE tenant_id = ?")
      .bind(tenant)
      .first<{ n: number }>();
    if ((row?.n ?? 0) > 0) names.push(name);
  }
  return names;
}

describe("the D1 history of a pinned tenant", () => {
  for (const [tenant, shards] of [
    ["eu-umbrella", ["HISTORY_EU_0", "HISTORY_EU_1"]],
    [unique("home"), ["HISTORY_0", "HISTORY_1"]],
  ] as const) {
    it(`stays on ${shards.join(" or ")} for ${tenant.startsWith("eu") ? "an EU tenant" : "a default tenant"}`, async () => {
      const ada = await login(tenant);
      const roomId = await createRoom(ada);
      const { results } = await directoryDb(env, tenant)
        .prepare("SELECT shard FROM history_placements WHERE tenant_id = ?")
        .bind(tenant)
        .all<{ shard: string }>();
      expect(results.length).toBeGreaterThan(0);
      for (const r of results) expect(shards).toContain(r.shard);
      // One queue per jurisdiction: the room's events (message text) take its tenant's.
      const stub = roomStub(env, tenant, roomId) as Stub;
      const home = new FakeQueue();
      const eu = new FakeQueue();
      await runInDurableObject(stub, (room: Room) => {
        const r = room as unknown as { env: Env };
        r.env = { ...r.env, ROOM_EVENTS: home as unknown as Queue, ROOM_EVENTS_EU: eu as unknown as Queue };
      });
      const client = await Client.open(ada, roomId);
      await client.ready();
      await client.sendMessage(unique("c"), "residency check");
      await alarm(stub);
      const [taken, untouched] = tenant.startsWith("eu-") ? [eu, home] : [home, eu];
      expect(untouched.sent).toEqual([]);
      const sent = taken.take();
      expect(sent.length).toBeGreaterThan(0);
      await deliver(sent);
      expect(await stub.archiveState()).toMatchObject({ pending: 0 });
      const holding = await shardsHolding(tenant);
      expect(holding.length).toBe(1);
      expect(shards).toContain(holding[0]);
      expect((await roomStub(env, tenant, roomId).searchSettled()).indexedThrough).toBeGreaterThan(0);
      client.close();
    });
  }
});
