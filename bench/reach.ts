/**
 * @module `npm run bench -- --reach`: issue 17's figures, against one `npm start` server on this
 * machine. Writes the "## Reach" section of bench/results.md.
 *
 * - **Notification latency**: from the HTTP answer to a message that mentions a subscribed,
 *   offline user to the push service stand-in (`web-push-testing`, bench/push-service.ts) receiving
 *   the encrypted request. Each sample is a distinct (user, room), so no collapse window holds one
 *   back; messages go one at a time, `--gap` ms apart.
 * - **Webhook delivery**: latency from the HTTP answer to a local receiver getting the event, at a
 *   steady pace; then throughput: a burst of messages sent as fast as a few concurrent writers can,
 *   and the time until the receiver has them all (in order per room, checked).
 * - The baseline beside both: the same HTTP send with nobody to notify and no webhook (what the
 *   user-visible path costs without these features), in the same run.
 */
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { sideFlags } from "./options.ts";
import { startMockPushService } from "./push-service.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { ServerGroup, startParley } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api, devLogin, pool } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench reach: ${msg}\n`);
export const REACH_HEADING = "## Reach: notifications and webhooks";

interface ReachOptions {
  notifications: number;
  paced: number;
  burst: number;
  gap: number;
  out: string;
}

const USAGE =
  "usage: npm run bench -- --reach [--notifications 200] [--paced 200] [--burst 2000] [--gap 20] [--out FILE]";

function parseReachOptions(argv: string[]): ReachOptions {
  const { values, num } = sideFlags(argv, USAGE, {
    reach: { type: "boolean" },
    notifications: { type: "string" },
    paced: { type: "string" },
    burst: { type: "string" },
    gap: { type: "string" },
    out: { type: "string" },
  });
  return {
    notifications: Math.round(num(values.notifications, "notifications", 200, 10, 100_000)),
    paced: Math.round(num(values.paced, "paced", 200, 10, 100_000)),
    burst: Math.round(num(values.burst, "burst", 2000, 10, 1_000_000)),
    gap: Math.round(num(values.gap, "gap", 20, 0, 60_000)),
    out: resolve(root, values.out ?? "bench/results.md"),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A webhook receiver that notes when each X-Parley-Id first arrives. */
async function receiver(): Promise<{
  url: string;
  arrivals: Map<string, number>;
  order: string[];
  close(): Promise<void>;
}> {
  const arrivals = new Map<string, number>();
  const order: string[] = [];
  const server: HttpServer = createServer((req, res) => {
    const id = String(req.headers["x-parley-id"]);
    if (!arrivals.has(id)) {
      arrivals.set(id, performance.now());
      order.push(id);
    }
    req.resume();
    req.on("end", () => res.writeHead(200).end());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    arrivals,
    order,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

interface Figures {
  baseline: LatencySummary;
  notify: LatencySummary;
  webhook: LatencySummary;
  burst: { events: number; ms: number; rooms: number; sendMs: number; requestMs: LatencySummary | null };
}

async function measure(base: string, o: ReachOptions, runId: string): Promise<Figures> {
  const tenant = `${runId}-reach`;
  const login = (who: string) => devLogin(base, tenant, who);
  const admin = await login("admin");
  const send = async (room: string, text: string) => {
    const t0 = performance.now();
    const { seq } = await api<{ seq: number }>(base, "POST", `/api/rooms/${room}/messages`, admin, {
      clientId: crypto.randomUUID(),
      text,
    });
    return { seq, started: t0, answered: performance.now(), ms: performance.now() - t0 };
  };

  // Baseline: a room nobody is subscribed in, no webhook.
  const quiet = (
    await api<{ id: string }>(base, "POST", "/api/rooms", admin, { name: "quiet", kind: "channel" })
  ).id;
  const baseline = new Samples();
  for (let i = 0; i < o.paced; i++) {
    baseline.push((await send(quiet, `quiet ${i}`)).ms);
    await sleep(o.gap);
  }

  // Notifications: users each subscribed once, rooms each with every user, one mention per pair.
  const arrivalsByHash = new Map<string, number[]>();
  const push = await startMockPushService({
    onArrival: (hash, at) => arrivalsByHash.set(hash, [...(arrivalsByHash.get(hash) ?? []), at]),
  });
  const notify = new Samples();
  try {
    const { publicKey } = await api<{ publicKey: string }>(base, "GET", "/api/push/key", admin);
    const users = Math.min(20, o.notifications);
    const rooms = Math.ceil(o.notifications / users);
    log(`notifications: ${users} users × ${rooms} rooms`);
    const people = await pool(
      Array.from({ length: users }, (_, i) => i),
      4,
      async (i) => {
        const token = await login(`user${i}`);
        const me = await api<{ user: { id: string } }>(base, "GET", "/api/me", token);
        const sub = await push.subscribe(publicKey);
        await api(base, "POST", "/api/push/subscriptions", token, { endpoint: sub.url, keys: sub.keys });
        return { id: me.user.id, hash: sub.clientHash };
      },
    );
    const roomIds = await pool(
      Array.from({ length: rooms }, (_, i) => i),
      4,
      async (i) =>
        (
          await api<{ id: string }>(base, "POST", "/api/rooms", admin, {
            name: `notify ${i}`,
            kind: "private",
            members: people.map((p) => p.id),
          })
        ).id,
    );
    let n = 0;
    for (const room of roomIds) {
      for (const p of people) {
        if (n++ >= o.notifications) break;
        const before = arrivalsByHash.get(p.hash)?.length ?? 0;
        const { started } = await send(room, `@<${p.id}> ping ${n}`);
        await until("a notification", () => (arrivalsByHash.get(p.hash)?.length ?? 0) > before, 30_000);
        notify.push((arrivalsByHash.get(p.hash)?.[before] as number) - started);
        await sleep(o.gap);
      }
    }
  } finally {
    await push.close();
  }

  // Webhooks: paced latency, then a burst over several rooms.
  const hook = await receiver();
  const webhook = new Samples();
  let burst: Figures["burst"] = { events: 0, ms: 0, rooms: 0, sendMs: 0, requestMs: null };
  try {
    const paced = (
      await api<{ id: string }>(base, "POST", "/api/rooms", admin, { name: "paced", kind: "channel" })
    ).id;
    const burstRooms = await pool([0, 1, 2, 3], 4, async (i) => {
      const r = await api<{ id: string }>(base, "POST", "/api/rooms", admin, {
        name: `burst ${i}`,
        kind: "channel",
      });
      return r.id;
    });
    const made = await api<{ id: string }>(base, "POST", "/api/admin/webhooks", admin, {
      url: hook.url,
      rooms: [paced, ...burstRooms],
      kinds: ["message"],
    });
    // The consumer reads the tenant's webhooks at most every 10 s per isolate.
    await sleep(11_000);
    for (let i = 0; i < o.paced; i++) {
      const { seq, started } = await send(paced, `paced ${i}`);
      const id = `${tenant}:${paced}:${seq}`;
      await until("a webhook delivery", () => hook.arrivals.has(id), 30_000);
      webhook.push((hook.arrivals.get(id) as number) - started);
      await sleep(o.gap);
    }
    const sent = new Map<string, number[]>(burstRooms.map((r) => [r, []]));
    const start = performance.now();
    await pool(
      Array.from({ length: o.burst }, (_, i) => i),
      8,
      async (i) => {
        const room = burstRooms[i % burstRooms.length] as string;
        const { seq } = await send(room, `burst ${i}`);
        sent.get(room)?.push(seq);
      },
    );
    const sendDone = performance.now();
    const ids = [...sent].flatMap(([room, seqs]) => seqs.map((s) => `${tenant}:${room}:${s}`));
    await until("the burst's deliveries", () => ids.every((id) => hook.arrivals.has(id)), 300_000);
    const last = Math.max(...ids.map((id) => hook.arrivals.get(id) as number));
    // In order per room: each room's ids arrived in seq order.
    for (const room of burstRooms) {
      const arrived = hook.order
        .filter((id) => id.startsWith(`${tenant}:${room}:`))
        .map((id) => Number(id.split(":")[2]));
      const sorted = [...arrived].sort((a, b) => a - b);
      if (arrived.join() !== sorted.join()) throw new Error(`webhook deliveries out of order in ${room}`);
    }
    const log200 = await api<{ deliveries: { ms: number }[] }>(
      base,
      "GET",
      `/api/admin/webhooks/${made.id}/deliveries?limit=200`,
      admin,
    );
    const requestMs = new Samples();
    for (const d of log200.deliveries) requestMs.push(d.ms);
    burst = {
      events: ids.length,
      ms: last - start,
      rooms: burstRooms.length,
      sendMs: sendDone - start,
      requestMs: requestMs.summary() as LatencySummary,
    };
  } finally {
    await hook.close();
  }
  return {
    baseline: baseline.summary() as LatencySummary,
    notify: notify.summary() as LatencySummary,
    webhook: webhook.summary() as LatencySummary,
    burst,
  };
}

function render(o: ReachOptions, f: Figures, facts: ReturnType<typeof sectionFacts>): string {
  const ms = (x: number) => x.toFixed(1);
  const row = (name: string, s: LatencySummary) =>
    `| ${name} | ${s.count} | ${ms(s.p50)} | ${ms(s.p95)} | ${ms(s.p99)} | ${ms(s.max)} |`;
  return [
    REACH_HEADING,
    "",
    `Run ${facts.date} with \`${facts.command}\` on ${facts.machine}; ${facts.total} s in all.`,
    "",
    `One \`npm start\` server; messages sent over HTTP one at a time, ${o.gap} ms apart. Each latency runs from the start of the send (an HTTP \`POST …/messages\`, acknowledged after the durable write). Notification: to the push service stand-in (\`web-push-testing\`) receiving the encrypted, VAPID-signed request; each sample a different user and room (no collapse). Webhook: to a local receiver getting the event. Baseline: the send's own round trip, with nobody to notify and no webhook.`,
    "",
    "| path | n | p50 ms | p95 ms | p99 ms | max ms |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    row("baseline: the send's round trip", f.baseline),
    row("notification: send → push service", f.notify),
    row("webhook: send → receiver", f.webhook),
    "",
    `Webhook throughput: ${f.burst.events} messages in ${f.burst.rooms} rooms, sent in ${(f.burst.sendMs / 1000).toFixed(1)} s by 8 concurrent writers, all delivered ${(f.burst.ms / 1000).toFixed(1)} s after the first send (${(f.burst.events / (f.burst.ms / 1000)).toFixed(0)} events/s), in order per room. One delivery request (the endpoint object's fetch to the receiver, from its log, last 200): p50 ${f.burst.requestMs?.p50.toFixed(1)} ms, p99 ${f.burst.requestMs?.p99.toFixed(1)} ms.`,
  ].join("\n");
}

export async function runReach(argv: string[]): Promise<void> {
  const began = performance.now();
  const o = parseReachOptions(argv);
  const group = new ServerGroup(log, 30 * 60 * 1000);
  const runId = `r${Date.now().toString(36)}`;
  let figures: Figures;
  try {
    const server = await startParley(root, resolve(root, "bench/out"), {
      name: "parley-reach",
      tempPrefix: "parley-bench-reach-",
    });
    group.track(server);
    figures = await measure(server.baseUrl, o, runId);
  } finally {
    await group.stop();
  }
  log(
    `notification p50 ${figures.notify.p50.toFixed(1)} p99 ${figures.notify.p99.toFixed(1)} ms; webhook p50 ${figures.webhook.p50.toFixed(1)} p99 ${figures.webhook.p99.toFixed(1)} ms; burst ${figures.burst.events} in ${figures.burst.ms.toFixed(0)} ms`,
  );
  publishSection(o.out, render(o, figures, sectionFacts(argv, began)), REACH_HEADING, log);
}
