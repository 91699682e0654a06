/**
 * @module The people panel, for owners and admins: find someone in the directory and deactivate or
 * reactivate them (docs/protocol.md, "Deactivation"). Deactivating asks first: every session of
 * theirs ends at once, their tokens stop and they are refused from then on; reactivating lets them
 * sign in again. What the server refuses (an admin deactivating an owner) shows in the panel.
 */
import type { DirectoryUser } from "../../../protocol/index.ts";
import { api } from "../api.ts";
import { h } from "../dom.ts";
import type { AppState } from "../state.ts";
import { modal, searchDirectory } from "./dialogs.ts";

/** Whether the signed-in user may open the panel (the server checks every action again). */
export function managesPeople(state: AppState): boolean {
  return state.me.user.role === "owner" || state.me.user.role === "admin";
}

export function openPeople(state: AppState): void {
  const input = h("input", { type: "search", placeholder: "Name or email", aria: { label: "Find people" } });
  const list = h("ul", { class: "pick-list people", role: "list" });
  const { error } = modal("People", input, list);

  const row = (u: DirectoryUser): HTMLElement => {
    const status = h("span", { class: "muted" }, u.active ? ` ${u.role}` : ` ${u.role} · deactivated`);
    const manageable =
      u.id !== state.me.user.id && u.role !== "bot" && (u.role !== "owner" || state.me.user.role === "owner");
    const action = manageable
      ? h(
          "button",
          { type: "button", class: u.active ? "danger" : "" },
          u.active ? "Deactivate" : "Reactivate",
        )
      : null;
    action?.addEventListener("click", async () => {
      if (
        u.active &&
        !confirm(
          `Deactivate ${u.name}? Every session of theirs ends now, and they cannot sign in until reactivated.`,
        )
      )
        return;
      error.textContent = "";
      action.disabled = true;
      try {
        await (u.active ? api.deactivate(u.id) : api.reactivate(u.id));
        const next = row({ ...u, active: !u.active });
        li.replaceWith(next);
      } catch (err) {
        error.textContent = (err as Error).message;
        action.disabled = false;
      }
    });
    const li = h(
      "li",
      { class: "person-row", data: { user: u.id } },
      h("span", { class: "name" }, u.name),
      h("span", { class: "muted" }, ` ${u.email}`),
      status,
      action,
    );
    return li;
  };

  searchDirectory(input, error, (users) => list.replaceChildren(...users.map(row)));
}
