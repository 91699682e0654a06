/**
 * @module The offline verifier of an eDiscovery export (protocol/chain.ts defines the format), used
 * by `npm run verify-export` and the tests. It streams the file line by line and holds per room
 * only counters, the targets of deletions and a few remembered lines, so a large export verifies in
 * bounded memory.
 *
 * What it checks, per room: seqs 1, 2, 3… with none missing; every chain link; every event against
 * its digest (scheme 2: plain events from their nonce, deleted ones from their metadata and content
 * hash, expired ones from seq, ts and metadata hash; scheme 1: only unredacted events); that only
 * messages and edits are deleted, carry no text, and have the deleting `delete` event in the file;
 * that the head line matches the last link; and, for a signed head (scheme 2 exports), its
 * signature, that every `expired` tombstone lies within what the head says retention had expired
 * (seq and time), and that each event's digest scheme is the one the head assigns to its seq.
 * What any of this proves, and what it does not, is in docs/protocol.md ("Exports").
 */
import {
  calculateJwkThumbprint,
  compactVerify,
  decodeProtectedHeader,
  importJWK,
  type JSONWebKeySet,
  type JWK,
} from "jose";
import {
  chainNext,
  type Evidence,
  GENESIS,
  HEAD_ALG,
  legacyDigest,
  parseSignedHead,
  recommit,
  type SignedHead,
  stateOf,
} from "./chain.ts";
import { isSeq } from "./index.ts";

/** Who signed a room's head, as far as the verifier could tell. */
export interface Signature {
  kid: string;
  /** RFC 7638 SHA-256 thumbprint (base64url) of the public key that verified the signature. */
  thumbprint: string;
  /** Verified with a key the auditor supplied (`keys`), not only the key the file names. */
  trusted: boolean;
}

export interface RoomVerdict {
  room: string;
  events: number;
  deleted: number;
  expired: number;
  /** Redacted events under digest scheme 1, whose tombstones cannot be checked: how many, and the
   * first few seqs. */
  uncheckable: { count: number; first: number[] };
  head: { seq: number; chain: string };
  /** The signed statement of the head line, or null for an old-format (unsigned) head. */
  signed: (SignedHead & { signature: Signature }) | null;
}

export type Verdict =
  | { ok: true; rooms: RoomVerdict[]; warnings: string[] }
  | { ok: false; line: number; reason: string; rooms: RoomVerdict[]; warnings: string[] };

export interface VerifyOptions {
  /** Public keys the auditor trusts (the deployment's JWKS). With them every head must be signed by
   * one of them; without, a signature is checked only against the key its own header carries. */
  keys?: JSONWebKeySet;
  /** Heads obtained independently (the live head, an anchored copy): room → seq → chain. The chain
   * link at each such seq must be the one given; a seq past the room's head is a failure. */
  anchors?: ReadonlyMap<string, ReadonlyMap<number, string>>;
}

/** A run of consecutive `expired` lines: genuine exports have one, from seq 1. */
interface ExpiredRun {
  from: number;
  to: number;
  firstLine: number;
  lastLine: number;
  maxTs: number;
  maxTsLine: number;
}

interface RoomState {
  room: string;
  seq: number;
  chain: string;
  deleted: number;
  expired: number;
  uncheckable: { count: number; first: number[] };
  /** Targets of the `delete` events seen. */
  deletes: Set<number>;
  /** Deleted messages and edits: the message whose `delete` must be in the file. */
  deletedClaims: { line: number; target: number }[];
  runs: ExpiredRun[];
  /** Runs of consecutive lines of one digest scheme: few (normally one or two). */
  schemes: SchemeRun[];
}

interface SchemeRun {
  scheme: 1 | 2;
  from: number;
  to: number;
  firstLine: number;
  lastLine: number;
}

/** The first seq of `run` that is (`inside` true) or is not (false) in `ranges`, or null. */
function firstSeq(run: SchemeRun, ranges: readonly number[][], inside: boolean): number | null {
  for (let seq = run.from; seq <= run.to; ) {
    const range = ranges.find(([from = 0, to = 0]) => seq >= from && seq <= to);
    if (range ? inside : !inside) return seq;
    // Jump past the range we are in, or to the start of the next one.
    seq = range ? (range[1] ?? seq) + 1 : (ranges.find(([from = 0]) => from > seq)?.[0] ?? run.to + 1);
  }
  return null;
}

const UNCHECKABLE_LISTED = 10;

type LineRecord = Record<string, unknown>;

function isRecord(v: unknown): v is LineRecord {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The evidence field a scheme-2 line carries for its event's state (exactly one of them). */
function evidenceOf(line: LineRecord): Evidence | string {
  const given = (["nonce", "contentHash", "metaHash"] as const).filter((k) => line[k] !== undefined);
  if (given.length !== 1) return "a v2 line carries exactly one of nonce, contentHash, metaHash";
  const key = given[0];
  const value = key === undefined ? undefined : line[key];
  if (typeof value !== "string") return `${key} is not a string`;
  return key === "nonce"
    ? { nonce: value }
    : key === "contentHash"
      ? { contentHash: value }
      : { metaHash: value };
}

async function keyThumbprint(jwk: JWK): Promise<string> {
  return calculateJwkThumbprint(jwk, "sha256");
}

/** Public Ed25519 keys of a JWKS, by kid. */
function trustedByKid(keys: JSONWebKeySet): Map<string, JWK> {
  const out = new Map<string, JWK>();
  for (const k of keys.keys) {
    if (typeof k.kid === "string" && k.kty === "OKP" && k.crv === "Ed25519" && typeof k.x === "string") {
      out.set(k.kid, { kty: "OKP", crv: "Ed25519", x: k.x });
    }
  }
  return out;
}

/**
 * Checks a head line's JWS: signed with Ed25519 by a trusted key (or, without trusted keys, by
 * the key its header embeds), over exactly the head the line shows. Returns the signed head or why
 * not.
 */
async function checkSignature(
  jws: string,
  room: string,
  shown: LineRecord,
  trusted: Map<string, JWK> | null,
): Promise<{ head: SignedHead; signature: Signature } | string> {
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(jws);
  } catch {
    return `head of ${room}: the signature is not a JWS`;
  }
  const kid = typeof header.kid === "string" ? header.kid : "";
  if (header.alg !== HEAD_ALG || kid === "")
    return `head of ${room}: the signature is not ${HEAD_ALG} with a kid`;
  const embedded = isRecord(header.jwk) ? (header.jwk as JWK) : null;
  let key: JWK;
  if (trusted) {
    const known = trusted.get(kid);
    if (!known)
      return `head of ${room} is signed by key ${JSON.stringify(kid)}, which is not among the trusted keys`;
    if (embedded && (await keyThumbprint(embedded).catch(() => "")) !== (await keyThumbprint(known))) {
      return `head of ${room}: the key in the signature is not the trusted key ${JSON.stringify(kid)}`;
    }
    key = known;
  } else {
    if (embedded?.kty !== "OKP" || embedded.crv !== "Ed25519" || embedded.d !== undefined) {
      return `head of ${room}: the signature names no public Ed25519 key`;
    }
    key = { kty: "OKP", crv: "Ed25519", x: embedded.x };
  }
  let payload: Uint8Array;
  try {
    const verified = await compactVerify(jws, await importJWK(key, HEAD_ALG), { algorithms: [HEAD_ALG] });
    payload = verified.payload;
  } catch {
    return `head of ${room}: the signature does not verify`;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return `head of ${room}: the signed payload is not JSON`;
  }
  const head = parseSignedHead(parsed);
  if (!head) return `head of ${room}: the signed payload is not a head`;
  // The line must show exactly what was signed, field for field (strings, numbers, null and the
  // ranges of `scheme1`, compared as JSON).
  const { format: _format, room: signedRoom, ...fields } = head;
  const same =
    signedRoom === room &&
    Object.keys(shown).length === Object.keys(fields).length &&
    Object.entries(fields).every(
      ([k, v]) => Object.hasOwn(shown, k) && JSON.stringify(shown[k]) === JSON.stringify(v),
    );
  if (!same) return `head of ${room} differs from what its signature covers`;
  return { head, signature: { kid, thumbprint: await keyThumbprint(key), trusted: trusted !== null } };
}

function newRoom(room: string): RoomState {
  return {
    room,
    seq: 0,
    chain: GENESIS,
    deleted: 0,
    expired: 0,
    uncheckable: { count: 0, first: [] },
    deletes: new Set(),
    deletedClaims: [],
    runs: [],
    schemes: [],
  };
}

export async function verifyExport(
  lines: Iterable<string> | AsyncIterable<string>,
  options: VerifyOptions = {},
): Promise<Verdict> {
  const rooms: RoomVerdict[] = [];
  const warnings: string[] = [];
  const trusted = options.keys ? trustedByKid(options.keys) : null;
  let current: RoomState | null = null;
  let n = 0;
  const fail = (reason: string, line = n): Verdict => ({ ok: false, line, reason, rooms, warnings });

  for await (const raw of lines) {
    n += 1;
    if (raw.trim() === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      return fail("not JSON");
    }
    if (!isRecord(parsed)) return fail("not a JSON object");
    const line = parsed;
    if (typeof line.room !== "string") return fail("no room");
    const room = line.room;

    if (line.head !== undefined) {
      // A room with no events yet is just its head (seq 0).
      if (!current && isRecord(line.head) && line.head.seq === 0 && !rooms.some((r) => r.room === room)) {
        current = newRoom(room);
      }
      if (!current || current.room !== room) return fail(`head of ${room} without its events`);
      const closed = await closeRoom(current, line, trusted, options, warnings);
      if ("reason" in closed) return fail(closed.reason, closed.line ?? n);
      rooms.push(closed);
      current = null;
      continue;
    }

    if (!current) {
      if (rooms.some((r) => r.room === room)) return fail(`room ${room} appears twice`);
      current = newRoom(room);
    } else if (current.room !== room) {
      return fail(`room ${current.room} ends without its head line`);
    }
    const { seq, digest, chain, event } = line;
    if (seq !== current.seq + 1) return fail(`expected seq ${current.seq + 1}, found ${String(seq)}`);
    if (typeof digest !== "string" || typeof chain !== "string" || !isRecord(event)) {
      return fail("line lacks digest, chain or event");
    }
    if (event.seq !== seq) return fail(`event seq ${String(event.seq)} differs from line seq ${seq}`);
    if (chainNext(current.chain, seq, digest) !== chain) return fail(`chain broken at seq ${seq}`);
    const anchored = options.anchors?.get(room)?.get(seq);
    if (anchored !== undefined && anchored !== chain) {
      return fail(`chain link at seq ${seq} differs from the head given for ${room} (${seq}:${anchored})`);
    }

    const state = stateOf(event);
    if (line.v === 2) {
      const evidence = evidenceOf(line);
      if (typeof evidence === "string") return fail(evidence);
      const c = recommit(event, evidence);
      if (!c.ok) return fail(`event ${seq}: ${c.reason}`);
      if (c.digest !== digest) {
        return fail(
          `event ${seq} does not match its digest (${state === "plain" ? "altered" : `not the ${state} tombstone of what was there`})`,
        );
      }
      noteScheme(current, 2, seq, n);
    } else if (line.v === undefined) {
      if (line.nonce !== undefined || line.contentHash !== undefined || line.metaHash !== undefined) {
        return fail("a scheme-1 line carries scheme-2 evidence");
      }
      const shape = legacyShape(event, state);
      if (shape) return fail(`event ${seq}: ${shape}`);
      if (state === "plain") {
        if (legacyDigest(JSON.stringify(event)) !== digest)
          return fail(`event ${seq} does not match its digest (altered)`);
      } else {
        current.uncheckable.count += 1;
        if (current.uncheckable.first.length < UNCHECKABLE_LISTED) current.uncheckable.first.push(seq);
      }
      noteScheme(current, 1, seq, n);
    } else {
      return fail(`unknown digest scheme ${JSON.stringify(line.v)}`);
    }

    const kind = event.kind;
    if (state === "deleted") {
      current.deleted += 1;
      const target = kind === "message" ? seq : event.target;
      if (typeof target === "number") current.deletedClaims.push({ line: n, target });
    } else if (state === "expired") {
      current.expired += 1;
      const ts = event.ts as number;
      const last = current.runs.at(-1);
      if (last && last.to === seq - 1 && last.lastLine === n - 1) {
        last.to = seq;
        last.lastLine = n;
        if (ts > last.maxTs) {
          last.maxTs = ts;
          last.maxTsLine = n;
        }
      } else {
        current.runs.push({ from: seq, to: seq, firstLine: n, lastLine: n, maxTs: ts, maxTsLine: n });
      }
    }
    if (kind === "delete" && typeof event.target === "number") current.deletes.add(event.target);
    current.seq = seq;
    current.chain = chain;
  }
  if (current) return fail(`room ${current.room} ends without its head line`);
  return { ok: true, rooms, warnings };
}

function noteScheme(room: RoomState, scheme: 1 | 2, seq: number, line: number): void {
  const last = room.schemes.at(-1);
  if (last && last.scheme === scheme && last.to === seq - 1 && last.lastLine === line - 1) {
    last.to = seq;
    last.lastLine = line;
  } else {
    room.schemes.push({ scheme, from: seq, to: seq, firstLine: line, lastLine: line });
  }
}

/** The structural rules a scheme-1 event must follow; its digest cannot vouch for a tombstone. */
function legacyShape(event: LineRecord, state: ReturnType<typeof stateOf>): string | null {
  if (state === "deleted") {
    if (event.kind !== "message" && event.kind !== "edit") return `a ${String(event.kind)} cannot be deleted`;
    if (event.deleted !== true) return "deleted must be true";
    if (event.text !== "") return "a deleted message or edit carries no text";
    if (event.attachments !== undefined) return "a deleted message carries no attachments";
    if (event.kind === "edit" && !isSeq(event.target)) return "a deleted edit names no target";
  }
  if (state === "expired") {
    const keys = Object.keys(event).sort().join(",");
    const author = event.author;
    if (
      keys !== "author,kind,seq,ts" ||
      typeof event.ts !== "number" ||
      !isRecord(author) ||
      author.id !== "system" ||
      Object.keys(author).length !== 2
    ) {
      return "an expired tombstone shows only seq, kind, ts and the retention author";
    }
  }
  return null;
}

/** Ends a room at its head line: the head, the deletions, the signature and what it bounds. */
async function closeRoom(
  room: RoomState,
  line: LineRecord,
  trusted: Map<string, JWK> | null,
  options: VerifyOptions,
  warnings: string[],
): Promise<RoomVerdict | { reason: string; line?: number }> {
  const head = line.head;
  if (!isRecord(head) || head.seq !== room.seq || head.chain !== room.chain) {
    return { reason: `head of ${room.room} does not match its last event (seq ${room.seq})` };
  }
  for (const claim of room.deletedClaims) {
    if (!room.deletes.has(claim.target)) {
      return {
        reason: `event marked deleted but no delete of message ${claim.target} in the export`,
        line: claim.line,
      };
    }
  }
  for (const [seq, chain] of options.anchors?.get(room.room) ?? []) {
    if (seq > room.seq) {
      return { reason: `${room.room} ends at seq ${room.seq}, before the head given (${seq}:${chain})` };
    }
  }

  let signed: RoomVerdict["signed"] = null;
  if (typeof line.jws === "string") {
    const checked = await checkSignature(line.jws, room.room, head, trusted);
    if (typeof checked === "string") return { reason: checked };
    const s = checked.head;
    signed = { ...s, signature: checked.signature };
    for (const run of room.runs) {
      if (run.to > s.expiredThrough) {
        const first = Math.max(run.from, s.expiredThrough + 1);
        return {
          reason: `event ${first} is an "expired" tombstone but retention had expired only up to seq ${s.expiredThrough}`,
          line: run.firstLine + (first - run.from),
        };
      }
      if (run.maxTs >= s.expiredBefore) {
        return {
          reason: `an "expired" tombstone dated ${run.maxTs} is not older than retention's cutoff ${s.expiredBefore}`,
          line: run.maxTsLine,
        };
      }
    }
    for (const run of room.schemes) {
      const wrong = firstSeq(run, s.scheme1, run.scheme === 2);
      if (wrong !== null) {
        return {
          reason:
            run.scheme === 1
              ? `event ${wrong} uses digest scheme 1, but the head says it was committed with scheme 2`
              : `event ${wrong} uses digest scheme 2, but the head says it was committed with scheme 1`,
          line: run.firstLine + (wrong - run.from),
        };
      }
    }
  } else if (line.jws !== undefined) {
    return { reason: `head of ${room.room}: jws is not a string` };
  } else if (room.schemes.some((r) => r.scheme === 2)) {
    // Every export that writes scheme-2 lines signs its heads: this signature was removed.
    return {
      reason: `head of ${room.room} is unsigned, but its events are scheme 2 (the signature was removed)`,
    };
  } else if (trusted) {
    return {
      reason: `head of ${room.room} is unsigned (old format): it cannot be checked against the trusted keys`,
    };
  } else {
    warnings.push(
      `${room.room}: old export format: the head is not signed and records no retention state, so an event replaced by an "expired" tombstone cannot be detected; the head proves nothing unless compared (--head) with one obtained independently`,
    );
  }
  const { count, first } = room.uncheckable;
  if (count > 0) {
    const listed = first.join(", ");
    const more = count > first.length ? ", …" : "";
    warnings.push(
      `${room.room}: ${count} redacted events use digest scheme 1 (written before scheme 2), so whether each tombstone is that of what was there cannot be checked (seq ${listed}${more})`,
    );
  }
  return {
    room: room.room,
    events: room.seq,
    deleted: room.deleted,
    expired: room.expired,
    uncheckable: room.uncheckable,
    head: { seq: room.seq, chain: room.chain },
    signed,
  };
}
