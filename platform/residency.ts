/**
 * @module Data residency: where a tenant's data lives. A tenant pinned to a jurisdiction
 * (TENANT_JURISDICTIONS, or its Access configuration's `jurisdiction`) gets every Durable Object
 * through the jurisdiction-scoped namespace, every file in that jurisdiction's bucket, and its whole
 * directory (the tenant, its users, rooms, memberships, tokens, audit log, attachment and export
 * records, dead letters) in that jurisdiction's D1 database, its room events through that
 * jurisdiction's queue, and its history in that jurisdiction's history shards. Every namespace, bucket and database of a tenant is chosen here, so nothing of a
 * pinned tenant lands elsewhere.
 */
import { perEnv } from "../config/per-env.ts";
import { TENANT_ID } from "../protocol/index.ts";
import { authConfigOf, JURISDICTIONS } from "./auth-config.ts";

export type Jurisdiction = DurableObjectJurisdiction;

/** The names of the bindings of one type. */
type BindingOf<T> = { [K in keyof Env]: Env[K] extends T ? K : never }[keyof Env];

/** Each jurisdiction's stores besides the default ones (`FILES`, `DB`). A tenant pinned to a
 * jurisdiction missing here, or whose binding the deployment lacks, is a configuration error caught
 * at start-up (`checkResidency`). Adding one: its bucket and database in wrangler.toml (every
 * environment), a line here, docs/deploy.md. */
const STORES: Partial<
  Record<
    Jurisdiction,
    {
      files: BindingOf<R2Bucket>;
      directory: BindingOf<D1Database>;
      roomEvents: BindingOf<Queue>;
      notify: BindingOf<Queue>;
    }
  >
> = { eu: { files: "FILES_EU", directory: "DB_EU", roomEvents: "ROOM_EVENTS_EU", notify: "NOTIFY_EU" } };

class ResidencyError extends Error {}

/** The top-level keys of a JSON object's text, repeats included: JSON.parse keeps only the last
 * value of a repeated key, which would silently drop one of two pinnings. `text` is valid JSON. */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  const colon = /\s*:/y;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      colon.lastIndex = end + 1;
      if (depth === 1 && colon.test(text)) keys.push(JSON.parse(text.slice(i, end + 1)) as string);
      i = end;
    } else if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") depth--;
  }
  return keys;
}

/** Parses TENANT_JURISDICTIONS: a JSON object `{"<tenant id>": "<jurisdiction>"}` (empty: none). */
export function parseTenantJurisdictions(raw: string): Map<string, Jurisdiction> {
  const pinned = new Map<string, Jurisdiction>();
  if (raw.trim() === "") return pinned;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ResidencyError("TENANT_JURISDICTIONS must be JSON");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new ResidencyError('TENANT_JURISDICTIONS must be a JSON object: {"<tenant id>":"eu"}');
  const keys = topLevelKeys(raw);
  for (const [i, key] of keys.entries()) {
    if (keys.indexOf(key) !== i) throw new ResidencyError(`TENANT_JURISDICTIONS names tenant ${key} twice`);
  }
  for (const [tenant, jurisdiction] of Object.entries(parsed)) {
    if (!TENANT_ID.test(tenant))
      throw new ResidencyError(`TENANT_JURISDICTIONS: ${JSON.stringify(tenant)} is not a tenant id`);
    if (typeof jurisdiction !== "string" || !JURISDICTIONS.has(jurisdiction)) {
      throw new ResidencyError(
        `TENANT_JURISDICTIONS.${tenant} must be one of ${[...JURISDICTIONS].join(", ")}`,
      );
    }
    pinned.set(tenant, jurisdiction as Jurisdiction);
  }
  return pinned;
}

/** Every pinned tenant and its jurisdiction, from both places a pinning may be written. */
function readResidency(env: Env): ReadonlyMap<string, Jurisdiction> {
  const pinned = parseTenantJurisdictions(env.TENANT_JURISDICTIONS ?? "");
  for (const tenant of authConfigOf(env).tenants) {
    if (!tenant.jurisdiction) continue;
    const other = pinned.get(tenant.id);
    if (other !== undefined && other !== tenant.jurisdiction) {
      throw new ResidencyError(
        `tenant ${tenant.id} is pinned to ${other} by TENANT_JURISDICTIONS and to ${tenant.jurisdiction} by ACCESS_TENANTS`,
      );
    }
    pinned.set(tenant.id, tenant.jurisdiction);
  }
  return pinned;
}

const residencyOf = perEnv(readResidency);

/** The jurisdiction a tenant is pinned to, or undefined: the default one. */
export function jurisdictionOf(env: Env, tenantId: string): Jurisdiction | undefined {
  return residencyOf(env).get(tenantId);
}

function storesOf(jurisdiction: Jurisdiction) {
  const stores = STORES[jurisdiction];
  // checkResidency refused to start with a tenant pinned to such a jurisdiction.
  if (!stores) throw new Error(`no stores for jurisdiction ${jurisdiction}`);
  return stores;
}

/** What workerd (wrangler dev, the tests) says when asked for a jurisdiction: it has none. */
const NO_JURISDICTIONS_LOCALLY = "Jurisdiction restrictions are not implemented in workerd";

/** The namespace through which a tenant's objects of one class are created and reached. */
export function tenantNamespace<T extends Rpc.DurableObjectBranded | undefined>(
  env: Env,
  namespace: DurableObjectNamespace<T>,
  tenantId: string,
): DurableObjectNamespace<T> {
  const jurisdiction = jurisdictionOf(env, tenantId);
  if (!jurisdiction) return namespace;
  try {
    return namespace.jurisdiction(jurisdiction);
  } catch (err) {
    // Only workerd refuses, and there every store is this machine's disk (its EU bucket and EU
    // database are local files too), so a pinned tenant's objects run in the plain namespace; their
    // names start with the tenant id, so they meet no other tenant's. The deployed runtime scopes
    // the namespace; any other failure is a real one.
    if (err instanceof Error && err.message.includes(NO_JURISDICTIONS_LOCALLY)) return namespace;
    throw err;
  }
}

/** The bucket a tenant's files go to. */
export function filesBucket(env: Env, tenantId: string): R2Bucket {
  const jurisdiction = jurisdictionOf(env, tenantId);
  return jurisdiction ? env[storesOf(jurisdiction).files] : env.FILES;
}

/** The queue a tenant's room events (message text) take on their way to its D1 history shards. */
export function roomEventsQueue(env: Env, tenantId: string): Queue {
  const jurisdiction = jurisdictionOf(env, tenantId);
  return jurisdiction ? env[storesOf(jurisdiction).roomEvents] : env.ROOM_EVENTS;
}

/** The queue a tenant's notifications (previews are message text) take to the push services. */
export function notifyQueue(env: Env, tenantId: string): Queue {
  const jurisdiction = jurisdictionOf(env, tenantId);
  return jurisdiction ? env[storesOf(jurisdiction).notify] : env.NOTIFY;
}

/** The directory database of a jurisdiction (undefined: the default one). */
export function directoryIn(env: Env, jurisdiction: Jurisdiction | undefined): D1Database {
  return jurisdiction ? env[storesOf(jurisdiction).directory] : env.DB;
}

/** The D1 database holding a tenant's directory: every D1 access of a tenant's data goes here. */
export function directoryDb(env: Env, tenantId: string): D1Database {
  return directoryIn(env, jurisdictionOf(env, tenantId));
}

/** A history shard: a D1 database bound as HISTORY_<n> (default jurisdiction) or HISTORY_<J>_<n>
 * (e.g. HISTORY_EU_0). Which of a jurisdiction's shards holds a tenant's history, and when, is
 * worker/history/placement.ts's. */
export interface HistoryShard {
  name: string;
  db: D1Database;
}

const HISTORY_BINDING = /^HISTORY_(?:([A-Z]+)_)?(\d+)$/;

/** Every history shard, by jurisdiction (undefined: the default), in binding order: found by name,
 * so adding one is a binding in wrangler.toml and nothing else. */
const historyOf = perEnv((env: Env): Map<Jurisdiction | undefined, HistoryShard[]> => {
  const found = new Map<Jurisdiction | undefined, (HistoryShard & { n: number })[]>();
  for (const [name, value] of Object.entries(env)) {
    const m = HISTORY_BINDING.exec(name);
    if (!m || typeof value !== "object" || value === null) continue;
    const jurisdiction = m[1] === undefined ? undefined : (m[1].toLowerCase() as Jurisdiction);
    found.set(jurisdiction, [
      ...(found.get(jurisdiction) ?? []),
      { name, db: value as D1Database, n: Number(m[2]) },
    ]);
  }
  return new Map(
    [...found].map(([j, shards]) => [
      j,
      shards.sort((a, b) => a.n - b.n).map(({ name, db }) => ({ name, db })),
    ]),
  );
});

/** The history shards of a jurisdiction (undefined: the default one). */
export function historyShardsIn(env: Env, jurisdiction: Jurisdiction | undefined): HistoryShard[] {
  return historyOf(env).get(jurisdiction) ?? [];
}

/** Every history shard this deployment binds, with its jurisdiction (the window's cleanup). */
export function allHistoryShards(env: Env): (HistoryShard & { jurisdiction: Jurisdiction | undefined })[] {
  return [...historyOf(env)].flatMap(([jurisdiction, shards]) => shards.map((s) => ({ ...s, jurisdiction })));
}

/** The history shard named `name` of a tenant's jurisdiction: never another jurisdiction's, even if
 * a placement row said so. */
export function historyShard(env: Env, tenantId: string, name: string): HistoryShard {
  const shard = historyShardsIn(env, jurisdictionOf(env, tenantId)).find((s) => s.name === name);
  if (!shard)
    throw new Error(`tenant ${tenantId} is placed on ${name}, not a history shard of its jurisdiction`);
  return shard;
}

/** Every directory database this deployment binds, the default one first: for the rare lookup that
 * cannot know its tenant first (an API token issued before tokens named their jurisdiction), and
 * for applying migrations to all of them. */
export function directories(env: Env): { jurisdiction: Jurisdiction | undefined; db: D1Database }[] {
  const all: { jurisdiction: Jurisdiction | undefined; db: D1Database }[] = [
    { jurisdiction: undefined, db: env.DB },
  ];
  for (const [jurisdiction, stores] of Object.entries(STORES)) {
    const db: D1Database | undefined = env[stores.directory];
    if (db) all.push({ jurisdiction: jurisdiction as Jurisdiction, db });
  }
  return all;
}

/** Fails start-up on a malformed or contradictory pinning, and when a tenant is pinned to a
 * jurisdiction that has no files bucket, no directory database or no history shard. */
export function checkResidency(env: Env): void {
  if (historyShardsIn(env, undefined).length === 0)
    throw new ResidencyError("this deployment binds no history shard (HISTORY_0, …)");
  for (const [tenant, jurisdiction] of residencyOf(env)) {
    const stores = STORES[jurisdiction];
    if (!stores) {
      throw new ResidencyError(
        `tenant ${tenant} is pinned to ${jurisdiction}, which has no files bucket and directory database configured`,
      );
    }
    for (const binding of [stores.files, stores.directory, stores.roomEvents, stores.notify]) {
      if (!env[binding]) {
        throw new ResidencyError(
          `tenant ${tenant} is pinned to ${jurisdiction}, but this deployment does not bind ${binding}`,
        );
      }
    }
    if (historyShardsIn(env, jurisdiction).length === 0) {
      throw new ResidencyError(
        `tenant ${tenant} is pinned to ${jurisdiction}, but this deployment binds no history shard there (HISTORY_${jurisdiction.toUpperCase()}_0, …)`,
      );
    }
  }
}
