import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { checkResidency, filesBucket } from "../../worker/residency.ts";
import { roomNamespace, roomStub } from "../../worker/rooms.ts";

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
