/**
 * A stream lives no longer than the token that opened it (docs/architecture.md, decision 11;
 * docs/protocol.md, close codes): a room socket, an SSE stream and a presence socket end with
 * `4402 token_expired` when the token's `exp` passes, a long poll answers by then, and a token past
 * its `exp` opens nothing. The SDK renews the credential (`Connection.reauthenticate`) and resumes
 * with `after` over every transport, losing and repeating nothing. Tokens here live 2 s (`exp` is
 * in whole seconds: 1 to 2 s from now), so each test waits out a real expiry.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  type Connection,
  MemoryOutboxStore,
  PresenceSession,
  pollTransport,
  sseTransport,
  type TransportFactory,
} from "../client/sdk/index.ts";
import type { Room } from "../durable-objects/room.ts";
import { CLOSE, type RoomEvent } from "../protocol/index.ts";
import { mintDevToken } from "../worker/auth/tokens.ts";
import { roomStub } from "../worker/stubs.ts";
import { FrameSocket } from "./frame-socket.ts";
import { api, Client, createRoom, fetchWorker, join, json, type User, unique } from "./helpers.ts";
import { history, Network, session, until } from "./sdk-helpers.ts";

interface Person extends User {
  email: string;
}

/** Signs someone in with the dev login (a 12-hour token). */
async function person(tenant: string): Promise<Person> {
  const email = `${unique("x").toLowerCase()}@example.com`;
  const name = unique("name");
  const res = await fetchWorker("/auth/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, name, tenant }),
  });
  const { token } = (await res.json()) as { token: string };
  const me = await json<{ user: { id: string } }>(api({ token }, "GET", "/api/me"));
  return { token, id: me.user.id, name, tenant, email };
}

/** A token of the same person that expires `ttlSeconds` from now (negative: already expired). */
function tokenFor(p: Person, ttlSeconds = 2): Promise<string> {
  return mintDevToken(
    { email: p.email, name: p.name, tenant: p.tenant },
    env.DEV_JWT_PRIVATE_JWK,
    ttlSeconds,
  );
}

function expiryOf(token: string): number {
  const payload = JSON.parse(atob((token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/")));
  return (payload as { exp: number }).exp * 1000;
}

async function roomOfTwo(): Promise<{ alice: Person; bob: Person; roomId: string }> {
  const tenant = unique("t");
  const alice = await person(tenant);
  const bob = await person(tenant);
  const roomId = await createRoom(alice);
  await join(bob, roomId);
  return { alice, bob, roomId };
}

/** Reads an SSE response until its `event: close` frame, or until it ends. */
async function sseClose(res: Response): Promise<{ code: number; reason: string } | null> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  const data = /event: close\ndata: (.*)\n/.exec(text)?.[1];
  return data ? (JSON.parse(data) as { code: number; reason: string }) : null;
}

/** A room socket opened with a token that lives 2 s, ready. */
async function shortSocket(p: Person, roomId: string): Promise<{ c: Client; token: string }> {
  const token = await tokenFor(p);
  const c = await Client.open({ token }, roomId, 0, "&flow=1");
  c.send({ type: "ping" });
  await c.ready();
  return { c, token };
}

/** A connection whose token lives `firstTtl` seconds and is renewed with ones of `nextTtl`. */
async function renewing(p: Person, net: Network, firstTtl: number, nextTtl: number) {
  let renewals = 0;
  const conn: Connection = {
    ...net.conn({ ...p, token: await tokenFor(p, firstTtl) }),
    reauthenticate: async () => {
      renewals += 1;
      return tokenFor(p, nextTtl);
    },
  };
  return {
    conn,
    get renewals() {
      return renewals;
    },
  };
}

describe("a stream whose token expires", () => {
  it("a room socket closes with 4402 token_expired when the token's exp passes, not before", async () => {
    const { alice, roomId } = await roomOfTwo();
    const { c, token } = await shortSocket(alice, roomId);
    // Served while the token lives.
    const seq = await c.sendMessage(unique("c"), "before expiry");
    expect(seq).toBeGreaterThan(0);
    // Idle: the room's alarm closes it.
    await c.until((s) => s.closed !== null, "the close at expiry", 10_000);
    expect(c.closed).toEqual(CLOSE.expired);
    expect(Date.now()).toBeGreaterThanOrEqual(expiryOf(token));
  });

  it("a frame that reaches the room after the token expired is not served: the socket closes", async () => {
    const { alice, roomId } = await roomOfTwo();
    const { c, token } = await shortSocket(alice, roomId);
    // Without the alarm (as if it were late), only the frame check stands between an expired
    // token and the room.
    await runInDurableObject(roomStub(env, alice.tenant, roomId), (_: Room, state) =>
      state.storage.deleteAlarm(),
    );
    const exp = expiryOf(token);
    while (Date.now() < exp) await new Promise((r) => setTimeout(r, exp - Date.now()));
    const clientId = unique("c");
    c.send({ type: "send", clientId, text: "after expiry" });
    await c.until((s) => s.closed !== null, "the close", 10_000);
    expect(c.closed).toEqual(CLOSE.expired);
    expect(c.acks().some((a) => a.clientId === clientId)).toBe(false);
    const page = await json<{ events: RoomEvent[] }>(
      api(alice, "GET", `/api/rooms/${roomId}/messages?after=0`),
    );
    expect(page.events.some((e) => e.kind === "message" && e.text === "after expiry")).toBe(false);
  });

  it("an SSE stream ends with event: close carrying 4402", async () => {
    const { alice, roomId } = await roomOfTwo();
    const token = await tokenFor(alice);
    const res = await fetchWorker(`/api/rooms/${roomId}/events?after=0`, {
      headers: { "cf-access-jwt-assertion": token },
    });
    expect(res.status).toBe(200);
    expect(await sseClose(res)).toEqual({ type: "close", ...CLOSE.expired });
    expect(Date.now()).toBeGreaterThanOrEqual(expiryOf(token));
  });

  it("a long poll answers when its token expires, and the next one with that token is refused", async () => {
    const { alice, roomId } = await roomOfTwo();
    const token = await tokenFor(alice);
    const last = (await history(alice, roomId)).at(-1)?.seq ?? 0;
    const started = Date.now();
    const res = await fetchWorker(`/api/rooms/${roomId}/poll?after=${last}&timeout=25`, {
      headers: { "cf-access-jwt-assertion": token },
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { events: unknown[] }).events).toEqual([]);
    // It waited, but not the 25 s it asked for: until the token's exp.
    expect(Date.now()).toBeGreaterThanOrEqual(expiryOf(token));
    expect(Date.now() - started).toBeLessThan(25_000);
    const again = await fetchWorker(`/api/rooms/${roomId}/poll?after=${last}&timeout=25`, {
      headers: { "cf-access-jwt-assertion": token },
    });
    expect(again.status).toBe(401);
  });

  it("a presence socket closes with 4402 token_expired", async () => {
    const { alice } = await roomOfTwo();
    const token = await tokenFor(alice);
    const ws = await FrameSocket.socket("/api/presence/ws", token);
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.addEventListener("close", (e) => resolve({ code: e.code, reason: e.reason })),
    );
    ws.send(JSON.stringify({ type: "ping" }));
    expect(await closed).toEqual(CLOSE.expired);
    expect(Date.now()).toBeGreaterThanOrEqual(expiryOf(token));
  });

  it("a token past its exp (still within the accepted clock skew) opens no stream, but other requests pass", async () => {
    const { alice, roomId } = await roomOfTwo();
    const token = await tokenFor(alice, -5);
    const headers = { "cf-access-jwt-assertion": token };
    expect((await api({ token }, "GET", "/api/me")).status).toBe(200);
    expect((await FrameSocket.request(`/api/rooms/${roomId}/ws?after=0`, token)).status).toBe(401);
    expect((await FrameSocket.request("/api/presence/ws", token)).status).toBe(401);
    expect((await fetchWorker(`/api/rooms/${roomId}/events?after=0`, { headers })).status).toBe(401);
    expect((await fetchWorker(`/api/rooms/${roomId}/poll?after=0&timeout=1`, { headers })).status).toBe(401);
  });
});

describe("an SDK session whose token expires renews it and resumes, losing nothing", () => {
  const transports: [string, (net: Network, conn: Connection) => TransportFactory][] = [
    ["a WebSocket", (net, conn) => net.socket(conn as { token: string })],
    ["SSE", (_, conn) => sseTransport(conn)],
    ["long polling", (_, conn) => pollTransport(conn, 25)],
  ];
  for (const [name, make] of transports) {
    it(`over ${name}`, async () => {
      const { alice, bob, roomId } = await roomOfTwo();
      const net = new Network();
      const renewal = await renewing(alice, net, 2, 2);
      const { conn } = renewal;
      const store = new MemoryOutboxStore();
      const a = session(alice, roomId, [make(net, conn)], { conn, store });
      await a.s.start();
      await until(() => a.s.status.state === "online", "online");
      // Both write across two expiries: Alice through her session (its outbox), Bob over HTTP.
      const sent: Promise<number>[] = [];
      let n = 0;
      const deadline = Date.now() + 20_000;
      while (renewal.renewals < 2) {
        if (Date.now() > deadline) throw new Error(`renewed ${renewal.renewals} times in 20 s`);
        n += 1;
        sent.push(a.s.send(`alice ${n}`).acked);
        await api(bob, "POST", `/api/rooms/${roomId}/messages`, { text: `bob ${n}`, clientId: unique("b") });
        await new Promise((r) => setTimeout(r, 25)); // pacing, not synchronisation
      }
      const seqs = await Promise.all(sent);
      expect(new Set(seqs).size).toBe(n);
      const all = await history(bob, roomId);
      const last = all.at(-1)?.seq ?? 0;
      await until(() => a.s.lastSeq === last && a.s.status.state === "online", "caught up");
      // Every event once, in order, and each of Alice's messages stored once.
      expect(a.events.map((e) => e.seq)).toEqual(all.map((e) => e.seq));
      const texts = all.flatMap((e) => (e.kind === "message" ? [e.text] : []));
      for (let i = 1; i <= n; i++) expect(texts.filter((t) => t === `alice ${i}`)).toHaveLength(1);
      expect(await store.list(roomId)).toEqual([]);
      a.s.close();
    });
  }

  it("a command refused with 401 over HTTP stays queued and is sent once the token is renewed", async () => {
    const { alice, roomId } = await roomOfTwo();
    const net = new Network();
    const renewal = await renewing(alice, net, 60, 60);
    const { conn } = renewal;
    const a = session(alice, roomId, [sseTransport(conn)], { conn });
    await a.s.start();
    await until(() => a.s.status.state === "online", "online");
    // The stream is up; the credential goes bad (past the skew any request accepts).
    conn.token = "not.a.token";
    const seq = await a.s.send("sent after renewing").acked;
    expect(renewal.renewals).toBe(1);
    const all = await history(alice, roomId);
    expect(all.find((e) => e.seq === seq)).toMatchObject({ kind: "message", text: "sent after renewing" });
    a.s.close();
  });

  it("a presence session reconnects with a renewed token", async () => {
    const { alice } = await roomOfTwo();
    const net = new Network();
    const renewal = await renewing(alice, net, 2, 60);
    const { conn } = renewal;
    const connections: boolean[] = [];
    const p = new PresenceSession({
      open: net.opener(conn as { token: string }),
      conn,
      backoff: { baseMs: 5, capMs: 40 },
      onConnection: (up) => connections.push(up),
    });
    p.start();
    await until(() => connections.length === 3, "connected, dropped at expiry, connected again", 15_000);
    expect(connections).toEqual([true, false, true]);
    expect(renewal.renewals).toBe(1);
    p.close();
  });
});
