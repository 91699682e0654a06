import { describe, expect, it } from "vitest";
import { api, Client, createRoom, join, json, login, type User, unique } from "./helpers.ts";

interface RoomView {
  id: string;
  kind: string;
  joined: boolean;
}

async function tenantOf(n: number): Promise<User[]> {
  const tenant = unique("t");
  const people: User[] = [];
  for (let i = 0; i < n; i++) people.push(await login(tenant)); // people[0] owns the tenant
  return people;
}

async function setRole(admin: User, user: User, role: string): Promise<Response> {
  return api(admin, "PATCH", `/api/users/${user.id}`, { role });
}

describe("private rooms", () => {
  it("do not exist for non-members (404 everywhere) until they are invited", async () => {
    const [owner, alice, bob] = await tenantOf(3);
    const res = await api(alice!, "POST", "/api/rooms", { name: "secret", kind: "private" });
    expect(res.status).toBe(201);
    const { id } = await json<RoomView>(res);
    for (const [method, path] of [
      ["POST", `/api/rooms/${id}/join`],
      ["GET", `/api/rooms/${id}/messages`],
      ["POST", `/api/rooms/${id}/members`],
    ] as const) {
      expect(
        (await api(bob!, method, path, method === "POST" ? { userId: bob!.id } : undefined)).status,
        path,
      ).toBe(404);
    }
    expect((await Client.upgrade(bob!, id)).status).toBe(404);
    expect((await json<RoomView[]>(api(bob!, "GET", "/api/rooms"))).map((r) => r.id)).not.toContain(id);
    // Not even the tenant's owner sees it without being invited.
    expect((await json<RoomView[]>(api(owner!, "GET", "/api/rooms"))).map((r) => r.id)).not.toContain(id);

    expect((await api(alice!, "POST", `/api/rooms/${id}/members`, { userId: bob!.id })).status).toBe(200);
    expect(await json<RoomView[]>(api(bob!, "GET", "/api/rooms"))).toContainEqual(
      expect.objectContaining({ id, kind: "private", joined: true }),
    );
    const socket = await Client.open(bob!, id);
    await socket.ready();
    // Removed by an admin, bob cannot come back on his own.
    expect((await api(alice!, "DELETE", `/api/rooms/${id}/members/${bob!.id}`)).status).toBe(403); // alice is no admin
    await api(owner!, "PATCH", `/api/users/${alice!.id}`, { role: "admin" });
    expect((await api(alice!, "DELETE", `/api/rooms/${id}/members/${bob!.id}`)).status).toBe(200);
    await socket.until((c) => c.closed !== null, "the close");
    expect((await api(bob!, "POST", `/api/rooms/${id}/join`)).status).toBe(404);
    expect((await Client.upgrade(bob!, id)).status).toBe(404);
  });
});

describe("direct messages", () => {
  it("return the same room for the same member set, whoever opens it and in any order", async () => {
    const [alice, bob, carol] = await tenantOf(3);
    const first = await api(alice!, "POST", "/api/rooms", { kind: "dm", members: [bob!.id] });
    expect(first.status).toBe(201);
    const dm = await json<RoomView>(first);
    const again = await api(bob!, "POST", "/api/rooms", { kind: "dm", members: [alice!.id] });
    expect(again.status).toBe(200);
    expect((await json<RoomView>(again)).id).toBe(dm.id);

    const group = await json<RoomView>(
      api(alice!, "POST", "/api/rooms", { kind: "dm", members: [bob!.id, carol!.id] }),
    );
    expect(group.id).not.toBe(dm.id);
    const sameGroup = await json<RoomView>(
      api(carol!, "POST", "/api/rooms", { kind: "dm", members: [bob!.id, alice!.id] }),
    );
    expect(sameGroup.id).toBe(group.id);

    // The one-to-one dm does not exist for carol.
    expect((await api(carol!, "GET", `/api/rooms/${dm.id}/messages`)).status).toBe(404);
    expect((await api(alice!, "POST", `/api/rooms/${dm.id}/members`, { userId: carol!.id })).status).toBe(
      400,
    );
    expect((await api(alice!, "POST", "/api/rooms", { kind: "dm", members: [] })).status).toBe(400);
  });
});

describe("guests", () => {
  it("cannot see, join or connect to a public channel they were not invited to", async () => {
    const [owner, guest] = await tenantOf(2);
    const channel = await createRoom(owner!);
    expect((await setRole(owner!, guest!, "guest")).status).toBe(200);
    expect((await api(guest!, "POST", `/api/rooms/${channel}/join`)).status).toBe(404);
    expect((await Client.upgrade(guest!, channel)).status).toBe(404);
    expect(await json(api(guest!, "GET", "/api/rooms"))).toEqual([]);
    expect((await api(guest!, "POST", "/api/rooms", { name: "mine" })).status).toBe(403);
    expect((await api(guest!, "GET", "/api/users?q=")).status).toBe(403);

    // Invited, the guest sees exactly that room.
    await api(owner!, "POST", `/api/rooms/${channel}/members`, { userId: guest!.id });
    expect((await json<RoomView[]>(api(guest!, "GET", "/api/rooms"))).map((r) => r.id)).toEqual([channel]);
  });
});

describe("admins", () => {
  it("remove a member, whose open socket closes at once and whose next request is refused", async () => {
    const [owner, alice] = await tenantOf(2);
    const roomId = await createRoom(owner!);
    await join(alice!, roomId);
    const socket = await Client.open(alice!, roomId);
    await socket.ready();
    expect((await api(alice!, "DELETE", `/api/rooms/${roomId}/members/${owner!.id}`)).status).toBe(403);
    expect((await api(owner!, "DELETE", `/api/rooms/${roomId}/members/${alice!.id}`)).status).toBe(200);
    await socket.until((c) => c.closed !== null, "the close");
    expect(socket.closed?.code).toBe(4403);
    expect(
      (await api(alice!, "POST", `/api/rooms/${roomId}/messages`, { clientId: "after", text: "still here?" }))
        .status,
    ).toBe(403);
    const page = await json<{ events: { kind: string; author: { id: string }; user?: { id: string } }[] }>(
      api(owner!, "GET", `/api/rooms/${roomId}/messages`),
    );
    expect(page.events.at(-1)).toMatchObject({
      kind: "member_leave",
      author: { id: owner!.id },
      user: { id: alice!.id },
    });
  });

  it("lose the power to delete others' messages at once when demoted, even on an open socket", async () => {
    const [owner, admin, author] = await tenantOf(3);
    expect((await setRole(owner!, admin!, "admin")).status).toBe(200);
    const roomId = await createRoom(owner!);
    await join(admin!, roomId);
    await join(author!, roomId);
    const { seq: first } = await json<{ seq: number }>(
      api(author!, "POST", `/api/rooms/${roomId}/messages`, { clientId: "m1", text: "one" }),
    );
    const { seq: second } = await json<{ seq: number }>(
      api(author!, "POST", `/api/rooms/${roomId}/messages`, { clientId: "m2", text: "two" }),
    );
    const socket = await Client.open(admin!, roomId);
    await socket.ready();
    socket.send({ type: "delete", clientId: "d1", target: first });
    expect((await socket.next("ack")).seq).toBeGreaterThan(second);

    expect((await setRole(owner!, admin!, "member")).status).toBe(200);
    const from = socket.frames.length;
    socket.send({ type: "delete", clientId: "d2", target: second });
    expect(await socket.next("error", from)).toMatchObject({ code: "forbidden", clientId: "d2" });
  });

  it("change roles only within the rules", async () => {
    const [owner, admin, member] = await tenantOf(3);
    expect((await setRole(member!, admin!, "admin")).status).toBe(403);
    expect((await setRole(owner!, admin!, "admin")).status).toBe(200);
    expect((await setRole(admin!, member!, "owner")).status).toBe(403);
    expect((await setRole(admin!, owner!, "member")).status).toBe(403);
    expect((await setRole(admin!, admin!, "member")).status).toBe(403);
    expect((await setRole(admin!, member!, "superuser")).status).toBe(400);
    const stranger = await login(unique("t"));
    expect((await setRole(owner!, stranger, "member")).status).toBe(404);
  });
});

describe("the directory", () => {
  it("searches people of the caller's tenant only, treating % and _ literally", async () => {
    const tenant = unique("t");
    const ada = await login(tenant, "Ada Lovelace");
    await login(tenant, "Grace Hopper");
    await login(tenant, "100% Sure");
    await login(unique("t"), "Ada Impostor");
    const found = await json<{ users: { name: string }[] }>(api(ada, "GET", "/api/users?q=ada"));
    expect(found.users.map((u) => u.name)).toEqual(["Ada Lovelace"]);
    const percent = await json<{ users: { name: string }[] }>(
      api(ada, "GET", `/api/users?q=${encodeURIComponent("0%")}`),
    );
    expect(percent.users.map((u) => u.name)).toEqual(["100% Sure"]);
    const all = await json<{ users: unknown[] }>(api(ada, "GET", "/api/users?q="));
    expect(all.users).toHaveLength(3);
  });
});

describe("the audit log", () => {
  it("records provisioning, role changes, membership changes and admin deletions, for admins only, paginated", async () => {
    const [owner, alice, bob] = await tenantOf(3);
    await setRole(owner!, alice!, "admin");
    const roomId = await createRoom(owner!);
    await api(owner!, "POST", `/api/rooms/${roomId}/members`, { userId: alice!.id });
    await join(bob!, roomId);
    await api(bob!, "POST", `/api/rooms/${roomId}/leave`);
    const { seq } = await json<{ seq: number }>(
      api(alice!, "POST", `/api/rooms/${roomId}/messages`, { clientId: "a", text: "x" }),
    );
    expect((await api(owner!, "DELETE", `/api/rooms/${roomId}/messages/${seq}?clientId=del`)).status).toBe(
      201,
    );
    await api(owner!, "DELETE", `/api/rooms/${roomId}/members/${alice!.id}`);

    type Page = {
      entries: { id: number; action: string; actor: string; target: string }[];
      next: number | null;
    };
    const collect = async () => {
      const all: Page["entries"] = [];
      let next: number | null = null;
      do {
        const page: Page = await json<Page>(
          api(owner!, "GET", `/api/audit?limit=2${next ? `&before=${next}` : ""}`),
        );
        all.push(...page.entries);
        next = page.next;
      } while (next);
      return all;
    };
    // The admin deletion is written by the room object in the background: wait for it (bounded).
    let entries = await collect();
    for (let i = 0; i < 50 && !entries.some((e) => e.action === "message.deleted_by_admin"); i++) {
      await api(owner!, "GET", "/healthz");
      entries = await collect();
    }
    expect(entries.map((e) => e.action).reverse()).toEqual([
      "user.provisioned",
      "user.provisioned",
      "user.provisioned",
      "user.role_changed",
      "room.member_added",
      "room.member_joined",
      "room.member_left",
      "message.deleted_by_admin",
      "room.member_removed",
    ]);
    expect(entries.find((e) => e.action === "room.member_removed")).toMatchObject({
      actor: owner!.id,
      target: roomId,
    });
    const member = await login(owner!.tenant);
    expect((await api(member, "GET", "/api/audit")).status).toBe(403);
  });
});

describe("room management", () => {
  it("lets the creator or an admin rename a room and set its topic, as a sequenced room_update", async () => {
    const [owner, creator, other] = await tenantOf(3);
    const roomId = await createRoom(creator!, "before");
    await join(other!, roomId);
    expect((await api(other!, "PATCH", `/api/rooms/${roomId}`, { name: "hijacked" })).status).toBe(403);
    const renamed = await api(creator!, "PATCH", `/api/rooms/${roomId}`, { name: "after", topic: "plans" });
    expect(renamed.status).toBe(200);
    expect(await json(renamed)).toMatchObject({ name: "after", topic: "plans" });
    // A tenant admin manages any channel, member or not.
    expect((await api(owner!, "PATCH", `/api/rooms/${roomId}`, { topic: "admin's topic" })).status).toBe(200);
    const page = await json<{ events: { kind: string; name?: string; topic?: string }[] }>(
      api(other!, "GET", `/api/rooms/${roomId}/messages`),
    );
    expect(page.events.filter((e) => e.kind === "room_update")).toMatchObject([
      { name: "after", topic: "plans" },
      { topic: "admin's topic" },
    ]);
    expect((await api(creator!, "PATCH", `/api/rooms/${roomId}`, {})).status).toBe(400);
    expect((await api(creator!, "PATCH", `/api/rooms/${roomId}`, { name: "" })).status).toBe(400);
  });
});

describe("demotion to guest and dm re-opening", () => {
  it("takes a member demoted to guest out of the channels they were in", async () => {
    const [owner, member] = await tenantOf(2);
    const channel = await createRoom(owner!);
    await join(member!, channel);
    const socket = await Client.open(member!, channel);
    await socket.ready();
    expect((await setRole(owner!, member!, "guest")).status).toBe(200);
    await socket.until((c) => c.closed !== null, "the close");
    expect(await json(api(member!, "GET", "/api/rooms"))).toEqual([]);
    expect((await api(member!, "GET", `/api/rooms/${channel}/messages`)).status).toBe(404);
  });

  it("brings back a member of the set who left when the dm is opened again", async () => {
    const [alice, bob] = await tenantOf(2);
    const dm = await json<RoomView>(api(alice!, "POST", "/api/rooms", { kind: "dm", members: [bob!.id] }));
    await api(bob!, "POST", `/api/rooms/${dm.id}/leave`);
    expect((await api(bob!, "GET", `/api/rooms/${dm.id}/messages`)).status).toBe(404);
    const reopened = await json<RoomView>(
      api(bob!, "POST", "/api/rooms", { kind: "dm", members: [alice!.id] }),
    );
    expect(reopened).toMatchObject({ id: dm.id, joined: true });
    expect((await api(bob!, "GET", `/api/rooms/${dm.id}/messages`)).status).toBe(200);
  });
});
