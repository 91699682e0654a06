import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { COMMAND_TYPES, COMMANDS, type CommandType, commandRequest } from "../../protocol/commands.ts";
import type { SequencedCommand } from "../../protocol/index.ts";
import { app } from "../../worker/app.ts";
import worker from "../../worker/index.ts";
import { fetchWorker, json, unique } from "../helpers.ts";
import { mint, publishAccessKeys } from "./teams.ts";

// Production's shape of a cross-site request forgery: behind a hostname-level Access application,
// Access forwards the victim's CF_Authorization cookie (SameSite=None) and adds the
// Cf-Access-Jwt-Assertion header to the forged request too. Only Origin tells it apart.

publishAccessKeys();

const EVIL = "https://evil.test";
const OURS = "https://chat.acme.test"; // one of this project's ALLOWED_ORIGINS

interface Setup {
  /** The victim: acme's owner (boss@acme.test), so admin routes are reachable. */
  boss: string;
  bossId: string;
  member: string;
  memberId: string;
  outsiderId: string;
  /** Private, with boss and member: leaving it shows. */
  privateRoom: string;
  /** A channel boss has not joined: joining it shows. */
  channel: string;
  seq: number;
  tokenId: string;
  exportId: string;
  letterId: string;
  /** One of boss's push subscriptions. */
  subscriptionId: string;
  /** An incoming webhook's URL path, into the private room. */
  hookPath: string;
  /** An outgoing webhook of acme's. */
  webhookId: string;
}

let s: Setup;

function asUser(token: string, method: string, path: string, body?: unknown) {
  return fetchWorker(path, {
    method,
    headers: {
      "cf-access-jwt-assertion": token,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function signIn(email: string): Promise<{ token: string; id: string }> {
  const token = await mint({ email });
  const me = await json<{ user: { id: string } }>(asUser(token, "GET", "/api/me"));
  return { token, id: me.user.id };
}

beforeAll(async () => {
  const boss = await signIn("boss@acme.test");
  const member = await signIn(`${unique("m")}@acme.test`);
  const outsider = await signIn(`${unique("o")}@acme.test`);
  const privateRoom = await json<{ id: string }>(
    asUser(boss.token, "POST", "/api/rooms", { name: unique("p"), kind: "private", members: [member.id] }),
  );
  const channel = await json<{ id: string }>(
    asUser(member.token, "POST", "/api/rooms", { name: unique("c"), kind: "channel" }),
  );
  const sent = await json<{ seq: number }>(
    asUser(boss.token, "POST", `/api/rooms/${privateRoom.id}/messages`, { clientId: "first", text: "hello" }),
  );
  const token = await json<{ id: string }>(asUser(boss.token, "POST", "/api/tokens", { name: "bot" }));
  const exported = await json<{ id: string }>(
    asUser(boss.token, "POST", "/api/admin/exports", { roomId: privateRoom.id }),
  );
  // A dead letter of acme's, as the dead-letter queue's consumer records it.
  const letterId = unique("letter");
  const batch = createMessageBatch<unknown>("parley-room-events-dlq", [
    {
      id: letterId,
      timestamp: new Date(),
      attempts: 6,
      body: { tenantId: "acme", roomId: privateRoom.id, event: { seq: 999 } },
    },
  ]);
  const ctx = createExecutionContext();
  await worker.queue(batch, env, ctx);
  await getQueueResult(batch, ctx);
  const subscription = await json<{ id: string }>(
    asUser(boss.token, "POST", "/api/push/subscriptions", PUSH_SUBSCRIPTION("laptop")),
  );
  const hook = await json<{ url: string }>(
    asUser(boss.token, "POST", `/api/rooms/${privateRoom.id}/hooks`, { name: "ci" }),
  );
  // Pins in the channel only: nothing the tests do is delivered, so its state holds still.
  const webhook = await json<{ id: string }>(
    asUser(boss.token, "POST", "/api/admin/webhooks", {
      url: "https://hooks.acme.test/parley",
      rooms: [channel.id],
      kinds: ["pin"],
    }),
  );
  s = {
    boss: boss.token,
    bossId: boss.id,
    member: member.token,
    memberId: member.id,
    outsiderId: outsider.id,
    privateRoom: privateRoom.id,
    channel: channel.id,
    seq: sent.seq,
    tokenId: token.id,
    exportId: exported.id,
    letterId,
    subscriptionId: subscription.id,
    hookPath: new URL(hook.url).pathname,
    webhookId: webhook.id,
  };
});

/** A browser's push subscription (production accepts https endpoints only). */
function PUSH_SUBSCRIPTION(device: string) {
  return {
    endpoint: `https://push.acme.test/send/${device}`,
    keys: { p256dh: `B${"A".repeat(86)}`, auth: "A".repeat(22) },
  };
}

/** A request that would succeed for the victim, by route; `raw` bodies are sent as they are. */
interface Forged {
  path: string;
  json?: unknown;
  raw?: { body: string; headers: Record<string, string> };
}

/**
 * Every state-changing route of the app (by Hono's `method path`), with a request that the route
 * would carry out for boss. A route missing here fails the test: a new route must be added.
 */
const FORGED: Record<string, (s: Setup) => Forged> = {
  "POST /auth/dev/login": () => ({
    path: "/auth/dev/login",
    json: { email: "mallory@acme.test", name: "Mallory", tenant: "acme" },
  }),
  "POST /auth/dev/logout": () => ({ path: "/auth/dev/logout" }),
  "POST /api/rooms": () => ({ path: "/api/rooms", json: { name: unique("forged"), kind: "channel" } }),
  "PATCH /api/rooms/:roomId": (s) => ({ path: `/api/rooms/${s.privateRoom}`, json: { topic: "forged" } }),
  "POST /api/rooms/:roomId/join": (s) => ({ path: `/api/rooms/${s.channel}/join` }),
  "POST /api/rooms/:roomId/leave": (s) => ({ path: `/api/rooms/${s.privateRoom}/leave` }),
  "POST /api/rooms/:roomId/members": (s) => ({
    path: `/api/rooms/${s.privateRoom}/members`,
    json: { userId: s.outsiderId },
  }),
  "DELETE /api/rooms/:roomId/members/:userId": (s) => ({
    path: `/api/rooms/${s.privateRoom}/members/${s.memberId}`,
  }),
  "PUT /api/rooms/:roomId/read": (s) => ({ path: `/api/rooms/${s.privateRoom}/read`, json: { seq: s.seq } }),
  "POST /api/rooms/:roomId/attachments": (s) => ({
    path: `/api/rooms/${s.privateRoom}/attachments`,
    // What a cross-site form can send: text/plain, no preflight.
    raw: { body: "forged", headers: { "content-type": "text/plain", "x-filename": "forged.txt" } },
  }),
  "POST /api/admin/dead-letters/replay": () => ({ path: "/api/admin/dead-letters/replay" }),
  "POST /api/admin/dead-letters/:id/replay": (s) => ({
    path: `/api/admin/dead-letters/${s.letterId}/replay`,
  }),
  "POST /api/admin/exports": (s) => ({ path: "/api/admin/exports", json: { roomId: s.privateRoom } }),
  "DELETE /api/admin/exports/:id": (s) => ({ path: `/api/admin/exports/${s.exportId}` }),
  "PATCH /api/tenant": () => ({ path: "/api/tenant", json: { retentionDays: 1 } }),
  "POST /api/tokens": () => ({ path: "/api/tokens", json: { name: "forged" } }),
  "DELETE /api/tokens/:tokenId": (s) => ({ path: `/api/tokens/${s.tokenId}` }),
  "PATCH /api/users/:userId": (s) => ({ path: `/api/users/${s.memberId}`, json: { role: "admin" } }),
  // From one of Parley's pages these run in this order: the member is back before anything else.
  "POST /api/users/:userId/deactivate": (s) => ({ path: `/api/users/${s.memberId}/deactivate` }),
  "POST /api/users/:userId/reactivate": (s) => ({ path: `/api/users/${s.memberId}/reactivate` }),
  "POST /api/admin/history/catch-up": () => ({ path: "/api/admin/history/catch-up" }),
  "PUT /api/notifications": () => ({ path: "/api/notifications", json: { default: "nothing" } }),
  "PUT /api/notifications/rooms/:roomId": (s) => ({
    path: `/api/notifications/rooms/${s.privateRoom}`,
    json: { mode: "nothing" },
  }),
  "POST /api/push/subscriptions": () => ({
    path: "/api/push/subscriptions",
    json: PUSH_SUBSCRIPTION("mallory"),
  }),
  "DELETE /api/push/subscriptions/:id": (s) => ({ path: `/api/push/subscriptions/${s.subscriptionId}` }),
  "POST /api/push/test": () => ({ path: "/api/push/test" }),
  "POST /api/rooms/:roomId/hooks": (s) => ({
    path: `/api/rooms/${s.privateRoom}/hooks`,
    json: { name: "forged" },
  }),
  "POST /api/admin/webhooks": () => ({ path: "/api/admin/webhooks", json: { url: "https://evil.test/x" } }),
  "POST /api/admin/webhooks/:id/enable": (s) => ({ path: `/api/admin/webhooks/${s.webhookId}/enable` }),
  "DELETE /api/admin/webhooks/:id": (s) => ({ path: `/api/admin/webhooks/${s.webhookId}` }),
  "POST /api/admin/webhooks/:id/replay": (s) => ({
    path: `/api/admin/webhooks/${s.webhookId}/replay`,
    json: { from: 1 },
  }),
  "POST /api/admin/scim-token": () => ({ path: "/api/admin/scim-token" }),
  "POST /scim/v2/Users": () => ({ path: "/scim/v2/Users", json: { userName: "mallory@acme.test" } }),
  "PUT /scim/v2/Users/:id": (s) => ({
    path: `/scim/v2/Users/${s.memberId}`,
    json: { userName: "x@acme.test" },
  }),
  "PATCH /scim/v2/Users/:id": (s) => ({
    path: `/scim/v2/Users/${s.memberId}`,
    json: {
      schemas: ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
      Operations: [{ op: "replace", path: "active", value: false }],
    },
  }),
  "DELETE /scim/v2/Users/:id": (s) => ({ path: `/scim/v2/Users/${s.memberId}` }),
  "POST /scim/v2/Groups": () => ({ path: "/scim/v2/Groups", json: { displayName: "forged" } }),
  "PUT /scim/v2/Groups/:id": () => ({ path: "/scim/v2/Groups/g_x", json: { displayName: "forged" } }),
  "PATCH /scim/v2/Groups/:id": () => ({ path: "/scim/v2/Groups/g_x", json: { Operations: [] } }),
  "DELETE /scim/v2/Groups/:id": () => ({ path: "/scim/v2/Groups/g_x" }),
  "POST /hooks/:token": (s) => ({ path: s.hookPath, json: { text: "forged", clientId: "forged-hook" } }),
};

/** `type`'s example command (`CommandSpec.example`) with this clientId and target. */
function exampleCommand(type: CommandType, clientId: string, target: number): SequencedCommand {
  const { example } = COMMANDS[type];
  return { type, clientId, ...(type === "send" ? {} : { target }), ...example } as SequencedCommand;
}

/** A forged command for each command route, from the registry (protocol/commands.ts). */
for (const type of COMMAND_TYPES) {
  const { method, path } = COMMANDS[type].http;
  FORGED[`${method} /api/rooms/:roomId${path}`] = (s) => {
    const request = commandRequest(s.privateRoom, exampleCommand(type, `forged-${type}`, s.seq));
    return { path: request.path, ...(request.body ? { json: request.body } : {}) };
  };
}

/** The app's state-changing routes, from its own route table. */
function writeRoutes(): string[] {
  const keys = app.routes
    .filter((r) => !["GET", "HEAD", "OPTIONS", "ALL"].includes(r.method))
    .map((r) => `${r.method} ${r.path}`);
  return [...new Set(keys)];
}

function send(route: string, headers: Record<string, string>): Promise<Response> {
  const method = route.split(" ")[0] ?? "";
  const forged = FORGED[route]?.(s);
  if (!forged) throw new Error(`no forged request for ${route}: add one to FORGED`);
  const body = forged.raw?.body ?? (forged.json === undefined ? undefined : JSON.stringify(forged.json));
  return fetchWorker(forged.path, {
    method,
    headers: {
      ...headers,
      ...(forged.json === undefined ? {} : { "content-type": "application/json" }),
      ...forged.raw?.headers,
      ...(body === undefined ? {} : { "content-length": String(new TextEncoder().encode(body).byteLength) }),
    },
    body,
  });
}

/** Everything the forged requests could change, as boss and the member see it. */
async function snapshot() {
  const get = (token: string, path: string) => json(asUser(token, "GET", path));
  const stats = await json<Record<string, unknown>>(asUser(s.boss, "GET", "/api/admin/stats"));
  return {
    bossRooms: await get(s.boss, "/api/rooms"),
    memberRooms: await get(s.member, "/api/rooms"),
    history: await get(s.boss, `/api/rooms/${s.privateRoom}/messages?after=0`),
    audit: await get(s.boss, "/api/audit"),
    tokens: await get(s.boss, "/api/tokens"),
    exports: await get(s.boss, "/api/admin/exports"),
    deadLetters: await get(s.boss, "/api/admin/dead-letters"),
    tenant: await get(s.boss, "/api/tenant"),
    users: await get(s.boss, "/api/users?q="),
    notifications: await get(s.boss, "/api/notifications"),
    subscriptions: await get(s.boss, "/api/push/subscriptions"),
    webhooks: await get(s.boss, "/api/admin/webhooks"),
    counts: { rooms: stats.rooms, users: stats.users, attachments: stats.attachments },
  };
}

describe("a state-changing request a browser could send from another site", () => {
  it("is refused on every write route, with the victim's cookie and Access's header, and changes nothing", async () => {
    const routes = writeRoutes();
    expect(routes.length).toBeGreaterThanOrEqual(Object.keys(FORGED).length);
    const before = await snapshot();
    const production = { cookie: `CF_Authorization=${s.boss}`, "cf-access-jwt-assertion": s.boss };
    for (const route of routes) {
      for (const origin of [EVIL, "null", "https://chat.acme.test.evil.test", undefined]) {
        const res = await send(route, { ...production, ...(origin ? { origin } : {}) });
        expect(res.status, `${route} from ${origin}`).toBe(403);
        expect(await res.json(), route).toEqual({
          error: { code: "forbidden", message: expect.stringContaining("cross-site") },
        });
      }
    }
    // Fetch Metadata gives a cross-site request away even without a cookie.
    for (const route of routes) {
      const res = await send(route, {
        "cf-access-jwt-assertion": s.boss,
        "sec-fetch-site": "cross-site",
        origin: EVIL,
      });
      expect(res.status, route).toBe(403);
    }
    expect(await snapshot()).toEqual(before);
  });

  it("leaves the named cases as they were: a private room, a channel, the uploads, the dead letters", async () => {
    const production = {
      cookie: `CF_Authorization=${s.boss}`,
      "cf-access-jwt-assertion": s.boss,
      origin: EVIL,
    };
    const rooms = await json<{ id: string; joined: boolean }[]>(asUser(s.boss, "GET", "/api/rooms"));
    expect(rooms).toContainEqual(expect.objectContaining({ id: s.privateRoom, joined: true }));
    expect(rooms).toContainEqual(expect.objectContaining({ id: s.channel, joined: false }));
    for (const route of [
      "POST /api/rooms/:roomId/leave",
      "POST /api/rooms/:roomId/join",
      "POST /api/rooms/:roomId/attachments",
      "POST /api/admin/dead-letters/replay",
    ]) {
      expect((await send(route, production)).status, route).toBe(403);
    }
    const after = await json<{ id: string; joined: boolean }[]>(asUser(s.boss, "GET", "/api/rooms"));
    expect(after).toContainEqual(expect.objectContaining({ id: s.privateRoom, joined: true }));
    expect(after).toContainEqual(expect.objectContaining({ id: s.channel, joined: false }));
    const uploads = await env.DB.prepare("SELECT COUNT(*) AS n FROM attachments WHERE room_id = ?")
      .bind(s.privateRoom)
      .first<{ n: number }>();
    expect(uploads?.n).toBe(0);
    const letters = await json<{ deadLetters: { id: string }[] }>(
      asUser(s.boss, "GET", "/api/admin/dead-letters"),
    );
    expect(letters.deadLetters.map((l) => l.id)).toContain(s.letterId);
  });

  it("is carried out from one of Parley's pages, and for clients that are not browsers", async () => {
    const fromOurPage = {
      cookie: `CF_Authorization=${s.boss}`,
      "cf-access-jwt-assertion": s.boss,
      origin: OURS,
    };
    for (const route of writeRoutes()) {
      const res = await send(route, fromOurPage);
      const body = (await res.json()) as { error?: { message: string } };
      expect(body.error?.message ?? "", route).not.toContain("cross-site");
      expect(res.status, route).toBeLessThan(500);
    }
    // A bot sends no cookie and no Fetch Metadata, and needs no Origin.
    const bot = await fetchWorker(`/api/rooms/${s.channel}/messages`, {
      method: "POST",
      headers: { "cf-access-jwt-assertion": s.member, "content-type": "application/json" },
      body: JSON.stringify({ clientId: "bot-1", text: "from a bot" }),
    });
    expect(bot.status).toBe(201);
  });
});
