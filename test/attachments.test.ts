import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { limitsOf } from "../config/limits.ts";
import type { AttachmentRef, MessageEvent, RoomEvent } from "../protocol/index.ts";
import {
  api,
  authHeaders,
  Client,
  createRoom,
  fetchWorker,
  join,
  json,
  login,
  maintenanceOf,
  roomObject,
  type User,
  unique,
} from "./helpers.ts";

const limits = limitsOf(env);

function upload(
  user: User,
  roomId: string,
  body: BodyInit | null,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetchWorker(`/api/rooms/${roomId}/attachments`, {
    method: "POST",
    headers: { ...authHeaders(user.token), ...headers },
    body,
  });
}

/** Uploads `body` (a byte count is sent as Content-Length) and returns the 201 answer. */
async function uploaded(
  user: User,
  roomId: string,
  body: string | Uint8Array = "hello",
  headers: Record<string, string> = {},
): Promise<AttachmentRef> {
  const res = await upload(user, roomId, body, { "x-filename": "note.txt", ...headers });
  if (res.status !== 201) throw new Error(`upload failed: ${res.status} ${await res.text()}`);
  return json<AttachmentRef>(res);
}

function download(user: User, id: string, query = ""): Promise<Response> {
  return fetchWorker(`/api/attachments/${id}${query}`, { headers: authHeaders(user.token) });
}

/** `total` bytes of a fixed pattern, produced chunk by chunk as the reader pulls them. */
function patternStream(total: number, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) {
        controller.close();
        return;
      }
      const n = Math.min(chunk, total - sent);
      const bytes = new Uint8Array(n);
      for (let i = 0; i < n; i++) bytes[i] = (sent + i) % 251;
      sent += n;
      controller.enqueue(bytes);
    },
  });
}

/** A download's body as UTF-8 text (downloads are typed octet-stream, so not `Response.text()`). */
async function textOf(res: Response | Promise<Response>): Promise<string> {
  return new TextDecoder().decode(await (await res).arrayBuffer());
}

async function sha256(data: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** What R2 and D1 hold for a room's attachments (the room object is checked through cleanup). */
async function storedFor(tenantId: string, roomId: string) {
  const listed = await env.FILES.list({ prefix: `${tenantId}/attachments/${roomId}/` });
  const rows = await env.DB.prepare(
    "SELECT id FROM attachments WHERE tenant_id = ? AND room_id = ? ORDER BY id",
  )
    .bind(tenantId, roomId)
    .all<{ id: string }>();
  return {
    objects: listed.objects.map((o) => o.key.split("/").at(-1)).sort(),
    rows: rows.results.map((r) => r.id),
  };
}

async function lastSeq(user: User, roomId: string): Promise<number> {
  const page = await json<{ events: RoomEvent[] }>(api(user, "GET", `/api/rooms/${roomId}/messages`));
  return page.events.at(-1)?.seq ?? 0;
}

async function tenantOf(n: number): Promise<User[]> {
  const tenant = unique("t");
  const people: User[] = [];
  for (let i = 0; i < n; i++) people.push(await login(tenant)); // people[0] owns the tenant
  return people;
}

describe("uploading and downloading", () => {
  it("stores an upload under the tenant's prefix and streams it back as a guarded download", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const bytes = new Uint8Array(1000).map((_, i) => i % 256);
    const res = await upload(alice!, roomId, bytes, {
      "content-type": "Application/PDF; charset=binary",
      "x-filename": "report.pdf",
    });
    expect(res.status).toBe(201);
    const file = await json<AttachmentRef>(res);
    expect(file).toEqual({
      id: expect.stringMatching(/^a_[0-9a-z]{20}$/),
      name: "report.pdf",
      size: 1000,
      contentType: "application/pdf",
    });

    const got = await download(alice!, file.id);
    expect(got.status).toBe(200);
    expect(Object.fromEntries(got.headers)).toMatchObject({
      "content-type": "application/octet-stream",
      "content-length": "1000",
      "content-disposition": `attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`,
      "x-content-type-options": "nosniff",
      "content-security-policy": "default-src 'none'; sandbox",
      "cache-control": "private",
    });
    expect(new Uint8Array(await got.arrayBuffer())).toEqual(bytes);

    const object = await env.FILES.head(`${alice!.tenant}/attachments/${roomId}/${file.id}`);
    expect(object?.size).toBe(1000);
    const row = await env.DB.prepare("SELECT * FROM attachments WHERE id = ?").bind(file.id).first();
    expect(row).toMatchObject({
      tenant_id: alice!.tenant,
      room_id: roomId,
      uploader_id: alice!.id,
      name: "report.pdf",
      content_type: "application/pdf",
      size: 1000,
      object_key: `${alice!.tenant}/attachments/${roomId}/${file.id}`,
    });
  });

  it("streams a multi-MiB body through to R2 and back byte for byte", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const size = 6 * 1024 * 1024 + 123;
    const expected = new Uint8Array(await new Response(patternStream(size)).arrayBuffer());
    const res = await upload(alice!, roomId, patternStream(size), {
      "content-length": String(size),
      "content-type": "application/zip",
      "x-filename": "big.zip",
    });
    expect(res.status).toBe(201);
    const file = await json<AttachmentRef>(res);
    expect(file.size).toBe(size);
    const got = await download(alice!, file.id);
    expect(got.headers.get("content-length")).toBe(String(size));
    expect(await sha256(await got.arrayBuffer())).toBe(await sha256(expected));
  });

  it("refuses a body over the limit with 413 before reading it, and stores nothing anywhere", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const size = limits.maxAttachmentBytes + 1;
    const res = await upload(alice!, roomId, patternStream(size, 1024 * 1024), {
      "content-length": String(size),
      "x-filename": "huge.bin",
    });
    expect(res.status).toBe(413);
    expect(await json(res)).toMatchObject({ error: { code: "too_large" } });
    expect(await storedFor(alice!.tenant, roomId)).toEqual({ objects: [], rows: [] });
    expect(
      await maintenanceOf(roomObject(alice!.tenant, roomId)).cleanupAttachments(
        Date.now() + 365 * 86_400_000,
      ),
    ).toBe(0);
  });

  it("refuses a body longer or shorter than its Content-Length, and stores nothing anywhere", async () => {
    // (workerd logs the test side's broken request pipe as uncaught: the in-process fetch lets a
    // test send what no HTTP framing would deliver.)
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    for (const [declared, actual, says] of [
      [1000, 5000, "longer"],
      [1000, 500, "shorter"],
    ] as const) {
      const res = await upload(alice!, roomId, patternStream(actual, 256), {
        "content-length": String(declared),
      });
      expect(res.status, says).toBe(400);
      expect(await json(res)).toMatchObject({
        error: { code: "bad_request", message: expect.stringContaining(says) },
      });
    }
    expect(await storedFor(alice!.tenant, roomId)).toEqual({ objects: [], rows: [] });
    expect(
      await maintenanceOf(roomObject(alice!.tenant, roomId)).cleanupAttachments(
        Date.now() + 365 * 86_400_000,
      ),
    ).toBe(0);
  });

  it("requires Content-Length", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const res = await upload(alice!, roomId, patternStream(100));
    expect(res.status).toBe(400);
    expect(await json(res)).toMatchObject({
      error: { code: "bad_request", message: expect.stringContaining("Content-Length is required") },
    });
    expect(await storedFor(alice!.tenant, roomId)).toEqual({ objects: [], rows: [] });
  });

  it("records a malformed or missing Content-Type as application/octet-stream", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    for (const type of ["text", "text/", "<script>/x", "a/b/c"]) {
      expect((await uploaded(alice!, roomId, "x", { "content-type": type })).contentType, type).toBe(
        "application/octet-stream",
      );
    }
    const bare = await upload(alice!, roomId, new Uint8Array(3), { "x-filename": "x" });
    expect((await json<AttachmentRef>(bare)).contentType).toBe("application/octet-stream");
  });
});

describe("who may upload and download", () => {
  it("answers 404 to anyone who cannot read the room: other tenants, non-members, guests", async () => {
    const [alice, bob, guest] = await tenantOf(3);
    const [mallory] = await tenantOf(1);
    expect((await api(alice!, "PATCH", `/api/users/${guest!.id}`, { role: "guest" })).status).toBe(200);
    const channel = await createRoom(alice!);
    const secret = await json<{ id: string }>(
      api(alice!, "POST", "/api/rooms", { name: unique("secret"), kind: "private" }),
    );
    for (const roomId of [channel, secret.id]) {
      const file = await uploaded(alice!, roomId);
      expect(
        (
          await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
            clientId: unique("c"),
            text: "",
            attachments: [file.id],
          })
        ).status,
      ).toBe(201);
      for (const outsider of [bob!, guest!, mallory!]) {
        const up = await upload(outsider, roomId, "x");
        expect(up.status, `upload by ${outsider.name}`).toBe(404);
        expect(await json(up)).toMatchObject({ error: { code: "not_found" } });
        const down = await download(outsider, file.id);
        expect(down.status, `download by ${outsider.name}`).toBe(404);
        expect(await json(down)).toEqual({ error: { code: "not_found", message: "no such attachment" } });
      }
    }
    expect(await storedFor(alice!.tenant, channel)).toMatchObject({ rows: [expect.any(String)] });
  });

  it("lets a member download what a message carries, and only while they are a member", async () => {
    const [alice, bob] = await tenantOf(2);
    const roomId = await createRoom(alice!);
    const file = await uploaded(alice!, roomId, "shared");
    await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "m1",
      text: "see",
      attachments: [file.id],
    });
    expect((await download(bob!, file.id)).status).toBe(404);
    await join(bob!, roomId);
    const got = await download(bob!, file.id);
    expect(got.status).toBe(200);
    expect(await textOf(got)).toBe("shared");
    await api(bob!, "POST", `/api/rooms/${roomId}/leave`);
    expect((await download(bob!, file.id)).status).toBe(404);
  });

  it("keeps an upload no message carries yet to its uploader", async () => {
    const [alice, bob] = await tenantOf(2);
    const roomId = await createRoom(alice!);
    await join(bob!, roomId);
    const file = await uploaded(alice!, roomId, "draft");
    expect((await download(alice!, file.id)).status).toBe(200);
    expect((await download(bob!, file.id)).status).toBe(404);
  });

  it("answers 404 for ids that are malformed or unknown", async () => {
    const [alice] = await tenantOf(1);
    for (const id of ["nope", "a_00000000000000000000", "a_..%2F..%2Fetc"]) {
      expect((await download(alice!, id)).status, id).toBe(404);
    }
  });
});

describe("file names and how files are served", () => {
  it("sanitises X-Filename: path components, quotes, control and bidi characters; keeps Unicode", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const cases: [string, string, string][] = [
      ["../../etc/passwd", "passwd", `filename="passwd"; filename*=UTF-8''passwd`],
      ["C:\\Users\\me\\evil.exe", "evil.exe", `filename="evil.exe"; filename*=UTF-8''evil.exe`],
      ['say "hi".txt', "say hi.txt", `filename="say hi.txt"; filename*=UTF-8''say%20hi.txt`],
      [
        encodeURIComponent("a\r\nSet-Cookie: x=1.txt"),
        "aSet-Cookie_ x=1.txt",
        `filename="aSet-Cookie_ x=1.txt"; filename*=UTF-8''aSet-Cookie_%20x%3D1.txt`,
      ],
      [
        encodeURIComponent("Résumé 日本.pdf"),
        "Résumé 日本.pdf",
        `filename="R_sum_ __.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.pdf`,
      ],
      [encodeURIComponent("invoice\u202egpj.exe"), "invoicegpj.exe", `filename="invoicegpj.exe"`],
      ["..", "file", `filename="file"; filename*=UTF-8''file`],
    ];
    for (const [header, name, disposition] of cases) {
      const file = await uploaded(alice!, roomId, "x", { "x-filename": header });
      expect(file.name, header).toBe(name);
      const got = await download(alice!, file.id);
      expect(got.headers.get("content-disposition"), header).toContain(`attachment; ${disposition}`);
      await got.arrayBuffer();
    }
    const unnamed = await upload(alice!, roomId, "x");
    expect((await json<AttachmentRef>(unnamed)).name).toBe("file");
  });

  it("shows PNG inline on request, but never SVG or HTML", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const png = await uploaded(alice!, roomId, "png", { "content-type": "image/png", "x-filename": "a.png" });
    const inline = await download(alice!, png.id, "?inline=1");
    expect(inline.headers.get("content-disposition")).toMatch(/^inline; filename="a.png"/);
    expect(inline.headers.get("content-type")).toBe("image/png");
    expect(inline.headers.get("x-content-type-options")).toBe("nosniff");
    await inline.arrayBuffer();
    const plain = await download(alice!, png.id);
    expect(plain.headers.get("content-disposition")).toMatch(/^attachment;/);
    await plain.arrayBuffer();

    for (const [type, name] of [
      ["image/svg+xml", "a.svg"],
      ["text/html", "a.html"],
    ]) {
      const file = await uploaded(alice!, roomId, "<script>alert(1)</script>", {
        "content-type": type!,
        "x-filename": name!,
      });
      expect(file.contentType).toBe(type);
      const got = await download(alice!, file.id, "?inline=1");
      expect(got.headers.get("content-disposition"), type).toMatch(/^attachment;/);
      expect(got.headers.get("content-type"), type).toBe("application/octet-stream");
      expect(got.headers.get("content-security-policy")).toBe("default-src 'none'; sandbox");
      await got.arrayBuffer();
    }
  });
});

describe("attachments on messages", () => {
  it("puts the attachments on the message event, in the order sent, over a socket and in history", async () => {
    const [alice, bob] = await tenantOf(2);
    const roomId = await createRoom(alice!);
    await join(bob!, roomId);
    const one = await uploaded(alice!, roomId, "one", {
      "x-filename": "one.txt",
      "content-type": "text/plain",
    });
    const two = await uploaded(alice!, roomId, "second", {
      "x-filename": "two.png",
      "content-type": "image/png",
    });
    const watcher = await Client.open(bob!, roomId);
    await watcher.ready();
    const socket = await Client.open(alice!, roomId);
    await socket.ready();
    const seq = await socket.sendMessage("with-files", "", { attachments: [two.id, one.id] });
    await watcher.until((c) => c.events.some((e) => e.seq === seq), "the message");
    const event = watcher.events.find((e) => e.seq === seq) as MessageEvent;
    expect(event.attachments).toEqual([two, one]);
    const page = await json<{ events: MessageEvent[] }>(api(bob!, "GET", `/api/rooms/${roomId}/messages`));
    expect(page.events.at(-1)).toMatchObject({ seq, text: "", attachments: [two, one] });
    // Now a member may download it.
    expect(await textOf(download(bob!, one.id))).toBe("one");
    // An attachment goes on one message only; a retry of the same command is still acked.
    expect(await socket.sendMessage("with-files", "", { attachments: [two.id, one.id] })).toBe(seq);
    const again = await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "again",
      text: "again",
      attachments: [one.id],
    });
    expect(again.status).toBe(400);
    expect(await json(again)).toMatchObject({
      error: { code: "bad_request", message: `attachment ${one.id} is already attached to message ${seq}` },
    });
    watcher.close();
    socket.close();
  });

  it("refuses someone else's, another room's, unknown or repeated attachments, and changes nothing", async () => {
    const [alice, bob] = await tenantOf(2);
    const roomId = await createRoom(alice!);
    const elsewhere = await createRoom(alice!);
    await join(bob!, roomId);
    const mine = await uploaded(alice!, roomId);
    const bobs = await uploaded(bob!, roomId);
    const otherRooms = await uploaded(alice!, elsewhere);
    const before = await lastSeq(alice!, roomId);
    const cases: [string[], number, string][] = [
      [[mine.id, bobs.id], 404, "not_found"],
      [[otherRooms.id], 404, "not_found"],
      [["a_00000000000000000000"], 404, "not_found"],
      [[mine.id, mine.id], 400, "bad_request"],
    ];
    for (const [ids, status, code] of cases) {
      const res = await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
        clientId: unique("c"),
        text: "look",
        attachments: ids,
      });
      expect(res.status, ids.join()).toBe(status);
      expect(await json(res)).toMatchObject({ error: { code } });
    }
    const socket = await Client.open(alice!, roomId);
    await socket.ready();
    socket.send({ type: "send", clientId: "sock", text: "", attachments: [bobs.id] });
    await socket.until((c) => c.errors().length > 0, "the error");
    expect(socket.errors()[0]).toMatchObject({ code: "not_found", clientId: "sock" });
    socket.close();
    expect(await lastSeq(alice!, roomId)).toBe(before);

    // Nothing was claimed: each owner still attaches their own upload.
    const res = await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "ok",
      text: "",
      attachments: [mine.id],
    });
    expect(res.status).toBe(201);
    const res2 = await api(bob!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "ok",
      text: "",
      attachments: [bobs.id],
    });
    expect(res2.status).toBe(201);
  });

  it("refuses more attachments than a message may carry", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const ids: string[] = [];
    for (let i = 0; i <= limits.maxAttachmentsPerMessage; i++) ids.push((await uploaded(alice!, roomId)).id);
    const res = await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "many",
      text: "",
      attachments: ids,
    });
    expect(res.status).toBe(400);
    expect(await lastSeq(alice!, roomId)).toBe(1);
  });
});

describe("cleanup", () => {
  it("deletes an upload no message carries once the grace period is over, never a carried one", async () => {
    const [alice] = await tenantOf(1);
    const roomId = await createRoom(alice!);
    const orphan = await uploaded(alice!, roomId, "orphan");
    const kept = await uploaded(alice!, roomId, "kept");
    await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "m",
      text: "",
      attachments: [kept.id],
    });
    const room = roomObject(alice!.tenant, roomId);

    expect(await maintenanceOf(room).cleanupAttachments(Date.now())).toBe(0);
    expect(await storedFor(alice!.tenant, roomId)).toEqual({
      objects: [orphan.id, kept.id].sort(),
      rows: [orphan.id, kept.id].sort(),
    });

    expect(await maintenanceOf(room).cleanupAttachments(Date.now() + limits.attachmentGraceMs + 1000)).toBe(
      1,
    );
    expect(await storedFor(alice!.tenant, roomId)).toEqual({ objects: [kept.id], rows: [kept.id] });
    expect((await download(alice!, orphan.id)).status).toBe(404);
    expect(await textOf(download(alice!, kept.id))).toBe("kept");
    // Run again (alarms are delivered at least once): nothing more to do.
    expect(await maintenanceOf(room).cleanupAttachments(Date.now() + limits.attachmentGraceMs + 1000)).toBe(
      0,
    );
    // Too late to attach the deleted upload.
    const late = await api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "late",
      text: "",
      attachments: [orphan.id],
    });
    expect(late.status).toBe(404);
  });

  it("dooms a deleted message's attachments: no download at once, removed by the next cleanup", async () => {
    const [alice, bob] = await tenantOf(2);
    const roomId = await createRoom(alice!);
    await join(bob!, roomId);
    const file = await uploaded(alice!, roomId, "secret plans");
    const { seq } = await json<{ seq: number }>(
      api(alice!, "POST", `/api/rooms/${roomId}/messages`, {
        clientId: "m",
        text: "plans",
        attachments: [file.id],
      }),
    );
    expect((await download(bob!, file.id)).status).toBe(200);
    expect((await api(alice!, "DELETE", `/api/rooms/${roomId}/messages/${seq}`)).status).toBe(201);

    for (const who of [alice!, bob!]) expect((await download(who, file.id)).status).toBe(404);
    const page = await json<{ events: MessageEvent[] }>(api(bob!, "GET", `/api/rooms/${roomId}/messages`));
    const message = page.events.find((e) => e.seq === seq);
    expect(message).toMatchObject({ text: "", deleted: true });
    expect(message).not.toHaveProperty("attachments");

    // No grace period for a deleted message's files.
    expect(await maintenanceOf(roomObject(alice!.tenant, roomId)).cleanupAttachments(Date.now())).toBe(1);
    expect(await storedFor(alice!.tenant, roomId)).toEqual({ objects: [], rows: [] });
  });
});
