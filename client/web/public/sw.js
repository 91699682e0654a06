/**
 * Parley's service worker (registered by client/web/notifications.ts, scope "/").
 *
 * - Notifications: shows each push (docs/protocol.md, "Notifications": the payload), one per room
 *   on the device (`tag`), and opens the room at the message on click, in a window already open if
 *   there is one.
 * - Re-subscribes when the browser replaces the subscription (`pushsubscriptionchange`).
 * - The app shell: index.html and its hashed assets are cached, so a reload while offline opens the
 *   app, whose outbox (IndexedDB) then sends once the network is back. API calls are never cached.
 * - `{"type":"clear"}` from the page (sign-out) drops every cache.
 *
 * Plain JavaScript: the browser loads it as it is, from a fixed URL, outside the app's bundle.
 */
/// <reference lib="webworker" />

const SHELL = "parley-shell-v1";

/** Requests the worker leaves to the network: the API, sign-in, Access and the worker itself. */
function passThrough(url) {
  return (
    url.origin !== self.location.origin ||
    /^\/(api|auth|hooks|scim|cdn-cgi|\.well-known)\//.test(url.pathname) ||
    url.pathname === "/healthz" ||
    url.pathname === "/sw.js"
  );
}

/** The page and the assets it names, as this deployment serves them now. */
async function cacheShell() {
  const cache = await caches.open(SHELL);
  const res = await fetch("/", { cache: "no-store" });
  if (!res.ok || !(res.headers.get("content-type") ?? "").includes("text/html")) return;
  const html = await res.clone().text();
  await cache.put("/", res);
  const assets = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]);
  await cache.addAll(assets);
}

self.addEventListener("install", (event) => {
  event.waitUntil(
    cacheShell()
      .catch(() => undefined)
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    (async () => {
      for (const key of await caches.keys()) if (key !== SHELL) await caches.delete(key);
      await self.clients.claim();
    })(),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (passThrough(url)) return;
  if (request.mode === "navigate") {
    // The network first (a deploy changes the page); offline, the cached shell, which routes itself.
    event.respondWith(
      (async () => {
        try {
          const res = await fetch(request);
          if (res.ok && (res.headers.get("content-type") ?? "").includes("text/html")) {
            const cache = await caches.open(SHELL);
            await cache.put("/", res.clone());
          }
          return res;
        } catch (err) {
          const cached = await caches.match("/");
          if (cached) return cached;
          throw err;
        }
      })(),
    );
    return;
  }
  if (url.pathname.startsWith("/assets/")) {
    // Hashed, so immutable: the cache first.
    event.respondWith(
      (async () => {
        const cached = await caches.match(request);
        if (cached) return cached;
        const res = await fetch(request);
        if (res.ok) {
          const cache = await caches.open(SHELL);
          await cache.put(request, res.clone());
        }
        return res;
      })(),
    );
    return;
  }
  // Icons and the manifest: the network, the cache when offline.
  event.respondWith(
    (async () => {
      try {
        const res = await fetch(request);
        if (res.ok) {
          const cache = await caches.open(SHELL);
          await cache.put(request, res.clone());
        }
        return res;
      } catch (err) {
        const cached = await caches.match(request);
        if (cached) return cached;
        throw err;
      }
    })(),
  );
});

self.addEventListener("message", (event) => {
  if (event.data?.type === "clear")
    event.waitUntil(
      (async () => {
        for (const key of await caches.keys()) await caches.delete(key);
      })(),
    );
});

/** What a notification says: who or where, and what (or how many). */
function shown(n) {
  if (n.reason === "test") return { title: "Parley", body: "Notifications work on this device." };
  const title =
    n.reason === "dm" ? (n.author?.name ?? "Direct message") : n.roomName ? `#${n.roomName}` : "Parley";
  const more = n.count > 1 ? `${n.count} new messages` : null;
  let body;
  if (n.preview) {
    const line = n.reason === "dm" || !n.author ? n.preview : `${n.author.name}: ${n.preview}`;
    body = more ? `${more} · ${line}` : line;
  } else {
    body = more ?? (n.reason === "mention" ? "You were mentioned" : "New message");
  }
  return { title, body };
}

self.addEventListener("push", (event) => {
  let notice = {};
  try {
    notice = event.data ? event.data.json() : {};
  } catch {
    notice = {};
  }
  const { title, body } = shown(notice);
  const room = typeof notice.room === "string" && notice.room !== "" ? notice.room : null;
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: room ?? "parley",
      renotify: true,
      icon: "/icons/icon-192.png",
      badge: "/icons/badge-96.png",
      data: { url: room ? `/rooms/${room}${notice.seq > 0 ? `?seq=${notice.seq}` : ""}` : "/" },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data?.url ?? "/";
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((c) => new URL(c.url).origin === self.location.origin);
      if (open) {
        await open.focus();
        open.postMessage({ type: "open", url });
        return;
      }
      await self.clients.openWindow(url);
    })(),
  );
});

self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil(
    (async () => {
      const key = await (await fetch("/api/push/key")).json();
      const subscription = await self.registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: key.publicKey,
      });
      await fetch("/api/push/subscriptions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(subscription.toJSON()),
      });
    })(),
  );
});
