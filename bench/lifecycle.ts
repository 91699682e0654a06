/**
 * @module `npm run bench -- --lifecycle`: issue 18's figures against one `npm start` server. Writes
 * the "## Lifecycle" section of bench/results.md.
 *
 * - **Deactivation to the last session closed**, over `--runs` people: each holds two room sockets
 *   (two "browser sessions", Node `ws` clients that send the ping first as the SDK does), an SSE
 *   stream, a waiting long poll, a presence socket and a bot token of their own making. The clock
 *   runs from the deactivation request's start until the last of the sockets and the stream has
 *   closed, the poll has answered and the bot token is refused.
 * - **SCIM list latency with `--users` people**: `GET /scim/v2/Users?count=100` (the first page,
 *   every user matched) and `GET /scim/v2/Users?filter=userName eq "…"` (an index lookup), beside
 *   `GET /api/me` in the same run.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { sideFlags } from "./options.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { ServerGroup, startParley } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api, devLogin, pool } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench lifecycle: ${msg}\n`);
export const LIFECYCLE_HEADING = "## Lifecycle";

interface Options {
  runs: number;
  users: number;
  requests: number;
  out: string;
}

const USAGE = "usage: npm run bench -- --lifecycle [--runs 20] [--users 10000] [--requests 100] [--out FILE]";

function parseOptions(argv: string[]): Options {
  const { values, num } = sideFlags(argv, USAGE, {
    lifecycle: { type: "boolean" },
    runs: { type: "string" },
    users: { type: "string" },
    requests: { type: "string" },
    out: { type: "string" },
  });
  return {
    runs: Math.round(num(values.runs, "runs", 20, 1, 1000)),
    users: Math.round(num(values.users, "users", 10_000, 10, 1_000_000)),
    requests: Math.round(num(values.requests, "requests", 100, 10, 100_000)),
    out: resolve(root, values.out ?? "bench/results.md"),
  };
}

/** Resolves with performance.now() when the socket closes. */
function closedAt(ws: WebSocket): Promise<number> {
  return new Promise((r) => ws.once("close", () => r(performance.now())));
}

function openSocket(url: string, token: string): Promise<WebSocket> {
  return new Promise((resolveOpen, reject) => {
    const ws = new WebSocket(url, {
      headers: { "Cf-Access-Jwt-Assertion": token },
      perMessageDeflate: false,
    });
    ws.once("open", () => {
      ws.send(JSON.stringify({ type: "ping" }));
      resolveOpen(ws);
    });
    ws.once("error", reject);
  });
}

async function deactivations(base: string, o: Options, runId: string): Promise<LatencySummary> {
  const tenant = `${runId}-deact`;
  const login = (who: string) => devLogin(base, tenant, who);
  const owner = await login("owner");
  const room = (
    await api<{ id: string }>(base, "POST", "/api/rooms", owner, { name: "all", kind: "channel" })
  ).id;
  const ws = base.replace(/^http/, "ws");
  const samples = new Samples();
  for (let i = 0; i < o.runs; i++) {
    const token = await login(`p${i}`);
    const me = await api<{ user: { id: string } }>(base, "GET", "/api/me", token);
    await api(base, "POST", `/api/rooms/${room}/join`, token);
    await api(base, "PATCH", `/api/users/${me.user.id}`, owner, { role: "admin" });
    const bot = await api<{ token: string }>(base, "POST", "/api/tokens", token, { name: `bot ${i}` });
    const sockets = [
      await openSocket(`${ws}/api/rooms/${room}/ws?after=0`, token),
      await openSocket(`${ws}/api/rooms/${room}/ws?after=0`, token),
      await openSocket(`${ws}/api/presence/ws`, token),
    ];
    const closes = sockets.map(closedAt);
    const sse = await fetch(`${base}/api/rooms/${room}/events?after=0`, {
      headers: { "Cf-Access-Jwt-Assertion": token },
    });
    const sseDone = (async () => {
      const reader = (sse.body as ReadableStream<Uint8Array>).getReader();
      for (;;) if ((await reader.read()).done) return performance.now();
    })();
    const head =
      (
        await api<{ events: { seq: number }[] }>(base, "GET", `/api/rooms/${room}/messages?limit=1`, token)
      ).events.at(-1)?.seq ?? 0;
    const poll = fetch(`${base}/api/rooms/${room}/poll?after=${head}&timeout=25`, {
      headers: { "Cf-Access-Jwt-Assertion": token },
    }).then(async (r) => {
      await r.arrayBuffer();
      return performance.now();
    });
    const t0 = performance.now();
    await api(base, "POST", `/api/users/${me.user.id}/deactivate`, owner);
    const refused = fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${bot.token}` } }).then(
      (r) => {
        if (r.status !== 401) throw new Error(`bot token answered ${r.status}`);
        return performance.now();
      },
    );
    const last = Math.max(...(await Promise.all([...closes, sseDone, poll, refused])));
    samples.push(last - t0);
  }
  return samples.summary() as LatencySummary;
}

interface ScimFigures {
  page: LatencySummary;
  byName: LatencySummary;
  me: LatencySummary;
}

async function scimList(base: string, o: Options, runId: string): Promise<ScimFigures> {
  const tenant = `${runId}-scim`;
  const owner = (
    await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
      email: `owner@${tenant}.test`,
      name: "owner",
      tenant,
    })
  ).token;
  const { token } = await api<{ token: string }>(base, "POST", "/api/admin/scim-token", owner);
  const scim = async (method: string, path: string, body?: unknown) => {
    const t0 = performance.now();
    const res = await fetch(`${base}/scim/v2${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body ? { "content-type": "application/scim+json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status}`);
    return performance.now() - t0;
  };
  log(`provisioning ${o.users} users over SCIM`);
  await pool(
    Array.from({ length: o.users }, (_, i) => i),
    8,
    (i) =>
      scim("POST", "/Users", {
        schemas: ["urn:ietf:params:scim:schemas:core:2.0:User"],
        userName: `user${i}@${tenant}.test`,
        name: { givenName: "User", familyName: String(i) },
        externalId: `ext-${i}`,
        active: true,
      }),
  );
  const page = new Samples();
  const byName = new Samples();
  const me = new Samples();
  for (let i = 0; i < o.requests; i++) {
    page.push(await scim("GET", "/Users?startIndex=1&count=100"));
    const name = `user${(i * 7919) % o.users}@${tenant}.test`;
    byName.push(await scim("GET", `/Users?filter=${encodeURIComponent(`userName eq "${name}"`)}`));
    const t0 = performance.now();
    await api(base, "GET", "/api/me", owner);
    me.push(performance.now() - t0);
  }
  return {
    page: page.summary() as LatencySummary,
    byName: byName.summary() as LatencySummary,
    me: me.summary() as LatencySummary,
  };
}

export async function runLifecycle(argv: string[]): Promise<void> {
  const began = performance.now();
  const o = parseOptions(argv);
  const group = new ServerGroup(log, 60 * 60 * 1000);
  const runId = `lc${Date.now().toString(36)}`;
  let deact: LatencySummary;
  let list: ScimFigures;
  try {
    const server = await startParley(root, resolve(root, "bench/out"), {
      name: "parley-lifecycle",
      tempPrefix: "parley-bench-lifecycle-",
    });
    group.track(server);
    deact = await deactivations(server.baseUrl, o, runId);
    log(`deactivation p50 ${deact.p50.toFixed(1)} p99 ${deact.p99.toFixed(1)} ms`);
    list = await scimList(server.baseUrl, o, runId);
  } finally {
    await group.stop();
  }
  const ms = (x: number) => x.toFixed(1);
  const row = (name: string, s: LatencySummary) =>
    `| ${name} | ${s.count} | ${ms(s.p50)} | ${ms(s.p95)} | ${ms(s.p99)} | ${ms(s.max)} |`;
  const facts = sectionFacts(argv, began);
  publishSection(
    o.out,
    [
      LIFECYCLE_HEADING,
      "",
      `Run ${facts.date} with \`${facts.command}\` on ${facts.machine}; ${facts.total} s in all.`,
      "",
      `Deactivation: from the start of \`POST /api/users/:id/deactivate\` until the last of the person's sessions ended (two room sockets, a presence socket, an SSE stream, a waiting long poll) and their bot token was refused; one person per run, ${o.runs} runs. SCIM: a tenant of ${o.users} people provisioned over SCIM; ${o.requests} requests of each kind, sequential, beside \`GET /api/me\`.`,
      "",
      "| what | n | p50 ms | p95 ms | p99 ms | max ms |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      row("deactivation → last session closed", deact),
      row(`SCIM GET /Users?count=100 (${o.users} users)`, list.page),
      row('SCIM GET /Users?filter=userName eq "…"', list.byName),
      row("GET /api/me (same run)", list.me),
    ].join("\n"),
    LIFECYCLE_HEADING,
    log,
  );
}
