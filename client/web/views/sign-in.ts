/**
 * @module Sign-in. Behind Cloudflare Access the user arrives signed in and never sees this. Locally
 * (`npm start`, dev mode) it is the dev login: any email, name and tenant, no password.
 */
import { TENANT_ID_PATTERN } from "../../../protocol/index.ts";
import { HttpError } from "../../sdk/index.ts";
import { api } from "../api.ts";
import { h } from "../dom.ts";

export function createSignIn(onSignedIn: () => void): HTMLElement {
  const email = h("input", {
    type: "email",
    aria: { label: "Email" },
    attrs: { required: "", autocomplete: "email" },
  });
  const name = h("input", {
    type: "text",
    aria: { label: "Name" },
    attrs: { required: "", autocomplete: "name" },
  });
  const tenant = h("input", {
    type: "text",
    aria: { label: "Workspace" },
    attrs: { required: "", pattern: TENANT_ID_PATTERN, value: "acme" },
  });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "sign-in-form" },
    h("h1", {}, "Sign in to Parley"),
    h("p", { class: "muted" }, "Development sign-in: in production your company's SSO signs you in."),
    h("label", {}, "Email", email),
    h("label", {}, "Name", name),
    h("label", {}, "Workspace", tenant),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api.devLogin({ email: email.value.trim(), name: name.value.trim(), tenant: tenant.value.trim() });
      onSignedIn();
    } catch (err) {
      error.textContent =
        err instanceof HttpError && err.status === 404
          ? "Sign-in goes through your company's SSO (Cloudflare Access). Reload the page to sign in."
          : (err as Error).message;
    }
  });
  queueMicrotask(() => email.focus());
  return h("main", { class: "sign-in" }, form);
}
