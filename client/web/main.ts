/**
 * @module The web client's entry: signs in (or finds the user signed in by Access), then lays out
 * the app (banner, sidebar, main view) and routes between rooms and search by URL
 * (`/rooms/:id`, `/rooms/:id?seq=N`, `/search?q=`), so links and the back button work.
 */
import { HttpError } from "../sdk/index.ts";
import { api } from "./api.ts";
import { h } from "./dom.ts";
import { Notifications } from "./notifications.ts";
import { AppState, forgetLocal, LOCAL_PREFIX, type View } from "./state.ts";
import { createBanner, createNotice } from "./views/banner.ts";
import { createRoomView } from "./views/room-view.ts";
import { createSearchView } from "./views/search.ts";
import { openSettings } from "./views/settings.ts";
import { createSidebar } from "./views/sidebar.ts";
import { createSignIn } from "./views/sign-in.ts";
import { applyTheme } from "./views/theme.ts";

const root = document.getElementById("app") as HTMLElement;
const ME_KEY = `${LOCAL_PREFIX}me`;

function viewFromUrl(): View {
  const url = new URL(location.href);
  const room = /^\/rooms\/(r_[0-9a-z]{20})$/.exec(url.pathname);
  if (room) {
    const seq = Number(url.searchParams.get("seq"));
    return { kind: "room", roomId: room[1] as string, ...(seq > 0 ? { focus: seq } : {}) };
  }
  if (url.pathname === "/search") return { kind: "search", q: url.searchParams.get("q") ?? "" };
  return { kind: "empty" };
}

function urlOf(view: View): string {
  if (view.kind === "room") return `/rooms/${view.roomId}${view.focus ? `?seq=${view.focus}` : ""}`;
  if (view.kind === "search") return `/search?q=${encodeURIComponent(view.q)}`;
  return "/";
}

/**
 * Signs out of this browser: warns when messages are still waiting to be sent (they are lost), then
 * stops the sessions, unsubscribes this device from push, has the service worker drop its caches,
 * and removes everything kept locally (the outbox, the user, the room list), before ending the
 * sign-in: the dev cookie, or Access's session (`/cdn-cgi/access/logout`).
 */
async function signOut(state: AppState, notifications: Notifications): Promise<void> {
  const unsent = await state.store.count().catch(() => 0);
  if (
    unsent > 0 &&
    !confirm(
      `${unsent} message${unsent === 1 ? " has" : "s have"} not been sent yet and will be lost. Sign out anyway?`,
    )
  )
    return;
  state.presence.close();
  for (const c of state.controllers.values()) c.close();
  await notifications.clear();
  await state.store.destroy().catch(() => undefined);
  forgetLocal();
  const dev = await fetch("/auth/dev/logout", { method: "POST" }).catch(() => null);
  location.href = dev?.ok ? "/" : "/cdn-cgi/access/logout";
}

async function boot(): Promise<void> {
  applyTheme();
  let me: Awaited<ReturnType<typeof api.me>>;
  try {
    me = await api.me();
    localStorage.setItem(ME_KEY, JSON.stringify(me));
  } catch (err) {
    if (err instanceof HttpError && err.status === 401) {
      forgetLocal();
      root.replaceChildren(createSignIn(() => void boot()));
      return;
    }
    // No network: start as the user this browser last had, from what it kept.
    const kept = err instanceof HttpError && err.code === "network" ? localStorage.getItem(ME_KEY) : null;
    if (kept === null) {
      root.replaceChildren(
        h("p", { class: "error", role: "alert" }, `Parley could not start: ${(err as Error).message}`),
      );
      return;
    }
    me = JSON.parse(kept) as typeof me;
  }
  const state = new AppState(me);
  // A deep link to a room: fetch its latest page while the room list loads, not after.
  const initial = viewFromUrl();
  if (initial.kind === "room")
    state
      .controller(initial.roomId)
      .start()
      .catch(() => undefined);
  const main = h("main", { class: "main", id: "main" });
  let current: { el: HTMLElement; dispose?: () => void } | null = null;

  const show = (view: View, push: boolean) => {
    if (push) history.pushState(null, "", urlOf(view));
    current?.dispose?.();
    state.setView(view);
    if (view.kind === "room") {
      const room = state.rooms.get(view.roomId);
      if (!room) {
        current = {
          el: h("div", { class: "empty muted" }, "This room does not exist, or you cannot see it."),
        };
      } else if (!room.joined) {
        const join = h("button", { type: "button", class: "primary" }, `Join #${room.name}`);
        join.addEventListener("click", async () => {
          await state.join(room.id);
          show(view, false);
        });
        current = { el: h("div", { class: "empty" }, h("p", {}, room.topic || `#${room.name}`), join) };
      } else {
        const roomView = createRoomView(state, room, view.focus);
        current = roomView;
        void roomView.ready.then(() => {
          if (view.focus === undefined) roomView.focus();
        });
      }
    } else if (view.kind === "search") {
      const search = createSearchView(state, view.q, (roomId, seq) =>
        show({ kind: "room", roomId, focus: seq }, true),
      );
      current = search;
    } else {
      const first = [...state.rooms.values()].find((r) => r.joined);
      current = {
        el: h(
          "div",
          { class: "empty muted" },
          first
            ? "Pick a room on the left."
            : "No rooms yet: create one, browse channels, or message someone.",
        ),
      };
    }
    main.replaceChildren(current.el);
  };

  const notifications = new Notifications(state);
  // On a phone-sized screen the sidebar is a drawer over the room, opened from the menu button and
  // closed by picking a room (or Escape, or a tap beside it).
  const layout = h("div", { class: "layout" });
  const menu = h(
    "button",
    {
      type: "button",
      class: "menu",
      aria: { label: "Rooms", expanded: "false" },
      attrs: { "aria-controls": "sidebar" },
    },
    "☰",
  );
  const drawer = (open: boolean) => {
    layout.classList.toggle("drawer-open", open);
    menu.setAttribute("aria-expanded", String(open));
  };
  menu.addEventListener("click", () => drawer(!layout.classList.contains("drawer-open")));
  addEventListener("keydown", (e) => {
    if (e.key === "Escape") drawer(false);
  });
  const go = (roomId: string) => {
    drawer(false);
    show({ kind: "room", roomId }, true);
  };
  const sidebar = createSidebar(
    state,
    go,
    (q) => {
      drawer(false);
      show({ kind: "search", q }, true);
    },
    () => void openSettings(state, notifications),
    () => void signOut(state, notifications),
  );
  sidebar.el.id = "sidebar";
  const scrim = h("div", { class: "scrim", attrs: { "aria-hidden": "true" } });
  scrim.addEventListener("click", () => drawer(false));
  layout.append(sidebar.el, scrim, main);
  const banner = createBanner(state);
  const notice = createNotice(state);
  const skip = h("a", { class: "skip", attrs: { href: "#main" } }, "Skip to messages");
  root.replaceChildren(skip, menu, banner.el, notice.el, layout);
  addEventListener("popstate", () => show(viewFromUrl(), false));
  // Access to the room on screen ended (removed, or left on another device): leave it.
  state.events.on("lost", (roomId) => {
    if (state.view.kind === "room" && state.view.roomId === roomId) show({ kind: "empty" }, true);
  });

  await state.start();
  void notifications.start();
  if (initial.kind === "empty") {
    const first = [...state.rooms.values()].find((r) => r.joined && r.kind !== "dm");
    show(first ? { kind: "room", roomId: first.id } : initial, first !== undefined);
  } else {
    show(initial, false);
  }
}

void boot();
