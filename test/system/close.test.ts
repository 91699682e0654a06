/**
 * Server-initiated closes over real TCP, against the real app (`npm start`'s server, started by the
 * "browser" project's global setup): every close the room issues (4403 when a member is removed,
 * leaves, or their bot token is revoked; 1008 for bad frames; 4008 for a reader past its budget)
 * completes its closing handshake, so a `ws` client sees `close` with the room's code within a
 * second, not after its own 30 s timeout. The clients follow docs/protocol.md: their first frame is
 * `{"type":"ping"}` (why: durable-objects/room-sockets.ts, `close`). The SDK does the same, and a
 * session of it that is removed ends at once and says so.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import WebSocket from "ws";
import {
  RoomSession,
  type SessionEnded,
  type SocketLike,
  websocketTransport,
} from "../../client/sdk/index.ts";
import { CLOSE } from "../../protocol/index.ts";
import { Api, type User } from "../../scripts/chaos/api.ts";
// The app's base URL is provided by the global setup (declared there).
import type {} from "../browser/global-setup.ts";
import { NodeRoomSocket } from "./node-socket.ts";

/** The bound: a removed client learns it within a second. */
const PROMPT_MS = 1_000;

describe("closes the room issues, over TCP", () => {
  const base = inject("baseUrl");
  const wsBase = base.replace(/^http/, "ws");
  const api = new Api(base);
  const tenant = `close${Date.now().toString(36)}`;
  const user = (name: string): User => ({ email: `${name}@${tenant}.test`, name, tenant, token: "", id: "" });
  const admin = user("admin");
  const open: WebSocket[] = [];
  const figures: string[] = [];

  const peer = (roomId: string, headers: Record<string, string>, query = "") => {
    const p = new NodeRoomSocket(`${wsBase}/api/rooms/${roomId}/ws?after=0${query}`, {
      headers,
      pingFirst: true,
    });
    open.push(p.ws);
    return p;
  };
  const as = (u: User) => ({ "Cf-Access-Jwt-Assertion": u.token });

  /** A private room of the admin's with `member` in it. */
  const roomWith = async (member: User, name: string): Promise<string> => {
    const res = await api.request(admin, "POST", "/api/rooms", {
      name,
      kind: "private",
      members: [member.id],
    });
    expect(res.status).toBe(201);
    return (res.body as { id: string }).id;
  };

  beforeAll(async () => {
    await api.login(admin); // the tenant's first sign-in: its owner
  });

  afterAll(() => {
    for (const ws of open) ws.terminate();
    console.info(`close figures: ${figures.join("; ")}`);
  });

  it("a member removed over HTTP sees close 4403 (removed) within a second", async () => {
    const bob = user("bob");
    await api.login(bob);
    const roomId = await roomWith(bob, "removal");
    const p = peer(roomId, as(bob));
    await p.ready();
    const t0 = performance.now();
    const res = await api.request(admin, "DELETE", `/api/rooms/${roomId}/members/${bob.id}`);
    expect(res.status).toBe(200);
    await p.until(() => p.closed !== null, "the close");
    expect(p.closed).toMatchObject({ code: CLOSE.removed.code, reason: CLOSE.removed.reason });
    figures.push(`removed ${p.closeAfter(t0)} ms`);
    expect(p.closeAfter(t0)).toBeLessThan(PROMPT_MS);
    // Its own member_leave came before the close.
    const last = p.frames.filter((f) => f.type === "event" || f.type === "events").at(-1);
    expect(JSON.stringify(last)).toContain('"kind":"member_leave"');
  });

  it("a member who leaves (from another device) sees close 4403 (left) within a second", async () => {
    const cleo = user("cleo");
    await api.login(cleo);
    const roomId = await roomWith(cleo, "leaving");
    const p = peer(roomId, as(cleo));
    await p.ready();
    const t0 = performance.now();
    expect((await api.request(cleo, "POST", `/api/rooms/${roomId}/leave`)).status).toBe(200);
    await p.until(() => p.closed !== null, "the close");
    expect(p.closed).toMatchObject({ code: CLOSE.left.code, reason: CLOSE.left.reason });
    figures.push(`left ${p.closeAfter(t0)} ms`);
    expect(p.closeAfter(t0)).toBeLessThan(PROMPT_MS);
  });

  it("a bot whose token is revoked sees close 4403 within a second", async () => {
    const created = await api.request(admin, "POST", "/api/rooms", { name: "bots", kind: "channel" });
    const roomId = (created.body as { id: string }).id;
    const token = await api.request(admin, "POST", "/api/tokens", { name: "ci" });
    expect(token.status).toBe(201);
    const bot = token.body as { id: string; token: string };
    const auth = { authorization: `Bearer ${bot.token}` };
    const joined = await fetch(`${base}/api/rooms/${roomId}/join`, { method: "POST", headers: auth });
    expect(joined.status).toBe(200);
    const p = peer(roomId, auth);
    await p.ready();
    const t0 = performance.now();
    expect((await api.request(admin, "DELETE", `/api/tokens/${bot.id}`)).status).toBe(200);
    await p.until(() => p.closed !== null, "the close");
    expect(p.closed?.code).toBe(4403);
    figures.push(`token revoked ${p.closeAfter(t0)} ms`);
    expect(p.closeAfter(t0)).toBeLessThan(PROMPT_MS);
  });

  it("a client that keeps sending bad frames sees close 1008 within a second", async () => {
    const dan = user("dan");
    await api.login(dan);
    const roomId = await roomWith(dan, "strikes");
    const p = peer(roomId, as(dan));
    await p.ready();
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) p.ws.send("not json");
    await p.until(() => p.closed !== null, "the close");
    expect(p.closed?.code).toBe(CLOSE.policy.code);
    figures.push(`1008 ${p.closeAfter(t0)} ms`);
    expect(p.closeAfter(t0)).toBeLessThan(PROMPT_MS);
  });

  it("a reader without flow control past its budget sees close 4008 within a second of its last frame", async () => {
    const eve = user("eve");
    await api.login(eve);
    const roomId = await roomWith(eve, "budget");
    const p = peer(roomId, as(eve)); // no flow=1: closed after the app's 1 MiB budget
    await p.ready();
    const text = "z".repeat(12 * 1024);
    for (let i = 0; i < 100 && p.closed === null; i++) {
      const res = await api.request(admin, "POST", `/api/rooms/${roomId}/messages`, {
        clientId: `b${i}`,
        text,
      });
      expect(res.status).toBe(201);
    }
    await p.until(() => p.closed !== null, "the close");
    expect(p.closed?.code).toBe(CLOSE.slow.code);
    figures.push(`4008 ${p.closeAfter(p.lastFrameAt)} ms after its last frame`);
    expect(p.closeAfter(p.lastFrameAt)).toBeLessThan(PROMPT_MS);
  });

  it("an SDK session (Node, over ws) that is removed ends within a second and does not reconnect", async () => {
    const finn = user("finn");
    await api.login(finn);
    const roomId = await roomWith(finn, "sdk");
    let upgrades = 0;
    let socket: WebSocket | null = null;
    const ended: SessionEnded[] = [];
    const session = new RoomSession({
      conn: { baseUrl: base, token: finn.token },
      roomId,
      transports: [
        websocketTransport(
          (path) =>
            new Promise<SocketLike>((resolve, reject) => {
              upgrades += 1;
              const ws = new WebSocket(wsBase + path, { headers: as(finn) });
              open.push(ws);
              ws.once("open", () => {
                socket = ws;
                resolve(ws as unknown as SocketLike);
              });
              ws.once("unexpected-response", (_req, res) => reject(new Error(`refused ${res.statusCode}`)));
              ws.once("error", reject);
            }),
        ),
      ],
      onEnded: (e) => ended.push(e),
    });
    await session.start();
    const deadline = (ms: number) => performance.now() + ms;
    const until = async (check: () => boolean, what: string, end = deadline(15_000)) => {
      while (!check()) {
        if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await until(() => session.status.state === "online", "online");
    const t0 = performance.now();
    expect((await api.request(admin, "DELETE", `/api/rooms/${roomId}/members/${finn.id}`)).status).toBe(200);
    // The socket itself closes (the handshake completes), and the session ends, within the second.
    await until(
      () => (socket as WebSocket | null)?.readyState === WebSocket.CLOSED,
      "the socket's close",
      deadline(PROMPT_MS),
    );
    const closedAfter = Math.round(performance.now() - t0);
    await until(() => ended.length > 0, "the session's end", deadline(PROMPT_MS));
    const endedAfter = Math.round(performance.now() - t0);
    figures.push(`SDK socket closed ${closedAfter} ms, session ended ${endedAfter} ms`);
    expect(ended).toEqual([{ roomId, reason: "removed" }]);
    expect(session.status.state).toBe("closed");
    expect(upgrades).toBe(1);
  });
});
