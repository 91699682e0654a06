/** The per-user quotas at their defaults let a person's ordinary use through: a handful of rooms and
 * dms (and dms opened again and again), searches refined one after another as the web client sends
 * them (one per submitted query, never per keystroke), a day's worth of files. The refusals are in
 * test/limits/quotas.test.ts. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS, limitsOf } from "../config/limits.ts";
import { api, authHeaders, fetchWorker, json, login, unique } from "./helpers.ts";

describe("quotas at their defaults", () => {
  it("never refuse a person's ordinary use", async () => {
    const limits = limitsOf(env);
    for (const key of [
      "roomsPerUserPerHour",
      "searchesPerUserPerMinute",
      "uploadsPerUserPerDay",
      "uploadBytesPerUserPerDay",
    ] as const) {
      expect(limits[key]).toBe(DEFAULT_LIMITS[key]);
    }
    const tenant = unique("t");
    const ada = await login(tenant);
    const others = [await login(tenant), await login(tenant), await login(tenant)];

    // Setting up: a handful of channels and private rooms, a dm with each colleague, and the same
    // dms opened again from the sidebar many times.
    const rooms: string[] = [];
    for (const [i, kind] of ["channel", "channel", "channel", "private", "private", "channel"].entries()) {
      const res = await api(ada, "POST", "/api/rooms", { name: `team ${i}`, kind });
      expect(res.status).toBe(201);
      rooms.push((await json<{ id: string }>(res)).id);
    }
    for (let round = 0; round < 5; round++) {
      for (const other of others) {
        const res = await api(ada, "POST", "/api/rooms", { kind: "dm", members: [other.id] });
        expect(res.status).toBe(round === 0 ? 201 : 200);
      }
    }

    // A search refined a dozen times in a row (each one a submitted query).
    await api(ada, "POST", `/api/rooms/${rooms[0]}/messages`, {
      clientId: "m1",
      text: "quarterly report draft",
    });
    const queries = ["report", "reports", "quarterly", "quarterly report", "draft", "report draft"];
    for (const q of [...queries, ...queries]) {
      const res = await api(ada, "GET", `/api/search?q=${encodeURIComponent(q)}`);
      expect(res.status, q).toBe(200);
    }

    // A heavy day of files: 40 screenshots and documents, 30 MB in all.
    for (let i = 0; i < 40; i++) {
      const size = i % 10 === 0 ? 2_500_000 : 400_000;
      const res = await fetchWorker(`/api/rooms/${rooms[i % rooms.length]}/attachments`, {
        method: "POST",
        headers: { ...authHeaders(ada.token), "x-filename": `shot-${i}.png`, "content-type": "image/png" },
        body: new Uint8Array(size),
      });
      expect(res.status, `upload ${i}`).toBe(201);
    }
  });
});
