/**
 * @module Helpers for tests that drive the real app through Chromium (from npm) with playwright-core:
 * launching the browser, a signed-in user per browser context, unique names (storage is shared by
 * every test of a run), screenshots, and the page errors a test asserts there are none of.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { inflate } from "@sparticuz/chromium";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import type { Me } from "../../protocol/index.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const SCREENSHOT_DIR = resolve(root, "test-results/screenshots");

/**
 * The Chromium that ships inside the `@sparticuz/chromium` npm package, so `npm install` is all a
 * machine needs (CHROMIUM_PATH overrides it with a system browser). Only its binary is used, never
 * its serverless `args`: `--single-process` would make separate browser contexts share
 * localStorage, and every two-user test needs them apart. The other flags keep it from phoning
 * home or fetching components in the background, which would only add noise and time.
 */
export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? (await bundledChromium()),
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/**
 * Unpacks the package's Brotli-compressed binary once per version (about 1.5 s) into
 * node_modules/.cache and returns its path. The package's own `executablePath()` unpacks to a
 * fixed /tmp/chromium and takes any file there as done, so two test runs starting at once, or one
 * killed while unpacking, would launch a half-written binary; here each unpack goes to a fresh
 * directory that is renamed into place only when complete (a rename is atomic), and a run that
 * loses the race uses the winner's.
 */
async function bundledChromium(): Promise<string> {
  const require = createRequire(import.meta.url);
  const packageDir = resolve(dirname(require.resolve("@sparticuz/chromium")), "..");
  const { version } = JSON.parse(readFileSync(join(packageDir, "package.json"), "utf8")) as {
    version: string;
  };
  const cache = resolve(root, "node_modules/.cache/parley-chromium");
  const target = join(cache, version);
  const binary = join(target, "chromium");
  if (existsSync(binary)) return binary;
  mkdirSync(cache, { recursive: true });
  const work = mkdtempSync(join(cache, `${version}.unpacking-`));
  // The package's `inflate` writes into os.tmpdir(), which follows TMPDIR.
  const savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = work;
  try {
    await inflate(join(packageDir, "bin", "chromium.br"));
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  }
  try {
    renameSync(work, target);
  } catch (err) {
    rmSync(work, { recursive: true, force: true });
    if (!existsSync(binary)) throw err;
  }
  return binary;
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
