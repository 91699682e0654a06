/**
 * One directory per jurisdiction (platform/residency.ts): everything of a tenant pinned to the EU
 * (vitest.config.ts pins `eu-acme` and `eu-umbrella` with TENANT_JURISDICTIONS) lands in DB_EU and
 * nothing of it in DB, and the reverse for a tenant pinned nowhere. Driven through HTTP and the
 * queue handler; both databases are then read directly.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../worker/index.ts";
import { roomStub } from "../worker/stubs.ts";
import {
  api,
  authHeaders,
  createRoom,
  fetchWorker,
  join,
  json,
  login,
  maintenanceOf,
  type User,
  unique,
} from "./helpers.ts";

const EU = "eu-acme";
/** A tenant pinned nowhere. */
const HOME = unique("home");
const DEAD_LETTERS = "parley-room-events-dlq";
const TOKEN = /^pk_(?:eu_)?k_[0-9a-z]{20}_[A-Za-z0-9_-]{43}$/;

/** Every table of a directory with a `tenant_id` column, found from the schema itself, so a table
 * added later is checked too. */
async function tenantTables(db: D1Database): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    .all<{ name: string }>();
  const tables: string[] = [];
  for (const { name } of results) {
    // D1 allows PRAGMA table_info, not the pragma_table_info() function; virtual tables (FTS) and
    // D1's own tables hold no tenant column.
    if (name.startsWith("_cf_") || name.startsWith("sqlite_")) continue;
    const columns = await db.prepare(`PRAGMA table_info("${name}")`).all<{ name: string }>();
    if (columns.results.some((c) => c.name === "tenant_id")) tables.push(name);
  }
  return tables;
}

/** How many rows of `tenant` each table of `db` holds (`tenants`: its own row). */
async function rowsOf(db: D1Database, tenant: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const tenantRow = await db
    .prepare("SELECT COUNT(*) AS n FROM tenants WHERE id = ?")
    .bind(tenant)
    .first<{ n: number }>();
  counts.tenants = tenantRow?.n ?? 0;
  for (const table of await tenantTables(db)) {
    const row = await db
      .prepare(`SELECT COUNT(*) AS n FROM "${table}" WHERE tenant_id = ?`)
      .bind(tenant)
      .first<{ n: number }>();
    counts[table] = row?.n ?? 0;
  }
  return counts;
}

async function auditActions(db: D1Database, tenant: string): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT action FROM audit_log WHERE tenant_id = ? ORDER BY id")
    .bind(tenant)
    .all<{ action: string }>();
  return results.map((r) => r.action);
}

/** Polls `check` until it holds; fails clearly after `ms` (a room writes its audit entry after it
 * answered, in `waitUntil`). */
async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function deliverDeadLetter(id: string, body: unknown): Promise<string[]> {
  const batch = createMessageBatch<unknown>(DEAD_LETTERS, [{ id, timestamp: new Date(), attempts: 6, body }]);
  const ctx = createExecutionContext();
  await worker.queue(batch, env, ctx);
  return (await getQueueResult(batch, ctx)).explicitAcks;
}

interface Scenario {
  tenant: string;
  owner: User;
  member: User;
  roomId: string;
  privateId: string;
  token: { id: string; token: string; userId: string };
  attachmentId: string;
  letterId: string;
}

/** Everything a tenant's directory holds, made through the public surface: sign-ins (dev login),
 * rooms and memberships, an API token used as a bearer, an upload, an export, a dead letter, and
 * audited actions (one written by the room object: an admin deleting someone's message). */
async function exercise(tenant: string): Promise<Scenario> {
  const owner = await login(tenant);
  const member = await login(tenant);
  const roomId = await createRoom(owner);
  await join(member, roomId);
  const created = await api(owner, "POST", "/api/rooms", {
    name: unique("private"),
    kind: "private",
    members: [member.id],
  });
  expect(created.status).toBe(201);
  const privateId = (await json<{ id: string }>(created)).id;

  const sent = await json<{ seq: number }>(
    api(member, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("c"), text: "hello" }),
  );
  expect((await api(owner, "DELETE", `/api/rooms/${roomId}/messages/${sent.seq}`)).status).toBe(201);

  const tokenRes = await api(owner, "POST", "/api/tokens", { name: "ci" });
  expect(tokenRes.status).toBe(201);
  const token = await json<Scenario["token"]>(tokenRes);
  expect(token.token).toMatch(TOKEN);
  expect((await api(owner, "POST", `/api/rooms/${roomId}/members`, { userId: token.userId })).status).toBe(
    200,
  );
  const bot = { token: token.token };
  expect(await json(api(bot, "GET", "/api/me"))).toMatchObject({
    user: { id: token.userId, role: "bot" },
    tenant: { id: tenant },
  });
  expect(
    (await api(bot, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("b"), text: "from the bot" }))
      .status,
  ).toBe(201);

  const uploaded = await fetchWorker(`/api/rooms/${roomId}/attachments`, {
    method: "POST",
    headers: { ...authHeaders(owner.token), "x-filename": "note.txt", "content-type": "text/plain" },
    body: "residency",
  });
  expect(uploaded.status).toBe(201);
  const attachmentId = (await json<{ id: string }>(uploaded)).id;

  expect((await api(owner, "POST", "/api/admin/exports", { roomId })).status).toBe(202);

  const letterId = unique("letter");
  const letter = { tenantId: tenant, roomId, event: { kind: "message", seq: "poison" } };
  expect(await deliverDeadLetter(letterId, letter)).toEqual([letterId]);
  const letters = await json<{ deadLetters: { id: string }[] }>(api(owner, "GET", "/api/admin/dead-letters"));
  expect(letters.deadLetters.map((l) => l.id)).toEqual([letterId]);

  const audit = await json<{ entries: { action: string }[] }>(api(owner, "GET", "/api/audit"));
  expect(audit.entries.map((e) => e.action)).toEqual(
    expect.arrayContaining(["user.provisioned", "room.member_added", "token.created", "export.requested"]),
  );
  return { tenant, owner, member, roomId, privateId, token, attachmentId, letterId };
}

/** Each tenant's story runs once per file; the tests below read what it left. */
const scenarios = new Map<string, Promise<Scenario>>();
function scenario(tenant: string): Promise<Scenario> {
  let found = scenarios.get(tenant);
  if (!found) {
    found = exercise(tenant);
    scenarios.set(tenant, found);
  }
  return found;
}

/** The directory rows a scenario leaves in its own database, and none anywhere else. */
async function expectOnlyIn(home: D1Database, away: D1Database, s: Scenario) {
  expect(await rowsOf(home, s.tenant)).toMatchObject({
    tenants: 1,
    users: 3, // owner, member, the token's bot
    rooms: 2,
    memberships: 5, // owner, member and bot in the channel; owner and member in the private room
    api_tokens: 1,
    attachments: 1,
    exports: 1,
    dead_letters: 1,
  });
  // The room writes the admin deletion's audit entry after it answered.
  await eventually("the room's audit entry", async () =>
    (await auditActions(home, s.tenant)).includes("message.deleted_by_admin"),
  );
  expect(await auditActions(home, s.tenant)).toEqual(
    expect.arrayContaining([
      "user.provisioned",
      "room.member_joined",
      "room.member_added",
      "message.deleted_by_admin",
      "token.created",
      "export.requested",
    ]),
  );
  const elsewhere = await rowsOf(away, s.tenant);
  expect(Object.keys(elsewhere)).toEqual(expect.arrayContaining(["tenants", "users", "audit_log"]));
  expect(Object.entries(elsewhere).filter(([, n]) => n > 0)).toEqual([]);
}

describe("one directory per jurisdiction", () => {
  it("keeps everything of an EU-pinned tenant in DB_EU and nothing of it in DB", async () => {
    expect(JSON.parse(env.TENANT_JURISDICTIONS)).toMatchObject({ [EU]: "eu" });
    const s = await scenario(EU);
    await expectOnlyIn(env.DB_EU, env.DB, s);
    expect(s.token.token.startsWith("pk_eu_")).toBe(true);
  });

  it("keeps everything of a tenant pinned nowhere in DB and nothing of it in DB_EU", async () => {
    expect(JSON.parse(env.TENANT_JURISDICTIONS)).not.toHaveProperty(HOME);
    const s = await scenario(HOME);
    await expectOnlyIn(env.DB, env.DB_EU, s);
    expect(s.token.token.startsWith("pk_k_")).toBe(true);
  });

  it("answers 404 across tenants of different jurisdictions, with nothing changed", async () => {
    const eu = await scenario(EU);
    const home = await scenario(HOME);
    for (const [me, them] of [
      [eu, home],
      [home, eu],
    ] as const) {
      for (const caller of [me.owner, { token: me.token.token }]) {
        expect((await api(caller, "POST", `/api/rooms/${them.roomId}/join`)).status).toBe(404);
        expect((await api(caller, "GET", `/api/rooms/${them.roomId}/messages`)).status).toBe(404);
        expect((await api(caller, "GET", `/api/rooms/${them.privateId}/messages`)).status).toBe(404);
        expect((await api(caller, "GET", `/api/attachments/${them.attachmentId}`)).status).toBe(404);
      }
      expect(
        (await api(me.owner, "POST", `/api/rooms/${me.roomId}/members`, { userId: them.member.id })).status,
      ).toBe(404);
      expect((await api(me.owner, "PATCH", `/api/users/${them.member.id}`, { role: "admin" })).status).toBe(
        404,
      );
      expect((await api(me.owner, "DELETE", `/api/tokens/${them.token.id}`)).status).toBe(404);
      expect((await api(me.owner, "POST", `/api/admin/dead-letters/${them.letterId}/replay`)).status).toBe(
        404,
      );
    }
    // Nothing moved: each tenant still has its rows at home, and none abroad.
    await expectOnlyIn(env.DB_EU, env.DB, eu);
    await expectOnlyIn(env.DB, env.DB_EU, home);
    // And the tokens still work, each in its own tenant.
    expect((await api({ token: eu.token.token }, "GET", `/api/rooms/${eu.roomId}/messages`)).status).toBe(
      200,
    );
    expect((await api({ token: home.token.token }, "GET", `/api/rooms/${home.roomId}/messages`)).status).toBe(
      200,
    );
  });

  it("refuses a token altered to name another jurisdiction, and one revoked in its directory", async () => {
    const eu = await scenario(EU);
    const home = await scenario(HOME);
    const unnamed = eu.token.token.replace(/^pk_eu_/, "pk_");
    const renamed = home.token.token.replace(/^pk_/, "pk_eu_");
    for (const token of [unnamed, renamed, home.token.token.replace(/^pk_/, "pk_fedramp_")]) {
      const res = await api({ token }, "GET", "/api/me");
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
    }
    const extra = await json<Scenario["token"]>(
      api(eu.owner, "POST", "/api/tokens", { name: "short-lived" }),
    );
    expect((await api({ token: extra.token }, "GET", "/api/me")).status).toBe(200);
    expect((await api(eu.owner, "DELETE", `/api/tokens/${extra.id}`)).status).toBe(200);
    expect((await api({ token: extra.token }, "GET", "/api/me")).status).toBe(401);
  });

  it("finds a token issued before tokens named their jurisdiction, only in its tenant's directory", async () => {
    const tenant = "eu-umbrella";
    const owner = await login(tenant);
    const bot = await json<Scenario["token"]>(api(owner, "POST", "/api/tokens", { name: "old-bot" }));
    // A token of the old form (no jurisdiction in it), as the EU directory would hold it once the
    // tenant's rows moved there, and a stale copy of the same rows left behind in DB.
    const id = `k_${unique("legacy")
      .replace(/[^0-9a-z]/g, "")
      .padEnd(20, "0")
      .slice(0, 20)}`;
    const legacy = `pk_${id}_${"A".repeat(43)}`;
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(legacy));
    const hash = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
    const insertToken = `INSERT INTO api_tokens (id, tenant_id, user_id, name, hash, rooms, created_by, created_at)
                         VALUES (?, ?, ?, 'legacy', ?, NULL, ?, ?)`;
    await env.DB_EU.prepare(insertToken).bind(id, tenant, bot.userId, hash, owner.id, Date.now()).run();
    await env.DB.batch([
      env.DB.prepare("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, 0)").bind(tenant, tenant),
      env.DB.prepare(
        "INSERT INTO users (id, tenant_id, email, name, role, created_at, last_login_at) VALUES (?, ?, 'stale', 'stale', 'owner', 0, 0)",
      ).bind(owner.id, tenant),
      env.DB.prepare(
        "INSERT INTO users (id, tenant_id, email, name, role, created_at, last_login_at) VALUES (?, ?, ?, 'old-bot', 'bot', 0, 0)",
      ).bind(bot.userId, tenant, `token:${bot.id}`),
      env.DB.prepare(insertToken).bind(id, tenant, bot.userId, hash, owner.id, Date.now()),
    ]);

    expect(await json(api({ token: legacy }, "GET", "/api/me"))).toMatchObject({
      user: { id: bot.userId, role: "bot" },
      tenant: { id: tenant },
    });
    // Revoked where the tenant's directory is: the stale copy in DB, unrevoked, does not keep it alive.
    expect((await api(owner, "DELETE", `/api/tokens/${id}`)).status).toBe(200);
    expect((await api({ token: legacy }, "GET", "/api/me")).status).toBe(401);
  });

  it("removes a pinned tenant's unclaimed upload from its own directory when the room cleans up", async () => {
    const eu = await scenario(EU);
    const before = await env.DB_EU.prepare("SELECT COUNT(*) AS n FROM attachments WHERE id = ?")
      .bind(eu.attachmentId)
      .first<{ n: number }>();
    expect(before?.n).toBe(1);
    const afterGrace = Date.now() + 366 * 86_400_000;
    expect(await maintenanceOf(roomStub(env, EU, eu.roomId)).cleanupAttachments(afterGrace)).toBe(1);
    const after = await env.DB_EU.prepare("SELECT COUNT(*) AS n FROM attachments WHERE id = ?")
      .bind(eu.attachmentId)
      .first<{ n: number }>();
    expect(after?.n).toBe(0);
    expect(await env.FILES_EU.list({ prefix: `${EU}/attachments/${eu.roomId}/` })).toMatchObject({
      objects: [],
    });
  });

  it("records a dead letter that names no tenant in the default directory, for the operator", async () => {
    const id = unique("orphan");
    expect(await deliverDeadLetter(id, "not an archive message")).toEqual([id]);
    const count = (db: D1Database) =>
      db.prepare("SELECT COUNT(*) AS n FROM dead_letters WHERE id = ?").bind(id).first<{ n: number }>();
    expect((await count(env.DB))?.n).toBe(1);
    expect((await count(env.DB_EU))?.n).toBe(0);
  });
});
