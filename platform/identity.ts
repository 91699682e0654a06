/**
 * @module Who a request acts for, once the worker has verified its token (worker/auth) and found the
 * person in the directory: what every handler reads, and what the worker hands to the objects.
 */
import type { Role } from "../protocol/index.ts";

export interface Identity {
  userId: string;
  email: string;
  name: string;
  role: Role;
  tenantId: string;
  tenantName: string;
  /** An API token limited to some rooms: every other room answers 404. */
  roomScope?: string[];
}
