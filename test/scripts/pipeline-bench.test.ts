/**
 * @module The pipeline bench's comparison options (bench/pipeline.ts): `--old` picks the revision and
 * the section it writes, so a run against pre-small keeps issue 14's `## Pipeline`; the main bench
 * keeps such sections when it rewrites results.md; busy time is priced as Durable Objects duration.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { resolveRev } from "../../bench/old.ts";
import { parsePipelineOptions } from "../../bench/pipeline.ts";
import { PRICES, usageOf, writeCost } from "../../bench/pipeline-cost.ts";
import { pipelineHeading } from "../../bench/pipeline-report.ts";
import { sideSections, writeSection } from "../../bench/sections.ts";

test("--old defaults to pre-shards and --readers-mark is off unless asked", () => {
  const plain = parsePipelineOptions(["--pipeline"]);
  expect(plain.old).toBe("pre-shards");
  expect(plain.plan.readersMark).toBe(false);
  const small = parsePipelineOptions(["--pipeline", "--old", "pre-small", "--readers-mark"]);
  expect(small.old).toBe("pre-small");
  expect(small.plan.readersMark).toBe(true);
  expect(() => parsePipelineOptions(["--pipeline", "--old", "a b"])).toThrow(/--old/);
});

test("a run against another revision writes its own section and leaves ## Pipeline", () => {
  expect(pipelineHeading("pre-shards")).toBe("## Pipeline");
  expect(pipelineHeading("pre-small")).toBe("## Small-room cost, pre-small vs now");
  const dir = mkdtempSync(join(tmpdir(), "parley-pipeline-test-"));
  try {
    const file = join(dir, "results.md");
    writeFileSync(file, "# Results\n\n## Pipeline\n\nissue 14\n");
    writeSection(file, "## Small-room cost, pre-small vs now\n\nissue 15\n", pipelineHeading("pre-small"));
    const text = readFileSync(file, "utf8");
    expect(text).toContain("## Pipeline\n\nissue 14");
    expect(text).toContain("## Small-room cost, pre-small vs now\n\nissue 15");
    // The main bench keeps it when it rewrites the file.
    expect(sideSections(file)).toContain("issue 15");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the tags a clone may lack fall back to their commits", () => {
  expect(resolveRev("pre-small")).toMatch(/^d7e60095a1cfef76fa39c7b624aa7e47ec600909$/);
  expect(() => resolveRev("no-such-tag-anywhere")).toThrow(/no such revision/);
});

test("busy time is priced as duration at 128 MB", () => {
  const empty = {
    objects: {},
    rooms: { events: 0, rowsHeld: 0 },
    searchDocs: 0,
    d1: {},
    r2: { objects: 0, bytes: 0 },
  };
  const tally = { store: "DO duration", owner: "Room", table: "-", op: "busy", via: "-" };
  const phase = {
    name: "paced",
    units: 10,
    seconds: 1,
    tallies: [{ ...tally, calls: 10, rowsRead: 0, rowsWritten: 0, bytes: 0, ms: 50 }],
    sizesBefore: empty,
    sizesAfter: empty,
  };
  const u = usageOf(phase);
  expect(u.doBusyMs).toBe(5);
  const line = writeCost(u, null).find((l) => l.line.startsWith("Durable Objects duration"));
  // 5 ms × 0.128 GB = 0.00064 GB-s a message: 640 GB-s a million messages.
  expect(line?.quantity).toBeCloseTo(0.00064, 8);
  expect(line?.usd).toBeCloseTo(0.00064 * PRICES.doDuration.usd, 8);
});
