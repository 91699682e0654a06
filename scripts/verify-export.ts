/**
 * @module `npm run verify-export -- <file> [--head <room>=<seq>:<chain> …]`: checks an eDiscovery
 * export offline (protocol/chain.ts): every room's seqs complete and in order, every chain link,
 * every unredacted event against its digest, every head line. `--head` compares a room's head with
 * one obtained independently (GET /api/admin/rooms/:id/head), which catches a file whose chain was
 * rebuilt after tampering. Reads plain or gzip NDJSON as a stream. Exit 0 when it verifies, 1 with
 * the first failing line otherwise, 2 on usage errors.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { createGunzip } from "node:zlib";
import { verifyExport } from "../protocol/chain.ts";

const args = process.argv.slice(2);
const file = args.find((a, i) => !a.startsWith("--") && args[i - 1] !== "--head");
if (!file) {
  console.error("usage: npm run verify-export -- <export.ndjson[.gz]> [--head <room>=<seq>:<chain>]");
  process.exit(2);
}
const expected = new Map<string, string>();
for (let i = 0; i < args.length; i++) {
  if (args[i] !== "--head") continue;
  const m = /^([^=]+)=(\d+:[0-9a-f]{64})$/.exec(args[i + 1] ?? "");
  if (!m?.[1] || !m[2]) {
    console.error(`--head wants <room>=<seq>:<chain>, got ${JSON.stringify(args[i + 1])}`);
    process.exit(2);
  }
  expected.set(m[1], m[2]);
}

let input: NodeJS.ReadableStream = createReadStream(file);
if (file.endsWith(".gz")) input = input.pipe(createGunzip());
const verdict = await verifyExport(createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY }));
for (const room of verdict.rooms) {
  console.log(
    `${room.room}: ${room.events} events (${room.redacted} redacted), head ${room.head.seq}:${room.head.chain}`,
  );
  const want = expected.get(room.room);
  if (want && want !== `${room.head.seq}:${room.head.chain}`) {
    console.error(
      `FAIL ${room.room}: head ${room.head.seq}:${room.head.chain} differs from the expected ${want}`,
    );
    process.exit(1);
  }
}
for (const room of expected.keys()) {
  if (!verdict.rooms.some((r) => r.room === room)) {
    console.error(`FAIL ${room}: not in the export`);
    process.exit(1);
  }
}
if (!verdict.ok) {
  console.error(`FAIL line ${verdict.line}: ${verdict.reason}`);
  process.exit(1);
}
console.log(`OK: ${verdict.rooms.length} rooms verified`);
