/**
 * The web client when the token its streams were opened with expires (docs/protocol.md, "Identity"
 * and close codes), in chromium against the real app. The dev sign-in gives the page a token that
 * lives 3 s (`ttlSeconds`): its room socket closes with 4402, the app signs in again by itself and
 * resumes, and nothing typed or sent meanwhile is lost or shown twice. When the sign-in cannot be
 * renewed (as behind Access once its own session has ended), the page says so and offers to sign
 * in again; what was typed waits in the outbox and is sent once after.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Cast, composer, live, openRoom } from "./app.ts";
import { screenshot, type User, unique } from "./browser.ts";

const cast = new Cast(inject("baseUrl"));

beforeAll(() => cast.start());
afterAll(() => cast.stop());

const TTL_SECONDS = 3;

/** Signs the user's browser context in again with a token that lives `TTL_SECONDS`. */
async function shortSignIn(u: User): Promise<number> {
  const res = await u.context.request.post("/auth/dev/login", {
    headers: { origin: cast.baseUrl },
    data: { email: u.me.user.email, name: u.me.user.name, tenant: u.me.tenant.id, ttlSeconds: TTL_SECONDS },
  });
  expect(res.status()).toBe(200);
  const { token } = (await res.json()) as { token: string };
  const claims = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as {
    exp: number;
  };
  return claims.exp * 1000;
}

/** The page's sockets to one room, and when the latest of them closed. */
function sockets(page: Page, roomId: string): { opened: number; closedAt: number } {
  const seen = { opened: 0, closedAt: 0 };
  page.on("websocket", (ws) => {
    if (!ws.url().includes(`/api/rooms/${roomId}/ws`)) return;
    seen.opened += 1;
    ws.on("close", () => {
      seen.closedAt = Date.now();
    });
  });
  return seen;
}

async function send(page: Page, text: string): Promise<void> {
  await composer(page).fill(text);
  await composer(page).press("Enter");
}

/** How many times each text shows in the open room. */
async function shown(page: Page, texts: string[]): Promise<number[]> {
  const all = await page.locator(".room-main .msg .text").allTextContents();
  return texts.map((t) => all.filter((a) => a === t).length);
}

/** How many times each text is stored in the room (the server's history). */
async function stored(u: User, roomId: string, texts: string[]): Promise<number[]> {
  const res = await u.context.request.get(`/api/rooms/${roomId}/messages?limit=200`);
  const { events } = (await res.json()) as { events: { kind: string; text?: string }[] };
  return texts.map((t) => events.filter((e) => e.kind === "message" && e.text === t).length);
}

const notice = (page: Page) => page.locator(".notice:not([hidden]) .notice-text");

describe("the web client when its token expires", () => {
  it("signs in again by itself and resumes the room, losing and repeating nothing", async () => {
    const tenant = unique("expiry");
    const owner = await cast.user(tenant, "Owen");
    const ada = await cast.user(tenant, "Ada");
    const roomId = await cast.room(owner, "general", [ada]);
    const exp = await shortSignIn(ada);
    const seen = sockets(ada.page, roomId);
    const renewals: string[] = [];
    ada.page.on("request", (req) => {
      if (req.url().endsWith("/auth/dev/login")) renewals.push(req.method());
    });
    await openRoom(ada, roomId);
    await send(ada.page, "before expiry");
    await ada.page.locator(".room-main .msg .text", { hasText: "before expiry" }).waitFor();

    // The server ends the socket at the token's exp; meanwhile both keep writing.
    await expect.poll(() => seen.closedAt, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(seen.closedAt).toBeGreaterThanOrEqual(exp - 50);
    await send(ada.page, "typed while renewing");
    const res = await owner.context.request.post(`/api/rooms/${roomId}/messages`, {
      headers: { origin: cast.baseUrl },
      data: { clientId: unique("c"), text: "from owen meanwhile" },
    });
    expect(res.status()).toBe(201);

    // A new socket with a renewed sign-in, and everything once.
    await live(ada.page);
    const texts = ["before expiry", "typed while renewing", "from owen meanwhile"];
    await expect.poll(() => shown(ada.page, texts), { timeout: 10_000 }).toEqual([1, 1, 1]);
    expect(await stored(owner, roomId, texts)).toEqual([1, 1, 1]);
    expect(seen.opened).toBeGreaterThanOrEqual(2);
    expect(renewals).toContain("POST");
    expect(await notice(ada.page).count()).toBe(0);
    expect(ada.errors.filter((e) => e.startsWith("pageerror"))).toEqual([]);
  });

  it("asks to sign in again when it cannot renew, and sends what was typed once signed in", async () => {
    const tenant = unique("expired");
    const owner = await cast.user(tenant, "Owen");
    const ada = await cast.user(tenant, "Ada");
    const roomId = await cast.room(owner, "general", [ada]);
    await shortSignIn(ada);
    // As behind Access once its session has ended: the app cannot sign in again by itself.
    await ada.page.route("**/auth/dev/login", (route) =>
      route.fulfill({ status: 404, contentType: "application/json", body: '{"error":{"code":"not_found"}}' }),
    );
    const seen = sockets(ada.page, roomId);
    await openRoom(ada, roomId);
    await expect.poll(() => seen.closedAt, { timeout: 10_000 }).toBeGreaterThan(0);
    await expect
      .poll(() => notice(ada.page).textContent(), { timeout: 10_000 })
      .toBe("Your sign-in has expired.");
    await send(ada.page, "typed while signed out");
    await screenshot(ada.page, "sign-in-expired");

    // "Sign in again" reloads: the dev sign-in form here (Access's sign-in in production).
    // The route goes only once the reload has shown the form: before, a renewal still retrying in
    // the old page could sign in by itself.
    await ada.page.getByRole("button", { name: "Sign in again" }).click();
    await ada.page.getByRole("textbox", { name: "Email" }).waitFor();
    await ada.page.unroute("**/auth/dev/login");
    await ada.page.getByRole("textbox", { name: "Email" }).fill(ada.me.user.email);
    await ada.page.getByRole("textbox", { name: "Name" }).fill(ada.me.user.name);
    await ada.page.getByRole("textbox", { name: "Workspace" }).fill(tenant);
    await ada.page.getByRole("button", { name: "Sign in" }).click();
    await ada.page.goto(`/rooms/${roomId}`);
    await live(ada.page);
    const texts = ["typed while signed out"];
    await expect.poll(() => shown(ada.page, texts), { timeout: 10_000 }).toEqual([1]);
    await expect.poll(() => stored(owner, roomId, texts)).toEqual([1]);
  });
});
