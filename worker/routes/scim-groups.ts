/**
 * @module SCIM 2.0 Groups (RFC 7643/7644; docs/architecture.md, decision 11), mounted with the Users
 * at `/scim/v2` and behind the same SCIM token. Groups exist to give roles: the tenant's
 * `scimRoleGroups` (`PATCH /api/tenant`) names the groups whose members are admins or guests. Each
 * change of a group's members re-derives the role of every person it touched: in an admin group →
 * admin; else in a guest group → guest; else someone whose role came from a group (an admin or a
 * guest, while the tenant maps that role) → member. Owners and bots never change. A removal from
 * the last admin group therefore demotes.
 *
 * PATCH takes both dialects: RFC/Okta `remove` with a filtered path (`members[value eq "…"]`), and
 * Entra's `Remove` with `path: "members"` and the members as its value. Other operations go through
 * `scim-patch` on the group as SCIM JSON, like a Users PATCH.
 */
import { and, eq, inArray } from "drizzle-orm";
import { type Context, Hono } from "hono";
import { filter as compileFilter } from "scim2-parse-filter";
import { audit } from "../audit.ts";
import { forgetIdentity } from "../auth/identity.ts";
import { scimGroupMembers, scimGroups, tenants, users } from "../db/schema.ts";
import { newId } from "../ids.ts";
import { pushMember } from "../rooms.ts";
import {
  applyPatch,
  base,
  dbOf,
  listParams,
  listResponse,
  patchOperations,
  readBody,
  type ScimEnv,
  ScimError,
  scimJson,
} from "./scim-common.ts";

const GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group";

type GroupRow = typeof scimGroups.$inferSelect;

interface ScimGroup {
  schemas: string[];
  id: string;
  externalId?: string;
  displayName: string;
  members?: { value: string; display: string; $ref: string }[];
  meta: { resourceType: "Group"; created: string; lastModified: string; location: string };
}

/** The role groups of the tenant, by lower-cased display name. */
interface RoleGroups {
  admin: Set<string>;
  guest: Set<string>;
}

export function parseRoleGroups(raw: string | null): RoleGroups {
  const o = raw ? (JSON.parse(raw) as { admin?: string[]; guest?: string[] }) : {};
  return {
    admin: new Set((o.admin ?? []).map((n) => n.toLowerCase())),
    guest: new Set((o.guest ?? []).map((n) => n.toLowerCase())),
  };
}

async function findGroup(c: Context<ScimEnv>, id: string): Promise<GroupRow> {
  const row = await dbOf(c)
    .select()
    .from(scimGroups)
    .where(and(eq(scimGroups.id, id), eq(scimGroups.tenantId, c.get("scim").tenantId)))
    .get();
  if (!row) throw new ScimError(404, `no Group ${id}`);
  return row;
}

async function membersOf(c: Context<ScimEnv>, groupId: string) {
  return dbOf(c)
    .select({ id: users.id, name: users.name })
    .from(scimGroupMembers)
    .innerJoin(users, eq(users.id, scimGroupMembers.userId))
    .where(eq(scimGroupMembers.groupId, groupId))
    .all();
}

async function toScimGroup(c: Context<ScimEnv>, row: GroupRow, withMembers = true): Promise<ScimGroup> {
  const url = base(c);
  const group: ScimGroup = {
    schemas: [GROUP_SCHEMA],
    id: row.id,
    ...(row.externalId ? { externalId: row.externalId } : {}),
    displayName: row.displayName,
    meta: {
      resourceType: "Group",
      created: new Date(row.createdAt).toISOString(),
      lastModified: new Date(row.createdAt).toISOString(),
      location: `${url}/Groups/${row.id}`,
    },
  };
  if (withMembers)
    group.members = (await membersOf(c, row.id)).map((m) => ({
      value: m.id,
      display: m.name,
      $ref: `${url}/Users/${m.id}`,
    }));
  return group;
}

/** The member ids a body names, each a person of the tenant (400 `invalidValue` otherwise). */
async function memberIds(c: Context<ScimEnv>, value: unknown): Promise<string[]> {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new ScimError(400, "members must be an array", "invalidValue");
  const ids = [
    ...new Set(
      value.map((m) => {
        const id = (m as { value?: unknown } | null)?.value;
        if (typeof id !== "string")
          throw new ScimError(400, "each member needs a value (a User id)", "invalidValue");
        return id;
      }),
    ),
  ];
  if (ids.length === 0) return [];
  const found = await dbOf(c)
    .select({ id: users.id })
    .from(users)
    .where(and(eq(users.tenantId, c.get("scim").tenantId), inArray(users.id, ids)))
    .all();
  if (found.length !== ids.length)
    throw new ScimError(400, "a member is not a User of this tenant", "invalidValue");
  return ids;
}

/** Sets a group's members to `ids`, then re-derives the role of everyone who came or went. */
async function setMembers(c: Context<ScimEnv>, groupId: string, ids: string[]): Promise<void> {
  const db = dbOf(c);
  const before = (await membersOf(c, groupId)).map((m) => m.id);
  const gone = before.filter((id) => !ids.includes(id));
  const added = ids.filter((id) => !before.includes(id));
  for (const id of gone)
    await db
      .delete(scimGroupMembers)
      .where(and(eq(scimGroupMembers.groupId, groupId), eq(scimGroupMembers.userId, id)));
  for (const id of added)
    await db.insert(scimGroupMembers).values({ groupId, userId: id }).onConflictDoNothing();
  await rederive(c, [...gone, ...added]);
}

/** Each person's role from the tenant's role groups (see the module comment). */
async function rederive(c: Context<ScimEnv>, userIds: string[]): Promise<void> {
  if (userIds.length === 0) return;
  const scim = c.get("scim");
  const db = dbOf(c);
  const tenant = await db
    .select({ groups: tenants.scimRoleGroups })
    .from(tenants)
    .where(eq(tenants.id, scim.tenantId))
    .get();
  const roles = parseRoleGroups(tenant?.groups ?? null);
  for (const userId of userIds) {
    const user = await db.select().from(users).where(eq(users.id, userId)).get();
    if (!user || user.role === "owner" || user.role === "bot") continue;
    const names = (
      await db
        .select({ name: scimGroups.displayName })
        .from(scimGroupMembers)
        .innerJoin(scimGroups, eq(scimGroups.id, scimGroupMembers.groupId))
        .where(eq(scimGroupMembers.userId, userId))
        .all()
    ).map((g) => g.name.toLowerCase());
    let role = user.role;
    if (names.some((n) => roles.admin.has(n))) role = "admin";
    else if (names.some((n) => roles.guest.has(n))) role = "guest";
    else if (
      (user.role === "admin" && roles.admin.size > 0) ||
      (user.role === "guest" && roles.guest.size > 0)
    )
      role = "member";
    if (role === user.role) continue;
    await db.update(users).set({ role }).where(eq(users.id, userId));
    forgetIdentity(c.env, scim.tenantId, user.email);
    await audit(c.env, scim, "user.role_changed", userId, { from: user.role, to: role, by: "scim-groups" });
    await pushMember(c.env, scim.tenantId, { id: userId, name: user.name, role });
  }
}

function readGroup(body: unknown): { displayName: string; externalId: string | null; members: unknown } {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new ScimError(400, "the body must be a Group resource", "invalidSyntax");
  const b = body as Record<string, unknown>;
  const displayName = typeof b.displayName === "string" ? b.displayName.trim() : "";
  if (displayName === "" || displayName.length > 200)
    throw new ScimError(400, "displayName must be 1-200 characters", "invalidValue");
  const externalId = typeof b.externalId === "string" ? b.externalId : null;
  return { displayName, externalId, members: b.members };
}

async function rename(c: Context<ScimEnv>, row: GroupRow, displayName: string, externalId: string | null) {
  if (displayName === row.displayName && externalId === row.externalId) return;
  const db = dbOf(c);
  const taken = await db
    .select({ id: scimGroups.id })
    .from(scimGroups)
    .where(and(eq(scimGroups.tenantId, row.tenantId), eq(scimGroups.displayName, displayName)))
    .get();
  if (taken && taken.id !== row.id)
    throw new ScimError(409, `a Group named ${displayName} exists`, "uniqueness");
  await db.update(scimGroups).set({ displayName, externalId }).where(eq(scimGroups.id, row.id));
  // A rename can move a group into or out of a role mapping.
  await rederive(
    c,
    (await membersOf(c, row.id)).map((m) => m.id),
  );
}

export const scimGroupRoutes = new Hono<ScimEnv>()
  .get("/", async (c) => {
    const { startIndex, count, ast } = listParams(c);
    const withMembers = !(c.req.query("excludedAttributes") ?? "").split(",").includes("members");
    const rows = await dbOf(c)
      .select()
      .from(scimGroups)
      .where(eq(scimGroups.tenantId, c.get("scim").tenantId))
      .orderBy(scimGroups.createdAt)
      .all();
    const all = await Promise.all(rows.map((r) => toScimGroup(c, r, withMembers)));
    const matched = ast ? all.filter(compileFilter(ast)) : all;
    return scimJson(c, listResponse(matched, startIndex, count));
  })
  .get("/:id", async (c) => {
    const withMembers = !(c.req.query("excludedAttributes") ?? "").split(",").includes("members");
    return scimJson(c, await toScimGroup(c, await findGroup(c, c.req.param("id")), withMembers));
  })
  .post("/", async (c) => {
    const g = readGroup(await readBody(c));
    const scim = c.get("scim");
    const db = dbOf(c);
    const taken = await db
      .select({ id: scimGroups.id })
      .from(scimGroups)
      .where(and(eq(scimGroups.tenantId, scim.tenantId), eq(scimGroups.displayName, g.displayName)))
      .get();
    if (taken) throw new ScimError(409, `a Group named ${g.displayName} exists`, "uniqueness");
    const ids = await memberIds(c, g.members);
    const id = newId("g");
    await db.insert(scimGroups).values({
      id,
      tenantId: scim.tenantId,
      displayName: g.displayName,
      externalId: g.externalId,
      createdAt: Date.now(),
    });
    await setMembers(c, id, ids);
    return scimJson(c, await toScimGroup(c, await findGroup(c, id)), 201);
  })
  .put("/:id", async (c) => {
    const row = await findGroup(c, c.req.param("id"));
    const g = readGroup(await readBody(c));
    const ids = await memberIds(c, g.members);
    await rename(c, row, g.displayName, g.externalId);
    await setMembers(c, row.id, ids);
    return scimJson(c, await toScimGroup(c, await findGroup(c, row.id)));
  })
  .patch("/:id", async (c) => {
    const row = await findGroup(c, c.req.param("id"));
    const ops = await patchOperations(c);
    let group = await toScimGroup(c, row);
    for (const raw of ops) {
      // Entra: remove members listed in the value, with the plain path.
      if (
        raw.op === "remove" &&
        typeof raw.path === "string" &&
        raw.path.toLowerCase() === "members" &&
        Array.isArray(raw.value)
      ) {
        const drop = new Set(await memberIds(c, raw.value));
        group = { ...group, members: (group.members ?? []).filter((m) => !drop.has(m.value)) };
        continue;
      }
      group = applyPatch(group, [raw]);
    }
    const g = readGroup(group);
    const ids = await memberIds(c, g.members);
    await rename(c, row, g.displayName, g.externalId);
    await setMembers(c, row.id, ids);
    // Okta and Entra accept 204 or the group; the group says what the change did.
    return scimJson(c, await toScimGroup(c, await findGroup(c, row.id)));
  })
  .delete("/:id", async (c) => {
    const row = await findGroup(c, c.req.param("id"));
    await setMembers(c, row.id, []);
    await dbOf(c).delete(scimGroups).where(eq(scimGroups.id, row.id));
    return c.body(null, 204);
  });
