import { describe, expect, it } from "vitest";
import { cycles, type Import, importsOf, layerOf } from "../../scripts/structure.ts";

// scripts/structure.ts counts what issue 16 reports: cycles and imports against the layers.

const edge = (from: string, to: string, typeOnly = false): Import => ({ from, to, typeOnly });

describe("the structure report", () => {
  it("reads runtime, type-only, re-exported, multi-line and dynamic imports, and only relative ones", () => {
    const text = [
      'import { a } from "./a.ts";',
      'import type { B } from "../protocol/b.ts";',
      "import {",
      "  c,",
      "  type D,",
      '} from "./c.ts";',
      'export { e } from "./e.ts";',
      'export type { F } from "./f.ts";',
      'import { Hono } from "hono";',
      'const g = await import("./g.ts");',
    ].join("\n");
    const found = importsOf(`${process.cwd()}/worker/x.ts`, text).map((i) => [i.to, i.typeOnly]);
    expect(found).toEqual([
      ["worker/a.ts", false],
      ["protocol/b.ts", true],
      ["worker/c.ts", false],
      ["worker/e.ts", false],
      ["worker/f.ts", true],
      ["worker/g.ts", false],
    ]);
  });

  it("finds each cycle once, of any length, and no cycle in a chain", () => {
    const found = cycles([
      edge("a", "b"),
      edge("b", "c"),
      edge("c", "a"),
      edge("c", "d"),
      edge("d", "e"),
      edge("x", "y"),
      edge("y", "x", true),
    ]);
    expect(found).toEqual([
      ["a", "b", "c"],
      ["x", "y"],
    ]);
    expect(cycles([edge("a", "b"), edge("b", "c")])).toEqual([]);
  });

  it("places a file in its layer by its top folder, and nothing else in any", () => {
    expect(layerOf("durable-objects/room.ts")).toBe("durable-objects");
    expect(layerOf("worker/auth/identity.ts")).toBe("worker");
    expect(layerOf("test/helpers.ts")).toBeNull();
  });
});
