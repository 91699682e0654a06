/**
 * When a room ships to its derived stores (durable-objects/room-archive.ts, room-search.ts): a busy
 * room gathers its commits into batches instead of one send (and one alarm) per commit, and its
 * alarm never re-arms itself for "now" while a send that will catch up is already under way. Both
 * are about cost, so neither shows through the protocol; the schedule is tested here, in a room
 * object's own storage, with a search part whose answers the test releases.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { DEFAULT_LIMITS, type Limits } from "../../config/limits.ts";
import { ArchiveFeed, type ArchivePack } from "../../durable-objects/room-archive.ts";
import type { ColdArchive } from "../../durable-objects/room-cold.ts";
import { RoomLog, type RoomMeta, WATERMARKS_KEY, WRITTEN_BEHIND } from "../../durable-objects/room-log.ts";
import { SearchFeed } from "../../durable-objects/room-search.ts";
import type { SearchOp } from "../../durable-objects/search.ts";
import { countWrites } from "../helpers.ts";

const author = { id: "u_shipping", name: "Shipper" };
let rooms = 0;

/** Runs `fn` in a fresh room object's storage, with a log of `events` messages. */
function inRoom(events: number, fn: (log: RoomLog, storage: DurableObjectStorage) => Promise<void>) {
  const stub = env.ROOM.get(env.ROOM.newUniqueId());
  rooms += 1;
  return runInDurableObject(stub, async (_instance, state) => {
    const log = new RoomLog(state.storage);
    for (let i = 0; i < events; i++)
      log.append({
        kind: "message",
        ts: 1_700_000_000_000 + i,
        author,
        clientId: `c${rooms}-${i}`,
        text: `m${i}`,
      });
    await fn(log, state.storage);
  });
}

/** The part of the cold archive search reads from: the log's rows (nothing is sealed here). */
const coldOf = (log: RoomLog) =>
  ({
    readAfter: async (after: number, limit: number) => log.rowsAfter(after, limit),
  }) as unknown as ColdArchive;

describe("shipping to the D1 history", () => {
  const limits: Limits = { ...DEFAULT_LIMITS, outboxDrainDelayMs: 200, outboxBatch: 10 };
  const meta: RoomMeta = { tenantId: "shipping", roomId: "r_archive", name: "s", kind: "channel" };
  /** A feed on the room's storage with a queue that records what it is sent (seqs per batch). */
  function feed(log: RoomLog, storage: DurableObjectStorage) {
    const batches: number[][] = [];
    const queue = {
      sendBatch: async (messages: Iterable<{ body: ArchivePack }>) => {
        batches.push([...messages].flatMap((m) => m.body.events.map((e) => e.event.seq)));
      },
    } as unknown as Queue;
    const cold = {
      readAfter: async (after: number, limit: number) => log.rowsAfter(after, limit),
      timesOf: async () => new Map<number, number>(),
      // Every event is inside the D1 history's window.
      firstSeqSince: (after: number) => after + 1,
    } as unknown as ColdArchive;
    const archive = new ArchiveFeed({
      storage,
      limits,
      log,
      cold,
      queue: () => queue,
      meta: () => meta,
      reschedule: () => {},
    });
    return { archive, batches };
  }
  const append = (log: RoomLog, n: number, prefix: string) => {
    for (let i = 0; i < n; i++)
      log.append({
        kind: "message",
        ts: Date.now(),
        author,
        clientId: `${prefix}${i}`,
        text: `${prefix}${i}`,
      });
  };

  it("sends a busy room's new events one drain delay after the last send, in one pass", async () => {
    await inRoom(5, async (log, storage) => {
      const { archive, batches } = feed(log, storage);
      const now = Date.now();
      // Never sent by this instance: due now.
      expect(archive.nextDue(now)).toBe(now);
      await archive.drain(meta, now);
      expect(batches).toEqual([[1, 2, 3, 4, 5]]);
      // Two more commits just after: due once the delay has passed, not at once.
      append(log, 2, "more");
      expect(archive.nextDue(now + 50)).toBe(now + 200);
      expect(archive.nextDue(now + 1000)).toBe(now + 1000);
      // Each commit kicks the feed; one timer sends both in one pass.
      archive.kick();
      archive.kick();
      await vi.waitFor(() => expect(batches).toHaveLength(2));
      expect(batches[1]).toEqual([6, 7]);
    });
  });

  it("sends a full batch at once", async () => {
    await inRoom(5, async (log, storage) => {
      const { archive } = feed(log, storage);
      const now = Date.now();
      await archive.drain(meta, now);
      append(log, 12, "burst");
      expect(archive.nextDue(now + 1)).toBe(now + 1);
    });
  });

  it("waits for the history's confirmations from its last progress, and resends nothing still on time", async () => {
    await inRoom(5, async (log, storage) => {
      const { archive, batches } = feed(log, storage);
      const long = Date.now() - limits.archiveResendMs - 1000;
      await archive.drain(meta, long);
      append(log, 3, "later");
      await archive.drain(meta, long + 250);
      expect(batches).toEqual([
        [1, 2, 3, 4, 5],
        [6, 7, 8],
      ]);
      // The first batch is confirmed now: the rest is late only from now on.
      archive.confirm([1, 2, 3, 4, 5]);
      append(log, 1, "last");
      await archive.drain(meta, Date.now());
      expect(batches.at(-1)).toEqual([9]);
      expect(batches).toHaveLength(3);
    });
  });
  it("waits twice as long before each resend while the history makes no progress", async () => {
    await inRoom(5, async (log, storage) => {
      const { archive, batches } = feed(log, storage);
      const wait = limits.archiveResendMs;
      const t0 = Date.now() - 100 * wait;
      await archive.drain(meta, t0);
      await archive.drain(meta, t0 + wait); // nothing confirmed for a timeout: resent
      await archive.drain(meta, t0 + 2 * wait); // one timeout later: not yet, it waits two now
      expect(batches).toHaveLength(2);
      await archive.drain(meta, t0 + 3 * wait);
      expect(batches).toEqual([
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 5],
        [1, 2, 3, 4, 5],
      ]);
      // Progress resets the wait.
      archive.confirm([1, 2, 3, 4, 5]);
      expect(storage.kv.get("archive_resends")).toBeUndefined();
    });
  });
});

describe("shipping to search", () => {
  /** A search part that records what it is sent and answers only when the test says so. */
  function heldPart() {
    const calls: SearchOp[][] = [];
    const releases: (() => void)[] = [];
    const stub = {
      layout: async () => ({ parts: 1 }),
      index: (_at: unknown, _room: string, ops: SearchOp[]) => {
        calls.push(ops);
        return new Promise<{ ok: true }>((resolve) => releases.push(() => resolve({ ok: true })));
      },
    };
    const namespace = { idFromName: (name: string) => name, get: () => stub };
    return { calls, releases, env: { ...env, SEARCH: namespace } as unknown as Env };
  }

  it("while a send is in flight, the alarm checks back later instead of at once", async () => {
    await inRoom(3, async (log) => {
      const part = heldPart();
      const meta: RoomMeta = { tenantId: "shipping", roomId: "r_shipping", name: "s", kind: "channel" };
      const search = new SearchFeed({
        env: part.env,
        limits: DEFAULT_LIMITS,
        log,
        cold: coldOf(log),
        meta: () => meta,
      });
      search.kick(true);
      await vi.waitFor(() => expect(part.calls).toHaveLength(1));
      const now = Date.now();
      expect(search.behind).toBe(true);
      expect(search.nextDue(now)).toBeGreaterThan(now);
      part.releases.shift()?.();
      await search.settle();
      expect(search.behind).toBe(false);
      expect(search.nextDue(now)).toBeNull();
    });
  });

  it("gathers what a busy room commits between sends into one send", async () => {
    await inRoom(1, async (log) => {
      const part = heldPart();
      const meta: RoomMeta = { tenantId: "shipping", roomId: "r_busy", name: "s", kind: "channel" };
      const limits = { ...DEFAULT_LIMITS, searchShipIntervalMs: 60_000 };
      const search = new SearchFeed({ env: part.env, limits, log, cold: coldOf(log), meta: () => meta });
      search.kick();
      await vi.waitFor(() => expect(part.calls).toHaveLength(1));
      part.releases.shift()?.();
      await vi.waitFor(() => expect(search.behind).toBe(false));
      // Three more commits, each kicking: within the interval, nothing is sent yet.
      for (let i = 0; i < 3; i++) {
        log.append({
          kind: "message",
          ts: 1_700_000_100_000 + i,
          author,
          clientId: `busy-${i}`,
          text: `b${i}`,
        });
        search.kick();
      }
      await Promise.resolve();
      expect(part.calls).toHaveLength(1);
      expect(search.nextDue(Date.now())).toBeGreaterThan(Date.now());
      // Someone waits for the part (a test, a catch-up): what waited goes at once, in one send.
      const settled = search.settle();
      await vi.waitFor(() => expect(part.calls).toHaveLength(2));
      expect(part.calls[1]?.map((op) => (op.op === "put" ? op.text : op.op))).toEqual(["b0", "b1", "b2"]);
      part.releases.shift()?.();
      await settled;
      expect(search.behind).toBe(false);
    });
  });

  it("sends what the room just committed from memory, and reads the log for what it does not hold", async () => {
    await inRoom(2, async (log) => {
      const part = heldPart();
      const meta: RoomMeta = { tenantId: "shipping", roomId: "r_recent", name: "s", kind: "channel" };
      let logReads = 0;
      const cold = {
        readAfter: async (after: number, limit: number) => {
          logReads += 1;
          return log.rowsAfter(after, limit);
        },
      } as unknown as ColdArchive;
      const limits = { ...DEFAULT_LIMITS, searchShipIntervalMs: 60_000 };
      const search = new SearchFeed({ env: part.env, limits, log, cold, meta: () => meta });
      // Events 1 and 2 were committed by an earlier instance: read from the log.
      search.kick(true);
      await vi.waitFor(() => expect(part.calls).toHaveLength(1));
      part.releases.shift()?.();
      await search.settle();
      expect(logReads).toBe(1);
      // Events this instance commits go from memory.
      for (let i = 0; i < 3; i++) {
        const { seq, json } = log.append({
          kind: "message",
          ts: 1_700_000_200_000 + i,
          author,
          clientId: `recent-${i}`,
          text: `r${i}`,
        });
        search.committed(seq, json);
      }
      const settled = search.settle();
      await vi.waitFor(() => expect(part.calls).toHaveLength(2));
      part.releases.shift()?.();
      await settled;
      expect(part.calls[1]?.map((op) => (op.op === "put" ? `${op.seq}:${op.text}` : op.op))).toEqual([
        "3:r0",
        "4:r1",
        "5:r2",
      ]);
      expect(logReads).toBe(1);
      expect(search.behind).toBe(false);
    });
  });
});

describe("the watermarks written behind", () => {
  it("writes every watermark that moved in one row, and nothing when none did", () =>
    inRoom(0, async (log, storage) => {
      const written = countWrites(storage.sql, (q) => /\bmeta\b/.test(q));
      const moveAll = (by: number) =>
        WRITTEN_BEHIND.forEach((key, i) => {
          log.setCounter(key, by + i);
        });
      // The first write makes the row (a row and its key's index entry).
      moveAll(10);
      log.writeCounters();
      written.rows = 0;
      moveAll(20);
      log.writeCounters();
      const moved = written.rows;
      log.writeCounters();
      expect({ moved, again: written.rows - moved }).toEqual({ moved: 1, again: 0 });
      // What another instance of the room reads.
      const next = new RoomLog(storage);
      expect(WRITTEN_BEHIND.map((key) => next.counter(key))).toEqual([20, 21, 22, 23]);
    }));

  it("moves a room's watermarks from a row each into the one row (the upgrade)", () =>
    inRoom(0, async (_log, storage) => {
      const sql = storage.sql;
      // As a room before the upgrade holds them.
      sql.exec("DELETE FROM meta WHERE key = ?", WATERMARKS_KEY);
      WRITTEN_BEHIND.forEach((key, i) => {
        sql.exec("INSERT INTO meta (key, value) VALUES (?, ?)", key, String(100 + i));
      });
      sql.exec("UPDATE meta SET value = CAST(value AS INTEGER) - 1 WHERE key = 'schema_version'");
      const upgraded = new RoomLog(storage);
      expect(WRITTEN_BEHIND.map((key) => upgraded.counter(key))).toEqual([100, 101, 102, 103]);
      // The rows of a key each stay for a rollback, no longer written: what moves goes to the one row.
      upgraded.setCounter("search_indexed", 200);
      upgraded.writeCounters();
      const rows = sql
        .exec<{ key: string; value: string }>(
          "SELECT key, value FROM meta WHERE key IN (?, ?, ?, ?) ORDER BY key",
          ...WRITTEN_BEHIND,
        )
        .toArray()
        .map((r) => `${r.key}=${r.value}`);
      expect(rows).toEqual([
        "archive_confirmed=101",
        "archive_sent=102",
        "archive_sent_at=103",
        "search_indexed=100",
      ]);
      expect(new RoomLog(storage).counter("search_indexed")).toBe(200);
    }));
});
