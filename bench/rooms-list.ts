/**
 * @module `npm run bench -- --rooms-list`: `GET /api/rooms` latency for a user in 10, 100 and 500
 * rooms beside `GET /api/me` (the floor of any authenticated request) in the same run, for this
 * design (the counts from the user's inbox: one RPC) and, unless `--designs new`, the tag
 * `pre-small` (one Room RPC per listed room). Each size is a tenant of its own whose user is in that
 * many private rooms (so the list is exactly those), each with a message and every tenth with a
 * mention of the user; measured first with every room unread, then again once the user has read
 * them all (as most rooms of a sidebar are). Requests are sequential and alternate between the two
 * routes, after a warm-up. Writes the "## Room list" section of bench/results.md.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { oldDesignRoot } from "./old.ts";
import { publishSection, sectionFacts } from "./sections.ts";
import { type Server, ServerGroup, startParley } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";
import { api, devLogin, pool } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench rooms-list: ${msg}\n`);
export const ROOMS_LIST_HEADING = "## Room list";

type Design = "new" | "old";
const LABEL: Record<Design, string> = { new: "this design (inbox)", old: "pre-small (RPC per room)" };

interface ListOptions {
  sizes: number[];
  requests: number;
  warmup: number;
  designs: Design[];
  out: string;
}

function parseListOptions(argv: string[]): ListOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      "rooms-list": { type: "boolean" },
      sizes: { type: "string" },
      requests: { type: "string" },
      warmup: { type: "string" },
      designs: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      "usage: npm run bench -- --rooms-list [--sizes 10,100,500] [--requests 300] [--warmup 30] [--designs new,old] [--out FILE]\n",
    );
    process.exit(0);
  }
  const sizes = (values.sizes ?? "10,100,500").split(",").map(Number);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1 || n > 2000))
    throw new Error("--sizes: integers 1..2000");
  const requests = Number(values.requests ?? 300);
  const warmup = Number(values.warmup ?? 30);
  if (!Number.isInteger(requests) || requests < 10) throw new Error("--requests must be an integer ≥ 10");
  if (!Number.isInteger(warmup) || warmup < 0) throw new Error("--warmup must be an integer ≥ 0");
  const designs = (values.designs ?? "new,old").split(",") as Design[];
  if (designs.some((d) => d !== "new" && d !== "old")) throw new Error("--designs: new, old");
  return { sizes, requests, warmup, designs, out: resolve(root, values.out ?? "bench/results.md") };
}

interface Row {
  design: Design;
  rooms: number;
  /** Whether the user had read none of the rooms or all of them. */
  read: "none" | "all";
  list: LatencySummary;
  me: LatencySummary;
}

/** A tenant whose reader is in `rooms` private rooms, each with a message (every tenth a mention):
 * the reader's token, and each room with its message's seq. */
async function seed(
  base: string,
  tenant: string,
  rooms: number,
): Promise<{ reader: string; sent: { roomId: string; seq: number }[] }> {
  const login = (who: string) => devLogin(base, tenant, who);
  const writer = await login("writer");
  const reader = await login("reader");
  const me = await api<{ user: { id: string } }>(base, "GET", "/api/me", reader);
  const sent = await pool(
    Array.from({ length: rooms }, (_, i) => i),
    8,
    async (i) => {
      const room = await api<{ id: string }>(base, "POST", "/api/rooms", writer, {
        name: `room ${i}`,
        kind: "private",
        members: [me.user.id],
      });
      const text = i % 10 === 0 ? `hello @<${me.user.id}>` : `hello ${i}`;
      const { seq } = await api<{ seq: number }>(base, "POST", `/api/rooms/${room.id}/messages`, writer, {
        clientId: `m${i}`,
        text,
      });
      return { roomId: room.id, seq };
    },
  );
  const listed = await api<unknown[]>(base, "GET", "/api/rooms", reader);
  if (listed.length !== rooms) throw new Error(`${tenant}: listed ${listed.length} rooms, not ${rooms}`);
  return { reader, sent };
}

/** The reader reads every room through its message; the list then says so (or the run stops). */
async function readAll(base: string, reader: string, sent: { roomId: string; seq: number }[]): Promise<void> {
  await pool(sent, 8, ({ roomId, seq }) => api(base, "PUT", `/api/rooms/${roomId}/read`, reader, { seq }));
  const listed = await api<{ unread: number }[]>(base, "GET", "/api/rooms", reader);
  const unread = listed.filter((r) => r.unread !== 0).length;
  if (unread > 0) throw new Error(`${unread} rooms still unread after reading them all`);
}

async function timed(base: string, path: string, token: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${base}${path}`, { headers: { "Cf-Access-Jwt-Assertion": token } });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`GET ${path} → ${res.status}`);
  return performance.now() - t0;
}

async function measure(server: Server, design: Design, o: ListOptions, runId: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (const rooms of o.sizes) {
    const tenant = `${runId}-${design}-${rooms}`;
    log(`${LABEL[design]}: seeding ${rooms} rooms`);
    const { reader: token, sent } = await seed(server.baseUrl, tenant, rooms);
    for (const read of ["none", "all"] as const) {
      if (read === "all") await readAll(server.baseUrl, token, sent);
      for (let i = 0; i < o.warmup; i++) {
        await timed(server.baseUrl, "/api/rooms", token);
        await timed(server.baseUrl, "/api/me", token);
      }
      const list = new Samples();
      const me = new Samples();
      for (let i = 0; i < o.requests; i++) {
        // Alternating, so both routes see the same machine load.
        list.push(await timed(server.baseUrl, "/api/rooms", token));
        me.push(await timed(server.baseUrl, "/api/me", token));
      }
      const row = {
        design,
        rooms,
        read,
        list: list.summary() as LatencySummary,
        me: me.summary() as LatencySummary,
      };
      log(
        `${LABEL[design]}, ${rooms} rooms, ${read} read: /api/rooms p50 ${row.list.p50.toFixed(1)} p99 ${row.list.p99.toFixed(1)} ms; /api/me p50 ${row.me.p50.toFixed(1)} p99 ${row.me.p99.toFixed(1)} ms`,
      );
      rows.push(row);
    }
  }
  return rows;
}

function render(o: ListOptions, rows: Row[], facts: ReturnType<typeof sectionFacts>): string {
  const ms = (x: number) => x.toFixed(1);
  const lines = [
    ROOMS_LIST_HEADING,
    "",
    `Run ${facts.date} with \`${facts.command}\` on ${facts.machine}; ${facts.total} s in all.`,
    "",
    `\`GET /api/rooms\` for a user in N private rooms (each with a message, every tenth mentioning the user), beside \`GET /api/me\` in the same run: ${o.requests} requests each, sequential and alternating, after ${o.warmup} of each to warm up; latency from the client, in ms. Measured with none of the rooms read, then again after the user has read them all (\`PUT …/read\` each). Issue 15 asks for the list's p99 within 2× of \`/api/me\`'s at 500 rooms.`,
    "",
    "| design | rooms | read | /api/rooms p50 | /api/rooms p99 | /api/me p50 | /api/me p99 | p99 ratio |",
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map(
      (r) =>
        `| ${LABEL[r.design]} | ${r.rooms} | ${r.read} | ${ms(r.list.p50)} | ${ms(r.list.p99)} | ${ms(r.me.p50)} | ${ms(r.me.p99)} | ${(r.list.p99 / r.me.p99).toFixed(2)}× |`,
    ),
  ];
  return lines.join("\n");
}

export async function runRoomsList(argv: string[]): Promise<void> {
  const began = performance.now();
  const o = parseListOptions(argv);
  // Stops the servers on a signal or after an hour (a full run takes about 8 minutes).
  const group = new ServerGroup(log, 60 * 60 * 1000);
  const logDir = resolve(root, "bench/out");
  const runId = `l${Date.now().toString(36)}`;
  const rows: Row[] = [];
  try {
    for (const design of o.designs) {
      const appRoot = design === "new" ? root : oldDesignRoot("pre-small", log);
      log(`starting ${LABEL[design]}`);
      const server = await startParley(appRoot, logDir, {
        name: `parley-rooms-list-${design}`,
        tempPrefix: `parley-bench-list-${design}-`,
      });
      group.track(server);
      rows.push(...(await measure(server, design, o, runId)));
      // One server at a time: the other design's runtime would share the machine's two cores.
      await server.stop();
    }
  } finally {
    await group.stop();
  }
  publishSection(o.out, render(o, rows, sectionFacts(argv, began)), ROOMS_LIST_HEADING, log);
}
