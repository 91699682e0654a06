/** Per-user quotas (durable-objects/quota.ts) through HTTP: a burst of room creations or searches
 * with the DEFAULT settings meets refusals, uploads stop at the day's count and bytes (this project
 * sets them to 5 files and 5,000 bytes), and whatever is refused, or is bad input, creates, stores
 * and spends nothing. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS, limitsOf } from "../../config/limits.ts";
import {
  api,
  authHeaders,
  createRoom,
  fetchWorker,
  join,
  json,
  login,
  type User,
  unique,
} from "../helpers.ts";

const limits = limitsOf(env);

/** A 429 with the protocol's envelope, `retryAfter` and a matching `Retry-After`. */
async function expectRefused(res: Response): Promise<number> {
  expect(res.status).toBe(429);
  const retryAfter = res.headers.get("retry-after");
  expect(retryAfter).toMatch(/^\d+$/);
  const body = await json<{ error: { code: string; retryAfter: number } }>(res);
  expect(body.error).toMatchObject({ code: "rate_limited", retryAfter: expect.any(Number) });
  expect(body.error.retryAfter).toBeGreaterThanOrEqual(1);
  expect(Number(retryAfter)).toBe(Math.ceil(body.error.retryAfter));
  return body.error.retryAfter;
}

function upload(user: User, roomId: string, body: BodyInit, headers: Record<string, string> = {}) {
  return fetchWorker(`/api/rooms/${roomId}/attachments`, {
    method: "POST",
    headers: { ...authHeaders(user.token), "x-filename": "f.txt", ...headers },
    body,
  });
}

/** What is stored for a room's uploads: R2 objects and directory rows. */
async function stored(tenantId: string, roomId: string): Promise<{ objects: number; rows: number }> {
  const listed = await env.FILES.list({ prefix: `${tenantId}/attachments/${roomId}/` });
  const row = await env.DB.prepare(
    "SELECT COUNT(*) AS n FROM attachments WHERE tenant_id = ? AND room_id = ?",
  )
    .bind(tenantId, roomId)
    .first<{ n: number }>();
  return { objects: listed.objects.length, rows: row?.n ?? 0 };
}

async function roomsIn(tenantId: string): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM rooms WHERE tenant_id = ?")
    .bind(tenantId)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

describe("the room-creation quota", () => {
  it("refuses 30 back-to-back creations past the default (20), creating nothing for a refused one; bad requests and reopened dms spend nothing", async () => {
    expect(limits.roomsPerUserPerHour).toBe(DEFAULT_LIMITS.roomsPerUserPerHour);
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const carol = await login(tenant);
    // Bad input is refused before the quota is asked.
    for (let i = 0; i < 5; i++)
      expect((await api(ada, "POST", "/api/rooms", { name: "", kind: "channel" })).status).toBe(400);
    const dm = await api(ada, "POST", "/api/rooms", { kind: "dm", members: [bob.id] });
    expect(dm.status).toBe(201);
    const dmId = (await json<{ id: string }>(dm)).id;

    const began = Date.now();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await api(ada, "POST", "/api/rooms", { name: `burst ${i}`, kind: "channel" });
      statuses.push(res.status);
      if (res.status === 429) await expectRefused(res);
      else expect(res.status).toBe(201);
    }
    const elapsed = Date.now() - began;
    const created = statuses.filter((s) => s === 201).length;
    // The dm and 19 channels use the 20; the bucket refills one every 3 minutes.
    expect(created + 1).toBeGreaterThanOrEqual(DEFAULT_LIMITS.roomsPerUserPerHour);
    expect(created + 1).toBeLessThanOrEqual(
      DEFAULT_LIMITS.roomsPerUserPerHour +
        Math.ceil(elapsed / (3_600_000 / DEFAULT_LIMITS.roomsPerUserPerHour)),
    );
    expect(statuses.filter((s) => s === 429).length).toBe(30 - created);

    // Nothing of a refused creation exists: the directory holds the dm and the created channels.
    expect(await roomsIn(tenant)).toBe(created + 1);
    const listed = await json<{ name: string; joined: boolean }[]>(api(ada, "GET", "/api/rooms"));
    expect(
      listed
        .filter((r) => r.name.startsWith("burst "))
        .map((r) => r.name)
        .sort(),
    ).toEqual(Array.from({ length: created }, (_, i) => `burst ${i}`).sort());

    // Opening the existing dm again creates nothing and is never refused; a new one is.
    const again = await api(ada, "POST", "/api/rooms", { kind: "dm", members: [bob.id] });
    expect(again.status).toBe(200);
    expect((await json<{ id: string }>(again)).id).toBe(dmId);
    await expectRefused(await api(ada, "POST", "/api/rooms", { kind: "dm", members: [carol.id] }));
    expect(await roomsIn(tenant)).toBe(created + 1);
    // The quota is the user's own: someone else in the tenant still creates rooms.
    expect((await api(bob, "POST", "/api/rooms", { name: "bob's", kind: "channel" })).status).toBe(201);
  });
});

describe("the search quota", () => {
  it("refuses 30 back-to-back broad searches past the default (20); a bad query spends nothing", async () => {
    expect(limits.searchesPerUserPerMinute).toBe(DEFAULT_LIMITS.searchesPerUserPerMinute);
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    await api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: "m1", text: "the quick brown fox" });
    for (const q of ["", "x".repeat(201)]) {
      expect((await api(ada, "GET", `/api/search?q=${encodeURIComponent(q)}`)).status).toBe(400);
    }
    const began = Date.now();
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) {
      // As broad as a query gets: any of the commonest words, in every room the user is in.
      const res = await api(ada, "GET", `/api/search?q=${encodeURIComponent("the OR a OR to OR is")}`);
      statuses.push(res.status);
      if (res.status === 429) await expectRefused(res);
      else expect(res.status).toBe(200);
    }
    const elapsed = Date.now() - began;
    const ran = statuses.filter((s) => s === 200).length;
    expect(ran).toBeGreaterThanOrEqual(DEFAULT_LIMITS.searchesPerUserPerMinute);
    expect(ran).toBeLessThanOrEqual(
      DEFAULT_LIMITS.searchesPerUserPerMinute +
        Math.ceil(elapsed / (60_000 / DEFAULT_LIMITS.searchesPerUserPerMinute)),
    );
    expect(ran).toBeLessThan(30);
    // The first refusals come straight after the burst: the rest of the 30 were all refused.
    expect(statuses.slice(0, DEFAULT_LIMITS.searchesPerUserPerMinute).every((s) => s === 200)).toBe(true);
    // Another member's searches are theirs to spend.
    const bob = await login(ada.tenant);
    await join(bob, roomId);
    expect((await api(bob, "GET", "/api/search?q=fox")).status).toBe(200);
  });
});

describe("the daily upload quota (this project: 5 files, 5,000 bytes)", () => {
  it("refuses the sixth upload of the day and stores nothing of it; a failed upload does not count", async () => {
    expect([limits.uploadsPerUserPerDay, limits.uploadBytesPerUserPerDay]).toEqual([5, 5000]);
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    // Bad uploads are refused before or while storing, and give their place back.
    expect((await upload(ada, roomId, new Uint8Array(limits.maxAttachmentBytes + 1))).status).toBe(413);
    const short = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array(5));
        controller.close();
      },
    });
    expect((await upload(ada, roomId, short, { "content-length": "10" })).status).toBe(400);
    for (let i = 0; i < 5; i++) expect((await upload(ada, roomId, new Uint8Array(10))).status).toBe(201);
    const retryAfter = await expectRefused(await upload(ada, roomId, new Uint8Array(10)));
    // Refused until the next UTC day.
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    expect(await stored(ada.tenant, roomId)).toEqual({ objects: 5, rows: 5 });
    // The quota is per user, not per room.
    const other = await createRoom(ada);
    await expectRefused(await upload(ada, other, new Uint8Array(1)));
    expect(await stored(ada.tenant, other)).toEqual({ objects: 0, rows: 0 });
  });

  it("refuses an upload that would pass the day's bytes, and still takes one that fits", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    expect((await upload(ada, roomId, new Uint8Array(2000))).status).toBe(201);
    expect((await upload(ada, roomId, new Uint8Array(2000))).status).toBe(201);
    await expectRefused(await upload(ada, roomId, new Uint8Array(1001)));
    expect(await stored(ada.tenant, roomId)).toEqual({ objects: 2, rows: 2 });
    expect((await upload(ada, roomId, new Uint8Array(1000))).status).toBe(201);
    await expectRefused(await upload(ada, roomId, new Uint8Array(1)));
    expect(await stored(ada.tenant, roomId)).toEqual({ objects: 3, rows: 3 });
  });
});
