/**
 * @module The browser harness against the real app: what chromium gets for the app, a deep link,
 * an unknown API path and a signed-in request.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { launchBrowser, newUser, screenshot, unique, watchErrors } from "./browser.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const baseUrl = inject("baseUrl");

/** The policy the static assets are meant to carry, read from the file that sets it. */
function cspOfHeadersFile(): string {
  const text = readFileSync(resolve(root, "client/web/public/_headers"), "utf8");
  const match = /^\s+Content-Security-Policy:\s*(.+?)\s*$/m.exec(text);
  if (!match?.[1]) throw new Error("client/web/public/_headers sets no Content-Security-Policy");
  return match[1];
}

let browser: Browser;
beforeAll(async () => {
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
});

async function anonymousPage() {
  const context = await browser.newContext({ baseURL: baseUrl });
  const page = await context.newPage();
  return { context, page, errors: watchErrors(page) };
}

describe("the app in chromium", () => {
  it("serves the app's HTML at / with the strict CSP of _headers, and loads without a console error", async () => {
    const { context, page, errors } = await anonymousPage();
    try {
      const res = await page.goto("/", { waitUntil: "networkidle" });
      expect(res?.status()).toBe(200);
      const headers = res?.headers() ?? {};
      expect(headers["content-type"]).toMatch(/^text\/html/);
      expect(headers["content-security-policy"]).toBe(cspOfHeadersFile());
      expect(headers["x-content-type-options"]).toBe("nosniff");
      expect(await page.title()).toBe("Parley");
      // Signed out, the app asks who you are (401) and offers the dev sign-in.
      await page.getByRole("button", { name: "Sign in" }).waitFor();
      await screenshot(page, "sign-in");
      expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it("serves the app for a deep link such as /rooms/xyz (single-page fallback)", async () => {
    const { context, page, errors } = await anonymousPage();
    try {
      const res = await page.goto("/rooms/xyz", { waitUntil: "networkidle" });
      expect(res?.status()).toBe(200);
      expect(res?.headers()["content-type"]).toMatch(/^text\/html/);
      expect(res?.headers()["content-security-policy"]).toBe(cspOfHeadersFile());
      await expect(page.locator("#app").count()).resolves.toBe(1);
      expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);
    } finally {
      await context.close();
    }
  });

  it("answers an unknown /api path with the JSON error envelope, never index.html", async () => {
    const user = await newUser(browser, baseUrl, {
      email: "ada@smoke.test",
      name: "Ada",
      tenant: unique("smoke"),
    });
    const anonymous = await anonymousPage();
    try {
      const signedIn = await user.page.goto("/api/no-such-thing");
      expect(signedIn?.status()).toBe(404);
      expect(signedIn?.headers()["content-type"]).toMatch(/^application\/json/);
      expect(await signedIn?.json()).toEqual({ error: { code: "not_found", message: "not found" } });

      // Without a session the identity check answers first, in the same envelope.
      const signedOut = await anonymous.page.goto("/api/no-such-thing");
      expect(signedOut?.status()).toBe(401);
      expect(signedOut?.headers()["content-type"]).toMatch(/^application\/json/);
      expect(await signedOut?.json()).toMatchObject({ error: { code: "unauthorized" } });
    } finally {
      await user.context.close();
      await anonymous.context.close();
    }
  });

  it("signs a context in: the page's own fetch of /api/me answers with the user", async () => {
    const tenant = unique("smoke");
    const user = await newUser(browser, baseUrl, { email: "Grace@Smoke.test", name: "Grace", tenant });
    try {
      expect(user.token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      expect(user.me.user).toMatchObject({ email: "grace@smoke.test", name: "Grace" });
      expect(user.me.tenant.id).toBe(tenant);

      // From the app's origin, with the cookie the context holds: what the web client will do.
      await user.page.goto("/", { waitUntil: "networkidle" });
      const fromPage = await user.page.evaluate(async () => {
        const res = await fetch("/api/me");
        return { status: res.status, body: await res.json() };
      });
      expect(fromPage).toEqual({ status: 200, body: user.me });
      expect(user.errors).toEqual([]);
    } finally {
      await user.context.close();
    }
  });
});
