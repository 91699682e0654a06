/**
 * @module SCIM 2.0 provisioning (RFC 7643/7644; docs/architecture.md, decision 11): the tenant's
 * identity provider creates, updates, deactivates and deletes people at `/scim/v2`, authenticated
 * by the tenant's SCIM token (an API token whose bot is the SCIM client: created by
 * `POST /api/admin/scim-token`, revoked like any token). A SCIM user is the directory's `users` row:
 * people who arrive by Access token are the same rows, matched by email (`userName`).
 *
 * Filters are parsed by `scim2-parse-filter` and PATCH operations applied by `scim-patch`
 * (maintained libraries, Decision 11): a PATCH is applied to the user as SCIM JSON, the result
 * checked like a PUT, then written. `userName eq`, `externalId eq` and `emails.value eq` are
 * answered from an index; any other filter is evaluated over the tenant's users.
 *
 * Groups, which give roles, are worker/routes/scim-groups.ts.
 */
import { and, eq, isNull, ne, sql } from "drizzle-orm";
import { type Context, Hono } from "hono";
import { filter as compileFilter } from "scim2-parse-filter";
import { audit } from "../audit.ts";
import { requireAdmin } from "../auth/admin.ts";
import { identityOfApiToken } from "../auth/api-tokens.ts";
import { forgetIdentity, isScimClient } from "../auth/identity.ts";
import { users } from "../db/schema.ts";
import { newId } from "../ids.ts";
import type { AppEnv } from "../types.ts";
import {
  applyPatch,
  base,
  dbOf,
  LIST_SCHEMA,
  listParams,
  listResponse,
  MAX_COUNT,
  patchOperations,
  readBody,
  type ScimEnv,
  ScimError,
  scimError,
  scimJson,
} from "./scim-common.ts";
import { scimGroupRoutes } from "./scim-groups.ts";
import { issueBot } from "./tokens.ts";
import { deactivate, reactivate } from "./users.ts";

const USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User";
const EMAIL = /^[^\s@]+@[^\s@]+$/;

type Row = typeof users.$inferSelect;

export interface ScimUser {
  schemas: string[];
  id: string;
  externalId?: string;
  userName: string;
  name: { givenName?: string; familyName?: string; formatted: string };
  displayName: string;
  emails: { value: string; type: string; primary: boolean }[];
  active: boolean;
  meta: { resourceType: "User"; created: string; lastModified: string; location: string };
}

export function toScim(row: Row, baseUrl: string): ScimUser {
  const lastModified = Math.max(row.createdAt, row.deactivatedAt ?? 0, row.lastLoginAt);
  return {
    schemas: [USER_SCHEMA],
    id: row.id,
    ...(row.externalId ? { externalId: row.externalId } : {}),
    userName: row.email,
    name: {
      ...(row.givenName ? { givenName: row.givenName } : {}),
      ...(row.familyName ? { familyName: row.familyName } : {}),
      formatted: row.name,
    },
    displayName: row.name,
    emails: [{ value: row.email, type: "work", primary: true }],
    active: row.active === 1,
    meta: {
      resourceType: "User",
      created: new Date(row.createdAt).toISOString(),
      lastModified: new Date(lastModified).toISOString(),
      location: `${baseUrl}/Users/${row.id}`,
    },
  };
}

/** What a POST, PUT or patched user says, checked: the fields Parley keeps. */
interface UserFields {
  email: string;
  name: string;
  givenName: string | null;
  familyName: string | null;
  externalId: string | null;
  active: boolean;
}

function readUser(body: unknown): UserFields {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new ScimError(400, "the body must be a User resource", "invalidSyntax");
  const b = body as Record<string, unknown>;
  if (Array.isArray(b.schemas) && !b.schemas.includes(USER_SCHEMA))
    throw new ScimError(400, `schemas must include ${USER_SCHEMA}`, "invalidValue");
  const userName = typeof b.userName === "string" ? b.userName.trim() : "";
  if (userName === "") throw new ScimError(400, "userName is required", "invalidValue");
  const emails = Array.isArray(b.emails) ? (b.emails as Record<string, unknown>[]) : [];
  const work =
    emails.find((e) => e?.primary === true) ??
    emails.find((e) => e?.type === "work") ??
    emails[0] ??
    undefined;
  const email = (
    typeof work?.value === "string" && EMAIL.test(work.value) ? work.value : userName
  ).toLowerCase();
  if (!EMAIL.test(email))
    throw new ScimError(400, "userName or a work email must be an email address", "invalidValue");
  const n = (typeof b.name === "object" && b.name !== null ? b.name : {}) as Record<string, unknown>;
  const str = (v: unknown, what: string, max: number): string | null => {
    if (v === undefined || v === null) return null;
    if (typeof v !== "string" || v.length > max)
      throw new ScimError(400, `${what} must be a string of at most ${max} characters`, "invalidValue");
    return v.trim() || null;
  };
  const givenName = str(n.givenName, "name.givenName", 80);
  const familyName = str(n.familyName, "name.familyName", 80);
  const display =
    str(b.displayName, "displayName", 80) ??
    str(n.formatted, "name.formatted", 80) ??
    ([givenName, familyName].filter(Boolean).join(" ") || email.split("@")[0] || email);
  // Entra has sent active as the strings "True" and "False".
  const lower = typeof b.active === "string" ? b.active.toLowerCase() : null;
  const active = lower === "true" ? true : lower === "false" ? false : b.active;
  if (active !== undefined && typeof active !== "boolean")
    throw new ScimError(400, "active must be true or false", "invalidValue");
  const externalId = str(b.externalId, "externalId", 200);
  return { email, name: display.slice(0, 80), givenName, familyName, externalId, active: active !== false };
}

async function findUser(c: Context<ScimEnv>, id: string): Promise<Row> {
  const row = await dbOf(c)
    .select()
    .from(users)
    .where(and(eq(users.id, id), eq(users.tenantId, c.get("scim").tenantId), isNull(users.scimDeletedAt)))
    .get();
  if (!row || row.role === "bot") throw new ScimError(404, `no User ${id}`);
  return row;
}

/** Writes what a PUT or a patch says of a user; activation changes go through deactivate. */
async function apply(c: Context<ScimEnv>, row: Row, fields: UserFields): Promise<Row> {
  const db = dbOf(c);
  const tenantId = c.get("scim").tenantId;
  if (fields.email !== row.email) {
    const taken = await db
      .select({ id: users.id })
      .from(users)
      .where(and(eq(users.tenantId, tenantId), eq(users.email, fields.email)))
      .get();
    if (taken && taken.id !== row.id)
      throw new ScimError(409, `userName ${fields.email} is taken`, "uniqueness");
  }
  await db
    .update(users)
    .set({
      email: fields.email,
      name: fields.name,
      givenName: fields.givenName,
      familyName: fields.familyName,
      externalId: fields.externalId,
    })
    .where(eq(users.id, row.id));
  forgetIdentity(c.env, tenantId, row.email);
  const actor = c.get("scim");
  if (!fields.active && row.active === 1) await deactivate(c.env, actor, row);
  if (fields.active && row.active === 0) await reactivate(c.env, actor, row, { by: "scim" });
  return findUser(c, row.id);
}

/** The page of users a list asks for: `filter` (the library's AST), `startIndex` and `count`. */
async function list(c: Context<ScimEnv>): Promise<Response> {
  const tenantId = c.get("scim").tenantId;
  const { startIndex, count, ast } = listParams(c);
  const conds = [eq(users.tenantId, tenantId), isNull(users.scimDeletedAt)];
  // An equality on an indexed attribute goes to SQL; anything else is evaluated below.
  const simple = ast && "op" in ast && ast.op === "eq" && "attrPath" in ast ? ast : null;
  if (simple && typeof simple.compValue === "string") {
    const attr = simple.attrPath.toLowerCase();
    if (attr === "username" || attr === "emails.value" || attr === 'emails[type eq "work"].value')
      conds.push(eq(users.email, simple.compValue.toLowerCase()));
    else if (attr === "externalid") conds.push(eq(users.externalId, simple.compValue));
  }
  conds.push(ne(users.role, "bot"));
  if (!ast) {
    // No filter: the page and the count from SQL, not every row of the tenant.
    const [{ n } = { n: 0 }] = await dbOf(c)
      .select({ n: sql<number>`count(*)` })
      .from(users)
      .where(and(...conds))
      .all();
    const page = await dbOf(c)
      .select()
      .from(users)
      .where(and(...conds))
      .orderBy(users.createdAt, users.id)
      .limit(count)
      .offset(startIndex - 1)
      .all();
    return scimJson(c, {
      schemas: [LIST_SCHEMA],
      totalResults: n,
      startIndex,
      itemsPerPage: page.length,
      Resources: page.map((r) => toScim(r, base(c))),
    });
  }
  const rows = await dbOf(c)
    .select()
    .from(users)
    .where(and(...conds))
    .orderBy(users.createdAt, users.id)
    .all();
  const matched = rows.map((r) => toScim(r, base(c))).filter(compileFilter(ast));
  return scimJson(c, listResponse(matched, startIndex, count));
}

const SERVICE_PROVIDER_CONFIG = {
  schemas: ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
  patch: { supported: true },
  bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
  filter: { supported: true, maxResults: MAX_COUNT },
  changePassword: { supported: false },
  sort: { supported: false },
  etag: { supported: false },
  authenticationSchemes: [
    {
      type: "oauthbearertoken",
      name: "Bearer token",
      description: "The tenant's SCIM token (POST /api/admin/scim-token), as Authorization: Bearer",
      primary: true,
    },
  ],
};

function resourceTypes(baseUrl: string) {
  return [
    {
      schemas: ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
      id: "User",
      name: "User",
      endpoint: "/Users",
      schema: USER_SCHEMA,
      meta: { resourceType: "ResourceType", location: `${baseUrl}/ResourceTypes/User` },
    },
    {
      schemas: ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
      id: "Group",
      name: "Group",
      endpoint: "/Groups",
      schema: "urn:ietf:params:scim:schemas:core:2.0:Group",
      meta: { resourceType: "ResourceType", location: `${baseUrl}/ResourceTypes/Group` },
    },
  ];
}

const USER_SCHEMA_DOC = {
  schemas: ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
  id: USER_SCHEMA,
  name: "User",
  description: "A person of the tenant",
  attributes: [
    {
      name: "userName",
      type: "string",
      multiValued: false,
      required: true,
      caseExact: false,
      mutability: "readWrite",
      returned: "default",
      uniqueness: "server",
    },
    {
      name: "externalId",
      type: "string",
      multiValued: false,
      required: false,
      caseExact: true,
      mutability: "readWrite",
      returned: "default",
      uniqueness: "none",
    },
    {
      name: "displayName",
      type: "string",
      multiValued: false,
      required: false,
      caseExact: false,
      mutability: "readWrite",
      returned: "default",
      uniqueness: "none",
    },
    {
      name: "name",
      type: "complex",
      multiValued: false,
      required: false,
      mutability: "readWrite",
      returned: "default",
      subAttributes: [
        {
          name: "givenName",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
        {
          name: "familyName",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
        {
          name: "formatted",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
      ],
    },
    {
      name: "emails",
      type: "complex",
      multiValued: true,
      required: false,
      mutability: "readWrite",
      returned: "default",
      subAttributes: [
        {
          name: "value",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
        {
          name: "type",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
        {
          name: "primary",
          type: "boolean",
          multiValued: false,
          required: false,
          mutability: "readWrite",
          returned: "default",
        },
      ],
    },
    {
      name: "active",
      type: "boolean",
      multiValued: false,
      required: false,
      mutability: "readWrite",
      returned: "default",
    },
  ],
};

const _GROUP_SCHEMA_DOC = {
  schemas: ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
  id: "urn:ietf:params:scim:schemas:core:2.0:Group",
  name: "Group",
  description: "A group of the identity provider; the tenant's role groups give its members a role",
  attributes: [
    {
      name: "displayName",
      type: "string",
      multiValued: false,
      required: true,
      mutability: "readWrite",
      returned: "default",
      uniqueness: "server",
    },
    {
      name: "externalId",
      type: "string",
      multiValued: false,
      required: false,
      mutability: "readWrite",
      returned: "default",
    },
    {
      name: "members",
      type: "complex",
      multiValued: true,
      required: false,
      mutability: "readWrite",
      returned: "default",
      subAttributes: [
        {
          name: "value",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "immutable",
          returned: "default",
        },
        {
          name: "display",
          type: "string",
          multiValued: false,
          required: false,
          mutability: "readOnly",
          returned: "default",
        },
      ],
    },
  ],
};

export const scimRoutes = new Hono<ScimEnv>()
  .onError((err, c) => {
    if (err instanceof ScimError) return scimError(c, err);
    throw err;
  })
  .use(async (c, next) => {
    const bearer = /^Bearer (\S+)$/.exec(c.req.header("authorization") ?? "")?.[1];
    const client = bearer ? await identityOfApiToken(c.env, bearer) : null;
    if (!client || !isScimClient(client)) throw new ScimError(401, "a valid SCIM token is required");
    c.set("scim", client);
    await next();
  })
  .get("/ServiceProviderConfig", (c) => scimJson(c, SERVICE_PROVIDER_CONFIG))
  .get("/ResourceTypes", (c) =>
    scimJson(c, { schemas: [LIST_SCHEMA], totalResults: 2, Resources: resourceTypes(base(c)) }),
  )
  .get("/Schemas", (c) =>
    scimJson(c, { schemas: [LIST_SCHEMA], totalResults: 1, Resources: [USER_SCHEMA_DOC] }),
  )
  .get("/Users", (c) => list(c))
  .get("/Users/:id", async (c) => scimJson(c, toScim(await findUser(c, c.req.param("id")), base(c))))
  .post("/Users", async (c) => {
    const fields = readUser(await readBody(c));
    const tenantId = c.get("scim").tenantId;
    const db = dbOf(c);
    const existing = await db
      .select({ id: users.id })
      .from(users)
      .where(and(eq(users.tenantId, tenantId), eq(users.email, fields.email)))
      .get();
    if (existing) throw new ScimError(409, `userName ${fields.email} exists`, "uniqueness");
    const now = Date.now();
    const id = newId("u");
    await db.insert(users).values({
      id,
      tenantId,
      email: fields.email,
      name: fields.name,
      role: "member",
      createdAt: now,
      lastLoginAt: now,
      active: fields.active ? 1 : 0,
      deactivatedAt: fields.active ? null : now,
      externalId: fields.externalId,
      givenName: fields.givenName,
      familyName: fields.familyName,
    });
    await audit(c.env, c.get("scim"), "user.provisioned", id, { role: "member", by: "scim" });
    return scimJson(c, toScim(await findUser(c, id), base(c)), 201);
  })
  .put("/Users/:id", async (c) => {
    const row = await findUser(c, c.req.param("id"));
    const fields = readUser(await readBody(c));
    return scimJson(c, toScim(await apply(c, row, fields), base(c)));
  })
  .patch("/Users/:id", async (c) => {
    const row = await findUser(c, c.req.param("id"));
    const patched = applyPatch(toScim(row, base(c)), await patchOperations(c));
    return scimJson(c, toScim(await apply(c, row, readUser(patched)), base(c)));
  })
  .delete("/Users/:id", async (c) => {
    const row = await findUser(c, c.req.param("id"));
    const scim = c.get("scim");
    // Gone for SCIM, deactivated for Parley: the row stays for the person's messages.
    await deactivate(c.env, scim, row);
    await dbOf(c)
      .update(users)
      .set({ scimDeletedAt: Date.now(), externalId: null })
      .where(eq(users.id, row.id));
    await audit(c.env, scim, "user.deleted", row.id, { by: "scim" });
    return c.body(null, 204);
  })
  .route("/Groups", scimGroupRoutes);

/** `POST /api/admin/scim-token` (owners and admins): the tenant's SCIM client token, shown once. */
export const scimTokenRoutes = new Hono<AppEnv>().post("/", async (c) => {
  const me = c.get("identity");
  requireAdmin(me, "create SCIM tokens");
  const { id, token } = await issueBot(c.env, me, "SCIM", null, "scim");
  await audit(c.env, me, "token.created", id, { scim: true });
  return c.json({ id, token, baseUrl: `${new URL(c.req.url).origin}/scim/v2` }, 201);
});
