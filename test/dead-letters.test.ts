import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { RoomEvent } from "../protocol/index.ts";
import type { ArchiveMessage } from "../worker/archive/consumer.ts";
import worker from "../worker/index.ts";
import { api, createRoom, historyAll, json, login, type User, unique } from "./helpers.ts";

const ROOM_EVENTS = "parley-room-events";
const DEAD_LETTERS = "parley-room-events-dlq";

interface Delivered {
  id: string;
  body: unknown;
  attempts?: number;
}

/** Delivers a batch to the worker's queue handler; besides the queue result, the delay each
 * retried message asked for (the test harness records retries but not their options). */
async function deliver(queue: string, messages: Delivered[], targetEnv: Env = env) {
  const batch = createMessageBatch<unknown>(
    queue,
    messages.map(({ id, body, attempts = 6 }) => ({ id, timestamp: new Date(), attempts, body })),
  );
  const delays = batch.messages.map((m) => vi.spyOn(m, "retry"));
  const ctx = createExecutionContext();
  await worker.queue(batch, targetEnv, ctx);
  const result = await getQueueResult(batch, ctx);
  const retryDelays = Object.fromEntries(
    delays.flatMap((spy, i) =>
      spy.mock.calls.map(([options]) => [batch.messages[i]!.id, options?.delaySeconds] as const),
    ),
  );
  return { ...result, retryDelays };
}

interface LetterView {
  id: string;
  roomId: string | null;
  seq: number | null;
  attempts: number;
  receivedAt: number;
  body: unknown;
}
interface Page {
  deadLetters: LetterView[];
  hasMore: boolean;
  next: string | null;
}

async function list(user: User, query = "") {
  const res = await api(user, "GET", `/api/admin/dead-letters${query}`);
  return { status: res.status, body: (await res.json()) as Page & { error?: { code: string } } };
}

async function rows(id: string) {
  const { results } = await env.DB.prepare("SELECT * FROM dead_letters WHERE id = ?").bind(id).all<{
    tenant_id: string | null;
    room_id: string | null;
    seq: number | null;
    body: string;
    attempts: number;
  }>();
  return results;
}

const message = (u: User, seq: number, text: string): RoomEvent => ({
  kind: "message",
  seq,
  // Today: the D1 history keeps a window and drops older events.
  ts: Date.now() + seq,
  author: { id: u.id, name: u.name },
  text,
});

/** A tenant with its owner (an admin: the first to sign in owns it) and a plain member. */
async function tenant() {
  const name = unique("t");
  const admin = await login(name);
  const member = await login(name);
  return { name, admin, member, roomId: await createRoom(admin) };
}

/** Waits for `check` to hold, polling; fails clearly, never hangs, after `ms`. */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("the dead-letter queue", () => {
  it("receives a poison message the archive retries without ever acknowledging it, and shows it to the tenant's admins only", async () => {
    const t = await tenant();
    const poison = {
      id: unique("poison"),
      body: { tenantId: t.name, roomId: t.roomId, event: { kind: "message", seq: "not a number" } },
    };
    for (const attempts of [1, 2, 3, 4, 5, 6]) {
      const result = await deliver(ROOM_EVENTS, [{ ...poison, attempts }]);
      expect(result.explicitAcks).toEqual([]);
      expect(result.retryMessages).toMatchObject([{ msgId: poison.id }]);
    }

    const recorded = await deliver(DEAD_LETTERS, [poison]);
    expect(recorded.explicitAcks).toEqual([poison.id]);
    expect(recorded.retryMessages).toEqual([]);

    const seen = await list(t.admin);
    expect(seen.status).toBe(200);
    expect(seen.body).toMatchObject({ hasMore: false, next: null });
    expect(seen.body.deadLetters).toEqual([
      {
        id: poison.id,
        roomId: t.roomId,
        seq: null,
        attempts: 6,
        receivedAt: expect.any(Number),
        body: poison.body,
      },
    ]);

    const asMember = await list(t.member);
    expect(asMember.status).toBe(403);
    expect(asMember.body.error?.code).toBe("forbidden");
    expect((await api(t.member, "POST", `/api/admin/dead-letters/${poison.id}/replay`)).status).toBe(403);
    expect((await api(t.member, "POST", "/api/admin/dead-letters/replay")).status).toBe(403);

    const other = await login(unique("t"));
    expect((await list(other)).body.deadLetters).toEqual([]);
    expect((await api(other, "POST", `/api/admin/dead-letters/${poison.id}/replay`)).status).toBe(404);
    expect(await json(api(other, "POST", "/api/admin/dead-letters/replay"))).toEqual({
      replayed: 0,
      remaining: 0,
    });
    expect(await rows(poison.id)).toHaveLength(1);
  });

  it("stores one row when the same batch is delivered twice", async () => {
    const t = await tenant();
    const batch = [1, 2].map((seq) => ({
      id: unique("dup"),
      body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, seq, `dup ${seq}`) },
    }));
    expect((await deliver(DEAD_LETTERS, batch)).explicitAcks).toHaveLength(2);
    expect((await deliver(DEAD_LETTERS, batch)).explicitAcks).toHaveLength(2);
    for (const m of batch) expect(await rows(m.id)).toHaveLength(1);
    expect((await list(t.admin)).body.deadLetters.map((l) => l.seq).sort()).toEqual([1, 2]);
  });

  it("retries a message with backoff while D1 fails, and records it on the next delivery", async () => {
    const t = await tenant();
    const letter = {
      id: unique("flaky"),
      attempts: 3,
      body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, 1, "flaky") },
    };
    const failingDb = new Proxy(env.DB, {
      get(target, prop) {
        if (prop === "prepare" || prop === "batch") {
          return () => {
            throw new Error("D1_ERROR: simulated outage");
          };
        }
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const failed = await deliver(DEAD_LETTERS, [letter], { ...env, DB: failingDb });
    expect(failed.explicitAcks).toEqual([]);
    expect(failed.retryMessages).toEqual([{ msgId: letter.id }]);
    expect(failed.retryDelays).toEqual({ [letter.id]: 8 });
    expect(await rows(letter.id)).toEqual([]);

    expect((await deliver(DEAD_LETTERS, [letter])).explicitAcks).toEqual([letter.id]);
    expect(await rows(letter.id)).toMatchObject([
      { tenant_id: t.name, room_id: t.roomId, seq: 1, attempts: 3, body: JSON.stringify(letter.body) },
    ]);
  });

  it("keeps letters that name no tenant for the operator, listed to no tenant's admins", async () => {
    const t = await tenant();
    const unreadable = [
      { id: unique("text"), body: "not an archive message" },
      { id: unique("bytes"), body: new Uint8Array([1, 2, 3]) },
      { id: unique("badtenant"), body: { tenantId: "NOT A TENANT", roomId: t.roomId } },
    ];
    expect((await deliver(DEAD_LETTERS, unreadable)).explicitAcks).toHaveLength(3);
    const [text, bytes, badTenant] = await Promise.all(unreadable.map((m) => rows(m.id)));
    expect(text).toMatchObject([{ tenant_id: null, body: '"not an archive message"' }]);
    expect(bytes).toMatchObject([{ tenant_id: null, room_id: null, seq: null }]);
    expect(JSON.parse(bytes?.[0]?.body ?? "null")).toEqual({ unreadable: "bytes", base64: "AQID" });
    expect(badTenant).toMatchObject([{ tenant_id: null, room_id: t.roomId }]);
    expect((await list(t.admin)).body.deadLetters).toEqual([]);
    expect((await api(t.admin, "POST", `/api/admin/dead-letters/${unreadable[0]?.id}/replay`)).status).toBe(
      404,
    );
  });
});

describe("replaying dead letters", () => {
  it("sends a letter back to the archive, deletes it and records who replayed it", async () => {
    const t = await tenant();
    // A valid event the archive gave up on (say, D1 was down through every retry).
    const body: ArchiveMessage = { tenantId: t.name, roomId: t.roomId, event: message(t.admin, 7, "late") };
    const id = unique("late");
    await deliver(DEAD_LETTERS, [{ id, body }]);

    const res = await api(t.admin, "POST", `/api/admin/dead-letters/${id}/replay`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ replayed: 1, remaining: 0 });
    expect(await rows(id)).toEqual([]);
    expect((await list(t.admin)).body.deadLetters).toEqual([]);
    expect((await api(t.admin, "POST", `/api/admin/dead-letters/${id}/replay`)).status).toBe(404);

    // The local queue runs the archive consumer in this runtime: the event arrives there.
    const archived = async () =>
      (
        await historyAll<{ text: string }>(
          "SELECT text FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq = 7",
          t.name,
          t.roomId,
        )
      )[0] ?? null;
    await eventually("the replayed event in the archive", async () => (await archived()) !== null);
    expect(await archived()).toEqual({ text: "late" });

    const audit = await json<{
      entries: { actor: string; action: string; target: string; detail: unknown }[];
    }>(api(t.admin, "GET", "/api/audit"));
    expect(audit.entries).toContainEqual(
      expect.objectContaining({
        actor: t.admin.id,
        action: "dead_letter.replayed",
        target: id,
        detail: { roomId: t.roomId, seq: 7 },
      }),
    );
  });

  it("replays every letter of the caller's tenant and none of another's", async () => {
    const t = await tenant();
    const other = await tenant();
    const mine = [1, 2, 3].map((seq) => ({
      id: unique("mine"),
      body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, seq, `mine ${seq}`) },
    }));
    const theirs = {
      id: unique("theirs"),
      body: { tenantId: other.name, roomId: other.roomId, event: message(other.admin, 1, "theirs") },
    };
    await deliver(DEAD_LETTERS, [...mine, theirs]);

    expect(await json(api(t.admin, "POST", "/api/admin/dead-letters/replay"))).toEqual({
      replayed: 3,
      remaining: 0,
    });
    for (const m of mine) expect(await rows(m.id)).toEqual([]);
    expect((await list(other.admin)).body.deadLetters.map((l) => l.id)).toEqual([theirs.id]);
    await eventually("the replayed events in the archive", async () => {
      const rows = await historyAll<{ seq: number }>(
        "SELECT seq FROM archived_events WHERE tenant_id = ? AND room_id = ?",
        t.name,
        t.roomId,
      );
      return rows.length === 3;
    });
    const audit = await json<{ entries: { action: string; target: string }[] }>(
      api(t.admin, "GET", "/api/audit"),
    );
    const replayed = audit.entries.filter((e) => e.action === "dead_letter.replayed").map((e) => e.target);
    expect(replayed.sort()).toEqual(mine.map((m) => m.id).sort());
  });

  it("replays letters whose bodies together pass the size of one queue send", async () => {
    const t = await tenant();
    // Three ~100 KB bodies: more than one sendBatch takes (256 KB), each within a message's 128 KB.
    const big = [1, 2, 3].map((seq) => ({
      id: unique("big"),
      body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, seq, "x".repeat(100_000)) },
    }));
    await deliver(DEAD_LETTERS, big);
    expect(await json(api(t.admin, "POST", "/api/admin/dead-letters/replay"))).toEqual({
      replayed: 3,
      remaining: 0,
    });
    await eventually("the large replayed events in the archive", async () => {
      const rows = await historyAll<{ seq: number }>(
        "SELECT seq FROM archived_events WHERE tenant_id = ? AND room_id = ? AND length(text) = 100000",
        t.name,
        t.roomId,
      );
      return rows.length === 3;
    });
  });
});

describe("listing dead letters", () => {
  it("pages newest first, with hasMore and a cursor that orders letters of the same millisecond", async () => {
    const t = await tenant();
    const letters = [1, 2, 3, 4, 5].map((seq) => ({
      id: unique("page"),
      body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, seq, `page ${seq}`) },
    }));
    // Two deliveries, so some letters share a receivedAt and some do not.
    await deliver(DEAD_LETTERS, letters.slice(0, 3));
    await deliver(DEAD_LETTERS, letters.slice(3));
    const all = (await list(t.admin, "?limit=200")).body.deadLetters;
    expect(all).toHaveLength(5);
    for (let i = 1; i < all.length; i++) {
      const [a, b] = [all[i - 1]!, all[i]!];
      expect(a.receivedAt > b.receivedAt || (a.receivedAt === b.receivedAt && a.id > b.id)).toBe(true);
    }

    const seen: string[] = [];
    let query = "?limit=2";
    for (let pages = 0; pages < 10; pages++) {
      const { body } = await list(t.admin, query);
      seen.push(...body.deadLetters.map((l) => l.id));
      if (!body.hasMore) break;
      expect(body.next).toEqual(expect.any(String));
      query = `?limit=2&before=${encodeURIComponent(body.next ?? "")}`;
    }
    expect(seen).toEqual(all.map((l) => l.id));

    const oldest = all.at(-1)!;
    const older = await list(t.admin, `?before=${oldest.receivedAt}`);
    expect(older.body.deadLetters).toEqual([]);
    const newer = await list(t.admin, `?before=${all[0]!.receivedAt + 1}`);
    expect(newer.body.deadLetters).toHaveLength(5);
  });

  it("answers bad input with 400 or 404 and changes nothing", async () => {
    const t = await tenant();
    const id = unique("keep");
    await deliver(DEAD_LETTERS, [
      { id, body: { tenantId: t.name, roomId: t.roomId, event: message(t.admin, 1, "keep") } },
    ]);
    for (const query of [
      "?limit=0",
      "?limit=201",
      "?limit=x",
      "?before=yesterday",
      "?before=1:",
      "?before=-1",
    ]) {
      const res = await list(t.admin, query);
      expect(res.status, query).toBe(400);
      expect(res.body.error?.code, query).toBe("bad_request");
    }
    for (const bad of ["nope", "%2E%2E", "a".repeat(200)]) {
      const res = await api(t.admin, "POST", `/api/admin/dead-letters/${bad}/replay`);
      expect(res.status, bad).toBe(404);
    }
    expect(await rows(id)).toHaveLength(1);
  });
});
