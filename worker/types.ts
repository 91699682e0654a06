/** @module The Hono environment every route shares: bindings from `wrangler types`, per-request variables. */
import type { Identity } from "../platform/identity.ts";

export interface AppEnv {
  Bindings: Env;
  /** `requestId`: set first, by worker/observability/request.ts; `identity`: by requireIdentity. */
  Variables: { identity: Identity; requestId: string };
}
