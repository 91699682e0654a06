/** The export signing key as the Worker reads it at start-up (worker/exports/keys.ts), in workerd. */
import { compactVerify, exportJWK, generateKeyPair, importJWK } from "jose";
import { describe, expect, it } from "vitest";
import { parseSignedHead } from "../../protocol/chain.ts";
import { exportJwks, readExportKeys, signRoomHead } from "../../worker/exports/keys.ts";

async function ed25519(kid = "k1") {
  const { privateKey } = await generateKeyPair("Ed25519", { extractable: true });
  return { ...(await exportJWK(privateKey)), kid };
}

const head = {
  seq: 3,
  chain: "a".repeat(64),
  retentionDays: null,
  expiredThrough: 0,
  expiredBefore: 0,
  scheme1: [],
};

describe("readExportKeys (the export signing key, checked at start-up)", () => {
  it("refuses a missing, malformed or unsuitable key, naming the variable", async () => {
    const key = await ed25519();
    const other = await ed25519();
    const { privateKey: rsa } = await generateKeyPair("RS256", { extractable: true });
    const bad: [string, RegExp][] = [
      ["", /EXPORT_SIGNING_JWK is not set/],
      ["{not json", /EXPORT_SIGNING_JWK must be a JWK/],
      [JSON.stringify({ ...(await exportJWK(rsa)), kid: "r" }), /Ed25519/],
      [JSON.stringify({ ...key, d: undefined }), /private key/],
      [JSON.stringify({ ...key, kid: undefined }), /kid/],
      [JSON.stringify({ ...key, kid: "has space" }), /kid/],
      [JSON.stringify({ ...key, x: other.x }), /x is not the public key of d/],
    ];
    for (const [raw, message] of bad) {
      expect(() => readExportKeys({ EXPORT_SIGNING_JWK: raw })).toThrow(message);
    }
  });

  it("refuses retired keys that are private, malformed or repeat a kid", async () => {
    const key = await ed25519("current");
    const retired = await ed25519("old");
    const raw = JSON.stringify(key);
    const cases: [unknown, RegExp][] = [
      [[retired], /holds a private key/],
      [[{ kty: "OKP", crv: "Ed25519", x: retired.x }], /kid/],
      [[{ kty: "OKP", crv: "Ed25519", x: retired.x, kid: "current" }], /repeats the kid/],
      [[{ kty: "RSA", kid: "r" }], /public Ed25519 JWK/],
      [{ not: "a list" }, /array of public JWKs/],
    ];
    for (const [list, message] of cases) {
      expect(() =>
        readExportKeys({ EXPORT_SIGNING_JWK: raw, EXPORT_RETIRED_KEYS: JSON.stringify(list) }),
      ).toThrow(message);
    }
    expect(() => readExportKeys({ EXPORT_SIGNING_JWK: raw, EXPORT_RETIRED_KEYS: "[{" })).toThrow(/JSON/);
  });

  it("accepts the key as JSON or base64, derives its public half, and publishes it with the retired ones", async () => {
    const key = await ed25519("current");
    const retired = await ed25519("old");
    const env = {
      EXPORT_SIGNING_JWK: btoa(JSON.stringify({ ...key, x: undefined })),
      EXPORT_RETIRED_KEYS: JSON.stringify({
        keys: [{ kty: "OKP", crv: "Ed25519", x: retired.x, kid: "old" }],
      }),
    };
    const keys = readExportKeys(env);
    expect(keys.current).toEqual({
      kty: "OKP",
      crv: "Ed25519",
      x: key.x,
      kid: "current",
      alg: "Ed25519",
      use: "sig",
    });
    expect(exportJwks(env).keys.map((k) => k.kid)).toEqual(["current", "old"]);
    expect(JSON.stringify(exportJwks(env))).not.toContain(String(key.d));
  });

  it("signs a head that verifies with the published key and states exactly what it was given", async () => {
    const env = { EXPORT_SIGNING_JWK: JSON.stringify(await ed25519("signer")) };
    const signed = await signRoomHead(env, "acme", "r_1", head);
    const [published] = exportJwks(env).keys;
    const { payload, protectedHeader } = await compactVerify(
      signed.jws,
      await importJWK(published ?? {}, "Ed25519"),
    );
    expect(protectedHeader).toMatchObject({ alg: "Ed25519", kid: "signer", jwk: { x: published?.x } });
    const stated = parseSignedHead(JSON.parse(new TextDecoder().decode(payload)));
    expect(stated).toEqual({ ...signed.head, format: "parley-head/2" });
    expect(stated).toMatchObject({ ...head, tenant: "acme", room: "r_1" });
  });
});
