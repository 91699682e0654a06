/**
 * @module Helpers for tests that drive the real app through Debian's chromium with playwright-core:
 * launching the browser, a signed-in user per browser context, unique names (storage is shared by
 * every test of a run), screenshots, and the page errors a test asserts there are none of.
 */
import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import type { Me } from "../../protocol/index.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOT_DIR = resolve(root, "test-results/screenshots");

/**
 * The system chromium (CHROMIUM_PATH overrides), never a downloaded one. The flags keep it from
 * phoning home or fetching components in the background, which would only add noise and time.
 */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

export interface Profile {
  email: string;
  name: string;
  tenant: string;
}

export interface User {
  context: BrowserContext;
  /** A blank page of the context, already watched by `errors`. */
  page: Page;
  /** The dev token, also set as the context's CF_Authorization cookie. */
  token: string;
  me: Me;
  /** Console errors and uncaught exceptions of `page`, as they happen. */
  errors: string[];
}

/**
 * A new browser context signed in as `profile` through `POST /auth/dev/login`: the request goes
 * through the context's own request API, so the cookie it sets lands in the context's cookie jar
 * and every page and request of the context is signed in.
 */
export async function newUser(browser: Browser, baseUrl: string, profile: Profile): Promise<User> {
  const context = await browser.newContext({ baseURL: baseUrl });
  try {
    const login = await context.request.post("/auth/dev/login", { data: profile });
    if (!login.ok()) throw new Error(`dev login answered ${login.status()}: ${await login.text()}`);
    const { token } = (await login.json()) as { token: string };
    const meRes = await context.request.get("/api/me");
    if (!meRes.ok()) throw new Error(`GET /api/me answered ${meRes.status()}: ${await meRes.text()}`);
    const me = (await meRes.json()) as Me;
    const page = await context.newPage();
    return { context, page, token, me, errors: watchErrors(page) };
  } catch (err) {
    await context.close();
    throw err;
  }
}

let counter = 0;

/**
 * A name no other test of this run (nor an earlier run's leftovers) uses, valid as a tenant id:
 * lowercase [a-z0-9-], at most 40 characters.
 */
export function unique(prefix: string): string {
  counter++;
  const clean = prefix
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .slice(0, 20);
  const suffix = `${Date.now().toString(36)}${counter.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  return `${clean}-${suffix}`;
}

/** Saves a full-page PNG as test-results/screenshots/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name.replace(/[^\w.-]+/g, "-")}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * Collects the page's console errors (a failed resource load, a CSP violation, `console.error`) and
 * uncaught exceptions from now on. Attach before navigating, or errors while loading are missed.
 */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const at = msg.location().url;
    errors.push(`console.error: ${msg.text()}${at ? ` (${at})` : ""}`);
  });
  page.on("pageerror", (err) => errors.push(`pageerror: ${err.message}`));
  return errors;
}
