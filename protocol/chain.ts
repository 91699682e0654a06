/**
 * @module The tamper-evident hash chain of a room's log, and the eDiscovery export format built on
 * it. One definition, used by the room object when it appends, by the export job when it writes,
 * and by `npm run verify-export` (and its tests) when an auditor checks a file offline.
 *
 * Each event has a `digest`: SHA-256 of its JSON exactly as first appended. The room keeps the
 * running `chain`: chain(n) = SHA-256(chain(n-1) "\n" seq "\n" digest(n)), chain(0) = GENESIS.
 * Deletion and retention redact an event's content later (text scrubbed, or a tombstone) but never
 * its digest, so the chain still verifies over redacted events, while every event that was not
 * redacted must still hash to its digest.
 *
 * Export file (NDJSON), per room in turn: one line per event in seq order,
 *   {"room","seq","digest","chain","event"}
 * then a head line {"room","head":{"seq","chain"}} that the auditor compares with the head the live
 * room reports (GET /api/admin/rooms/:id/head) or the export record: a file whose chain was rebuilt
 * after an edit ends on a different head.
 */
import { createHash } from "node:crypto";
import type { RoomEvent } from "./index.ts";

export const GENESIS = "0".repeat(64);

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/** The digest of an event: SHA-256 of its JSON as appended (JSON.stringify of the event). */
export function digestOf(json: string): string {
  return sha256Hex(json);
}

export function chainNext(previous: string, seq: number, digest: string): string {
  return sha256Hex(`${previous}\n${seq}\n${digest}`);
}

export interface ExportLine {
  room: string;
  seq: number;
  digest: string;
  chain: string;
  event: RoomEvent;
}

export interface HeadLine {
  room: string;
  head: { seq: number; chain: string };
}

/** One event's export line, built from the stored JSON without re-serialising the event. */
export function exportLine(room: string, seq: number, digest: string, chain: string, json: string): string {
  return `{"room":${JSON.stringify(room)},"seq":${seq},"digest":"${digest}","chain":"${chain}","event":${json}}`;
}

export function headLine(room: string, seq: number, chain: string): string {
  return JSON.stringify({ room, head: { seq, chain } } satisfies HeadLine);
}

/** Content that deletion or retention removed: its digest can no longer be checked, its place can. */
export function isRedacted(event: RoomEvent): boolean {
  return event.kind === "expired" || ("deleted" in event && event.deleted === true);
}

export interface RoomVerdict {
  room: string;
  events: number;
  redacted: number;
  head: { seq: number; chain: string };
}

export type Verdict =
  | { ok: true; rooms: RoomVerdict[] }
  | { ok: false; line: number; reason: string; rooms: RoomVerdict[] };

/**
 * Verifies an export, line by line: within each room seqs run 1, 2, 3… with none missing or out of
 * order, each chain link follows from the previous one, each event that was not redacted hashes to
 * its digest, each deleted message has its `delete` event in the file, and each room ends with a
 * head line matching its last link. Returns the first failure with its 1-based line number.
 */
export async function verifyExport(lines: Iterable<string> | AsyncIterable<string>): Promise<Verdict> {
  const rooms: RoomVerdict[] = [];
  let current: { room: string; seq: number; chain: string; redacted: number; deletes: Set<number> } | null =
    null;
  let deletedTargets: { line: number; target: number }[] = [];
  let n = 0;
  const fail = (reason: string): Verdict => ({ ok: false, line: n, reason, rooms });
  const closeRoom = (): string | null => {
    if (!current) return null;
    for (const d of deletedTargets) {
      if (!current.deletes.has(d.target)) {
        n = d.line;
        return `event marked deleted but no delete of message ${d.target} in the export`;
      }
    }
    return null;
  };
  for await (const raw of lines) {
    n += 1;
    if (raw.trim() === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return fail("not JSON");
    }
    const line = parsed as Partial<ExportLine & HeadLine>;
    if (typeof line.room !== "string") return fail("no room");
    if (line.head) {
      if (!current || current.room !== line.room) return fail(`head of ${line.room} without its events`);
      if (line.head.seq !== current.seq || line.head.chain !== current.chain) {
        return fail(`head of ${line.room} does not match its last event (seq ${current.seq})`);
      }
      const missing = closeRoom();
      if (missing) return fail(missing);
      rooms.push({
        room: current.room,
        events: current.seq,
        redacted: current.redacted,
        head: { seq: current.seq, chain: current.chain },
      });
      current = null;
      deletedTargets = [];
      continue;
    }
    if (!current) {
      if (rooms.some((r) => r.room === line.room)) return fail(`room ${line.room} appears twice`);
      current = { room: line.room, seq: 0, chain: GENESIS, redacted: 0, deletes: new Set() };
    } else if (current.room !== line.room) {
      return fail(`room ${current.room} ends without its head line`);
    }
    const { seq, digest, chain, event } = line;
    if (seq !== current.seq + 1) return fail(`expected seq ${current.seq + 1}, found ${String(seq)}`);
    if (typeof digest !== "string" || typeof chain !== "string" || typeof event !== "object" || !event) {
      return fail("line lacks digest, chain or event");
    }
    if (event.seq !== seq) return fail(`event seq ${event.seq} differs from line seq ${seq}`);
    if (chainNext(current.chain, seq, digest) !== chain) return fail(`chain broken at seq ${seq}`);
    if (isRedacted(event)) {
      current.redacted += 1;
      if (event.kind === "message") deletedTargets.push({ line: n, target: seq });
      if (event.kind === "edit") deletedTargets.push({ line: n, target: event.target });
    } else if (digestOf(JSON.stringify(event)) !== digest) {
      return fail(`event ${seq} does not match its digest (altered)`);
    }
    if (event.kind === "delete") current.deletes.add(event.target);
    current.seq = seq;
    current.chain = chain;
  }
  if (current) return fail(`room ${current.room} ends without its head line`);
  return { ok: true, rooms };
}
