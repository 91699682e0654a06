/**
 * Exports of the real app (`npm start`'s server, started by the browser project's global setup),
 * checked by the real CLI: a room with messages, an edit, a deletion and a reaction, exported and
 * downloaded over HTTP, verified by `node scripts/verify-export.ts` with the deployment's keys
 * fetched by the CLI from GET /.well-known/parley-export-keys. Then the three forgeries of issue 13,
 * a head re-signed by another key and a changed head, each refused with exit 1 naming its line; an
 * export in the old format read with a warning; and the endpoints refusing what they must.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CompactSign, calculateJwkThumbprint, exportJWK, generateKeyPair } from "jose";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { Api, type User } from "../../scripts/chaos/api.ts";
// The app's base URL is provided by the global setup (declared there).
import type {} from "../browser/global-setup.ts";
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
import { type CliRun, runVerifyCli } from "../verify-cli.ts";

const base = inject("baseUrl");
const keysUrl = `${base}/.well-known/parley-export-keys`;
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const api = new Api(base);

const person = (name: string, tenant: string): User => ({
  email: `${name.toLowerCase()}-${Math.random().toString(36).slice(2, 8)}@example.com`,
  name,
  tenant,
  token: "",
  id: "",
});

async function ok<T>(user: User, method: string, path: string, body?: unknown, status = 200): Promise<T> {
  const res = await api.request(user, method, path, body);
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  return res.body as T;
}

function refusedAt(run: CliRun, line: number): void {
  expect(run.status, run.stdout + run.stderr).toBe(1);
  expect(run.stderr).toMatch(new RegExp(`^FAIL line ${line}: `, "m"));
}

const cli = (text: string, ...args: string[]) => runVerifyCli({ export: text, args });

let ada: User;
let roomId: string;
let text: string;
let lines: Line[];
const seq: Record<string, number> = {};

beforeAll(async () => {
  const tenant = `exp${Math.random().toString(36).slice(2, 8)}`;
  ada = person("Ada", tenant);
  const bob = person("Bob", tenant);
  await api.login(ada); // the first to sign in owns the tenant (dev mode)
  await api.login(bob);
  roomId = (await ok<{ id: string }>(ada, "POST", "/api/rooms", { name: "evidence", kind: "channel" }, 201))
    .id;
  await ok(bob, "POST", `/api/rooms/${roomId}/join`);
  const send = async (who: User, clientId: string, body: string) =>
    (await ok<{ seq: number }>(who, "POST", `/api/rooms/${roomId}/messages`, { clientId, text: body }, 201))
      .seq;
  seq.first = await send(ada, "m1", "the first message");
  seq.secret = await send(bob, "m2", "a secret, later deleted");
  seq.edit = (
    await ok<{ seq: number }>(
      bob,
      "PATCH",
      `/api/rooms/${roomId}/messages/${seq.secret}`,
      { clientId: "e1", text: "edited secret" },
      201,
    )
  ).seq;
  seq.del = (
    await ok<{ seq: number }>(
      ada,
      "DELETE",
      `/api/rooms/${roomId}/messages/${seq.secret}?clientId=d1`,
      undefined,
      201,
    )
  ).seq;
  seq.react = (
    await ok<{ seq: number }>(
      bob,
      "POST",
      `/api/rooms/${roomId}/messages/${seq.first}/reactions`,
      { clientId: "r1", emoji: "🎉", on: true },
      201,
    )
  ).seq;
  seq.last = await send(ada, "m3", "the last word");

  const { id } = await ok<{ id: string }>(ada, "POST", "/api/admin/exports", { roomId }, 202);
  for (let i = 0; ; i++) {
    const status = await ok<{ status: string }>(ada, "GET", `/api/admin/exports/${id}`);
    if (status.status === "done") break;
    if (status.status === "failed" || i > 600) throw new Error(`export ${status.status}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const download = await fetch(`${base}/api/admin/exports/${id}/download`, {
    headers: { "Cf-Access-Jwt-Assertion": ada.token },
  });
  expect(download.status).toBe(200);
  text = await download.text();
  lines = parseLines(text);
});

const lineOf = (s: number) => findEvent(lines, (e) => e.seq === s);

describe("an export of the running app, checked by the CLI", () => {
  it("verifies against the keys the deployment publishes, and names the key that signed", async () => {
    const jwks = (await (await fetch(keysUrl)).json()) as { keys: { kid: string; x: string; d?: string }[] };
    expect(jwks.keys.length).toBeGreaterThan(0);
    expect(jwks.keys.every((k) => k.d === undefined)).toBe(true);
    const [key] = jwks.keys;
    const fingerprint = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: key?.x }, "sha256");

    const run = cli(text, "--keys", keysUrl);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain(`${roomId}: ${seq.last} events (2 deleted, 0 expired)`);
    expect(run.stdout).toContain(`signed by key ${key?.kid}, fingerprint ${fingerprint}`);
    expect(run.stdout).not.toContain("WARNING");
    expect(text).not.toContain("secret");
  });

  it("agrees with the live head, which is signed the same way", async () => {
    const head = await ok<{ seq: number; chain: string; jws: string }>(
      ada,
      "GET",
      `/api/admin/rooms/${roomId}/head`,
    );
    expect(head.jws.split(".")).toHaveLength(3);
    expect(cli(text, "--keys", keysUrl, "--head", `${roomId}=${head.seq}:${head.chain}`).status).toBe(0);
  });

  it("refuses a message hidden as an `expired` tombstone", () => {
    for (const s of [seq.first, seq.last])
      refusedAt(cli(serialize(hideAsExpired(lines, lineOf(s))), "--keys", keysUrl), lineOf(s) + 1);
  });

  it("refuses invented text in a deleted message and in its deleted edit", () => {
    for (const s of [seq.secret, seq.edit]) {
      refusedAt(cli(serialize(inventText(lines, lineOf(s), "never said")), "--keys", keysUrl), lineOf(s) + 1);
    }
  });

  it('refuses "deleted": true added to an ordinary event', () => {
    for (const s of [seq.first, seq.react, seq.del, seq.last]) {
      refusedAt(cli(serialize(markDeleted(lines, lineOf(s))), "--keys", keysUrl), lineOf(s) + 1);
    }
  });

  it("refuses a head signed by another key, and a head changed under its signature", async () => {
    const i = lines.findIndex((l) => l.head !== undefined);
    const line = lines[i] as Line & { jws: string };
    const { privateKey, publicKey } = await generateKeyPair("Ed25519", { extractable: true });
    const { kty, crv, x } = await exportJWK(publicKey);
    const payload = Buffer.from(line.jws.split(".")[1] ?? "", "base64url");
    const jws = await new CompactSign(payload)
      .setProtectedHeader({ alg: "Ed25519", kid: "mallory", jwk: { kty, crv, x } })
      .sign(privateKey);
    const resigned = lines.map((l, j) => (j === i ? { ...l, jws } : l));
    refusedAt(cli(serialize(resigned), "--keys", keysUrl), i + 1);
    refusedAt(
      cli(serialize(editHead(lines, roomId, { expiredThrough: seq.last })), "--keys", keysUrl),
      i + 1,
    );
  });

  it("reads an export in the old format with a clear warning of what it cannot check", () => {
    const old = readFileSync(resolve(root, "test/fixtures/export-v1.ndjson"), "utf8");
    const run = cli(old);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(/WARNING: r_\w+: old export format: the head is not signed/);
    expect(run.stdout).toMatch(/redacted events use digest scheme 1/);
  });
});

describe("the endpoints", () => {
  it("publish the keys to anyone, and give heads and exports only to the tenant's admins", async () => {
    const published = await fetch(keysUrl);
    expect(published.headers.get("content-type")).toMatch(/^application\/json/);
    expect(published.headers.get("cache-control")).toBe("public, max-age=300");
    const stranger = person("Eve", `other${Math.random().toString(36).slice(2, 8)}`);
    await api.login(stranger);
    const member = person("Carol", ada.tenant);
    await api.login(member);
    const before = await ok<{ exports: unknown[] }>(ada, "GET", "/api/admin/exports");
    expect((await api.raw("GET", `/api/admin/rooms/${roomId}/head`, null)).status).toBe(401);
    expect((await api.request(member, "GET", `/api/admin/rooms/${roomId}/head`)).status).toBe(403);
    expect((await api.request(stranger, "GET", `/api/admin/rooms/${roomId}/head`)).status).toBe(404);
    expect((await api.request(stranger, "POST", "/api/admin/exports", { roomId })).status).toBe(404);
    expect((await api.request(ada, "POST", "/api/admin/exports", { roomId: "r_nope" })).status).toBe(404);
    expect(await ok<{ exports: unknown[] }>(ada, "GET", "/api/admin/exports")).toEqual(before);
  });
});
