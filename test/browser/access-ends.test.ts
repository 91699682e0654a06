/**
 * The web client when the user's access to the room on screen ends elsewhere, in chromium against
 * the real app: removed by an admin (or leaving on another device), the page says so, the room
 * leaves the sidebar, and no further connection to that room is attempted (counted from the page's
 * own WebSocket and request events).
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Cast, live, openRoom } from "./app.ts";
import { screenshot, type User, unique } from "./browser.ts";

const cast = new Cast(inject("baseUrl"));

beforeAll(() => cast.start());
afterAll(() => cast.stop());

/** A room of `kind` made by `owner` with `members` (through the API, as setup). */
async function room(
  owner: User,
  name: string,
  kind: "private" | "channel",
  members: User[],
): Promise<string> {
  const res = await owner.context.request.post("/api/rooms", {
    headers: { origin: cast.baseUrl },
    data: { name, kind, members: members.map((m) => m.me.user.id) },
  });
  expect(res.status()).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

/** Every connection the page opens to one room: socket upgrades, SSE streams, long polls; and
 * when the page's latest socket to it closed (`closedAt`, ms epoch). */
function connections(page: Page, roomId: string): { sockets: number; fallbacks: number; closedAt: number } {
  const seen = { sockets: 0, fallbacks: 0, closedAt: 0 };
  page.on("websocket", (ws) => {
    if (!ws.url().includes(`/api/rooms/${roomId}/ws`)) return;
    seen.sockets += 1;
    ws.on("close", () => {
      seen.closedAt = Date.now();
    });
  });
  page.on("request", (req) => {
    const url = req.url();
    if (url.includes(`/api/rooms/${roomId}/events`) || url.includes(`/api/rooms/${roomId}/poll`))
      seen.fallbacks += 1;
  });
  return seen;
}

const sidebarLink = (page: Page, roomId: string) =>
  page.locator(`.sidebar a.room-link[data-room="${roomId}"]`);
const notice = (page: Page) => page.locator(".notice:not([hidden]) .notice-text");

/**
 * Waits until the page has visibly processed later traffic of another room (so it is alive and its
 * timers have run) and at least `ms` have passed: the window in which a reconnect would have come.
 * The session's first retries come within 250 ms and 500 ms (full jitter), so 1.5 s spans several.
 */
async function afterTraffic(owner: User, page: Page, otherRoom: string, text: string, ms: number) {
  const start = Date.now();
  const res = await owner.context.request.post(`/api/rooms/${otherRoom}/messages`, {
    headers: { origin: cast.baseUrl },
    data: { clientId: unique("c"), text },
  });
  expect(res.status()).toBe(201);
  await sidebarLink(page, otherRoom).and(page.locator(".unread")).waitFor();
  const left = ms - (Date.now() - start);
  if (left > 0) await page.waitForTimeout(left);
}

describe("the web client when access to the open room ends", () => {
  it("removed by an admin: says so, drops the room from the sidebar, and stops connecting to it", async () => {
    const tenant = unique("removed");
    const admin = await cast.user(tenant, "Ada Admin");
    const bob = await cast.user(tenant, "Bob");
    const secret = await room(admin, "secret", "private", [bob]);
    const other = await room(admin, "elsewhere", "private", [bob]);
    const seen = connections(bob.page, secret);
    await openRoom(bob, secret);
    await sidebarLink(bob.page, secret).waitFor();
    expect(seen.sockets).toBe(1);

    const removedAt = Date.now();
    const res = await admin.context.request.delete(`/api/rooms/${secret}/members/${bob.me.user.id}`, {
      headers: { origin: cast.baseUrl },
    });
    expect(res.status()).toBe(200);
    // The page's socket completes the server's close at once (Chromium gives up on a close
    // handshake the server does not finish after 2 s).
    await expect.poll(() => seen.closedAt).toBeGreaterThan(0);
    console.info(
      `chromium: the removed page's socket closed ${seen.closedAt - removedAt} ms after the removal`,
    );
    expect(seen.closedAt - removedAt).toBeLessThan(1_000);

    await expect.poll(() => notice(bob.page).textContent()).toBe("You were removed from #secret");
    await expect.poll(() => sidebarLink(bob.page, secret).count()).toBe(0);
    await expect.poll(() => new URL(bob.page.url()).pathname).toBe("/");
    await screenshot(bob.page, "access-ends-removed");

    await afterTraffic(admin, bob.page, other, "still here?", 1_500);
    expect(seen).toMatchObject({ sockets: 1, fallbacks: 0 });
    expect(bob.errors).toEqual([]);
  });

  it("leaving on another device: says so and drops the room, without reconnecting", async () => {
    const tenant = unique("left");
    const admin = await cast.user(tenant, "Ada Admin");
    const bob = await cast.user(tenant, "Bob");
    const general = await room(admin, "general", "channel", [bob]);
    const other = await room(admin, "elsewhere", "private", [bob]);
    const seen = connections(bob.page, general);
    await openRoom(bob, general);
    // The other device: the same user's own request, not this page.
    const res = await bob.context.request.post(`/api/rooms/${general}/leave`, {
      headers: { origin: cast.baseUrl },
    });
    expect(res.status()).toBe(200);

    await expect.poll(() => notice(bob.page).textContent()).toBe("You left #general on another device");
    await expect.poll(() => sidebarLink(bob.page, general).count()).toBe(0);
    await afterTraffic(admin, bob.page, other, "still here?", 1_500);
    expect(seen).toMatchObject({ sockets: 1, fallbacks: 0 });
    expect(bob.errors).toEqual([]);
    // The channel is still in the directory: opening it again offers to join, and joining works.
    await bob.page.goto(`/rooms/${general}`);
    await bob.page.getByRole("button", { name: "Join #general" }).click();
    await live(bob.page);
  });

  it("ends both browser sessions of a deactivated person within 5 s, and says why", async () => {
    const tenant = unique("deact");
    const owner = await cast.user(tenant, "Owen");
    const ada = await cast.user(tenant, "Ada");
    const general = await room(owner, "general", "channel", [ada]);
    // A second browser session of Ada's: another context signed in as her.
    const second = await cast.user(tenant, "Ada");
    expect(second.me.user.id).toBe(ada.me.user.id);
    const first = connections(ada.page, general);
    const other = connections(second.page, general);
    await openRoom(ada, general);
    await openRoom(second, general);
    const t0 = Date.now();
    const res = await owner.context.request.post(`/api/users/${ada.me.user.id}/deactivate`, {
      headers: { origin: cast.baseUrl },
    });
    expect(res.status()).toBe(200);
    for (const page of [ada.page, second.page])
      await expect
        .poll(() => notice(page).textContent(), { timeout: 5_000 })
        .toBe("Your account was deactivated. Ask your administrator.");
    const closedBy = Math.max(first.closedAt, other.closedAt);
    expect(closedBy).toBeGreaterThan(0);
    console.info(`deactivation → both browser sessions' room sockets closed: ${closedBy - t0} ms`);
    expect(closedBy - t0).toBeLessThan(5_000);
    // Refused from now on.
    expect((await ada.context.request.get("/api/me")).status()).toBe(403);
    await screenshot(ada.page, "deactivated");
  });

  it("an admin deactivates someone from the people panel, and reactivates them", async () => {
    const tenant = unique("people");
    const owner = await cast.user(tenant, "Owen");
    const ada = await cast.user(tenant, "Ada");
    const general = await room(owner, "general", "channel", [ada]);
    await openRoom(ada, general);
    // Members have no such panel.
    expect(await ada.page.getByRole("button", { name: "People" }).count()).toBe(0);

    await owner.page.goto("/");
    await owner.page.getByRole("button", { name: "People" }).click();
    const panel = owner.page.getByRole("dialog", { name: "People" });
    await panel.getByRole("searchbox", { name: "Find people" }).fill("ada");
    const row = panel.locator(`li[data-user="${ada.me.user.id}"]`);
    owner.page.once("dialog", (d) => void d.accept());
    await row.getByRole("button", { name: "Deactivate" }).click();
    await row.getByRole("button", { name: "Reactivate" }).waitFor();
    await expect.poll(() => row.textContent()).toContain("deactivated");
    await expect
      .poll(() => notice(ada.page).textContent(), { timeout: 5_000 })
      .toBe("Your account was deactivated. Ask your administrator.");
    expect((await ada.context.request.get("/api/me")).status()).toBe(403);
    await screenshot(owner.page, "people-deactivated");

    await row.getByRole("button", { name: "Reactivate" }).click();
    await row.getByRole("button", { name: "Deactivate" }).waitFor();
    // Signing in works again (an isolate may remember the deactivation for up to 2 s).
    await expect.poll(async () => (await ada.context.request.get("/api/me")).status()).toBe(200);
    expect(owner.errors).toEqual([]);
  });
});
