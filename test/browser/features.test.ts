/**
 * The web client's message features in chromium against the real app: mention autocomplete,
 * threads, reactions, edit and delete, search with a jump to the message, and a long room that
 * stays virtualised while scrolling back through history.
 */
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Cast, composer, openRoom } from "./app.ts";
import { screenshot, type User, unique } from "./browser.ts";

const cast = new Cast(inject("baseUrl"));
const user = (tenant: string, name: string) => cast.user(tenant, name);
const apiRoom = (owner: User, name: string, members: User[] = []) => cast.room(owner, name, members);

beforeAll(() => cast.start());
afterAll(() => cast.stop());

/** Sends many messages quickly over HTTP (setup, not the behaviour under test). */
async function apiSend(u: User, roomId: string, texts: string[]): Promise<void> {
  for (let i = 0; i < texts.length; i += 20) {
    await Promise.all(
      texts.slice(i, i + 20).map(async (text, j) => {
        const res = await u.context.request.post(`/api/rooms/${roomId}/messages`, {
          headers: { origin: cast.baseUrl },
          data: { clientId: `seed-${i + j}`, text },
        });
        expect(res.ok()).toBe(true);
      }),
    );
  }
}

const msg = (page: Page, text: string) => page.locator(".room-main .msg", { hasText: text });

describe("the web client's message features", () => {
  it("completes an @mention from the directory and sends it as a mention the other user sees by name", async () => {
    const tenant = unique("mention");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob Builder");
    const roomId = await apiRoom(ada, "general", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    await composer(ada.page).pressSequentially("ping @bo");
    const option = ada.page.getByRole("option", { name: /Bob Builder/ });
    await option.waitFor();
    await composer(ada.page).press("Enter");
    await expect.poll(() => composer(ada.page).inputValue()).toBe("ping @Bob Builder ");
    await composer(ada.page).press("Enter");
    const mention = bob.page.locator(".room-main .msg .mention", { hasText: "@Bob Builder" });
    await mention.waitFor();
    expect(await mention.getAttribute("data-user-id")).toBe(bob.me.user.id);
    // Sent in the protocol's form.
    const log = await ada.context.request.get(`/api/rooms/${roomId}/messages?after=0`);
    const events = ((await log.json()) as { events: Array<{ kind: string; text?: string }> }).events;
    expect(events.find((e) => e.kind === "message")?.text).toBe(`ping @<${bob.me.user.id}>`);
  });

  it("reacts, replies in a thread, edits and deletes, and the other user sees each change", async () => {
    const tenant = unique("features");
    const ada = await user(tenant, "Ada");
    const bob = await user(tenant, "Bob");
    const roomId = await apiRoom(ada, "general", [bob]);
    await openRoom(ada, roomId);
    await openRoom(bob, roomId);
    await composer(ada.page).fill("a message to work with");
    await composer(ada.page).press("Enter");
    const onBob = msg(bob.page, "a message to work with");
    await onBob.waitFor();

    // Bob reacts from the hover toolbar; Ada sees the count.
    await onBob.hover();
    await onBob.getByRole("button", { name: "React 👍" }).click();
    await msg(ada.page, "a message to work with").locator(".reaction", { hasText: "👍 1" }).waitFor();

    // Bob pins it to the room; Ada sees who pinned it, unpins it, and Bob sees the pin go.
    await onBob.hover();
    expect(await onBob.locator(".pinned").count()).toBe(0);
    await onBob.getByRole("button", { name: "Pin", exact: true }).click();
    await onBob.locator(".pinned", { hasText: "Pinned by Bob" }).waitFor();
    const onAda = msg(ada.page, "a message to work with");
    await onAda.locator(".pinned", { hasText: "Pinned by Bob" }).waitFor();
    await onAda.hover();
    await onAda.getByRole("button", { name: "Unpin" }).click();
    await onBob.locator(".pinned").waitFor({ state: "detached" });

    // Bob replies in a thread; Ada sees the reply count and opens the thread.
    await onBob.hover();
    await onBob.getByRole("button", { name: "Reply in thread" }).click();
    const threadBox = bob.page.locator(".thread .composer-input");
    await threadBox.fill("a reply");
    await threadBox.press("Enter");
    await bob.page.locator(".thread .msg", { hasText: "a reply" }).waitFor();
    const replies = msg(ada.page, "a message to work with").locator(".replies");
    await replies.filter({ hasText: "1 reply" }).waitFor();
    await replies.click();
    await ada.page.locator(".thread .msg", { hasText: "a reply" }).waitFor();
    // A reply stays out of the main list.
    expect(await ada.page.locator(".room-main .msg", { hasText: "a reply" }).count()).toBe(0);
    await screenshot(ada.page, "thread-panel");
    await ada.page.keyboard.press("Escape");

    // Ada edits with the up arrow in an empty composer, then deletes.
    await composer(ada.page).click();
    await composer(ada.page).press("ArrowUp");
    const editor = ada.page.getByRole("textbox", { name: "Edit message" });
    await editor.fill("an edited message");
    await editor.press("Enter");
    await msg(bob.page, "an edited message").locator(".edited").waitFor();

    ada.page.once("dialog", (d) => void d.accept());
    const mine = msg(ada.page, "an edited message");
    await mine.hover();
    await mine.getByRole("button", { name: "Delete" }).click();
    await bob.page.locator(".room-main .msg.deleted", { hasText: "This message was deleted." }).waitFor();
    expect(await msg(bob.page, "an edited message").count()).toBe(0);
    expect(ada.errors).toEqual([]);
    expect(bob.errors).toEqual([]);
  });

  it("finds a message by search, highlights the match, and jumps to it far back in a long room", async () => {
    const tenant = unique("search");
    const ada = await user(tenant, "Ada");
    const roomId = await apiRoom(ada, "history");
    const texts = Array.from({ length: 600 }, (_, i) =>
      i === 40 ? "the needle in the haystack" : `filler message number ${i}`,
    );
    await apiSend(ada, roomId, texts);
    await openRoom(ada, roomId);
    // Only what is near the viewport is in the DOM.
    expect(await ada.page.locator(".room-main .msg").count()).toBeLessThan(100);

    // Search is fed by the room right after each commit (its search shard): wait until it has it,
    // asking once a second, as a person might: Ada's searches are counted (20 at once, then 20 a
    // minute), and the one she then makes in the app must not find her quota spent by the test.
    await expect
      .poll(
        async () => {
          const res = await ada.context.request.get("/api/search?q=needle");
          return ((await res.json()) as { hits: unknown[] }).hits.length;
        },
        { timeout: 30_000, interval: 1_000 },
      )
      .toBe(1);
    const search = ada.page.getByRole("searchbox", { name: "Search messages" });
    await search.fill("needle");
    await search.press("Enter");
    const hit = ada.page.locator(".hit", { hasText: "haystack" });
    await hit.waitFor();
    expect(await hit.locator("mark").textContent()).toBe("needle");
    await screenshot(ada.page, "search");
    await hit.click();
    const target = ada.page.locator(".room-main .msg.highlight", { hasText: "the needle in the haystack" });
    await target.waitFor();
    expect(await target.isVisible()).toBe(true);
    await screenshot(ada.page, "search-jump");
  });
});
