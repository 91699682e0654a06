/**
 * A person provisioned by SCIM and the same person arriving with an Access token are one user
 * (docs/protocol.md, "SCIM provisioning"): matched by the identity provider's id when the token
 * carries it, else by email. In production auth (the access project), with tokens minted as Access
 * mints them.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { fetchWorker, json, unique } from "../helpers.ts";
import { mint, publishAccessKeys } from "./teams.ts";

publishAccessKeys();

const USER = "urn:ietf:params:scim:schemas:core:2.0:User";

const me = async (token: string) =>
  json<{ user: { id: string; email: string } }>(
    fetchWorker("/api/me", { headers: { "cf-access-jwt-assertion": token } }),
  );

/** The acme tenant's SCIM token, made by its configured owner. */
async function scimToken(): Promise<string> {
  const owner = await mint({ email: "boss@acme.test", name: "Boss" });
  const res = await fetchWorker("/api/admin/scim-token", {
    method: "POST",
    headers: { "cf-access-jwt-assertion": owner },
  });
  expect(res.status).toBe(201);
  return (await json<{ token: string }>(res)).token;
}

async function provision(scim: string, email: string, externalId: string): Promise<string> {
  const res = await fetchWorker("/scim/v2/Users", {
    method: "POST",
    headers: { authorization: `Bearer ${scim}`, "content-type": "application/scim+json" },
    body: JSON.stringify({
      schemas: [USER],
      userName: email,
      externalId,
      name: { givenName: "Jane", familyName: "Doe" },
      emails: [{ primary: true, value: email, type: "work" }],
      active: true,
    }),
  });
  expect(res.status).toBe(201);
  return (await json<{ id: string }>(res)).id;
}

async function emailOf(userId: string): Promise<string | undefined> {
  const row = await env.DB.prepare("SELECT email FROM users WHERE id = ?")
    .bind(userId)
    .first<{ email: string }>();
  return row?.email;
}

describe("a person provisioned by SCIM, signing in through Access", () => {
  it("is found by email", async () => {
    const scim = await scimToken();
    const email = `${unique("jane")}@acme.test`;
    const id = await provision(scim, email, unique("00u"));
    expect((await me(await mint({ email, name: "Jane" }))).user.id).toBe(id);
  });

  it("is found by the identity provider's id, and their email follows the provider's change", async () => {
    const scim = await scimToken();
    const before = `${unique("jane")}@acme.test`;
    const externalId = unique("00u");
    const id = await provision(scim, before, externalId);
    const after = `${unique("jane.doe")}@acme.test`;
    // Access passes the provider's claims under `custom` (OIDC claims configured in Access).
    const renamed = await mint({ email: after, name: "Jane", custom: { externalId } });
    expect((await me(renamed)).user).toMatchObject({ id, email: after });
    expect(await emailOf(id)).toBe(after);
    // From now on the new email finds them without the claim too.
    expect((await me(await mint({ email: after, name: "Jane" }))).user.id).toBe(id);
  });

  it("keeps the row as it is when the new email is someone else's", async () => {
    const scim = await scimToken();
    const externalId = unique("00u");
    const mine = `${unique("jane")}@acme.test`;
    const id = await provision(scim, mine, externalId);
    const taken = `${unique("bob")}@acme.test`;
    const bob = (await me(await mint({ email: taken, name: "Bob" }))).user.id;
    const token = await mint({ email: taken, name: "Bob", external_id: externalId });
    expect((await me(token)).user.id).toBe(id);
    expect(await emailOf(id)).toBe(mine);
    expect(await emailOf(bob)).toBe(taken);
  });

  it("is a new person when the token's id is not in the directory", async () => {
    const email = `${unique("new")}@acme.test`;
    const token = await mint({ email, name: "New", externalId: unique("00u") });
    const { user } = await me(token);
    expect(user.email).toBe(email);
  });
});
