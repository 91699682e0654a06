/**
 * @module The search view: full-text search over the rooms the user can read, with filters (room,
 * author, date range) and highlighted snippets. The server sends snippets HTML-escaped with
 * <mark> around matches; they are still rebuilt here as text nodes and <mark> elements, never
 * assigned as HTML.
 */
import type { SearchHit } from "../../../protocol/index.ts";
import { api } from "../api.ts";
import { formatTime, h } from "../dom.ts";
import type { AppState } from "../state.ts";

const ENTITIES: Record<string, string> = {
  "&amp;": "&",
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&#39;": "'",
};

/** The server's escaped snippet as nodes: text, with <mark> elements for the matches. */
export function snippetNodes(snippet: string): Node[] {
  const out: Node[] = [];
  let marked = false;
  for (const part of snippet.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) {
      const text = part.replace(/&(amp|lt|gt|quot|#39);/g, (e) => ENTITIES[e] ?? e);
      out.push(marked ? h("mark", {}, text) : document.createTextNode(text));
    }
  }
  return out;
}

export function createSearchView(
  state: AppState,
  initial: string,
  open: (roomId: string, seq: number) => void,
) {
  const q = h("input", { type: "search", aria: { label: "Search for" } });
  q.value = initial;
  const room = h(
    "select",
    { aria: { label: "In room" } },
    h("option", { attrs: { value: "" } }, "All rooms"),
  );
  for (const r of [...state.rooms.values()].filter((r) => r.joined)) {
    room.append(h("option", { attrs: { value: r.id } }, state.roomTitle(r)));
  }
  const from = h("input", { type: "date", aria: { label: "From date" } });
  const to = h("input", { type: "date", aria: { label: "To date" } });
  const mine = h("input", { type: "checkbox" });
  const results = h("ol", { class: "hits", aria: { label: "Results" } });
  const summary = h("p", { class: "muted", role: "status" });
  const form = h(
    "form",
    { class: "search-form", role: "search" },
    q,
    room,
    h("label", {}, "From ", from),
    h("label", {}, "To ", to),
    h("label", { class: "check" }, mine, " Only mine"),
    h("button", { type: "submit", class: "primary" }, "Search"),
  );
  const el = h(
    "section",
    { class: "search-view", aria: { label: "Search" } },
    h("h1", {}, "Search"),
    form,
    summary,
    results,
  );

  const dayStart = (value: string) => (value ? new Date(`${value}T00:00:00`).getTime() : undefined);

  async function run(): Promise<void> {
    const text = q.value.trim();
    if (!text) return;
    summary.textContent = "Searching…";
    try {
      const toDay = dayStart(to.value);
      const { hits } = await api.search({
        q: text,
        ...(room.value ? { room: room.value } : {}),
        ...(mine.checked ? { author: state.me.user.id } : {}),
        ...(from.value ? { from: dayStart(from.value) } : {}),
        ...(toDay !== undefined ? { to: toDay + 86_400_000 - 1 } : {}),
      });
      summary.textContent = `${hits.length} result${hits.length === 1 ? "" : "s"}`;
      results.replaceChildren(...hits.map(hit));
    } catch (err) {
      summary.textContent = (err as Error).message;
      results.replaceChildren();
    }
  }

  function hit(x: SearchHit): HTMLElement {
    const r = state.rooms.get(x.room);
    const button = h(
      "button",
      { type: "button", class: "hit" },
      h(
        "div",
        { class: "hit-meta" },
        h("strong", {}, x.author.name),
        h(
          "span",
          { class: "muted" },
          ` in ${r ? state.roomTitle(r) : "a room"} · ${new Date(x.ts).toLocaleDateString()} ${formatTime(x.ts)}`,
        ),
      ),
      h("div", { class: "snippet" }, ...snippetNodes(x.snippet)),
    );
    button.addEventListener("click", () => open(x.room, x.seq));
    return h("li", {}, button);
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void run();
  });
  void run();
  return { el, focus: () => q.focus() };
}
