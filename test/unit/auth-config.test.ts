import { describe, expect, it } from "vitest";
import { readAuthConfig } from "../../platform/auth-config.ts";

const tenant = {
  id: "acme",
  teamDomain: "https://acme.cloudflareaccess.com",
  aud: "acmeaud0123456789abcdef",
};
const access = (tenants: unknown, extra: Record<string, string> = {}) =>
  readAuthConfig({
    AUTH_MODE: "access",
    ACCESS_TENANTS: JSON.stringify(tenants),
    ALLOWED_ORIGINS: "",
    ...extra,
  });

describe("readAuthConfig", () => {
  it("refuses production mode without its Access applications", () => {
    expect(() => readAuthConfig({ AUTH_MODE: "access", ACCESS_TENANTS: "", ALLOWED_ORIGINS: "" })).toThrow(
      /ACCESS_TENANTS/,
    );
    expect(() => access([])).toThrow(/at least one/);
    expect(() => access([{ ...tenant, aud: "" }])).toThrow(/aud/);
    expect(() => access([{ ...tenant, teamDomain: "https://evil.example.com" }])).toThrow(/teamDomain/);
    expect(() => access([tenant, { ...tenant, id: "other" }])).toThrow(/repeats/);
    expect(() => access([{ ...tenant, jurisdiction: "mars" }])).toThrow(/jurisdiction/);
    expect(() => access([{ ...tenant, guestDomains: ["not a domain"] }])).toThrow(/guestDomains/);
  });

  it("refuses an unknown mode, dev mode without its key, and origins that are not exact", () => {
    expect(() => readAuthConfig({ AUTH_MODE: "open", ACCESS_TENANTS: "", ALLOWED_ORIGINS: "" })).toThrow(
      /AUTH_MODE/,
    );
    expect(() => readAuthConfig({ AUTH_MODE: "dev", ACCESS_TENANTS: "", ALLOWED_ORIGINS: "" })).toThrow(
      /DEV_JWT/,
    );
    expect(() => access([tenant], { ALLOWED_ORIGINS: "https://*.acme.test" })).toThrow(/ALLOWED_ORIGINS/);
    expect(() => access([tenant], { ALLOWED_ORIGINS: "https://acme.test/app" })).toThrow(/exact origin/);
  });

  it("normalises a valid configuration", () => {
    const config = access(
      [
        {
          ...tenant,
          teamDomain: "https://ACME.cloudflareaccess.com/",
          admins: ["IT@Acme.test"],
          guestDomains: ["Contractor.Example"],
        },
      ],
      {
        ALLOWED_ORIGINS: "https://chat.acme.test, https://parley.acme.test",
      },
    );
    expect(config).toMatchObject({
      mode: "access",
      allowedOrigins: ["https://chat.acme.test", "https://parley.acme.test"],
      tenants: [
        {
          id: "acme",
          name: "acme",
          teamDomain: "https://acme.cloudflareaccess.com",
          admins: ["it@acme.test"],
          guestDomains: ["contractor.example"],
        },
      ],
    });
  });
});
