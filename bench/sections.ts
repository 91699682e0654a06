/**
 * @module The side benches' sections of bench/results.md (presence, pipeline, upload, search at
 * scale, …): the facts
 * each section opens with, and replacing one section in place.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";

export interface SectionFacts {
  date: string;
  command: string;
  machine: string;
  /** Seconds the whole run took. */
  total: string;
}

/** When, how and on what a side bench ran (`began` from performance.now() at its start). */
export function sectionFacts(argv: string[], began: number): SectionFacts {
  const args = argv.join(" ");
  const cpus = os.cpus();
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
  return {
    date: new Date().toISOString(),
    command:
      process.env.npm_lifecycle_event === "bench" ? `npm run bench -- ${args}` : `node bench/run.ts ${args}`,
    machine: `${cpus.length} × ${cpus[0]?.model.trim() ?? "cpu"}, Node ${process.version}, load ${load}`,
    total: ((performance.now() - began) / 1000).toFixed(0),
  };
}

/** Replaces the `heading` section of `file` (up to the next `## ` heading), or appends it. */
export function writeSection(file: string, section: string, heading: string): void {
  const current = existsSync(file) ? readFileSync(file, "utf8") : "";
  const lines = current.split("\n");
  const start = lines.findIndex((l) => l.trim() === heading);
  let kept: string[];
  if (start < 0) kept = lines;
  else {
    let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
    if (end < 0) end = lines.length;
    kept = [...lines.slice(0, start), ...lines.slice(end)];
  }
  let text = kept.join("\n").replace(/\s+$/, "");
  text = text === "" ? section : `${text}\n\n${section}`;
  writeFileSync(file, `${text.replace(/\s+$/, "")}\n`);
}

/** Prints a side bench's section, writes it into `file` in place of its old one, and says so. */
export function publishSection(
  file: string,
  section: string,
  heading: string,
  log: (m: string) => void,
): void {
  process.stdout.write(`${section}\n`);
  writeSection(file, section, heading);
  log(`wrote the ${heading.replace(/^## /, "")} section of ${file}`);
}

/** The side benches' headings: the main bench rewrites bench/results.md and keeps these. */
export const SIDE_SECTIONS = [
  "## Presence",
  "## Upload",
  "## Pipeline",
  "## Web client",
  "## Many rooms",
  "## Idle sockets",
  "## Soak",
  "## Slow consumers",
  "## Fan-out, old vs new",
  "## Small rooms",
  "## Search at scale",
  "## Room list",
  "## Reach: notifications and webhooks",
  "## Lifecycle",
] as const;

/** How the pipeline bench's sections against a revision other than pre-shards begin
 * (`--pipeline --old <rev>`: one section per revision compared), kept like SIDE_SECTIONS. */
export const SMALL_ROOM_COST = "## Small-room cost, ";

/** The side sections `file` holds now (each from its heading to the next `## `), in file order. */
export function sideSections(file: string): string {
  if (!existsSync(file)) return "";
  const lines = readFileSync(file, "utf8").split("\n");
  const out: string[] = [];
  let keep = false;
  for (const line of lines) {
    if (/^## /.test(line))
      keep = (SIDE_SECTIONS as readonly string[]).includes(line.trim()) || line.startsWith(SMALL_ROOM_COST);
    if (keep) out.push(line);
  }
  return out.join("\n").replace(/\s+$/, "");
}
