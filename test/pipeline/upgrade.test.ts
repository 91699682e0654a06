/**
 * The upgrade of a single-database deployment onto search shards and D1 history shards
 * (docs/deploy.md, "Upgrading to sharded history and search"): a room written by the previous
 * release (schema v6: an outbox table, no watermarks; its history in the directory's shared
 * `archived_events`, its search in the directory's FTS index) sits idle, with no alarm set; the
 * catch-up route wakes it, and it sends its whole log to its search part and its window to its
 * history shard.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../../durable-objects/room.ts";
import { partOf, type SearchShard, searchStub } from "../../durable-objects/search.ts";
import { allHistoryShards } from "../../platform/residency.ts";
import type { SearchHit } from "../../protocol/index.ts";
import { roomStub } from "../../worker/stubs.ts";
import { api, createRoom, historyAll, json, login, type User, unique } from "../helpers.ts";
import { undoSchemaV8 } from "./legacy-room.ts";
import { drainAll, type Stub, withFakeQueue } from "./queue.ts";

async function search(user: User, q: string): Promise<SearchHit[]> {
  const res = await api(user, "GET", `/api/search?q=${encodeURIComponent(q)}`);
  expect(res.status).toBe(200);
  return (await res.json<{ hits: SearchHit[] }>()).hits;
}

async function send(user: User, roomId: string, text: string): Promise<number> {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("c"), text });
  return (await res.json<{ seq: number }>()).seq;
}

/** What the previous release left: the room at schema v6 with an outbox, no watermarks, and no
 * copies in the new stores (they did not exist). The alarm is held off, as an idle room's is. */
async function asLeftByPreviousRelease(user: User, roomId: string, stub: Stub): Promise<void> {
  // The room learns its tenant's number of parts on its first send to search. It keeps its
  // watermarks in memory and writes them behind: a fresh instance has none to write over the edit.
  await stub.searchSettled();
  await evictDurableObject(stub);
  const parts = await runInDurableObject(stub, (_room: Room, state) =>
    Number(
      state.storage.sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'search_parts'").one()
        .value,
    ),
  );
  const at = { tenantId: user.tenant, part: partOf(roomId, parts), gen: 0 };
  await runInDurableObject(searchStub(env, at), (_shard: SearchShard, state) => {
    state.storage.sql.exec("DELETE FROM docs WHERE room = ?", roomId);
  });
  // The part counts its messages once per instance: a new one counts what is left.
  await evictDurableObject(searchStub(env, at));
  for (const { db } of allHistoryShards(env)) {
    await db
      .prepare("DELETE FROM archived_events WHERE tenant_id = ? AND room_id = ?")
      .bind(user.tenant, roomId)
      .run();
  }
  await runInDurableObject(stub, (_room: Room, state) => {
    const sql = state.storage.sql;
    sql.exec(`DROP TABLE archive_acks;
      DELETE FROM meta WHERE key LIKE 'search_%' OR key LIKE 'archive_%' OR key = 'watermarks';
      CREATE TABLE outbox (seq INTEGER PRIMARY KEY, sent_at INTEGER);
      CREATE INDEX outbox_sent ON outbox(sent_at);`);
    undoSchemaV8(sql);
    sql.exec("UPDATE meta SET value = '6' WHERE key = 'schema_version'");
    state.storage.kv.put("archive_retry_at", Date.now() + 3_600_000);
  });
  await runInDurableObject(stub, (_room: Room, state) => state.storage.deleteAlarm());
  await evictDurableObject(stub);
}

describe("upgrading to sharded history and search", () => {
  it("brings an idle room of the previous release into its search part and history shard", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const kept = await send(ada, roomId, "ledger entry about capybaras");
    const edited = await send(ada, roomId, "first draft about marmots");
    const gone = await send(ada, roomId, "capybaras are secret");
    expect(
      (
        await api(ada, "PATCH", `/api/rooms/${roomId}/messages/${edited}`, {
          clientId: "e",
          text: "marmots, final",
        })
      ).status,
    ).toBe(201);
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${gone}`)).status).toBe(201);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const lastSeq = (await stub.archiveState()).lastSeq;
    await asLeftByPreviousRelease(ada, roomId, stub);

    // Idle after the upgrade: nothing in the new stores yet.
    expect(await search(ada, "capybaras")).toEqual([]);

    const caught = await json<{
      rooms: { id: string; lastSeq: number; indexedThrough: number }[];
      behind: number;
      next: string | null;
    }>(api(ada, "POST", "/api/admin/history/catch-up"));
    expect(caught.rooms).toContainEqual(
      expect.objectContaining({ id: roomId, lastSeq, indexedThrough: lastSeq }),
    );
    expect(caught.next).toBeNull();
    expect((await search(ada, "capybaras")).map((h) => h.seq)).toEqual([kept]);
    expect((await search(ada, "marmots")).map((h) => h.text)).toEqual(["marmots, final"]);

    // The window of the log reaches the history shard through the queue.
    const { queue } = await withFakeQueue(ada, roomId);
    await runInDurableObject(stub, (_room: Room, state) => state.storage.kv.delete("archive_retry_at"));
    await drainAll(stub, queue);
    const rows = await historyAll<{ seq: number; text: string; deleted: number }>(
      "SELECT seq, text, deleted FROM archived_events WHERE tenant_id = ? AND room_id = ? ORDER BY seq",
      ada.tenant,
      roomId,
    );
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: lastSeq }, (_, i) => i + 1));
    expect(rows.find((r) => r.seq === gone)).toMatchObject({ text: "", deleted: 1 });
    expect(rows.find((r) => r.seq === edited)?.text).toBe("marmots, final");
    const tables = await runInDurableObject(stub, (_room: Room, state) =>
      state.storage.sql
        .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
        .toArray()
        .map((t) => t.name),
    );
    expect(tables).not.toContain("outbox");
  });

  it("is for admins only, and refuses a malformed cursor", async () => {
    const owner = await login(unique("t"));
    const member = await login(owner.tenant);
    expect((await api(member, "POST", "/api/admin/history/catch-up")).status).toBe(403);
    expect((await api(owner, "POST", "/api/admin/history/catch-up?after=nope")).status).toBe(400);
    expect((await api(owner, "POST", "/api/admin/history/catch-up?limit=0")).status).toBe(400);
  });
});
