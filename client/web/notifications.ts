/**
 * @module Reaching the user when they are not looking (docs/protocol.md, "Notifications"): the
 * service worker (`/sw.js`: shows pushes, opens the right room on click, keeps the app shell for
 * offline reloads), this device's push subscription, the room the page shows (presence `focus`, so
 * the server does not notify a room on screen), the unread count in the title and the app badge,
 * and in-page notifications while the tab is hidden on a device without push.
 *
 * Permission is only ever asked from a click (`enable`): browsers penalise prompts on load, and a
 * prompt nobody asked for is the fastest way to a permanent "block".
 */
import type { RoomSummary } from "../../protocol/index.ts";
import { api } from "./api.ts";
import type { AppState } from "./state.ts";

export type PushState = "unsupported" | "denied" | "off" | "on";

const SW_URL = "/sw.js";

function supported(): boolean {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  const out = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** The id the server gives a subscription: base64url of the SHA-256 of its endpoint, 32 characters
 * (worker/routes/notifications.ts). */
async function subscriptionId(endpoint: string): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(new URL(endpoint).href)),
  );
  let bin = "";
  for (const b of digest) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "").slice(0, 32);
}

export class Notifications {
  readonly #state: AppState;
  #registration: ServiceWorkerRegistration | null = null;
  #pushOn = false;

  constructor(state: AppState) {
    this.#state = state;
  }

  /** Registers the service worker, tells the server of this device's subscription again (it may
   * have lost it), and starts following the view and the page's visibility. */
  async start(): Promise<void> {
    this.#followFocus();
    this.#state.events.on("rooms", () => this.#badge());
    this.#state.events.on("activity", ({ roomId, mention }) => {
      const room = this.#state.rooms.get(roomId);
      if (room) this.activity(room, mention);
    });
    this.#badge();
    this.#state.presence.setFocus(this.#focused());
    if (!("serviceWorker" in navigator)) return;
    try {
      this.#registration = await navigator.serviceWorker.register(SW_URL, { scope: "/" });
    } catch {
      return;
    }
    navigator.serviceWorker.addEventListener("message", (e) => {
      const data = e.data as { type?: string; url?: string } | null;
      // A click on a notification while this page is open: show its room here.
      if (data?.type === "open" && typeof data.url === "string") {
        history.pushState(null, "", data.url);
        dispatchEvent(new PopStateEvent("popstate"));
      }
    });
    if (!supported() || Notification.permission !== "granted") return;
    const existing = await this.#registration.pushManager.getSubscription();
    if (existing) {
      await api.subscribe(existing.toJSON()).catch(() => undefined);
      this.#pushOn = true;
    }
  }

  state(): PushState {
    if (!supported()) return "unsupported";
    if (Notification.permission === "denied") return "denied";
    return this.#pushOn ? "on" : "off";
  }

  /** From a click: asks permission, subscribes this device and registers it. */
  async enable(): Promise<PushState> {
    if (!supported()) return "unsupported";
    const permission = await Notification.requestPermission();
    if (permission !== "granted") return this.state();
    const registration =
      this.#registration ?? (await navigator.serviceWorker.register(SW_URL, { scope: "/" }));
    this.#registration = registration;
    await navigator.serviceWorker.ready;
    const { publicKey } = await api.pushKey();
    const subscription =
      (await registration.pushManager.getSubscription()) ??
      (await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes(publicKey),
      }));
    await api.subscribe(subscription.toJSON());
    this.#pushOn = true;
    return "on";
  }

  /** This device stops receiving pushes (the server forgets it; the browser unsubscribes). */
  async disable(): Promise<void> {
    const subscription = await this.#registration?.pushManager.getSubscription();
    if (subscription) {
      const id = await subscriptionId(subscription.endpoint);
      await subscription.unsubscribe();
      await api.unsubscribe(id).catch(() => undefined);
    }
    this.#pushOn = false;
  }

  /** Sign-out: the service worker drops its caches (the app shell and anything it kept). */
  async clear(): Promise<void> {
    await this.disable().catch(() => undefined);
    this.#registration?.active?.postMessage({ type: "clear" });
  }

  /** An activity notice for a room while the page is hidden, on a device without push: shown by
   * the page itself (with push, the server's notification comes instead). */
  activity(room: RoomSummary, mention: boolean): void {
    if (this.#pushOn || !document.hidden || !supported() || Notification.permission !== "granted") return;
    if (!mention && room.kind !== "dm") return;
    const n = new Notification(this.#state.roomTitle(room), {
      body: mention ? "You were mentioned" : "New message",
      tag: room.id,
    });
    n.addEventListener("click", () => {
      focus();
      history.pushState(null, "", `/rooms/${room.id}`);
      dispatchEvent(new PopStateEvent("popstate"));
      n.close();
    });
  }

  #focused(): string | null {
    const view = this.#state.view;
    return view.kind === "room" && document.visibilityState === "visible" ? view.roomId : null;
  }

  #followFocus(): void {
    const say = () => this.#state.presence.setFocus(this.#focused());
    this.#state.events.on("view", say);
    document.addEventListener("visibilitychange", say);
  }

  /** `(3) Parley` in the title and the app's badge: the unread count over joined rooms. */
  #badge(): void {
    let unread = 0;
    for (const room of this.#state.rooms.values()) if (room.joined) unread += room.unread;
    document.title = unread > 0 ? `(${unread}) Parley` : "Parley";
    const nav = navigator as Navigator & {
      setAppBadge?: (n: number) => Promise<void>;
      clearAppBadge?: () => Promise<void>;
    };
    if (unread > 0) void nav.setAppBadge?.(unread).catch(() => undefined);
    else void nav.clearAppBadge?.().catch(() => undefined);
  }
}
