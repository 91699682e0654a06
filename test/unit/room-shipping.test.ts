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
import { ArchiveFeed } from "../../durable-objects/room-archive.ts";
import type { ColdArchive } from "../../durable-objects/room-cold.ts";
import { RoomLog, type RoomMeta } from "../../durable-objects/room-log.ts";
import { SearchFeed } from "../../durable-objects/room-search.ts";
import type { SearchOp } from "../../durable-objects/search.ts";

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

const noCold = {} as ColdArchive;
/** The part of the cold archive search reads from: the log's rows (nothing is sealed here). */
const coldOf = (log: RoomLog) =>
  ({
    readAfter: async (after: number, limit: number) => log.rowsAfter(after, limit),
  }) as unknown as ColdArchive;

describe("shipping to the D1 history", () => {
  const limits: Limits = { ...DEFAULT_LIMITS, outboxDrainDelayMs: 200, outboxBatch: 10 };
  const feed = (log: RoomLog, storage: DurableObjectStorage) =>
    new ArchiveFeed({ storage, limits, log, cold: noCold, queue: () => env.ROOM_EVENTS });

  it("sends new events a drain delay after the last send, not at once after every commit", async () => {
    await inRoom(5, async (log, storage) => {
      const archive = feed(log, storage);
      const now = 1_800_000_000_000;
      // Never sent: due now.
      expect(archive.nextDue(now)).toBe(now);
      // Sent through 3 just now, 2 more committed since: due once the delay has passed.
      log.setCounter("archive_sent", 3);
      log.setCounter("archive_confirmed", 3);
      log.setCounter("archive_sent_at", now - 50);
      expect(archive.nextDue(now)).toBe(now - 50 + 200);
      // Long after the last send: now.
      expect(archive.nextDue(now + 1000)).toBe(now + 1000);
    });
  });

  it("sends a full batch at once", async () => {
    await inRoom(15, async (log, storage) => {
      const archive = feed(log, storage);
      const now = 1_800_000_000_000;
      log.setCounter("archive_sent", 5);
      log.setCounter("archive_confirmed", 5);
      log.setCounter("archive_sent_at", now - 1);
      expect(archive.nextDue(now)).toBe(now);
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
