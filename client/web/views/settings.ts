/**
 * @module The notification settings panel: push on this device (permission asked only from the
 * button), what to be told of by default, a pause, the open room's own setting, a test
 * notification, and the devices that receive notifications. Preferences are the server's and the
 * same on every device; a change made elsewhere while the panel is open shows in it.
 */
import type { NotifyMode, NotifyPrefs } from "../../../protocol/notify.ts";
import { api } from "../api.ts";
import { h } from "../dom.ts";
import type { Notifications, PushState } from "../notifications.ts";
import type { AppState } from "../state.ts";
import { modal } from "./dialogs.ts";

const MODES: [NotifyMode, string][] = [
  ["all", "Every message"],
  ["mentions", "Direct messages, mentions and threads"],
  ["nothing", "Nothing"],
];
const HOUR = 3_600_000;

function select(label: string, options: [string, string][], value: string): HTMLSelectElement {
  const el = h("select", { aria: { label } });
  for (const [v, text] of options) {
    const opt = h("option", {}, text);
    opt.value = v;
    el.append(opt);
  }
  el.value = value;
  return el;
}

function pushText(s: PushState): string {
  switch (s) {
    case "unsupported":
      return "This browser cannot receive notifications.";
    case "denied":
      return "Notifications are blocked for this site in the browser's settings.";
    case "off":
      return "Off on this device.";
    case "on":
      return "On for this device.";
  }
}

export async function openSettings(state: AppState, notifications: Notifications): Promise<void> {
  const status = h("p", { class: "muted", role: "status" });
  const toggle = h("button", { type: "button", class: "primary" });
  const test = h("button", { type: "button" }, "Send a test notification");
  const defaultMode = select("Notify me about", MODES, "mentions");
  const pause = select(
    "Pause notifications",
    [
      ["0", "Not paused"],
      ["1", "Paused for an hour"],
      ["8", "Paused for 8 hours"],
      ["24", "Paused for a day"],
    ],
    "0",
  );
  const roomId = state.view.kind === "room" ? state.view.roomId : null;
  const room = roomId ? state.rooms.get(roomId) : undefined;
  const roomMode = select(
    "This room",
    [["default", "As by default"], ...MODES.map(([m, t]): [string, string] => [m, t])],
    "default",
  );
  const mute = h("input", { type: "checkbox" });
  const devices = h("ul", { class: "devices" });
  const sections: HTMLElement[] = [
    h("section", {}, h("h3", {}, "This device"), status, h("div", { class: "buttons" }, toggle, test)),
    h("label", {}, "Notify me about", defaultMode),
    h("label", {}, "Pause", pause),
  ];
  if (room)
    sections.push(
      h("label", {}, `In ${state.roomTitle(room)}`, roomMode),
      h("label", { class: "check" }, mute, " Mute this room for 8 hours"),
    );
  sections.push(h("section", {}, h("h3", {}, "Devices"), devices));
  const { dialog, error } = modal("Notifications", h("div", { class: "settings" }, ...sections));

  const showPush = () => {
    const s = notifications.state();
    status.textContent = pushText(s);
    toggle.textContent = s === "on" ? "Turn off on this device" : "Turn on for this device";
    toggle.disabled = s === "unsupported" || s === "denied";
  };
  const showPrefs = (prefs: NotifyPrefs) => {
    defaultMode.value = prefs.default;
    const left = (prefs.pausedUntil ?? 0) - Date.now();
    pause.value = left <= 0 ? "0" : left <= HOUR ? "1" : left <= 8 * HOUR ? "8" : "24";
    if (roomId) {
      const own = prefs.rooms[roomId];
      roomMode.value = own?.mode ?? "default";
      mute.checked = (own?.muteUntil ?? 0) > Date.now();
    }
  };
  const showDevices = async () => {
    const { subscriptions } = await api.subscriptions();
    devices.replaceChildren(
      ...(subscriptions.length === 0
        ? [h("li", { class: "muted" }, "None yet.")]
        : subscriptions.map((s) =>
            h(
              "li",
              {},
              `${s.userAgent ?? new URL(s.service).hostname} · since ${new Date(s.createdAt).toLocaleDateString()}`,
              s.failures > 0 ? h("span", { class: "error" }, ` · ${s.failures} not delivered`) : "",
            ),
          )),
    );
  };
  const attempt = async (fn: () => Promise<unknown>) => {
    error.textContent = "";
    try {
      await fn();
    } catch (err) {
      error.textContent = (err as Error).message;
    }
  };

  showPush();
  const off = state.events.on("prefs", showPrefs);
  dialog.addEventListener("close", () => off());
  await attempt(async () => {
    showPrefs(await api.notifyPrefs());
    await showDevices();
  });

  toggle.addEventListener("click", () =>
    attempt(async () => {
      if (notifications.state() === "on") await notifications.disable();
      else await notifications.enable();
      showPush();
      await showDevices();
    }),
  );
  test.addEventListener("click", () =>
    attempt(async () => {
      const { devices: n } = await api.testPush();
      status.textContent =
        n === 0 ? "No device receives notifications yet." : `Sent to ${n} device${n === 1 ? "" : "s"}.`;
    }),
  );
  defaultMode.addEventListener("change", () =>
    attempt(async () => showPrefs(await api.setNotifyPrefs({ default: defaultMode.value as NotifyMode }))),
  );
  pause.addEventListener("change", () =>
    attempt(async () => {
      const hours = Number(pause.value);
      showPrefs(await api.setNotifyPrefs({ pausedUntil: hours === 0 ? null : Date.now() + hours * HOUR }));
    }),
  );
  if (roomId) {
    roomMode.addEventListener("change", () =>
      attempt(async () => {
        const mode = roomMode.value === "default" ? null : (roomMode.value as NotifyMode);
        showPrefs(await api.setRoomNotify(roomId, { mode }));
      }),
    );
    mute.addEventListener("change", () =>
      attempt(async () => {
        showPrefs(
          await api.setRoomNotify(roomId, { muteUntil: mute.checked ? Date.now() + 8 * HOUR : null }),
        );
      }),
    );
  }
}
