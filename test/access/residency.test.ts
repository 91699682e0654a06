/**
 * Access sign-in provisions into the tenant's own directory: globex is pinned to the EU by its
 * ACCESS_TENANTS entry (vitest.config.ts), acme is pinned nowhere.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { fetchWorker, json, unique } from "../helpers.ts";
import { GLOBEX, keys, mint, publishAccessKeys } from "./teams.ts";

publishAccessKeys();

const me = (token: string) => fetchWorker("/api/me", { headers: { "cf-access-jwt-assertion": token } });

/** The users named `email` in each directory. */
async function usersIn(email: string): Promise<{ DB: string[]; DB_EU: string[] }> {
  const read = async (db: D1Database) =>
    (
      await db.prepare("SELECT tenant_id FROM users WHERE email = ?").bind(email).all<{ tenant_id: string }>()
    ).results.map((r) => r.tenant_id);
  return { DB: await read(env.DB), DB_EU: await read(env.DB_EU) };
}

describe("Access sign-in and data residency", () => {
  it("provisions a person of an EU-pinned tenant into DB_EU, and of an unpinned one into DB", async () => {
    const euEmail = `${unique("eu")}@globex.test`;
    const euToken = await mint({ email: euEmail, name: "Eu" }, { key: keys.globex, team: GLOBEX });
    expect(await json(me(euToken))).toMatchObject({ user: { email: euEmail }, tenant: { id: "globex" } });
    expect(await usersIn(euEmail)).toEqual({ DB: [], DB_EU: ["globex"] });
    const tenantRows = await env.DB.prepare("SELECT COUNT(*) AS n FROM tenants WHERE id = 'globex'").first<{
      n: number;
    }>();
    expect(tenantRows?.n).toBe(0);

    const homeEmail = `${unique("home")}@acme.test`;
    expect(await json(me(await mint({ email: homeEmail })))).toMatchObject({ tenant: { id: "acme" } });
    expect(await usersIn(homeEmail)).toEqual({ DB: ["acme"], DB_EU: [] });
  });

  it("provisions an EU-pinned tenant's service token (a bot) into DB_EU", async () => {
    const name = unique("svc");
    const token = await mint({ common_name: name }, { key: keys.globex, team: GLOBEX });
    expect(await json(me(token))).toMatchObject({ user: { role: "bot" }, tenant: { id: "globex" } });
    expect(await usersIn(`service:${name}`)).toEqual({ DB: [], DB_EU: ["globex"] });
  });
});
