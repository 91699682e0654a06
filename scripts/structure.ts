/**
 * @module `npm run structure`: the figures of the codebase's shape that issue 16 asks for, from the
 * source itself: product files over 500 lines, import cycles, imports against the layer direction
 * (the layers as docs/architecture.md draws them, enforced by biome.json), and which worker files
 * reach the Durable Object modules. `--json` prints them as JSON.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Product code, by layer: a layer may import itself and the layers listed for it, nothing else. */
export const LAYERS: Record<string, readonly string[]> = {
  protocol: [],
  config: ["protocol"],
  platform: ["protocol", "config"],
  "durable-objects": ["protocol", "config", "platform"],
  worker: ["protocol", "config", "platform", "durable-objects"],
  client: ["protocol"],
};

/** The worker reaches the objects through these files only (the stubs, and the entry that exports
 * the classes to the runtime). */
export const WORKER_TO_OBJECTS = ["worker/stubs.ts", "worker/index.ts"];

const SOURCE = /\.(ts|tsx)$/;

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    if (name === "node_modules" || name.startsWith(".")) continue;
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path, out);
    else if (SOURCE.test(name) && !name.endsWith(".d.ts")) out.push(path);
  }
  return out;
}

export interface Import {
  from: string;
  to: string;
  /** `import type` / `export type`: erased by the compiler, so no edge at runtime. */
  typeOnly: boolean;
}

const STATEMENT =
  /(?:^|\n)\s*(import|export)\s+(type\s+)?(?:[^"';]*?\s+from\s+)?["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/g;

export function importsOf(file: string, text: string): Import[] {
  const out: Import[] = [];
  for (const m of text.matchAll(STATEMENT)) {
    const spec = m[3] ?? m[4];
    if (!spec?.startsWith(".")) continue;
    const to = relative(root, resolve(dirname(file), spec));
    out.push({ from: relative(root, file), to, typeOnly: m[2] !== undefined });
  }
  return out;
}

export function layerOf(path: string): string | null {
  const top = path.split("/")[0] ?? "";
  return top in LAYERS ? top : null;
}

/** Strongly connected components of more than one file (Tarjan). */
export function cycles(edges: readonly Import[]): string[][] {
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let counter = 0;
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter += 1;
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) ?? 0, index.get(w) ?? 0));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      for (;;) {
        const w = stack.pop();
        if (w === undefined) break;
        onStack.delete(w);
        component.push(w);
        if (w === v) break;
      }
      if (component.length > 1) out.push(component.sort());
    }
  };
  for (const v of next.keys()) if (!index.has(v)) visit(v);
  return out;
}

export interface Structure {
  productFiles: number;
  over500: { file: string; lines: number }[];
  cycles: string[][];
  runtimeCycles: string[][];
  againstLayers: Import[];
  workerToObjects: string[];
}

export function measure(): Structure {
  const files = Object.keys(LAYERS)
    .filter((d) => {
      try {
        return statSync(join(root, d)).isDirectory();
      } catch {
        return false;
      }
    })
    .flatMap((d) => walk(join(root, d)));
  const edges: Import[] = [];
  const over500: { file: string; lines: number }[] = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n").length;
    if (lines > 500) over500.push({ file: relative(root, file), lines });
    edges.push(...importsOf(file, text));
  }
  const againstLayers = edges.filter((e) => {
    const a = layerOf(e.from);
    const b = layerOf(e.to);
    if (a === null || b === null || a === b) return false;
    return !(LAYERS[a] ?? []).includes(b);
  });
  const workerToObjects = [
    ...new Set(
      edges
        .filter((e) => layerOf(e.from) === "worker" && layerOf(e.to) === "durable-objects")
        .map((e) => e.from),
    ),
  ].sort();
  return {
    productFiles: files.length,
    over500: over500.sort((a, b) => b.lines - a.lines),
    cycles: cycles(edges),
    runtimeCycles: cycles(edges.filter((e) => !e.typeOnly)),
    againstLayers,
    workerToObjects,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const s = measure();
  if (process.argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
  } else {
    const lines = [
      `product files (${Object.keys(LAYERS).join(", ")}): ${s.productFiles}`,
      `files over 500 lines: ${s.over500.length}`,
      ...s.over500.map((f) => `  ${f.file} ${f.lines}`),
      `import cycles: ${s.cycles.length} (at runtime, leaving out type-only imports: ${s.runtimeCycles.length})`,
      ...s.cycles.map((c) => `  ${c.join(" ↔ ")}`),
      `imports against the layer direction: ${s.againstLayers.length}`,
      ...s.againstLayers.map((e) => `  ${e.from} → ${e.to}${e.typeOnly ? " (type)" : ""}`),
      `worker files importing durable-objects/: ${s.workerToObjects.length} (allowed: ${WORKER_TO_OBJECTS.join(", ")})`,
      ...s.workerToObjects.map((f) => `  ${f}`),
    ];
    process.stdout.write(`${lines.join("\n")}\n`);
  }
}
