/**
 * The web client's timeline model (client/web/timeline.ts): folding a room's events into messages
 * must not depend on the order events arrive in (live, history pages backwards, a jump), and the
 * rows must show gaps exactly where the loaded ranges have holes.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Timeline } from "../../client/web/timeline.ts";
import type { RoomEvent } from "../../protocol/index.ts";

const ada = { id: "u_ada", name: "Ada" };
const bob = { id: "u_bob", name: "Bob" };
const T0 = Date.UTC(2026, 10, 23, 9, 0, 0);

function log(): RoomEvent[] {
  return [
    { seq: 1, kind: "member_join", ts: T0, author: ada, user: ada },
    { seq: 2, kind: "message", ts: T0 + 1000, author: ada, text: "hello" },
    { seq: 3, kind: "message", ts: T0 + 2000, author: bob, text: "reply", threadRoot: 2 },
    { seq: 4, kind: "reaction", ts: T0 + 3000, author: bob, target: 2, emoji: "👍", on: true },
    { seq: 5, kind: "edit", ts: T0 + 4000, author: ada, target: 2, text: "hello, edited" },
    { seq: 6, kind: "reaction", ts: T0 + 5000, author: ada, target: 2, emoji: "👍", on: true },
    { seq: 7, kind: "reaction", ts: T0 + 6000, author: bob, target: 2, emoji: "👍", on: false },
    { seq: 8, kind: "message", ts: T0 + 7000, author: bob, text: "doomed" },
    { seq: 9, kind: "delete", ts: T0 + 8000, author: bob, target: 8 },
    { seq: 10, kind: "edit", ts: T0 + 9000, author: ada, target: 2, text: "hello, edited twice" },
  ];
}

function fold(events: RoomEvent[]) {
  const t = new Timeline();
  for (const e of events) t.apply(e);
  t.markLoaded(1, 10);
  const m = (seq: number) => {
    const v = t.messages.get(seq);
    return (
      v && {
        text: v.text,
        edited: v.edited,
        deleted: v.deleted,
        replies: v.replies,
        reactions: [...v.reactions],
      }
    );
  };
  return { root: m(2), reply: m(3), doomed: m(8), rows: t.rows().map((r) => r.kind) };
}

describe("the timeline model", () => {
  it("shows a message pinned by the pin event with the highest seq, in any arrival order", () => {
    const pins: RoomEvent[] = [
      { seq: 11, kind: "pin", ts: T0 + 10_000, author: bob, target: 2, on: true },
      { seq: 12, kind: "pin", ts: T0 + 11_000, author: ada, target: 2, on: false },
      { seq: 13, kind: "pin", ts: T0 + 12_000, author: ada, target: 2, on: true },
      { seq: 14, kind: "pin", ts: T0 + 13_000, author: bob, target: 8, on: true },
    ];
    for (const order of [[...log(), ...pins], [...pins].reverse().concat(log().reverse())]) {
      const t = new Timeline();
      for (const e of order) t.apply(e);
      expect(t.messages.get(2)?.pinnedBy).toEqual(ada);
      // A deleted message shows no pin.
      expect(t.messages.get(8)?.pinnedBy).toBeUndefined();
    }
    const t = new Timeline();
    for (const e of [...log(), ...pins.slice(0, 2)]) t.apply(e);
    expect(t.messages.get(2)?.pinnedBy).toBeUndefined();
  });

  it("ignores an event kind it does not know, as a client built before that kind must", () => {
    const t = new Timeline();
    const later = { seq: 11, kind: "from_a_newer_server", ts: T0, author: ada, target: 2 };
    expect(t.apply(later as unknown as RoomEvent)).toEqual([]);
    const { root } = fold([...log(), later as unknown as RoomEvent]);
    expect(root).toMatchObject({ text: "hello, edited twice", deleted: false });
  });

  it("folds edits, deletes, reactions and replies into their messages", () => {
    const { root, doomed, rows } = fold(log());
    expect(root).toEqual({
      text: "hello, edited twice",
      edited: true,
      deleted: false,
      replies: [3],
      reactions: [["👍", [ada]]],
    });
    expect(doomed).toMatchObject({ text: "", deleted: true });
    // A thread reply is not a row of the main list; the join is a notice.
    expect(rows).toEqual(["start", "day", "notice", "message", "message"]);
  });

  it("gives the same result whatever order the events arrive in", () => {
    const expected = fold(log());
    fc.assert(
      fc.property(fc.shuffledSubarray(log(), { minLength: 10, maxLength: 10 }), (events) => {
        expect(fold(events)).toEqual(expected);
      }),
    );
  });

  it("shows a gap row between loaded ranges and a 'more' row above the oldest", () => {
    const t = new Timeline();
    for (const e of log()) if (e.seq >= 2 && e.seq <= 3) t.apply(e);
    t.markLoaded(2, 3);
    t.apply({ seq: 8, kind: "message", ts: T0 + 7000, author: bob, text: "later" });
    t.markLoaded(8, 8);
    expect(t.rows().map((r) => r.kind)).toEqual(["more", "day", "message", "gap", "day", "message"]);
    expect(t.rows()[3]).toMatchObject({ kind: "gap", after: 3, before: 8 });
    t.markLoaded(4, 7);
    expect(t.ranges).toEqual([[2, 8]]);
    expect(t.rows().map((r) => r.kind)).toEqual(["more", "day", "message", "message"]);
  });

  it("runs a block of one author's messages together, for five minutes", () => {
    const t = new Timeline();
    t.apply({ seq: 1, kind: "message", ts: T0, author: ada, text: "a" });
    t.apply({ seq: 2, kind: "message", ts: T0 + 60_000, author: ada, text: "b" });
    t.apply({ seq: 3, kind: "message", ts: T0 + 7 * 60_000, author: ada, text: "c" });
    t.apply({ seq: 4, kind: "message", ts: T0 + 8 * 60_000, author: bob, text: "d" });
    t.markLoaded(1, 4);
    const continued = t.rows().flatMap((r) => (r.kind === "message" ? [r.continued] : []));
    expect(continued).toEqual([false, true, false, false]);
  });
});
