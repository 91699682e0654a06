/**
 * Tamper evidence of exports, end to end: a room with real deletions, edits, reactions, a thread,
 * a rename and real retention tombstones (retention run with a later clock), exported over HTTP
 * and checked by the real `verify-export` CLI (run in Node through the VERIFY_EXPORT_CLI binding,
 * test/verify-cli.ts), with the deployment's keys from GET /.well-known/parley-export-keys. Then the
 * forgeries of issue 13, each made as someone holding the genuine file would make it (digests,
 * chain and head line untouched): every one must be refused with exit 1 naming its line.
 */

import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { createHash } from "node:crypto";
import { CompactSign, calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import type { Room } from "../../durable-objects/room.ts";
import { roomStub } from "../../worker/stubs.ts";
import {
  editHead,
  findEvent,
  hideAsExpired,
  inventText,
  type Line,
  markDeleted,
  parseLines,
  serialize,
} from "../export-forgery.ts";
import {
  after,
  api,
  createRoom,
  exportRoom,
  fetchWorker,
  join,
  json,
  login,
  type User,
  unique,
} from "../helpers.ts";
import type { CliRun } from "../verify-cli.ts";
import { undoSchemaV8 } from "./legacy-room.ts";

const DAY = 24 * 60 * 60 * 1000;

async function cli(
  text: string | { fixture: string },
  opts: { keys?: unknown; args?: string[] } = {},
): Promise<CliRun> {
  const input = typeof text === "string" ? { export: text } : text;
  const res = await env.VERIFY_EXPORT_CLI.fetch("http://cli/", {
    method: "POST",
    body: JSON.stringify({ ...input, ...opts }),
  });
  return res.json<CliRun>();
}

/** Exit 1, naming the given 1-based line of the file. */
function refusedAt(run: CliRun, line: number): void {
  expect(run.status, run.stdout + run.stderr).toBe(1);
  expect(run.stderr).toMatch(new RegExp(`^FAIL line ${line}: `, "m"));
}

async function send(user: User, roomId: string, text: string, extra: Record<string, unknown> = {}) {
  const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, {
    clientId: unique("c"),
    text,
    ...extra,
  });
  expect(res.status).toBe(201);
  return (await json<{ seq: number }>(res)).seq;
}

async function tsOf(user: User, roomId: string, seq: number): Promise<number> {
  const page = await json<{ events: { seq: number; ts: number }[] }>(
    api(user, "GET", `/api/rooms/${roomId}/messages?after=${seq - 1}&limit=1`),
  );
  return page.events[0]?.ts ?? Number.NaN;
}

async function publishedKeys(): Promise<{ keys: (JWK & { kid: string })[] }> {
  const res = await fetchWorker("/.well-known/parley-export-keys");
  expect(res.status).toBe(200);
  return res.json();
}

interface Scene {
  ada: User;
  roomId: string;
  text: string;
  lines: Line[];
  seqs: Record<
    "kept" | "edit" | "secret" | "secretEdit" | "del" | "react" | "reply" | "rename" | "last",
    number
  >;
  expiredThrough: number;
}

/** One room with every kind of event, some deleted, the oldest expired by retention, exported. */
async function scene(): Promise<Scene> {
  const ada = await login(unique("t"), "Ada");
  const bob = await login(ada.tenant, "Bob");
  const roomId = await createRoom(ada);
  await join(bob, roomId);
  await send(ada, roomId, "an old message, to expire");
  const old = await send(bob, roomId, "another old one");
  const cutoff = (await tsOf(ada, roomId, old)) + 1;
  await after(cutoff);
  const kept = await send(ada, roomId, "kept");
  const edit = (
    await json<{ seq: number }>(
      api(ada, "PATCH", `/api/rooms/${roomId}/messages/${kept}`, { clientId: "e1", text: "kept, edited" }),
    )
  ).seq;
  const secret = await send(bob, roomId, "a secret, later deleted");
  const secretEdit = (
    await json<{ seq: number }>(
      api(bob, "PATCH", `/api/rooms/${roomId}/messages/${secret}`, {
        clientId: "e2",
        text: "the secret, edited",
      }),
    )
  ).seq;
  const del = (
    await json<{ seq: number }>(api(ada, "DELETE", `/api/rooms/${roomId}/messages/${secret}?clientId=d1`))
  ).seq;
  const react = (
    await json<{ seq: number }>(
      api(bob, "POST", `/api/rooms/${roomId}/messages/${kept}/reactions`, {
        clientId: "r1",
        emoji: "👍",
        on: true,
      }),
    )
  ).seq;
  const reply = await send(bob, roomId, "a reply in the thread", { threadRoot: kept });
  const renamed = await json<{ updateSeq: number }>(
    api(ada, "PATCH", `/api/rooms/${roomId}`, { name: unique("renamed") }),
  );
  const last = await send(ada, roomId, "the last word");

  expect((await api(ada, "PATCH", "/api/tenant", { retentionDays: 30 })).status).toBe(200);
  const stub = roomStub(env, ada.tenant, roomId);
  expect(
    (await runInDurableObject(stub, (room: Room) => room.maintenance.housekeep(cutoff + 30 * DAY))).expired,
  ).toBe(old);
  const text = await exportRoom(ada, roomId);
  return {
    ada,
    roomId,
    text,
    lines: parseLines(text),
    seqs: { kept, edit, secret, secretEdit, del, react, reply, rename: renamed.updateSeq, last },
    expiredThrough: old,
  };
}

let s: Scene;
let published: Promise<{ keys: (JWK & { kid: string })[] }> | undefined;
/** The deployment's JWKS, fetched once, when a test first needs it. */
const trusted = () => {
  published ??= publishedKeys();
  return published;
};
beforeAll(async () => {
  s = await scene();
});

/** Each forgery refused naming its line: by the file alone (the head is untouched, so no trusted
 * key is needed to see it), then with the deployment's keys too. */
async function refusedEitherWay(forgeries: [Line[], number][]): Promise<CliRun[]> {
  const alone: CliRun[] = [];
  for (const [forged, line] of forgeries) {
    const run = await cli(serialize(forged));
    refusedAt(run, line);
    alone.push(run);
  }
  const keys = await trusted();
  for (const [forged, line] of forgeries) refusedAt(await cli(serialize(forged), { keys }), line);
  return alone;
}

const lineOf = (seq: number) => findEvent(s.lines, (e) => e.seq === seq);

describe("a genuine export", () => {
  it("verifies with the published keys, naming the key that signed and its fingerprint", async () => {
    const expired = s.lines.filter((l) => l.event?.kind === "expired").map((l) => l.seq);
    expect(expired).toEqual(Array.from({ length: s.expiredThrough }, (_, i) => i + 1));
    expect(s.lines[lineOf(s.seqs.secret)]?.event).toMatchObject({ text: "", deleted: true });
    expect(s.lines[lineOf(s.seqs.secretEdit)]?.event).toMatchObject({ text: "", deleted: true });
    expect(s.text).not.toContain("secret, ");

    const keys = await trusted();
    const run = await cli(s.text, { keys });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    const [key] = keys.keys;
    const fingerprint = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: key?.x }, "sha256");
    expect(run.stdout).toContain(
      `${s.roomId}: ${s.seqs.last} events (2 deleted, ${s.expiredThrough} expired)`,
    );
    expect(run.stdout).toContain(`signed by key ${key?.kid}, fingerprint ${fingerprint}`);
    expect(run.stdout).toContain("one of the trusted keys");
    expect(run.stdout).not.toContain("WARNING");
    expect(run.stdout).toContain("OK: 1 rooms verified");
  });

  it("verifies without keys too, but says plainly that the signature proves nothing then", async () => {
    const run = await cli(s.text);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/WARNING: no trusted keys given \(--keys\)/);
    expect(run.stdout).toMatch(/fingerprint [A-Za-z0-9_-]{43}/);
  });

  it("checks the live head, signed the same way, against the file", async () => {
    const keys = await trusted();
    const head = await json<{ seq: number; chain: string; jws: string; expiredThrough: number }>(
      api(s.ada, "GET", `/api/admin/rooms/${s.roomId}/head`),
    );
    expect(head).toMatchObject({ seq: s.seqs.last, expiredThrough: s.expiredThrough });
    expect(
      (await cli(s.text, { keys, args: ["--head", `${s.roomId}=${head.seq}:${head.chain}`] })).status,
    ).toBe(0);
    // An anchored head from earlier: the chain link at that seq must be the one anchored.
    const at = s.lines[lineOf(s.seqs.del)] as Line;
    expect((await cli(s.text, { keys, args: ["--head", `${s.roomId}=${at.seq}:${at.chain}`] })).status).toBe(
      0,
    );
    const wrong = `${s.roomId}=${at.seq}:${"0".repeat(64)}`;
    refusedAt(await cli(s.text, { keys, args: ["--head", wrong] }), lineOf(s.seqs.del) + 1);
  });
});

describe("the forgeries of issue 13 are refused, naming their line", () => {
  it("a message hidden as an `expired` tombstone, however well its hash is made", async () => {
    const runs = await refusedEitherWay(
      [s.seqs.last, s.seqs.kept, s.seqs.reply].map((seq) => [
        hideAsExpired(s.lines, lineOf(seq)),
        lineOf(seq) + 1,
      ]),
    );
    for (const run of runs) expect(run.stderr).toMatch(/expired/);
  });

  it("invented text in a deleted message or in its deleted edit", async () => {
    await refusedEitherWay(
      [s.seqs.secret, s.seqs.secretEdit].map((seq) => [
        inventText(s.lines, lineOf(seq), "what was never said"),
        lineOf(seq) + 1,
      ]),
    );
  });

  it('"deleted": true added to an ordinary event of any kind', async () => {
    const seqs = [
      s.seqs.kept,
      s.seqs.edit,
      s.seqs.react,
      s.seqs.reply,
      s.seqs.rename,
      s.seqs.last,
      s.seqs.del,
    ];
    await refusedEitherWay(seqs.map((seq) => [markDeleted(s.lines, lineOf(seq)), lineOf(seq) + 1]));
  });
});

describe("signed heads", () => {
  const headIndex = () => s.lines.findIndex((l) => l.head !== undefined);

  it("refuses a head whose fields were changed under its signature", async () => {
    const keys = await trusted();
    for (const change of [
      { expiredThrough: s.seqs.last },
      { retentionDays: 1 },
      { at: 0 },
      { tenant: "other" },
    ]) {
      refusedAt(await cli(serialize(editHead(s.lines, s.roomId, change)), { keys }), headIndex() + 1);
    }
  });

  it("refuses a head re-signed with another key, with or without the same kid", async () => {
    const keys = await trusted();
    const line = s.lines[headIndex()] as Line & { jws: string; head: Record<string, unknown> };
    const payload = JSON.parse(atob((line.jws.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/")));
    const { privateKey, publicKey } = await generateKeyPair("Ed25519", { extractable: true });
    const { kty, crv, x } = await exportJWK(publicKey);
    for (const kid of [keys.keys[0]?.kid ?? "", "someone-else"]) {
      // The forger's own head: the chain ends where it did, retention "expired" everything.
      const forged = { ...payload, expiredThrough: s.seqs.last };
      const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(forged)))
        .setProtectedHeader({ alg: "Ed25519", kid, jwk: { kty, crv, x } })
        .sign(privateKey);
      const lines = s.lines.map((l, i) =>
        i === headIndex() ? { ...l, head: { ...line.head, expiredThrough: s.seqs.last }, jws } : l,
      );
      const run = await cli(serialize(lines), { keys });
      refusedAt(run, headIndex() + 1);
      expect(run.stderr).toMatch(
        kid === "someone-else" ? /not among the trusted keys/ : /not the trusted key/,
      );
    }
  });

  it("refuses a head whose signature was removed", async () => {
    const lines = s.lines.map((l) => {
      if (l.head === undefined) return l;
      const { jws: _jws, ...rest } = l;
      return rest as Line;
    });
    const run = await cli(serialize(lines));
    refusedAt(run, headIndex() + 1);
    expect(run.stderr).toMatch(/unsigned/);
  });
});

/** Back to the layout of schema v5, as a room written by the previous release holds it: digests of
 * the JSON as appended, no scheme columns or bookkeeping. The next start migrates it. */
async function rewindToPreviousRelease(stub: DurableObjectStub<Room>): Promise<void> {
  await runInDurableObject(stub, (_room: Room, state) => {
    const sql = state.storage.sql;
    let chain = "0".repeat(64);
    for (const row of sql
      .exec<{ seq: number; json: string }>("SELECT seq, json FROM events ORDER BY seq")
      .toArray()) {
      const digest = sha256(row.json);
      chain = sha256(`${chain}\n${row.seq}\n${digest}`);
      sql.exec("UPDATE events SET digest = ?, chain = ? WHERE seq = ?", digest, chain, row.seq);
    }
    for (const column of ["scheme", "nonce", "content_hash", "meta_hash"]) {
      sql.exec(`ALTER TABLE events DROP COLUMN ${column}`);
    }
    sql.exec("DELETE FROM meta WHERE key IN ('scheme1', 'checked_seq', 'expired_before', 'expired_checked')");
    // v5 shipped through an outbox table, not by watermark (schema v7).
    sql.exec(`DROP TABLE archive_acks;
      DELETE FROM meta WHERE key LIKE 'archive_%';
      CREATE TABLE outbox (seq INTEGER PRIMARY KEY, sent_at INTEGER);
      CREATE INDEX outbox_sent ON outbox(sent_at);`);
    undoSchemaV8(sql);
    sql.exec("UPDATE meta SET value = '5' WHERE key = 'schema_version'");
  });
  await evictDurableObject(stub);
}

/** What the previous release does, run against the upgraded schema as after a rollback: it appends
 * with the digest of the JSON and leaves the scheme columns to their defaults, and retention turns
 * events into tombstones without any bookkeeping of this release. */
async function previousRelease(
  stub: DurableObjectStub<Room>,
  user: User,
  texts: string[],
  expireThrough: number,
): Promise<number[]> {
  const seqs: number[] = [];
  await runInDurableObject(stub, (_room: Room, state) => {
    const sql = state.storage.sql;
    for (const text of texts) {
      const last = sql
        .exec<{ seq: number; chain: string }>("SELECT seq, chain FROM events ORDER BY seq DESC LIMIT 1")
        .one();
      const seq = last.seq + 1;
      const clientId = unique("old");
      const event = {
        seq,
        kind: "message",
        ts: Date.now(),
        author: { id: user.id, name: user.name },
        clientId,
        text,
      };
      const json = JSON.stringify(event);
      const digest = sha256(json);
      sql.exec(
        "INSERT INTO events (seq, kind, author_id, client_id, ts, json, digest, chain) VALUES (?, 'message', ?, ?, ?, ?, ?, ?)",
        seq,
        user.id,
        clientId,
        event.ts,
        json,
        digest,
        sha256(`${last.chain}\n${seq}\n${digest}`),
      );
      seqs.push(seq);
    }
    for (const row of sql
      .exec<{ seq: number; ts: number }>("SELECT seq, ts FROM events WHERE seq <= ?", expireThrough)
      .toArray()) {
      const tombstone = JSON.stringify({
        seq: row.seq,
        kind: "expired",
        ts: row.ts,
        author: { id: "system", name: "retention policy" },
      });
      sql.exec(
        "UPDATE events SET kind = 'expired', json = ?, deleted = 1, target = NULL, thread_root = NULL WHERE seq = ?",
        tombstone,
        row.seq,
      );
    }
    sql.exec(
      "INSERT INTO meta (key, value) VALUES ('expired_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      String(expireThrough),
    );
  });
  await evictDurableObject(stub);
  return seqs;
}

describe("a room whose log began under the old digest scheme", () => {
  it("keeps its old digests, commits new events with the new scheme, and the verifier says what it cannot check", async () => {
    const keys = await trusted();
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId);
    const early = await send(ada, roomId, "written before the upgrade");
    const deletedEarly = await send(ada, roomId, "also before, deleted after");
    await rewindToPreviousRelease(stub);
    const late = await send(ada, roomId, "written after the upgrade");
    expect((await api(ada, "DELETE", `/api/rooms/${roomId}/messages/${deletedEarly}`)).status).toBe(201);
    const text = await exportRoom(ada, roomId);
    const lines = parseLines(text);
    expect(lines[lineOf2(lines, early)]).not.toHaveProperty("v");
    expect(lines[lineOf2(lines, late)]).toMatchObject({ v: 2 });
    const head = lines.at(-1) as Line & { head: { scheme1: number[][] } };
    expect(head.head.scheme1).toEqual([[1, deletedEarly]]);

    const run = await cli(text, { keys });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`1 redacted events use digest scheme 1 (written before scheme 2)`);
    expect(run.stdout).toContain(`(seq ${deletedEarly})`);

    // A scheme-2 line passed off as scheme 1 (to escape the tombstone check) is refused.
    const i = lineOf2(lines, late);
    const { v: _v, nonce: _nonce, ...downgraded } = markDeleted(lines, i)[i] as Line;
    const forged = lines.map((l, j) => (j === i ? (downgraded as Line) : l));
    const refused = await cli(serialize(forged), { keys });
    refusedAt(refused, i + 1);
  });

  it("stays verifiable after a rollback: what the previous release appended and expired meanwhile is stated in the head", async () => {
    const keys = await trusted();
    const ada = await login(unique("t"), "Ada");
    const roomId = await createRoom(ada);
    const stub = roomStub(env, ada.tenant, roomId);
    const upgraded = await send(ada, roomId, "written by this release");
    const [back] = await previousRelease(stub, ada, ["written by the previous release, rolled back to"], 1);
    const again = await send(ada, roomId, "written by this release again");
    const head = await json<{ scheme1: number[][]; expiredThrough: number; expiredBefore: number }>(
      api(ada, "GET", `/api/admin/rooms/${roomId}/head`),
    );
    expect(head.scheme1).toEqual([[back, back]]);
    expect(head.expiredThrough).toBe(1);
    expect(head.expiredBefore).toBeGreaterThan(await tsOf(ada, roomId, 1));
    const text = await exportRoom(ada, roomId);
    const lines = parseLines(text);
    expect([upgraded, back ?? 0, again].map((seq) => lines[lineOf2(lines, seq)]?.v)).toEqual([
      2,
      undefined,
      2,
    ]);
    const run = await cli(text, { keys });
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain("1 expired");
  });
});

describe("an export in the old format", () => {
  it("still verifies, with a clear warning of what it cannot check; with --keys it is refused", async () => {
    // Written by the previous release (a room with retention tombstones, an edit, a deletion).
    const fixture = { fixture: "export-v1.ndjson" };
    const run = await cli(fixture);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/WARNING: r_\w+: old export format: the head is not signed/);
    expect(run.stdout).toMatch(/cannot be detected/);
    expect(run.stdout).toMatch(/5 redacted events use digest scheme 1/);
    const strict = await cli(fixture, { keys: await trusted() });
    expect(strict.status).toBe(1);
    expect(strict.stderr).toMatch(/unsigned \(old format\)/);
  });
});

function lineOf2(lines: Line[], seq: number): number {
  return findEvent(lines, (e) => e.seq === seq);
}

function sha256(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}
