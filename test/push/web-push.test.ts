/**
 * Web Push against a real push service stand-in (docs/architecture.md, decision 10):
 * `web-push-testing` subscribes a fake browser, checks the VAPID JWT against the key it subscribed
 * with and decrypts what it receives per RFC 8291. Statuses it cannot give (404, 429, 500) come
 * from a small stub server.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type MockPushService, startMockPushService } from "../../bench/push-service.ts";
import type { PushNotice } from "../../protocol/notify.ts";
import { ensureDevVars } from "../../scripts/dev-vars.ts";
import {
  outcomeOf,
  PUSH_MAX_PAYLOAD_BYTES,
  type PushTarget,
  pushPayload,
  readVapid,
  sendPush,
  type Vapid,
  VapidKeyError,
  vapidFromJwk,
} from "../../worker/notify/web-push.ts";

const b64url = (bytes: ArrayBuffer) => Buffer.from(bytes).toString("base64url");
const fromB64url = (s: string) => Buffer.from(s, "base64url");

async function vapidKeys(): Promise<Vapid> {
  const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
  ])) as CryptoKeyPair;
  const jwk = (await crypto.subtle.exportKey("jwk", pair.privateKey)) as JsonWebKey;
  return {
    subject: "mailto:ops@parley.test",
    publicKey: b64url((await crypto.subtle.exportKey("raw", pair.publicKey)) as ArrayBuffer),
    privateKey: jwk.d as string,
  };
}

let push: MockPushService;
let vapid: Vapid;

/** A fake browser's subscription, and the https endpoint the sender signs for (the library signs
 * only for https; the stand-in listens on http and does not check the token's audience). */
async function subscribe(key = vapid.publicKey) {
  const sub = await push.subscribe(key);
  return {
    target: { endpoint: sub.endpoint.replace(/^http:/, "https:"), keys: sub.keys } satisfies PushTarget,
    url: sub.url,
    clientHash: sub.clientHash,
  };
}

const received = (clientHash: string) => push.received(clientHash);

const notice: PushNotice = {
  room: "r_0123456789abcdefghij",
  roomName: "design",
  seq: 42,
  reason: "mention",
  author: { id: "u_ada", name: "Ada Lovelace" },
  preview: "Can you look at the numbers — ça marche? 👀",
  count: 1,
};

beforeAll(async () => {
  vapid = await vapidKeys();
  push = await startMockPushService();
});

afterAll(async () => {
  await push.close();
});

describe("web push", () => {
  it("delivers a notice the browser decrypts, signed with the subscribed VAPID key", async () => {
    const sub = await subscribe();
    expect(await sendPush(sub.target, notice, vapid, { fetchUrl: sub.url })).toEqual({ kind: "delivered" });
    expect(await received(sub.clientHash)).toEqual([notice]);
  });

  it("is refused when signed with another key than the browser subscribed with, and nothing arrives", async () => {
    const sub = await subscribe((await vapidKeys()).publicKey);
    expect(await sendPush(sub.target, notice, vapid, { fetchUrl: sub.url })).toEqual({
      kind: "refused",
      status: 400,
    });
    expect(await received(sub.clientHash)).toEqual([]);
  });

  it("says a subscription is gone once the browser unsubscribed (410)", async () => {
    const sub = await subscribe();
    await push.expire(sub.clientHash);
    expect(await sendPush(sub.target, notice, vapid, { fetchUrl: sub.url })).toEqual({
      kind: "gone",
      status: 410,
    });
  });

  it("shortens a long preview to fit one record, and still delivers it", async () => {
    const sub = await subscribe();
    const long = { ...notice, preview: "é".repeat(5000) };
    const payload = pushPayload(long);
    expect(new TextEncoder().encode(payload).length).toBeLessThanOrEqual(PUSH_MAX_PAYLOAD_BYTES);
    expect(await sendPush(sub.target, long, vapid, { fetchUrl: sub.url })).toEqual({ kind: "delivered" });
    const [got] = (await received(sub.clientHash)) as PushNotice[];
    expect(got?.preview?.endsWith("…")).toBe(true);
    expect(got?.preview?.length).toBeGreaterThan(1000);
    expect({ ...got, preview: null }).toEqual({ ...notice, preview: null });
  });

  it("sorts what a push service answers into delivered, gone, retry (with Retry-After) and refused", async () => {
    const answers = new Map<string, [number, Record<string, string>]>([
      ["/404", [404, {}]],
      ["/429", [429, { "retry-after": "120" }]],
      ["/500", [500, {}]],
      ["/503", [503, { "retry-after": new Date(Date.now() + 30_000).toUTCString() }]],
      ["/413", [413, {}]],
    ]);
    const stub = createServer((req, res) => {
      const [status, headers] = answers.get(req.url ?? "") ?? [200, {}];
      req.resume();
      req.on("end", () => res.writeHead(status, headers).end());
    });
    await new Promise<void>((r) => stub.listen(0, "127.0.0.1", r));
    const { port } = stub.address() as AddressInfo;
    try {
      const sub = await subscribe();
      const to = (path: string) =>
        sendPush(sub.target, notice, vapid, { fetchUrl: `http://127.0.0.1:${port}${path}` });
      expect(await to("/404")).toEqual({ kind: "gone", status: 404 });
      expect(await to("/429")).toEqual({ kind: "retry", status: 429, retryAfterSeconds: 120 });
      expect(await to("/500")).toEqual({ kind: "retry", status: 500, retryAfterSeconds: null });
      const later = await to("/503");
      expect(later).toMatchObject({ kind: "retry", status: 503 });
      expect(later.kind === "retry" && later.retryAfterSeconds).toBeGreaterThanOrEqual(28);
      expect(await to("/413")).toEqual({ kind: "refused", status: 413 });
    } finally {
      await new Promise((r) => stub.close(r));
    }
    // Nobody listening: try again later.
    const sub = await subscribe();
    expect(
      await sendPush(sub.target, notice, vapid, { fetchUrl: `http://127.0.0.1:${await freePort()}/` }),
    ).toEqual({
      kind: "retry",
      status: null,
      retryAfterSeconds: null,
    });
    expect(outcomeOf(201)).toEqual({ kind: "delivered" });
  });

  it("signs with the key npm start writes to .dev.vars, and refuses a key that is not a P-256 pair", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-vapid-"));
    let raw = "";
    try {
      await ensureDevVars(join(dir, ".dev.vars"));
      raw = /^VAPID_PRIVATE_JWK=(.+)$/m.exec(readFileSync(join(dir, ".dev.vars"), "utf8"))?.[1] ?? "";
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const keys = vapidFromJwk(raw, "mailto:ops@parley.test");
    const sub = await subscribe(keys.publicKey);
    expect(await sendPush(sub.target, notice, keys, { fetchUrl: sub.url })).toEqual({ kind: "delivered" });
    expect(await received(sub.clientHash)).toEqual([notice]);

    const jwk = JSON.parse(Buffer.from(raw, "base64").toString()) as Record<string, string>;
    // An https contact is as good as a mailto: one.
    expect(vapidFromJwk(JSON.stringify(jwk), "https://parley.test/ops").publicKey).toBe(keys.publicKey);
    const stranger = (await crypto.subtle.exportKey(
      "jwk",
      (
        (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
          "sign",
        ])) as CryptoKeyPair
      ).privateKey,
    )) as JsonWebKey;
    const refusals: [string, string][] = [
      ["not json", "mailto:ops@parley.test"],
      [JSON.stringify({ ...jwk, crv: "P-384" }), "mailto:ops@parley.test"],
      [JSON.stringify({ ...jwk, d: undefined }), "mailto:ops@parley.test"],
      // Someone else's d under this key's x and y.
      [JSON.stringify({ ...jwk, d: stranger.d }), "mailto:ops@parley.test"],
      [JSON.stringify(jwk), "ops@parley.test"],
      [JSON.stringify(jwk), "http://parley.test/ops"],
    ];
    for (const [bad, subject] of refusals)
      expect(() => vapidFromJwk(bad, subject), `${bad.slice(0, 40)} / ${subject}`).toThrow(VapidKeyError);
  });

  it("reads the deployment's key and contact, and names what is missing", async () => {
    const { privateKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk = JSON.stringify(await exportJWK(privateKey));
    const vapid = readVapid({
      AUTH_MODE: "access",
      VAPID_PRIVATE_JWK: jwk,
      VAPID_SUBJECT: "mailto:ops@x.test",
    });
    expect(vapid.subject).toBe("mailto:ops@x.test");
    expect(fromB64url(vapid.publicKey)).toHaveLength(65);
    // A dev run signs with a local contact; a deployment must name its own.
    expect(readVapid({ AUTH_MODE: "dev", VAPID_PRIVATE_JWK: jwk, VAPID_SUBJECT: "" }).subject).toBe(
      "mailto:parley@localhost",
    );
    expect(() => readVapid({ AUTH_MODE: "access", VAPID_PRIVATE_JWK: jwk, VAPID_SUBJECT: "" })).toThrow(
      /VAPID_SUBJECT is not set/,
    );
    expect(() => readVapid({ AUTH_MODE: "dev", VAPID_PRIVATE_JWK: "" })).toThrow(
      /VAPID_PRIVATE_JWK is not set/,
    );
    expect(() =>
      readVapid({ AUTH_MODE: "dev", VAPID_PRIVATE_JWK: '{"kty":"EC"}', VAPID_SUBJECT: "mailto:a@b.c" }),
    ).toThrow(/^VAPID_PRIVATE_JWK \/ VAPID_SUBJECT: /);
  });

  it("accepts the key npm run vapid-key prints", () => {
    const out = execFileSync(process.execPath, ["scripts/vapid-key.ts"], { encoding: "utf8", stdio: "pipe" });
    const vapid = readVapid({
      AUTH_MODE: "access",
      VAPID_PRIVATE_JWK: out.trim(),
      VAPID_SUBJECT: "https://x.test",
    });
    expect(fromB64url(vapid.publicKey)[0]).toBe(4);
  });
});
