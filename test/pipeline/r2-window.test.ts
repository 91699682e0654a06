/**
 * R2 holds every room's complete history, and the room's own storage is bounded (docs/architecture.md,
 * decision 4): sealing by count and by age, the hot window and the command window (no row at all for
 * events older than it), and everything that must still hold for those events: history pages,
 * replays, long polls, the SDK's catch-up, exports checked by the real verify-export CLI, deletes
 * read back from R2 and scrubbed from every store, edits and reactions refused, retention, and
 * crashes in the middle of sealing. This project runs with PARLEY_HOT_EVENTS=500,
 * PARLEY_SEGMENT_EVENTS=100, PARLEY_COMMAND_WINDOW_EVENTS=1000 and PARLEY_SEAL_AFTER_MS=60000.
 */
import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../../durable-objects/room.ts";
import { WRITTEN_BEHIND } from "../../durable-objects/room-log.ts";
import { verifyExport } from "../../protocol/export-verify.ts";
import type { RoomEvent, SearchHit } from "../../protocol/index.ts";
import { roomStub } from "../../worker/stubs.ts";
import {
  after,
  api,
  Client,
  createRoom,
  exportRoom,
  fetchWorker,
  historyAll,
  join,
  json,
  login,
  settleInbox,
  storeWatermark,
  type User,
  unique,
} from "../helpers.ts";
import { Network, session, until } from "../sdk-helpers.ts";
import type { CliRun } from "../verify-cli.ts";
import { undoSchemaV8 } from "./legacy-room.ts";
import { alarm, deliver, drainAll, eventsIn, type Stub, withFakeQueue } from "./queue.ts";

const DAY = 24 * 60 * 60 * 1000;
const SEAL_AFTER = 60_000;
const WINDOW = 1000;
const HOT = 500;
const SEGMENT = 100;

interface SegmentLine {
  seq: number;
  v?: number;
  digest: string;
  chain: string;
  nonce?: string;
  contentHash?: string;
  metaHash?: string;
  event: RoomEvent;
}

/** Sends `n` messages over the socket, a few hundred at a time, and returns their seqs. */
async function sendMany(client: Client, prefix: string, n: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let done = 0; done < n; ) {
    const from = client.acks().length;
    const chunk = Math.min(250, n - done);
    for (let i = 0; i < chunk; i++)
      client.send({ type: "send", clientId: `${prefix}${done + i}`, text: `${prefix} message ${done + i}` });
    await client.until((c) => c.acks().length >= from + chunk, `${chunk} acks`);
    seqs.push(
      ...client
        .acks()
        .slice(from)
        .map((a) => a.seq),
    );
    done += chunk;
  }
  return seqs;
}

async function send(user: User, roomId: string, text: string, extra: Record<string, unknown> = {}) {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, {
    clientId: unique("c"),
    text,
    ...extra,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await json<{ seq: number }>(res)).seq;
}

/** Runs the room's alarm until sealing, the windows and the rewrites have nothing left to do. */
async function settle(stub: Stub) {
  let last = "";
  for (let i = 0; i < 30; i++) {
    await alarm(stub);
    const s = await stub.archiveState();
    const now = JSON.stringify([s.sealedSeq, s.coldSeq, s.floor, s.dirtySegments]);
    if (now === last && s.dirtySegments === 0) return s;
    last = now;
  }
  throw new Error("the room's segments did not settle");
}

/** Holds the room's segment work off (as the backoff after an R2 failure does), so a test sees what
 * readers serve before a rewrite; `false` lets it go on. */
async function holdRewrites(stub: Stub, hold: boolean): Promise<void> {
  await runInDurableObject(stub, (_r: Room, state) => {
    if (hold) state.storage.kv.put("segments_retry_at", Date.now() + 3_600_000);
    else state.storage.kv.delete("segments_retry_at");
  });
}

async function history(user: User, roomId: string, query: string): Promise<RoomEvent[]> {
  const res = await api(user, "GET", `/api/rooms/${roomId}/messages?${query}`);
  expect(res.status).toBe(200);
  return (await json<{ events: RoomEvent[] }>(res)).events;
}

/** The whole log through history pages of 200, oldest first. */
async function wholeHistory(user: User, roomId: string, lastSeq: number): Promise<RoomEvent[]> {
  const all: RoomEvent[] = [];
  for (let after = 0; after < lastSeq; after += 200)
    all.push(...(await history(user, roomId, `after=${after}&limit=200`)));
  return all;
}

/** Every line of every segment of the room in R2, by key. */
async function segments(tenant: string, roomId: string): Promise<Map<string, SegmentLine[]>> {
  const prefix = `${tenant}/rooms/${roomId}/segments/`;
  const out = new Map<string, SegmentLine[]>();
  for (const o of (await env.FILES.list({ prefix })).objects) {
    const body = (await env.FILES.get(o.key)) as R2ObjectBody;
    const text = await new Response(body.body.pipeThrough(new DecompressionStream("gzip"))).text();
    out.set(
      o.key.slice(prefix.length),
      text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as SegmentLine),
    );
  }
  return out;
}

async function rowCounts(stub: Stub) {
  return runInDurableObject(stub, (_room: Room, state) => {
    const n = (q: string) => state.storage.sql.exec<{ n: number }>(q).one().n;
    return {
      rows: n("SELECT COUNT(*) AS n FROM events"),
      hot: n("SELECT COUNT(*) AS n FROM events WHERE json != ''"),
      minSeq: n("SELECT COALESCE(MIN(seq), 0) AS n FROM events"),
      reactionsBelow: n(
        "SELECT COUNT(*) AS n FROM reactions WHERE target <= (SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'floor_seq')",
      ),
      mentionsBelow: n(
        "SELECT COUNT(*) AS n FROM mentions WHERE seq <= (SELECT COALESCE(MAX(CAST(value AS INTEGER)), 0) FROM meta WHERE key = 'floor_seq')",
      ),
      reactions: n("SELECT COUNT(*) AS n FROM reactions"),
      mentions: n("SELECT COUNT(*) AS n FROM mentions"),
      segmentRows: n("SELECT COUNT(*) AS n FROM segments"),
      bytes: state.storage.sql.databaseSize,
    };
  });
}

async function cli(text: string, keys: unknown): Promise<CliRun> {
  const res = await env.VERIFY_EXPORT_CLI.fetch("http://cli/", {
    method: "POST",
    body: JSON.stringify({ export: text, keys }),
  });
  return res.json<CliRun>();
}

/** Exports the room and runs `npm run verify-export -- --keys <published keys>` on the file. */
async function exportVerified(user: User, roomId: string) {
  const text = await exportRoom(user, roomId);
  const keys = await (await fetchWorker("/.well-known/parley-export-keys")).json();
  const run = await cli(text, keys);
  expect(run.status, run.stdout + run.stderr).toBe(0);
  const lines = text.trim().split("\n");
  return {
    text,
    lines,
    run,
    events: lines.slice(0, -1).map((l) => (JSON.parse(l) as { event: RoomEvent }).event),
  };
}

async function searchFor(user: User, q: string): Promise<SearchHit[]> {
  const res = await api(user, "GET", `/api/search?q=${encodeURIComponent(q)}`);
  expect(res.status).toBe(200);
  return (await res.json<{ hits: SearchHit[] }>()).hits;
}

/** A room of `n` messages by `ada` (plus her join), settled: its floor has risen when n > 1,100. */
async function bigRoom(n: number) {
  const ada = await login(unique("t"), "Ada");
  const roomId = await createRoom(ada);
  const stub = roomStub(env, ada.tenant, roomId) as Stub;
  const client = await Client.open(ada, roomId);
  await client.ready();
  const seqs = await sendMany(client, "m", n);
  await client.until((c) => c.events.length >= n + 1, "every event");
  const original = new Map(client.events.map((e) => [e.seq, e]));
  client.close();
  return { ada, roomId, stub, seqs, original, state: await settle(stub) };
}

describe("R2 holds the complete history", () => {
  it("seals a full range at once and the rest once its oldest event is PARLEY_SEAL_AFTER_MS old", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "a", 250);
    await client.until((c) => c.events.length >= 251, "every event");
    await alarm(stub);
    expect(await stub.archiveState()).toMatchObject({ lastSeq: 251, sealedSeq: 200 });

    // The rest waits for its age: the alarm is armed for it, and sealing at any earlier time does nothing.
    const oldest = client.events.find((e) => e.seq === 201)?.ts ?? 0;
    const armed = await runInDurableObject(stub, (_r: Room, s) => s.storage.getAlarm());
    expect(armed).not.toBeNull();
    expect(armed).toBeLessThanOrEqual(oldest + SEAL_AFTER);
    const seal = (now: number) => runInDurableObject(stub, (room: Room) => room.maintenance.seal(now));
    expect(await seal(oldest + SEAL_AFTER - 1)).toMatchObject({ sealedSeq: 200 });
    expect(await seal(oldest + SEAL_AFTER)).toMatchObject({ sealedSeq: 251 });

    // A shorter range is final: the next event starts a range of its own.
    const next = await client.sendMessage("late", "late message");
    const nextTs = (await history(ada, roomId, `after=${next - 1}&limit=1`))[0]?.ts ?? 0;
    expect(await seal(nextTs + SEAL_AFTER)).toMatchObject({ sealedSeq: next });
    client.close();

    const inR2 = await segments(ada.tenant, roomId);
    expect([...inR2.keys()]).toEqual([
      "000000000001-100.ndjson.gz",
      "000000000101-200.ndjson.gz",
      "000000000201-251.ndjson.gz",
      `000000000252-${next}.ndjson.gz`,
    ]);
    // Each event once, in order, as history serves it, with its digest, chain link and evidence.
    const lines = [...inR2.values()].flat();
    expect(lines.map((l) => l.seq)).toEqual(Array.from({ length: next }, (_, i) => i + 1));
    expect(lines.map((l) => l.event)).toEqual(await wholeHistory(ada, roomId, next));
    for (const l of lines) {
      expect(l).toMatchObject({
        v: 2,
        digest: expect.stringMatching(/^[0-9a-f]{64}$/),
        nonce: expect.any(String),
      });
    }
  });

  it("keeps the room's rows bounded however far the log runs past the hot and command windows", async () => {
    const ada = await login(unique("t"), "Ada");
    const bob = await login(ada.tenant, "Bob");
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const client = await Client.open(ada, roomId);
    await client.ready();
    // A reaction and a mention early on: their rows go with the rows of their events.
    const early = await client.sendMessage("early", `hello @${bob.id}`);
    expect(
      (
        await api(bob, "POST", `/api/rooms/${roomId}/messages/${early}/reactions`, {
          clientId: "r",
          emoji: "👍",
          on: true,
        })
      ).status,
    ).toBe(201);
    const sizes: number[] = [];
    for (let round = 0; round < 6; round++) {
      await sendMany(client, `r${round}-`, 500);
      const state = await settle(stub);
      const counts = await rowCounts(stub);
      // Rows: at most the command window plus what sealing and whole segments leave behind.
      expect(counts.rows).toBeLessThanOrEqual(WINDOW + 2 * SEGMENT);
      expect(counts.rows).toBe(state.lastSeq - state.floor);
      expect(counts.minSeq).toBe(state.floor + 1);
      // JSON only for the hot window.
      expect(counts.hot).toBeLessThanOrEqual(HOT + 2 * SEGMENT);
      expect(state.sealedSeq).toBeGreaterThan(state.lastSeq - SEGMENT);
      expect(counts).toMatchObject({
        reactionsBelow: 0,
        mentionsBelow: 0,
        segmentRows: Math.floor(state.sealedSeq / SEGMENT),
      });
      if (round >= 2) sizes.push(counts.bytes);
    }
    const { floor, lastSeq } = await stub.archiveState();
    expect(floor).toBeGreaterThan(early);
    expect(lastSeq).toBe(3004); // two joins, a message, a reaction, 3,000 messages
    expect(await rowCounts(stub)).toMatchObject({ reactions: 0, mentions: 0 });
    // The file does not grow with the log once both windows are full (pages freed are reused).
    const [first = 0] = sizes;
    for (const size of sizes) expect(size).toBeLessThanOrEqual(first * 1.25);
    // Unread counts from the floor for a reader whose marker is below it (docs/protocol.md), once
    // the room's push of its new floor has reached the reader's inbox (it is sent after the alarm
    // that moved the floor, not within it).
    await settleInbox(ada.tenant, roomId);
    const rooms = await json<{ id: string; unread: number; mentions: number }[]>(
      api(bob, "GET", "/api/rooms"),
    );
    expect(rooms.find((r) => r.id === roomId)).toMatchObject({ unread: lastSeq - floor, mentions: 0 });
    client.close();
  });
});

describe("reading a room past its floor", () => {
  it("serves history pages, gaps, long polls and the SDK's catch-up across the floor, byte for byte", async () => {
    const { ada, roomId, original, state } = await bigRoom(1400);
    expect(state).toMatchObject({ lastSeq: 1401, floor: 400, coldSeq: 900, sealedSeq: 1400 });
    // A page that spans the floor, either way.
    expect(await history(ada, roomId, "after=350&limit=100")).toEqual(
      Array.from({ length: 100 }, (_, i) => original.get(i + 351)),
    );
    expect(await history(ada, roomId, "before=451&limit=100")).toEqual(
      Array.from({ length: 100 }, (_, i) => original.get(i + 351)),
    );
    expect(await wholeHistory(ada, roomId, 1401)).toEqual([...original.values()]);
    // A socket that far behind gets `gap`; a long poll reads R2 for it.
    const late = await Client.open(ada, roomId, 10);
    await late.ready();
    expect(late.frames[0]).toMatchObject({ type: "gap", after: 10 });
    late.close();
    const polled = await json<{ events: RoomEvent[] }>(
      api(ada, "GET", `/api/rooms/${roomId}/poll?after=5&timeout=0`),
    );
    expect(polled.events).toEqual(Array.from({ length: 100 }, (_, i) => original.get(i + 6)));
    // The SDK starting from nothing fills its gap from history: every event once, in order.
    const net = new Network();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada) });
    await a.s.start();
    await until(() => a.s.status.state === "online" && a.events.length >= 1401, "caught up");
    expect(a.events).toEqual([...original.values()]);
    a.s.close();
  });

  it("exports a room past its floor, and the verify-export CLI accepts the file", async () => {
    const ada = await login(unique("t"), "Ada");
    const bob = await login(ada.tenant, "Bob");
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    // Every kind of event, early, so that it ends up older than the command window.
    const kept = await send(ada, roomId, "kept");
    await api(ada, "PATCH", `/api/rooms/${roomId}/messages/${kept}`, {
      clientId: "e1",
      text: "kept, edited",
    });
    const secret = await send(bob, roomId, "a secret");
    await api(bob, "PATCH", `/api/rooms/${roomId}/messages/${secret}`, {
      clientId: "e2",
      text: "secret, edited",
    });
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${secret}`)).status).toBe(201);
    await api(bob, "POST", `/api/rooms/${roomId}/messages/${kept}/reactions`, {
      clientId: "r1",
      emoji: "👍",
      on: true,
    });
    await send(bob, roomId, "a reply", { threadRoot: kept });
    await api(ada, "PATCH", `/api/rooms/${roomId}`, { name: unique("renamed") });
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "x", 1300);
    client.close();
    const state = await settle(stub);
    // Every kind of event above is older than the command window now.
    expect(state.floor).toBe(300);

    const { lines, events, run } = await exportVerified(ada, roomId);
    expect(run.stdout).toMatch(/OK/);
    expect(lines).toHaveLength(state.lastSeq + 1);
    expect(events).toEqual(await wholeHistory(ada, roomId, state.lastSeq));
    expect(await verifyExport(lines)).toMatchObject({
      ok: true,
      rooms: [{ room: roomId, events: state.lastSeq, deleted: 2 }],
    });
  });
});

describe("shipping from a watermark older than the floor", () => {
  it("rebuilds search and the D1 history from R2 (an upgrade, a rebuild)", async () => {
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    // Neither store gets anything while the log runs past its floor: search's watermark is held
    // ahead of the log, and what the room sends to the queue is never delivered.
    await stub.writeWatermarks();
    await runInDurableObject(stub, (_r: Room, state) => {
      storeWatermark(state.storage.sql, "search_indexed", () => 1_000_000);
    });
    const early = await send(ada, roomId, "the xylophonic early bird");
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "v", 1200);
    client.close();
    const state = await settle(stub);
    expect(state.floor).toBeGreaterThan(early);
    queue.take();
    expect(await searchFor(ada, "xylophonic")).toEqual([]);

    // Both watermarks back to 0, as a rebuilt store (or the upgrade, docs/deploy.md) starts.
    await stub.writeWatermarks();
    await runInDurableObject(stub, (_r: Room, s) => {
      for (const key of WRITTEN_BEHIND) storeWatermark(s.storage.sql, key, () => 0);
    });
    expect(await stub.searchSettled()).toMatchObject({ indexedThrough: state.lastSeq });
    expect((await searchFor(ada, "xylophonic")).map((h) => h.seq)).toEqual([early]);
    await drainAll(stub, queue);
    const rows = await historyAll<{ seq: number; text: string }>(
      "SELECT seq, text FROM archived_events WHERE tenant_id = ? AND room_id = ? ORDER BY seq",
      ada.tenant,
      roomId,
    );
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: state.lastSeq }, (_, i) => i + 1));
    expect(rows.find((r) => r.seq === early)?.text).toBe("the xylophonic early bird");
  });
});

describe("commands on events older than the command window", () => {
  it("deletes a message below the floor: read from R2, then scrubbed from its segment, search and the D1 history", async () => {
    const ada = await login(unique("t"), "Ada");
    const bob = await login(ada.tenant, "Bob");
    const carol = await login(ada.tenant, "Carol");
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    await join(carol, roomId);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const victim = await send(bob, roomId, "the zanzibarian original");
    const edit = (
      await json<{ seq: number }>(
        api(bob, "PATCH", `/api/rooms/${roomId}/messages/${victim}`, {
          clientId: "e1",
          text: "the quokkaesque edit",
        }),
      )
    ).seq;
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "y", 1300);
    client.close();
    await drainAll(stub, queue);
    expect((await stub.searchSettled()).indexedThrough).toBe((await stub.archiveState()).lastSeq);
    expect((await searchFor(ada, "quokkaesque")).map((h) => h.seq)).toEqual([victim]);
    const before = await settle(stub);
    expect(before.floor).toBeGreaterThan(edit);

    await holdRewrites(stub, true);
    // Only the author or an admin: Carol may not, and nothing is written.
    expect((await api(carol, "DELETE", `/api/rooms/${roomId}/messages/${victim}`)).status).toBe(403);
    // Not a message (Bob's join): not_found.
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/2`)).status).toBe(404);
    expect((await stub.archiveState()).lastSeq).toBe(before.lastSeq);

    const res = await api(bob, "DELETE", `/api/rooms/${roomId}/messages/${victim}?clientId=del1`);
    expect(res.status).toBe(201);
    const del = (await json<{ seq: number }>(res)).seq;
    expect(del).toBe(before.lastSeq + 1);
    // A retry answers the same seq; a second delete is a conflict.
    expect(await json(api(bob, "DELETE", `/api/rooms/${roomId}/messages/${victim}?clientId=del1`))).toEqual({
      seq: del,
    });
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${victim}`)).status).toBe(409);

    // Gone from reads at once, before the segments are rewritten.
    const [m] = await history(ada, roomId, `after=${victim - 1}&limit=1`);
    const [e] = await history(ada, roomId, `after=${edit - 1}&limit=1`);
    expect(m).toMatchObject({ seq: victim, text: "", deleted: true });
    expect(e).toMatchObject({ seq: edit, text: "", deleted: true });
    expect(JSON.stringify([...(await segments(ada.tenant, roomId)).values()])).toContain("quokkaesque");
    // Then from R2: the message's segment and its edit's are rewritten.
    expect((await stub.archiveState()).dirtySegments).toBeGreaterThan(0);
    await holdRewrites(stub, false);
    await settle(stub);
    const r2 = JSON.stringify([...(await segments(ada.tenant, roomId)).values()]);
    expect(r2).not.toContain("zanzibarian");
    expect(r2).not.toContain("quokkaesque");
    expect(
      await runInDurableObject(stub, (_r: Room, s) =>
        s.storage.sql.exec("SELECT seq FROM redactions").toArray(),
      ),
    ).toEqual([]);
    // From search, and from the D1 history (the delete finds its target's row by the target's time,
    // read from its segment).
    await stub.searchSettled();
    expect(await searchFor(ada, "quokkaesque")).toEqual([]);
    expect(await searchFor(ada, "zanzibarian")).toEqual([]);
    await alarm(stub);
    const sent = queue.take();
    expect(eventsIn(sent).find((e) => e.event.seq === del)?.targetTs).toBe(m?.ts);
    await deliver(sent);
    await drainAll(stub, queue);
    const rows = await historyAll<{ seq: number; text: string; deleted: number; json: string }>(
      "SELECT seq, text, deleted, json FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq IN (?, ?, ?)",
      ada.tenant,
      roomId,
      victim,
      edit,
      del,
    );
    expect(rows.sort((a, b) => a.seq - b.seq).map((r) => [r.seq, r.text, r.deleted])).toEqual([
      [victim, "", 1],
      [edit, "", 0],
      [del, "", 0],
    ]);
    expect(JSON.stringify(rows)).not.toMatch(/zanzibarian|quokkaesque/);
    // And the export still verifies: the tombstones are the tombstones of what was there.
    await exportVerified(ada, roomId);
  });

  it("refuses to edit or react to a message below the floor, writing nothing; a retry that old is a new event", async () => {
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const old = await send(ada, roomId, "old", { clientId: "once" });
    const reply = await send(ada, roomId, "a reply", { threadRoot: old });
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "z", 1200);
    const state = await settle(stub);
    expect(state.floor).toBeGreaterThan(reply);

    const edit = await api(ada, "PATCH", `/api/rooms/${roomId}/messages/${old}`, {
      clientId: "e",
      text: "new",
    });
    expect(edit.status).toBe(409);
    expect(await json(edit)).toEqual({ error: { code: "conflict", message: "message too old to change" } });
    const react = await api(ada, "POST", `/api/rooms/${roomId}/messages/${old}/reactions`, {
      clientId: "r",
      emoji: "👍",
      on: true,
    });
    expect(react.status).toBe(409);
    const from = client.frames.length;
    client.send({ type: "edit", clientId: "ws-e", target: old, text: "new" });
    const error = await client.next("error", from);
    expect(error).toMatchObject({ code: "conflict", clientId: "ws-e" });
    expect((await stub.archiveState()).lastSeq).toBe(state.lastSeq);

    // Replies read the root from R2: a top-level message may be replied to, a reply may not.
    const replied = await send(ada, roomId, "replying to the past", { threadRoot: old });
    expect(replied).toBe(state.lastSeq + 1);
    const nested = await api(ada, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: unique("c"),
      text: "x",
      threadRoot: reply,
    });
    expect(nested.status).toBe(400);
    const notMessage = await api(ada, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: unique("c"),
      text: "x",
      threadRoot: 1,
    });
    expect(notMessage.status).toBe(404);

    // The idempotency window: a clientId older than the command window is not recognised.
    const again = await api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: "once", text: "old" });
    expect(again.status).toBe(201);
    expect((await json<{ seq: number }>(again)).seq).toBe(replied + 1);
    client.close();
  });

  it("keeps a user's commands in order while one of them reads R2", async () => {
    const { ada, roomId, stub } = await bigRoom(1200);
    const client = await Client.open(ada, roomId, (await stub.archiveState()).lastSeq);
    await client.ready();
    client.send({ type: "delete", clientId: "d", target: 10 });
    client.send({ type: "send", clientId: "s", text: "after the delete" });
    await client.until((c) => c.acks().length >= 2, "both acks");
    expect(client.acks().map((a) => a.clientId)).toEqual(["d", "s"]);
    const [d, s] = client.acks().map((a) => a.seq);
    expect(s).toBe((d as number) + 1);
    client.close();
  });
});

describe("retention across the floor", () => {
  it("expires events below the floor in their segments, states it in the head, ships it, and the export verifies", async () => {
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();
    const first = await sendMany(client, "old", 149);
    await client.until((c) => c.events.length >= 150, "the old events");
    const cutoff = (client.events.at(-1)?.ts ?? 0) + 1;
    await after(cutoff);
    await sendMany(client, "new", 1300);
    client.close();
    await drainAll(stub, queue);
    const state = await settle(stub);
    expect(state.floor).toBeGreaterThan(first.at(-1) as number);

    expect((await api(ada, "PATCH", "/api/tenant", { retentionDays: 30 })).status).toBe(200);
    await holdRewrites(stub, true);
    expect(
      (await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(cutoff + 30 * DAY))).expired,
    ).toBe(150);
    // Tombstones at once (before any rewrite), and the head says how far retention went.
    const page = await history(ada, roomId, "after=0&limit=200");
    expect(page.slice(0, 150).every((e) => e.kind === "expired")).toBe(true);
    expect(page.slice(150).some((e) => e.kind === "expired")).toBe(false);
    const head = await json<{ expiredThrough: number; expiredBefore: number; retentionDays: number }>(
      api(ada, "GET", `/api/admin/rooms/${roomId}/head`),
    );
    expect(head).toMatchObject({ expiredThrough: 150, expiredBefore: cutoff, retentionDays: 30 });
    expect((await stub.archiveState()).dirtySegments).toBe(2);
    // The segments are rewritten with the tombstones and the metadata hash they are checked from.
    await holdRewrites(stub, false);
    await settle(stub);
    const lines = [...(await segments(ada.tenant, roomId)).values()].flat();
    expect(lines.filter((l) => l.event.kind === "expired").map((l) => l.seq)).toEqual(
      Array.from({ length: 150 }, (_, i) => i + 1),
    );
    for (const l of lines.slice(0, 150))
      expect(Object.keys(l).sort()).toEqual(["chain", "digest", "event", "metaHash", "seq", "v"]);
    expect(JSON.stringify(lines.slice(0, 150))).not.toContain("old message");
    // The D1 history gets the tombstones of events older than the window too.
    await drainAll(stub, queue);
    const archived = await historyAll<{ seq: number; kind: string; text: string }>(
      "SELECT seq, kind, text FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq <= 151 ORDER BY seq",
      ada.tenant,
      roomId,
    );
    expect(archived.filter((r) => r.kind === "expired").map((r) => r.seq)).toEqual(
      Array.from({ length: 150 }, (_, i) => i + 1),
    );
    expect(archived.filter((r) => r.seq <= 150 && r.text !== "")).toEqual([]);

    const { events } = await exportVerified(ada, roomId);
    expect(events.filter((e) => e.kind === "expired")).toHaveLength(150);
  });
});

/** `bucket` whose `put` crashes: before the object is stored, or after (`landsFirst`). */
function crashingPut(bucket: R2Bucket, landsFirst: boolean): R2Bucket {
  return new Proxy(bucket, {
    get(target, prop) {
      if (prop === "put")
        return async (...args: Parameters<R2Bucket["put"]>) => {
          if (landsFirst) await target.put(...args);
          throw new Error("crashed (simulated)");
        };
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("crashes", () => {
  it("loses nothing when the object is evicted in the middle of sealing, and seals the same range again", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "c", 50);
    await client.until((c) => c.events.length >= 51, "every event");
    const oldest = client.events[0]?.ts ?? 0;

    // The object dies twice while sealing: before its upload lands, then after it landed but before
    // the segment was recorded (the upload throws there, and the object is evicted).
    for (const landsFirst of [false, true]) {
      await runInDurableObject(stub, (room: Room) => {
        const r = room as unknown as { env: Env };
        r.env = { ...r.env, FILES: crashingPut(r.env.FILES, landsFirst) };
      });
      await expect(
        runInDurableObject(stub, (room: Room) => room.maintenance.seal(oldest + SEAL_AFTER)),
      ).rejects.toThrow("crashed (simulated)");
      // The alarm backs off after a failed upload; the test holds it off for an hour (a long outage),
      // so only its own passes touch R2 and the order of events does not depend on timing.
      await runInDurableObject(stub, (_r: Room, state) => {
        expect(Number(state.storage.kv.get("segments_retry_at"))).toBeGreaterThan(Date.now());
        state.storage.kv.put("segments_retry_at", Date.now() + 3_600_000);
      });
      await evictDurableObject(stub);
      expect(await stub.archiveState()).toMatchObject({ lastSeq: 51, sealedSeq: 0 });
    }
    expect(
      (await env.FILES.list({ prefix: `${ada.tenant}/rooms/${roomId}/segments/` })).objects,
    ).toHaveLength(1);

    // More events arrive; the next pass writes exactly the range it had begun, then the rest.
    client.close();
    const again = await Client.open(ada, roomId, 51);
    await again.ready();
    await sendMany(again, "d", 30);
    again.close();
    const later = await runInDurableObject(stub, (room: Room) =>
      room.maintenance.seal(Date.now() + SEAL_AFTER),
    );
    expect(later).toMatchObject({ sealedSeq: 81 });
    const inR2 = await segments(ada.tenant, roomId);
    expect([...inR2.keys()]).toEqual(["000000000001-51.ndjson.gz", "000000000052-81.ndjson.gz"]);
    expect([...inR2.values()].flat().map((l) => l.seq)).toEqual(Array.from({ length: 81 }, (_, i) => i + 1));
    await exportVerified(ada, roomId);
  });

  it("loses nothing when the object is evicted in the middle of a rewrite", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const client = await Client.open(ada, roomId);
    await client.ready();
    const seqs = await sendMany(client, "w", 120);
    client.close();
    await settle(stub);
    const victim = seqs[5] as number;
    // The rewrite's upload lands, and the object crashes before it records that.
    await runInDurableObject(stub, (room: Room) => {
      const r = room as unknown as { env: Env };
      r.env = { ...r.env, FILES: crashingPut(r.env.FILES, true) };
    });
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${victim}`)).status).toBe(201);
    await alarm(stub);
    expect((await stub.archiveState()).dirtySegments).toBe(1);
    await evictDurableObject(stub);
    // R2 is back; the backoff the failure started is skipped rather than waited for.
    await runInDurableObject(stub, (_r: Room, state) => state.storage.kv.delete("segments_retry_at"));
    await settle(stub);
    const line = [...(await segments(ada.tenant, roomId)).values()].flat().find((l) => l.seq === victim);
    expect(line?.event).toMatchObject({ text: "", deleted: true });
    await exportVerified(ada, roomId);
  });
});

describe("upgrading a room of the previous release", () => {
  it("rewrites its old segments with commitments, seals what it had not moved, and lets the floor rise", async () => {
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId) as Stub;
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "early", 120);
    await client.until((c) => c.events.length >= 121, "the early events");
    const cutoff = (client.events.at(-1)?.ts ?? 0) + 1;
    await after(cutoff);
    await sendMany(client, "later", 580);
    client.close();
    expect((await api(ada, "PATCH", "/api/tenant", { retentionDays: 30 })).status).toBe(200);
    expect(
      (await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(cutoff + 30 * DAY))).expired,
    ).toBe(121);
    expect(await settle(stub)).toMatchObject({ lastSeq: 701, sealedSeq: 700, coldSeq: 200, floor: 0 });
    const expected = await wholeHistory(ada, roomId, 701);

    // As the previous release left it: only ranges past its hot window in R2, as bare event lines
    // without the expired ones, and no segment at all for a range where every event had expired.
    const prefix = `${ada.tenant}/rooms/${roomId}/segments/`;
    for (const [name, lines] of await segments(ada.tenant, roomId)) {
      const from = Number(name.split("-")[0]);
      const kept = lines.filter((l) => l.event.kind !== "expired").map((l) => JSON.stringify(l.event));
      if (from > 200 || kept.length === 0) {
        await env.FILES.delete(prefix + name);
        continue;
      }
      const body = new Blob([kept.join("\n"), "\n"]).stream().pipeThrough(new CompressionStream("gzip"));
      await env.FILES.put(prefix + name, await new Response(body).arrayBuffer());
    }
    // The running instance's segment work is held off while its schema is rolled back under it (a
    // shipping timer may still fire before the eviction; its alarm pass must not seal then).
    await holdRewrites(stub, true);
    await runInDurableObject(stub, (_room: Room, state) => {
      const sql = state.storage.sql;
      sql.exec("DELETE FROM segments WHERE from_seq > 200 OR from_seq = 1");
      undoSchemaV8(sql);
      sql.exec("UPDATE meta SET value = '7' WHERE key = 'schema_version'");
    });
    await evictDurableObject(stub);
    await holdRewrites(stub, false);

    // The next start migrates, the alarm rewrites and seals: every segment in the new format, every
    // event once, retention's tombstones included.
    await settle(stub);
    const inR2 = await segments(ada.tenant, roomId);
    expect([...inR2.keys()]).toEqual(
      Array.from(
        { length: 7 },
        (_, i) => `${String(i * 100 + 1).padStart(12, "0")}-${i * 100 + 100}.ndjson.gz`,
      ),
    );
    const lines = [...inR2.values()].flat();
    expect(lines.map((l) => l.seq)).toEqual(Array.from({ length: 700 }, (_, i) => i + 1));
    expect(lines.every((l) => l.v === 2 && /^[0-9a-f]{64}$/.test(l.chain))).toBe(true);
    expect(lines.filter((l) => l.metaHash !== undefined).map((l) => l.seq)).toEqual(
      Array.from({ length: 121 }, (_, i) => i + 1),
    );
    expect(await wholeHistory(ada, roomId, 701)).toEqual(expected);

    // From there the command window works as for any room.
    const more = await Client.open(ada, roomId, 701);
    await more.ready();
    await sendMany(more, "more", 700);
    more.close();
    const state = await settle(stub);
    expect(state.floor).toBe(400);
    expect((await wholeHistory(ada, roomId, state.lastSeq)).slice(0, 701)).toEqual(expected);
    const { events } = await exportVerified(ada, roomId);
    expect(events.slice(0, 701)).toEqual(expected);
  });
});
