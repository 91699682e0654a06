import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensureDevVars } from "../../scripts/dev-vars.ts";

// scripts/dev-vars.ts is what `npm start` runs on .dev.vars before anything else (scripts/start.ts).

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "parley-dev-vars-"));
  file = join(dir, ".dev.vars");
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const mode = () => statSync(file).mode & 0o777;

describe("npm start's .dev.vars", () => {
  it("is created with dev sign-in and its signing keys, readable by its owner only", async () => {
    const result = await ensureDevVars(file);
    expect(result).toEqual({
      wroteKeys: ["DEV_JWT_PRIVATE_JWK", "EXPORT_SIGNING_JWK", "VAPID_PRIVATE_JWK"],
      tightened: false,
    });
    expect(mode()).toBe(0o600);
    const text = readFileSync(file, "utf8");
    expect(text).toMatch(/^AUTH_MODE=dev$/m);
    const key = /^DEV_JWT_PRIVATE_JWK=(.+)$/m.exec(text)?.[1] ?? "";
    expect(JSON.parse(Buffer.from(key, "base64").toString())).toMatchObject({
      kty: "RSA",
      d: expect.any(String),
    });
    const vapid = /^VAPID_PRIVATE_JWK=(.+)$/m.exec(text)?.[1] ?? "";
    expect(JSON.parse(Buffer.from(vapid, "base64").toString())).toMatchObject({
      kty: "EC",
      crv: "P-256",
      d: expect.any(String),
    });
  });

  it("is tightened to 0600 when it already holds everything but is readable by others", async () => {
    await ensureDevVars(file);
    const text = readFileSync(file, "utf8");
    for (const loose of [0o644, 0o666, 0o640, 0o604]) {
      chmodSync(file, loose);
      expect(await ensureDevVars(file)).toEqual({ wroteKeys: [], tightened: true });
      expect(mode(), loose.toString(8)).toBe(0o600);
      expect(readFileSync(file, "utf8")).toBe(text); // the key is kept: dev tokens stay valid
    }
    expect(await ensureDevVars(file)).toEqual({ wroteKeys: [], tightened: false });
  });

  it("keeps a hand-written file's lines, adds what is missing, and ends at 0600", async () => {
    writeFileSync(file, "PARLEY_REPLAY_CAP=600", { mode: 0o644 });
    expect(await ensureDevVars(file)).toEqual({
      wroteKeys: ["DEV_JWT_PRIVATE_JWK", "EXPORT_SIGNING_JWK", "VAPID_PRIVATE_JWK"],
      tightened: true,
    });
    const lines = readFileSync(file, "utf8").split("\n");
    expect(lines[0]).toBe("AUTH_MODE=dev");
    expect(lines[1]).toBe("PARLEY_REPLAY_CAP=600");
    expect(lines[2]).toMatch(/^DEV_JWT_PRIVATE_JWK=/);
    expect(lines[3]).toMatch(/^EXPORT_SIGNING_JWK=/);
    expect(lines[4]).toMatch(/^VAPID_PRIVATE_JWK=/);
    expect(mode()).toBe(0o600);
  });
});
