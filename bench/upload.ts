/**
 * @module `npm run bench -- --upload`: attachment throughput. Starts Parley (or uses
 * `--parley-url`), signs in, creates a room, then uploads a 20 MiB file (streamed from a generator,
 * never held whole by the client) `--runs` times and downloads each back, checking its length. The
 * baseline measured in the same run is a 1 KiB upload: the fixed cost of one upload (identity,
 * room RPC, R2 put, D1 row) that the large ones carry too. Prints MiB/s (median, min, max) and
 * writes the "## Upload" section of bench/results.md.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { writeSection } from "./sections.ts";
import { externalServer, type Server, startParley, stopAllSync } from "./servers.ts";
import { api } from "./targets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const log = (msg: string) => process.stderr.write(`bench upload: ${msg}\n`);
const MiB = 1024 * 1024;

interface UploadOptions {
  sizeMiB: number;
  runs: number;
  out: string;
  parleyUrl: string | undefined;
}

export function parseUploadOptions(argv: string[]): UploadOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      upload: { type: "boolean" },
      size: { type: "string" },
      runs: { type: "string" },
      out: { type: "string" },
      "parley-url": { type: "string" },
    },
    strict: true,
  });
  const sizeMiB = Number(values.size ?? 20);
  const runs = Number(values.runs ?? 5);
  if (!(sizeMiB >= 1 && sizeMiB <= 95)) throw new Error("--size must be 1..95 (MiB)");
  if (!(Number.isInteger(runs) && runs >= 1 && runs <= 50)) throw new Error("--runs must be 1..50");
  return {
    sizeMiB,
    runs,
    out: resolve(root, values.out ?? "bench/results.md"),
    parleyUrl: values["parley-url"],
  };
}

/** `total` bytes of a fixed pattern, produced 64 KiB at a time as the request pulls them. */
function body(total: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).map((_, i) => (i * 31) & 255);
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk.byteLength, total - sent);
      controller.enqueue(n === chunk.byteLength ? chunk.slice() : chunk.slice(0, n));
      sent += n;
    },
  });
}

async function timedUpload(base: string, token: string, roomId: string, bytes: number) {
  const started = performance.now();
  const res = await fetch(`${base}/api/rooms/${roomId}/attachments`, {
    method: "POST",
    headers: {
      "Cf-Access-Jwt-Assertion": token,
      "Content-Type": "application/octet-stream",
      "Content-Length": String(bytes),
      "X-Filename": "bench.bin",
    },
    body: body(bytes),
    duplex: "half",
  } as RequestInit);
  const text = await res.text();
  const ms = performance.now() - started;
  return { status: res.status, ms, id: res.status === 201 ? (JSON.parse(text) as { id: string }).id : "" };
}

async function timedDownload(
  base: string,
  token: string,
  id: string,
): Promise<{ ms: number; bytes: number }> {
  const started = performance.now();
  const res = await fetch(`${base}/api/attachments/${id}`, { headers: { "Cf-Access-Jwt-Assertion": token } });
  if (res.status !== 200) throw new Error(`download → ${res.status}`);
  let bytes = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) bytes += chunk.byteLength;
  return { ms: performance.now() - started, bytes };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

export async function runUploadBench(argv: string[]): Promise<void> {
  const opts = parseUploadOptions(argv);
  const bytes = opts.sizeMiB * MiB;
  let server: Server | undefined;
  try {
    server = opts.parleyUrl
      ? externalServer(opts.parleyUrl)
      : await startParley(root, resolve(root, "bench/out"));
    const base = server.baseUrl;
    const { token } = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
      email: `upload-${Date.now()}@bench.test`,
      name: "Upload Bench",
      tenant: `upload${Date.now()}`,
    });
    const room = await api<{ id: string }>(base, "POST", "/api/rooms", token, {
      name: "uploads",
      kind: "channel",
    });
    const up: number[] = [];
    const down: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      const u = await timedUpload(base, token, room.id, bytes);
      if (u.status !== 201) throw new Error(`upload → ${u.status}`);
      const d = await timedDownload(base, token, u.id);
      if (d.bytes !== bytes) throw new Error(`downloaded ${d.bytes} of ${bytes} bytes`);
      up.push(bytes / MiB / (u.ms / 1000));
      down.push(bytes / MiB / (d.ms / 1000));
      log(`run ${i + 1}: upload ${u.ms.toFixed(0)} ms, download ${d.ms.toFixed(0)} ms`);
    }
    // Baseline: the fixed cost of one upload.
    const small = await timedUpload(base, token, room.id, 1024);
    const rows = [
      `| upload ${opts.sizeMiB} MiB (MiB/s) | ${median(up).toFixed(1)} | ${Math.min(...up).toFixed(1)} | ${Math.max(...up).toFixed(1)} |`,
      `| download ${opts.sizeMiB} MiB (MiB/s) | ${median(down).toFixed(1)} | ${Math.min(...down).toFixed(1)} | ${Math.max(...down).toFixed(1)} |`,
    ];
    const report = [
      "## Upload",
      "",
      `\`npm run bench -- --upload\`: ${opts.runs} uploads of ${opts.sizeMiB} MiB, streamed from the client to R2 through the`,
      "worker (local runtime, loopback), each downloaded back and its length checked. Baseline in the same run: a 1 KiB",
      `upload took ${small.ms.toFixed(1)} ms (the fixed cost of sign-in checks, the room RPC, R2 put and the D1 row).`,
      "",
      "| transfer | median | min | max |",
      "|---|---:|---:|---:|",
      ...rows,
      "",
    ].join("\n");
    process.stdout.write(`${report}\n`);
    writeSection(opts.out, report, "## Upload");
  } finally {
    await server?.stop();
    stopAllSync();
  }
}
