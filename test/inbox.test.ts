/**
 * The room list from the inbox (docs/architecture.md, decision 6): after any sequence of sends
 * (with mentions), deletes, reads (forwards and backwards, over HTTP and sockets), joins, leaves,
 * retention and evictions across a few rooms, `GET /api/rooms` says exactly what each room's own
 * `summary` says, and says it from the inbox. A room that goes away between its commit and its push,
 * an inbox that lost a room, and a room log from before the inbox all converge.
 */
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { limitsOf } from "../config/limits.ts";
import { INBOX_MIGRATIONS, INBOX_OWN_RUNS_MIGRATION, InboxStore } from "../durable-objects/inbox-store.ts";
import { NOTIFY_MIGRATIONS } from "../durable-objects/notify-store.ts";
import { presenceStub, shardOf } from "../durable-objects/presence.ts";
import { RoomAttachments } from "../durable-objects/room-attachments.ts";
import { applyCommand } from "../durable-objects/room-commands.ts";
import { RoomLog } from "../durable-objects/room-log.ts";
import {
  api,
  Client,
  countWrites,
  inboxPush,
  json,
  login,
  maintenanceOf,
  roomObject,
  settleInbox,
  type User,
  unique,
  watchQueries,
} from "./helpers.ts";
import { undoSchemaV9 } from "./pipeline/legacy-room.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

interface Listed {
  id: string;
  joined: boolean;
  lastSeq: number;
  readSeq: number;
  unread: number;
  mentions: number;
}

/** A tenant with three people and three rooms: two channels and a private room. */
async function world() {
  const tenant = unique("t");
  const people = [await login(tenant), await login(tenant), await login(tenant)];
  const [ada, bob] = people as [User, User, User];
  const make = async (by: User, body: Record<string, unknown>) =>
    (await json<{ id: string }>(api(by, "POST", "/api/rooms", { name: unique("room"), ...body }))).id;
  const rooms = [
    await make(ada, { kind: "channel" }),
    await make(bob, { kind: "channel", members: [ada.id] }),
    await make(ada, { kind: "private", members: [bob.id] }),
  ];
  return { tenant, people, rooms };
}

/** Every listed room of every person, as `GET /api/rooms` says and as the room itself says; and
 * the inbox must hold each of them (so the list did not ask the rooms). */
async function expectExact(w: { tenant: string; people: User[]; rooms: string[] }): Promise<void> {
  for (const room of w.rooms) await settleInbox(w.tenant, room);
  const shards = limitsOf(env).presenceShards;
  for (const person of w.people) {
    const listed = (await json<Listed[]>(api(person, "GET", "/api/rooms"))).filter((r) =>
      w.rooms.includes(r.id),
    );
    const inbox = await presenceStub(env, w.tenant, shardOf(person.id, shards)).inboxList(
      person.id,
      listed.map((r) => r.id),
    );
    // What the list asks for before the directory answers: the person's rooms, as by their ids.
    const theirs = await presenceStub(env, w.tenant, shardOf(person.id, shards)).inboxList(person.id, null);
    for (const r of listed)
      if (r.joined) expect(theirs[r.id], `${person.id}'s own ${r.id}`).toEqual(inbox[r.id]);
    for (const [id, entry] of Object.entries(theirs))
      if (w.rooms.includes(id)) expect(entry, `${person.id}'s own ${id}`).toEqual(inbox[id]);
    for (const r of listed) {
      const truth = await roomObject(w.tenant, r.id).summary(person.id);
      const got = { lastSeq: r.lastSeq, readSeq: r.readSeq, unread: r.unread, mentions: r.mentions };
      expect(got, `${person.id} in ${r.id}`).toEqual(truth);
      const entry = inbox[r.id];
      expect(entry, `inbox of ${person.id} has ${r.id}`).toBeDefined();
      if (r.joined) expect(entry?.readSeq, `${person.id}'s marker in ${r.id}`).not.toBeNull();
    }
  }
}

type Op =
  | { kind: "send"; by: number; room: number; mention: number }
  | { kind: "delete"; by: number; room: number; pick: number }
  | { kind: "read"; by: number; room: number; pick: number; socket: boolean }
  | { kind: "join" | "leave"; by: number; room: number }
  | { kind: "expire" | "evict"; room: number };

const who = fc.integer({ min: 0, max: 2 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("send" as const),
      by: who,
      room: who,
      mention: fc.integer({ min: 0, max: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant("delete" as const), by: who, room: who, pick: fc.nat() }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("read" as const),
      by: who,
      room: who,
      pick: fc.nat(),
      socket: fc.boolean(),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constantFrom("join" as const, "leave" as const), by: who, room: who }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constantFrom("expire" as const, "evict" as const), room: who }),
  },
);

describe("the room list from the inbox", () => {
  it("says exactly what each room says after any sends, deletes, reads, joins, leaves, retention and evictions", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 4, maxLength: 20 }), async (ops) => {
        const w = await world();
        const sent = new Map<string, number[]>(w.rooms.map((r) => [r, []]));
        let n = 0;
        for (const o of ops) {
          const room = w.rooms[o.room] as string;
          const stub = roomObject(w.tenant, room);
          if (o.kind === "send") {
            const by = w.people[o.by] as User;
            const target = w.people[o.mention];
            const text = target ? `hi @<${target.id}>` : "hi";
            const res = await api(by, "POST", `/api/rooms/${room}/messages`, { clientId: `c${n++}`, text });
            if (res.status === 201) sent.get(room)?.push((await json<{ seq: number }>(res)).seq);
          } else if (o.kind === "delete") {
            const seqs = sent.get(room) ?? [];
            if (seqs.length > 0)
              await api(
                w.people[o.by] as User,
                "DELETE",
                `/api/rooms/${room}/messages/${seqs[o.pick % seqs.length]}`,
              );
          } else if (o.kind === "read") {
            const by = w.people[o.by] as User;
            const { lastSeq } = await stub.summary(by.id);
            const seq = 1 + (o.pick % Math.max(1, lastSeq));
            if (o.socket && (await stub.isMember(by.id))) {
              const socket = await Client.open(by, room, lastSeq);
              await socket.ready();
              socket.send({ type: "read", seq });
              socket.send({ type: "ping" });
              await socket.next("pong");
              socket.close();
            } else await api(by, "PUT", `/api/rooms/${room}/read`, { seq });
          } else if (o.kind === "join" || o.kind === "leave") {
            await api(w.people[o.by] as User, "POST", `/api/rooms/${room}/${o.kind}`);
          } else if (o.kind === "expire") {
            // Retention of a day, run two days on: everything so far expires.
            await stub.setRetention(1);
            await maintenanceOf(stub).housekeep(Date.now() + 2 * DAY_MS);
          } else {
            // Whatever it held or had in flight goes with it (a read frame held, say: then neither
            // the room nor the list has it).
            await evictDurableObject(stub);
          }
          await expectExact(w);
        }
      }),
      { numRuns: 20 },
    );
  });

  it("counts a commit whose room went away before pushing it, from the alarm of the next instance", async () => {
    const w = await world();
    const [ada, bob] = w.people as [User, User, User];
    const room = w.rooms[1] as string;
    const stub = roomObject(w.tenant, room);
    await api(bob, "POST", `/api/rooms/${room}/messages`, { clientId: "first", text: "one" });
    await expectExact(w);
    // Commits as the room makes them (and the alarm its commit arms), but no push: the instance
    // that made them is gone before it could send.
    await evictDurableObject(stub);
    await runInDurableObject(stub, (_room, state) => {
      const roomLog = new RoomLog(state.storage);
      const stores = {
        log: roomLog,
        attachments: new RoomAttachments(state.storage.sql),
        maxAttachments: 10,
      };
      const by = { id: bob.id, name: bob.name, role: "member" as const };
      for (const [i, text] of ["two", `three @<${ada.id}>`, "four"].entries()) {
        const r = applyCommand(stores, by, { type: "send", clientId: `lost-${i}`, text }, Date.now());
        if (!r.ok) throw new Error(r.message);
      }
      const deleted = applyCommand(
        stores,
        by,
        { type: "delete", clientId: "lost-d", target: roomLog.lastSeq },
        Date.now(),
      );
      if (!deleted.ok) throw new Error(deleted.message);
      // A marker written, not pushed: ada read through "two".
      roomLog.transaction(() => roomLog.markRead(ada.id, roomLog.lastSeq - 3));
      void state.storage.setAlarm(Date.now() + 60_000);
    });
    await evictDurableObject(stub);
    const stale = (await json<Listed[]>(api(ada, "GET", "/api/rooms"))).find((r) => r.id === room);
    const truth = await stub.summary(ada.id);
    // The inbox does not have them yet: this is the gap the alarm closes.
    expect(stale?.lastSeq).toBeLessThan(truth.lastSeq);
    // The alarm (the net the commits armed) runs in a new instance, which pushes what it finds.
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    const now = (await json<Listed[]>(api(ada, "GET", "/api/rooms"))).find((r) => r.id === room);
    expect(now).toMatchObject({
      lastSeq: truth.lastSeq,
      unread: truth.unread,
      mentions: 1,
      readSeq: truth.readSeq,
    });
    await expectExact(w);
  });

  it("fills a room the inbox lost (or never had) once from the room itself, then lists it from the inbox", async () => {
    const w = await world();
    const [ada, bob] = w.people as [User, User, User];
    for (const [i, room] of w.rooms.entries())
      await api(bob, "POST", `/api/rooms/${room}/messages`, { clientId: `m${i}`, text: `hey @<${ada.id}>` });
    await expectExact(w);
    // Every shard forgets everything (an upgrade from before the inbox, or a lost shard).
    const shards = limitsOf(env).presenceShards;
    for (let s = 0; s < shards; s++)
      await runInDurableObject(presenceStub(env, w.tenant, s), (_p, state) => {
        for (const t of [
          "inbox_rooms",
          "inbox_members",
          "inbox_pages",
          "inbox_own_runs",
          "inbox_mentions",
          "inbox_deleted",
        ])
          state.storage.sql.exec(`DELETE FROM ${t}`);
      });
    const inbox = presenceStub(env, w.tenant, shardOf(ada.id, shards));
    expect(await inbox.inboxList(ada.id, w.rooms)).toEqual({});
    // The first list asks the rooms (and is exact); each room sends the shard what it lacks.
    const first = await json<Listed[]>(api(ada, "GET", "/api/rooms"));
    for (const room of w.rooms)
      expect(first.find((r) => r.id === room)).toMatchObject(
        await roomObject(w.tenant, room).summary(ada.id),
      );
    const filled = await inbox.inboxList(ada.id, w.rooms);
    expect(Object.keys(filled).sort()).toEqual([...w.rooms].sort());
    // Bob is in the second and third rooms only: his mentions of ada count there.
    expect(w.rooms.map((r) => filled[r]?.mentions)).toEqual([0, 1, 1]);
    await expectExact(w);
  });

  it("counts exactly in a room whose log was written before messages were counted (the upgrade)", async () => {
    const w = await world();
    const [ada, bob, cyd] = w.people as [User, User, User];
    const room = w.rooms[0] as string;
    await api(bob, "POST", `/api/rooms/${room}/join`);
    await api(cyd, "POST", `/api/rooms/${room}/join`);
    const seqs: number[] = [];
    for (let i = 0; i < 6; i++) {
      const by = [ada, bob, cyd][i % 3] as User;
      const text = i === 4 ? `cc @<${ada.id}>` : `m${i}`;
      seqs.push(
        (
          await json<{ seq: number }>(
            api(by, "POST", `/api/rooms/${room}/messages`, { clientId: `u${i}`, text }),
          )
        ).seq,
      );
    }
    await api(ada, "DELETE", `/api/rooms/${room}/messages/${seqs[1]}`);
    await api(ada, "PUT", `/api/rooms/${room}/read`, { seq: seqs[0] });
    // Back to the schema before the count: no `msgs` column, and no inbox anywhere.
    const stub = roomObject(w.tenant, room);
    await evictDurableObject(stub);
    await runInDurableObject(stub, (_room, state) => {
      undoSchemaV9(state.storage.sql);
      state.storage.sql.exec("UPDATE meta SET value = '8' WHERE key = 'schema_version'");
    });
    await evictDurableObject(stub);
    for (let s = 0; s < limitsOf(env).presenceShards; s++)
      await runInDurableObject(presenceStub(env, w.tenant, s), (_p, state) => {
        state.storage.sql.exec("DELETE FROM inbox_rooms WHERE room_id = ?", room);
      });
    await expectExact(w);
    await api(bob, "POST", `/api/rooms/${room}/messages`, { clientId: "after", text: `and @<${ada.id}>` });
    await expectExact(w);
    const listed = (await json<Listed[]>(api(ada, "GET", "/api/rooms"))).find((r) => r.id === room);
    // After ada's marker: bob's 2 (one deleted) and cyd's 2, then bob's new one; two mention her.
    expect(listed).toMatchObject({ unread: 4, mentions: 2 });
  });

  it("keeps every marker when the inbox moves from a row per reader to pages (the upgrade)", async () => {
    const w = await world();
    const [ada, bob, cyd] = w.people as [User, User, User];
    for (const room of w.rooms.slice(0, 2)) await api(cyd, "POST", `/api/rooms/${room}/join`);
    for (const [r, room] of w.rooms.entries()) {
      for (let i = 0; i < 4; i++)
        await api([ada, bob][i % 2] as User, "POST", `/api/rooms/${room}/messages`, {
          clientId: `up${i}`,
          text: i === 3 ? `cc @<${cyd.id}> @<${ada.id}>` : `m${i}`,
        });
      // Markers at different places: ada at 2, bob at 3 + r (where a member), cyd at 1.
      await api(ada, "PUT", `/api/rooms/${room}/read`, { seq: 2 });
      await api(bob, "PUT", `/api/rooms/${room}/read`, { seq: 3 + r });
      if (r < 2) await api(cyd, "PUT", `/api/rooms/${room}/read`, { seq: 1 });
    }
    await expectExact(w);
    // What the inboxes themselves hold (`GET /api/rooms` would fill what they lack from the rooms).
    const held = () =>
      Promise.all(
        w.people.map((p) =>
          presenceStub(env, w.tenant, shardOf(p.id, limitsOf(env).presenceShards)).inboxList(p.id, w.rooms),
        ),
      );
    const before = await held();
    // Seven members in all: ada and cyd in the first room, all three in the second, ada and bob in the third.
    expect(before.flatMap((inbox) => Object.values(inbox)).filter((e) => e.readSeq !== null)).toHaveLength(7);
    // Back to a row per reader in `inbox_readers`, as shards before pages held them.
    for (let s = 0; s < limitsOf(env).presenceShards; s++) {
      const stub = presenceStub(env, w.tenant, s);
      await runInDurableObject(stub, (_p, state) => {
        const sql = state.storage.sql;
        sql.exec(
          `CREATE TABLE inbox_readers (
             user_id TEXT NOT NULL, room_id TEXT NOT NULL, read_seq INTEGER NOT NULL, acc_read INTEGER NOT NULL,
             PRIMARY KEY (user_id, room_id)
           ) WITHOUT ROWID;
           CREATE INDEX inbox_readers_room ON inbox_readers(room_id);
           INSERT INTO inbox_readers (user_id, room_id, read_seq, acc_read)
             SELECT m.user_id, m.room_id, p.markers -> m.slot ->> 0, p.markers -> m.slot ->> 1
             FROM inbox_members m JOIN inbox_pages p ON p.room_id = m.room_id AND p.page = m.page;
           DROP TABLE inbox_members;
           DROP TABLE inbox_pages;`,
        );
        // Back to before the pages: the migrations after them (notifications, deactivated people,
        // own messages as runs, members by user) run again too.
        sql.exec(
          "UPDATE meta SET value = CAST(value AS INTEGER) - ? WHERE key = 'schema_version'",
          1 + NOTIFY_MIGRATIONS.length + 3,
        );
      });
      await evictDurableObject(stub);
    }
    expect(await held()).toEqual(before);
    // The rooms keep pushing as before (they know how far each shard has).
    await api(cyd, "POST", `/api/rooms/${w.rooms[0]}/messages`, { clientId: "after", text: "after" });
    await expectExact(w);
  });

  it("lists each dm with its people by name, as creating it answers", async () => {
    const w = await world();
    const [ada, bob, cyd] = w.people as [User, User, User];
    const made = [
      await json<{ id: string; members: unknown }>(
        api(ada, "POST", "/api/rooms", { kind: "dm", members: [bob.id] }),
      ),
      await json<{ id: string; members: unknown }>(
        api(cyd, "POST", "/api/rooms", { kind: "dm", members: [ada.id, bob.id] }),
      ),
    ];
    const listed = await json<{ id: string; members?: unknown }[]>(api(ada, "GET", "/api/rooms"));
    for (const dm of made) {
      expect(listed.find((r) => r.id === dm.id)?.members).toEqual(dm.members);
      expect((dm.members as unknown[]).length).toBeGreaterThan(1);
    }
    await expectExact(w);
  });
});

/** A full push of `room` at `to`, its members `users` with their markers at `readSeq`. */
const joined = (tenant: string, room: string, to: number, users: string[], readSeq = 0) =>
  inboxPush(tenant, room, null, to, {
    full: true,
    snapshots: users.map((user) => ({ user, readSeq, accRead: readSeq, own: [], mentions: [] })),
  });

/** Runs `fn` on the inbox of a fresh tenant's presence shard, about a fresh room. */
function inFreshInbox<T>(
  fn: (inbox: InboxStore, storage: DurableObjectStorage, at: { tenant: string; room: string }) => T,
): Promise<T> {
  const at = { tenant: unique("t"), room: unique("r") };
  return runInDurableObject(presenceStub(env, at.tenant, 0), (_p, state) =>
    fn(new InboxStore(state.storage), state.storage, at),
  );
}

describe("the inbox's cost per push", () => {
  it("drops a room's rows below its floor by an index, not by scanning every room's rows", async () => {
    const tenant = unique("t");
    const plans = await runInDurableObject(presenceStub(env, tenant, 0), (_p, state) =>
      [
        ["inbox_own_runs", "last_seq"],
        ["inbox_mentions", "seq"],
        ["inbox_deleted", "seq"],
      ].map(([table, seq]) =>
        state.storage.sql
          .exec<{ detail: string }>(
            `EXPLAIN QUERY PLAN DELETE FROM ${table} WHERE room_id = ? AND ${seq} <= ?`,
            "r",
            1,
          )
          .toArray()
          .map((r) => r.detail)
          .join("; "),
      ),
    );
    for (const plan of plans) expect(plan).not.toMatch(/^SCAN/);
  });

  it("finds a user's rooms by an index, not by scanning every member of every room", async () => {
    const plan = await runInDurableObject(presenceStub(env, unique("t"), 0), (_p, state) =>
      state.storage.sql
        .exec<{ detail: string }>(
          "EXPLAIN QUERY PLAN SELECT room_id FROM inbox_members WHERE user_id = ?",
          "u",
        )
        .toArray()
        .map((r) => r.detail)
        .join("; "),
    );
    expect(plan).toMatch(/USING (COVERING )?INDEX inbox_members_user/);
  });

  it("counts nothing for a room read through its last message, and exactly for the others", async () => {
    const result = await inFreshInbox((inbox, storage, { tenant, room }) => {
      const other = `${room}-2`;
      for (const r of [room, other]) {
        inbox.apply(joined(tenant, r, 0, ["ada", "bob"]));
        inbox.apply(
          inboxPush(tenant, r, 0, 3, {
            own: [
              ["bob", 1],
              ["bob", 2],
              ["bob", 3],
            ],
            mentions: [["ada", 3]],
          }),
        );
      }
      inbox.apply(inboxPush(tenant, room, 3, 3, { markers: [{ user: "ada", readSeq: 3, accRead: 3 }] }));
      const asked: string[] = [];
      watchQueries(storage.sql, (query, params) => {
        if (query.includes("json_each(?2) t")) asked.push(String(params[1]));
      });
      return { listed: inbox.list("ada", null), asked };
    });
    const [room, other] = Object.keys(result.listed).sort();
    expect(result.listed[room as string]).toEqual({ lastSeq: 3, readSeq: 3, unread: 0, mentions: 0 });
    expect(result.listed[other as string]).toEqual({ lastSeq: 3, readSeq: 0, unread: 3, mentions: 1 });
    // Only the unread room's counts were asked for.
    expect(result.asked.map((a) => Object.keys(JSON.parse(a)))).toEqual([[other]]);
  });

  it("writes a member's messages in a row as one run, and counts them exactly around markers and the floor", async () => {
    const result = await inFreshInbox((inbox, storage, { tenant, room }) => {
      const written = countWrites(storage.sql, (q) => q.includes("inbox_own"));
      const list = () => ["ada", "bob"].map((u) => inbox.list(u, [room])[room]?.unread);
      inbox.apply(joined(tenant, room, 0, ["ada", "bob"]));
      written.rows = 0;
      // A burst: ada's 100 messages in one push.
      const burst = Array.from({ length: 100 }, (_, i): [string, number] => ["ada", i + 1]);
      inbox.apply(inboxPush(tenant, room, 0, 100, { own: burst }));
      const burstRows = written.rows;
      // A conversation: ada and bob in turn, then someone else; ada's first follows her burst.
      written.rows = 0;
      inbox.apply(
        inboxPush(tenant, room, 100, 110, {
          own: [
            ["ada", 101],
            ["bob", 102],
            ["ada", 103],
            ["bob", 104],
            ["ada", 105],
          ],
        }),
      );
      const turnRows = written.rows;
      const afterSends = list();
      // Ada reads through 50: her runs that end there go (none does: her first run ends at 101).
      inbox.apply(
        inboxPush(tenant, room, 110, 110, { markers: [{ user: "ada", readSeq: 50, accRead: 50 }] }),
      );
      const afterRead = list();
      // A newcomer's snapshot and the range that holds their messages, in the same push.
      inbox.apply(
        inboxPush(tenant, room, 110, 112, {
          snapshots: [{ user: "cyd", readSeq: 110, accRead: 110, own: [111, 112], mentions: [] }],
          own: [
            ["cyd", 111],
            ["cyd", 112],
          ],
        }),
      );
      const cyd = inbox.list("cyd", [room])[room]?.unread;
      // The floor passes ada's first run, and bob's first message.
      inbox.apply(inboxPush(tenant, room, 112, 112, { floor: 102, accFloor: 102 }));
      const afterFloor = list();
      const runs = storage.sql
        .exec<{ user_id: string; first_seq: number; last_seq: number }>(
          "SELECT user_id, first_seq, last_seq FROM inbox_own_runs WHERE room_id = ? ORDER BY user_id, first_seq",
          room,
        )
        .toArray()
        .map((r) => `${r.user_id} ${r.first_seq}-${r.last_seq}`);
      return { burstRows, turnRows, afterSends, afterRead, cyd, afterFloor, runs };
    });
    // One row for the burst (a row and an index entry per message before runs: 200).
    expect(result.burstRows).toBe(1);
    // Ada's 101 grows her run, 103 and 105 start runs, bob's two start runs: five rows.
    expect(result.turnRows).toBe(5);
    // 112 messages in all by the end; before cyd's two, 110: ada wrote 103, bob 2.
    expect(result.afterSends).toEqual([110 - 103, 110 - 2]);
    expect(result.afterRead).toEqual([110 - 50 - 53, 110 - 2]);
    expect(result.cyd).toBe(0);
    // After the floor (102): ada's 103 and 105 are hers, bob's 104 his.
    expect(result.afterFloor).toEqual([112 - 102 - 2, 112 - 102 - 1]);
    expect(result.runs).toEqual(["ada 103-103", "ada 105-105", "bob 104-104", "cyd 111-112"]);
  });

  it("writes no row for a message its author, or a mention its reader, has read in the same push", async () => {
    const result = await inFreshInbox((inbox, storage, { tenant, room }) => {
      const own = countWrites(storage.sql, (q) => q.includes("inbox_own"));
      const mentions = countWrites(storage.sql, (q) => q.includes("inbox_mentions"));
      inbox.apply(joined(tenant, room, 0, ["ada", "bob"]));
      own.rows = 0;
      mentions.rows = 0;
      // Ada's two messages, the first mentioning bob; her client read both, his the first.
      inbox.apply(
        inboxPush(tenant, room, 0, 2, {
          own: [
            ["ada", 1],
            ["ada", 2],
          ],
          mentions: [["bob", 1]],
          markers: [
            { user: "ada", readSeq: 2, accRead: 2 },
            { user: "bob", readSeq: 1, accRead: 1 },
          ],
        }),
      );
      return {
        rows: own.rows + mentions.rows,
        listed: ["ada", "bob"].map((u) => inbox.list(u, [room])[room]),
      };
    });
    expect(result.rows).toBe(0);
    expect(result.listed).toEqual([
      { lastSeq: 2, readSeq: 2, unread: 0, mentions: 0 },
      { lastSeq: 2, readSeq: 1, unread: 1, mentions: 0 },
    ]);
  });

  it("leaves the room's row alone for a push of markers only", async () => {
    const rows = await inFreshInbox((inbox, storage, { tenant, room }) => {
      const written = countWrites(storage.sql, (q) => q.includes("inbox_rooms"));
      inbox.apply(joined(tenant, room, 0, ["ada", "bob"]));
      written.rows = 0;
      inbox.apply(inboxPush(tenant, room, 0, 3, { own: [["ada", 3]] }));
      const range = written.rows;
      inbox.apply(inboxPush(tenant, room, 3, 3, { markers: [{ user: "bob", readSeq: 3, accRead: 3 }] }));
      return { range, markers: written.rows - range, listed: inbox.list("bob", [room])[room] };
    });
    expect(rows).toEqual({
      range: 1,
      markers: 0,
      listed: { lastSeq: 3, readSeq: 3, unread: 0, mentions: 0 },
    });
  });

  it("turns the rows of own messages into runs when a shard upgrades, and lists the same", async () => {
    const result = await inFreshInbox((inbox, storage, { tenant, room }) => {
      const sql = storage.sql;
      inbox.apply(joined(tenant, room, 20, ["ada", "bob"], 3));
      // As a shard before runs holds them: a row per own message after the marker.
      sql.exec("DROP TABLE inbox_own_runs");
      for (const [user, seq] of [
        ["ada", 4],
        ["ada", 5],
        ["ada", 6],
        ["bob", 7],
        ["ada", 9],
        ["bob", 10],
        ["bob", 11],
      ] as const)
        sql.exec("INSERT INTO inbox_own (user_id, room_id, seq) VALUES (?, ?, ?)", user, room, seq);
      storage.transactionSync(() => (INBOX_OWN_RUNS_MIGRATION as (sql: SqlStorage) => void)(sql));
      // The old rows stay for a rollback, no longer written: ada's next message goes to her runs.
      inbox.apply(inboxPush(tenant, room, 20, 21, { own: [["ada", 21]] }));
      const kept = sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM inbox_own").one().n;
      const runs = sql
        .exec<{ user_id: string; first_seq: number; last_seq: number }>(
          "SELECT user_id, first_seq, last_seq FROM inbox_own_runs ORDER BY user_id, first_seq",
        )
        .toArray()
        .map((r) => `${r.user_id} ${r.first_seq}-${r.last_seq}`);
      return { kept, runs, unread: ["ada", "bob"].map((u) => inbox.list(u, [room])[room]?.unread) };
    });
    expect(result.kept).toBe(7);
    expect(result.runs).toEqual(["ada 4-6", "ada 9-9", "ada 21-21", "bob 7-7", "bob 10-11"]);
    expect(result.unread).toEqual([21 - 3 - 5, 21 - 3 - 3]);
  });
});

describe("the inbox's markers by page", () => {
  it("writes one row per page of markers that moved, fills a freed slot, and lists each reader exactly", async () => {
    const tenant = unique("t");
    const room = unique("r");
    const users = Array.from({ length: 250 }, (_, i) => `u${String(i).padStart(3, "0")}`);
    const result = await runInDurableObject(presenceStub(env, tenant, 0), (_p, state) => {
      const sql = state.storage.sql;
      const written = countWrites(sql, (q) => q.includes("inbox_pages"));
      const inbox = new InboxStore(state.storage);
      inbox.apply(
        inboxPush(tenant, room, null, 10, {
          full: true,
          snapshots: users.map((user) => ({ user, readSeq: 0, accRead: 0, own: [], mentions: [] })),
        }),
      );
      const pages = sql
        .exec<{ n: number }>("SELECT COUNT(*) AS n FROM inbox_pages WHERE room_id = ?", room)
        .one().n;
      written.rows = 0;
      // Every reader's marker moves in one push: three pages, three rows.
      const moved = inbox.apply(
        inboxPush(tenant, room, 10, 10, {
          markers: users.map((user, i) => ({ user, readSeq: 1 + (i % 10), accRead: 1 + (i % 10) })),
        }),
      );
      const movedRows = written.rows;
      // Behind the marker: nothing written.
      written.rows = 0;
      inbox.apply(inboxPush(tenant, room, 10, 10, { markers: [{ user: "u007", readSeq: 1, accRead: 1 }] }));
      const backwardsRows = written.rows;
      // One leaves and another arrives: the newcomer takes the freed slot, on the first page.
      inbox.apply(inboxPush(tenant, room, 10, 10, { removed: ["u042"] }));
      inbox.apply(
        inboxPush(tenant, room, 10, 10, {
          snapshots: [{ user: "new", readSeq: 4, accRead: 4, own: [], mentions: [] }],
        }),
      );
      const slot = sql
        .exec<{ page: number; slot: number }>(
          "SELECT page, slot FROM inbox_members WHERE room_id = ? AND user_id = 'new'",
          room,
        )
        .one();
      const listed = ["u000", "u007", "u199", "u249", "u042", "new"].map((u) => inbox.list(u, [room])[room]);
      return { pages, moved, movedRows, backwardsRows, slot, listed };
    });
    expect(result.pages).toBe(3);
    expect(result.moved).toEqual({ ok: true, missing: [] });
    expect(result.movedRows).toBe(3);
    expect(result.backwardsRows).toBe(0);
    expect(result.slot).toEqual({ page: 0, slot: 42 });
    expect(result.listed).toEqual([
      { lastSeq: 10, readSeq: 1, unread: 9, mentions: 0 },
      { lastSeq: 10, readSeq: 8, unread: 2, mentions: 0 },
      { lastSeq: 10, readSeq: 10, unread: 0, mentions: 0 },
      { lastSeq: 10, readSeq: 10, unread: 0, mentions: 0 },
      { lastSeq: 10, readSeq: null, unread: 0, mentions: 0 },
      { lastSeq: 10, readSeq: 4, unread: 6, mentions: 0 },
    ]);
  });

  it("fills the pages from the rows per reader they replace, a page per 100 readers of a room", async () => {
    const tenant = unique("t");
    const rooms = { big: unique("r"), small: unique("r") };
    const listed = await runInDurableObject(presenceStub(env, tenant, 0), (_p, state) => {
      const sql = state.storage.sql;
      // The tables as they were before pages, with 150 readers in one room and 3 in another.
      sql.exec(
        `DROP TABLE inbox_members; DROP TABLE inbox_pages;
         CREATE TABLE inbox_readers (
           user_id TEXT NOT NULL, room_id TEXT NOT NULL, read_seq INTEGER NOT NULL, acc_read INTEGER NOT NULL,
           PRIMARY KEY (user_id, room_id)
         ) WITHOUT ROWID;`,
      );
      for (const [room, n] of [
        [rooms.big, 150],
        [rooms.small, 3],
      ] as const) {
        sql.exec(
          "INSERT INTO inbox_rooms (room_id, synced, acc_last, floor, acc_floor) VALUES (?, 200, 200, 0, 0)",
          room,
        );
        for (let i = 0; i < n; i++)
          sql.exec(
            "INSERT INTO inbox_readers (user_id, room_id, read_seq, acc_read) VALUES (?, ?, ?, ?)",
            `u${String(i).padStart(3, "0")}`,
            room,
            i + 1,
            i + 1,
          );
      }
      const toPages = INBOX_MIGRATIONS.at(-1);
      if (typeof toPages !== "function") throw new Error("the last inbox migration is not the pages one");
      state.storage.transactionSync(() => toPages(sql));
      const pages = sql
        .exec<{ room_id: string; n: number }>(
          "SELECT room_id, COUNT(*) AS n FROM inbox_pages GROUP BY room_id",
        )
        .toArray();
      const inbox = new InboxStore(state.storage);
      return {
        pages: Object.fromEntries(pages.map((r) => [r.room_id, r.n])),
        readers: ["u000", "u099", "u100", "u149"].map((u) => inbox.list(u, [rooms.big])[rooms.big]?.readSeq),
        small: ["u000", "u002", "u003"].map((u) => inbox.list(u, [rooms.small])[rooms.small]),
      };
    });
    expect(listed.pages).toEqual({ [rooms.big]: 2, [rooms.small]: 1 });
    expect(listed.readers).toEqual([1, 100, 101, 150]);
    expect(listed.small).toEqual([
      { lastSeq: 200, readSeq: 1, unread: 199, mentions: 0 },
      { lastSeq: 200, readSeq: 3, unread: 197, mentions: 0 },
      { lastSeq: 200, readSeq: null, unread: 0, mentions: 0 },
    ]);
  });
});
