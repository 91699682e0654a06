/**
 * The web client in a real browser (Chromium), two users in two browser contexts against
 * the real app: chat both ways, typing and presence, going offline and back, hostile markdown,
 * files, unread badges, and an outbox that survives a reload. Screenshots of the main screens go
 * to test-results/screenshots (git-ignored).
 */
import type { Locator, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Cast, composer, live, openRoom } from "./app.ts";
import { screenshot, type User, unique, watchErrors } from "./browser.ts";

const cast = new Cast(inject("baseUrl"));
const user = (tenant: string, name: string) => cast.user(tenant, name);
const apiRoom = (owner: User, name: string, members: User[] = []) => cast.room(owner, name, members);

beforeAll(() => cast.start());
afterAll(() => cast.stop());

const messageTexts = (page: Page) => page.locator(".room-main .msg .text");

async function send(page: Page, text: string): Promise<void> {
  const box = composer(page);
  await box.fill(text);
  await box.press("Enter");
}

/** The texts of the messages on screen, in order. */
async function texts(page: Page): Promise<string[]> {
  return page
    .locator(".room-main .msg")
    .evaluateAll((els) =>
      els
        .sort((a, b) => Number((a as HTMLElement).dataset.seq) - Number((b as HTMLElement).dataset.seq))
        .map((el) => el.querySelector(".text")?.textContent?.replace(/ \(edited\)$/, "") ?? ""),
    );
}

async function waitForText(page: Page, text: string): Promise<Locator> {
  const found = messageTexts(page).filter({ hasText: text });
  await found.first().waitFor();
  return found;
}

describe("the web client", () => {
  it("signs in through the dev sign-in form and creates a first room", async () => {
    const page = await cast.anonymous();
    const tenant = unique("signin");
    await page.goto("/");
    await page.getByRole("textbox", { name: "Email" }).fill(`grace@${tenant}.test`);
    await page.getByRole("textbox", { name: "Name" }).fill("Grace");
    await page.getByRole("textbox", { name: "Workspace" }).fill(tenant);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.locator(".sidebar .me-name", { hasText: "Grace" }).waitFor();
    await page.getByRole("button", { name: "Create a room" }).click();
    await page.getByRole("textbox", { name: "Name" }).fill("launch");
    await page.getByRole("button", { name: "Create", exact: true }).click();
    await live(page);
    expect(await page.locator(".room-header h1").textContent()).toBe("# launch");
    await send(page, "first!");
    await waitForText(page, "first!");
    await screenshot(page, "first-room");
  });

  it("checks the workspace in the sign-in form against the server's rule, without a console error", async () => {
    const page = await cast.anonymous();
    const errors = watchErrors(page);
    const logins: string[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === "/auth/dev/login") logins.push(r.url());
    });
    await page.goto("/");
    const workspace = page.getByRole("textbox", { name: "Workspace" });
    await page.getByRole("textbox", { name: "Email" }).fill("grace@example.test");
    await page.getByRole("textbox", { name: "Name" }).fill("Grace");
    const mismatch = () => workspace.evaluate((el) => (el as HTMLInputElement).validity.patternMismatch);
    for (const bad of ["Acme", "-acme", "acme_corp", "a".repeat(41)]) {
      await workspace.fill(bad);
      expect(await mismatch(), bad).toBe(true);
    }
    await page.getByRole("button", { name: "Sign in" }).click();
    expect(logins).toEqual([]); // the browser's validation stopped the form
    await workspace.fill("acme-corp-2");
    expect(await mismatch()).toBe(false);
    // Signed out, the app's first GET /api/me answers 401: the only error there should be.
    expect(errors.filter((e) => !/status of 401 .*\/api\/me\)$/.test(e))).toEqual([]);
  });

  it("lets two users chat both ways, with typing and presence, from a direct message started in the UI", async () => {
    const tenant = unique("chat");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    await bob.page.goto("/");
    await bob.page.locator(".sidebar").waitFor();

    // Ada starts a dm with Bob from the directory.
    await ada.page.goto("/");
    await ada.page.getByRole("button", { name: "New direct message" }).click();
    await ada.page.getByRole("searchbox", { name: "Find people" }).fill("bob");
    await ada.page.locator(".modal button.person", { hasText: "Bob" }).click();
    await composer(ada.page).waitFor();
    const roomId = /\/rooms\/(r_\w+)/.exec(ada.page.url())?.[1] as string;
    expect(roomId).toMatch(/^r_/);

    await send(ada.page, "Hi Bob, **welcome**!");
    await waitForText(ada.page, "Hi Bob, welcome!");
    // Bob's sidebar learns of the dm and shows it unread; he opens it from there.
    const link = bob.page.locator(`a.room-link[data-room="${roomId}"]`);
    await link.waitFor();
    await link.click();
    await waitForText(bob.page, "Hi Bob, welcome!");
    await live(bob.page);
    expect(await bob.page.locator(".room-main .msg strong", { hasText: "welcome" }).count()).toBe(1);

    // Presence: each sees the other online (the dm's dot in the sidebar).
    await ada.page.locator(`a.room-link[data-room="${roomId}"] .dot.presence-online`).waitFor();
    await bob.page.locator(`a.room-link[data-room="${roomId}"] .dot.presence-online`).waitFor();

    // Typing: Bob types, Ada sees it; then Bob answers.
    await composer(bob.page).pressSequentially("Hel");
    await ada.page.locator(".typing", { hasText: "Bob is typing" }).waitFor();
    await composer(bob.page).fill("Hello Ada");
    await composer(bob.page).press("Enter");
    await waitForText(ada.page, "Hello Ada");
    await expect.poll(() => ada.page.locator(".typing").textContent()).toBe("");

    // A status change shows on the other side.
    await bob.page.getByRole("combobox", { name: "Your status" }).selectOption("away");
    await ada.page.locator(`a.room-link[data-room="${roomId}"] .dot.presence-away`).waitFor();

    expect(await texts(ada.page)).toEqual(["Hi Bob, welcome!", "Hello Ada"]);
    expect(await texts(bob.page)).toEqual(["Hi Bob, welcome!", "Hello Ada"]);
    await screenshot(ada.page, "chat-dm");
    expect(ada.errors).toEqual([]);
    expect(bob.errors).toEqual([]);
  });

  it("queues three messages while offline and delivers each exactly once, in order, when back", async () => {
    const tenant = unique("offline");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "general", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    await send(ada.page, "before");
    await waitForText(bob.page, "before");

    await ada.context.setOffline(true);
    await ada.page.locator(".banner[data-state=offline]").waitFor();
    for (const t of ["one", "two", "three"]) await send(ada.page, `offline ${t}`);
    await ada.page.locator(".banner", { hasText: "3 messages queued" }).waitFor();
    expect(await ada.page.locator(".row.pending").count()).toBe(3);
    await screenshot(ada.page, "offline-banner");

    await ada.context.setOffline(false);
    await waitForText(bob.page, "offline three");
    await waitForText(ada.page, "offline three");
    await ada.page.locator(".row.pending").first().waitFor({ state: "detached" });
    const expected = ["before", "offline one", "offline two", "offline three"];
    expect(await texts(ada.page)).toEqual(expected);
    expect(await texts(bob.page)).toEqual(expected);
    // And the server's log agrees: each once.
    const log = await ada.context.request.get(`/api/rooms/${roomId}/messages?after=0&limit=200`);
    const events = ((await log.json()) as { events: Array<{ kind: string; text?: string }> }).events;
    expect(events.filter((e) => e.kind === "message").map((e) => e.text)).toEqual(expected);
  });

  it("shows hostile markup and javascript: links as inert text", async () => {
    const tenant = unique("xss");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "general", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    await bob.page.evaluate(() => {
      (window as unknown as { pwned: number }).pwned = 0;
    });
    const payload =
      '<img src=x onerror="window.pwned=1"> [click](javascript:window.pwned=2) <script>window.pwned=3</script> [ok](https://example.com)';
    await send(ada.page, payload);
    const shown = (await waitForText(bob.page, "<img src=x")).first();
    expect(await shown.textContent()).toContain('<img src=x onerror="window.pwned=1">');
    expect(await shown.textContent()).toContain("[click](javascript:window.pwned=2)");
    expect(await shown.textContent()).toContain("<script>window.pwned=3</script>");
    expect(await shown.locator("img, script").count()).toBe(0);
    // Only the safe link is a link, and it opens without access to this window.
    const links = shown.locator("a");
    expect(await links.count()).toBe(1);
    expect(await links.first().getAttribute("href")).toBe("https://example.com/");
    expect(await links.first().getAttribute("rel")).toContain("noopener");
    await shown.getByText("javascript:window.pwned=2", { exact: false }).click();
    expect(await bob.page.evaluate(() => (window as unknown as { pwned: number }).pwned)).toBe(0);
    expect(bob.errors).toEqual([]);
  });

  it("uploads a file with a progress bar, sends it, and the other user downloads the same bytes", async () => {
    const tenant = unique("files");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "files", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
    bytes.write("parley upload test", 0);
    await ada.page.locator(".room-main input[type=file]").setInputFiles({
      name: "report.bin",
      mimeType: "application/octet-stream",
      buffer: bytes,
    });
    const chip = ada.page.locator(".room-main .upload", { hasText: "report.bin" });
    await chip.locator("progress").waitFor();
    await chip.and(ada.page.locator(".done")).waitFor();
    expect(await chip.locator("progress").getAttribute("value")).toBe("1");
    await send(ada.page, "the report");

    const file = bob.page.locator(".room-main .msg a.file", { hasText: "report.bin" });
    await file.waitFor();
    const [download] = await Promise.all([bob.page.waitForEvent("download"), file.click()]);
    expect(download.suggestedFilename()).toBe("report.bin");
    const stream = await download.createReadStream();
    const chunks: Buffer[] = [];
    for await (const c of stream) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    await screenshot(bob.page, "file-message");
  });

  it("takes an image dropped on the room, previews it while uploading, and shows it inline once sent", async () => {
    const tenant = unique("drop");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "pictures", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    // A 2×2 PNG, dropped as a file the way a desktop drag delivers it.
    const png =
      "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMAAAAYDAQMzPbgAAAAASUVORK5CYII=";
    const drop = await ada.page.evaluateHandle((b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], "dot.png", { type: "image/png" }));
      return data;
    }, png);
    await ada.page.dispatchEvent(".room", "dragover", { dataTransfer: drop });
    await ada.page.dispatchEvent(".room", "drop", { dataTransfer: drop });
    const chip = ada.page.locator(".room-main .upload", { hasText: "dot.png" });
    await chip.locator("img.thumb").waitFor();
    await chip.and(ada.page.locator(".done")).waitFor();
    await send(ada.page, "a picture");

    const preview = bob.page.locator(".room-main .msg img.preview[alt='dot.png']");
    await preview.waitFor();
    await expect.poll(() => preview.evaluate((img) => (img as HTMLImageElement).naturalWidth)).toBe(2);
    expect(await preview.getAttribute("src")).toMatch(/^\/api\/attachments\/[^/?]+\?inline=1$/);
    expect(bob.errors).toEqual([]);
  });

  it("shows an unread badge for another room and clears it when that room is read", async () => {
    const tenant = unique("unread");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const here = await apiRoom(ada, "here", [bob]);
    const there = await apiRoom(ada, "there", [bob]);
    await openRoom(bob, here);
    await openRoom(ada, there);
    const link = bob.page.locator(`a.room-link[data-room="${there}"]`);
    expect(await link.locator(".badge").count()).toBe(0);

    await send(ada.page, "hey bob");
    await send(ada.page, "second");
    await link.locator(".badge").waitFor();
    await expect.poll(() => link.getAttribute("class")).toContain("unread");
    await screenshot(bob.page, "unread-badge");

    await link.click();
    await waitForText(bob.page, "second");
    await link.locator(".badge").waitFor({ state: "detached" });
    await expect.poll(() => link.getAttribute("class")).not.toContain("unread");
    // The marker reached the server: a fresh load shows the room read.
    await bob.page.reload();
    await composer(bob.page).waitFor();
    expect(await bob.page.locator(`a.room-link[data-room="${there}"] .badge`).count()).toBe(0);
  });

  it("keeps an unsent message across a reload and delivers it once after", async () => {
    const tenant = unique("reload");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "general", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);

    // The room's transports and command endpoints are unreachable; the rest of the app loads.
    let blocked = true;
    const stream = /\/api\/rooms\/[^/]+\/(ws|events|poll|messages$)/;
    await ada.context.routeWebSocket(stream, (ws) => (blocked ? ws.close() : ws.connectToServer()));
    await ada.context.route(stream, (route) => (blocked ? route.abort() : route.continue()));
    await ada.page.reload();
    await composer(ada.page).waitFor();
    await send(ada.page, "survives a reload");
    await ada.page.locator(".row.pending", { hasText: "survives a reload" }).waitFor();
    await ada.page.reload();
    await composer(ada.page).waitFor();
    await ada.page.locator(".row.pending", { hasText: "survives a reload" }).waitFor();
    expect(await texts(bob.page)).toEqual([]);

    blocked = false;
    await ada.page.reload();
    await waitForText(bob.page, "survives a reload");
    await waitForText(ada.page, "survives a reload");
    await ada.page.locator(".row.pending").first().waitFor({ state: "detached" });
    expect((await texts(bob.page)).filter((t) => t === "survives a reload")).toHaveLength(1);
    expect((await texts(ada.page)).filter((t) => t === "survives a reload")).toHaveLength(1);
  });
});
