/**
 * @module The composer: multiline text (Enter sends, Shift+Enter breaks the line), `@` mention
 * autocomplete from the directory, and files by button, paste or drop, each uploaded at once with
 * a progress bar (images previewed) and sent with the next message.
 *
 * Mentions show as `@Name` while typing and are sent as `@<userId>` (the protocol's form), so a
 * renamed user is still mentioned and another user with the same name is not.
 */
import type { AttachmentRef, DirectoryUser } from "../../../protocol/index.ts";
import { api, upload } from "../api.ts";
import { formatBytes, h } from "../dom.ts";

export interface ComposerOptions {
  roomId: string;
  label: string;
  placeholder: string;
  send(text: string, attachments: string[]): void;
  /** Returns whether the signal went out (it is dropped while not connected). */
  typing(): boolean;
  /** Up arrow in an empty composer: edit the user's last message. */
  editLast?(): void;
  remember(users: DirectoryUser[]): void;
}

interface Upload {
  file: File;
  el: HTMLElement;
  done?: AttachmentRef;
  failed?: string;
  abort: AbortController;
  url?: string;
}

const MAX_ATTACHMENTS = 10;
let composerCount = 0;

export function createComposer(o: ComposerOptions) {
  const id = `composer-${++composerCount}`;
  const input = h("textarea", {
    class: "composer-input",
    placeholder: o.placeholder,
    aria: {
      label: o.label,
      autocomplete: "list",
      expanded: false,
      controls: `${id}-mentions`,
      multiline: true,
    },
    attrs: { rows: "1" },
  });
  const suggestions = h("ul", { class: "mentions", id: `${id}-mentions`, role: "listbox", hidden: true });
  const uploads = h("div", { class: "uploads", aria: { live: "polite" } });
  const fileInput = h("input", {
    type: "file",
    class: "visually-hidden",
    attrs: { multiple: "", tabindex: "-1" },
  });
  const sendButton = h("button", { type: "button", class: "send", aria: { label: "Send" } }, "Send");
  const attachButton = h(
    "button",
    { type: "button", class: "icon attach", title: "Attach files", aria: { label: "Attach files" } },
    "+",
  );
  const el = h(
    "div",
    { class: "composer" },
    uploads,
    suggestions,
    h("div", { class: "composer-row" }, attachButton, input, sendButton),
    fileInput,
  );

  const pending: Upload[] = [];
  const chosen = new Map<string, string>(); // "@Name" → user id
  let options: DirectoryUser[] = [];
  let active = 0;
  let lookup: ReturnType<typeof setTimeout> | null = null;
  let lastTyping = 0;

  const grow = () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  };

  const refreshSend = () => {
    const busy = pending.some((u) => !u.done && !u.failed);
    sendButton.disabled = busy || (input.value.trim() === "" && !pending.some((u) => u.done));
  };

  function send(): void {
    if (sendButton.disabled) return;
    let text = input.value.trim();
    for (const [label, userId] of chosen) text = text.split(label).join(`@<${userId}>`);
    const ids = pending.flatMap((u) => (u.done ? [u.done.id] : []));
    if (text === "" && ids.length === 0) return;
    o.send(text, ids);
    input.value = "";
    chosen.clear();
    for (const u of pending.splice(0)) {
      if (u.url) URL.revokeObjectURL(u.url);
      u.el.remove();
    }
    grow();
    refreshSend();
  }

  // ---- mentions ------------------------------------------------------------------------------
  const query = (): { start: number; q: string } | null => {
    const before = input.value.slice(0, input.selectionStart ?? 0);
    const match = /(^|\s)@([^\s@<>]{0,30})$/.exec(before);
    return match ? { start: before.length - (match[2] as string).length - 1, q: match[2] as string } : null;
  };
  const closeSuggestions = () => {
    suggestions.hidden = true;
    options = [];
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  };
  const paint = () => {
    suggestions.replaceChildren(
      ...options.map((u, i) =>
        h(
          "li",
          {
            id: `${id}-opt-${i}`,
            role: "option",
            class: i === active ? "active" : "",
            aria: { selected: i === active },
            on: {
              mousedown: (e) => {
                e.preventDefault();
                choose(i);
              },
            },
          },
          h("span", { class: "name" }, u.name),
          h("span", { class: "muted" }, ` ${u.email}`),
        ),
      ),
    );
    suggestions.hidden = options.length === 0;
    input.setAttribute("aria-expanded", String(options.length > 0));
    if (options.length > 0) input.setAttribute("aria-activedescendant", `${id}-opt-${active}`);
  };
  const choose = (i: number) => {
    const u = options[i];
    const q = query();
    if (!u || !q) return;
    const label = `@${u.name}`;
    chosen.set(label, u.id);
    const caret = input.selectionStart ?? input.value.length;
    input.value = `${input.value.slice(0, q.start)}${label} ${input.value.slice(caret)}`;
    const at = q.start + label.length + 1;
    input.setSelectionRange(at, at);
    closeSuggestions();
    refreshSend();
  };
  const suggest = () => {
    const q = query();
    if (lookup) clearTimeout(lookup);
    if (!q) {
      closeSuggestions();
      return;
    }
    lookup = setTimeout(async () => {
      try {
        const { users } = await api.users(q.q);
        o.remember(users);
        if (!query()) return;
        options = users.slice(0, 8);
        active = 0;
        paint();
      } catch {
        closeSuggestions();
      }
    }, 120);
  };

  // ---- files ---------------------------------------------------------------------------------
  function addFiles(files: File[]): void {
    for (const file of files) {
      if (pending.length >= MAX_ATTACHMENTS) break;
      const bar = h("progress", {
        attrs: { max: "1", value: "0" },
        aria: { label: `Uploading ${file.name}` },
      });
      const remove = h("button", { type: "button", class: "icon", title: `Remove ${file.name}` }, "✕");
      const url = file.type.startsWith("image/") ? URL.createObjectURL(file) : undefined;
      const chip = h(
        "div",
        { class: "upload", data: { name: file.name } },
        url ? h("img", { class: "thumb", attrs: { src: url, alt: "" } }) : null,
        h("span", { class: "file-name" }, file.name || "pasted file"),
        h("span", { class: "muted" }, formatBytes(file.size)),
        bar,
        remove,
      );
      const u: Upload = { file, el: chip, abort: new AbortController(), ...(url ? { url } : {}) };
      remove.addEventListener("click", () => {
        u.abort.abort();
        pending.splice(pending.indexOf(u), 1);
        if (u.url) URL.revokeObjectURL(u.url);
        chip.remove();
        refreshSend();
      });
      pending.push(u);
      uploads.append(chip);
      upload(o.roomId, file, (f) => bar.setAttribute("value", String(f)), u.abort.signal)
        .then((ref) => {
          u.done = ref;
          chip.classList.add("done");
          bar.setAttribute("aria-label", `Uploaded ${file.name}`);
        })
        .catch((err: Error) => {
          u.failed = err.message;
          chip.classList.add("failed");
          chip.append(h("span", { class: "error", role: "alert" }, `Upload failed: ${err.message}`));
        })
        .finally(refreshSend);
    }
    refreshSend();
  }

  // ---- events --------------------------------------------------------------------------------
  input.addEventListener("input", () => {
    grow();
    refreshSend();
    suggest();
    const now = Date.now();
    if (input.value !== "" && now - lastTyping > 2_000 && o.typing()) lastTyping = now;
  });
  input.addEventListener("keydown", (e) => {
    if (!suggestions.hidden && options.length > 0) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        active = (active + (e.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
        paint();
        return;
      }
      if (e.key === "Enter" || e.key === "Tab") {
        e.preventDefault();
        choose(active);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        closeSuggestions();
        return;
      }
    }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "ArrowUp" && input.value === "" && o.editLast) {
      e.preventDefault();
      o.editLast();
    }
  });
  input.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
  input.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (files.length > 0) {
      e.preventDefault();
      addFiles(files);
    }
  });
  sendButton.addEventListener("click", send);
  attachButton.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    addFiles([...(fileInput.files ?? [])]);
    fileInput.value = "";
  });
  refreshSend();

  return {
    el,
    input,
    focus: () => input.focus(),
    addFiles,
  };
}
