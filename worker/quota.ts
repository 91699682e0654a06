/**
 * @module Per-user quotas from the routes (durable-objects/quota.ts keeps the counts): each costly
 * request asks first, and a refusal is thrown as `rate_limited` with `retryAfter` (and HTTP
 * `Retry-After`) before the route has changed anything.
 */

import type { Identity } from "../platform/identity.ts";
import { ApiError } from "./errors.ts";
import { type QuotaKind, quotaStub } from "./stubs.ts";

/** Takes one room creation or search from the caller's quota, or throws the refusal. */
export async function spend(env: Env, me: Identity, kind: QuotaKind): Promise<void> {
  const result = await quotaStub(env, me.tenantId, me.userId).take(kind);
  if (!result.ok) throw ApiError.from(result);
}

/** Counts an upload of `bytes` against the caller's day before it is stored. Returns what gives it
 * back if the upload then fails; throws the refusal. */
export async function reserveUpload(env: Env, me: Identity, bytes: number): Promise<() => Promise<void>> {
  const stub = quotaStub(env, me.tenantId, me.userId);
  const result = await stub.reserveUpload(bytes);
  if (!result.ok) throw ApiError.from(result);
  return () => stub.releaseUpload(bytes, result.day);
}
