/**
 * @module Modal dialogs (native <dialog>: focus stays inside, Escape closes): create a room, browse
 * and join channels, start a direct message from the directory. Server errors show in the dialog.
 */
import type { DirectoryUser } from "../../../protocol/index.ts";
import { api } from "../api.ts";
import { h } from "../dom.ts";
import type { AppState } from "../state.ts";

export function modal(
  title: string,
  ...content: HTMLElement[]
): { dialog: HTMLDialogElement; error: HTMLElement } {
  const error = h("p", { class: "error", role: "alert" });
  const close = h("button", { type: "button", class: "icon", aria: { label: "Close" } }, "✕");
  const dialog = h(
    "dialog",
    { class: "modal", aria: { label: title } },
    h("header", {}, h("h2", {}, title), close),
    ...content,
    error,
  );
  close.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, error };
}

export function openCreateDialog(state: AppState, go: (roomId: string) => void): void {
  const name = h("input", {
    type: "text",
    aria: { label: "Name" },
    attrs: { required: "", maxlength: "80" },
  });
  const topic = h("input", { type: "text", aria: { label: "Topic" }, attrs: { maxlength: "250" } });
  const priv = h("input", { type: "checkbox" });
  const form = h(
    "form",
    {},
    h("label", {}, "Name", name),
    h("label", {}, "Topic (optional)", topic),
    h("label", { class: "check" }, priv, " Private: only people you add can see it"),
    h("button", { type: "submit", class: "primary" }, "Create"),
  );
  const { dialog, error } = modal("Create a room", form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const room = await state.createRoom({
        name: name.value.trim(),
        kind: priv.checked ? "private" : "channel",
        ...(topic.value.trim() ? { topic: topic.value.trim() } : {}),
      });
      dialog.close();
      go(room.id);
    } catch (err) {
      error.textContent = (err as Error).message;
    }
  });
  name.focus();
}

export function openBrowseDialog(state: AppState, go: (roomId: string) => void): void {
  const list = h("ul", { class: "pick-list", role: "list" });
  const { dialog, error } = modal("Browse channels", list);
  const render = () => {
    const channels = [...state.rooms.values()]
      .filter((r) => r.kind === "channel")
      .sort((a, b) => a.name.localeCompare(b.name));
    if (channels.length === 0) list.replaceChildren(h("li", { class: "muted" }, "No channels yet."));
    else
      list.replaceChildren(
        ...channels.map((r) => {
          const button = h(
            "button",
            { type: "button", class: r.joined ? "ghost" : "primary" },
            r.joined ? "Open" : "Join",
          );
          button.addEventListener("click", async () => {
            try {
              if (!r.joined) await state.join(r.id);
              dialog.close();
              go(r.id);
            } catch (err) {
              error.textContent = (err as Error).message;
            }
          });
          return h(
            "li",
            {},
            h("span", { class: "room-name" }, `# ${r.name}`),
            h("span", { class: "muted" }, r.topic),
            button,
          );
        }),
      );
  };
  void state.loadRooms().then(render);
  render();
}

export function openDmDialog(state: AppState, go: (roomId: string) => void): void {
  const input = h("input", { type: "search", placeholder: "Name or email", aria: { label: "Find people" } });
  const list = h("ul", { class: "pick-list", role: "list" });
  const { dialog, error } = modal("New direct message", input, list);
  const show = (users: DirectoryUser[]) =>
    list.replaceChildren(
      ...users
        .filter((u) => u.id !== state.me.user.id)
        .map((u) => {
          const button = h(
            "button",
            { type: "button", class: "person" },
            h("span", { class: "name" }, u.name),
            h("span", { class: "muted" }, ` ${u.email}`),
          );
          button.addEventListener("click", async () => {
            try {
              const room = await state.createRoom({ kind: "dm", members: [u.id] });
              dialog.close();
              go(room.id);
            } catch (err) {
              error.textContent = (err as Error).message;
            }
          });
          return h("li", {}, button);
        }),
    );
  searchDirectory(input, error, (users) => {
    state.remember(users);
    show(users);
  });
}

/** Looks people up in the directory as `input` changes (debounced), and at once: `show` gets each
 * answer, a failure goes to `error`. */
export function searchDirectory(
  input: HTMLInputElement,
  error: HTMLElement,
  show: (users: DirectoryUser[]) => void,
): void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const lookup = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        show((await api.users(input.value.trim())).users);
      } catch (err) {
        error.textContent = (err as Error).message;
      }
    }, 150);
  };
  input.addEventListener("input", lookup);
  lookup();
  input.focus();
}
