/**
 * @module `npm run verify-export -- <file> [--keys <jwks file | URL>] [--head <room>=<seq>:<chain> …]`:
 * checks an eDiscovery export offline (protocol/export-verify.ts): every room's seqs complete and
 * in order, every chain link, every event against its digest (tombstones included, for scheme-2
 * events), every deletion backed by its delete event, every head line and its signature.
 *
 * `--keys` gives the deployment's public keys (the JWKS of GET /.well-known/parley-export-keys, as
 * a file or that URL): every head must then be signed by one of them. Without it a signature is
 * only checked against the key its own header carries, which proves nothing about who made it; the
 * output says so and prints the key's fingerprint to compare. `--head` checks the chain link at a
 * seq against a head obtained independently (the live head, or one anchored elsewhere: docs/deploy.md).
 * Reads plain or gzip NDJSON as a stream. Exit 0 when it verifies (warnings say what could not be
 * checked), 1 with the first failing line otherwise, 2 on usage errors.
 */
import { createReadStream, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { createGunzip } from "node:zlib";
import type { JSONWebKeySet } from "jose";
import { verifyExport } from "../protocol/export-verify.ts";

const USAGE =
  "usage: npm run verify-export -- <export.ndjson[.gz]> [--keys <jwks.json | URL>] [--head <room>=<seq>:<chain>]…";

function usage(message: string): never {
  console.error(message);
  console.error(USAGE);
  process.exit(2);
}

const args = process.argv.slice(2);
let file: string | undefined;
const keySources: string[] = [];
const anchors = new Map<string, Map<number, string>>();
for (let i = 0; i < args.length; i++) {
  const arg = args[i] ?? "";
  if (arg === "--keys") {
    const source = args[++i];
    if (!source) usage("--keys wants a JWKS file or URL");
    keySources.push(source);
  } else if (arg === "--head") {
    const m = /^([^=]+)=(\d+):([0-9a-f]{64})$/.exec(args[++i] ?? "");
    if (!m?.[1] || !m[2] || !m[3]) usage(`--head wants <room>=<seq>:<chain>, got ${JSON.stringify(args[i])}`);
    const room = anchors.get(m[1]) ?? new Map<number, string>();
    room.set(Number(m[2]), m[3]);
    anchors.set(m[1], room);
  } else if (arg.startsWith("--")) {
    usage(`unknown option ${arg}`);
  } else if (file === undefined) {
    file = arg;
  } else {
    usage(`one export file at a time (got ${JSON.stringify(arg)} too)`);
  }
}
if (!file) usage("no export file given");

/** A JWKS from a file or a URL (the deployment's /.well-known/parley-export-keys). */
async function loadKeys(source: string): Promise<JSONWebKeySet> {
  let text: string;
  try {
    if (/^https?:\/\//.test(source)) {
      const res = await fetch(source, { signal: AbortSignal.timeout(15_000) });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      text = await res.text();
    } else {
      text = readFileSync(source, "utf8");
    }
  } catch (err) {
    usage(`cannot read keys from ${source}: ${err instanceof Error ? err.message : String(err)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    usage(`keys from ${source} are not JSON`);
  }
  const keys = (parsed as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) usage(`keys from ${source} are not a JWKS ({"keys":[…]})`);
  return { keys } as JSONWebKeySet;
}

let trusted: JSONWebKeySet | undefined;
for (const source of keySources) {
  const loaded = await loadKeys(source);
  trusted = { keys: [...(trusted?.keys ?? []), ...loaded.keys] };
}

let input: NodeJS.ReadableStream = createReadStream(file);
if (file.endsWith(".gz")) input = input.pipe(createGunzip());
const verdict = await verifyExport(createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY }), {
  keys: trusted,
  anchors,
});

const signers = new Map<string, { kid: string; trusted: boolean; rooms: number }>();
for (const room of verdict.rooms) {
  const redacted = `${room.deleted} deleted, ${room.expired} expired`;
  const signed = room.signed
    ? `; signed ${new Date(room.signed.at).toISOString()} by key ${room.signed.signature.kid}`
    : "; unsigned (old format)";
  console.log(
    `${room.room}: ${room.events} events (${redacted}), head ${room.head.seq}:${room.head.chain}${signed}`,
  );
  if (room.signed) {
    const s = room.signed.signature;
    const seen = signers.get(s.thumbprint) ?? { kid: s.kid, trusted: s.trusted, rooms: 0 };
    seen.rooms += 1;
    signers.set(s.thumbprint, seen);
  }
}
for (const [thumbprint, s] of signers) {
  console.log(
    `heads of ${s.rooms} room(s) signed by key ${s.kid}, fingerprint ${thumbprint} (RFC 7638 SHA-256)${s.trusted ? ", one of the trusted keys" : ""}`,
  );
}
if (!trusted && signers.size > 0) {
  console.log(
    "WARNING: no trusted keys given (--keys): each signature was checked only against the key its own header names, which anyone can make. Compare the fingerprint above with the deployment's keys (GET /.well-known/parley-export-keys), or run again with --keys <that URL or a saved copy>.",
  );
}
for (const warning of verdict.warnings) console.log(`WARNING: ${warning}`);
for (const room of anchors.keys()) {
  if (!verdict.ok) break;
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
