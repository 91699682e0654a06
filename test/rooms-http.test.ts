import { describe, expect, it } from "vitest";
import { api, Client, createRoom, fetchWorker, join, json, login, settleInbox, unique } from "./helpers.ts";

interface RoomView {
  id: string;
  name: string;
  kind: string;
  joined: boolean;
  lastSeq: number;
  readSeq: number;
  unread: number;
  mentions: number;
}

describe("rooms in the directory", () => {
  it("lists by name the tenant's channels, joined or not, and the private rooms and dms the caller is in", async () => {
    const tenant = unique("t");
    const [alice, bob, carol] = [await login(tenant), await login(tenant), await login(tenant)];
    const made = async (as: typeof alice, body: Record<string, unknown>) =>
      json<RoomView>(api(as, "POST", "/api/rooms", body));
    const zebra = await made(alice, { name: "zebra", kind: "channel" });
    const apple = await made(bob, { name: "apple", kind: "channel" });
    const mango = await made(alice, { name: "mango", kind: "private" });
    await made(carol, { name: "kiwi", kind: "private" }); // not alice's
    const dm = await made(alice, { kind: "dm", members: [bob.id] });
    const listed = await json<(RoomView & { topic: string; members?: { id: string }[] })[]>(
      api(alice, "GET", "/api/rooms"),
    );
    expect(listed.map((r) => [r.name, r.joined])).toEqual(
      [
        [apple.name, false],
        [dm.name, true],
        [mango.name, true],
        [zebra.name, true],
      ].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)),
    );
    expect(
      listed
        .find((r) => r.id === dm.id)
        ?.members?.map((m) => m.id)
        .sort(),
    ).toEqual([alice.id, bob.id].sort());
    expect(listed.find((r) => r.id === apple.id)).toMatchObject({ kind: "channel", topic: "", lastSeq: 1 });
  });

  it("creates a channel, lists it for the tenant, and lets members join and leave", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const res = await api(alice, "POST", "/api/rooms", {
      name: "general",
      kind: "channel",
      topic: "all hands",
    });
    expect(res.status).toBe(201);
    const room = await json<RoomView>(res);
    expect(room).toMatchObject({
      name: "general",
      kind: "channel",
      topic: "all hands",
      joined: true,
      lastSeq: 1,
    });

    const bobsView = await json<RoomView[]>(api(bob, "GET", "/api/rooms"));
    expect(bobsView).toEqual([expect.objectContaining({ id: room.id, joined: false })]);
    await join(bob, room.id);
    await join(bob, room.id); // joining twice is a no-op
    const after = await json<RoomView[]>(api(bob, "GET", "/api/rooms"));
    expect(after).toEqual([expect.objectContaining({ id: room.id, joined: true, lastSeq: 2 })]);

    const leave = await api(bob, "POST", `/api/rooms/${room.id}/leave`);
    expect(leave.status).toBe(200);
    const page = await json<{ events: { kind: string; user?: { id: string } }[] }>(
      api(alice, "GET", `/api/rooms/${room.id}/messages`),
    );
    expect(page.events.map((e) => e.kind)).toEqual(["member_join", "member_join", "member_leave"]);
    expect(page.events[2]?.user?.id).toBe(bob.id);
  });

  it("validates room creation", async () => {
    const alice = await login(unique("t"));
    for (const body of [
      { name: "" },
      { name: "x".repeat(81) },
      { name: "ok", kind: "party" },
      { name: "ok", topic: 7 },
    ]) {
      const res = await api(alice, "POST", "/api/rooms", body);
      expect(res.status).toBe(400);
      expect(await json(res)).toMatchObject({ error: { code: "bad_request" } });
    }
    expect(await json(api(alice, "GET", "/api/rooms"))).toEqual([]);
  });

  it("answers 404 for another tenant's room on every route, never 403", async () => {
    const alice = await login(unique("t"));
    const mallory = await login(unique("t"));
    const roomId = await createRoom(alice);
    for (const [method, path, body] of [
      ["POST", `/api/rooms/${roomId}/join`],
      ["GET", `/api/rooms/${roomId}/messages`],
      ["POST", `/api/rooms/${roomId}/messages`, { clientId: "x", text: "hi" }],
      ["PUT", `/api/rooms/${roomId}/read`, { seq: 1 }],
      ["POST", `/api/rooms/${roomId}/members`, { userId: mallory.id }],
    ] as const) {
      const res = await api(mallory, method, path, body);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(await json(res)).toMatchObject({ error: { code: "not_found" } });
    }
    const ws = await Client.upgrade(mallory, roomId);
    expect(ws.status).toBe(404);
    expect(await json(api(mallory, "GET", "/api/rooms"))).toEqual([]);
  });

  it("lets only members connect or send, and closes a leaver's sockets at once", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(alice);
    expect((await Client.upgrade(bob, roomId)).status).toBe(403);
    const post = await api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: "x", text: "hi" });
    expect(post.status).toBe(403);

    await join(bob, roomId);
    const socket = await Client.open(bob, roomId);
    await socket.ready();
    await api(bob, "POST", `/api/rooms/${roomId}/leave`);
    await socket.until((c) => c.closed !== null, "the close");
    expect(socket.closed?.code).toBe(4403);
    expect((await api(bob, "GET", `/api/rooms/${roomId}/messages`)).status).toBe(403);
  });

  it("adds a tenant member to a room, but not a user of another tenant", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const eve = await login(unique("t"));
    const roomId = await createRoom(alice);
    expect((await api(alice, "POST", `/api/rooms/${roomId}/members`, { userId: bob.id })).status).toBe(200);
    expect((await json<RoomView[]>(api(bob, "GET", "/api/rooms")))[0]).toMatchObject({
      id: roomId,
      joined: true,
    });
    expect((await api(alice, "POST", `/api/rooms/${roomId}/members`, { userId: eve.id })).status).toBe(404);
  });
});

describe("the log over HTTP", () => {
  it("posts messages idempotently: 201 with the seq, then 200 with the same seq for a repeated clientId", async () => {
    const alice = await login(unique("t"));
    const roomId = await createRoom(alice);
    const first = await api(alice, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "h1",
      text: "over http",
    });
    expect(first.status).toBe(201);
    const { seq } = await json<{ seq: number }>(first);
    const again = await api(alice, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "h1",
      text: "over http",
    });
    expect(again.status).toBe(200);
    expect(await json(again)).toEqual({ seq });
    const page = await json<{ events: unknown[] }>(
      api(alice, "GET", `/api/rooms/${roomId}/messages?after=${seq - 1}`),
    );
    expect(page.events).toHaveLength(1);
  });

  it("edits, reacts and deletes over HTTP with the same rules", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const { seq } = await json<{ seq: number }>(
      api(bob, "POST", `/api/rooms/${roomId}/messages`, { clientId: "m", text: "typo" }),
    );
    expect(
      (await api(alice, "PATCH", `/api/rooms/${roomId}/messages/${seq}`, { clientId: "e", text: "x" }))
        .status,
    ).toBe(403);
    expect(
      (await api(bob, "PATCH", `/api/rooms/${roomId}/messages/${seq}`, { clientId: "e", text: "fixed" }))
        .status,
    ).toBe(201);
    expect(
      (
        await api(alice, "POST", `/api/rooms/${roomId}/messages/${seq}/reactions`, {
          clientId: "r",
          emoji: "👍",
          on: true,
        })
      ).status,
    ).toBe(201);
    expect((await api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}?clientId=d`)).status).toBe(201); // alice owns the tenant
    expect((await api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}?clientId=d`)).status).toBe(200); // retry
    expect((await api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}`)).status).toBe(409); // already deleted
    expect((await api(alice, "DELETE", `/api/rooms/${roomId}/messages/abc`)).status).toBe(400);
  });

  it("pins and unpins a message over a socket and over HTTP, for any member, as sequenced events", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const eve = await login(tenant);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    const { seq } = await json<{ seq: number }>(
      api(alice, "POST", `/api/rooms/${roomId}/messages`, { clientId: "m", text: "the plan" }),
    );
    const socket = await Client.open(bob, roomId, seq);
    await socket.ready();
    socket.send({ type: "pin", clientId: "p1", target: seq, on: true });
    const ack = await socket.next("ack");
    expect(ack).toMatchObject({ clientId: "p1", seq: seq + 1 });
    const pin = (body: Record<string, unknown>, user = alice, target: number | string = seq) =>
      api(user, "POST", `/api/rooms/${roomId}/messages/${target}/pin`, body);
    const unpinned = await pin({ clientId: "p2", on: false });
    expect(unpinned.status).toBe(201);
    expect(await json(unpinned)).toEqual({ seq: seq + 2 });
    const retried = await pin({ clientId: "p2", on: false });
    expect([retried.status, await json(retried)]).toEqual([200, { seq: seq + 2 }]);
    await socket.until((c) => c.events.length === 2, "both pin events");
    expect(socket.events).toMatchObject([
      { seq: seq + 1, kind: "pin", target: seq, on: true, author: { id: bob.id }, clientId: "p1" },
      { seq: seq + 2, kind: "pin", target: seq, on: false, author: { id: alice.id }, clientId: "p2" },
    ]);

    // Refused, and nothing appended: not a member, not a message, a bad field, a deleted message.
    expect((await pin({ clientId: "x1", on: true }, eve)).status).toBe(403);
    expect((await pin({ clientId: "x2", on: true }, alice, 1)).status).toBe(404); // the member_join
    expect((await pin({ clientId: "x3", on: "yes" })).status).toBe(400);
    expect((await pin({ clientId: "x4", on: true }, alice, "abc")).status).toBe(400);
    socket.send({ type: "pin", clientId: "x5", target: seq });
    expect(await socket.next("error")).toMatchObject({ code: "bad_request", clientId: "x5" });
    await api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}?clientId=d`);
    expect((await pin({ clientId: "x6", on: true })).status).toBe(409);
    const tail = await json<{ events: { kind: string }[] }>(
      api(alice, "GET", `/api/rooms/${roomId}/messages?after=${seq + 2}`),
    );
    expect(tail.events.map((e) => e.kind)).toEqual(["delete"]);
  });

  it("answers a retry with its original seq even where the rules would now refuse it, and appends nothing", async () => {
    const alice = await login(unique("t"));
    const roomId = await createRoom(alice);
    const post = (clientId: string, text: string) =>
      api(alice, "POST", `/api/rooms/${roomId}/messages`, { clientId, text });
    const { seq } = await json<{ seq: number }>(post("m1", "hello"));
    const react = () =>
      api(alice, "POST", `/api/rooms/${roomId}/messages/${seq}/reactions`, {
        clientId: "r1",
        emoji: "👍",
        on: true,
      });
    const reacted = await json<{ seq: number }>(react());
    const edit = () =>
      api(alice, "PATCH", `/api/rooms/${roomId}/messages/${seq}`, { clientId: "e1", text: "hello!" });
    const edited = await json<{ seq: number }>(edit());
    const deleted = await json<{ seq: number }>(
      api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}?clientId=d1`),
    );
    const log = await json<{ events: { seq: number }[] }>(api(alice, "GET", `/api/rooms/${roomId}/messages`));
    const lastSeq = log.events.at(-1)?.seq;
    // The message is deleted now: an edit or a reaction of it would be refused, a repeat of the same
    // text would be a new message. Their retries answer what they did the first time.
    const again = [await react(), await edit(), await post("m1", "hello, changed")];
    expect(again.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(await Promise.all(again.map((r) => r.json()))).toEqual([
      { seq: reacted.seq },
      { seq: edited.seq },
      { seq },
    ]);
    expect(deleted.seq).toBe(lastSeq);
    const after = await json<{ events: unknown[] }>(
      api(alice, "GET", `/api/rooms/${roomId}/messages?after=${lastSeq}`),
    );
    expect(after.events).toEqual([]);
  });

  it("pages history with before/after/limit and reports hasMore", async () => {
    const alice = await login(unique("t"));
    const roomId = await createRoom(alice); // seq 1 is the member_join
    for (let i = 0; i < 30; i++) {
      await api(alice, "POST", `/api/rooms/${roomId}/messages`, { clientId: `p${i}`, text: `m${i}` });
    }
    type Page = { events: { seq: number }[]; hasMore: boolean };
    const latest = await json<Page>(api(alice, "GET", `/api/rooms/${roomId}/messages?limit=10`));
    expect(latest.events.map((e) => e.seq)).toEqual([22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);
    expect(latest.hasMore).toBe(true);
    const older = await json<Page>(api(alice, "GET", `/api/rooms/${roomId}/messages?before=22&limit=25`));
    expect(older.events.map((e) => e.seq)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    expect(older.hasMore).toBe(false);
    const newer = await json<Page>(api(alice, "GET", `/api/rooms/${roomId}/messages?after=25&limit=3`));
    expect(newer.events.map((e) => e.seq)).toEqual([26, 27, 28]);
    expect(newer.hasMore).toBe(true);
    const end = await json<Page>(api(alice, "GET", `/api/rooms/${roomId}/messages?after=28&limit=3`));
    expect(end).toMatchObject({ hasMore: false });
    for (const q of ["limit=0", "limit=201", "before=1&after=2", "after=-1", "before=x"]) {
      expect((await api(alice, "GET", `/api/rooms/${roomId}/messages?${q}`)).status, q).toBe(400);
    }
  });

  it("keeps read markers from moving backwards and reports unread and mentions", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const roomId = await createRoom(alice);
    await join(bob, roomId);
    for (let i = 0; i < 5; i++) {
      await api(alice, "POST", `/api/rooms/${roomId}/messages`, {
        clientId: `u${i}`,
        text: i === 4 ? `ping @<${bob.id}>` : `m${i}`,
      });
    }
    const view = () => json<RoomView[]>(api(bob, "GET", "/api/rooms")).then((r) => r[0]);
    expect(await view()).toMatchObject({ lastSeq: 7, readSeq: 0, unread: 5, mentions: 1 });
    expect(await json(api(bob, "PUT", `/api/rooms/${roomId}/read`, { seq: 5 }))).toEqual({ readSeq: 5 });
    expect(await view()).toMatchObject({ readSeq: 5, unread: 2, mentions: 1 });
    expect(await json(api(bob, "PUT", `/api/rooms/${roomId}/read`, { seq: 3 }))).toEqual({ readSeq: 5 });
    const socket = await Client.open(bob, roomId, 7);
    await socket.ready();
    socket.send({ type: "read", seq: 7 });
    socket.send({ type: "read", seq: 6 });
    socket.send({ type: "ping" });
    await socket.next("pong");
    // A socket's read frames are held and written together within a second (protocol.md).
    await settleInbox(bob.tenant, roomId);
    expect(await view()).toMatchObject({ readSeq: 7, unread: 0, mentions: 0 });
    expect((await api(bob, "PUT", `/api/rooms/${roomId}/read`, { seq: 99 })).status).toBe(400);
  });
});

describe("room membership details", () => {
  it("creates a room with members of the tenant, each join authored by the creator", async () => {
    const tenant = unique("t");
    const alice = await login(tenant);
    const bob = await login(tenant);
    const carol = await login(tenant);
    const res = await api(alice, "POST", "/api/rooms", {
      name: "team",
      kind: "channel",
      members: [bob.id, carol.id, bob.id],
    });
    expect(res.status).toBe(201);
    const { id } = await json<RoomView>(res);
    const page = await json<{ events: { kind: string; author: { id: string }; user: { id: string } }[] }>(
      api(carol, "GET", `/api/rooms/${id}/messages`),
    );
    expect(page.events.map((e) => [e.kind, e.author.id, e.user.id])).toEqual([
      ["member_join", alice.id, alice.id],
      ["member_join", alice.id, bob.id],
      ["member_join", alice.id, carol.id],
    ]);
    const outsider = await login(unique("t"));
    const refused = await api(alice, "POST", "/api/rooms", { name: "x", members: [outsider.id] });
    expect(refused.status).toBe(404);
    expect((await api(alice, "POST", "/api/rooms", { name: "x", members: "bob" })).status).toBe(400);
  });

  it("makes exactly one owner when a tenant's first two users sign in at once", async () => {
    const tenant = unique("t");
    const [a, b] = await Promise.all([login(tenant), login(tenant)]);
    const roles = await Promise.all(
      [a, b].map(async (u) => (await json<{ user: { role: string } }>(api(u, "GET", "/api/me"))).user.role),
    );
    expect(roles.sort()).toEqual(["member", "owner"]);
  });

  it("refuses JSON bodies not declared as application/json, and seqs that are not plain integers", async () => {
    const alice = await login(unique("t"));
    const roomId = await createRoom(alice);
    const res = await fetchWorker(`/api/rooms/${roomId}/messages`, {
      method: "POST",
      headers: { "cf-access-jwt-assertion": alice.token, "content-type": "text/plain" },
      body: JSON.stringify({ clientId: "csrf", text: "forged" }),
    });
    expect(res.status).toBe(400);
    for (const seq of ["1e0", "0x1", "%201"]) {
      expect((await api(alice, "DELETE", `/api/rooms/${roomId}/messages/${seq}`)).status, seq).toBe(400);
    }
    const page = await json<{ events: { kind: string }[] }>(
      api(alice, "GET", `/api/rooms/${roomId}/messages`),
    );
    expect(page.events.map((e) => e.kind)).toEqual(["member_join"]);
  });

  it("carries any Unicode name through the socket into events", async () => {
    const tenant = unique("t");
    const lei = await login(tenant, "李雷 ✨");
    const roomId = await createRoom(lei);
    const c = await Client.open(lei, roomId);
    await c.ready();
    const seq = await c.sendMessage("hi", "你好");
    await c.until((x) => x.events.some((e) => e.seq === seq), "the message");
    expect(c.events.find((e) => e.seq === seq)?.author).toEqual({ id: lei.id, name: "李雷 ✨" });
  });
});
