/**
 * @module Forgeries of an eDiscovery export, as someone holding a genuine file would make them, for
 * the tests of the verifier (test/pipeline, test/system). Each rewrites event lines only: digests,
 * chain links and the head line stay as they were, so only the verifier's reading of the events
 * can catch them. Where the file carries a scheme-2 nonce the forger uses it to recompute the
 * tombstone's hash exactly as docs/protocol.md ("Exports") specifies: an independent
 * implementation of that encoding, so these tests also hold the documentation to the code.
 * Runs in Node and in workerd.
 */
import { createHash } from "node:crypto";

export type Line = Record<string, unknown> & { room: string; seq?: number; event?: Record<string, unknown> };

export const RETENTION_AUTHOR = { id: "system", name: "retention policy" };

export function parseLines(text: string): Line[] {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Line);
}

export function serialize(lines: Line[]): string {
  return `${lines.map((l) => JSON.stringify(l)).join("\n")}\n`;
}

/** The index of the first event line whose event matches. */
export function findEvent(lines: Line[], match: (e: Record<string, unknown>) => boolean): number {
  const i = lines.findIndex((l) => l.event !== undefined && match(l.event));
  if (i < 0) throw new Error("no such event in the export");
  return i;
}

const h = (parts: unknown[]) => createHash("sha256").update(JSON.stringify(parts), "utf8").digest("hex");

const user = (u: unknown) => {
  const { id, name } = u as { id: string; name: string };
  return [id, name];
};

/** docs/protocol.md: the metadata and content fields of each kind, in their committed order. */
function fieldsOf(e: Record<string, unknown>): { meta: unknown[]; content: unknown[] } {
  const opt = (v: unknown) => (v === undefined ? null : v);
  switch (e.kind) {
    case "message": {
      const files = e.attachments as
        | { id: string; name: string; size: number; contentType: string }[]
        | undefined;
      return {
        meta: [opt(e.threadRoot)],
        content: [e.text, files ? files.map((a) => [a.id, a.name, a.size, a.contentType]) : null],
      };
    }
    case "edit":
      return { meta: [e.target], content: [e.text] };
    case "delete":
      return { meta: [e.target], content: [] };
    case "reaction":
      return { meta: [e.target, e.on], content: [e.emoji] };
    case "member_join":
    case "member_leave":
      return { meta: [user(e.user)], content: [] };
    case "room_update":
      return { meta: [], content: [opt(e.name), opt(e.topic)] };
    default:
      throw new Error(`no committed fields for ${String(e.kind)}`);
  }
}

export function contentHash(e: Record<string, unknown>, nonce: string): string {
  return h(["parley.content.v2", nonce, ...fieldsOf(e).content]);
}

export function metaHash(e: Record<string, unknown>, content: string): string {
  const clientId = typeof e.clientId === "string" ? e.clientId : null;
  return h(["parley.meta.v2", e.kind, user(e.author), clientId, ...fieldsOf(e).meta, content]);
}

export function digestV2(seq: number, ts: number, meta: string): string {
  return h(["parley.event.v2", seq, ts, meta]);
}

function event(line: Line): Record<string, unknown> {
  if (!line.event) throw new Error("not an event line");
  return line.event;
}

/** Forgery 1: an event shown as a retention tombstone, with its real seq and time, and (scheme 2)
 * the metadata hash that makes the tombstone's digest come out right. */
export function hideAsExpired(lines: Line[], i: number): Line[] {
  const out = [...lines];
  const line = { ...out[i] } as Line;
  const e = event(line);
  if (typeof line.nonce === "string") {
    line.metaHash = metaHash(e, contentHash(e, line.nonce));
    delete line.nonce;
  }
  line.event = { seq: e.seq, kind: "expired", ts: e.ts, author: RETENTION_AUTHOR };
  out[i] = line;
  return out;
}

/** Forgery 2: text put into a deleted message (or edit), which stays marked deleted. */
export function inventText(lines: Line[], i: number, text: string): Line[] {
  const out = [...lines];
  out[i] = { ...out[i], event: { ...event(out[i] as Line), text } } as Line;
  return out;
}

/** Forgery 3: `"deleted": true` added to an event. A message or edit also loses its text (and, for
 * scheme 2, shows the content hash the forger can compute), so it looks exactly like a real one. */
export function markDeleted(lines: Line[], i: number): Line[] {
  const out = [...lines];
  const line = { ...out[i] } as Line;
  const e = { ...event(line) };
  if (e.kind === "message" || e.kind === "edit") {
    if (typeof line.nonce === "string") {
      line.contentHash = contentHash(e, line.nonce);
      delete line.nonce;
    }
    e.text = "";
    delete e.attachments;
  }
  e.deleted = true;
  line.event = e;
  out[i] = line;
  return out;
}

/** A head line with fields changed but its signature kept. */
export function editHead(lines: Line[], room: string, change: Record<string, unknown>): Line[] {
  return lines.map((l) =>
    l.room === room && l.head !== undefined ? { ...l, head: { ...(l.head as object), ...change } } : l,
  );
}
