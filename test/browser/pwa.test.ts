/**
 * @module The installable app in chromium: the manifest and service worker, the notification
 * settings panel, a reload while offline that opens the app with its queued message (sent once
 * the network is back; also when the reload came before the outbox's IndexedDB write, or in a
 * browser whose IndexedDB is unusable), and the phone-sized layout with the sidebar as a drawer.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { NotifyPrefs } from "../../protocol/notify.ts";
import { Cast, composer, live, openRoom } from "./app.ts";
import { screenshot, type User, unique } from "./browser.ts";

const cast = new Cast(inject("baseUrl"));

/** The texts of the commands in the page's outboxes (run in the page). */
async function outboxTexts(): Promise<string[]> {
  const texts: string[] = [];
  for (const { name } of await indexedDB.databases()) {
    if (!name?.startsWith("parley-outbox")) continue;
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const open = indexedDB.open(name);
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const all = await new Promise<{ command: { text?: string } }[]>((resolve, reject) => {
      const request = db.transaction("outbox", "readonly").objectStore("outbox").getAll();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    db.close();
    for (const entry of all) if (entry.command.text !== undefined) texts.push(entry.command.text);
  }
  return texts;
}
/** Waits until the service worker controls the page: it has the app shell then. */
async function controlled(user: User): Promise<void> {
  await user.page.evaluate(async () => {
    await navigator.serviceWorker.ready;
    if (!navigator.serviceWorker.controller)
      await new Promise((r) =>
        navigator.serviceWorker.addEventListener("controllerchange", r, { once: true }),
      );
  });
}

/** Ada of a new tenant, in its room "general" opened in the app, once the service worker controls
 * the page (so that a reload is served by it). */
async function adaInRoom(prefix: string): Promise<{ ada: User; room: string }> {
  const ada = await cast.user(unique(prefix), "Ada");
  const room = await cast.room(ada, "general");
  await openRoom(ada, room);
  await controlled(ada);
  return { ada, room };
}

/** The texts of the room's messages, as the API has them. */
async function messageTexts(user: User, room: string): Promise<(string | undefined)[]> {
  const res = await user.context.request.get(`/api/rooms/${room}/messages?after=0`);
  const { events } = (await res.json()) as { events: { kind: string; text?: string }[] };
  return events.filter((e) => e.kind === "message").map((e) => e.text);
}

/** The message queued offline (its row pending) is still queued after a reload, is delivered once
 * the network is back, and leaves nothing in localStorage then. */
async function deliveredAfterReload(user: User, room: string, text: string): Promise<void> {
  await user.page.reload();
  await user.page.locator(".row.pending", { hasText: text }).waitFor();
  await user.context.setOffline(false);
  await live(user.page);
  await expect.poll(() => messageTexts(user, room)).toEqual([text]);
  await user.page.locator(".row.pending").first().waitFor({ state: "detached" });
  expect(
    await user.page.evaluate(() => Object.keys(localStorage).filter((k) => k.includes(":unsaved:"))),
  ).toEqual([]);
}

beforeAll(() => cast.start());
afterAll(() => cast.stop());

describe("the installable app", () => {
  it("links a manifest with icons and runs a service worker that controls the page", async () => {
    const tenant = unique("pwa");
    const ada = await cast.user(tenant, "Ada");
    const room = await cast.room(ada, "general");
    await openRoom(ada, room);
    const manifest = await ada.page.evaluate(async () => {
      const href = document.querySelector<HTMLLinkElement>("link[rel=manifest]")?.href ?? "";
      return (await fetch(href)).json();
    });
    expect(manifest).toMatchObject({ name: "Parley", start_url: "/", display: "standalone" });
    for (const icon of manifest.icons as { src: string; sizes: string }[]) {
      const res = await ada.context.request.get(icon.src);
      expect(res.status(), icon.src).toBe(200);
      expect(res.headers()["content-type"]).toBe("image/png");
    }
    expect((manifest.icons as { purpose: string }[]).map((i) => i.purpose)).toContain("maskable");
    const scope = await ada.page.evaluate(async () => (await navigator.serviceWorker.ready).scope);
    expect(scope).toBe(`${cast.baseUrl}/`);
    expect(ada.errors).toEqual([]);
  });

  it("saves notification preferences from the settings panel, for every device", async () => {
    const tenant = unique("prefs");
    const ada = await cast.user(tenant, "Ada");
    const room = await cast.room(ada, "general");
    await openRoom(ada, room);
    await ada.page.getByRole("button", { name: "Notification settings" }).click();
    const panel = ada.page.getByRole("dialog", { name: "Notifications" });
    await panel.waitFor();
    // No device subscribed yet (headless chromium has no push service to subscribe with).
    await panel.getByText("None yet.").waitFor();
    await panel.getByRole("combobox", { name: "Notify me about" }).selectOption("all");
    await panel.getByRole("combobox", { name: "This room" }).selectOption("nothing");
    const saved = async () => {
      const res = await ada.context.request.get("/api/notifications");
      return (await res.json()) as NotifyPrefs;
    };
    await expect.poll(async () => (await saved()).default).toBe("all");
    await expect.poll(async () => (await saved()).rooms[room]?.mode).toBe("nothing");
    await panel.getByRole("button", { name: "Send a test notification" }).click();
    await panel.getByText("No device receives notifications yet.").waitFor();
    await screenshot(ada.page, "notification-settings");
    expect(ada.errors).toEqual([]);
  });

  it("opens after a reload while offline, with the queued message, and sends it once back online", async () => {
    const { ada, room } = await adaInRoom("offline");
    await ada.context.setOffline(true);
    await composer(ada.page).fill("written on the train");
    await composer(ada.page).press("Enter");
    await ada.page.locator(".row.pending", { hasText: "written on the train" }).waitFor();
    // This reload comes after the outbox write (IndexedDB) has completed; the next test reloads
    // before it.
    await expect.poll(() => ada.page.evaluate(outboxTexts)).toEqual(["written on the train"]);
    await ada.page.reload();
    await ada.page.locator(".row.pending", { hasText: "written on the train" }).waitFor();
    await screenshot(ada.page, "offline-reload");
    await ada.context.setOffline(false);
    await live(ada.page);
    await expect.poll(() => messageTexts(ada, room)).toEqual(["written on the train"]);
  });

  it("keeps a message queued offline across a reload that came before its outbox write", async () => {
    const { ada, room } = await adaInRoom("unsaved");
    await ada.context.setOffline(true);
    // The page goes away before IndexedDB has the message: here its write never completes (the
    // reload brings the real one back).
    await ada.page.evaluate(() => {
      IDBObjectStore.prototype.put = () => {
        throw new DOMException("the write did not complete", "AbortError");
      };
    });
    await composer(ada.page).fill("sent just before the reload");
    await composer(ada.page).press("Enter");
    await ada.page.locator(".row.pending", { hasText: "sent just before the reload" }).waitFor();
    expect(await ada.page.evaluate(outboxTexts)).toEqual([]);
    await deliveredAfterReload(ada, room, "sent just before the reload");
    expect(await ada.page.evaluate(outboxTexts)).toEqual([]);
  });

  it("keeps and sends a message queued offline in a browser whose IndexedDB is unusable", async () => {
    const { ada, room } = await adaInRoom("noidb");
    // As in private browsing in some browsers: every IndexedDB transaction fails, on every load.
    await ada.context.addInitScript(() => {
      IDBDatabase.prototype.transaction = () => {
        throw new DOMException("IndexedDB is not available here", "InvalidStateError");
      };
    });
    await ada.page.reload();
    await live(ada.page);
    await ada.context.setOffline(true);
    await composer(ada.page).fill("no IndexedDB here");
    await composer(ada.page).press("Enter");
    await ada.page.locator(".row.pending", { hasText: "no IndexedDB here" }).waitFor();
    await deliveredAfterReload(ada, room, "no IndexedDB here");
  });

  it("on a phone-sized screen, keeps the room full width and the rooms in a drawer", async () => {
    const tenant = unique("phone");
    const ada = await cast.user(tenant, "Ada");
    const first = await cast.room(ada, "general");
    const second = await cast.room(ada, "random");
    await ada.page.setViewportSize({ width: 390, height: 844 });
    await openRoom(ada, first);
    const sidebar = ada.page.locator("#sidebar");
    await expect.poll(() => sidebar.isVisible()).toBe(false);
    const main = await ada.page.locator("#main").boundingBox();
    expect(main?.x).toBe(0);
    expect(main?.width).toBe(390);
    await screenshot(ada.page, "phone-room");
    await ada.page.getByRole("button", { name: "Rooms" }).click();
    await expect.poll(() => sidebar.isVisible()).toBe(true);
    // Slid in all the way.
    await expect.poll(async () => (await sidebar.boundingBox())?.x).toBe(0);
    await screenshot(ada.page, "phone-drawer");
    await ada.page.locator(`a.room-link[data-room="${second}"]`).click();
    await live(ada.page);
    await expect.poll(() => sidebar.isVisible()).toBe(false);
    expect(new URL(ada.page.url()).pathname).toBe(`/rooms/${second}`);
    expect(ada.errors).toEqual([]);
  });

  it("signs out: asks first while a message waits, then leaves no outbox, cache or local data", async () => {
    const tenant = unique("signout");
    const ada = await cast.user(tenant, "Ada");
    const room = await cast.room(ada, "general");
    await openRoom(ada, room);
    await ada.page.evaluate(async () => {
      await navigator.serviceWorker.ready;
    });
    await ada.context.setOffline(true);
    await composer(ada.page).fill("never sent");
    await composer(ada.page).press("Enter");
    await ada.page.locator(".row.pending", { hasText: "never sent" }).waitFor();
    // Declined: nothing happens.
    ada.page.once("dialog", (d) => {
      expect(d.message()).toContain("1 message has not been sent yet");
      void d.dismiss();
    });
    await ada.page.getByRole("button", { name: "Sign out" }).click();
    await ada.page.locator(".row.pending", { hasText: "never sent" }).waitFor();
    await ada.context.setOffline(false);
    await live(ada.page);
    await ada.page.locator(".row.pending").first().waitFor({ state: "detached" });
    await ada.page.getByRole("button", { name: "Sign out" }).click();
    await ada.page.getByRole("button", { name: "Sign in" }).waitFor();
    const left = await ada.page.evaluate(async () => ({
      local: Object.keys(localStorage).filter((k) => k.startsWith("parley:")),
      // The app shell may be cached again by the sign-in page's own load; nothing of the user's is.
      cached: (
        await Promise.all(
          (await caches.keys()).map(async (k) => (await (await caches.open(k)).keys()).map((r) => r.url)),
        )
      ).flat(),
      databases: (await indexedDB.databases()).map((d) => d.name),
    }));
    expect(left.local).toEqual([]);
    expect(left.cached.filter((u) => new URL(u).pathname.startsWith("/api/"))).toEqual([]);
    expect(left.databases.filter((n) => n?.startsWith("parley-outbox"))).toEqual([]);
    // Signed out for real: the API no longer knows the browser.
    expect((await ada.context.request.get("/api/me")).status()).toBe(401);
  });

  it("counts unread messages of the rooms not on screen in the title", async () => {
    const tenant = unique("title");
    const ada = await cast.user(tenant, "Ada");
    const bob = await cast.user(tenant, "Bob");
    const open = await cast.room(ada, "general", [bob]);
    const other = await cast.room(ada, "design", [bob]);
    await openRoom(ada, open);
    expect(await ada.page.title()).toBe("Parley");
    for (const [i, text] of ["look at this", "and this"].entries()) {
      const res = await bob.context.request.post(`/api/rooms/${other}/messages`, {
        headers: { origin: cast.baseUrl },
        data: { clientId: `t${i}`, text },
      });
      expect(res.status()).toBe(201);
    }
    await expect.poll(() => ada.page.title()).toBe("(2) Parley");
    // Reading it clears the count.
    await ada.page.locator(`a.room-link[data-room="${other}"]`).click();
    await live(ada.page);
    await expect.poll(() => ada.page.title()).toBe("Parley");
  });
});
