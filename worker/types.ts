/** @module The Hono environment every route shares: bindings from `wrangler types`, per-request variables. */
import type { Identity } from "../platform/identity.ts";

export interface AppEnv {
  Bindings: Env;
  /** `requestId`: set first, by worker/observability/request.ts; `identity`: by requireIdentity,
   * with `tokenExpiresAt` (ms) when the credential is a token that expires (Access, dev). */
  Variables: { identity: Identity; requestId: string; tokenExpiresAt?: number };
}
