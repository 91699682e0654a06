import { describe, expect, it } from "vitest";
import { encodeIdentity, IDENTITY_HEADER, parseStreamRequest } from "../../durable-objects/room-streams.ts";
import type { HttpErrorBody } from "../../protocol/index.ts";
import { openStreamAt } from "../../worker/stubs.ts";

// durable-objects/room-streams.ts: the one parser of a request that opens a WebSocket or SSE stream.

const ada = { id: "u_ada", name: "Ada", role: "member" as const, tenantId: "t_one" };
const room = {
  meta: { tenantId: "t_one", roomId: "r_1", name: "general", kind: "channel" },
  lastSeq: 10,
  isMember: (id: string) => id === "u_ada",
  ended: (_id: string) => false,
};

function opening(query: string, headers: Record<string, string> = {}, identity: unknown = ada) {
  return new Request(`https://room/ws${query}`, {
    headers: { [IDENTITY_HEADER]: encodeURIComponent(JSON.stringify(identity)), ...headers },
  });
}

async function refusal(r: ReturnType<typeof parseStreamRequest>) {
  if (r.ok) throw new Error("expected a refusal");
  return { status: r.response.status, body: (await r.response.json()) as HttpErrorBody };
}

describe("a stream's opening request", () => {
  it("starts after `after` (0 by default), with flow control only on a socket that asks", () => {
    expect(parseStreamRequest(opening("?after=4&flow=1"), room, "ws")).toEqual({
      ok: true,
      info: ada,
      after: 4,
      flow: true,
    });
    expect(parseStreamRequest(opening(""), room, "ws")).toMatchObject({ ok: true, after: 0, flow: false });
    expect(parseStreamRequest(opening("?flow=1"), room, "sse")).toMatchObject({ ok: true, flow: false });
  });

  it("takes Last-Event-ID before `after` on SSE only", () => {
    const req = () => opening("?after=2", { "last-event-id": "7" });
    expect(parseStreamRequest(req(), room, "sse")).toMatchObject({ ok: true, after: 7 });
    expect(parseStreamRequest(req(), room, "ws")).toMatchObject({ ok: true, after: 2 });
  });

  it("refuses another tenant's caller or a missing room as not found, and a non-member as forbidden", async () => {
    expect(
      await refusal(parseStreamRequest(opening("", {}, { ...ada, tenantId: "t_two" }), room, "ws")),
    ).toEqual({
      status: 404,
      body: { error: { code: "not_found", message: "no such room" } },
    });
    expect((await refusal(parseStreamRequest(opening(""), { ...room, meta: null }, "ws"))).status).toBe(404);
    expect(
      (await refusal(parseStreamRequest(opening("", {}, { ...ada, id: "u_bob" }), room, "sse"))).body.error
        .code,
    ).toBe("forbidden");
  });

  it("refuses a member whose account was deactivated, whatever identity the worker remembers", async () => {
    const refused = await refusal(
      parseStreamRequest(opening(""), { ...room, ended: (id) => id === "u_ada" }, "ws"),
    );
    expect(refused).toEqual({
      status: 403,
      body: { error: { code: "forbidden", message: "this account is deactivated" } },
    });
  });

  it("refuses an identity that names no role, and a request without one", async () => {
    expect(
      (await refusal(parseStreamRequest(opening("", {}, { ...ada, role: "root" }), room, "ws"))).status,
    ).toBe(404);
    const bare = new Request("https://room/ws");
    expect((await refusal(parseStreamRequest(bare, room, "ws"))).status).toBe(404);
    expect(encodeIdentity(ada)).toBe(encodeURIComponent(JSON.stringify(ada)));
  });

  it("refuses an `after` that is not a seq or is beyond the log", async () => {
    for (const q of ["?after=-1", "?after=x", "?after=1e3", "?after=9999999999999999"]) {
      expect((await refusal(parseStreamRequest(opening(q), room, "ws"))).body.error.code, q).toBe(
        "bad_request",
      );
    }
    expect((await refusal(parseStreamRequest(opening("?after=11"), room, "ws"))).body.error.message).toBe(
      "after 11 is beyond the log (lastSeq 10)",
    );
  });
});

// worker/stubs.ts: how the worker hands a stream's opening request to its object.
describe("handing a stream to its object", () => {
  it("passes the upgrade, where an EventSource resumes and who is asking, never the caller's token or cookies", async () => {
    const seen: { url: string; headers: [string, string][] }[] = [];
    const stub = {
      fetch: async (url: string, init: RequestInit) => {
        seen.push({ url, headers: [...new Headers(init.headers).entries()].sort() });
        return new Response(null, { status: 204 });
      },
    };
    const caller = new Request("https://parley.example/api/rooms/r_1/ws?after=3&flow=1", {
      headers: {
        upgrade: "websocket",
        "last-event-id": "3",
        "cf-access-jwt-assertion": "header.payload.signature",
        cookie: "CF_Authorization=header.payload.signature",
        origin: "https://parley.example",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    const answer = await openStreamAt(stub, caller, IDENTITY_HEADER, encodeIdentity(ada));
    expect(answer.status).toBe(204);
    expect(seen).toEqual([
      {
        url: "https://parley.example/api/rooms/r_1/ws?after=3&flow=1",
        headers: [
          ["last-event-id", "3"],
          ["upgrade", "websocket"],
          [IDENTITY_HEADER, encodeIdentity(ada)],
        ],
      },
    ]);
  });
});
