/**
 * @module The connection banner: offline with the number of queued messages (at once), connecting
 * (only if it lasts: opening a room connects briefly, which is not news), and a short "back online"
 * after either was shown. Hidden while all is well. Beside it, notices that are not about the
 * connection ("You were removed from #room"), shown until dismissed or replaced by the next, with
 * a button when there is something to do ("Sign in again").
 */
import { h } from "../dom.ts";
import type { AppState, Connection } from "../state.ts";

const BACK_ONLINE_MS = 2_500;
/** A connection attempt shorter than this never shows. */
const CONNECTING_GRACE_MS = 1_500;

export function createBanner(state: AppState) {
  const el = h("div", { class: "banner", role: "status", aria: { live: "polite" }, hidden: true });
  let shownTrouble = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const later = (ms: number, fn: () => void) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
  const display = (kind: string, text: string) => {
    el.hidden = false;
    el.dataset.state = kind;
    el.textContent = text;
  };
  const show = (c: Connection) => {
    const queued = c.queued > 0 ? ` · ${c.queued} message${c.queued === 1 ? "" : "s"} queued` : "";
    if (c.state === "offline") {
      if (timer) clearTimeout(timer);
      timer = null;
      shownTrouble = true;
      display("offline", `You are offline${queued}. Messages will be sent when you are back.`);
    } else if (c.state === "connecting") {
      const text = `Connecting…${queued}`;
      if (shownTrouble) display("connecting", text);
      else if (!timer)
        later(CONNECTING_GRACE_MS, () => {
          const now = state.connection();
          if (now.state === "online") return;
          shownTrouble = true;
          show(now);
        });
    } else {
      if (timer) clearTimeout(timer);
      timer = null;
      if (shownTrouble) {
        shownTrouble = false;
        display("online", "Back online");
        later(BACK_ONLINE_MS, () => {
          el.hidden = true;
        });
      }
    }
  };
  state.events.on("connection", show);
  return { el };
}

export function createNotice(state: AppState) {
  const text = h("span", { class: "notice-text" });
  const action = h("button", { type: "button", class: "primary", hidden: true });
  const dismiss = h("button", { type: "button", class: "ghost", aria: { label: "Dismiss" } }, "Dismiss");
  const el = h(
    "div",
    { class: "notice", role: "status", aria: { live: "polite" }, hidden: true },
    text,
    action,
    dismiss,
  );
  let run: (() => void) | null = null;
  action.addEventListener("click", () => run?.());
  dismiss.addEventListener("click", () => {
    el.hidden = true;
  });
  state.events.on("notice", (n) => {
    text.textContent = n.text;
    run = n.action?.run ?? null;
    action.textContent = n.action?.label ?? "";
    action.hidden = n.action === undefined;
    el.hidden = false;
  });
  return { el };
}
