/**
 * @module What the web client's browser tests share: a cast of signed-in users (one browser
 * context each, closed together), rooms made through the API for setup, and the app's landmarks
 * (composer, "the room is live").
 */
import type { Browser, BrowserContext, Page } from "playwright-core";
import { expect } from "vitest";
import { launchBrowser, newUser, type User } from "./browser.ts";

export class Cast {
  readonly baseUrl: string;
  #browser: Browser | undefined;
  readonly #users: User[] = [];
  readonly #contexts: BrowserContext[] = [];

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl;
  }

  async start(): Promise<void> {
    this.#browser = await launchBrowser();
  }

  async stop(): Promise<void> {
    for (const c of [...this.#users.map((u) => u.context), ...this.#contexts])
      await c.close().catch(() => undefined);
    await this.#browser?.close();
  }

  /** A signed-in user of `tenant`, named `name` (email from its first word). */
  async user(tenant: string, name: string): Promise<User> {
    if (!this.#browser) throw new Error("Cast.start() first");
    const email = `${name.split(" ")[0]?.toLowerCase()}@${tenant}.test`;
    const u = await newUser(this.#browser, this.baseUrl, { email, name, tenant });
    this.#users.push(u);
    return u;
  }

  /** A page in a fresh context with nobody signed in (closed with the cast). */
  async anonymous(): Promise<Page> {
    if (!this.#browser) throw new Error("Cast.start() first");
    const context = await this.#browser.newContext({ baseURL: this.baseUrl });
    this.#contexts.push(context);
    return context.newPage();
  }

  /** A channel made through the API by `owner` (cookie writes need the app's Origin). */
  async room(owner: User, name: string, members: User[] = []): Promise<string> {
    const res = await owner.context.request.post("/api/rooms", {
      headers: { origin: this.baseUrl },
      data: { name, kind: "channel", members: members.map((m) => m.me.user.id) },
    });
    expect(res.status()).toBe(201);
    return ((await res.json()) as { id: string }).id;
  }
}

export const composer = (page: Page) => page.locator(".room-main .composer-input");

/** The open room's history is loaded and its live stream is connected. */
export async function live(page: Page): Promise<void> {
  await page.locator(".room-main[data-state=online] .messages[aria-busy=false]").waitFor();
}

export async function openRoom(u: User, roomId: string): Promise<void> {
  await u.page.goto(`/rooms/${roomId}`);
  await live(u.page);
}
