import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  checkResidency,
  directories,
  directoryDb,
  filesBucket,
  jurisdictionOf,
  parseTenantJurisdictions,
  tenantNamespace,
} from "../../platform/residency.ts";
import { roomNamespace, roomStub } from "../../worker/stubs.ts";

// workerd does not implement jurisdictions ("Jurisdiction restrictions are not implemented in
// workerd"), so the namespace is a double that records which namespace produced each id.
function namespaceDouble() {
  const scopedTo: string[] = [];
  const make = (jurisdiction?: string): DurableObjectNamespace => {
    const ns = {
      idFromName: (name: string) => ({
        name,
        jurisdiction,
        toString: () => `${jurisdiction ?? "global"}:${name}`,
      }),
      get: (id: { toString(): string }) => ({ id: id.toString() }),
      jurisdiction: (j: string) => {
        scopedTo.push(j);
        return make(j);
      },
    };
    return ns as unknown as DurableObjectNamespace;
  };
  return { namespace: make(), scopedTo };
}

const ACCESS_TENANTS = JSON.stringify([
  {
    id: "acme",
    teamDomain: "https://acme.cloudflareaccess.com",
    aud: "acmeaud0123456789abcdef",
    jurisdiction: "eu",
  },
  { id: "globex", teamDomain: "https://globex.cloudflareaccess.com", aud: "globexaud0123456789abcd" },
]);

describe("data residency", () => {
  it("gives a tenant pinned to a jurisdiction ids from the jurisdiction-scoped namespace", () => {
    const { namespace, scopedTo } = namespaceDouble();
    const pinnedEnv = { ...env, AUTH_MODE: "access", ACCESS_TENANTS, ROOM: namespace } as unknown as Env;
    const id = roomNamespace(pinnedEnv, "acme").idFromName("acme:r_1");
    expect(scopedTo).toEqual(["eu"]);
    expect(id.jurisdiction).toBe("eu");
    expect(roomStub(pinnedEnv, "acme", "r_1")).toEqual({ id: "eu:acme:r_1" });
  });

  it("leaves other tenants in the default namespace", () => {
    const { namespace, scopedTo } = namespaceDouble();
    const pinnedEnv = { ...env, AUTH_MODE: "access", ACCESS_TENANTS, ROOM: namespace } as unknown as Env;
    expect(roomStub(pinnedEnv, "globex", "r_1")).toEqual({ id: "global:globex:r_1" });
    expect(scopedTo).toEqual([]);
  });
});

describe("files residency", () => {
  it("puts a pinned tenant's files in its jurisdiction's bucket and everyone else's in the default one", () => {
    const pinnedEnv = { ...env, AUTH_MODE: "access", ACCESS_TENANTS } as unknown as Env;
    expect(filesBucket(pinnedEnv, "acme")).toBe(env.FILES_EU);
    expect(filesBucket(pinnedEnv, "globex")).toBe(env.FILES);
    expect(() => checkResidency(pinnedEnv)).not.toThrow();
  });

  it("refuses to start when a tenant is pinned to a jurisdiction without a bucket", () => {
    const tenants = JSON.stringify([
      {
        id: "fed",
        teamDomain: "https://fed.cloudflareaccess.com",
        aud: "fedaud0123456789abcdef",
        jurisdiction: "fedramp",
      },
    ]);
    const fedEnv = { ...env, AUTH_MODE: "access", ACCESS_TENANTS: tenants } as unknown as Env;
    expect(() => checkResidency(fedEnv)).toThrow(/fedramp/);
  });
});

describe("where a tenant is pinned", () => {
  it("reads TENANT_JURISDICTIONS: a JSON object of tenant ids and jurisdictions, empty for none", () => {
    expect(parseTenantJurisdictions("")).toEqual(new Map());
    expect(parseTenantJurisdictions("  ")).toEqual(new Map());
    expect(parseTenantJurisdictions('{"acme":"eu","fed-1":"fedramp"}')).toEqual(
      new Map([
        ["acme", "eu"],
        ["fed-1", "fedramp"],
      ]),
    );
  });

  it("refuses malformed TENANT_JURISDICTIONS with a message naming the mistake", () => {
    const cases: [string, RegExp][] = [
      ["{acme:eu}", /must be JSON/],
      ['["acme"]', /must be a JSON object/],
      ["null", /must be a JSON object/],
      ['{"Not A Tenant":"eu"}', /is not a tenant id/],
      ['{"acme":"mars"}', /acme must be one of eu, fedramp, fedramp-high/],
      ['{"acme":null}', /acme must be one of/],
      // JSON.parse would keep only the last: a pinning must never vanish silently.
      ['{"acme":"eu", "globex":"eu", "acme":"eu"}', /names tenant acme twice/],
      ['{"acme":"fedramp","acme":"eu"}', /names tenant acme twice/],
    ];
    for (const [raw, message] of cases) expect(() => parseTenantJurisdictions(raw), raw).toThrow(message);
  });

  it("honours TENANT_JURISDICTIONS in dev mode and in access mode, beside ACCESS_TENANTS", () => {
    const dev = {
      ...env,
      AUTH_MODE: "dev",
      ACCESS_TENANTS: "",
      TENANT_JURISDICTIONS: '{"umbrella":"eu"}',
    } as Env;
    expect(jurisdictionOf(dev, "umbrella")).toBe("eu");
    expect(jurisdictionOf(dev, "acme")).toBeUndefined();
    const access = {
      ...env,
      AUTH_MODE: "access",
      ACCESS_TENANTS,
      TENANT_JURISDICTIONS: '{"globex":"eu","acme":"eu"}',
    } as Env;
    expect(() => checkResidency(access)).not.toThrow();
    expect(jurisdictionOf(access, "acme")).toBe("eu");
    expect(jurisdictionOf(access, "globex")).toBe("eu");
  });

  it("refuses to start when a tenant is pinned to two different jurisdictions", () => {
    const tenants = JSON.stringify([
      {
        id: "acme",
        teamDomain: "https://acme.cloudflareaccess.com",
        aud: "acmeaud0123456789abcdef",
        jurisdiction: "eu",
      },
    ]);
    const contradicted = {
      ...env,
      AUTH_MODE: "access",
      ACCESS_TENANTS: tenants,
      TENANT_JURISDICTIONS: '{"acme":"fedramp"}',
    } as Env;
    expect(() => checkResidency(contradicted)).toThrow(
      /acme is pinned to fedramp by TENANT_JURISDICTIONS and to eu by ACCESS_TENANTS/,
    );
  });

  it("refuses to start when a pinned tenant's jurisdiction has no directory or no bucket bound", () => {
    const pinned = { ...env, TENANT_JURISDICTIONS: '{"umbrella":"eu"}' };
    expect(() => checkResidency(pinned as Env)).not.toThrow();
    expect(() => checkResidency({ ...pinned, DB_EU: undefined } as unknown as Env)).toThrow(
      /umbrella is pinned to eu, but this deployment does not bind DB_EU/,
    );
    expect(() => checkResidency({ ...pinned, FILES_EU: undefined } as unknown as Env)).toThrow(/FILES_EU/);
    expect(() => checkResidency({ ...env, TENANT_JURISDICTIONS: '{"fed":"fedramp"}' } as Env)).toThrow(
      /fed is pinned to fedramp, which has no files bucket and directory database/,
    );
  });
});

describe("directory residency", () => {
  it("gives a pinned tenant its jurisdiction's directory and everyone else the default one", () => {
    const pinned = { ...env, TENANT_JURISDICTIONS: '{"umbrella":"eu"}' } as Env;
    expect(directoryDb(pinned, "umbrella")).toBe(env.DB_EU);
    expect(directoryDb(pinned, "acme")).toBe(env.DB);
    expect(filesBucket(pinned, "umbrella")).toBe(env.FILES_EU);
    expect(directories(pinned)).toEqual([
      { jurisdiction: undefined, db: env.DB },
      { jurisdiction: "eu", db: env.DB_EU },
    ]);
  });
});

describe("objects of a pinned tenant where the runtime has no jurisdictions", () => {
  const pinned = { ...env, TENANT_JURISDICTIONS: '{"umbrella":"eu"}' } as Env;
  const refusing = (message: string) =>
    ({
      jurisdiction: () => {
        throw new Error(message);
      },
    }) as unknown as DurableObjectNamespace;

  it("uses the plain namespace only when workerd says it has no jurisdictions", () => {
    const local = refusing("Jurisdiction restrictions are not implemented in workerd.");
    expect(tenantNamespace(pinned, local, "umbrella")).toBe(local);
  });

  it("lets any other failure through", () => {
    expect(() => tenantNamespace(pinned, refusing("jurisdiction service unavailable"), "umbrella")).toThrow(
      /unavailable/,
    );
  });
});
