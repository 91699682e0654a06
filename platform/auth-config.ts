/**
 * @module How this deployment authenticates: `AUTH_MODE` (dev or access), each tenant's Cloudflare
 * Access application (team domain + AUD tag, admins, data residency), and the exact origins allowed
 * to open WebSockets. Read once per isolate; a configuration mistake throws, so a misconfigured
 * deployment fails at start-up (worker/index.ts) instead of running open or half-configured.
 */
import { perEnv } from "../config/per-env.ts";
import { TENANT_ID } from "../protocol/index.ts";

export type AuthMode = "dev" | "access";

export interface AccessTenant {
  /** Parley's tenant id: the prefix of every object name and key of this tenant. */
  id: string;
  name: string;
  /** `https://<team>.cloudflareaccess.com`: the token's `iss`, and where its keys are published. */
  teamDomain: string;
  /** The Access application's AUD tag: the token's `aud` must contain it. */
  aud: string;
  /** Emails that own the tenant (in access mode nobody becomes owner any other way). */
  owners: string[];
  /** Emails that are tenant admins, and identity-provider groups whose members are. */
  admins: string[];
  adminGroups: string[];
  /** Email domains whose people arrive as guests (provisioned just in time; a role given later, by
   * an admin or a group, stands). */
  guestDomains: string[];
  /** Pin the tenant's Durable Objects, files and directory to a jurisdiction (e.g. "eu"); also
   * possible in TENANT_JURISDICTIONS (platform/residency.ts). */
  jurisdiction?: DurableObjectJurisdiction;
}

export interface AuthConfig {
  mode: AuthMode;
  tenants: AccessTenant[];
  /** Exact origins (scheme://host[:port]) allowed to open WebSockets with a browser. Empty: only
   * the deployment's own origin (that of the request). */
  allowedOrigins: string[];
  devKey: string;
}

export interface AuthVars {
  AUTH_MODE: string;
  ACCESS_TENANTS: string;
  ALLOWED_ORIGINS: string;
  DEV_JWT_PRIVATE_JWK?: string;
}

const TEAM_DOMAIN = /^https:\/\/[a-z0-9-]{1,63}\.cloudflareaccess\.com$/;
const AUD = /^[A-Za-z0-9]{16,128}$/;
/** The jurisdictions a tenant may be pinned to (platform/residency.ts says which have their stores). */
export const JURISDICTIONS: ReadonlySet<string> = new Set<DurableObjectJurisdiction>([
  "eu",
  "fedramp",
  "fedramp-high",
]);

class ConfigError extends Error {}

function strings(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string"))
    throw new ConfigError(`${what} must be an array of strings`);
  return v;
}

/** Parses ACCESS_TENANTS: a JSON array of `{id, name?, teamDomain, aud, owners?, admins?, adminGroups?,
 * guestDomains?, jurisdiction?}`. */
export function parseAccessTenants(raw: string): AccessTenant[] {
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    throw new ConfigError("ACCESS_TENANTS must be JSON");
  }
  if (!Array.isArray(list) || list.length === 0)
    throw new ConfigError("ACCESS_TENANTS must list at least one tenant");
  const seen = new Set<string>();
  return list.map((t: Record<string, unknown>, i) => {
    const where = `ACCESS_TENANTS[${i}]`;
    if (typeof t !== "object" || t === null) throw new ConfigError(`${where} must be an object`);
    if (typeof t.id !== "string" || !TENANT_ID.test(t.id))
      throw new ConfigError(`${where}.id must match ${TENANT_ID}`);
    const teamDomain = typeof t.teamDomain === "string" ? t.teamDomain.replace(/\/+$/, "").toLowerCase() : "";
    if (!TEAM_DOMAIN.test(teamDomain))
      throw new ConfigError(`${where}.teamDomain must be https://<team>.cloudflareaccess.com`);
    if (typeof t.aud !== "string" || !AUD.test(t.aud))
      throw new ConfigError(`${where}.aud must be the application's AUD tag`);
    const key = `${teamDomain} ${t.aud}`;
    if (seen.has(key) || seen.has(t.id))
      throw new ConfigError(`${where} repeats a tenant id or an Access application`);
    seen.add(key);
    seen.add(t.id);
    if (t.jurisdiction !== undefined && !JURISDICTIONS.has(t.jurisdiction as string)) {
      throw new ConfigError(`${where}.jurisdiction must be one of ${[...JURISDICTIONS].join(", ")}`);
    }
    const tenant: AccessTenant = {
      id: t.id,
      name: typeof t.name === "string" && t.name.trim() !== "" ? t.name.trim() : t.id,
      teamDomain,
      aud: t.aud,
      owners: strings(t.owners, `${where}.owners`).map((e) => e.toLowerCase()),
      admins: strings(t.admins, `${where}.admins`).map((e) => e.toLowerCase()),
      adminGroups: strings(t.adminGroups, `${where}.adminGroups`),
      guestDomains: strings(t.guestDomains, `${where}.guestDomains`).map((d) => d.toLowerCase()),
    };
    for (const d of tenant.guestDomains)
      if (!/^[a-z0-9-]+(\.[a-z0-9-]+)+$/.test(d))
        throw new ConfigError(`${where}.guestDomains: ${JSON.stringify(d)} is not a domain name`);
    if (t.jurisdiction !== undefined) tenant.jurisdiction = t.jurisdiction as DurableObjectJurisdiction;
    return tenant;
  });
}

function parseOrigins(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => {
      let url: URL;
      try {
        url = new URL(s);
      } catch {
        throw new ConfigError(`ALLOWED_ORIGINS: ${JSON.stringify(s)} is not an origin`);
      }
      const plainHost = /^[a-z0-9.-]+$/.test(url.hostname) || /^\[[0-9a-f:.]+\]$/.test(url.hostname);
      if (!plainHost || url.origin !== s.replace(/\/+$/, "")) {
        throw new ConfigError(
          `ALLOWED_ORIGINS: ${JSON.stringify(s)} is not an exact origin (no wildcards, no path)`,
        );
      }
      return url.origin;
    });
}

/** Reads and checks the configuration; throws a message that names the variable at fault. */
export function readAuthConfig(vars: AuthVars): AuthConfig {
  const mode = vars.AUTH_MODE;
  if (mode !== "dev" && mode !== "access")
    throw new ConfigError(`AUTH_MODE must be "dev" or "access", got ${JSON.stringify(mode)}`);
  const allowedOrigins = parseOrigins(vars.ALLOWED_ORIGINS ?? "");
  if (mode === "access") {
    if (!vars.ACCESS_TENANTS?.trim()) {
      throw new ConfigError(
        "AUTH_MODE=access needs ACCESS_TENANTS (each tenant's Access team domain and AUD)",
      );
    }
    return { mode, tenants: parseAccessTenants(vars.ACCESS_TENANTS), allowedOrigins, devKey: "" };
  }
  if (!vars.DEV_JWT_PRIVATE_JWK)
    throw new ConfigError("AUTH_MODE=dev needs DEV_JWT_PRIVATE_JWK (npm start writes one)");
  const tenants = vars.ACCESS_TENANTS?.trim() ? parseAccessTenants(vars.ACCESS_TENANTS) : [];
  return { mode, tenants, allowedOrigins, devKey: vars.DEV_JWT_PRIVATE_JWK };
}

/** `readAuthConfig` memoised per env object. */
export const authConfigOf = perEnv((env: AuthVars & object): AuthConfig => readAuthConfig(env));
