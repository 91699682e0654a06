/** The fallback transports of PROTOCOL.md: Server-Sent Events and long polling, with the socket's
 * order and exactly-once semantics, membership checks and resume by Last-Event-ID. */
import { describe, expect, it } from "vitest";
import { type SseFrame, SseParser } from "../client/sdk/index.ts";
import type { RoomEvent } from "../protocol/index.ts";
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
