import { describe, expect, it } from "vitest";
import { api, Client, createRoom, json, login, unique } from "../helpers.ts";

// This project runs with PARLEY_USER_COMMANDS_PER_SECOND=1 (burst 40): a flood of 100 cannot
// outrun the bucket however slow the machine is.

describe("the per-user command rate", () => {
  it("rate-limits a flood with retryAfter, and every command is either acked once or refused", async () => {
    const user = await login(unique("t"));
    const roomId = await createRoom(user);
    const client = await Client.open(user, roomId);
    await client.ready();
    const n = 100;
    for (let i = 0; i < n; i++) client.send({ type: "send", clientId: `flood-${i}`, text: `${i}` });
    await client.until((c) => c.acks().length + c.errors().length >= n, "an answer to every send");
    const limited = client.errors();
    expect(limited.length).toBeGreaterThanOrEqual(n - 40 - 5);
    for (const e of limited) {
      expect(e.code).toBe("rate_limited");
      expect(e.retryAfter).toBeGreaterThanOrEqual(1);
    }
    const acked = client.acks();
    expect(new Set([...acked.map((a) => a.clientId), ...limited.map((e) => e.clientId)]).size).toBe(n);
    const page = await json<{ events: { seq: number; clientId?: string }[] }>(
      api(user, "GET", `/api/rooms/${roomId}/messages?limit=200`),
    );
    expect(
      page.events
        .filter((e) => e.clientId?.startsWith("flood-"))
        .map((e) => e.clientId)
        .sort(),
    ).toEqual(acked.map((a) => a.clientId).sort());
    expect(client.closed).toBeNull();
  });

  it("rate-limits HTTP commands with 429 and Retry-After", async () => {
    const user = await login(unique("t"));
    const roomId = await createRoom(user);
    let limited: Response | undefined;
    for (let i = 0; i < 60 && !limited; i++) {
      const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, { clientId: `h${i}`, text: "x" });
      if (res.status === 429) limited = res;
      else expect(res.status).toBe(201);
    }
    expect(limited?.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await limited?.json()).toMatchObject({
      error: { code: "rate_limited", retryAfter: expect.any(Number) },
    });
  });
});
