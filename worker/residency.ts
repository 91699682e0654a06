/**
 * @module Data residency: where a tenant's data lives. A tenant pinned to a jurisdiction (its
 * Access configuration's `jurisdiction`) gets every Durable Object created through the
 * jurisdiction-scoped namespace and every file in that jurisdiction's bucket. All objects and
 * buckets are reached through these two functions, so nothing of a pinned tenant lands elsewhere.
 */
import { authConfigOf } from "./auth/config.ts";

/** The R2 binding holding each jurisdiction's files. A tenant pinned to a jurisdiction missing here
 * is a configuration error caught at start-up (`checkResidency`). */
const BUCKETS: Partial<Record<DurableObjectJurisdiction, keyof Env>> = { eu: "FILES_EU" };

function jurisdictionOf(env: Env, tenantId: string): DurableObjectJurisdiction | undefined {
  return authConfigOf(env).tenants.find((t) => t.id === tenantId)?.jurisdiction;
}

/** The namespace through which a tenant's objects of one class are created and reached. */
export function tenantNamespace<T extends Rpc.DurableObjectBranded | undefined>(
  env: Env,
  namespace: DurableObjectNamespace<T>,
  tenantId: string,
): DurableObjectNamespace<T> {
  const jurisdiction = jurisdictionOf(env, tenantId);
  return jurisdiction ? namespace.jurisdiction(jurisdiction) : namespace;
}

/** The bucket a tenant's files go to. */
export function filesBucket(env: Env, tenantId: string): R2Bucket {
  const jurisdiction = jurisdictionOf(env, tenantId);
  if (!jurisdiction) return env.FILES;
  const binding = BUCKETS[jurisdiction];
  if (!binding) throw new Error(`no bucket for jurisdiction ${jurisdiction}`);
  return env[binding] as R2Bucket;
}

/** Fails start-up when a tenant is pinned to a jurisdiction that has no bucket. */
export function checkResidency(env: Env): void {
  for (const tenant of authConfigOf(env).tenants) {
    if (tenant.jurisdiction && !BUCKETS[tenant.jurisdiction]) {
      throw new Error(
        `tenant ${tenant.id} is pinned to ${tenant.jurisdiction}, which has no files bucket configured`,
      );
    }
  }
}
