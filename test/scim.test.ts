/**
 * SCIM 2.0 Users (RFC 7644) through `/scim/v2`, as Okta and Microsoft Entra drive it: look up by
 * filter, create, read, replace, deactivate by PATCH (Okta's `replace` with a value object, Entra's
 * capitalised ops, paths and string booleans), reactivate, delete. Each response is checked against
 * the RFC's shapes; refusals are SCIM errors and change nothing. A person provisioned by SCIM and
 * the same person arriving by (dev) token are one user.
 */
import { describe, expect, it } from "vitest";
import { api, fetchWorker, json, login, unique } from "./helpers.ts";

const SCIM = "application/scim+json";
const USER = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

async function scimClient() {
  const tenant = unique("t");
  const owner = await login(tenant);
  const made = await api(owner, "POST", "/api/admin/scim-token");
  expect(made.status).toBe(201);
  const { token } = await json<{ token: string }>(made);
  const call = async (method: string, path: string, body?: unknown, bearer = token) => {
    const res = await fetchWorker(`/scim/v2${path}`, {
      method,
      headers: {
        authorization: `Bearer ${bearer}`,
        ...(body === undefined ? {} : { "content-type": SCIM }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      type: res.headers.get("content-type") ?? "",
      body: text ? JSON.parse(text) : null,
    };
  };
  return { tenant, owner, token, call };
}

async function signIn(tenant: string, email: string) {
  const res = await fetchWorker("/auth/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, name: "Jane", tenant }),
  });
  return (await res.json()) as { token: string };
}

const okta = (email: string) => ({
  schemas: [USER],
  userName: email,
  name: { givenName: "Jane", familyName: "Doe" },
  emails: [{ primary: true, value: email, type: "work" }],
  displayName: "Jane Doe",
  locale: "en-US",
  externalId: "00ub0oNGTSWTBKOLGLNR",
  groups: [],
  password: "ignored",
  active: true,
});

describe("SCIM users", () => {
  it("runs Okta's sequence: look up, create, read, replace, deactivate, reactivate, delete", async () => {
    const { tenant, call } = await scimClient();
    const email = `jane@${tenant}.test`;
    const none = await call(
      "GET",
      `/Users?filter=${encodeURIComponent(`userName eq "${email}"`)}&startIndex=1&count=100`,
    );
    expect(none.status).toBe(200);
    expect(none.type).toContain(SCIM);
    expect(none.body).toEqual({
      schemas: [LIST],
      totalResults: 0,
      startIndex: 1,
      itemsPerPage: 0,
      Resources: [],
    });

    const created = await call("POST", "/Users", okta(email));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    expect(created.body).toMatchObject({
      schemas: [USER],
      userName: email,
      externalId: "00ub0oNGTSWTBKOLGLNR",
      name: { givenName: "Jane", familyName: "Doe" },
      displayName: "Jane Doe",
      emails: [{ value: email, type: "work", primary: true }],
      active: true,
      meta: { resourceType: "User", location: expect.stringMatching(new RegExp(`/scim/v2/Users/${id}$`)) },
    });
    expect(created.body).not.toHaveProperty("password");
    expect((await call("POST", "/Users", okta(email))).body).toMatchObject({
      schemas: [ERROR],
      status: "409",
      scimType: "uniqueness",
    });

    const found = await call("GET", `/Users?filter=${encodeURIComponent(`userName eq "${email}"`)}`);
    expect(found.body.totalResults).toBe(1);
    expect(found.body.Resources[0].id).toBe(id);
    expect((await call("GET", `/Users/${id}`)).body).toEqual(created.body);

    // The same person signing in is the same user.
    const jane = await signIn(tenant, email);
    expect((await json<{ user: { id: string } }>(api(jane, "GET", "/api/me"))).user.id).toBe(id);

    const replaced = await call("PUT", `/Users/${id}`, {
      ...okta(email),
      name: { givenName: "Janet", familyName: "Doe" },
      displayName: "Janet Doe",
    });
    expect(replaced.status).toBe(200);
    expect(replaced.body.displayName).toBe("Janet Doe");

    const off = await call("PATCH", `/Users/${id}`, {
      schemas: [PATCH],
      Operations: [{ op: "replace", value: { active: false } }],
    });
    expect(off.status).toBe(200);
    expect(off.body.active).toBe(false);
    expect((await api(jane, "GET", "/api/me")).status).toBe(403);
    const on = await call("PATCH", `/Users/${id}`, {
      schemas: [PATCH],
      Operations: [{ op: "replace", value: { active: true } }],
    });
    expect(on.body.active).toBe(true);
    expect((await api(jane, "GET", "/api/me")).status).toBe(200);

    expect((await call("DELETE", `/Users/${id}`)).status).toBe(204);
    expect((await call("GET", `/Users/${id}`)).body).toMatchObject({ schemas: [ERROR], status: "404" });
    expect((await api(jane, "GET", "/api/me")).status).toBe(403);
  });

  it("takes Entra's PATCH: capitalised ops, a path with a filter, string booleans", async () => {
    const { tenant, call } = await scimClient();
    const email = `ent@${tenant}.test`;
    const { body } = await call("POST", "/Users", { ...okta(email), externalId: "e-1" });
    const byExternal = await call("GET", `/Users?filter=${encodeURIComponent('externalId eq "e-1"')}`);
    expect(byExternal.body.Resources.map((r: { id: string }) => r.id)).toEqual([body.id]);
    const renamed = await call("PATCH", `/Users/${body.id}`, {
      schemas: [PATCH],
      Operations: [
        { op: "Replace", path: 'emails[type eq "work"].value', value: `new-${email}` },
        { op: "Replace", path: "displayName", value: "Entra Person" },
      ],
    });
    expect(renamed.status).toBe(200);
    expect(renamed.body).toMatchObject({ userName: `new-${email}`, displayName: "Entra Person" });
    const off = await call("PATCH", `/Users/${body.id}`, {
      schemas: [PATCH],
      Operations: [{ op: "Replace", path: "active", value: "False" }],
    });
    expect(off.body.active).toBe(false);
  });

  it("answers bad input, a wrong token and another tenant's ids with SCIM errors, changing nothing", async () => {
    const a = await scimClient();
    const b = await scimClient();
    const email = `x@${a.tenant}.test`;
    const { body: user } = await a.call("POST", "/Users", okta(email));
    const before = (await a.call("GET", `/Users/${user.id}`)).body;
    const cases: [string, string, unknown, number, string | undefined][] = [
      ["GET", "/Users?filter=userName%20eq", undefined, 400, "invalidFilter"],
      ["POST", "/Users", { schemas: [USER] }, 400, "invalidValue"],
      ["POST", "/Users", { userName: "not an email" }, 400, "invalidValue"],
      ["PUT", `/Users/${user.id}`, { ...okta(email), active: "maybe" }, 400, "invalidValue"],
      ["PATCH", `/Users/${user.id}`, { Operations: [] }, 400, "invalidSyntax"],
      [
        "PATCH",
        `/Users/${user.id}`,
        { schemas: [PATCH], Operations: [{ op: "explode", path: "active" }] },
        400,
        undefined,
      ],
    ];
    for (const [method, path, body, status, scimType] of cases) {
      const res = await a.call(method, path, body);
      expect(res.status, `${method} ${path}`).toBe(status);
      expect(res.body.schemas, `${method} ${path}`).toEqual([ERROR]);
      if (scimType) expect(res.body.scimType, `${method} ${path}`).toBe(scimType);
    }
    // Another tenant's client sees no such user; a wrong or non-SCIM token is refused.
    expect((await b.call("GET", `/Users/${user.id}`)).status).toBe(404);
    expect((await b.call("DELETE", `/Users/${user.id}`)).status).toBe(404);
    expect((await a.call("GET", "/Users", undefined, `${a.token}x`)).status).toBe(401);
    const bot = await json<{ token: string }>(api(a.owner, "POST", "/api/tokens", { name: "ci" }));
    expect((await a.call("GET", "/Users", undefined, bot.token)).status).toBe(401);
    // And the SCIM token is nobody at /api.
    expect((await api({ token: a.token }, "GET", "/api/me")).status).toBe(401);
    expect((await a.call("GET", `/Users/${user.id}`)).body).toEqual(before);
  });

  it("serves its configuration, resource types and schemas", async () => {
    const { call } = await scimClient();
    const config = await call("GET", "/ServiceProviderConfig");
    expect(config.body).toMatchObject({
      patch: { supported: true },
      filter: { supported: true },
      bulk: { supported: false },
    });
    expect((await call("GET", "/ResourceTypes")).body.Resources[0]).toMatchObject({
      id: "User",
      endpoint: "/Users",
    });
    expect((await call("GET", "/Schemas")).body.Resources[0].id).toBe(USER);
  });

  it("pages an unfiltered list by startIndex and count, with the exact total", async () => {
    const { tenant, call } = await scimClient();
    for (const n of [1, 2, 3])
      await call("POST", "/Users", { ...okta(`p${n}@${tenant}.test`), externalId: `p${n}` });
    // The owner who made the token is a person of the tenant too; the SCIM client's bot is not.
    const page = await call("GET", "/Users?startIndex=2&count=2");
    expect(page.body).toMatchObject({ schemas: [LIST], totalResults: 4, startIndex: 2, itemsPerPage: 2 });
    expect(page.body.Resources.map((u: { userName: string }) => u.userName)).toEqual([
      `p1@${tenant}.test`,
      `p2@${tenant}.test`,
    ]);
    expect((await call("GET", "/Users?startIndex=4&count=10")).body.itemsPerPage).toBe(1);
  });

  it("maps groups to roles: added to an admin group promotes, removed demotes (Okta and Entra PATCH)", async () => {
    const { tenant, owner, call } = await scimClient();
    const GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group";
    const groups = await api(owner, "PATCH", "/api/tenant", {
      scimRoleGroups: { admin: ["Parley Admins"], guest: ["Contractors"] },
    });
    expect(groups.status).toBe(200);
    const { body: jane } = await call("POST", "/Users", okta(`jane@${tenant}.test`));
    const { body: joe } = await call("POST", "/Users", { ...okta(`joe@${tenant}.test`), externalId: "joe" });
    const role = async (id: string) => {
      const res = await json<{ users: { id: string; role: string }[] }>(api(owner, "GET", "/api/users?q="));
      return res.users.find((u) => u.id === id)?.role;
    };
    // Okta: create the group, then add members with PATCH.
    const made = await call("POST", "/Groups", {
      schemas: [GROUP],
      displayName: "Parley Admins",
      members: [],
    });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ schemas: [GROUP], displayName: "Parley Admins", members: [] });
    const gid = made.body.id as string;
    const added = await call("PATCH", `/Groups/${gid}`, {
      schemas: [PATCH],
      Operations: [
        { op: "add", path: "members", value: [{ value: jane.id, display: "Jane" }, { value: joe.id }] },
      ],
    });
    expect(added.status).toBe(200);
    expect(added.body.members.map((m: { value: string }) => m.value).sort()).toEqual(
      [jane.id, joe.id].sort(),
    );
    expect(await role(jane.id)).toBe("admin");
    expect(await role(joe.id)).toBe("admin");
    // Okta removes with a filtered path; Entra with the members as the value.
    await call("PATCH", `/Groups/${gid}`, {
      schemas: [PATCH],
      Operations: [{ op: "remove", path: `members[value eq "${jane.id}"]` }],
    });
    expect(await role(jane.id)).toBe("member");
    await call("PATCH", `/Groups/${gid}`, {
      schemas: [PATCH],
      Operations: [{ op: "Remove", path: "members", value: [{ value: joe.id }] }],
    });
    expect(await role(joe.id)).toBe("member");
    // A guest group; filter and excludedAttributes as the providers send them.
    const contractors = await call("POST", "/Groups", {
      schemas: [GROUP],
      displayName: "Contractors",
      members: [{ value: joe.id }],
    });
    expect(await role(joe.id)).toBe("guest");
    const listed = await call(
      "GET",
      `/Groups?filter=${encodeURIComponent('displayName eq "Contractors"')}&excludedAttributes=members`,
    );
    expect(listed.body.Resources).toEqual([
      expect.objectContaining({ id: contractors.body.id, displayName: "Contractors" }),
    ]);
    expect(listed.body.Resources[0]).not.toHaveProperty("members");
    // Deleting the group takes its role away; the owner is never demoted.
    expect((await call("DELETE", `/Groups/${contractors.body.id}`)).status).toBe(204);
    expect(await role(joe.id)).toBe("member");
    expect((await call("GET", `/Groups/${contractors.body.id}`)).status).toBe(404);
    await call("PATCH", `/Groups/${gid}`, {
      schemas: [PATCH],
      Operations: [{ op: "add", path: "members", value: [{ value: owner.id }] }],
    });
    await call("PATCH", `/Groups/${gid}`, {
      schemas: [PATCH],
      Operations: [{ op: "remove", path: `members[value eq "${owner.id}"]` }],
    });
    expect(await role(owner.id)).toBe("owner");
    // Bad input changes nothing.
    expect(
      (await call("POST", "/Groups", { schemas: [GROUP], displayName: "Parley Admins" })).body.scimType,
    ).toBe("uniqueness");
    expect(
      (
        await call("PATCH", `/Groups/${gid}`, {
          schemas: [PATCH],
          Operations: [{ op: "add", path: "members", value: [{ value: "u_nobody" }] }],
        })
      ).status,
    ).toBe(400);
    expect((await call("GET", `/Groups/${gid}`)).body.members).toEqual([]);
  });
});
