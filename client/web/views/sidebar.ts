/**
 * @module The sidebar: the signed-in user (status, theme; the people panel for admins), search, and
 * the rooms in three groups (channels, private rooms, direct messages) with unread and mention
 * badges and presence dots.
 * Alt+ArrowUp/Down moves between rooms from anywhere.
 */
import type { RoomSummary } from "../../../protocol/index.ts";
import type { MyStatus } from "../../sdk/index.ts";
import { h } from "../dom.ts";
import type { AppState } from "../state.ts";
import { openBrowseDialog, openCreateDialog, openDmDialog } from "./dialogs.ts";
import { managesPeople, openPeople } from "./people.ts";
import { cycleTheme, themeLabel } from "./theme.ts";

export function createSidebar(
  state: AppState,
  go: (roomId: string) => void,
  search: (q: string) => void,
  settings: () => void,
  signOut: () => void,
) {
  const nav = h("nav", { class: "rooms", aria: { label: "Rooms" } });
  const status = h("select", { class: "status", aria: { label: "Your status" } });
  for (const [value, label] of [
    ["active", "Active"],
    ["away", "Away"],
    ["dnd", "Do not disturb"],
  ] as const) {
    const opt = h("option", {}, label);
    opt.value = value;
    status.append(opt);
  }
  status.addEventListener("change", () => state.setStatus(status.value as MyStatus));
  const theme = h("button", { type: "button", class: "ghost theme", title: "Switch theme" }, themeLabel());
  theme.addEventListener("click", () => {
    cycleTheme();
    theme.textContent = themeLabel();
  });
  const bell = h("button", { type: "button", class: "ghost bell" }, "Notification settings");
  bell.addEventListener("click", settings);
  const leave = h("button", { type: "button", class: "ghost sign-out" }, "Sign out");
  leave.addEventListener("click", signOut);
  const people = managesPeople(state)
    ? h("button", { type: "button", class: "ghost people", on: { click: () => openPeople(state) } }, "People")
    : null;
  const searchInput = h("input", {
    type: "search",
    class: "search-input",
    placeholder: "Search messages (Ctrl+K)",
    aria: { label: "Search messages" },
  });
  searchInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && searchInput.value.trim()) search(searchInput.value.trim());
  });
  addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
      e.preventDefault();
      searchInput.focus();
      searchInput.select();
    }
    if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      const ids = [...nav.querySelectorAll<HTMLElement>("a.room-link")].map((a) => a.dataset.room as string);
      if (ids.length === 0) return;
      e.preventDefault();
      const current = state.view.kind === "room" ? ids.indexOf(state.view.roomId) : -1;
      const next = ids[(current + (e.key === "ArrowDown" ? 1 : ids.length - 1) + ids.length) % ids.length];
      if (next) go(next);
    }
  });

  const el = h(
    "aside",
    { class: "sidebar" },
    h(
      "div",
      { class: "me" },
      h("div", { class: "tenant" }, state.me.tenant.name),
      h("div", { class: "me-name" }, state.me.user.name),
      h("div", { class: "me-controls" }, status, theme),
      h("div", { class: "me-controls" }, bell, leave),
      people ? h("div", { class: "me-controls" }, people) : null,
    ),
    searchInput,
    nav,
  );

  function link(room: RoomSummary): HTMLElement {
    const active = state.view.kind === "room" && state.view.roomId === room.id;
    const title = state.roomTitle(room);
    const partner = room.kind === "dm" ? state.dmPartner(room) : undefined;
    const unread = room.lastSeq > room.readSeq && room.unread > 0;
    const labels = [title];
    if (room.mentions > 0) labels.push(`${room.mentions} mention${room.mentions === 1 ? "" : "s"}`);
    if (unread) labels.push(`${room.unread} unread`);
    if (partner) labels.push(state.presenceOf(partner.id));
    const a = h(
      "a",
      {
        class: `room-link${unread ? " unread" : ""}${active ? " active" : ""}`,
        attrs: { href: `/rooms/${room.id}` },
        data: { room: room.id },
        aria: { label: labels.join(", "), ...(active ? { current: "page" } : {}) },
      },
      partner
        ? h("span", {
            class: `dot presence-${state.presenceOf(partner.id)}`,
            data: { user: partner.id },
            aria: { hidden: true },
          })
        : h("span", { class: "hash", aria: { hidden: true } }, room.kind === "private" ? "🔒" : "#"),
      h("span", { class: "room-name" }, title),
      room.mentions > 0
        ? h("span", { class: "badge mention", aria: { hidden: true } }, `@${room.mentions}`)
        : null,
      unread && room.mentions === 0
        ? h("span", { class: "badge", aria: { hidden: true } }, String(room.unread))
        : null,
    );
    a.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      go(room.id);
    });
    return a;
  }

  function section(label: string, rooms: RoomSummary[], add: HTMLElement): HTMLElement {
    return h(
      "section",
      { class: "room-group" },
      h("h2", {}, h("span", {}, label), add),
      h("ul", { role: "list" }, ...rooms.map((r) => h("li", {}, link(r)))),
    );
  }

  function render(): void {
    const joined = [...state.rooms.values()].filter((r) => r.joined);
    const byName = (a: RoomSummary, b: RoomSummary) => state.roomTitle(a).localeCompare(state.roomTitle(b));
    const channels = joined.filter((r) => r.kind !== "dm").sort(byName);
    const dms = joined.filter((r) => r.kind === "dm").sort(byName);
    const add = (title: string, fn: () => void) =>
      h(
        "button",
        { type: "button", class: "icon add", title, aria: { label: title }, on: { click: fn } },
        "+",
      );
    const browse = h(
      "button",
      { type: "button", class: "link browse", on: { click: () => openBrowseDialog(state, go) } },
      "Browse channels",
    );
    nav.replaceChildren(
      section(
        "Channels",
        channels,
        add("Create a room", () => openCreateDialog(state, go)),
      ),
      browse,
      section(
        "Direct messages",
        dms,
        add("New direct message", () => openDmDialog(state, go)),
      ),
    );
    const unread = joined.reduce((n, r) => n + (r.lastSeq > r.readSeq ? r.unread : 0), 0);
    document.title = unread > 0 ? `(${unread}) Parley` : "Parley";
  }

  state.events.on("rooms", render);
  state.events.on("view", render);
  state.events.on("presence", (userId) => {
    for (const dot of nav.querySelectorAll<HTMLElement>(".dot")) {
      if (dot.dataset.user === userId) render();
    }
  });
  render();
  return { el, focusSearch: () => searchInput.focus() };
}
