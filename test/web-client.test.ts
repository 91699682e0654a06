/**
 * The Worker answers its own paths and hands every other request to the web client's Worker
 * (client/web/wrangler.toml, the `WEB` binding; here a stand-in that names the path it was handed,
 * vitest.config.ts). The web client's own files and headers are loaded through `npm start` by the
 * browser project (test/browser/smoke.test.ts).
 */
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

const BASE = "https://parley.test";

describe("the Worker's own paths and the web client's", () => {
  it("hands any path that is not the API's to the web client, unchanged", async () => {
    // Near misses of the API's prefixes included: a prefix is a whole path segment.
    for (const path of [
      "/",
      "/index.html",
      "/assets/main-1a2b.js",
      "/rooms/r_0123",
      "/apis",
      "/api-docs",
      "/authority",
      "/healthz/x",
      "/scimitar",
    ]) {
      const res = await SELF.fetch(`${BASE}${path}?q=1`);
      expect(res.status, path).toBe(200);
      expect(await res.text(), path).toBe(`web client: ${path}`);
    }
  });

  it("answers its API, sign-in, hooks, SCIM, health and well-known paths itself", async () => {
    const own = async (path: string, init?: RequestInit) => {
      const res = await SELF.fetch(`${BASE}${path}`, init);
      const body = await res.text();
      expect(body, path).not.toMatch(/^web client:/);
      return { status: res.status, body };
    };
    expect(await own("/healthz")).toEqual({ status: 200, body: '{"ok":true}' });
    expect((await own("/api/me")).status).toBe(401);
    expect((await own("/api/rooms/r_01234567890123456789/ws")).status).toBe(401);
    expect((await own("/scim/v2/Users")).status).toBe(401);
    expect((await own("/.well-known/parley-export-keys")).status).toBe(200);
    expect((await own("/auth/dev/nothing-here")).status).toBe(404);
    expect((await own("/hooks/not-a-token", { method: "POST", body: "{}" })).status).toBeGreaterThanOrEqual(
      400,
    );
    // The bare prefix is the API's too: its refusal, not the web client's index.html.
    expect((await own("/api")).status).toBe(401);
  });
});
