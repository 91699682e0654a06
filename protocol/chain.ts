/**
 * @module What makes a room's log tamper-evident: each event's commitment (its `digest`), the
 * running hash chain over the digests, the export line formats built on them, and the signed head
 * that ends each room of an export. One definition, used by the room object when it appends and
 * redacts, by the export job and the head route when they write, and by the verifier
 * (protocol/export-verify.ts, `npm run verify-export`) when an auditor checks a file offline.
 *
 * chain(n) = SHA-256(chain(n-1) "\n" seq "\n" digest(n)), chain(0) = GENESIS. The digest of an
 * event depends on its digest scheme, recorded per event (docs/protocol.md, "Exports"):
 *
 * - Scheme 1 (events written before scheme 2 existed): SHA-256 of the event's JSON as appended.
 *   Redaction later changes that JSON, so a redacted scheme-1 event cannot be checked.
 * - Scheme 2: three layers, so that redaction removes what it must and keeps what proves the rest.
 *     contentHash = H(["parley.content.v2", nonce, ...content])   what deletion removes
 *     metaHash    = H(["parley.meta.v2", kind, [authorId, authorName], clientId, ...meta, contentHash])
 *     digest      = H(["parley.event.v2", seq, ts, metaHash])
 *   H is SHA-256 (hex) of the array's JSON text (positional, so no key order to agree on; for
 *   strings, integers, booleans and null it is the RFC 8785 canonical form). `nonce` is 16 random
 *   bytes per event, destroyed with the content: without it a short deleted text could be found
 *   from its hash by guessing. A deleted message or edit shows its metadata with `text: ""` and its
 *   contentHash; an expired event shows only seq, ts and its metaHash. Either way the verifier
 *   recomputes the digest from what is shown, so a tombstone can only be the tombstone of what was
 *   there.
 */
import { createHash } from "node:crypto";
import { isSeq, RETENTION_AUTHOR, type RoomEvent } from "./index.ts";

export const GENESIS = "0".repeat(64);

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

export function chainNext(previous: string, seq: number, digest: string): string {
  return sha256Hex(`${previous}\n${seq}\n${digest}`);
}

/** 1: SHA-256 of the JSON as first appended (legacy). 2: the layered commitment of this module. */
export type DigestScheme = 1 | 2;

/** Scheme 1: the digest of an event is SHA-256 of its JSON exactly as first appended. */
export function legacyDigest(json: string): string {
  return sha256Hex(json);
}

const HEX64 = /^[0-9a-f]{64}$/;
const NONCE = /^[0-9a-f]{32}$/;

export function isHash(v: unknown): v is string {
  return typeof v === "string" && HEX64.test(v);
}

export function isNonce(v: unknown): v is string {
  return typeof v === "string" && NONCE.test(v);
}

const HEX_BYTE = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** 16 random bytes, hex: the secret that makes a content hash impossible to reverse by guessing.
 * Web Crypto's generator, not `randomBytes`: a fifth of the time in workerd, once per event. */
export function newNonce(): string {
  let hex = "";
  for (const b of crypto.getRandomValues(new Uint8Array(16))) hex += HEX_BYTE[b];
  return hex;
}

// ---- what each kind commits to ---------------------------------------------------------------

type FieldType = "string" | "seq" | "boolean" | "user" | "attachments";
interface Field {
  key: string;
  type: FieldType;
  optional?: true;
}
interface KindSpec {
  /** Structure the log's rules depend on: kept by deletion, bound by the digest in the open. */
  meta: readonly Field[];
  /** What someone wrote: removed by deletion, bound through contentHash. */
  content: readonly Field[];
  /** Deletion applies to it (a message and the edits of that message). */
  deletable?: true;
}

/**
 * Which fields are metadata and which are content, per kind (docs/protocol.md lists the same).
 * Content is what a person wrote: a message's text and files, an edit's text, a reaction's emoji, a
 * room's new name and topic. Everything the command rules read (targets, thread, on/off, the member
 * concerned) is metadata. Only messages and edits are redacted by deletion today; the split is
 * defined for every kind so a later redaction of another kind needs no new scheme.
 */
const KINDS = {
  message: {
    meta: [{ key: "threadRoot", type: "seq", optional: true }],
    content: [
      { key: "text", type: "string" },
      { key: "attachments", type: "attachments", optional: true },
    ],
    deletable: true,
  },
  edit: {
    meta: [{ key: "target", type: "seq" }],
    content: [{ key: "text", type: "string" }],
    deletable: true,
  },
  delete: { meta: [{ key: "target", type: "seq" }], content: [] },
  reaction: {
    meta: [
      { key: "target", type: "seq" },
      { key: "on", type: "boolean" },
    ],
    content: [{ key: "emoji", type: "string" }],
  },
  pin: {
    meta: [
      { key: "target", type: "seq" },
      { key: "on", type: "boolean" },
    ],
    content: [],
  },
  member_join: { meta: [{ key: "user", type: "user" }], content: [] },
  member_leave: { meta: [{ key: "user", type: "user" }], content: [] },
  room_update: {
    meta: [],
    content: [
      { key: "name", type: "string", optional: true },
      { key: "topic", type: "string", optional: true },
    ],
  },
} as const satisfies { [K in Exclude<RoomEvent["kind"], "expired">]: KindSpec };

type CommittedKind = keyof typeof KINDS;
const COMMON = ["seq", "kind", "ts", "author", "clientId"];

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function hasExactly(o: Record<string, unknown>, keys: readonly string[]): boolean {
  const own = Object.keys(o);
  return own.length === keys.length && keys.every((k) => Object.hasOwn(o, k));
}

type Encoded = string | number | boolean | null | Encoded[];

/** A field's value in the committed array, or undefined when it is not of its type. */
function encode(value: unknown, type: FieldType): Encoded | undefined {
  switch (type) {
    case "string":
      return typeof value === "string" ? value : undefined;
    case "seq":
      return isSeq(value) ? value : undefined;
    case "boolean":
      return typeof value === "boolean" ? value : undefined;
    case "user":
      return isRecord(value) &&
        hasExactly(value, ["id", "name"]) &&
        typeof value.id === "string" &&
        typeof value.name === "string"
        ? [value.id, value.name]
        : undefined;
    case "attachments": {
      if (!Array.isArray(value)) return undefined;
      const out: Encoded[] = [];
      for (const a of value) {
        if (
          !isRecord(a) ||
          !hasExactly(a, ["id", "name", "size", "contentType"]) ||
          typeof a.id !== "string" ||
          typeof a.name !== "string" ||
          typeof a.size !== "number" ||
          !Number.isSafeInteger(a.size) ||
          a.size < 0 ||
          typeof a.contentType !== "string"
        ) {
          return undefined;
        }
        out.push([a.id, a.name, a.size, a.contentType]);
      }
      return out;
    }
  }
}

function encodeFields(event: Record<string, unknown>, fields: readonly Field[]): Encoded[] | string {
  const out: Encoded[] = [];
  for (const f of fields) {
    const value = event[f.key];
    if (value === undefined && f.optional) {
      out.push(null);
      continue;
    }
    const encoded = encode(value, f.type);
    if (encoded === undefined) return `${f.key} is not a valid ${f.type}`;
    out.push(encoded);
  }
  return out;
}

const hashOf = (parts: Encoded[]): string => sha256Hex(JSON.stringify(parts));

export function eventDigest(seq: number, ts: number, metaHash: string): string {
  return hashOf(["parley.event.v2", seq, ts, metaHash]);
}

/** How an event looks, and so which layer of its commitment it is checked from. */
export type EventState = "plain" | "deleted" | "expired";

/** What an export line carries besides the event, for a scheme-2 event in each state. */
export type Evidence = { nonce: string } | { contentHash: string } | { metaHash: string };

export type Recommitted =
  | { ok: true; state: EventState; contentHash: string | null; metaHash: string; digest: string }
  | { ok: false; reason: string };

/** The visible state of an event: a retention tombstone, a deletion tombstone, or neither. */
export function stateOf(event: { kind?: unknown; deleted?: unknown }): EventState {
  if (event.kind === "expired") return "expired";
  return event.deleted === undefined ? "plain" : "deleted";
}

/**
 * Recomputes a scheme-2 digest from an event as shown plus the evidence its state calls for: the
 * nonce of a plain event, the contentHash of a deleted one, the metaHash of an expired one. Strict:
 * any field the commitment does not cover, a wrong type, text left in a deleted message, a
 * tombstone that shows more than seq, ts and its author: all refused, since whatever a field the
 * digest does not bind says could be anything.
 */
export function recommit(event: unknown, evidence: Evidence): Recommitted {
  const fail = (reason: string): Recommitted => ({ ok: false, reason });
  if (!isRecord(event)) return fail("event is not an object");
  const { seq, ts } = event;
  if (!isSeq(seq)) return fail("event seq is not a seq");
  if (typeof ts !== "number" || !Number.isSafeInteger(ts) || ts < 0) return fail("event ts is not a time");
  const state = stateOf(event);
  if (state === "expired") {
    if (!("metaHash" in evidence) || !isHash(evidence.metaHash))
      return fail("an expired event needs its metaHash");
    const author = event.author;
    if (
      !hasExactly(event, ["seq", "kind", "ts", "author"]) ||
      !isRecord(author) ||
      !hasExactly(author, ["id", "name"]) ||
      author.id !== RETENTION_AUTHOR.id ||
      author.name !== RETENTION_AUTHOR.name
    ) {
      return fail("an expired tombstone shows only seq, kind, ts and the retention author");
    }
    return {
      ok: true,
      state,
      contentHash: null,
      metaHash: evidence.metaHash,
      digest: eventDigest(seq, ts, evidence.metaHash),
    };
  }
  const kind = event.kind;
  if (typeof kind !== "string" || !Object.hasOwn(KINDS, kind)) return fail(`unknown kind ${String(kind)}`);
  const spec: KindSpec = KINDS[kind as CommittedKind];
  const author = encode(event.author, "user");
  if (author === undefined) return fail("author is not a user");
  if (event.clientId !== undefined && typeof event.clientId !== "string")
    return fail("clientId is not a string");
  const meta = encodeFields(event, spec.meta);
  if (typeof meta === "string") return fail(meta);
  const keys = [...COMMON, ...spec.meta.map((f) => f.key), ...spec.content.map((f) => f.key)];
  let contentHash: string;
  if (state === "deleted") {
    if (!spec.deletable) return fail(`a ${kind} cannot be deleted`);
    if (event.deleted !== true) return fail("deleted must be true");
    if (event.text !== "") return fail("a deleted message or edit carries no text");
    if (event.attachments !== undefined) return fail("a deleted message carries no attachments");
    if (!("contentHash" in evidence) || !isHash(evidence.contentHash))
      return fail("a deleted event needs its contentHash");
    keys.push("deleted");
    contentHash = evidence.contentHash;
  } else {
    if (!("nonce" in evidence) || !isNonce(evidence.nonce)) return fail("a plain event needs its nonce");
    const content = encodeFields(event, spec.content);
    if (typeof content === "string") return fail(content);
    contentHash = hashOf(["parley.content.v2", evidence.nonce, ...content]);
  }
  const unknown = Object.keys(event).find((k) => !keys.includes(k));
  if (unknown !== undefined) return fail(`field ${JSON.stringify(unknown).slice(0, 40)} is not committed to`);
  const metaHash = hashOf([
    "parley.meta.v2",
    kind,
    author,
    typeof event.clientId === "string" ? event.clientId : null,
    ...meta,
    contentHash,
  ]);
  return { ok: true, state, contentHash, metaHash, digest: eventDigest(seq, ts, metaHash) };
}

/** The commitment of a new event (scheme 2), with a fresh nonce. Throws on an event whose shape
 * the scheme does not know: the room only appends events it built itself. */
export function commit(event: RoomEvent): {
  nonce: string;
  contentHash: string;
  metaHash: string;
  digest: string;
} {
  const nonce = newNonce();
  const c = recommit(event, { nonce });
  if (!c.ok || c.contentHash === null)
    throw new Error(`cannot commit to event: ${c.ok ? "no content" : c.reason}`);
  return { nonce, contentHash: c.contentHash, metaHash: c.metaHash, digest: c.digest };
}

// ---- export lines -----------------------------------------------------------------------------

/** An event as the export reads it from the room: its JSON as it is now, and its commitment. */
export interface ExportRow {
  seq: number;
  json: string;
  digest: string;
  chain: string;
  scheme: DigestScheme;
  nonce: string | null;
  contentHash: string | null;
  metaHash: string | null;
}

/**
 * One event's export line, built from the stored JSON without re-serialising the event.
 * Scheme 1: {"room","seq","digest","chain","event"} (the format of every line before scheme 2).
 * Scheme 2: {"room","seq","v":2,"digest","chain",<evidence>,"event"}, the evidence being the
 * event's `nonce`, its `contentHash` if deleted, or its `metaHash` if expired: what the state of
 * the event as exported needs for its digest to be recomputed, and nothing more.
 */
export function exportLine(room: string, row: ExportRow): string {
  return `{"room":${JSON.stringify(room)},${lineFields(row)}}`;
}

/**
 * A line of a room's history segment in R2 (docs/protocol.md, "Archive"): an export line without
 * its room, `{"seq","v"?,"digest","chain",<evidence>?,"event"}`. It carries what an export needs of
 * the event, so the segment alone (no row in the room) still yields its export line.
 */
export function segmentLine(row: ExportRow): string {
  return `{${lineFields(row)}}`;
}

function lineFields(row: ExportRow): string {
  const tail = `"digest":"${row.digest}","chain":"${row.chain}"`;
  if (row.scheme === 1) return `"seq":${row.seq},${tail},"event":${row.json}`;
  const [key, value] = evidenceOf(row);
  if (value === null) throw new Error(`event ${row.seq} has no stored ${key}`);
  return `"seq":${row.seq},"v":2,${tail},"${key}":"${value}","event":${row.json}`;
}

/** The evidence a scheme-2 event's line carries in its present state (see `exportLine`). */
function evidenceOf(row: ExportRow): ["nonce" | "contentHash" | "metaHash", string | null] {
  const state = stateOf(JSON.parse(row.json) as RoomEvent);
  return state === "plain"
    ? ["nonce", row.nonce]
    : state === "deleted"
      ? ["contentHash", row.contentHash]
      : ["metaHash", row.metaHash];
}

/**
 * Reads a segment line back (`segmentLine`), or a line of the segments written before it existed,
 * which held the event's JSON alone (then `digest` is ''). The event's JSON is returned byte for
 * byte as written; the evidence of its state is the one commitment field that is not null.
 */
export function parseSegmentLine(line: string): ExportRow {
  // An event has no `event` field, and a `"` inside a string is escaped: only the new form has this.
  const at = line.indexOf(',"event":');
  if (at < 0) {
    const event = JSON.parse(line) as { seq: unknown };
    if (!isSeq(event.seq)) throw new Error("segment line without a seq");
    return {
      seq: event.seq,
      json: line,
      digest: "",
      chain: "",
      scheme: 1,
      nonce: null,
      contentHash: null,
      metaHash: null,
    };
  }
  // The fields before the event are numbers and hex, so the first `,"event":` is the key's.
  const head = JSON.parse(`${line.slice(0, at)}}`) as Record<string, unknown>;
  const { seq, digest, chain } = head;
  if (!isSeq(seq) || !isHash(digest) || !isHash(chain)) throw new Error("malformed segment line");
  const text = (v: unknown): string | null => (typeof v === "string" ? v : null);
  return {
    seq,
    json: line.slice(at + ',"event":'.length, -1),
    digest,
    chain,
    scheme: head.v === 2 ? 2 : 1,
    nonce: text(head.nonce),
    contentHash: text(head.contentHash),
    metaHash: text(head.metaHash),
  };
}

// ---- heads ------------------------------------------------------------------------------------

/** What a room states about its log at one moment; the head line and GET …/head carry it signed. */
export interface RoomHead {
  seq: number;
  chain: string;
  /** The tenant's retention policy in force: days, or null for forever. */
  retentionDays: number | null;
  /** Every event up to this seq has expired; no event after it has. */
  expiredThrough: number;
  /** The latest cutoff retention has applied: every expired event was written before it (ms). */
  expiredBefore: number;
  /** The seq ranges `[from, to]` (ascending) whose events use digest scheme 1: those written before
   * scheme 2 existed, and any an older release appended while it ran (a rollback). Every other event
   * uses scheme 2. */
  scheme1: number[][];
}

export const HEAD_FORMAT = "parley-head/2";
/** The JWS algorithm of signed heads (RFC 9864's fully specified name for EdDSA over Ed25519). */
export const HEAD_ALG = "Ed25519";

/** The JWS payload of a signed head: the room's statement, bound to its tenant, room and time. */
export interface SignedHead extends RoomHead {
  format: typeof HEAD_FORMAT;
  tenant: string;
  room: string;
  /** When the head was taken and signed (ms since the epoch). */
  at: number;
}

const HEAD_KEYS = [
  "format",
  "tenant",
  "room",
  "seq",
  "chain",
  "at",
  "retentionDays",
  "expiredThrough",
  "expiredBefore",
  "scheme1",
] as const;

/** The payload's JSON, in one fixed key order. */
export function headPayload(head: Omit<SignedHead, "format">): string {
  const full: SignedHead = { ...head, format: HEAD_FORMAT };
  return JSON.stringify(Object.fromEntries(HEAD_KEYS.map((k) => [k, full[k]])));
}

const count = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Parses a signed head's payload strictly: every field, of its type, and nothing else. */
export function parseSignedHead(v: unknown): SignedHead | null {
  if (!isRecord(v) || !hasExactly(v, HEAD_KEYS)) return null;
  if (v.format !== HEAD_FORMAT || typeof v.tenant !== "string" || typeof v.room !== "string") return null;
  if (!count(v.seq) || !isHash(v.chain) || !count(v.at)) return null;
  if (v.retentionDays !== null && !count(v.retentionDays)) return null;
  if (!count(v.expiredThrough) || !count(v.expiredBefore) || !isRanges(v.scheme1)) return null;
  return v as unknown as SignedHead;
}

/** Ascending, non-overlapping `[from, to]` seq ranges. */
function isRanges(v: unknown): v is number[][] {
  if (!Array.isArray(v)) return false;
  let last = 0;
  for (const r of v) {
    if (!Array.isArray(r) || r.length !== 2 || !isSeq(r[0]) || !isSeq(r[1]) || r[0] > r[1] || r[0] <= last) {
      return false;
    }
    last = r[1];
  }
  return true;
}

/** Adds seq ranges to a list of them, merging what touches or overlaps; the result is ascending. */
export function mergeRanges(ranges: readonly number[][], more: readonly number[][]): number[][] {
  const all = [...ranges, ...more].map(([from = 0, to = 0]): [number, number] => [from, to]);
  all.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [from, to] of all) {
    const last = out.at(-1);
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else out.push([from, to]);
  }
  return out;
}

export interface HeadLine {
  room: string;
  head: Omit<SignedHead, "format" | "room">;
  /** Compact JWS (protocol/export-verify.ts checks it) whose payload is `headPayload(head)`. */
  jws: string;
}

/** The line that ends a room in an export: the signed head, readable, and its JWS. */
export function headLine(head: Omit<SignedHead, "format">, jws: string): string {
  const { room, ...rest } = head;
  return JSON.stringify({ room, head: rest, jws } satisfies HeadLine);
}
