/**
 * @module Runs the real `npm run verify-export` CLI (scripts/verify-export.ts, as a Node child
 * process) on an export, for the tests: directly from Node (test/system), and from inside workerd
 * through the `VERIFY_EXPORT_CLI` service binding that vitest.config.ts gives the pipeline project,
 * whose tests hold exports with real retention tombstones that only a controllable clock can make.
 * This file runs in Node, never in workerd.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** What the binding accepts: the export's text, or the name of a file in test/fixtures;
 * optionally a JWKS to pass with --keys (as a file), and further arguments (`--head …`). */
export interface CliRequest {
  export?: string;
  fixture?: string;
  keys?: unknown;
  args?: string[];
}

/** Writes the export (and keys) to a temporary directory and runs the CLI on it. */
export function runVerifyCli(req: CliRequest): CliRun {
  const dir = mkdtempSync(join(tmpdir(), "parley-verify-"));
  try {
    let file = join(dir, "export.ndjson");
    if (req.fixture !== undefined) {
      if (!/^[\w.-]+$/.test(req.fixture)) throw new Error(`not a fixture name: ${req.fixture}`);
      file = resolve(root, "test/fixtures", req.fixture);
    } else {
      writeFileSync(file, req.export ?? "");
    }
    const args = [file, ...(req.args ?? [])];
    if (req.keys !== undefined) {
      const keys = join(dir, "keys.json");
      writeFileSync(keys, JSON.stringify(req.keys));
      args.push("--keys", keys);
    }
    // The same Node as the test run (22, pinned through npm), as `npm run verify-export` would use.
    const run = spawnSync(process.execPath, [resolve(root, "scripts/verify-export.ts"), ...args], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000,
    });
    return { status: run.status, stdout: run.stdout, stderr: run.stderr };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The service binding's handler: POST a `CliRequest` as JSON, get a `CliRun` back. */
export async function verifyCliBinding(request: Request): Promise<Response> {
  const req = (await request.json()) as CliRequest;
  return Response.json(runVerifyCli(req));
}
