/**
 * The SDK (client/sdk) against the real worker and room objects: sessions over a WebSocket, SSE
 * and long polling, reconnect with resume, the outbox across disconnects and reloads, gap filling.
 * The network is a seam the test controls: sockets and HTTP can be cut and restored.
 */
import { describe, expect, it } from "vitest";
import {
  type Connection,
  MemoryOutboxStore,
  PresenceSession,
  pollTransport,
  sseTransport,
  type TransportFactory,
} from "../client/sdk/index.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { api, createRoom, join, json, login, type User, unique } from "./helpers.ts";
import { failing, history, Network, session, texts, until } from "./sdk-helpers.ts";

describe("the SDK room session", () => {
  it("lets two users chat both ways over sockets, every event once and in order", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const net = new Network();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada) });
    const b = session(bob, roomId, [net.socket(bob)], { conn: net.conn(bob) });
    await a.s.start();
    await b.s.start();
    await until(() => a.s.status.state === "online" && b.s.status.state === "online", "both online");
    const sent = await Promise.all([
      a.s.send("hello bob").acked,
      b.s.send("hi ada").acked,
      a.s.send("how are you?").acked,
    ]);
    const last = Math.max(...sent);
    await until(() => a.s.lastSeq === last && b.s.lastSeq === last, "both caught up");
    const log = await history(ada, roomId);
    expect(a.events).toEqual(log);
    expect(b.events).toEqual(log);
    expect(a.s.status).toMatchObject({ transport: "websocket", queued: 0 });
    a.s.close();
    b.s.close();
  });

  it("queues messages while offline and delivers each exactly once after reconnecting", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const net = new Network();
    const store = new MemoryOutboxStore();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada), store });
    const bobNet = new Network();
    const b = session(bob, roomId, [bobNet.socket(bob)], { conn: bobNet.conn(bob) });
    await a.s.start();
    await b.s.start();
    await until(() => a.s.status.state === "online" && b.s.status.state === "online", "online");

    net.cut();
    await until(() => a.s.status.state !== "online", "ada offline");
    const acks = ["one", "two", "three"].map((t) => a.s.send(`offline ${t}`).acked);
    await until(() => a.s.status.queued === 3, "three queued");
    expect((await store.list(roomId)).map((e) => e.command)).toMatchObject([
      { type: "send", text: "offline one" },
      { type: "send", text: "offline two" },
      { type: "send", text: "offline three" },
    ]);

    net.down = false;
    const seqs = await Promise.all(acks);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    await until(() => b.s.lastSeq >= (seqs[2] as number) && a.s.lastSeq >= (seqs[2] as number), "delivered");
    const offline = (events: RoomEvent[]) => texts(events).filter((t) => t.startsWith("offline"));
    expect(offline(await history(ada, roomId))).toEqual(["offline one", "offline two", "offline three"]);
    expect(offline(a.events)).toEqual(["offline one", "offline two", "offline three"]);
    expect(offline(b.events)).toEqual(["offline one", "offline two", "offline three"]);
    expect(await store.list(roomId)).toEqual([]);
    expect(a.s.status).toMatchObject({ state: "online", queued: 0 });
    a.s.close();
    b.s.close();
  });

  it("told the device is offline, drops its socket at once, queues, and delivers on the network's return", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const net = new Network();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada) });
    await a.s.start();
    await until(() => a.s.status.state === "online", "online");

    a.s.setNetwork(false);
    expect(a.s.status).toMatchObject({ state: "offline", transport: null });
    const acks = ["x", "y", "z"].map((t) => a.s.send(`queued ${t}`).acked);
    expect(a.s.status.queued).toBe(3);
    // Held offline: nothing reaches the server however long the backoff would have been.
    expect(texts(await history(ada, roomId)).filter((t) => t.startsWith("queued"))).toEqual([]);

    a.s.setNetwork(true);
    const seqs = await Promise.all(acks);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    await until(() => a.s.lastSeq >= (seqs[2] as number), "delivered");
    expect(texts(a.events).filter((t) => t.startsWith("queued"))).toEqual([
      "queued x",
      "queued y",
      "queued z",
    ]);
    expect(a.s.status).toMatchObject({ state: "online", transport: "websocket", queued: 0 });
    a.s.close();
  });

  it("sends a message at once even when its outbox refuses to store it", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const net = new Network();
    // A browser whose storage is full, or in private browsing: every write fails.
    const store = new MemoryOutboxStore();
    store.put = () => Promise.reject(new Error("QuotaExceededError"));
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada), store });
    await a.s.start();
    await until(() => a.s.status.state === "online", "online");
    const seq = await a.s.send("not stored, still sent").acked;
    expect((await history(ada, roomId)).find((e) => e.seq === seq)).toMatchObject({
      kind: "message",
      text: "not stored, still sent",
    });
    expect(a.s.status.queued).toBe(0);
    a.s.close();
  });

  it("after a reload, resends the persisted outbox; a command already stored keeps its seq", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const store = new MemoryOutboxStore();
    // Stored by the server before the "crash", but the ack never arrived.
    const stored = await json<{ seq: number }>(
      api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: "kept1", text: "already there" }),
    );
    await store.put({
      roomId,
      clientId: "kept1",
      command: { type: "send", clientId: "kept1", text: "already there" },
      createdAt: 1,
    });
    await store.put({
      roomId,
      clientId: "fresh1",
      command: { type: "send", clientId: "fresh1", text: "never sent" },
      createdAt: 2,
    });
    const net = new Network();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada), store });
    await a.s.start();
    expect(a.s.queued.map((e) => e.clientId)).toEqual(["kept1", "fresh1"]);
    await until(() => a.s.status.queued === 0, "outbox drained");
    const log = await history(ada, roomId);
    expect(texts(log)).toEqual(["already there", "never sent"]);
    expect(log.find((e) => e.kind === "message" && e.text === "already there")?.seq).toBe(stored.seq);
    expect(a.events).toEqual(log);
    a.s.close();
  });

  it("when filling a hole from history fails, reconnects and resumes instead of stalling", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    for (const text of ["one", "two", "three"]) {
      await json(api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("c"), text }));
    }
    const net = new Network();
    const conn = net.conn(ada);
    // The first history page fails, as one does when the server dies mid-request.
    let pages = 0;
    const flaky: Connection = {
      ...conn,
      fetch: async (input, init) => {
        if (String(input).includes("/messages?") && pages++ === 0) throw new TypeError("connection reset");
        return (conn.fetch as typeof fetch)(input, init);
      },
    };
    // The first socket resumes one seq past what the session has: a hole to fill from history.
    let sockets = 0;
    const holey: TransportFactory = (id, after, h) =>
      net.socket(ada)(id, sockets++ === 0 ? after + 1 : after, h);
    const a = session(ada, roomId, [holey], { conn: flaky });
    await a.s.start();
    await until(() => a.s.status.state === "online" && pages > 0, "online");
    const b = session(bob, roomId, [net.socket(bob)], { conn: net.conn(bob) });
    await b.s.start();
    const later = await b.s.send("after the failed page").acked;
    await until(() => a.s.lastSeq >= later, "the next message delivered live", 5000);
    expect(a.events).toEqual(await history(ada, roomId));
    expect(sockets).toBeGreaterThan(1);
    a.s.close();
    b.s.close();
  });

  it("once closed, delivers nothing more, not even a history page already on its way", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    for (const text of ["one", "two", "three"]) {
      await json(api(ada, "POST", `/api/rooms/${roomId}/messages`, { clientId: unique("c"), text }));
    }
    const net = new Network();
    const conn = net.conn(ada);
    // History answers only once the test lets it, and says when its answer has been read.
    let asked = false;
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let served!: () => void;
    const read = new Promise<void>((r) => {
      served = r;
    });
    const slow: Connection = {
      ...conn,
      fetch: async (input, init) => {
        if (!String(input).includes("/messages?")) return (conn.fetch as typeof fetch)(input, init);
        asked = true;
        await gate;
        const res = await (conn.fetch as typeof fetch)(input, init);
        const body = await res.text();
        setTimeout(served, 50);
        return new Response(body, { status: res.status, headers: res.headers });
      },
    };
    // A socket resuming one seq ahead makes the session page history for the hole.
    const holey: TransportFactory = (id, after, h) => net.socket(ada)(id, after + 1, h);
    const a = session(ada, roomId, [holey], { conn: slow });
    await a.s.start();
    await until(() => asked, "history asked for");
    a.s.close();
    release();
    await read;
    expect(a.events).toEqual([]);
    expect(a.s.status.state).toBe("closed");
  });

  for (const [name, transports, kind] of [
    ["SSE", (n: Network, u: User) => [failing, sseTransport(n.conn(u))], "sse"],
    ["long polling", (n: Network, u: User) => [failing, failing, pollTransport(n.conn(u), 2)], "poll"],
  ] as const) {
    it(`falls back to ${name} when sockets cannot connect, with the same semantics`, async () => {
      const ada = await login(unique("t"));
      const bob = await login(ada.tenant);
      const roomId = await createRoom(ada);
      await join(bob, roomId);
      const net = new Network();
      const a = session(ada, roomId, [...transports(net, ada)], { conn: net.conn(ada), fallbackAfter: 1 });
      const b = session(bob, roomId, [net.socket(bob)], { conn: net.conn(bob) });
      await a.s.start();
      await b.s.start();
      await until(() => a.s.status.state === "online" && b.s.status.state === "online", "online");
      expect(a.s.status.transport).toBe(kind);
      const mine = await a.s.send(`over ${name}`).acked;
      const theirs = await b.s.send(`to ${name}`).acked;
      await until(() => a.s.lastSeq >= theirs && b.s.lastSeq >= mine, "both delivered");
      const log = await history(ada, roomId);
      expect(a.events).toEqual(log.filter((e) => e.seq <= a.s.lastSeq));
      expect(texts(a.events)).toEqual([`over ${name}`, `to ${name}`]);
      a.s.close();
      b.s.close();
    });
  }
});

describe("the SDK transport fallback", () => {
  it("returns to the WebSocket once it can connect again, without losing or repeating an event", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const net = new Network();
    let blocked = true;
    const ws = net.socket(ada);
    const flakySocket: TransportFactory = (room, after, h) => {
      if (blocked) return Promise.reject(new Error("blocked by a proxy"));
      return ws(room, after, h);
    };
    const a = session(ada, roomId, [flakySocket, sseTransport(net.conn(ada))], {
      conn: net.conn(ada),
      fallbackAfter: 1,
      probeMs: 30,
    });
    await a.s.start();
    await until(() => a.s.status.transport === "sse" && a.s.status.state === "online", "online over SSE");
    const first = await json<{ seq: number }>(
      api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: "f1", text: "while on SSE" }),
    );
    await until(() => a.s.lastSeq >= first.seq, "event over SSE");
    blocked = false;
    await until(
      () => a.s.status.transport === "websocket" && a.s.status.state === "online",
      "back on the socket",
    );
    const second = await a.s.send("back on the socket").acked;
    await until(() => a.s.lastSeq >= second, "own event");
    expect(a.events).toEqual(await history(ada, roomId));
    a.s.close();
  });
});

describe("the SDK presence session", () => {
  it("shows watched users' status, follows changes, survives a dropped socket, and reports activity", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const roomId = await createRoom(ada);
    await join(bob, roomId);
    const activity: { room: string; lastSeq: number }[] = [];
    const adaNet = new Network();
    const bobNet = new Network();
    const a = new PresenceSession({
      open: adaNet.opener(ada),
      backoff: { baseMs: 5, capMs: 40 },
      onActivity: (room, lastSeq) => activity.push({ room, lastSeq }),
    });
    const b = new PresenceSession({ open: bobNet.opener(bob), backoff: { baseMs: 5, capMs: 40 } });
    a.start();
    b.start();
    a.watch([bob.id]);
    await until(() => a.presence.get(bob.id)?.status === "online", "bob online");
    b.setStatus("dnd");
    await until(() => a.presence.get(bob.id)?.status === "dnd", "bob dnd");

    // Bob's socket drops; his session reconnects and says its status again: still dnd, never offline.
    bobNet.cut();
    await until(() => !b.connected, "bob disconnected");
    bobNet.down = false;
    await until(() => b.connected, "bob reconnected");
    b.setStatus("away");
    await until(() => a.presence.get(bob.id)?.status === "away", "bob away");

    const seq = await json<{ seq: number }>(
      api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: "p1", text: "anyone?" }),
    );
    await until(() => activity.some((x) => x.room === roomId && x.lastSeq >= seq.seq), "activity");
    a.close();
    b.close();
  });

  it("says a status the server refused as too frequent again after retryAfter, so watchers end on the latest", async () => {
    const ada = await login(unique("t"));
    const bob = await login(ada.tenant);
    const a = new PresenceSession({ open: new Network().opener(ada), backoff: { baseMs: 5, capMs: 40 } });
    const b = new PresenceSession({ open: new Network().opener(bob), backoff: { baseMs: 5, capMs: 40 } });
    a.start();
    b.start();
    a.watch([bob.id]);
    await until(() => a.presence.get(bob.id)?.status === "online" && b.connected, "bob online");
    // More changes than a session may make at once (5): the last two are refused, and the latest
    // (dnd, where the server still has away) is said again.
    const changes = ["dnd", "away", "active", "dnd", "away", "active", "dnd"] as const;
    for (const status of changes) b.setStatus(status);
    await until(() => a.presence.get(bob.id)?.status === "dnd", "bob's latest status", 10_000);
    a.close();
    b.close();
  });
});
