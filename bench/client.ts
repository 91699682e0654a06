/**
 * @module `npm run bench -- --client`: the web client's figures, in Chromium (from npm) against a
 * local Parley:
 * - JavaScript and CSS shipped on first load (what index.html references), raw and gzipped;
 * - time from navigation to the first message rendered, over fresh browser contexts (cold cache),
 *   against a baseline measured in the same loads: the end of the HTML response (the floor of any
 *   page from this server);
 * - frame intervals while scrolling a room of 10,000 messages from top to bottom, against idle
 *   frames of the same page as the baseline, and how many rows the DOM holds meanwhile.
 * Writes the "## Web client" section of bench/results.md.
 */
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import type { Browser } from "playwright-core";
import { launchBrowser } from "../test/browser/browser.ts";
import { sectionFacts, writeSection } from "./sections.ts";
import { externalServer, type Server, startParley, stopAllSync } from "./servers.ts";
import { api } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench client: ${msg}\n`);

interface ClientOptions {
  messages: number;
  loads: number;
  out: string;
  parleyUrl: string | undefined;
}

function parseClientOptions(argv: string[]): ClientOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      client: { type: "boolean" },
      messages: { type: "string" },
      loads: { type: "string" },
      out: { type: "string" },
      "parley-url": { type: "string" },
    },
    strict: true,
  });
  const messages = Number(values.messages ?? 10_000);
  const loads = Number(values.loads ?? 7);
  if (!(Number.isInteger(messages) && messages >= 100 && messages <= 50_000))
    throw new Error("--messages must be 100..50000");
  if (!(Number.isInteger(loads) && loads >= 1 && loads <= 50)) throw new Error("--loads must be 1..50");
  return {
    messages,
    loads,
    out: resolve(root, values.out ?? "bench/results.md"),
    parleyUrl: values["parley-url"],
  };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
};
const ms = (x: number) => `${x.toFixed(1)} ms`;

/** The files index.html loads before anything renders: its scripts, module preloads and styles. */
function firstLoad(): { js: number; jsGz: number; css: number; cssGz: number; files: string[] } {
  const dist = resolve(root, "dist/client");
  const html = readFileSync(resolve(dist, "index.html"), "utf8");
  const refs = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1] as string);
  const out = { js: 0, jsGz: 0, css: 0, cssGz: 0, files: refs };
  for (const ref of refs) {
    const bytes = readFileSync(resolve(dist, `.${ref}`));
    const gz = gzipSync(bytes, { level: 9 }).byteLength;
    if (ref.endsWith(".js")) {
      out.js += bytes.byteLength;
      out.jsGz += gz;
    } else {
      out.css += bytes.byteLength;
      out.cssGz += gz;
    }
  }
  return out;
}

async function seed(base: string, token: string, roomId: string, count: number): Promise<void> {
  const started = performance.now();
  const batch = 25;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, (_, j) => {
        const n = i + j;
        const text =
          n % 7 === 0
            ? `Message ${n}: a longer one, with **bold**, \`code\` and a link https://example.com/${n} — so rows differ in height and wrap onto a second line on a normal window.`
            : `Message ${n}`;
        return api(base, "POST", `/api/rooms/${roomId}/messages`, token, { clientId: `bench-${n}`, text });
      }),
    );
  }
  log(`seeded ${count} messages in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

async function signedInContext(browser: Browser, base: string, token: string) {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 800 } });
  const host = new URL(base).hostname;
  await context.addCookies([{ name: "CF_Authorization", value: token, domain: host, path: "/" }]);
  return context;
}

/** Navigation start → first `.msg` in the DOM, by a MutationObserver installed before the page runs. */
async function timeToFirstMessage(browser: Browser, base: string, token: string, roomId: string) {
  const context = await signedInContext(browser, base, token);
  try {
    const page = await context.newPage();
    await page.addInitScript(() => {
      const w = window as unknown as { __firstMessage?: number };
      new MutationObserver((_, observer) => {
        if (w.__firstMessage === undefined && document.querySelector(".msg")) {
          w.__firstMessage = performance.now();
          observer.disconnect();
        }
      }).observe(document, { childList: true, subtree: true });
    });
    await page.goto(`/rooms/${roomId}`);
    await page.waitForFunction(
      () => (window as unknown as { __firstMessage?: number }).__firstMessage !== undefined,
    );
    return page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
      return {
        first: (window as unknown as { __firstMessage: number }).__firstMessage,
        html: nav.responseEnd,
      };
    });
  } finally {
    await context.close();
  }
}

/** Loads the whole room by scrolling to the top until its start shows, then measures frames while
 * scrolling top to bottom at a steady speed, and idle frames as the baseline. */
async function scrollFrames(browser: Browser, base: string, token: string, roomId: string) {
  const context = await signedInContext(browser, base, token);
  try {
    const page = await context.newPage();
    await page.goto(`/rooms/${roomId}`);
    await page.locator(".messages[aria-busy=false] .msg").first().waitFor();
    const loadStarted = performance.now();
    await page.evaluate(async () => {
      const vp = document.querySelector(".messages") as HTMLElement;
      const frame = () => new Promise((r) => requestAnimationFrame(r));
      while (!vp.querySelector(".row.start")) {
        vp.scrollTop = 0;
        await frame();
        await new Promise((r) => setTimeout(r, 30));
      }
    });
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    const rowsInDom = await page.locator(".messages .row").count();
    const result = await page.evaluate(async () => {
      const vp = document.querySelector(".messages") as HTMLElement;
      const frame = () => new Promise<number>((r) => requestAnimationFrame(r));
      const intervals = async (n: number, step: (() => void) | null) => {
        const out: number[] = [];
        let last = await frame();
        let maxRows = 0;
        for (let i = 0; i < n; i++) {
          step?.();
          const now = await frame();
          out.push(now - last);
          last = now;
          maxRows = Math.max(maxRows, vp.querySelectorAll(".row").length);
        }
        return { out, maxRows };
      };
      const idle = await intervals(120, null);
      vp.scrollTop = 0;
      await frame();
      const stepPx = 240;
      const frames = Math.ceil(vp.scrollHeight / stepPx);
      const scrolled = await intervals(frames, () => {
        vp.scrollTop += stepPx;
      });
      const memory = (performance as unknown as { memory?: { usedJSHeapSize: number } }).memory;
      return {
        idle: idle.out,
        scroll: scrolled.out,
        maxRows: scrolled.maxRows,
        height: vp.scrollHeight,
        stepPx,
        heapMiB: memory ? memory.usedJSHeapSize / 1024 / 1024 : null,
      };
    });
    return { ...result, loadSeconds, rowsInDom };
  } finally {
    await context.close();
  }
}

export async function runClientBench(argv: string[]): Promise<void> {
  const began = performance.now();
  const opts = parseClientOptions(argv);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      stopAllSync();
      process.exit(130);
    });
  }
  let server: Server | undefined;
  let browser: Browser | undefined;
  try {
    server = opts.parleyUrl
      ? externalServer(opts.parleyUrl)
      : await startParley(root, resolve(root, "bench/out"));
    const base = server.baseUrl;
    const weight = firstLoad();
    log(`first load: ${weight.files.join(", ")}`);
    const tenant = `client${Date.now()}`;
    const { token } = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
      email: `client@${tenant}.test`,
      name: "Client Bench",
      tenant,
    });
    const small = await api<{ id: string }>(base, "POST", "/api/rooms", token, {
      name: "small",
      kind: "channel",
    });
    await seed(base, token, small.id, 100);
    const big = await api<{ id: string }>(base, "POST", "/api/rooms", token, {
      name: "big",
      kind: "channel",
    });
    await seed(base, token, big.id, opts.messages);
    browser = await launchBrowser();

    await timeToFirstMessage(browser, base, token, small.id); // warm the runtime's code paths once
    const first: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < opts.loads; i++) {
      const t = await timeToFirstMessage(browser, base, token, big.id);
      first.push(t.first);
      floor.push(t.html);
    }
    log(`first message: ${first.map((x) => x.toFixed(0)).join(", ")} ms`);
    const frames = await scrollFrames(browser, base, token, big.id);
    log(`scrolled ${frames.scroll.length} frames over ${frames.height} px`);

    const facts = sectionFacts(argv, began);
    const s = frames.scroll;
    const idle = frames.idle;
    const over = (xs: number[], limit: number) => xs.filter((x) => x > limit).length;
    const report = [
      "## Web client",
      "",
      `\`${facts.command}\` on ${facts.date} (${facts.machine}; ${facts.total} s in all). Chromium ${browser.version()}, headless,`,
      "1280×800, against `npm start`'s local runtime on loopback.",
      "",
      "**First load** (what index.html references; gzip -9 as a CDN would serve it):",
      "",
      "| asset | raw | gzipped |",
      "|---|---:|---:|",
      `| JavaScript | ${(weight.js / 1024).toFixed(1)} KiB | ${(weight.jsGz / 1024).toFixed(1)} KiB |`,
      `| CSS | ${(weight.css / 1024).toFixed(1)} KiB | ${(weight.cssGz / 1024).toFixed(1)} KiB |`,
      "",
      `**Navigation → first message rendered**, a room of ${opts.messages.toLocaleString("en")} messages, ${opts.loads} loads, each in a`,
      "fresh browser context (cold cache, signed in by cookie). Baseline in the same loads: the end of the HTML",
      "response (navigation timing `responseEnd`), the floor of any page from this server.",
      "",
      "| | p50 | max | ratio to baseline (p50) |",
      "|---|---:|---:|---:|",
      `| first message | ${ms(pct(first, 50))} | ${ms(Math.max(...first))} | ${(pct(first, 50) / pct(floor, 50)).toFixed(1)}× |`,
      `| baseline: HTML response end | ${ms(pct(floor, 50))} | ${ms(Math.max(...floor))} | 1.0× |`,
      "",
      `**Scrolling ${opts.messages.toLocaleString("en")} messages**: all history loaded by scrolling up (${frames.loadSeconds.toFixed(1)} s), then`,
      `${s.length} frames scrolling top to bottom at ${frames.stepPx} px a frame over ${(frames.height / 1000).toFixed(0)}k px. Baseline: ${idle.length} idle`,
      "frames of the same page. Rows in the DOM at most: " +
        `${frames.maxRows} while scrolling (${frames.rowsInDom} after loading everything)` +
        (frames.heapMiB !== null ? `; JS heap ${frames.heapMiB.toFixed(1)} MiB.` : "."),
      "",
      "| frame interval | p50 | p95 | p99 | max | missed a frame (> 20 ms) | > 50 ms |",
      "|---|---:|---:|---:|---:|---:|---:|",
      `| scrolling | ${ms(pct(s, 50))} | ${ms(pct(s, 95))} | ${ms(pct(s, 99))} | ${ms(Math.max(...s))} | ${over(s, 20)} (${((100 * over(s, 20)) / s.length).toFixed(1)} %) | ${over(s, 50)} |`,
      `| baseline: idle | ${ms(pct(idle, 50))} | ${ms(pct(idle, 95))} | ${ms(pct(idle, 99))} | ${ms(Math.max(...idle))} | ${over(idle, 20)} | ${over(idle, 50)} |`,
      "",
      `Ratio scrolling/idle at p95: ${(pct(s, 95) / pct(idle, 95)).toFixed(2)}×.`,
      "",
    ].join("\n");
    process.stdout.write(`${report}\n`);
    writeSection(opts.out, report, "## Web client");
  } finally {
    await browser?.close();
    await server?.stop();
    stopAllSync();
  }
}
