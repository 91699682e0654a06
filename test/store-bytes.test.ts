/**
 * What one message costs in each store it lands in, measured on realistic messages sent over the
 * room socket: the room's SQLite (a hot row), the room's search part (FTS5 in Durable Object
 * SQLite), the D1 history shard (its row and indexes) and R2 (its line in a gzip segment).
 * docs/scaling.md sizes the stores from these figures ("Bytes per message"); the bounds below keep
 * it true, so a schema change that makes a store much larger fails here first. The measured figures
 * are printed (`PARLEY_BYTES …`).
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { Room } from "../durable-objects/room.ts";
import { partOf, type SearchShard, searchStub } from "../durable-objects/search.ts";
import { allHistoryShards } from "../platform/residency.ts";
import { roomStub } from "../worker/stubs.ts";
import { Client, createRoom, login, maintenanceOf, unique } from "./helpers.ts";

const MESSAGES = 2000;

/** A seeded generator, so every run measures the same text. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1_664_525) + 1_013_904_223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Messages as people write them: 3 to 40 words drawn Zipf-like from a vocabulary of 5,000 words
 * of 2 to 10 letters (about 150 characters on average, as in docs/scaling.md). */
function messages(n: number): string[] {
  const rand = prng(14);
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  const vocabulary = Array.from({ length: 5000 }, () =>
    Array.from({ length: 2 + Math.floor(rand() * 9) }, () => letters[Math.floor(rand() ** 2 * 26)]).join(""),
  );
  const word = () => vocabulary[Math.floor(vocabulary.length ** rand()) - 1] as string;
  return Array.from({ length: n }, () => Array.from({ length: 3 + Math.floor(rand() * 38) }, word).join(" "));
}

/** Sends every text over the socket, 50 at a time, as a client does: a send refused with
 * `rate_limited` (the core project allows 200 commands a second) goes again after `retryAfter`. */
async function sendAll(client: Client, texts: string[], prefix: string): Promise<void> {
  let pending = texts.map((text, i) => ({ clientId: `${prefix}${i}`, text }));
  while (pending.length > 0) {
    const chunk = pending.slice(0, 50);
    const ids = new Set(chunk.map((m) => m.clientId));
    const from = client.frames.length;
    for (const m of chunk) client.send({ type: "send", ...m });
    const answers = () =>
      client.frames
        .slice(from)
        .filter((f) => (f.type === "ack" || f.type === "error") && ids.has(f.clientId ?? ""));
    await client.until(() => answers().length >= chunk.length, `${chunk.length} answers`, 60_000);
    const refused = answers().filter((f) => f.type === "error");
    for (const f of refused) expect(f).toMatchObject({ code: "rate_limited" });
    const again = new Set(refused.map((f) => f.clientId));
    pending = [...chunk.filter((m) => again.has(m.clientId)), ...pending.slice(chunk.length)];
    if (refused.length > 0) await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Bytes of every D1 history shard together (a tenant's rows are in one of them). */
async function historyBytes(): Promise<number> {
  let total = 0;
  for (const { db } of allHistoryShards(env)) total += (await db.prepare("SELECT 1").run()).meta.size_after;
  return total;
}

describe("bytes per message in each store", () => {
  it("stays within the figures docs/scaling.md sizes the stores by", async () => {
    const ada = await login(unique("bytes"), "Ada");
    const roomId = await createRoom(ada);
    const room = roomStub(env, ada.tenant, roomId) as DurableObjectStub<Room>;
    const client = await Client.open(ada, roomId);
    await client.ready();
    const texts = messages(MESSAGES + 1);
    const avgChars = texts.reduce((a, t) => a + t.length, 0) / texts.length;

    // One message first, so every store exists (schema, first pages) before the baseline.
    await sendAll(client, texts.slice(0, 1), "first");
    const settled = async () => {
      await room.searchSettled();
      await vi.waitFor(async () => expect((await room.archiveState()).pending).toBe(0), {
        timeout: 30_000,
        interval: 50,
      });
    };
    await settled();
    const parts = (await runInDurableObject(room, (_r: Room, s) =>
      Number(s.storage.sql.exec("SELECT value FROM meta WHERE key = 'search_parts'").one().value),
    )) as number;
    const at = { tenantId: ada.tenant, part: partOf(roomId, parts), gen: 0 };
    const part = searchStub(env, at) as DurableObjectStub<SearchShard>;
    const searchSize = () => runInDurableObject(part, (_s: SearchShard, st) => st.storage.sql.databaseSize);
    const roomSize = () => runInDurableObject(room, (_r: Room, st) => st.storage.sql.databaseSize);
    const before = { search: await searchSize(), room: await roomSize(), history: await historyBytes() };

    await sendAll(client, texts.slice(1), "m");
    await settled();
    const after = { search: await searchSize(), room: await roomSize(), history: await historyBytes() };
    client.close();

    // Seal everything into segments (as the alarm does an hour later) and weigh them in R2.
    const state = await maintenanceOf(room).seal(Date.now() + 2 * 60 * 60 * 1000);
    const prefix = `${ada.tenant}/rooms/${roomId}/segments/`;
    const objects = (await env.FILES.list({ prefix })).objects;
    const r2 = objects.reduce((a, o) => a + o.size, 0) / state.sealedSeq;

    const per = {
      room: (after.room - before.room) / MESSAGES,
      search: (after.search - before.search) / MESSAGES,
      history: (after.history - before.history) / MESSAGES,
      r2,
    };
    console.log(
      `PARLEY_BYTES ${JSON.stringify({ messages: MESSAGES, avgChars: Math.round(avgChars), ...Object.fromEntries(Object.entries(per).map(([k, v]) => [k, Math.round(v)])) })}`,
    );
    expect(avgChars).toBeGreaterThan(120);
    expect(avgChars).toBeLessThan(180);
    // docs/scaling.md, "Bytes per message": each store's figure with some headroom.
    expect(per.room).toBeLessThan(900);
    expect(per.search).toBeLessThan(450);
    // Below the old archive's 762 bytes (its row, two indexes and an FTS5 index in D1).
    expect(per.history).toBeLessThan(762);
    expect(per.r2).toBeLessThan(600);
    for (const v of Object.values(per)) expect(v).toBeGreaterThan(0);
  });
});
