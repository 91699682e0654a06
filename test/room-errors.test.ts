import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import { api, Client, createRoom, json, login, unique } from "./helpers.ts";

async function soloRoom() {
  const user = await login(unique("t"));
  const roomId = await createRoom(user);
  const client = await Client.open(user, roomId);
  await client.ready();
  return { user, roomId, client };
}

async function lastSeq(user: { token: string }, roomId: string): Promise<number> {
  const page = await json<{ events: { seq: number }[] }>(
    api(user, "GET", `/api/rooms/${roomId}/messages?limit=1`),
  );
  return page.events.at(-1)?.seq ?? 0;
}

describe("bad frames get the protocol's error, keep the socket open, and change nothing", () => {
  it("answers malformed JSON, a non-object, an unknown type and a binary frame with bad_request", async () => {
    const { user, roomId, client } = await soloRoom();
    const before = await lastSeq(user, roomId);
    const bad = [
      "{nope",
      "[1,2]",
      '"text"',
      JSON.stringify({ type: "shout", clientId: "x1" }),
      JSON.stringify({ text: "no type" }),
    ];
    for (const frame of bad) client.send(frame);
    await client.until((c) => c.errors().length >= bad.length, "an error per bad frame");
    expect(client.errors().map((e) => e.code)).toEqual(Array(bad.length).fill("bad_request"));
    expect(client.errors()[3]).toMatchObject({ clientId: "x1", message: expect.stringContaining("shout") });
    expect(client.closed).toBeNull();
    // The socket still works after the bad frames.
    const seq = await client.sendMessage("ok-after-bad", "still here");
    expect(seq).toBe(before + 1);
  });

  it("refuses oversize text (too_large) and an oversize frame (too_large) before parsing", async () => {
    const { user, roomId, client } = await soloRoom();
    const before = await lastSeq(user, roomId);
    client.send({
      type: "send",
      clientId: "big-text",
      text: "é".repeat(DEFAULT_LIMITS.maxTextBytes / 2 + 1),
    });
    expect(await client.next("error")).toMatchObject({ code: "too_large", clientId: "big-text" });
    const from = client.frames.length;
    client.send(
      `{"type":"send","clientId":"big-frame","text":"${"x".repeat(DEFAULT_LIMITS.maxFrameBytes)}"}`,
    );
    expect(await client.next("error", from)).toMatchObject({ code: "too_large" });
    // Exactly at the text limit is fine.
    const seq = await client.sendMessage("at-limit", "x".repeat(DEFAULT_LIMITS.maxTextBytes));
    expect(seq).toBe(before + 1);
  });

  it("answers bad target seqs with bad_request or not_found and never writes", async () => {
    const { user, roomId, client } = await soloRoom();
    const seq = await client.sendMessage("m", "target");
    const cases: [unknown, string][] = [
      [0, "bad_request"],
      [-3, "bad_request"],
      ["7", "bad_request"],
      [1.5, "bad_request"],
      [seq + 100, "not_found"],
      [1, "not_found"], // seq 1 is the creator's member_join, not a message
    ];
    for (const [i, [target]] of cases.entries())
      client.send({ type: "edit", clientId: `bad-${i}`, target, text: "x" });
    for (const [i, [target]] of cases.entries())
      client.send({ type: "react", clientId: `badr-${i}`, target, emoji: "👍", on: true });
    await client.until((c) => c.errors().length >= cases.length * 2, "every error");
    expect(client.errors().map((e) => e.code)).toEqual([
      ...cases.map(([, c]) => c),
      ...cases.map(([, c]) => c),
    ]);
    expect(await lastSeq(user, roomId)).toBe(seq);
  });

  it("validates clientId, empty text, emoji and read markers", async () => {
    const { user, roomId, client } = await soloRoom();
    const seq = await client.sendMessage("m", "hello");
    const frames = [
      { type: "send", clientId: "", text: "x" },
      { type: "send", clientId: "has space", text: "x" },
      { type: "send", clientId: "a".repeat(65), text: "x" },
      { type: "send", clientId: "empty", text: "   " },
      { type: "send", clientId: "notext" },
      { type: "react", clientId: "emoji", target: seq, emoji: "x".repeat(33), on: true },
      { type: "react", clientId: "on", target: seq, emoji: "👍", on: "yes" },
      { type: "read", seq: seq + 10 },
      { type: "read", seq: "3" },
    ];
    for (const f of frames) client.send(f);
    await client.until((c) => c.errors().length >= frames.length, "every error");
    expect(client.errors().every((e) => e.code === "bad_request")).toBe(true);
    expect(client.closed).toBeNull();
    expect(await lastSeq(user, roomId)).toBe(seq);
  });

  it("closes a socket that keeps sending garbage with 1008", async () => {
    const { client } = await soloRoom();
    for (let i = 0; i < DEFAULT_LIMITS.badFrameLimit; i++) client.send("garbage");
    await client.until((c) => c.closed !== null, "the close");
    expect(client.closed?.code).toBe(1008);
    expect(client.errors()).toHaveLength(DEFAULT_LIMITS.badFrameLimit);
  });
});
