/**
 * @module The routes' one admin guard: owners and admins administer a tenant (`isAdmin` in
 * protocol/, the same rule the room applies to deletions).
 */
import type { Identity } from "../../platform/identity.ts";
import { isAdmin } from "../../protocol/index.ts";
import { ApiError } from "../errors.ts";

/** Refuses a caller who does not administer the tenant with 403 `forbidden`, "only admins <what>",
 * before the route has read or changed anything. */
export function requireAdmin(me: Identity, what: string): void {
  if (!isAdmin(me.role)) throw new ApiError("forbidden", `only admins ${what}`);
}
