/** The fallback transports of docs/protocol.md: Server-Sent Events and long polling, with the socket's
 * order and exactly-once semantics, membership checks and resume by Last-Event-ID. */
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { type SseFrame, SseParser } from "../client/sdk/index.ts";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import type { Room } from "../durable-objects/room.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { roomStub } from "../worker/stubs.ts";
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

/** Reads an SSE response frame by frame with the SDK's parser, as EventSource would. */
class SseReader {
  readonly frames: SseFrame[] = [];
  done = false;
  readonly #parser = new SseParser();
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;

  constructor(res: Response) {
    this.#reader = (res.body as ReadableStream<Uint8Array>).getReader();
  }

  /** Reads until `check` holds (or the stream ends, which fails unless `check` then holds). */
  async until(check: (frames: SseFrame[]) => boolean, what: string): Promise<void> {
    while (!check(this.frames)) {
      if (this.done) throw new Error(`stream ended while waiting for ${what}`);
      const { value, done } = await this.#reader.read();
      if (done) this.done = true;
      else this.frames.push(...this.#parser.push(value));
    }
  }

  events(): RoomEvent[] {
    return this.frames.filter((f) => f.event === "event").map((f) => JSON.parse(f.data) as RoomEvent);
  }

  async ended(): Promise<boolean> {
    while (!this.done) {
      const { done } = await this.#reader.read();
      if (done) this.done = true;
    }
    return true;
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

function openSse(user: User, roomId: string, query = "after=0", headers: Record<string, string> = {}) {
  return fetchWorker(`/api/rooms/${roomId}/events?${query}`, {
    headers: { ...authHeaders(user.token), ...headers },
  });
}

async function post(user: User, roomId: string, clientId: string, text: string): Promise<number> {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId, text });
  expect(res.status).toBe(201);
  return (await json<{ seq: number }>(res)).seq;
}

describe("Server-Sent Events", () => {
  it("replays after N, marks ready, then streams live events with their seq as id", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const seqs = [await post(ada, roomId, "a1", "one"), await post(ada, roomId, "a2", "two")];
    const res = await openSse(ada, roomId, `after=${seqs[0]}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const sse = new SseReader(res);
    await sse.until((f) => f.some((x) => x.event === "ready"), "ready");
    expect(sse.frames.map((f) => [f.event, f.id])).toEqual([
      ["event", String(seqs[1])],
      ["ready", undefined],
    ]);
    expect(JSON.parse(sse.frames[1]?.data ?? "{}")).toEqual({ type: "ready", lastSeq: seqs[1] });

    const live = await post(ada, roomId, "a3", "three");
    await sse.until((f) => f.some((x) => x.id === String(live)), "the live event");
    expect(sse.events().map((e) => e.seq)).toEqual([seqs[1], live]);
    expect(sse.events().at(-1)).toMatchObject({ kind: "message", text: "three", clientId: "a3" });
    await sse.cancel();
  });

  it("resumes from Last-Event-ID, and delivers what a socket sender sends, once and in order", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const first = await post(ada, roomId, "b1", "before");
    const sse = new SseReader(await openSse(ada, roomId, "after=0", { "last-event-id": String(first) }));
    await sse.until((f) => f.some((x) => x.event === "ready"), "ready");
    expect(sse.events()).toEqual([]);
    const sender = await Client.open(ada, roomId, first);
    await sender.ready();
    for (let i = 0; i < 20; i++) sender.send({ type: "send", clientId: `s${i}`, text: `socket ${i}` });
    await sender.until((c) => c.acks().length === 20, "20 acks");
    const acked = sender.acks().map((a) => a.seq);
    await sse.until((f) => f.filter((x) => x.event === "event").length >= 20, "20 events");
    expect(sse.events().map((e) => e.seq)).toEqual(acked);
    sender.close();
    await sse.cancel();
  });

  it("answers gap past the replay cap, refuses non-members and bad input, and ends when access ends", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    await post(ada, roomId, "c1", "x");
    expect((await openSse(ada, roomId, "after=99")).status).toBe(400);
    expect((await openSse(ada, roomId, "after=-1")).status).toBe(400);
    const outsider = await login(unique("t"));
    expect((await openSse(outsider, roomId)).status).toBe(404);
    const bob = await login(ada.tenant);
    expect((await openSse(bob, roomId)).status).toBe(403); // a channel he has not joined
    await join(bob, roomId);
    const sse = new SseReader(await openSse(bob, roomId));
    await sse.until((f) => f.some((x) => x.event === "ready"), "ready");
    expect((await api(bob, "POST", `/api/rooms/${roomId}/leave`)).status).toBe(200);
    expect(await sse.ended()).toBe(true);
  });
});

/** What the room holds for each of its SSE streams (its own accounting). */
function streamsOf(user: User, roomId: string) {
  return runInDurableObject(roomStub(env, user.tenant, roomId), (room: Room) => room.fallbackState().streams);
}

/** A message as large as an event gets: 10,000 control characters, each `\u0001` (6 bytes) in the
 * event's JSON, so about 60 KB per event (the request body stays under the 64 KiB frame limit). */
const HEAVY = "\u0001".repeat(10_000);
/** Most a stream may have queued in the room during its replay: one write of whole frames. */
const CHUNK_BOUND = 256 * 1024;

describe("bounded SSE streams", () => {
  it("replays a large backlog in bounded writes: an unread stream holds one chunk, not the replay", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    let last = 0;
    for (let i = 0; i < 100; i++) last = await post(ada, roomId, `heavy${i}`, HEAVY);
    // About 6 MB of replay per stream: today's main builds it as one string and writes it at once.
    const idle = [];
    for (let i = 0; i < 4; i++) idle.push(await openSse(ada, roomId));
    const streams = await streamsOf(ada, roomId);
    expect(streams).toHaveLength(4);
    for (const s of streams) {
      expect(s.peakQueuedBytes).toBeGreaterThan(0);
      expect(s.peakQueuedBytes).toBeLessThanOrEqual(CHUNK_BOUND);
    }
    // A stream that reads gets the whole replay, in order and once, then ready, then live events.
    const reader = new SseReader(await openSse(ada, roomId));
    await reader.until((f) => f.some((x) => x.event === "ready"), "ready");
    expect(reader.events().map((e) => e.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    expect(reader.events().at(-1)).toMatchObject({ text: HEAVY });
    expect(JSON.parse(reader.frames.at(-1)?.data ?? "{}")).toEqual({ type: "ready", lastSeq: last });
    const live = await post(ada, roomId, "live", "after the replay");
    await reader.until((f) => f.some((x) => x.id === String(live)), "the live event");
    expect(
      reader
        .events()
        .map((e) => e.seq)
        .slice(-2),
    ).toEqual([last, live]);
    for (const s of await streamsOf(ada, roomId)) expect(s.peakQueuedBytes).toBeLessThanOrEqual(CHUNK_BOUND);
    await reader.cancel();
    for (const res of idle) await res.body?.cancel();

    // A long poll over the same backlog answers a bounded page at a time, and pages through it all.
    const seen: number[] = [];
    for (let after = 0; after < live; ) {
      const res = await api(ada, "GET", `/api/rooms/${roomId}/poll?after=${after}&timeout=0`);
      const body = await res.text();
      expect(new TextEncoder().encode(body).byteLength).toBeLessThanOrEqual(CHUNK_BOUND);
      const page = JSON.parse(body) as { events: RoomEvent[] };
      expect(page.events.length).toBeGreaterThan(0);
      seen.push(...page.events.map((e) => e.seq));
      after = page.events.at(-1)?.seq ?? live;
    }
    expect(seen).toEqual(Array.from({ length: live }, (_, i) => i + 1));
  });

  it("holds at most 5 streams and waiting polls per user in a room: more are refused, the rest work, a closed one frees its slot", async () => {
    const max = DEFAULT_LIMITS.maxStreamsPerUser;
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const head = await post(ada, roomId, "m1", "one");
    const readers: SseReader[] = [];
    for (let i = 0; i < max; i++) {
      const res = await openSse(ada, roomId);
      expect(res.status).toBe(200);
      const reader = new SseReader(res);
      await reader.until((f) => f.some((x) => x.event === "ready"), "ready");
      readers.push(reader);
    }
    const refused = await openSse(ada, roomId);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await refused.json()).toMatchObject({
      error: { code: "rate_limited", retryAfter: expect.any(Number) },
    });
    // A poll that would wait needs a slot too; one that answers at once does not.
    const waiting = await api(ada, "GET", `/api/rooms/${roomId}/poll?after=${head}&timeout=25`);
    expect(waiting.status).toBe(429);
    expect(waiting.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await api(ada, "GET", `/api/rooms/${roomId}/poll?after=0&timeout=25`)).status).toBe(200);
    // The refusals held nothing; the slots are per user.
    expect(await streamsOf(ada, roomId)).toHaveLength(max);
    const other = new SseReader(await openSse(bob, roomId));
    await other.until((f) => f.some((x) => x.event === "ready"), "bob's ready");

    const live = await post(ada, roomId, "m2", "two");
    for (const r of [...readers, other]) await r.until((f) => f.some((x) => x.id === String(live)), "live");

    // A client that goes away frees its slot as soon as the room hears of it.
    await readers[0]?.cancel();
    await vi.waitFor(async () => {
      expect((await streamsOf(ada, roomId)).filter((s) => s.userId === ada.id)).toHaveLength(max - 1);
    });
    const again = new SseReader(await openSse(ada, roomId, `after=${live}`));
    await again.until((f) => f.some((x) => x.event === "ready"), "ready on the freed slot");
    for (const r of [...readers.slice(1), other, again]) await r.cancel();
  });

  it("frees every slot when the room object is reset", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const open = async () => {
      const res = await openSse(ada, roomId);
      expect(res.status).toBe(200);
      const reader = new SseReader(res);
      await reader.until((f) => f.some((x) => x.event === "ready"), "ready");
      return reader;
    };
    const before = [];
    for (let i = 0; i < DEFAULT_LIMITS.maxStreamsPerUser; i++) before.push(await open());
    expect((await openSse(ada, roomId)).status).toBe(429);
    // What a restart or an eviction does to the object: its instance, and every stream with it, is
    // gone (an object with open streams is never evicted while they last).
    await abortAllDurableObjects();
    for (const r of before) await r.ended().catch(() => true);
    const after = [];
    for (let i = 0; i < DEFAULT_LIMITS.maxStreamsPerUser; i++) after.push(await open());
    for (const r of after) await r.cancel();
  });

  it("pauses a live reader that would have more than 4 MiB unread, never holding more: it catches up as it reads; one stalled 30 s is closed and resumes with Last-Event-ID", async () => {
    const cap = DEFAULT_LIMITS.unconfirmedStreamBytes;
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const first = await post(ada, roomId, "s0", "start");
    const slow = new SseReader(await openSse(ada, roomId));
    const stalled = new SseReader(await openSse(ada, roomId));
    for (const r of [slow, stalled]) await r.until((f) => f.some((x) => x.event === "ready"), "ready");
    // Both stop reading; about 6 MB of events follow.
    let last = first;
    let peak = 0;
    for (let i = 0; i < 100; i++) {
      last = await post(ada, roomId, `big${i}`, HEAVY);
      for (const s of await streamsOf(ada, roomId)) peak = Math.max(peak, s.peakQueuedBytes);
    }
    await vi.waitFor(async () => {
      const streams = await streamsOf(ada, roomId);
      expect(streams.map((s) => s.live)).toEqual([false, false]);
      for (const s of streams) peak = Math.max(peak, s.peakQueuedBytes);
    });
    expect(peak).toBeLessThanOrEqual(cap);

    // The slow one reads again: everything, in order and once, and it is live again.
    await slow.until((f) => f.some((x) => x.id === String(last)), "the last event");
    const all = Array.from({ length: last }, (_, i) => i + 1);
    expect(slow.events().map((e) => e.seq)).toEqual(all);
    const live = await post(ada, roomId, "s1", "live again");
    await slow.until((f) => f.some((x) => x.id === String(live)), "a live event");

    // The stalled one took nothing for the stall time: closed at the room's next event.
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + DEFAULT_LIMITS.flowStallMs + 1000 });
    try {
      await post(ada, roomId, "s2", "after the stall");
      await vi.waitFor(async () => expect(await streamsOf(ada, roomId)).toHaveLength(1));
    } finally {
      vi.useRealTimers();
    }
    await expect(stalled.ended()).rejects.toThrow();
    const got = stalled.events().map((e) => e.seq);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i + 1));
    // Resuming from the last id it has gets the rest, once each.
    const resumed = new SseReader(
      await openSse(ada, roomId, "after=0", { "last-event-id": String(got.at(-1) ?? 0) }),
    );
    await resumed.until((f) => f.some((x) => x.event === "ready"), "ready");
    expect([...got, ...resumed.events().map((e) => e.seq)]).toEqual([...all, live, live + 1]);
    await resumed.cancel();
    await slow.cancel();
  });
});

describe("long polling", () => {
  it("answers at once when events exist, waits for the next one otherwise, and is empty at the timeout", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const seq = await post(ada, roomId, "p1", "hello");
    const now = await json<{ events: RoomEvent[]; lastSeq: number }>(
      api(ada, "GET", `/api/rooms/${roomId}/poll?after=${seq - 1}&timeout=25`),
    );
    expect(now).toMatchObject({ lastSeq: seq, events: [{ seq, text: "hello" }] });

    const waiting = api(ada, "GET", `/api/rooms/${roomId}/poll?after=${seq}&timeout=25`);
    const next = await post(ada, roomId, "p2", "later");
    const woke = await json<{ events: RoomEvent[]; lastSeq: number }>(waiting);
    expect(woke).toMatchObject({ lastSeq: next, events: [{ seq: next, text: "later" }] });

    const empty = await json(api(ada, "GET", `/api/rooms/${roomId}/poll?after=${next}&timeout=0`));
    expect(empty).toEqual({ events: [], lastSeq: next });
  });

  it("refuses bad input and non-members", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    expect((await api(ada, "GET", `/api/rooms/${roomId}/poll?after=50&timeout=0`)).status).toBe(400);
    expect((await api(ada, "GET", `/api/rooms/${roomId}/poll?after=0&timeout=26`)).status).toBe(400);
    expect((await api(ada, "GET", `/api/rooms/${roomId}/poll?after=x`)).status).toBe(400);
    const bob = await login(ada.tenant);
    expect((await api(bob, "GET", `/api/rooms/${roomId}/poll?after=0&timeout=0`)).status).toBe(403);
    const outsider = await login(unique("t"));
    expect((await api(outsider, "GET", `/api/rooms/${roomId}/poll?after=0&timeout=0`)).status).toBe(404);
  });
});
