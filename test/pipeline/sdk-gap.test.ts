/** The SDK fills a gap (a client away for longer than the replay cap, 500 here) from history. */
import { describe, expect, it } from "vitest";
import { Client, createRoom, login, unique } from "../helpers.ts";
import { Network, session, until } from "../sdk-helpers.ts";

describe("the SDK room session", () => {
  it("fills a gap from history when it was away for longer than the replay", async () => {
    const ada = await login(unique("t"));
    const roomId = await createRoom(ada);
    const writer = await Client.open(ada, roomId);
    await writer.ready();
    for (let i = 0; i < 600; i++) writer.send({ type: "send", clientId: `g${i}`, text: `bulk ${i}` });
    await writer.until((c) => c.acks().length === 600, "600 acks");
    writer.close();
    const net = new Network();
    const a = session(ada, roomId, [net.socket(ada)], { conn: net.conn(ada) });
    await a.s.start();
    await until(() => a.s.status.state === "online", "online");
    expect(a.events.map((e) => e.seq)).toEqual(Array.from({ length: a.s.lastSeq }, (_, i) => i + 1));
    expect(a.s.lastSeq).toBeGreaterThanOrEqual(601);
    a.s.close();
  });
});
