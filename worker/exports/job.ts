/**
 * @module The eDiscovery export job (queue `parley-exports`): writes one room, or every room of a
 * tenant, as NDJSON with the hash chain (protocol/chain.ts) into R2, streaming it through a
 * multipart upload so no export is ever held whole in memory.
 *
 * Each room's events are read from its object in seq order until a page reaches the end of the log,
 * and that page brings the room's head, taken with it: every event up to the head appears exactly
 * once, in order, followed by the head line, signed with the deployment's key (keys.ts). Taking the
 * head last means no line can show a redaction the head does not cover (docs/protocol.md). Delivery
 * is at least once: a job whose record is no longer `running` is skipped, and a failed attempt
 * aborts its upload; after the last attempt the record says `failed` with the error.
 */
import { and, asc, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { log } from "../../platform/log.ts";
import { directoryDb, filesBucket } from "../../platform/residency.ts";
import { headLine, type RoomHead } from "../../protocol/chain.ts";
import { exports, rooms } from "../db/schema.ts";
import { roomStub } from "../stubs.ts";
import { signRoomHead } from "./keys.ts";

export interface ExportJob {
  exportId: string;
  tenantId: string;
}

/** R2 wants every part but the last at least 5 MiB and all of one size. */
const PART_BYTES = 8 * 1024 * 1024;
/** Events fetched from a room per call. */
const PAGE_EVENTS = 1000;
export const EXPORT_ATTEMPTS = 3;

function isExportJob(body: unknown): body is ExportJob {
  const b = body as Partial<ExportJob> | null;
  return typeof b?.exportId === "string" && typeof b.tenantId === "string";
}

export async function consumeExports(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    if (!isExportJob(message.body)) {
      log({ event: "export_malformed", id: message.id });
      message.ack();
      continue;
    }
    const job = message.body;
    try {
      await runExport(env, job);
      message.ack();
    } catch (err) {
      log({ event: "export_failed", export: job.exportId, attempts: message.attempts, error: String(err) });
      if (message.attempts >= EXPORT_ATTEMPTS) {
        await drizzle(directoryDb(env, job.tenantId))
          .update(exports)
          .set({ status: "failed", error: String(err).slice(0, 500), finishedAt: Date.now() })
          .where(and(eq(exports.id, job.exportId), eq(exports.tenantId, job.tenantId)));
        message.ack();
      } else {
        message.retry({ delaySeconds: 2 ** message.attempts });
      }
    }
  }
}

/** Cuts a stream of encoded lines into equal parts of PART_BYTES (the last one shorter). */
class PartWriter {
  readonly #upload: R2MultipartUpload;
  readonly #parts: R2UploadedPart[] = [];
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  bytes = 0;

  constructor(upload: R2MultipartUpload) {
    this.#upload = upload;
  }

  async write(text: string): Promise<void> {
    const chunk = new TextEncoder().encode(text);
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    this.bytes += chunk.byteLength;
    while (this.#buffered >= PART_BYTES) await this.#upload1(PART_BYTES);
  }

  async finish(): Promise<R2UploadedPart[]> {
    if (this.#buffered > 0 || this.#parts.length === 0) await this.#upload1(this.#buffered);
    return this.#parts;
  }

  async #upload1(size: number): Promise<void> {
    const all = new Uint8Array(this.#buffered);
    let offset = 0;
    for (const c of this.#chunks) {
      all.set(c, offset);
      offset += c.byteLength;
    }
    const part = all.slice(0, size);
    const rest = all.slice(size);
    this.#chunks = rest.byteLength > 0 ? [rest] : [];
    this.#buffered = rest.byteLength;
    this.#parts.push(await this.#upload.uploadPart(this.#parts.length + 1, part));
  }
}

export async function runExport(env: Env, job: ExportJob): Promise<void> {
  const db = drizzle(directoryDb(env, job.tenantId));
  const record = await db
    .select()
    .from(exports)
    .where(and(eq(exports.id, job.exportId), eq(exports.tenantId, job.tenantId)))
    .get();
  if (record?.status !== "running") return;
  const roomIds = record.roomId
    ? [record.roomId]
    : (
        await db
          .select({ id: rooms.id })
          .from(rooms)
          .where(eq(rooms.tenantId, job.tenantId))
          .orderBy(asc(rooms.id))
          .all()
      ).map((r) => r.id);
  const upload = await filesBucket(env, job.tenantId).createMultipartUpload(record.objectKey, {
    httpMetadata: { contentType: "application/x-ndjson" },
  });
  try {
    const out = new PartWriter(upload);
    let events = 0;
    for (const roomId of roomIds) {
      const stub = roomStub(env, job.tenantId, roomId);
      let after = 0;
      let head: RoomHead | null = null;
      // A page reads at least one event unless it is the last, and a room appends far fewer events
      // than a page holds in the time a page takes, so this ends.
      while (!head) {
        const page = await stub.exportRange(after, PAGE_EVENTS);
        if (!page.head && page.last <= after)
          throw new Error(`room ${roomId} returned no events after ${after}`);
        await out.write(page.lines.map((l) => `${l}\n`).join(""));
        events += page.lines.length;
        after = page.last;
        head = page.head;
      }
      const signed = await signRoomHead(env, job.tenantId, roomId, head);
      await out.write(`${headLine(signed.head, signed.jws)}\n`);
    }
    await upload.complete(await out.finish());
    await db
      .update(exports)
      .set({ status: "done", events, bytes: out.bytes, finishedAt: Date.now() })
      .where(eq(exports.id, job.exportId));
  } catch (err) {
    await upload.abort().catch(() => undefined);
    throw err;
  }
}
