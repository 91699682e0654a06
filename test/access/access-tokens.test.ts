import { env } from "cloudflare:workers";
import { SignJWT } from "jose";
import { afterEach, describe, expect, it, vi } from "vitest";
import { IDENTITY_MEMORY_MS } from "../../worker/auth/identity.ts";
import { Client, fetchWorker, json, unique } from "../helpers.ts";
import {
  ACME,
  certFetches,
  GLOBEX,
  INITECH,
  keys,
  mint,
  newKey,
  now,
  publishAccessKeys,
  published,
} from "./teams.ts";

publishAccessKeys();

afterEach(() => {
  vi.useRealTimers();
});

const b64url = (s: string) => btoa(s).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
const me = (token: string, headers: Record<string, string> = {}) =>
  fetchWorker("/api/me", { headers: { "cf-access-jwt-assertion": token, ...headers } });

async function usersNamed(email: string): Promise<number> {
  const row = await env.DB.prepare("SELECT COUNT(*) AS n FROM users WHERE email = ?")
    .bind(email)
    .first<{ n: number }>();
  return row?.n ?? 0;
}

/** Expects 401 with the protocol's envelope, and that nobody was provisioned for `email`. */
async function refused(token: string, email: string): Promise<void> {
  const res = await me(token);
  expect(res.status).toBe(401);
  expect(await res.json()).toEqual({ error: { code: "unauthorized", message: expect.any(String) } });
  expect(await usersNamed(email)).toBe(0);
}

describe("Cloudflare Access tokens", () => {
  it("accepts a valid token from the header or the CF_Authorization cookie and provisions the user just in time", async () => {
    const email = `${unique("ada")}@acme.test`;
    const token = await mint({ email, name: "Ada" });
    const res = await me(token);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      user: { email, name: "Ada" },
      tenant: { id: "acme", name: "Acme" },
    });
    const viaCookie = await fetchWorker("/api/me", { headers: { cookie: `CF_Authorization=${token}` } });
    expect(viaCookie.status).toBe(200);
  });

  it("maps owners and admins from configuration (never from sign-in order), groups, and service tokens to bots", async () => {
    const first = await json<{ user: { role: string } }>(
      me(await mint({ email: `${unique("first")}@acme.test` })),
    );
    expect(first.user.role).toBe("member"); // in access mode nobody owns a tenant by signing in first
    const boss = await json<{ user: { role: string } }>(me(await mint({ email: "boss@acme.test" })));
    expect(boss.user.role).toBe("owner");
    const viaCustom = await json<{ user: { role: string } }>(
      me(await mint({ email: `${unique("c")}@acme.test`, custom: { groups: ["parley-admins"] } })),
    );
    expect(viaCustom.user.role).toBe("admin");
    const byEmail = await json<{ user: { role: string } }>(me(await mint({ email: "it@acme.test" })));
    expect(byEmail.user.role).toBe("admin");
    const byGroup = await json<{ user: { role: string } }>(
      me(await mint({ email: `${unique("g")}@acme.test`, groups: ["staff", "parley-admins"] })),
    );
    expect(byGroup.user.role).toBe("admin");
    const plain = await json<{ user: { role: string } }>(
      me(await mint({ email: `${unique("p")}@acme.test`, groups: ["staff"] })),
    );
    expect(plain.user.role).toBe("member");
    // A guest domain: a guest at arrival, and a role given later stands.
    const guestEmail = `${unique("guest")}@contractor.test`;
    const guest = await json<{ user: { id: string; role: string } }>(me(await mint({ email: guestEmail })));
    expect(guest.user.role).toBe("guest");
    const boss2 = await mint({ email: "boss@acme.test" });
    const promoted = await fetchWorker(`/api/users/${guest.user.id}`, {
      method: "PATCH",
      headers: { "cf-access-jwt-assertion": boss2, "content-type": "application/json" },
      body: JSON.stringify({ role: "member" }),
    });
    expect(promoted.status).toBe(200);
    expect((await json<{ user: { role: string } }>(me(await mint({ email: guestEmail })))).user.role).toBe(
      "member",
    );
    const bot = await json<{ user: { role: string; name: string } }>(
      me(await mint({ common_name: "deploy-bot.access" })),
    );
    expect(bot.user).toMatchObject({ role: "bot", name: "deploy-bot.access" });
  });

  it("refuses a request without a token", async () => {
    const res = await fetchWorker("/api/me");
    expect(res.status).toBe(401);
  });

  it("refuses alg none, and HS256 signed with the public key (key confusion)", async () => {
    const email = `${unique("none")}@acme.test`;
    const body = b64url(
      JSON.stringify({ email, iss: ACME.iss, aud: [ACME.aud], exp: now() + 3600, iat: now() }),
    );
    await refused(`${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${body}.`, email);
    const secret = new TextEncoder().encode(JSON.stringify(keys.acme.publicJwk));
    const hs = await new SignJWT({ email, aud: [ACME.aud] })
      .setProtectedHeader({ alg: "HS256", kid: keys.acme.kid })
      .setIssuer(ACME.iss)
      .setIssuedAt()
      .setExpirationTime(now() + 3600)
      .sign(secret);
    await refused(hs, email);
  });

  it("checks exp and nbf with at most 60 s of skew, and requires exp", async () => {
    const email = `${unique("time")}@acme.test`;
    await refused(await mint({ email }, { exp: now() - 120 }), email);
    await refused(await mint({ email }, { nbf: now() + 300 }), email);
    await refused(await mint({ email }, { exp: null }), email);
    // Within the skew a token is still good.
    expect((await me(await mint({ email }, { exp: now() - 20 }))).status).toBe(200);
  });

  it("refuses headers that point at other keys, and kid injection", async () => {
    const email = `${unique("hdr")}@acme.test`;
    const attacker = await newKey("attacker");
    await refused(await mint({ email }, { key: attacker, header: { jwk: attacker.publicJwk } }), email);
    await refused(await mint({ email }, { key: attacker, header: { jku: "https://evil.test/keys" } }), email);
    await refused(
      await mint({ email }, { key: attacker, header: { x5u: "https://evil.test/cert.pem" } }),
      email,
    );
    await refused(await mint({ email }, { header: { kid: "../../../etc/passwd' OR '1'='1" } }), email);
  });

  it("refuses a wrong audience, a wrong issuer, an unknown key and a tampered payload", async () => {
    const email = `${unique("aud")}@acme.test`;
    await refused(await mint({ email }, { team: { iss: ACME.iss, aud: "someotherapplication0" } }), email);
    await refused(
      await mint({ email }, { team: { iss: "https://evil.cloudflareaccess.com", aud: ACME.aud } }),
      email,
    );
    // Acme's AUD under Globex's issuer: a real Globex key must not vouch for an Acme user.
    await refused(
      await mint({ email }, { key: keys.globex, team: { iss: GLOBEX.iss, aud: ACME.aud } }),
      email,
    );
    await refused(await mint({ email }, { key: await newKey("acme-unpublished") }), email);
    const [h, , s] = (await mint({ email: `${unique("x")}@acme.test` })).split(".");
    const forged = b64url(
      JSON.stringify({ email, iss: ACME.iss, aud: [ACME.aud], exp: now() + 3600, iat: now() }),
    );
    await refused(`${h}.${forged}.${s}`, email);
  });

  it("checks a token's signature once for its lifetime, never vouching for a forged copy", async () => {
    const email = `${unique("once")}@acme.test`;
    const token = await mint({ email }, { exp: now() + 100 });
    const verify = vi.spyOn(crypto.subtle, "verify");
    try {
      for (let i = 0; i < 3; i++) expect((await me(token)).status).toBe(200);
      expect(verify).toHaveBeenCalledTimes(1);
      // The same signature over another payload is a different token: verified, and refused.
      const [h, , sig] = token.split(".");
      const forged = b64url(
        JSON.stringify({
          email: `${unique("mallory")}@acme.test`,
          iss: ACME.iss,
          aud: [ACME.aud],
          exp: now() + 100,
        }),
      );
      expect((await me(`${h}.${forged}.${sig}`)).status).toBe(401);
      expect(verify).toHaveBeenCalledTimes(2);
      // Past its exp the token is verified again, with the skew allowed; past the skew, refused.
      vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 130_000 });
      expect((await me(token)).status).toBe(200);
      expect(verify).toHaveBeenCalledTimes(3);
      vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 60_000 });
      expect((await me(token)).status).toBe(401);
    } finally {
      verify.mockRestore();
    }
  });

  it("reads a user from the directory at most every 2 s per isolate", async () => {
    const email = `${unique("dir")}@acme.test`;
    const token = await mint({ email });
    const role = async () => (await json<{ user: { role: string } }>(me(token))).user.role;
    expect(await role()).toBe("member");
    // Another isolate (or a script) changes the directory: this one may answer from memory a while.
    await env.DB.prepare("UPDATE users SET role = 'admin' WHERE email = ?").bind(email).run();
    expect(await role()).toBe("member");
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + IDENTITY_MEMORY_MS + 1 });
    expect(await role()).toBe("admin");
  });

  it("fails closed when a team's key set cannot be fetched", async () => {
    const email = `${unique("down")}@initech.test`;
    const key = await newKey("initech-1");
    await refused(await mint({ email }, { key, team: INITECH }), email);
  });

  it("accepts a newly published key without a restart, refetching at most once per cooldown", async () => {
    const email = `${unique("rot")}@acme.test`;
    expect((await me(await mint({ email }))).status).toBe(200);
    const next = await newKey("acme-2");
    const before = certFetches.filter((o) => o === ACME.iss).length;
    // Unpublished yet: refused, and repeated unknown kids do not hammer the key endpoint.
    await refused(await mint({ email: `${unique("early")}@acme.test` }, { key: next }), "none");
    await refused(await mint({ email: `${unique("early")}@acme.test` }, { key: next }), "none");
    expect(certFetches.filter((o) => o === ACME.iss).length - before).toBeLessThanOrEqual(1);
    // The team rotates: the new key is published, and once the cooldown has passed it is accepted.
    published.set(ACME.iss, [keys.acme, next]);
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() + 31_000 });
    expect((await me(await mint({ email }, { key: next }))).status).toBe(200);
  });
});

describe("production configuration", () => {
  it("has no dev sign-in route", async () => {
    const res = await fetchWorker("/auth/dev/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email: "a@acme.test", name: "A", tenant: "acme" }),
    });
    expect(res.status).toBe(404);
  });
});

describe("tenant isolation under Access", () => {
  it("answers 404 for another tenant's rooms and users, with nothing changed", async () => {
    const a = await mint({ email: `${unique("a")}@acme.test` });
    const g = await mint({ email: `${unique("g")}@globex.test` }, { key: keys.globex, team: GLOBEX });
    const gUser = await json<{ user: { id: string } }>(me(g));
    const room = await json<{ id: string }>(
      fetchWorker("/api/rooms", {
        method: "POST",
        headers: { "cf-access-jwt-assertion": g, "content-type": "application/json" },
        body: JSON.stringify({ name: "globex-only" }),
      }),
    );
    const as = (method: string, path: string, body?: unknown) =>
      fetchWorker(path, {
        method,
        headers: { "cf-access-jwt-assertion": a, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    expect((await as("POST", `/api/rooms/${room.id}/join`)).status).toBe(404);
    expect((await as("GET", `/api/rooms/${room.id}/messages`)).status).toBe(404);
    expect((await as("POST", `/api/rooms/${room.id}/messages`, { clientId: "x", text: "hi" })).status).toBe(
      404,
    );
    expect((await Client.upgrade({ token: a }, room.id)).status).toBe(404);
    const mine = await json<{ id: string }>(as("POST", "/api/rooms", { name: "acme-only" }));
    expect((await as("POST", `/api/rooms/${mine.id}/members`, { userId: gUser.user.id })).status).toBe(404);
    const page = await json<{ events: unknown[] }>(
      fetchWorker(`/api/rooms/${room.id}/messages`, { headers: { "cf-access-jwt-assertion": g } }),
    );
    expect(page.events).toHaveLength(1); // only the creator's join
  });
});

describe("WebSocket origins", () => {
  it("allows exactly the configured origins to open a socket", async () => {
    const token = await mint({ email: `${unique("o")}@acme.test` });
    const { id } = await json<{ id: string }>(
      fetchWorker("/api/rooms", {
        method: "POST",
        headers: { "cf-access-jwt-assertion": token, "content-type": "application/json" },
        body: JSON.stringify({ name: "origins" }),
      }),
    );
    const upgrade = (origin?: string) =>
      fetchWorker(`/api/rooms/${id}/ws?after=0`, {
        headers: { upgrade: "websocket", "cf-access-jwt-assertion": token, ...(origin ? { origin } : {}) },
      });
    for (const evil of [
      "https://evil.test",
      "https://chat.acme.test.evil.test",
      "http://chat.acme.test",
      "null",
    ]) {
      const res = await upgrade(evil);
      expect(res.status, evil).toBe(403);
      expect(res.webSocket).toBeNull();
    }
    const ok = await upgrade("https://chat.acme.test");
    expect(ok.status).toBe(101);
    ok.webSocket?.accept();
    ok.webSocket?.close();
    const bot = await upgrade(undefined);
    expect(bot.status).toBe(101);
    bot.webSocket?.accept();
    bot.webSocket?.close();
  });
});
