/**
 * @module The open room: header, the virtualised message list (older history loaded as the reader
 * scrolls up, gaps after a jump filled as they come into view), unsent messages from the outbox,
 * who is typing, the composer, drag-and-drop of files, and the thread panel beside it. Reading the
 * bottom of the list while the page is visible moves the read marker.
 */
import type { RoomSummary } from "../../../protocol/index.ts";
import { h } from "../dom.ts";
import type { RoomController } from "../room-controller.ts";
import type { AppState } from "../state.ts";
import type { MessageView, Row } from "../timeline.ts";
import { VirtualList } from "../virtual-list.ts";
import { createComposer } from "./composer.ts";
import { type MessageContext, renderMessage, startEdit } from "./message.ts";
import { createThreadPanel } from "./thread.ts";

type Item = Row | { kind: "pending"; key: string; text: string; files: number };

const ESTIMATES: Record<Item["kind"], number> = {
  start: 72,
  more: 40,
  gap: 40,
  day: 36,
  message: 58,
  notice: 28,
  pending: 40,
};

export function createRoomView(state: AppState, room: RoomSummary, focusSeq?: number) {
  const c: RoomController = state.controller(room.id);
  const title = state.roomTitle(room);
  const meId = state.me.user.id;
  const disposers: Array<() => void> = [];

  const viewport = h("div", {
    class: "messages",
    role: "feed",
    tabindex: 0,
    aria: { label: `Messages in ${title}`, busy: true },
  });
  const typing = h("div", { class: "typing muted", aria: { live: "polite" } });
  const announcer = h("div", { class: "visually-hidden", aria: { live: "polite" } });
  const threadHost = h("aside", { class: "thread-host", hidden: true, aria: { label: "Thread" } });

  let thread: ReturnType<typeof createThreadPanel> | null = null;

  const ctx: MessageContext = {
    meId,
    canModerate: state.me.user.role === "owner" || state.me.user.role === "admin",
    nameOf: (id) => state.nameOf(id),
    presenceOf: (id) => state.presenceOf(id),
    react: (seq, emoji, on) => void c.session.command({ type: "react", target: seq, emoji, on }),
    pin: (seq, on) => void c.session.command({ type: "pin", target: seq, on }),
    openThread: (seq) => openThread(seq),
    edit: (seq, text) => void c.session.command({ type: "edit", target: seq, text }),
    remove: (seq) => void c.session.command({ type: "delete", target: seq }),
    resized: () => list.remeasure(),
  };

  const list = new VirtualList<Item>({
    viewport,
    estimate: (row) => (row.kind === "message" && row.continued ? 30 : ESTIMATES[row.kind]),
    render: (row) => renderRow(row),
    onVisible: (first, last) => {
      const rows = list.rows;
      for (let i = first; i <= last; i++) {
        const row = rows[i];
        if (row?.kind === "more") void c.loadOlder(row.before);
        if (row?.kind === "gap") void c.loadAfter(row.after);
      }
      maybeRead();
    },
  });

  function renderRow(row: Item): HTMLElement {
    switch (row.kind) {
      case "start":
        return h(
          "div",
          { class: "row start" },
          h(
            "h2",
            {},
            room.kind === "dm" ? `This is your conversation with ${title}` : `This is the start of #${title}`,
          ),
          room.topic ? h("p", { class: "muted" }, room.topic) : null,
        );
      case "more":
      case "gap":
        return h("div", { class: "row loading muted", role: "status" }, "Loading messages…");
      case "day":
        return h("div", { class: "row day", role: "separator" }, h("span", {}, row.label));
      case "notice":
        return h("div", { class: "row event-notice muted" }, c.timeline.notices.get(row.seq)?.text ?? "");
      case "pending":
        return h(
          "div",
          { class: "row pending", aria: { label: "Not sent yet" } },
          h("span", { class: "pending-text" }, row.text || `${row.files} file(s)`),
          h("span", { class: "muted" }, " · sending when online"),
        );
      case "message": {
        const m = c.timeline.messages.get(row.seq) as MessageView;
        const el = renderMessage(m, ctx, row.continued);
        el.classList.add("row");
        return el;
      }
    }
  }

  function items(): Item[] {
    const rows: Item[] = c.timeline.rows();
    for (const e of c.session.queued) {
      if (e.command.type === "send" && e.command.threadRoot === undefined) {
        rows.push({
          kind: "pending",
          key: `p-${e.clientId}`,
          text: e.command.text,
          files: e.command.attachments?.length ?? 0,
        });
      }
    }
    return rows;
  }

  function maybeRead(): void {
    if (document.visibilityState !== "visible" || !list.stuck) return;
    const head = c.timeline.head;
    if (head > 0) state.markRead(room.id, head);
  }

  function openThread(seq: number): void {
    thread?.dispose();
    threadHost.hidden = false;
    thread = createThreadPanel(state, c, seq, ctx, () => {
      thread?.dispose();
      thread = null;
      threadHost.hidden = true;
      composer.focus();
    });
    threadHost.replaceChildren(thread.el);
    thread.focus();
  }

  const composer = createComposer({
    roomId: room.id,
    label: `Message ${title}`,
    placeholder: room.kind === "dm" ? `Message ${title}` : `Message #${title}`,
    send: (text, attachments) => {
      c.session.send(text, attachments.length > 0 ? { attachments } : {});
      list.scrollToBottom();
    },
    typing: () => c.session.typing(),
    editLast: () => {
      const rows = list.rows;
      for (let i = rows.length - 1; i >= 0; i--) {
        const row = rows[i];
        if (row?.kind !== "message") continue;
        const m = c.timeline.messages.get(row.seq);
        if (!m || m.author.id !== meId || m.deleted) continue;
        const el = list.scrollToKey(row.key);
        const text = el?.querySelector<HTMLElement>(".text");
        if (el && text) startEdit(m, ctx, el, text);
        return;
      }
    },
    remember: (users) => state.remember(users),
  });

  const leave = h("button", { type: "button", class: "ghost", title: "Leave this room" }, "Leave");
  leave.addEventListener("click", async () => {
    if (!confirm(`Leave ${title}?`)) return;
    await state.leave(room.id);
  });
  const header = h(
    "header",
    { class: "room-header" },
    h(
      "div",
      { class: "room-title" },
      h("h1", {}, room.kind === "dm" ? title : `# ${title}`),
      room.topic ? h("span", { class: "topic muted" }, room.topic) : null,
    ),
    room.kind === "dm" ? null : leave,
  );

  const main = h(
    "section",
    { class: "room-main", aria: { label: title } },
    header,
    viewport,
    typing,
    composer.el,
    announcer,
  );
  const el = h("div", { class: "room" }, main, threadHost);
  main.dataset.state = c.session.status.state;

  // Files dropped anywhere on the room go to the composer.
  el.addEventListener("dragover", (e) => {
    if (e.dataTransfer?.types.includes("Files")) {
      e.preventDefault();
      el.classList.add("dropping");
    }
  });
  el.addEventListener("dragleave", (e) => {
    if (e.target === el || !el.contains(e.relatedTarget as Node)) el.classList.remove("dropping");
  });
  el.addEventListener("drop", (e) => {
    el.classList.remove("dropping");
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length > 0) {
      e.preventDefault();
      composer.addFiles(files);
    }
  });

  // Keyboard: arrows move between messages in the list; Escape closes the thread.
  viewport.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowUp" && e.key !== "ArrowDown") return;
    const current = (document.activeElement as HTMLElement | null)?.closest<HTMLElement>(".msg");
    const all = [...viewport.querySelectorAll<HTMLElement>(".msg")].sort(
      (a, b) => Number(a.dataset.seq) - Number(b.dataset.seq),
    );
    if (all.length === 0) return;
    e.preventDefault();
    const i = current ? all.indexOf(current) : e.key === "ArrowUp" ? all.length : -1;
    const next = all[Math.max(0, Math.min(all.length - 1, i + (e.key === "ArrowUp" ? -1 : 1)))];
    next?.focus();
    next?.scrollIntoView({ block: "nearest" });
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && thread) {
      thread.close();
    }
  });

  const repaint = () => list.setRows(items());
  disposers.push(
    c.events.on("change", ({ structural, changed, live }) => {
      if (structural) repaint();
      for (const seq of changed) list.refresh(`m-${seq}`);
      thread?.refresh();
      for (const e of live) {
        if (e.kind === "message" && e.author.id !== meId)
          announcer.textContent = `New message from ${e.author.name}`;
      }
      if (live.length > 0) state.watchMore();
      maybeRead();
    }),
    c.events.on("status", (s) => {
      main.dataset.state = s.state;
      repaint();
    }),
    c.events.on("typing", (users) => {
      typing.textContent =
        users.length === 0
          ? ""
          : users.length === 1
            ? `${users[0]?.name} is typing…`
            : `${users.map((u) => u.name).join(", ")} are typing…`;
    }),
    state.events.on("presence", (userId) => {
      for (const av of viewport.querySelectorAll<HTMLElement>(".avatar")) {
        if (av.dataset.user === userId) av.className = `avatar presence-${state.presenceOf(userId)}`;
      }
    }),
  );
  const onVisibility = () => maybeRead();
  document.addEventListener("visibilitychange", onVisibility);
  disposers.push(() => document.removeEventListener("visibilitychange", onVisibility));

  // What waits in the outbox shows at once, even before the first page (offline after a reload).
  void c.session.restore().then(repaint);
  const ready = c.start().then(async () => {
    viewport.setAttribute("aria-busy", "false");
    repaint();
    if (focusSeq !== undefined) await jump(focusSeq);
    else list.scrollToBottom();
    maybeRead();
  });
  ready.catch((err: Error) => {
    viewport.setAttribute("aria-busy", "false");
    viewport.append(
      h("p", { class: "error empty", role: "alert" }, `Could not load this room: ${err.message}`),
    );
  });

  async function jump(seq: number): Promise<void> {
    await c.ensureLoaded(seq);
    repaint();
    const m = c.timeline.messages.get(seq);
    if (m?.threadRoot !== undefined) {
      const root = m.threadRoot;
      await c.ensureLoaded(root);
      repaint();
      list.scrollToKey(`m-${root}`);
      openThread(root);
      thread?.highlight(seq);
      return;
    }
    const el = list.scrollToKey(`m-${seq}`);
    el?.classList.add("highlight");
    el?.focus();
  }

  return {
    el,
    ready,
    focus: () => composer.focus(),
    jump,
    dispose: () => {
      for (const d of disposers) d();
      thread?.dispose();
    },
  };
}
