/**
 * The D1 history sharded by tenant and period (worker/history): placement at tenant creation, a
 * shard past its fill limit moving the tenant's next period to another shard (this project runs with
 * PARLEY_HISTORY_SHARD_BYTES=65536), and the window kept by the scheduled job.
 */
import { createScheduledController } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { allHistoryShards, directoryDb } from "../../platform/residency.ts";
import type { RoomEvent } from "../../protocol/index.ts";
import worker from "../../worker/index.ts";
import { api, Client, createRoom, login, type User, unique } from "../helpers.ts";
import { deliver, drainAll, withFakeQueue } from "./queue.ts";

const DAY = 24 * 60 * 60 * 1000;

async function placements(tenant: string) {
  const { results } = await directoryDb(env, tenant)
    .prepare("SELECT from_ts AS fromTs, shard FROM history_placements WHERE tenant_id = ? ORDER BY from_ts")
    .bind(tenant)
    .all<{ fromTs: number; shard: string }>();
  return results;
}

/** Which shard holds each of the room's events (by seq). */
async function shardOfRows(tenant: string, roomId: string): Promise<Map<number, string>> {
  const where = new Map<number, string>();
  for (const { name, db } of allHistoryShards(env)) {
    const { results } = await db
      .prepare("SELECT seq FROM archived_events WHERE tenant_id = ? AND room_id = ?")
      .bind(tenant, roomId)
      .all<{ seq: number }>();
    for (const { seq } of results) {
      expect(where.has(seq), `seq ${seq} in two shards`).toBe(false);
      where.set(seq, name);
    }
  }
  return where;
}

async function sendAll(client: Client, texts: string[]): Promise<number[]> {
  const from = client.acks().length;
  texts.forEach((text, i) => {
    client.send({ type: "send", clientId: unique(`m${i}`), text });
  });
  await client.until((c) => c.acks().length >= from + texts.length, "acks");
  return client
    .acks()
    .slice(from)
    .map((a) => a.seq);
}

describe("history shards", () => {
  it("place a tenant when it is created, on a shard of its jurisdiction", async () => {
    const home = await login(unique("t"));
    const rows = await placements(home.tenant);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.fromTs).toBe(0);
    expect(["HISTORY_0", "HISTORY_1"]).toContain(rows[0]?.shard);
  });

  it("move a tenant's next period to another shard once its shard passes the fill limit; old rows stay", async () => {
    const ada: User = await login(unique("t"));
    const roomId = await createRoom(ada);
    const [first] = await placements(ada.tenant);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();

    // About 16 KB a message in the shard (text and JSON): a few pass the 64 KiB limit.
    const early = await sendAll(
      client,
      Array.from({ length: 6 }, (_, i) => `early ${i} ${"x".repeat(8_000)}`),
    );
    await drainAll(stub, queue);
    const moved = await placements(ada.tenant);
    expect(moved).toHaveLength(2);
    expect(moved[1]?.shard).not.toBe(first?.shard);
    expect(moved[1]?.fromTs).toBeGreaterThan(0);

    const late = await sendAll(client, ["late one", "late two"]);
    // An edit of an early message goes where that message is, whatever the edit's own time.
    const target = early[0] as number;
    client.send({ type: "edit", clientId: "edit-early", target, text: "edited after the move" });
    await client.until((c) => c.acks().some((a) => a.clientId === "edit-early"), "the edit's ack");
    const editSeq = client.acks().find((a) => a.clientId === "edit-early")?.seq as number;
    await drainAll(stub, queue);

    const where = await shardOfRows(ada.tenant, roomId);
    for (const seq of early) expect(where.get(seq)).toBe(first?.shard);
    for (const seq of late) expect(where.get(seq)).toBe(moved[1]?.shard);
    expect(where.get(editSeq)).toBe(first?.shard);
    const firstDb = allHistoryShards(env).find((s) => s.name === first?.shard)?.db;
    if (!firstDb) throw new Error("the first shard is not bound");
    const row = await firstDb
      .prepare("SELECT text FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq = ?")
      .bind(ada.tenant, roomId, target)
      .first<{ text: string }>();
    expect(row?.text).toBe("edited after the move");
    // Stats count the tenant's history across its shards.
    const stats = await (await api(ada, "GET", "/api/admin/stats")).json<{ archive: { messages: number } }>();
    expect(stats.archive.messages).toBe(early.length + late.length);
    client.close();
  });

  it("keep a window: the scheduled job deletes older rows and the periods that ended before it", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const now = Date.now();
    const event = (seq: number, ts: number): RoomEvent => ({
      kind: "message",
      seq,
      ts,
      author: { id: ada.id, name: ada.name },
      text: `at ${ts}`,
    });
    // 89 and 91 days old (the window is 90), and fresh.
    const result = await deliver(
      [event(1, now - 91 * DAY + 60_000), event(2, now - 89 * DAY), event(3, now)].map((e) => ({
        tenantId: ada.tenant,
        roomId,
        event: e,
      })),
    );
    expect(result.explicitAcks).toHaveLength(3);
    // The 91-day-old event is older than the window when it arrives: it is confirmed, not stored.
    expect([...(await shardOfRows(ada.tenant, roomId)).keys()].sort()).toEqual([2, 3]);

    // A period that ended before the window, and the one after it.
    const db = directoryDb(env, ada.tenant);
    const [current] = await placements(ada.tenant);
    await db
      .prepare("INSERT INTO history_placements (tenant_id, from_ts, shard) VALUES (?, ?, ?)")
      .bind(ada.tenant, now - 95 * DAY, current?.shard)
      .run();
    await db
      .prepare("UPDATE history_placements SET from_ts = ? WHERE tenant_id = ? AND from_ts = 0")
      .bind(now - 92 * DAY, ada.tenant)
      .run();

    // Two days later, the 89-day-old row has left the window too.
    const controller = createScheduledController({ scheduledTime: now + 2 * DAY, cron: "*/30 * * * *" });
    await worker.scheduled?.(controller, env);
    expect([...(await shardOfRows(ada.tenant, roomId)).keys()]).toEqual([3]);
    expect((await placements(ada.tenant)).map((p) => p.fromTs)).toEqual([now - 92 * DAY]);
  });
});
