/** The SDK's HTTP access (client/sdk/http.ts): how a gateway's redirect to its sign-in reads. */
import { describe, expect, it } from "vitest";
import { closeAction } from "../../client/sdk/close-policy.ts";
import { HttpError, request } from "../../client/sdk/http.ts";

describe("a request the sign-in gateway redirects", () => {
  it("is a 401, which sessions answer by renewing the sign-in, not a network error", async () => {
    const asked: RequestInit[] = [];
    const conn = {
      baseUrl: "https://chat.example.com",
      fetch: async (_: RequestInfo | URL, init?: RequestInit) => {
        asked.push(init ?? {});
        return new Response(null, {
          status: 302,
          headers: { location: "https://acme.cloudflareaccess.com/cdn-cgi/access/login" },
        });
      },
    };
    const err = await request(conn, "GET", "/api/rooms/r_00000000000000000000/events?after=0").catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(401);
    expect(closeAction({ status: (err as HttpError).status })).toBe("reauth");
    // Not followed: the redirect is what the client must see.
    expect(asked[0]?.redirect).toBe("manual");
  });
});
