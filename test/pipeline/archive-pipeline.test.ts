/**
 * The derived stores end to end: the room's shipping by watermark to the queue (a fake queue the test controls,
 * installed in the room object, so delivery order and failures are chosen by the test), the
 * archive consumer, confirmation, resend, cold segments in R2, retention tombstones and exports.
 * This project runs with PARLEY_HOT_EVENTS=500 and PARLEY_SEGMENT_EVENTS=100.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Room } from "../../durable-objects/room.ts";
import { verifyExport } from "../../protocol/export-verify.ts";
import type { RoomEvent } from "../../protocol/index.ts";
import {
  api,
  authHeaders,
  Client,
  createRoom,
  fetchWorker,
  historyAll,
  historyDown,
  json,
  login,
  storeWatermark,
  type User,
  unique,
} from "../helpers.ts";
import { alarm, deliver, drainAll, eventsIn, withFakeQueue } from "./queue.ts";

const DAY = 24 * 60 * 60 * 1000;

async function archivedRows(tenant: string, roomId: string) {
  const rows = await historyAll<{ seq: number; kind: string; text: string }>(
    "SELECT seq, kind, text FROM archived_events WHERE tenant_id = ? AND room_id = ?",
    tenant,
    roomId,
  );
  return rows.sort((a, b) => a.seq - b.seq);
}

async function history(user: User, roomId: string, query: string): Promise<RoomEvent[]> {
  const res = await api(user, "GET", `/api/rooms/${roomId}/messages?${query}`);
  expect(res.status).toBe(200);
  return (await json<{ events: RoomEvent[] }>(res)).events;
}

async function sendMany(client: Client, prefix: string, n: number): Promise<number[]> {
  const from = client.acks().length;
  for (let i = 0; i < n; i++)
    client.send({ type: "send", clientId: `${prefix}${i}`, text: `${prefix} message ${i}` });
  await client.until((c) => c.acks().length >= from + n, `${n} acks`);
  return client
    .acks()
    .slice(from)
    .map((a) => a.seq);
}

async function gunzipText(object: R2ObjectBody): Promise<string> {
  return new Response(object.body.pipeThrough(new DecompressionStream("gzip"))).text();
}

describe("shipping to the D1 history by watermark", () => {
  it("keeps events whose queue send failed, backs off, and sends them once the queue is back", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    queue.failing = true;
    const client = await Client.open(ada, roomId);
    await client.ready();
    const seqs = await sendMany(client, "down", 5);

    await alarm(stub);
    const state = await stub.archiveState();
    expect(state.archivedThrough).toBeLessThan(seqs[0] as number);
    expect(state.pending).toBeGreaterThanOrEqual(5);
    const retryAt = await runInDurableObject(stub, (_r: Room, s) =>
      Number(s.storage.kv.get("archive_retry_at")),
    );
    expect(retryAt).toBeGreaterThan(Date.now());
    expect(await runInDurableObject(stub, (_r: Room, s) => s.storage.getAlarm())).toBeGreaterThanOrEqual(
      retryAt,
    );
    expect((await archivedRows(ada.tenant, roomId)).filter((r) => seqs.includes(r.seq))).toEqual([]);

    // The queue is back and the backoff has passed.
    queue.failing = false;
    await runInDurableObject(stub, (_r: Room, s) => s.storage.kv.delete("archive_retry_at"));
    await alarm(stub);
    const sent = queue.take();
    expect(
      eventsIn(sent)
        .filter((m) => seqs.includes(m.event.seq))
        .map((m) => m.event.seq),
    ).toEqual(seqs);
    await deliver(sent);
    await drainAll(stub, queue);
    const after = await stub.archiveState();
    expect(after).toMatchObject({ pending: 0, archivedThrough: after.lastSeq });
    expect((await archivedRows(ada.tenant, roomId)).map((r) => r.seq)).toEqual(
      Array.from({ length: after.lastSeq }, (_, i) => i + 1),
    );
    client.close();
  });

  it("sends an unconfirmed event again after the timeout, and the archive holds it once", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();
    const seqs = await sendMany(client, "lost", 3);
    await alarm(stub);
    const first = queue.take(); // "lost": the local queue died with the process
    expect(eventsIn(first).map((m) => m.event.seq)).toEqual(expect.arrayContaining(seqs));
    await alarm(stub);
    expect(queue.take()).toEqual([]); // not due yet

    await stub.writeWatermarks();
    await runInDurableObject(stub, (_r: Room, s) => {
      storeWatermark(s.storage.sql, "archive_sent_at", (at) => at - 3_600_000);
    });
    await alarm(stub);
    const again = queue.take();
    expect(eventsIn(again).map((m) => m.event.seq)).toEqual(eventsIn(first).map((m) => m.event.seq));
    await deliver(again);
    await deliver(first); // the lost copy turns up after all
    const rows = await archivedRows(ada.tenant, roomId);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
    expect(rows.filter((r) => seqs.includes(r.seq)).map((r) => r.text)).toEqual([
      "lost message 0",
      "lost message 1",
      "lost message 2",
    ]);
    expect(await stub.archiveState()).toMatchObject({ pending: 0 });
    client.close();
  });
});

describe("a D1 outage during archiving", () => {
  it("keeps every event unconfirmed while D1 is down, then the archive catches up with each once", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();

    const early = await sendMany(client, "early", 20);
    await alarm(stub);
    const taken = queue.take();
    const failed = await deliver(taken, historyDown(env));
    expect(failed.explicitAcks).toEqual([]);
    // Every message is retried, and they carry every early event.
    expect(failed.retryMessages).toHaveLength(taken.length);
    expect(eventsIn(taken).map((m) => m.event.seq)).toEqual(expect.arrayContaining(early));
    // Sending goes on during the outage; the room serves it as usual.
    const during = await sendMany(client, "during", 10);
    await alarm(stub);
    await deliver(queue.take(), historyDown(env));
    const down = await stub.archiveState();
    expect(down.pending).toBe(down.lastSeq);
    expect(down.archivedThrough).toBe(0);
    expect(await archivedRows(ada.tenant, roomId)).toEqual([]);

    // D1 is back. The queue's own retries were lost with the outage's batches (as a local queue
    // dies with its process); the room resends what was never confirmed.
    await stub.writeWatermarks();
    await runInDurableObject(stub, (_r: Room, s) => {
      storeWatermark(s.storage.sql, "archive_sent_at", (at) => at - 3_600_000);
    });
    await drainAll(stub, queue);
    const after = await stub.archiveState();
    expect(after).toMatchObject({ pending: 0, archivedThrough: after.lastSeq });
    const rows = await archivedRows(ada.tenant, roomId);
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: after.lastSeq }, (_, i) => i + 1));
    const texts = rows.filter((r) => r.kind === "message").map((r) => r.text);
    expect(texts).toEqual([
      ...early.map((_, i) => `early message ${i}`),
      ...during.map((_, i) => `during message ${i}`),
    ]);
    client.close();
  });
});

describe("cold segments, retention and export", () => {
  it("seals every range to R2, serves old ones back, scrubs a deleted message there, and expires by age", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();
    await sendMany(client, "bulk", 700);
    await client.until((c) => c.events.length >= 701, "all events");
    const original = new Map(client.events.map((e) => [e.seq, e]));
    await drainAll(stub, queue);

    // Every full range is sealed (R2 holds the history, not only its old part); replays never read
    // R2, as the JSON of the hot window (at least the replay cap) stays in SQLite.
    for (let i = 0; i < 10 && (await stub.archiveState()).coldSeq < 200; i++) await alarm(stub);
    const state = await stub.archiveState();
    expect(state).toMatchObject({ sealedSeq: 700, coldSeq: 200, floor: 0 });
    const prefix = `${ada.tenant}/rooms/${roomId}/segments/`;
    expect((await env.FILES.list({ prefix })).objects.map((o) => o.key.slice(prefix.length))).toEqual(
      Array.from(
        { length: 7 },
        (_, i) => `${String(i * 100 + 1).padStart(12, "0")}-${i * 100 + 100}.ndjson.gz`,
      ),
    );
    const emptied = await runInDurableObject(
      stub,
      (_r: Room, s) =>
        s.storage.sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM events WHERE json = ''").one().n,
    );
    expect(emptied).toBe(200);

    // History pages through the cold range transparently, byte for byte.
    const page = await history(ada, roomId, "before=151&limit=100");
    expect(page.map((e) => e.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 51));
    expect(page).toEqual(page.map((e) => original.get(e.seq)));
    // A client that far behind is told to page history instead of being replayed from R2.
    const late = await Client.open(ada, roomId, 50);
    await late.ready();
    expect(late.frames[0]).toMatchObject({ type: "gap", after: 50 });
    late.close();

    // Deleting a cold message: gone from reads at once, and from the segment after the alarm.
    const victim = 60;
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${victim}`)).status).toBe(201);
    expect((await history(ada, roomId, `after=${victim - 1}&limit=1`))[0]).toMatchObject({
      seq: victim,
      text: "",
      deleted: true,
    });
    await alarm(stub);
    const segment = (await env.FILES.list({ prefix })).objects.find((o) => o.key.includes("000000000001-"));
    const text = await gunzipText((await env.FILES.get(segment?.key ?? "")) as R2ObjectBody);
    const line = text.split("\n").find((l) => l.startsWith(`{"seq":${victim},`));
    // A line carries what an export needs besides the event: a deleted one, its content hash.
    expect(JSON.parse(line ?? "{}")).toMatchObject({
      seq: victim,
      v: 2,
      contentHash: expect.stringMatching(/^[0-9a-f]{64}$/),
      event: { seq: victim, text: "", deleted: true },
    });
    expect(text).not.toContain(`${(original.get(victim) as { text: string }).text}"`);

    // Retention: exactly the events written before the cutoff become tombstones, everywhere.
    const cutoffTs = (original.get(150) as RoomEvent).ts + 1;
    const expiring = [...original.values()].filter((e) => e.ts < cutoffTs).map((e) => e.seq);
    const tenantRes = await api(ada, "PATCH", "/api/tenant", { retentionDays: 30 });
    expect(tenantRes.status).toBe(200);
    const now = cutoffTs + 30 * DAY;
    for (let more = true, i = 0; more && i < 10; i++) {
      more = (await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(now))).expired > 0;
    }
    await drainAll(stub, queue);
    for (let i = 0; i < 5; i++) await alarm(stub);
    const all = [
      ...(await history(ada, roomId, "after=0&limit=200")),
      ...(await history(ada, roomId, "after=200&limit=200")),
      ...(await history(ada, roomId, "after=400&limit=200")),
      ...(await history(ada, roomId, "after=600&limit=200")),
    ];
    const { lastSeq } = await stub.archiveState();
    expect(lastSeq).toBe(state.lastSeq + 1); // the delete
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: lastSeq }, (_, i) => i + 1));
    expect(all.filter((e) => e.kind === "expired").map((e) => e.seq)).toEqual(expiring);
    for (const e of all.filter((x) => x.kind === "expired")) {
      expect(Object.keys(e).sort()).toEqual(["author", "kind", "seq", "ts"]);
    }
    const rows = await archivedRows(ada.tenant, roomId);
    expect(rows.filter((r) => r.kind === "expired").map((r) => r.seq)).toEqual(expiring);
    expect(rows.filter((r) => r.kind === "expired" && r.text !== "")).toEqual([]);
    // R2 keeps the whole history, retention's tombstones included (each with the metadata hash it
    // is checked from): segment 1–100 now holds only tombstones, 101–200 tombstones up to the cutoff.
    const left = (await env.FILES.list({ prefix })).objects.map((o) => o.key);
    expect(left).toHaveLength(7);
    for (const [key, from] of [
      [left[0], 1],
      [left[1], 101],
    ] as const) {
      const lines = (await gunzipText((await env.FILES.get(key ?? "")) as R2ObjectBody))
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { seq: number; metaHash?: string; event: RoomEvent });
      expect(lines.map((l) => l.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + from));
      for (const l of lines) {
        if (!expiring.includes(l.seq)) continue;
        expect(l.event).toEqual(all.find((e) => e.seq === l.seq));
        expect(l.metaHash).toMatch(/^[0-9a-f]{64}$/);
      }
      expect(lines.filter((l) => !expiring.includes(l.seq)).every((l) => l.event.kind !== "expired")).toBe(
        true,
      );
    }
    client.close();

    // Export: every event exactly once, in order, verifiable, ending on the live head.
    const exported = await exportAndDownload(ada, { roomId });
    const lines = exported.trim().split("\n");
    expect(lines).toHaveLength(lastSeq + 1);
    const verdict = await verifyExport(lines);
    expect(verdict).toMatchObject({ ok: true, rooms: [{ room: roomId, events: lastSeq }] });
    // The live head states what the file's head states, taken (and signed) at another moment.
    const {
      at: _liveAt,
      jws: _liveJws,
      room,
      ...live
    } = await json<Record<string, unknown>>(api(ada, "GET", `/api/admin/rooms/${roomId}/head`));
    const { at: _fileAt, ...fromFile } = (
      JSON.parse(lines.at(-1) ?? "{}") as { head: Record<string, unknown> }
    ).head;
    expect(room).toBe(roomId);
    expect(fromFile).toEqual(live);
    expect(live).toMatchObject({
      seq: lastSeq,
      retentionDays: 30,
      expiredThrough: expiring.at(-1),
      scheme1: [],
    });
    const events = lines.slice(0, -1).map((l) => (JSON.parse(l) as { event: RoomEvent }).event);
    expect(events).toEqual(all);
  });

  it("exports a whole tenant, and the verifier catches a changed, dropped or swapped line", async () => {
    const ada = await login(unique("t"));
    const rooms = [await createRoom(ada), await createRoom(ada)].sort();
    for (const roomId of rooms) {
      const client = await Client.open(ada, roomId);
      await client.ready();
      const [first] = await sendMany(client, "x", 4);
      client.send({ type: "edit", clientId: "e1", target: (first as number) + 1, text: "edited" });
      client.send({ type: "delete", clientId: "d1", target: first });
      await client.until((c) => c.acks().length >= 6, "edit and delete acks");
      client.close();
    }
    const member = await login(ada.tenant);
    expect((await api(member, "POST", "/api/admin/exports", {})).status).toBe(403);
    const lines = (await exportAndDownload(ada, {})).trim().split("\n");
    const verdict = await verifyExport(lines);
    expect(verdict.ok).toBe(true);
    expect(verdict.rooms.map((r) => r.room)).toEqual(rooms);

    const isEventLine = (l: string) => !l.includes('"head"');
    const plain = lines.findIndex((l) => isEventLine(l) && l.includes('"x message 2"'));
    const changed = [...lines];
    changed[plain] = (changed[plain] as string).replace('"x message 2"', '"x message two"');
    expect(await verifyExport(changed)).toMatchObject({ ok: false, line: plain + 1 });

    const dropped = lines.filter((_, i) => i !== plain);
    expect((await verifyExport(dropped)).ok).toBe(false);

    const swapped = [...lines];
    [swapped[plain], swapped[plain + 1]] = [swapped[plain + 1] as string, swapped[plain] as string];
    expect((await verifyExport(swapped)).ok).toBe(false);

    // Admins delete exports (retention does not): file and record go.
    const [listed] = (
      await json<{ exports: { id: string; status: string }[] }>(api(ada, "GET", "/api/admin/exports"))
    ).exports;
    expect(listed?.status).toBe("done");
    expect((await api(member, "DELETE", `/api/admin/exports/${listed?.id}`)).status).toBe(403);
    expect((await api(ada, "DELETE", `/api/admin/exports/${listed?.id}`)).status).toBe(200);
    expect((await api(ada, "GET", `/api/admin/exports/${listed?.id}/download`)).status).toBe(404);
    expect((await env.FILES.list({ prefix: `${ada.tenant}/exports/` })).objects).toEqual([]);

    // A deleted message's line cannot be made to look deleted without its delete event.
    const noDelete = lines.filter((l) => !(isEventLine(l) && l.includes('"kind":"delete"')));
    expect((await verifyExport(noDelete)).ok).toBe(false);
  });

  it("retention deletes the files of expired messages and keeps newer ones", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const { stub, queue } = await withFakeQueue(ada, roomId);
    const uploadFile = async (name: string) => {
      const res = await fetchWorker(`/api/rooms/${roomId}/attachments`, {
        method: "POST",
        headers: { ...authHeaders(ada.token), "x-filename": name, "content-type": "text/plain" },
        body: `contents of ${name}`,
      });
      expect(res.status).toBe(201);
      return (await json<{ id: string }>(res)).id;
    };
    const client = await Client.open(ada, roomId);
    await client.ready();
    const oldFile = await uploadFile("old.txt");
    const oldSeq = await client.sendMessage("old", "old file", { attachments: [oldFile] });
    const oldTs = (await history(ada, roomId, `after=${oldSeq - 1}&limit=1`))[0]?.ts as number;
    // The next event must get a later ms (workerd's clock moves only across I/O and timers).
    while (Date.now() <= oldTs) await new Promise((r) => setTimeout(r, 1));
    const newFile = await uploadFile("new.txt");
    const newSeq = await client.sendMessage("new", "new file", { attachments: [newFile] });
    client.close();

    expect((await api(ada, "PATCH", "/api/tenant", { retentionDays: 7 })).status).toBe(200);
    // One ms after the old message's cutoff: the old message expires, the new one (later ms) stays.
    await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(oldTs + 1 + 7 * DAY));
    const download = (id: string) =>
      fetchWorker(`/api/attachments/${id}`, { headers: authHeaders(ada.token) }).then((r) => r.status);
    expect(await download(oldFile)).toBe(404);
    expect(await download(newFile)).toBe(200);
    expect((await env.FILES.list({ prefix: `${ada.tenant}/attachments/${roomId}/` })).objects).toHaveLength(
      1,
    );
    const events = await history(ada, roomId, `after=${oldSeq - 1}&limit=10`);
    expect(events.find((e) => e.seq === oldSeq)?.kind).toBe("expired");
    expect(events.find((e) => e.seq === newSeq)).toMatchObject({
      kind: "message",
      attachments: [{ id: newFile }],
    });
    await drainAll(stub, queue);
    const [archivedJson] = await historyAll<{ json: string }>(
      "SELECT json FROM archived_events WHERE tenant_id = ? AND room_id = ? AND seq = ?",
      ada.tenant,
      roomId,
      oldSeq,
    );
    expect(archivedJson?.json).not.toContain(oldFile);
  });

  it("refuses bad retention and export requests and changes nothing", async () => {
    const ada = await login(unique("t"));
    for (const retentionDays of [0, -1, 1.5, "7", 40_000]) {
      const res = await api(ada, "PATCH", "/api/tenant", { retentionDays });
      expect(res.status).toBe(400);
    }
    expect(await json(api(ada, "GET", "/api/tenant"))).toMatchObject({ retentionDays: null });
    const member = await login(ada.tenant);
    expect((await api(member, "PATCH", "/api/tenant", { retentionDays: 7 })).status).toBe(403);
    const other = await login(unique("t"));
    const theirs = await createRoom(other);
    expect((await api(ada, "POST", "/api/admin/exports", { roomId: theirs })).status).toBe(404);
    expect((await api(ada, "GET", `/api/admin/rooms/${theirs}/head`)).status).toBe(404);
    expect(await json(api(ada, "GET", "/api/admin/exports"))).toEqual({ exports: [] });
  });
});

/** Requests an export, waits (bounded) for the job run by the local exports queue, downloads it. */
async function exportAndDownload(user: User, body: { roomId?: string }): Promise<string> {
  const res = await api(user, "POST", "/api/admin/exports", body);
  expect(res.status).toBe(202);
  const { id } = await json<{ id: string }>(res);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await json<{ status: string; error: string | null }>(
      api(user, "GET", `/api/admin/exports/${id}`),
    );
    if (status.status === "done") break;
    if (status.status === "failed") throw new Error(`export failed: ${status.error}`);
    if (Date.now() > deadline) throw new Error("export did not finish in 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  const download = await api(user, "GET", `/api/admin/exports/${id}/download`);
  expect(download.status).toBe(200);
  expect(download.headers.get("content-disposition")).toMatch(/^attachment;/);
  return download.text();
}
