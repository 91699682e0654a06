/**
 * @module Observability through the public surface: the request log line and `x-request-id` of real
 * requests, the data points the worker, the room objects and the queue consumer write (to a fake
 * Analytics Engine binding put in their env), and the admin stats endpoint.
 */
import { createExecutionContext, createMessageBatch, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { Hono } from "hono";
import { afterEach, describe, expect, it, type MockInstance, vi } from "vitest";
import type { Room } from "../durable-objects/room.ts";
import type { LogEvent } from "../platform/log.ts";
import { record } from "../platform/metrics.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { onError } from "../worker/errors.ts";
import worker from "../worker/index.ts";
import { observeRequests } from "../worker/observability/request.ts";
import { roomStub } from "../worker/stubs.ts";
import type { AppEnv } from "../worker/types.ts";
import {
  api,
  authHeaders,
  Client,
  createRoom,
  fetchWorker,
  json,
  login,
  type User,
  unique,
} from "./helpers.ts";

/** Everything written to the console from now until the test ends, as lines in the order written. */
function captureConsole() {
  const quiet = () => undefined;
  const spies: MockInstance[] = [
    vi.spyOn(console, "log").mockImplementation(quiet),
    vi.spyOn(console, "info").mockImplementation(quiet),
    vi.spyOn(console, "warn").mockImplementation(quiet),
    vi.spyOn(console, "error").mockImplementation(quiet),
  ];
  const lines = () =>
    spies
      .flatMap((s) => s.mock.calls.map((args, i) => ({ at: s.mock.invocationCallOrder[i] ?? 0, args })))
      .sort((x, y) => x.at - y.at)
      .map(({ args }) => args.map(String).join(" "));
  const events = () =>
    lines().flatMap((l) => {
      try {
        return [JSON.parse(l) as LogEvent];
      } catch {
        return [];
      }
    });
  return { lines, events };
}

afterEach(() => {
  vi.restoreAllMocks();
});

/** A stand-in for the Analytics Engine binding that keeps what is written. */
class FakeDataset {
  readonly points: AnalyticsEngineDataPoint[] = [];
  writeDataPoint(point?: AnalyticsEngineDataPoint): void {
    if (point) this.points.push(point);
  }
  named(name: string): AnalyticsEngineDataPoint[] {
    return this.points.filter((p) => p.blobs?.[0] === name);
  }
}

/** Signs in with a known email, so a test can look for it in the logs. */
async function loginAs(tenant: string, email: string): Promise<User> {
  const res = await fetchWorker("/auth/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, name: "Ada", tenant }),
  });
  const { token } = await json<{ token: string }>(res);
  const me = await json<{ user: { id: string } }>(api({ token }, "GET", "/api/me"));
  return { token, id: me.user.id, name: "Ada", tenant };
}

/** Points the room object at `dataset` instead of its METRICS binding. */
async function withFakeMetrics(user: User, roomId: string): Promise<FakeDataset> {
  const dataset = new FakeDataset();
  await runInDurableObject(roomStub(env, user.tenant, roomId), (room: Room) => {
    const r = room as unknown as { env: Env };
    r.env = { ...r.env, METRICS: dataset };
  });
  return dataset;
}

async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe("the request log", () => {
  it("writes one line per request with the route pattern, status, time and ids, and none of the message, token, email or query", async () => {
    const tenant = unique("t");
    const email = `${unique("ada")}@example.com`;
    const ada = await loginAs(tenant, email);
    const roomId = await createRoom(ada);
    const secretText = `launch code ${unique("zz")}`;
    const out = captureConsole();

    const sent = await api(ada, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: unique("c"),
      text: secretText,
    });
    expect(sent.status).toBe(201);
    const history = await api(ada, "GET", `/api/rooms/${roomId}/messages?after=0&apikey=hunter2`);
    expect(history.status).toBe(200);
    expect(await history.text()).toContain(secretText);

    const requests = out.events().filter((e) => e.event === "request");
    expect(requests).toEqual([
      {
        event: "request",
        requestId: sent.headers.get("x-request-id"),
        method: "POST",
        route: "/api/rooms/:roomId/messages",
        status: 201,
        ms: expect.any(Number),
        tenant,
        user: ada.id,
        room: roomId,
      },
      expect.objectContaining({
        method: "GET",
        route: "/api/rooms/:roomId/messages",
        status: 200,
        requestId: history.headers.get("x-request-id"),
      }),
    ]);
    const everything = out.lines().join("\n");
    for (const secret of [secretText, ada.token, email, "hunter2", roomId.concat("/messages")])
      expect(everything).not.toContain(secret);
  });

  it("logs refused and unknown requests too, without a tenant or user", async () => {
    const out = captureConsole();
    expect((await fetchWorker("/api/rooms")).status).toBe(401);
    expect((await fetchWorker("/api/no-such-thing")).status).toBe(401);
    expect((await fetchWorker("/auth/nowhere")).status).toBe(404);
    // A path that is not the Worker's own goes to the web client before the app runs: no line.
    expect(await (await fetchWorker("/nowhere")).text()).toBe("web client: /nowhere");
    expect(out.events().filter((e) => e.event === "request")).toMatchObject([
      { route: "/api/rooms", status: 401, tenant: null, user: null },
      { route: "unmatched", status: 401, tenant: null, user: null },
      { route: "unmatched", status: 404, tenant: null, user: null },
    ]);
  });

  it("logs a WebSocket upgrade with its 101, and the socket still works", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const out = captureConsole();
    const res = await Client.upgrade(ada, roomId);
    expect(res.status).toBe(101);
    expect(res.webSocket).toBeTruthy();
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    res.webSocket?.accept();
    res.webSocket?.close(1000, "bye");
    expect(out.events().filter((e) => e.event === "request")).toMatchObject([
      {
        route: "/api/rooms/:roomId/ws",
        status: 101,
        room: roomId,
        requestId: res.headers.get("x-request-id"),
      },
    ]);
  });
});

describe("the request id", () => {
  it("is Cloudflare's ray id when the request has one, and a fresh id per request otherwise", async () => {
    const ray = "8f1c2d3e4a5b6c7d-AMS";
    const withRay = await fetchWorker("/healthz", { headers: { "cf-ray": ray } });
    expect(withRay.headers.get("x-request-id")).toBe(ray);
    const first = (await fetchWorker("/healthz")).headers.get("x-request-id");
    const second = (await fetchWorker("/healthz")).headers.get("x-request-id");
    expect(first).toMatch(/^[0-9a-f-]{36}$/);
    expect(second).not.toBe(first);
  });

  it("is not taken from a cf-ray header that is not a ray id", async () => {
    const res = await fetchWorker("/healthz", { headers: { "cf-ray": '"><script>alert(1)</script>' } });
    expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("ties an unexpected error's log line to its request line, and the client gets no detail", async () => {
    const app = new Hono<AppEnv>()
      .use("*", observeRequests)
      .get("/boom/:roomId", () => {
        throw new Error("database password is swordfish");
      })
      .onError(onError);
    const out = captureConsole();
    const res = await app.fetch(new Request("http://parley.test/boom/r_00000000000000000000"), env);
    expect(res.status).toBe(500);
    expect(await res.text()).not.toContain("swordfish");
    const id = res.headers.get("x-request-id");
    expect(out.events()).toMatchObject([
      { event: "unhandled_error", requestId: id, route: "/boom/:roomId", method: "GET" },
      { event: "request", requestId: id, route: "/boom/:roomId", status: 500 },
    ]);
  });
});

describe("metrics", () => {
  it("writes a data point indexed by tenant, with the metric's name first", () => {
    const dataset = new FakeDataset();
    record(
      { METRICS: dataset },
      {
        name: "http",
        tenant: "acme",
        route: "/api/rooms/:roomId/messages",
        method: "POST",
        status: 201,
        ms: 12,
      },
    );
    record(
      { METRICS: dataset },
      { name: "append", tenant: "acme", room: "r_1", kind: "message", count: 1, seq: 42 },
    );
    record(
      { METRICS: dataset },
      {
        name: "queue_batch",
        queue: "parley-room-events",
        outcome: "ok",
        size: 3,
        redelivered: 1,
        maxAttempts: 2,
        ms: 8,
      },
    );
    expect(dataset.points).toEqual([
      {
        indexes: ["acme"],
        blobs: ["http", "/api/rooms/:roomId/messages", "POST", "2xx"],
        doubles: [12, 201],
      },
      { indexes: ["acme"], blobs: ["append", "r_1", "message"], doubles: [1, 42] },
      { indexes: ["-"], blobs: ["queue_batch", "parley-room-events", "ok"], doubles: [3, 1, 8, 2] },
    ]);
  });

  it("never throws: not with a failing binding, not without one", () => {
    const failing = {
      writeDataPoint(): void {
        throw new Error("analytics engine unavailable");
      },
    };
    vi.spyOn(console, "warn").mockImplementation(() => undefined);
    const metric = {
      name: "http",
      tenant: null,
      route: "/healthz",
      method: "GET",
      status: 200,
      ms: 0,
    } as const;
    expect(() => record({ METRICS: failing }, metric)).not.toThrow();
    expect(() => record({ METRICS: failing }, metric)).not.toThrow();
    expect(() => record({}, metric)).not.toThrow();
  });

  it("records every request the worker answers, by route pattern and status class", async () => {
    const dataset = new FakeDataset();
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const metricsEnv = { ...env, METRICS: dataset };
    await worker.fetch(new Request("http://parley.test/healthz"), metricsEnv, createExecutionContext());
    await worker.fetch(
      new Request(`http://parley.test/api/rooms/${roomId}/messages?after=0`, {
        headers: authHeaders(ada.token),
      }),
      metricsEnv,
      createExecutionContext(),
    );
    expect(dataset.named("http")).toEqual([
      { indexes: ["-"], blobs: ["http", "/healthz", "GET", "2xx"], doubles: [expect.any(Number), 200] },
      {
        indexes: [ada.tenant],
        blobs: ["http", "/api/rooms/:roomId/messages", "GET", "2xx"],
        doubles: [expect.any(Number), 200],
      },
    ]);
  });

  it("records a room's connects, appends, refused frames and disconnects", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const dataset = await withFakeMetrics(ada, roomId);
    const client = await Client.open(ada, roomId);
    await client.ready();
    const seq = await client.sendMessage(unique("c"), "hello");
    client.send("this is not json");
    await client.next("error");
    expect(
      (
        await api(ada, "POST", `/api/rooms/${roomId}/messages/999/reactions`, {
          clientId: unique("c"),
          emoji: "👍",
          on: true,
        })
      ).status,
    ).toBe(404);
    client.close();
    await eventually("the close to be counted", () => dataset.named("ws_close").length > 0);

    const room = { indexes: [ada.tenant] };
    expect(dataset.named("ws_open")).toEqual([{ ...room, blobs: ["ws_open", "room", roomId], doubles: [1] }]);
    expect(dataset.named("append")).toEqual([
      { ...room, blobs: ["append", roomId, "message"], doubles: [1, seq] },
    ]);
    expect(dataset.named("command_error")).toEqual([
      { ...room, blobs: ["command_error", roomId, "bad_request", "frame", "ws"], doubles: [] },
      { ...room, blobs: ["command_error", roomId, "not_found", "react", "http"], doubles: [] },
    ]);
    expect(dataset.named("ws_close")).toEqual([
      { ...room, blobs: ["ws_close", "room", roomId, "1000"], doubles: [] },
    ]);
  });

  it("records each queue batch with its size, redeliveries and outcome", async () => {
    const dataset = new FakeDataset();
    const batch = createMessageBatch<unknown>("parley-room-events", [
      { id: unique("m"), timestamp: new Date(), attempts: 1, body: { not: "an archive message" } },
      { id: unique("m"), timestamp: new Date(), attempts: 3, body: { not: "an archive message" } },
    ]);
    vi.spyOn(console, "error").mockImplementation(() => undefined);
    await worker.queue(batch, { ...env, METRICS: dataset }, createExecutionContext());
    expect(dataset.named("queue_batch")).toEqual([
      {
        indexes: ["-"],
        blobs: ["queue_batch", "parley-room-events", "ok"],
        doubles: [2, 1, expect.any(Number), 3],
      },
    ]);
  });
});

interface Stats {
  tenant: string;
  rooms: { total: number; byKind: Record<string, number> };
  users: { total: number; byRole: Record<string, number> };
  archive: { events: number; messages: number; deletedMessages: number };
  attachments: { count: number; bytes: number };
  deadLetters: { pending: number };
  exports: { total: number; byStatus: Record<string, number>; bytes: number };
  presence: { sessions: number; online: number; away: number; dnd: number } | null;
}

const stats = (user: User) => api(user, "GET", "/api/admin/stats");

/** Hands events to the archive consumer as the room-events queue would. */
async function archive(tenantId: string, roomId: string, events: RoomEvent[]) {
  const batch = createMessageBatch<unknown>(
    "parley-room-events",
    events.map((event) => ({
      id: unique("m"),
      timestamp: new Date(),
      attempts: 1,
      body: { tenantId, roomId, event },
    })),
  );
  await worker.queue(batch, env, createExecutionContext());
}

describe("GET /api/admin/stats", () => {
  it("gives a tenant's admins its counts from the directory, the archive, files, dead letters, exports and presence", async () => {
    const tenant = unique("t");
    const ada = await login(tenant);
    const bob = await login(tenant);
    const general = await createRoom(ada);
    await createRoom(ada);
    const secret = await api(ada, "POST", "/api/rooms", { name: unique("p"), kind: "private" });
    expect(secret.status).toBe(201);

    for (const text of ["one", "two", "three"]) {
      const res = await api(ada, "POST", `/api/rooms/${general}/messages`, { clientId: unique("c"), text });
      expect(res.status).toBe(201);
    }
    expect((await api(ada, "DELETE", `/api/rooms/${general}/messages/4`)).status).toBe(201);
    const { events } = await json<{ events: RoomEvent[] }>(
      api(ada, "GET", `/api/rooms/${general}/messages?after=0`),
    );
    await archive(tenant, general, events);

    const upload = await fetchWorker(`/api/rooms/${general}/attachments`, {
      method: "POST",
      headers: { ...authHeaders(ada.token), "x-filename": "note.txt", "content-type": "text/plain" },
      body: "hello",
    });
    expect(upload.status).toBe(201);

    await worker.queue(
      createMessageBatch<unknown>("parley-room-events-dlq", [
        {
          id: unique("letter"),
          timestamp: new Date(),
          attempts: 6,
          body: { tenantId: tenant, roomId: general, event: { kind: "message", seq: "bad" } },
        },
      ]),
      env,
      createExecutionContext(),
    );
    expect((await api(ada, "POST", "/api/admin/exports", {})).status).toBe(202);

    const presence = await fetchWorker("/api/presence/ws", {
      headers: { upgrade: "websocket", ...authHeaders(bob.token) },
    });
    expect(presence.status).toBe(101);
    presence.webSocket?.accept();

    const res = await stats(ada);
    expect(res.status).toBe(200);
    const body = await json<Stats>(res);
    expect(body).toMatchObject({
      tenant,
      rooms: { total: 3, byKind: { channel: 2, private: 1, dm: 0 } },
      users: { total: 2, byRole: { owner: 1, admin: 0, member: 1, guest: 0, bot: 0 } },
      archive: { messages: 2, deletedMessages: 1 },
      attachments: { count: 1, bytes: 5 },
      deadLetters: { pending: 1 },
      exports: { total: 1 },
      presence: { sessions: 1, online: 1, away: 0, dnd: 0 },
    });
    // The room's own events reach the archive through the real queue too, in their own time.
    expect(body.archive.events).toBeGreaterThanOrEqual(events.length);
    presence.webSocket?.close(1000, "bye");
  });

  it("is refused to members", async () => {
    const tenant = unique("t");
    await login(tenant);
    const member = await login(tenant);
    const res = await stats(member);
    expect(res.status).toBe(403);
    expect(await json(res)).toMatchObject({ error: { code: "forbidden" } });
  });

  it("counts only the caller's own tenant", async () => {
    const busy = await login(unique("t"));
    const busyRoom = await createRoom(busy);
    await api(busy, "POST", `/api/rooms/${busyRoom}/messages`, { clientId: unique("c"), text: "hi" });
    await login(busy.tenant);

    const quiet = await login(unique("t"));
    await createRoom(quiet);
    expect(await json<Stats>(stats(quiet))).toMatchObject({
      tenant: quiet.tenant,
      rooms: { total: 1 },
      users: { total: 1, byRole: { owner: 1 } },
      archive: { messages: 0, deletedMessages: 0 },
      attachments: { count: 0, bytes: 0 },
      deadLetters: { pending: 0 },
      exports: { total: 0 },
      presence: { sessions: 0, online: 0 },
    });
  });
});
