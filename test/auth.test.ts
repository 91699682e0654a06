import { describe, expect, it } from "vitest";
import { api, fetchWorker, json, login, unique } from "./helpers.ts";

describe("dev sign-in", () => {
  it("returns a token and sets the Access cookie, and the token identifies the user", async () => {
    const tenant = unique("t");
    const res = await fetchWorker("/auth/dev/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "Ada@Example.com", name: "Ada", tenant }),
    });
    expect(res.status).toBe(200);
    const { token } = await json<{ token: string }>(res);
    expect(token.split(".")).toHaveLength(3);
    expect(res.headers.get("set-cookie")).toMatch(/^CF_Authorization=[^;]+;.*HttpOnly/i);

    const me = await json(api({ token }, "GET", "/api/me"));
    expect(me).toMatchObject({
      user: { email: "ada@example.com", name: "Ada", role: "owner" },
      tenant: { id: tenant },
    });
  });

  it("gives a token the shorter life asked for, and its cookie the same", async () => {
    const res = await fetchWorker("/auth/dev/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "ttl@example.com", name: "T", tenant: unique("t"), ttlSeconds: 30 }),
    });
    expect(res.status).toBe(200);
    const { token } = await json<{ token: string }>(res);
    const claims = JSON.parse(atob((token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/")));
    expect(claims.exp - claims.iat).toBe(30);
    expect(res.headers.get("set-cookie")).toMatch(/Max-Age=30\b/i);
  });

  it("accepts the token from the CF_Authorization cookie too", async () => {
    const user = await login(unique("t"));
    const res = await fetchWorker("/api/me", { headers: { cookie: `CF_Authorization=${user.token}` } });
    expect(res.status).toBe(200);
  });

  it("makes the first user of a tenant its owner and later ones members", async () => {
    const tenant = unique("t");
    await login(tenant);
    const second = await login(tenant);
    expect(await json(api(second, "GET", "/api/me"))).toMatchObject({ user: { role: "member" } });
  });

  it("refuses requests without a token, with a tampered token, or with a token of another signer", async () => {
    const user = await login(unique("t"));
    expect((await fetchWorker("/api/me")).status).toBe(401);
    const [h, p, s] = user.token.split(".") as [string, string, string];
    const payload = JSON.parse(atob(p.replace(/-/g, "+").replace(/_/g, "/")));
    const forged = btoa(JSON.stringify({ ...payload, tenant: "other" }))
      .replace(/=+$/, "")
      .replace(/\+/g, "-")
      .replace(/\//g, "_");
    const res = await api({ token: `${h}.${forged}.${s}` }, "GET", "/api/me");
    expect(res.status).toBe(401);
    expect(await json(res)).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
    const none = `${btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "")}.${p}.`;
    expect((await api({ token: none }, "GET", "/api/me")).status).toBe(401);
  });

  it("rejects malformed sign-in requests with bad_request", async () => {
    for (const body of [
      "{not json",
      JSON.stringify({ email: "nope", name: "X", tenant: "acme" }),
      JSON.stringify({ email: "a@example.com", name: "", tenant: "acme" }),
      JSON.stringify({ email: "a@example.com", name: "X", tenant: "Not A Slug!" }),
      JSON.stringify({ email: "a@example.com", name: "X", tenant: "acme", ttlSeconds: 0 }),
      JSON.stringify({ email: "a@example.com", name: "X", tenant: "acme", ttlSeconds: 43_201 }),
      JSON.stringify({ email: "a@example.com", name: "X", tenant: "acme", ttlSeconds: "60" }),
    ]) {
      const res = await fetchWorker("/auth/dev/login", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      expect(res.status).toBe(400);
      expect(await json(res)).toMatchObject({ error: { code: "bad_request" } });
    }
  });

  it("answers /healthz without authentication", async () => {
    const res = await fetchWorker("/healthz");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
  });
});

describe("API paths", () => {
  it("are never shadowed by the web client: an unknown one is the JSON error, not index.html", async () => {
    const res = await fetchWorker("/api/nothing-here", { headers: { "sec-fetch-mode": "navigate" } });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: "unauthorized" } });
  });
});

describe("cookie-authenticated writes", () => {
  it("are refused from another site (CSRF) and accepted from the deployment's own origin", async () => {
    const owner = await login(unique("t"));
    const res = await fetchWorker("/api/rooms", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        cookie: `CF_Authorization=${owner.token}`,
        origin: "http://parley.test",
      },
      body: JSON.stringify({ name: "from our page" }),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    for (const origin of ["https://evil.test", undefined]) {
      const leave = await fetchWorker(`/api/rooms/${id}/leave`, {
        method: "POST",
        headers: { cookie: `CF_Authorization=${owner.token}`, ...(origin ? { origin } : {}) },
      });
      expect(leave.status, String(origin)).toBe(403);
    }
    // Still a member: the forged leaves changed nothing.
    const rooms = (await (await api(owner, "GET", "/api/rooms")).json()) as { id: string; joined: boolean }[];
    expect(rooms).toContainEqual(expect.objectContaining({ id, joined: true }));
  });
});
