/**
 * @module The connection banner: connecting, offline with the number of queued messages, and a
 * short "back online" once everything is connected again. Hidden while all is well.
 */
import { h } from "../dom.ts";
import type { AppState, Connection } from "../state.ts";

const BACK_ONLINE_MS = 2_500;

export function createBanner(state: AppState) {
  const el = h("div", { class: "banner", role: "status", aria: { live: "polite" }, hidden: true });
  let was: Connection["state"] = "online";
  let everOnline = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const show = (c: Connection) => {
    if (timer) clearTimeout(timer);
    timer = null;
    const queued = c.queued > 0 ? ` · ${c.queued} message${c.queued === 1 ? "" : "s"} queued` : "";
    if (c.state === "offline") {
      el.hidden = false;
      el.dataset.state = "offline";
      el.textContent = `You are offline${queued}. Messages will be sent when you are back.`;
    } else if (c.state === "connecting") {
      el.hidden = false;
      el.dataset.state = "connecting";
      el.textContent = `Connecting…${queued}`;
    } else if (was !== "online" && everOnline) {
      el.hidden = false;
      el.dataset.state = "online";
      el.textContent = "Back online";
      timer = setTimeout(() => {
        el.hidden = true;
      }, BACK_ONLINE_MS);
    } else if (el.dataset.state !== "online") {
      el.hidden = true;
    }
    if (c.state === "online") {
      if (!everOnline) el.hidden = true;
      everOnline = true;
    }
    was = c.state;
  };
  state.events.on("connection", show);
  return { el };
}
