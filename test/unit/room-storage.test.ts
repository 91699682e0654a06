/**
 * What a room's SQLite costs per event, measured in the Durable Object's own SQLite (its
 * `databaseSize`): a row of the hot window (with its JSON), a slim row (past the hot window, inside
 * the command window), a row of the segments index. docs/scaling.md and docs/architecture.md state
 * the room's bound from these figures; this test keeps them true (a schema change that makes a row
 * much larger fails here first).
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../../config/limits.ts";
import { RoomLog } from "../../durable-objects/room-log.ts";
import { segmentKey } from "../../durable-objects/room-schema.ts";

const EVENTS = 4000;
const COLUMNS =
  "seq, kind, author_id, client_id, target, thread_root, deleted, ts, json, digest, chain, scheme, nonce, content_hash, meta_hash";

/** Deterministic "random" numbers, so the measured rows are the same on every run. */
function prng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    return s / 2 ** 31;
  };
}

const WORDS = "the a deploy is green again and we ship it today after lunch review please thanks done".split(
  " ",
);

/** A room's log as people write it: 50 members, messages of 3 to 40 words (ids and clientIds as
 * the app makes them), some edits and reactions. */
function realisticLog(log: RoomLog): void {
  const rand = prng(7);
  const people = Array.from({ length: 50 }, (_, i) => ({
    id: `u_${String(i).padStart(20, "x")}`,
    name: `Person ${i}`,
  }));
  let ts = 1_700_000_000_000;
  for (let i = 0; i < EVENTS; i++) {
    const author = people[Math.floor(rand() * people.length)] ?? { id: "u", name: "u" };
    const clientId = `c_${Math.floor(rand() * 2 ** 52).toString(36)}${i}`;
    ts += 1 + Math.floor(rand() * 5000);
    const roll = rand();
    const last = log.lastSeq;
    if (roll < 0.05 && last > 0) {
      log.append({ kind: "reaction", ts, author, clientId, target: last, emoji: "👍", on: true });
    } else if (roll < 0.08 && last > 0) {
      log.append({ kind: "edit", ts, author, clientId, target: last, text: "fixed a typo in it" });
    } else {
      const words = Array.from(
        { length: 3 + Math.floor(rand() * 38) },
        () => WORDS[Math.floor(rand() * WORDS.length)],
      );
      log.append({ kind: "message", ts, author, clientId, text: words.join(" ") });
    }
  }
}

describe("a room's storage", () => {
  it("costs a few hundred bytes per slim row, so the command window is tens of megabytes", async () => {
    const source = env.ROOM.get(env.ROOM.idFromName("unit:room-storage-source"));
    const rows = await runInDurableObject(source, (_room, state) => {
      realisticLog(new RoomLog(state.storage));
      return state.storage.sql.exec(`SELECT ${COLUMNS} FROM events ORDER BY seq`).toArray();
    });
    expect(rows).toHaveLength(EVENTS);

    /** Bytes the rows add to a fresh room's SQLite, stored hot (with JSON) or slim (without). */
    const measure = (name: string, slim: boolean) =>
      runInDurableObject(env.ROOM.get(env.ROOM.idFromName(name)), (_room, state) => {
        new RoomLog(state.storage);
        const sql = state.storage.sql;
        const before = sql.databaseSize;
        state.storage.transactionSync(() => {
          for (const r of rows) {
            const values = COLUMNS.split(", ").map((c) => (slim && c === "json" ? "" : (r[c] ?? null)));
            sql.exec(
              `INSERT INTO events (${COLUMNS}) VALUES (${values.map(() => "?").join(", ")})`,
              ...values,
            );
          }
        });
        return (sql.databaseSize - before) / EVENTS;
      });
    const hot = await measure("unit:room-storage-hot", false);
    const slim = await measure("unit:room-storage-slim", true);

    // A row of the segments index, with a segment's worth of edit targets (a few dozen).
    const index = await runInDurableObject(
      env.ROOM.get(env.ROOM.idFromName("unit:room-storage-index")),
      (_room, state) => {
        new RoomLog(state.storage);
        const sql = state.storage.sql;
        const before = sql.databaseSize;
        const n = 2000;
        state.storage.transactionSync(() => {
          for (let i = 0; i < n; i++) {
            const from = i * 1000 + 1;
            sql.exec(
              "INSERT INTO segments (from_seq, to_seq, object_key, dirty, format, last_ts, edit_targets) VALUES (?, ?, ?, 0, 2, ?, ?)",
              from,
              from + 999,
              segmentKey("t_abcdefghij/rooms/r_abcdefghijklmnopqrst", from, from + 999),
              1_700_000_000_000 + i,
              JSON.stringify(Array.from({ length: 30 }, (_, k) => from + k * 30)),
            );
          }
        });
        return (sql.databaseSize - before) / n;
      },
    );

    const bound =
      DEFAULT_LIMITS.hotEvents * hot + (DEFAULT_LIMITS.commandWindowEvents - DEFAULT_LIMITS.hotEvents) * slim;
    console.log(
      JSON.stringify({
        event: "room_storage_measured",
        bytesPerHotRow: Math.round(hot),
        bytesPerSlimRow: Math.round(slim),
        bytesPerSegmentIndexRow: Math.round(index),
        windowsAtDefaults: Math.round(bound),
      }),
    );
    // The figures docs/scaling.md states, with room to spare for another page layout.
    expect(slim).toBeGreaterThan(250);
    expect(slim).toBeLessThan(500);
    expect(hot).toBeGreaterThan(slim);
    expect(hot).toBeLessThan(1000);
    expect(index).toBeLessThan(400);
    expect(bound).toBeLessThan(150 * 1024 * 1024);
  });
});
