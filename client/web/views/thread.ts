/**
 * @module The thread side panel: a root message and its replies (threads are one level deep), with
 * its own composer that sends replies (`threadRoot`). Threads are short, so no virtualisation.
 */
import { h } from "../dom.ts";
import type { RoomController } from "../room-controller.ts";
import type { AppState } from "../state.ts";
import { createComposer } from "./composer.ts";
import { type MessageContext, renderMessage } from "./message.ts";

export function createThreadPanel(
  state: AppState,
  c: RoomController,
  root: number,
  ctx: MessageContext,
  onClose: () => void,
) {
  const threadCtx: MessageContext = { ...ctx, openThread: undefined } as MessageContext;
  const list = h("div", { class: "thread-messages", role: "feed", aria: { label: "Thread replies" } });
  const close = h(
    "button",
    { type: "button", class: "icon", title: "Close thread", aria: { label: "Close thread" } },
    "✕",
  );
  close.addEventListener("click", onClose);
  const composer = createComposer({
    roomId: c.roomId,
    label: "Reply in thread",
    placeholder: "Reply…",
    send: (text, attachments) =>
      void c.session.send(text, { threadRoot: root, ...(attachments.length > 0 ? { attachments } : {}) }),
    typing: () => c.session.typing(),
    remember: (users) => state.remember(users),
  });
  const el = h(
    "div",
    { class: "thread" },
    h("header", { class: "thread-header" }, h("h2", {}, "Thread"), close),
    list,
    composer.el,
  );
  let highlighted: number | undefined;

  function refresh(): void {
    const messages = c.timeline.thread(root);
    const pending = c.session.queued.filter(
      (e) => e.command.type === "send" && e.command.threadRoot === root,
    );
    list.replaceChildren(
      ...messages.map((m, i) => {
        const row = renderMessage(m, threadCtx, false);
        if (i === 0) row.classList.add("thread-root");
        if (m.seq === highlighted) row.classList.add("highlight");
        return row;
      }),
      ...pending.map((e) =>
        h(
          "div",
          { class: "row pending" },
          e.command.type === "send" ? e.command.text : "",
          h("span", { class: "muted" }, " · sending"),
        ),
      ),
    );
  }
  refresh();

  return {
    el,
    refresh,
    focus: () => composer.focus(),
    close: onClose,
    highlight(seq: number) {
      highlighted = seq;
      refresh();
      list.querySelector<HTMLElement>(`[data-seq="${seq}"]`)?.scrollIntoView({ block: "center" });
    },
    dispose: () => el.remove(),
  };
}
