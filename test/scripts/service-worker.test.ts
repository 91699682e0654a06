/**
 * The web client's service worker (client/web/public/sw.js), run in a Node VM with the few
 * service-worker globals it uses stood in: what a push shows, where a click goes, and that API
 * requests are never answered from its cache. (The headless chromium of the browser tests has no
 * notification permission to give, so a real push cannot be shown there.)
 */
import { readFileSync } from "node:fs";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";

type Handler = (event: Record<string, unknown>) => void;

function load() {
  const handlers = new Map<string, Handler>();
  const shown: { title: string; options: Record<string, unknown> }[] = [];
  const opened: string[] = [];
  const posted: unknown[] = [];
  let windows: { url: string; focus(): Promise<void>; postMessage(m: unknown): void }[] = [];
  const self = {
    location: { origin: "https://chat.acme.test" },
    addEventListener: (type: string, fn: Handler) => handlers.set(type, fn),
    registration: {
      showNotification: async (title: string, options: Record<string, unknown>) => {
        shown.push({ title, options });
      },
    },
    clients: {
      matchAll: async () => windows,
      openWindow: async (url: string) => {
        opened.push(url);
      },
      claim: async () => undefined,
    },
    skipWaiting: async () => undefined,
  };
  runInNewContext(readFileSync("client/web/public/sw.js", "utf8"), { self, URL, caches: {}, fetch });
  const fire = async (type: string, event: Record<string, unknown>) => {
    let waited: Promise<unknown> = Promise.resolve();
    const handler = handlers.get(type);
    if (!handler) throw new Error(`no ${type} handler`);
    handler({
      ...event,
      waitUntil: (p: Promise<unknown>) => {
        waited = p;
      },
      respondWith: (p: Promise<unknown>) => {
        waited = p;
      },
    });
    await waited;
  };
  const push = (data: unknown) =>
    fire("push", { data: { json: () => (typeof data === "string" ? JSON.parse(data) : data) } });
  return {
    handlers,
    shown,
    opened,
    posted,
    fire,
    push,
    setWindows: (urls: string[]) => {
      windows = urls.map((url) => ({
        url,
        focus: async () => undefined,
        postMessage: (m: unknown) => posted.push(m),
      }));
    },
  };
}

const mention = {
  room: "r_0123456789abcdefghjk",
  roomName: "design",
  seq: 42,
  reason: "mention",
  author: { id: "u_bob", name: "Bob" },
  preview: "look at this",
  count: 1,
};

describe("the service worker", () => {
  it("shows a push as its room, who wrote and what, one per room, opening at the message", async () => {
    const sw = load();
    await sw.push(mention);
    await sw.push({ ...mention, reason: "dm", roomName: "dm", count: 3, preview: "are you there?" });
    await sw.push({ ...mention, roomName: null, author: null, preview: null, count: 2 });
    await sw.push({
      room: "",
      roomName: null,
      seq: 0,
      reason: "test",
      author: null,
      preview: null,
      count: 1,
    });
    expect(
      sw.shown.map((s) => [s.title, s.options.body, s.options.tag, (s.options.data as { url: string }).url]),
    ).toEqual([
      ["#design", "Bob: look at this", mention.room, `/rooms/${mention.room}?seq=42`],
      ["Bob", "3 new messages · are you there?", mention.room, `/rooms/${mention.room}?seq=42`],
      ["Parley", "2 new messages", mention.room, `/rooms/${mention.room}?seq=42`],
      ["Parley", "Notifications work on this device.", "parley", "/"],
    ]);
  });

  it("opens the room on click: in the app's open window if there is one, else a new one", async () => {
    const sw = load();
    const notification = { data: { url: "/rooms/r_x?seq=4" }, close: () => undefined };
    sw.setWindows([]);
    await sw.fire("notificationclick", { notification });
    expect(sw.opened).toEqual(["/rooms/r_x?seq=4"]);
    sw.setWindows(["https://other.test/", "https://chat.acme.test/rooms/r_y"]);
    await sw.fire("notificationclick", { notification });
    expect(sw.posted).toEqual([{ type: "open", url: "/rooms/r_x?seq=4" }]);
    expect(sw.opened).toHaveLength(1);
  });

  it("leaves the API, sign-in, hooks and writes to the network", async () => {
    const sw = load();
    for (const [method, url] of [
      ["GET", "https://chat.acme.test/api/rooms"],
      ["GET", "https://chat.acme.test/auth/dev/login"],
      ["GET", "https://chat.acme.test/cdn-cgi/access/logout"],
      ["POST", "https://chat.acme.test/hooks/pk_x"],
      ["POST", "https://chat.acme.test/"],
      ["GET", "https://elsewhere.test/app.js"],
    ]) {
      let answered = false;
      sw.handlers.get("fetch")?.({
        request: { method, url, mode: "cors" },
        respondWith: () => {
          answered = true;
        },
      });
      expect(answered, `${method} ${url}`).toBe(false);
    }
  });
});
