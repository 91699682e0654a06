/**
 * Outgoing webhooks end to end, against the real app (queues, consumer, endpoint objects) and a
 * local receiver on loopback (which a dev deployment may target): every event at least once with a
 * stable id, in order per room, signed so that docs/protocol.md's recipe verifies it (and not a
 * tampered copy), failures retried with backoff, a dead endpoint disabled with its events held
 * until it is enabled again, and a delivery log to read and replay from.
 *
 * The server runs with a 500 ms backoff cap and disables an endpoint after 3 s of failure
 * (test/browser/server.ts).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Api, type User } from "../../scripts/chaos/api.ts";
import type {} from "../browser/global-setup.ts";

const DELIVERY_MS = 30_000;

async function until<T>(what: string, probe: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + DELIVERY_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A receiver that answers `status()` for each request (200 unless told otherwise). */
class Receiver {
  readonly got: Received[] = [];
  status: (n: number) => number = () => 200;
  #server: Server | null = null;
  url = "";

  async start(): Promise<void> {
    this.#server = createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => {
        body += chunk;
      });
      req.on("end", () => {
        this.got.push({ headers: req.headers, body, at: performance.now() });
        res.writeHead(this.status(this.got.length)).end();
      });
    });
    await new Promise<void>((r) => this.#server?.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/parley`;
  }

  stop(): Promise<void> {
    return new Promise((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }

  /** The distinct deliveries by X-Parley-Id, in first-arrival order. */
  ids(): string[] {
    return [...new Set(this.got.map((g) => String(g.headers["x-parley-id"])))];
  }
}

/** docs/protocol.md's recipe: the HMAC of `timestamp.body` under the secret, compared in constant
 * time, and a timestamp within five minutes. */
function verify(secret: string, r: Received, now = Date.now()): boolean {
  const timestamp = String(r.headers["x-parley-timestamp"] ?? "");
  const given = /^v1=([0-9a-f]{64})$/.exec(String(r.headers["x-parley-signature"] ?? ""))?.[1];
  if (!given || !/^\d+$/.test(timestamp)) return false;
  if (Math.abs(now / 1000 - Number(timestamp)) > 300) return false;
  const expected = createHmac("sha256", secret).update(`${timestamp}.${r.body}`).digest();
  return timingSafeEqual(expected, Buffer.from(given, "hex"));
}

describe("outgoing webhooks to a local receiver", () => {
  const base = inject("baseUrl");
  const api = new Api(base);
  const tenant = `hooks${Date.now().toString(36)}`;
  const admin: User = { email: `admin@${tenant}.test`, name: "admin", tenant, token: "", id: "" };
  const receivers: Receiver[] = [];

  const receiver = async () => {
    const r = new Receiver();
    await r.start();
    receivers.push(r);
    return r;
  };

  const register = async (url: string, extra: Record<string, unknown> = {}) => {
    const res = await api.request(admin, "POST", "/api/admin/webhooks", { url, ...extra });
    expect(res.status).toBe(201);
    return res.body as { id: string; secret: string };
  };

  const channel = async (name: string) => {
    const res = await api.request(admin, "POST", "/api/rooms", { name, kind: "channel" });
    return (res.body as { id: string }).id;
  };

  const say = async (roomId: string, text: string) => {
    const res = await api.request(admin, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: crypto.randomUUID(),
      text,
    });
    expect(res.status).toBe(201);
    return (res.body as { seq: number }).seq;
  };

  beforeAll(async () => {
    await api.login(admin);
  });

  afterAll(async () => {
    for (const r of receivers) await r.stop();
  });

  it("delivers every event of its kinds, signed, with a stable id, in order per room", async () => {
    const r = await receiver();
    const [a, b] = [await channel("alpha"), await channel("beta")];
    const hook = await register(r.url, { kinds: ["message"], rooms: [a, b] });
    const sent: Record<string, number[]> = { [a]: [], [b]: [] };
    const answered = new Map<string, number>();
    const started = performance.now();
    for (let i = 0; i < 10; i++) {
      for (const [room, text] of [
        [a, `a${i}`],
        [b, `b${i}`],
      ] as const) {
        const seq = await say(room, text);
        sent[room]?.push(seq);
        answered.set(`${tenant}:${room}:${seq}`, performance.now());
      }
    }
    await until("20 deliveries", () => (r.ids().length >= 20 ? true : undefined));
    const last = r.got.at(-1)?.at ?? started;
    const latency = r.got
      .map((g) => g.at - (answered.get(String(g.headers["x-parley-id"])) ?? g.at))
      .sort((x, y) => x - y);
    const q = (p: number) =>
      latency[Math.min(latency.length - 1, Math.floor(p * latency.length))]?.toFixed(0);
    console.info(
      `webhooks: 20 events in ${(last - started).toFixed(0)} ms from the first send; send answer → receiver p50 ${q(0.5)} ms, max ${q(1)} ms`,
    );
    for (const room of [a, b]) {
      const mine = r.got.map(
        (g) => JSON.parse(g.body) as { room: string; event: { seq: number; kind: string } },
      );
      const seqs = mine.filter((m) => m.room === room).map((m) => m.event.seq);
      // In order (a redelivery may repeat one, never reorder them).
      expect([...new Set(seqs)]).toEqual(sent[room]);
      expect(mine.every((m) => m.event.kind === "message")).toBe(true);
    }
    for (const g of r.got) {
      const body = JSON.parse(g.body) as { id: string; tenant: string; room: string; event: { seq: number } };
      expect(g.headers["x-parley-id"]).toBe(`${tenant}:${body.room}:${body.event.seq}`);
      expect(body.id).toBe(g.headers["x-parley-id"]);
      expect(verify(hook.secret, g)).toBe(true);
      // Tampered: another body, another secret, a stale timestamp.
      expect(verify(hook.secret, { ...g, body: g.body.replace(/"a\d"|"b\d"/, '"evil"') })).toBe(false);
      expect(verify(`${hook.secret}x`, g)).toBe(false);
      expect(verify(hook.secret, g, Date.now() + 10 * 60_000)).toBe(false);
    }
  });

  it("tries a failing endpoint again with backoff until it answers", async () => {
    const r = await receiver();
    r.status = (n) => (n <= 2 ? 500 : 200);
    const room = await channel("flaky");
    await register(r.url, { kinds: ["message"], rooms: [room] });
    const seq = await say(room, "eventually");
    await until("a successful delivery", () =>
      r.got.some((g, i) => i >= 2 && JSON.parse(g.body).event.seq === seq) ? true : undefined,
    );
    expect(r.got.map((g) => JSON.parse(g.body).event.seq)).toEqual([seq, seq, seq]);
    // Spaced out, not hammered.
    const gaps = r.got.slice(1).map((g, i) => g.at - (r.got[i]?.at ?? 0));
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(400);
  });

  it("disables a dead endpoint, holds its events, and delivers them in order once enabled", async () => {
    const r = await receiver();
    r.status = () => 503;
    const room = await channel("dead");
    const hook = await register(r.url, { kinds: ["message"], rooms: [room] });
    const seqs = [await say(room, "one"), await say(room, "two")];
    const state = await until("the endpoint to be disabled", async () => {
      const list = await api.request(admin, "GET", "/api/admin/webhooks");
      const mine = (
        list.body as { webhooks: { id: string; state: string; waiting: number }[] }
      ).webhooks.find((w) => w.id === hook.id);
      return mine?.state === "disabled" ? mine : undefined;
    });
    expect(state.waiting).toBe(2);
    const log = await api.request(admin, "GET", `/api/admin/webhooks/${hook.id}/deliveries`);
    const deliveries = (log.body as { deliveries: { ok: boolean; status: number; seq: number }[] })
      .deliveries;
    expect(deliveries.length).toBeGreaterThan(1);
    expect(deliveries.every((d) => !d.ok && d.status === 503 && d.seq === seqs[0])).toBe(true);
    // The receiver is back; enabling sends what was held, in order.
    r.status = () => 200;
    const before = r.got.length;
    expect((await api.request(admin, "POST", `/api/admin/webhooks/${hook.id}/enable`)).status).toBe(200);
    await until("the held events", () => (r.got.length >= before + 2 ? true : undefined));
    expect(r.got.slice(before).map((g) => JSON.parse(g.body).event.seq)).toEqual(seqs);
    // And a replay from the log sends them again, with the same ids.
    const latest = await api.request(admin, "GET", `/api/admin/webhooks/${hook.id}/deliveries?limit=2`);
    const [newest, older] = (latest.body as { deliveries: { id: number }[] }).deliveries;
    const replay = await api.request(admin, "POST", `/api/admin/webhooks/${hook.id}/replay`, {
      from: older?.id,
    });
    expect(replay.body).toEqual({ replayed: 2 });
    await until("the replay", () => (r.got.length >= before + 4 ? true : undefined));
    expect(r.got.slice(before + 2).map((g) => g.headers["x-parley-id"])).toEqual(
      r.got.slice(before, before + 2).map((g) => g.headers["x-parley-id"]),
    );
    expect(newest).toBeDefined();
  });
});
