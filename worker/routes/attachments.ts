/**
 * @module Attachments over HTTP: `POST /api/rooms/:roomId/attachments` streams a raw body into the
 * tenant's bucket; `GET /api/attachments/:id` streams it back as a download. The room object decides
 * who may upload, attach and read each file (durable-objects/room-attachments.ts); the D1 row maps
 * an id to its tenant and room.
 *
 * An upload is registered with the room (pending) before its bytes are stored, so the room's
 * cleanup deletes it whatever step fails after that; it is answered 201 only once the bytes and the
 * D1 row are stored.
 */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { log } from "../../platform/log.ts";
import { directoryDb, filesBucket } from "../../platform/residency.ts";
import { downloadHeaders, normalizeContentType, sanitizeFilename } from "../attachment-meta.ts";
import { attachments } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { newId } from "../ids.ts";
import { reserveUpload } from "../quota.ts";
import { findRoom } from "../rooms.ts";
import { type AttachmentRecord, attachmentKey, roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

const ATTACHMENT_ID = /^a_[0-9a-z]{20}$/;

/** Every way an attachment can be out of reach (unknown id, another tenant's, a room the caller
 * cannot read, a deleted message's) is this same 404, so none of them is confirmed to exist. */
const noSuchAttachment = () => new ApiError("not_found", "no such attachment");

/**
 * The upload's size from `Content-Length`, which is required: the limit is enforced before a byte
 * is read, and R2 stores a stream only when its length is known. (A chunked body has none.)
 */
function declaredLength(header: string | undefined, max: number): number {
  if (header === undefined)
    throw new ApiError("bad_request", "Content-Length is required: send the file with its size, not chunked");
  if (!/^\d{1,16}$/.test(header)) throw new ApiError("bad_request", "Content-Length must be a byte count");
  const size = Number(header);
  if (size > max) throw new ApiError("too_large", `attachments are limited to ${max} bytes`);
  return size;
}

/**
 * Copies a body into `writer` and says what was wrong with it, if anything: null when exactly
 * `expected` bytes arrived. Reading stops at the first byte past `expected`, so a client that lies
 * about its length never gets more than that (and so more than the limit) stored. A failure to
 * write (R2 refused the stream) is thrown.
 */
async function copyExactly(
  body: ReadableStream<Uint8Array>,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  expected: number,
): Promise<string | null> {
  const reader = body.getReader();
  let seen = 0;
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch {
      return "the body broke off before its Content-Length";
    }
    if (chunk.done) return seen === expected ? null : "the body is shorter than its Content-Length";
    seen += chunk.value.byteLength;
    if (seen > expected) {
      reader.cancel().catch(() => undefined);
      return "the body is longer than its Content-Length";
    }
    await writer.write(chunk.value);
  }
}

/** Streams the body into R2 under the record's key, holding one chunk of it at a time. R2 stores a
 * stream only when its length is known, which a FixedLengthStream gives it; a put that does not
 * complete stores nothing. */
async function storeBytes(bucket: R2Bucket, record: AttachmentRecord, body: ReadableStream | null) {
  const options: R2PutOptions = {
    httpMetadata: { contentType: record.contentType },
    customMetadata: { uploaderId: record.uploaderId },
  };
  if (record.size === 0) {
    await bucket.put(record.objectKey, new Uint8Array(0), options);
    return;
  }
  if (!body) throw new ApiError("bad_request", "the body is shorter than its Content-Length");
  const sized = new FixedLengthStream(record.size);
  const writer = sized.writable.getWriter();
  const put = bucket.put(record.objectKey, sized.readable, options);
  // Handled here so that a put failing before it is awaited is not reported as unhandled.
  put.catch(() => undefined);
  let problem: string | null;
  try {
    problem = await copyExactly(body, writer, record.size);
  } catch (writeErr) {
    writer.abort(writeErr).catch(() => undefined);
    // The put's own error says why the write failed.
    throw await put.then(
      () => writeErr,
      (putErr: unknown) => putErr,
    );
  }
  if (problem !== null) {
    await writer.abort(new Error(problem)).catch(() => undefined);
    await put.catch(() => undefined);
    throw new ApiError("bad_request", problem);
  }
  await writer.close();
  await put;
}

export const attachmentRoutes = new Hono<AppEnv>()
  .post("/rooms/:roomId/attachments", async (c) => {
    const me = c.get("identity");
    const limits = limitsOf(c.env);
    const room = await findRoom(c.env, me, c.req.param("roomId"));
    const size = declaredLength(c.req.header("content-length"), limits.maxAttachmentBytes);
    const id = newId("a");
    const record: AttachmentRecord = {
      id,
      name: sanitizeFilename(c.req.header("x-filename"), limits.maxFilenameChars),
      size,
      contentType: normalizeContentType(c.req.header("content-type")),
      uploaderId: me.userId,
      objectKey: attachmentKey(room.tenantId, room.id, id),
      createdAt: Date.now(),
    };
    // The day's quota is counted before anything is registered or stored: a refusal leaves nothing.
    const release = await reserveUpload(c.env, me, size);
    const stub = roomStub(c.env, room.tenantId, room.id);
    try {
      const added = await stub.addAttachment(record);
      if (!added.ok) throw ApiError.from(added);
      try {
        await storeBytes(filesBucket(c.env, room.tenantId), record, c.req.raw.body);
      } catch (err) {
        // Nothing reached R2 (a put stores all or nothing): the room forgets the upload at once. If
        // even that fails, its cleanup deletes the pending upload after the grace period.
        await stub
          .discardAttachment(id, me.userId)
          .catch((discardErr: unknown) =>
            log({ event: "attachment_discard_failed", room: room.id, id, error: String(discardErr) }),
          );
        throw err;
      }
      await drizzle(directoryDb(c.env, room.tenantId)).insert(attachments).values({
        id,
        tenantId: room.tenantId,
        roomId: room.id,
        uploaderId: me.userId,
        name: record.name,
        contentType: record.contentType,
        size,
        objectKey: record.objectKey,
        createdAt: record.createdAt,
      });
    } catch (err) {
      // An upload that was not answered 201 does not count (a refused body, not a member, a failure).
      await release().catch((releaseErr: unknown) =>
        log({ event: "quota_release_failed", room: room.id, id, error: String(releaseErr) }),
      );
      throw err;
    }
    return c.json({ id, name: record.name, size, contentType: record.contentType }, 201);
  })
  .get("/attachments/:id", async (c) => {
    const me = c.get("identity");
    const id = c.req.param("id");
    if (!ATTACHMENT_ID.test(id)) throw noSuchAttachment();
    const row = await drizzle(directoryDb(c.env, me.tenantId))
      .select({ roomId: attachments.roomId })
      .from(attachments)
      .where(and(eq(attachments.id, id), eq(attachments.tenantId, me.tenantId)))
      .get();
    if (!row) throw noSuchAttachment();
    // Read access now, as for the room's history: the room visible to the caller, and a member.
    const room = await findRoom(c.env, me, row.roomId).catch((err: unknown) => {
      throw err instanceof ApiError && err.code === "not_found" ? noSuchAttachment() : err;
    });
    const file = await roomStub(c.env, room.tenantId, room.id).attachment(me.userId, id);
    if (!file) throw noSuchAttachment();
    const object = await filesBucket(c.env, room.tenantId).get(file.objectKey);
    if (!object) throw noSuchAttachment();
    const headers = downloadHeaders({ ...file, size: object.size }, c.req.query("inline") === "1");
    return new Response(object.body, { headers });
  });
