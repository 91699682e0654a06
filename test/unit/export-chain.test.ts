/**
 * The export's commitment scheme and verifier as pure logic (protocol/chain.ts,
 * protocol/export-verify.ts): what each tombstone is checked from, what the digest refuses to
 * leave unbound, and the head checks that need a head signed with chosen contents (a key this test
 * holds), which a room never produces: a tombstone dated after retention's cutoff, a scheme
 * boundary out of place, a signed head replayed on another room. The end-to-end cases (real rooms,
 * the CLI) are test/pipeline/export-tamper.test.ts and test/system/export-verify.test.ts.
 */
import { CompactSign, exportJWK, generateKeyPair, type JWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { scrubbedJson, tombstoneJson } from "../../durable-objects/room-log.ts";
import {
  chainNext,
  commit,
  type ExportRow,
  exportLine,
  GENESIS,
  headLine,
  headPayload,
  legacyDigest,
  parseSegmentLine,
  type RoomHead,
  recommit,
  segmentLine,
  stateOf,
} from "../../protocol/chain.ts";
import { verifyExport } from "../../protocol/export-verify.ts";
import type { RoomEvent } from "../../protocol/index.ts";

const ada = { id: "u_ada", name: "Ada" };
const T0 = 1_700_000_000_000;

const events: RoomEvent[] = [
  { seq: 1, kind: "member_join", ts: T0, author: ada, user: ada },
  { seq: 2, kind: "message", ts: T0 + 1, author: ada, clientId: "m1", text: "hello" },
  {
    seq: 3,
    kind: "message",
    ts: T0 + 2,
    author: ada,
    clientId: "m2",
    text: "with a file",
    threadRoot: 2,
    attachments: [{ id: "a_1", name: "f.txt", size: 3, contentType: "text/plain" }],
  },
  { seq: 4, kind: "edit", ts: T0 + 3, author: ada, clientId: "e1", target: 3, text: "edited" },
  { seq: 5, kind: "reaction", ts: T0 + 4, author: ada, clientId: "r1", target: 2, emoji: "👍", on: true },
  { seq: 6, kind: "delete", ts: T0 + 5, author: ada, clientId: "d1", target: 3 },
  { seq: 7, kind: "room_update", ts: T0 + 6, author: ada, name: "renamed" },
  { seq: 8, kind: "member_leave", ts: T0 + 7, author: ada, user: { id: "u_bob", name: "Bob" } },
];

describe("the scheme-2 commitment", () => {
  it("recomputes the same digest from a plain event, its deletion tombstone and its retention tombstone", () => {
    for (const event of events) {
      const c = commit(event);
      expect(recommit(event, { nonce: c.nonce })).toMatchObject({
        ok: true,
        state: "plain",
        digest: c.digest,
      });
      const expired = JSON.parse(tombstoneJson(event.seq, event.ts));
      expect(recommit(expired, { metaHash: c.metaHash })).toMatchObject({ ok: true, digest: c.digest });
      if (event.kind === "message" || event.kind === "edit") {
        const deleted = JSON.parse(scrubbedJson(JSON.stringify(event)));
        expect(recommit(deleted, { contentHash: c.contentHash })).toMatchObject({
          ok: true,
          state: "deleted",
          digest: c.digest,
        });
      }
    }
  });

  it("is pinned: the encoding of docs/protocol.md gives this digest, now and for every export already written", () => {
    // Computed independently (Python's json.dumps with compact separators and hashlib) from the
    // encoding as docs/protocol.md states it.
    const nonce = "00112233445566778899aabbccddeeff";
    const c = recommit(events[2], { nonce });
    expect(c).toMatchObject({ ok: true });
    expect(c.ok && [c.contentHash, c.metaHash, c.digest]).toEqual([
      "d23f44a7c79ff5bad1e0f990e8afc4b2a734a9541f6b39335c161a4076662a4f",
      "b80d6da86d30136285c36d100b88cbbec978db79b1db4ce366b735efe817a9dc",
      "68bf74b105f931f75be00527387ca14271fdf611bc424aceda07c0fc2332d9bd",
    ]);
  });

  it("hides a deleted text behind a fresh nonce: the same words never give the same content hash", () => {
    const event = events[1] as RoomEvent;
    const hashes = new Set(Array.from({ length: 20 }, () => commit(event).contentHash));
    expect(hashes.size).toBe(20);
  });

  it("refuses whatever the digest would not bind", () => {
    const c = commit(events[1] as RoomEvent);
    const plain = { ...(events[1] as object) } as Record<string, unknown>;
    const deleted = { ...plain, text: "", deleted: true };
    const expired = JSON.parse(tombstoneJson(2, T0 + 1)) as Record<string, unknown>;
    const cases: [unknown, Parameters<typeof recommit>[1], RegExp][] = [
      [{ ...plain, pinned: true }, { nonce: c.nonce }, /not committed to/],
      [{ ...plain, author: { ...ada, role: "owner" } }, { nonce: c.nonce }, /author/],
      [{ ...deleted, text: "invented" }, { contentHash: c.contentHash }, /carries no text/],
      [{ ...deleted, attachments: [] }, { contentHash: c.contentHash }, /no attachments/],
      [{ ...deleted, deleted: false }, { contentHash: c.contentHash }, /deleted must be true/],
      [deleted, { nonce: c.nonce }, /needs its contentHash/],
      [plain, { contentHash: c.contentHash }, /needs its nonce/],
      [
        { ...(events[4] as object), deleted: true, text: "" },
        { contentHash: c.contentHash },
        /reaction cannot be deleted/,
      ],
      [{ ...expired, text: "still here" }, { metaHash: c.metaHash }, /shows only/],
      [{ ...expired, author: ada }, { metaHash: c.metaHash }, /shows only/],
      [expired, { nonce: c.nonce }, /needs its metaHash/],
      [{ ...plain, kind: "poll" }, { nonce: c.nonce }, /unknown kind/],
    ];
    for (const [event, evidence, reason] of cases) {
      const r = recommit(event, evidence);
      expect(r.ok).toBe(false);
      expect(r.ok ? "" : r.reason).toMatch(reason);
    }
  });
});

// ---- a room built by hand, with heads this test signs ------------------------------------------

type Redaction = "deleted" | "expired";
let key: { privateKey: CryptoKey; jwk: JWK };
let jwks: { keys: JWK[] };

beforeAll(async () => {
  const pair = await generateKeyPair("Ed25519", { extractable: true });
  const pub = await exportJWK(pair.publicKey);
  key = { privateKey: pair.privateKey, jwk: pub };
  jwks = { keys: [{ ...pub, kid: "unit", alg: "Ed25519", use: "sig" }] };
});

/** Export lines of `events` (scheme 1 in the `scheme1` ranges), redacted as asked, and a head
 * signed with what the lines imply unless `head` says otherwise. */
async function room(
  id: string,
  redact: Record<number, Redaction>,
  {
    scheme1 = [],
    head = {},
    tenant = "acme",
  }: { scheme1?: [number, number][]; head?: Partial<RoomHead>; tenant?: string } = {},
): Promise<string[]> {
  let chain = GENESIS;
  const lines: string[] = [];
  for (const event of events) {
    const json = JSON.stringify(event);
    const c = commit(event);
    const scheme = scheme1.some(([from, to]) => event.seq >= from && event.seq <= to) ? 1 : 2;
    const digest = scheme === 1 ? legacyDigest(json) : c.digest;
    chain = chainNext(chain, event.seq, digest);
    const r = redact[event.seq];
    const shown =
      r === "expired" ? tombstoneJson(event.seq, event.ts) : r === "deleted" ? scrubbedJson(json) : json;
    const row: ExportRow = {
      seq: event.seq,
      json: shown,
      digest,
      chain,
      scheme,
      nonce: r ? null : c.nonce,
      contentHash: r === "expired" ? null : c.contentHash,
      metaHash: c.metaHash,
    };
    lines.push(exportLine(id, row));
  }
  const stated = {
    seq: events.length,
    chain,
    retentionDays: 30,
    expiredThrough: 0,
    expiredBefore: 0,
    scheme1,
    ...head,
    tenant,
    room: id,
    at: T0 + 1000,
  };
  const jws = await new CompactSign(new TextEncoder().encode(headPayload(stated)))
    .setProtectedHeader({ alg: "Ed25519", kid: "unit", jwk: key.jwk })
    .sign(key.privateKey);
  lines.push(headLine(stated, jws));
  return lines;
}

describe("segment lines (R2)", () => {
  it("carry what an export line needs, and read back to the same export line in every state", () => {
    const tricky: RoomEvent = {
      seq: 9,
      kind: "message",
      ts: T0 + 8,
      author: ada,
      text: 'x,"event":{"seq":1}',
    };
    for (const event of [...events, tricky]) {
      const json = JSON.stringify(event);
      const c = commit(event);
      const states: [string, ExportRow][] = [
        [
          "plain",
          {
            seq: event.seq,
            json,
            digest: c.digest,
            chain: GENESIS,
            scheme: 2,
            nonce: c.nonce,
            contentHash: c.contentHash,
            metaHash: c.metaHash,
          },
        ],
        [
          "expired",
          {
            seq: event.seq,
            json: tombstoneJson(event.seq, event.ts),
            digest: c.digest,
            chain: GENESIS,
            scheme: 2,
            nonce: null,
            contentHash: null,
            metaHash: c.metaHash,
          },
        ],
        [
          "scheme 1",
          {
            seq: event.seq,
            json,
            digest: legacyDigest(json),
            chain: GENESIS,
            scheme: 1,
            nonce: null,
            contentHash: null,
            metaHash: null,
          },
        ],
      ];
      if (event.kind === "message" || event.kind === "edit") {
        states.push([
          "deleted",
          {
            seq: event.seq,
            json: scrubbedJson(json),
            digest: c.digest,
            chain: GENESIS,
            scheme: 2,
            nonce: null,
            contentHash: c.contentHash,
            metaHash: c.metaHash,
          },
        ]);
      }
      for (const [state, row] of states) {
        const line = segmentLine(row);
        const back = parseSegmentLine(line);
        expect(back.json, state).toBe(row.json);
        expect(exportLine("r_1", back), state).toBe(exportLine("r_1", row));
        // Exactly the evidence of its state, as in an export: nothing a redaction removed.
        const evidence = [back.nonce, back.contentHash, back.metaHash].filter((v) => v !== null);
        expect(evidence, state).toHaveLength(row.scheme === 1 ? 0 : 1);
      }
    }
  });

  it("reads a line of the old format (the event alone) without commitments", () => {
    const json = JSON.stringify(events[1]);
    expect(parseSegmentLine(json)).toEqual({
      seq: 2,
      json,
      digest: "",
      chain: "",
      scheme: 1,
      nonce: null,
      contentHash: null,
      metaHash: null,
    });
  });
});

describe("the verifier", () => {
  it("passes a room with deletions and retention tombstones inside what its signed head states", async () => {
    const lines = await room(
      "r_a",
      { 1: "expired", 2: "expired", 3: "deleted", 4: "deleted" },
      {
        head: { expiredThrough: 2, expiredBefore: T0 + 2 },
      },
    );
    const verdict = await verifyExport(lines, { keys: jwks });
    expect(verdict).toMatchObject({
      ok: true,
      warnings: [],
      rooms: [{ room: "r_a", deleted: 2, expired: 2 }],
    });
    expect(verdict.rooms[0]?.signed?.signature).toMatchObject({ kid: "unit", trusted: true });
  });

  it("refuses a tombstone dated on or after retention's cutoff, even within its seqs", async () => {
    const lines = await room(
      "r_b",
      { 1: "expired", 2: "expired" },
      { head: { expiredThrough: 2, expiredBefore: T0 + 1 } },
    );
    expect(await verifyExport(lines, { keys: jwks })).toMatchObject({ ok: false, line: 2 });
  });

  it("holds each event to the digest scheme the head assigns to its seq", async () => {
    // Scheme 1 before the upgrade (1-3) and again while an older release ran (6-7), a rollback.
    const scheme1: [number, number][] = [
      [1, 3],
      [6, 7],
    ];
    const lines = await room("r_c", { 3: "deleted" }, { scheme1 });
    expect(stateOf(JSON.parse(lines[2] as string).event)).toBe("deleted");
    expect(await verifyExport(lines, { keys: jwks })).toMatchObject({
      ok: true,
      rooms: [{ uncheckable: { count: 1, first: [3] } }],
    });
    // The same lines under a head that places the schemes otherwise: the first line out of place.
    const cases: [[number, number][], number][] = [
      [
        [
          [1, 2],
          [6, 7],
        ],
        3,
      ],
      [
        [
          [1, 4],
          [6, 7],
        ],
        4,
      ],
      [[[1, 3]], 6],
      [
        [
          [1, 3],
          [5, 7],
        ],
        5,
      ],
      [[], 1],
    ];
    for (const [claimed, line] of cases) {
      const resigned = await room("r_c", {}, { scheme1, head: { scheme1: claimed } });
      expect(await verifyExport(resigned, { keys: jwks })).toMatchObject({ ok: false, line });
    }
  });

  it("reports the redacted scheme-1 events it cannot check", async () => {
    const lines = await room(
      "r_d",
      { 3: "deleted", 4: "deleted", 1: "expired" },
      {
        scheme1: [[1, 4]],
        head: { expiredThrough: 1, expiredBefore: T0 + 1 },
      },
    );
    const verdict = await verifyExport(lines, { keys: jwks });
    expect(verdict).toMatchObject({ ok: true, rooms: [{ uncheckable: { count: 3, first: [1, 3, 4] } }] });
    expect(verdict.warnings.join("\n")).toMatch(/3 redacted events use digest scheme 1 .*\(seq 1, 3, 4\)/);
  });

  it("refuses one room's signed head on another room, or on another tenant's export", async () => {
    const a = await room("r_e", {});
    const b = await room("r_f", {});
    const swapped = [
      ...a.slice(0, -1),
      JSON.stringify({ ...JSON.parse(a.at(-1) as string), jws: JSON.parse(b.at(-1) as string).jws }),
    ];
    expect(await verifyExport(swapped, { keys: jwks })).toMatchObject({ ok: false, line: swapped.length });
    const other = await room("r_e", {}, { tenant: "globex" });
    const moved = [
      ...a.slice(0, -1),
      JSON.stringify({ ...JSON.parse(a.at(-1) as string), jws: JSON.parse(other.at(-1) as string).jws }),
    ];
    expect(await verifyExport(moved, { keys: jwks })).toMatchObject({ ok: false, line: moved.length });
  });

  it("checks the chain at an anchored seq, and refuses a file that ends before an anchored head", async () => {
    const lines = await room("r_g", {});
    const at3 = JSON.parse(lines[2] as string).chain as string;
    expect(
      await verifyExport(lines, { keys: jwks, anchors: new Map([["r_g", new Map([[3, at3]])]]) }),
    ).toMatchObject({
      ok: true,
    });
    const later = new Map([["r_g", new Map([[events.length + 5, at3]])]]);
    expect(await verifyExport(lines, { keys: jwks, anchors: later })).toMatchObject({ ok: false });
  });

  it("without trusted keys, checks a signature against its own key and says it is not trusted", async () => {
    const verdict = await verifyExport(await room("r_h", {}));
    expect(verdict).toMatchObject({ ok: true });
    expect(verdict.rooms[0]?.signed?.signature.trusted).toBe(false);
  });

  it("refuses a retention tombstone whose author is not the retention policy, in either scheme", async () => {
    const retention = { expiredThrough: 1, expiredBefore: T0 + 1 };
    const lines = await room("r_i", { 1: "expired" }, { head: retention });
    const line = JSON.parse(lines[0] as string);
    line.event.author = ada;
    expect(await verifyExport([JSON.stringify(line), ...lines.slice(1)], { keys: jwks })).toMatchObject({
      ok: false,
      line: 1,
    });
    const legacy = await room("r_j", { 1: "expired" }, { scheme1: [[1, 8]], head: retention });
    const old = JSON.parse(legacy[0] as string);
    old.event = { ...old.event, author: ada };
    expect(await verifyExport([JSON.stringify(old), ...legacy.slice(1)], { keys: jwks })).toMatchObject({
      ok: false,
      line: 1,
    });
  });
});
