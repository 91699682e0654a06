/**
 * @module One message as a DOM element: author, time, safe markdown, attachments (images previewed,
 * everything downloadable), reactions, thread summary, whether it is pinned, and its actions (react,
 * reply in thread, pin, edit and delete for its author). Text reaches the DOM only as text nodes (dom.ts, markdown.ts).
 */
import { attachmentUrl } from "../api.ts";
import { formatBytes, formatTime, h } from "../dom.ts";
import { parseMarkdown, plainText, renderMarkdown } from "../markdown.ts";
import type { MessageView } from "../timeline.ts";

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "👀", "✅"];
const PREVIEWABLE = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

export interface MessageContext {
  meId: string;
  canModerate: boolean;
  nameOf(id: string): string;
  presenceOf(id: string): string;
  react(seq: number, emoji: string, on: boolean): void;
  pin(seq: number, on: boolean): void;
  openThread?(seq: number): void;
  edit(seq: number, text: string): void;
  remove(seq: number): void;
  /** The row changed size (an image loaded, an editor opened). */
  resized(): void;
}

export function renderMessage(m: MessageView, ctx: MessageContext, continued: boolean): HTMLElement {
  const mine = m.author.id === ctx.meId;
  const blocks = m.deleted ? [] : parseMarkdown(m.text);
  const preview = m.deleted ? "message deleted" : plainText(blocks, (id) => ctx.nameOf(id)).slice(0, 200);
  const el = h("article", {
    class: `msg${continued ? " continued" : ""}${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`,
    tabindex: -1,
    data: { seq: m.seq },
    aria: { label: `${m.author.name}, ${formatTime(m.ts)}: ${preview}` },
  });
  el.append(
    continued
      ? h(
          "div",
          { class: "gutter" },
          h("time", { attrs: { datetime: new Date(m.ts).toISOString() } }, formatTime(m.ts)),
        )
      : h(
          "div",
          {
            class: `avatar presence-${ctx.presenceOf(m.author.id)}`,
            aria: { hidden: true },
            data: { user: m.author.id },
          },
          initials(m.author.name),
        ),
  );
  const body = h("div", { class: "body" });
  if (!continued) {
    body.append(
      h(
        "header",
        {},
        h("span", { class: "author" }, m.author.name),
        h("time", { attrs: { datetime: new Date(m.ts).toISOString() } }, formatTime(m.ts)),
      ),
    );
  }
  if (m.pinnedBy && !m.deleted) {
    body.append(h("div", { class: "pinned muted" }, `📌 Pinned by ${m.pinnedBy.name}`));
  }
  const text = h("div", { class: "text" });
  if (m.deleted) text.append(h("em", { class: "muted" }, "This message was deleted."));
  else text.append(renderMarkdown(blocks, document, { mentionName: (id) => ctx.nameOf(id) }));
  if (m.edited && !m.deleted) text.append(h("span", { class: "edited muted" }, " (edited)"));
  body.append(text);

  if (m.attachments.length > 0) {
    const files = h("div", { class: "attachments" });
    for (const a of m.attachments) {
      const link = h(
        "a",
        {
          class: "file",
          attrs: { href: attachmentUrl(a.id), download: a.name },
          title: `Download ${a.name}`,
        },
        PREVIEWABLE.has(a.contentType)
          ? h("img", {
              class: "preview",
              attrs: { src: attachmentUrl(a.id, true), alt: a.name, loading: "lazy" },
              on: { load: () => ctx.resized() },
            })
          : null,
        h("span", { class: "file-name" }, a.name),
        h("span", { class: "file-size muted" }, formatBytes(a.size)),
      );
      files.append(link);
    }
    body.append(files);
  }

  if (m.reactions.size > 0) {
    const bar = h("div", { class: "reactions", role: "group", aria: { label: "Reactions" } });
    for (const [emoji, users] of m.reactions) {
      const reacted = users.some((u) => u.id === ctx.meId);
      bar.append(
        h(
          "button",
          {
            class: `reaction${reacted ? " mine" : ""}`,
            type: "button",
            title: users.map((u) => u.name).join(", "),
            aria: {
              pressed: reacted,
              label: `${emoji} ${users.length}, ${reacted ? "remove" : "add"} yours`,
            },
            on: { click: () => ctx.react(m.seq, emoji, !reacted) },
          },
          `${emoji} ${users.length}`,
        ),
      );
    }
    body.append(bar);
  }

  if (m.replies.length > 0 && ctx.openThread) {
    const open = ctx.openThread;
    body.append(
      h(
        "button",
        { class: "replies link", type: "button", on: { click: () => open(m.seq) } },
        `${m.replies.length} ${m.replies.length === 1 ? "reply" : "replies"}`,
      ),
    );
  }
  el.append(body);
  if (!m.deleted) el.append(actions(m, ctx, mine, el, text));
  return el;
}

function actions(m: MessageView, ctx: MessageContext, mine: boolean, row: HTMLElement, text: HTMLElement) {
  const bar = h("div", { class: "actions", role: "toolbar", aria: { label: "Message actions" } });
  for (const emoji of QUICK_REACTIONS.slice(0, 3)) {
    const on = !(m.reactions.get(emoji) ?? []).some((u) => u.id === ctx.meId);
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: "icon",
          title: `React ${emoji}`,
          aria: { label: `React ${emoji}` },
          on: { click: () => ctx.react(m.seq, emoji, on) },
        },
        emoji,
      ),
    );
  }
  if (ctx.openThread && m.threadRoot === undefined) {
    const open = ctx.openThread;
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: "icon",
          title: "Reply in thread",
          aria: { label: "Reply in thread" },
          on: { click: () => open(m.seq) },
        },
        "Reply",
      ),
    );
  }
  const pin = m.pinnedBy ? "Unpin" : "Pin";
  bar.append(
    h(
      "button",
      {
        type: "button",
        class: "icon",
        title: `${pin} to the room`,
        aria: { label: pin },
        on: { click: () => ctx.pin(m.seq, !m.pinnedBy) },
      },
      pin,
    ),
  );
  if (mine) {
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: "icon",
          title: "Edit",
          aria: { label: "Edit" },
          on: { click: () => startEdit(m, ctx, row, text) },
        },
        "Edit",
      ),
    );
  }
  if (mine || ctx.canModerate) {
    bar.append(
      h(
        "button",
        {
          type: "button",
          class: "icon danger",
          title: "Delete",
          aria: { label: "Delete" },
          on: {
            click: () => {
              if (confirm("Delete this message for everyone?")) ctx.remove(m.seq);
            },
          },
        },
        "Delete",
      ),
    );
  }
  return bar;
}

/** Swaps the message text for an editor: Enter saves, Escape cancels. */
export function startEdit(m: MessageView, ctx: MessageContext, row: HTMLElement, text: HTMLElement): void {
  const editor = h("textarea", { class: "editor", aria: { label: "Edit message" } });
  editor.value = m.text;
  const done = () => {
    editor.replaceWith(text);
    ctx.resized();
    row.focus();
  };
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      done();
    } else if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      const value = editor.value.trim();
      if (value && value !== m.text) ctx.edit(m.seq, value);
      done();
    }
  });
  text.replaceWith(editor);
  ctx.resized();
  editor.focus();
}

export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? "?") + (parts.length > 1 ? (parts.at(-1)?.[0] ?? "") : "")).toUpperCase();
}
