/**
 * Outgoing webhooks' registration through the public surface: admins only, targets that could
 * reach a private network refused (and nothing registered), the secret shown once, filters checked.
 * Delivery itself, to a real receiver, is test/system/webhooks.test.ts.
 */
import { describe, expect, it } from "vitest";
import { webhookTargetRefusal } from "../durable-objects/webhook.ts";
import { api, createRoom, json, login, unique } from "./helpers.ts";

describe("outgoing webhook registration", () => {
  it("is for admins, refuses targets inside a network, and shows the secret once", async () => {
    const tenant = unique("t");
    const owner = await login(tenant);
    const member = await login(tenant);
    const roomId = await createRoom(owner);
    expect(
      (await api(member, "POST", "/api/admin/webhooks", { url: "https://hooks.example.com/p" })).status,
    ).toBe(403);
    const refused = [
      "http://hooks.example.com/p",
      "https://10.0.0.8/p",
      "https://192.168.1.1/p",
      "https://172.20.0.1/p",
      "https://169.254.169.254/latest/meta-data",
      "https://[fd00::1]/p",
      "https://[fe80::1]/p",
      "https://[::ffff:127.0.0.1]/p",
      "https://metadata.internal/p",
      "https://printer.local/p",
      "https://intranet/p",
      "https://user:pw@hooks.example.com/p",
      "not a url",
    ];
    for (const url of refused) {
      const res = await api(owner, "POST", "/api/admin/webhooks", { url });
      expect(res.status, url).toBe(400);
    }
    for (const body of [
      { url: "https://hooks.example.com/p", kinds: ["typing"] },
      { url: "https://hooks.example.com/p", rooms: [] },
      { url: "https://hooks.example.com/p", rooms: "all" },
    ])
      expect((await api(owner, "POST", "/api/admin/webhooks", body)).status, JSON.stringify(body)).toBe(400);
    expect(
      (
        await api(owner, "POST", "/api/admin/webhooks", {
          url: "https://hooks.example.com/p",
          rooms: ["r_nope"],
        })
      ).status,
    ).toBe(404);
    expect((await json<{ webhooks: unknown[] }>(api(owner, "GET", "/api/admin/webhooks"))).webhooks).toEqual(
      [],
    );

    const made = await api(owner, "POST", "/api/admin/webhooks", {
      url: "https://hooks.example.com/parley",
      rooms: [roomId],
      kinds: ["message"],
    });
    expect(made.status).toBe(201);
    const hook = await json<{ id: string; secret: string }>(made);
    expect(hook.secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    const listed = await json<{ webhooks: Record<string, unknown>[] }>(
      api(owner, "GET", "/api/admin/webhooks"),
    );
    expect(listed.webhooks).toEqual([
      expect.objectContaining({
        id: hook.id,
        url: "https://hooks.example.com/parley",
        rooms: [roomId],
        kinds: ["message"],
        state: "active",
      }),
    ]);
    expect(JSON.stringify(listed)).not.toContain(hook.secret);
    expect((await api(member, "GET", "/api/admin/webhooks")).status).toBe(403);
    expect((await api(owner, "DELETE", `/api/admin/webhooks/${hook.id}`)).status).toBe(200);
    expect((await api(owner, "DELETE", `/api/admin/webhooks/${hook.id}`)).status).toBe(404);
    expect((await json<{ webhooks: unknown[] }>(api(owner, "GET", "/api/admin/webhooks"))).webhooks).toEqual(
      [],
    );
  });

  it("allows http on loopback only in dev, and public https names and addresses anywhere", () => {
    expect(webhookTargetRefusal("http://127.0.0.1:9000/p", true)).toBeNull();
    expect(webhookTargetRefusal("http://127.0.0.1:9000/p", false)).not.toBeNull();
    expect(webhookTargetRefusal("https://localhost/p", false)).not.toBeNull();
    expect(webhookTargetRefusal("https://hooks.example.com/p", false)).toBeNull();
    expect(webhookTargetRefusal("https://203.0.113.7/p", false)).toBeNull();
    expect(webhookTargetRefusal("https://[2001:db8::1]/p", false)).toBeNull();
  });
});
