import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterEach, describe, expect, it } from "vitest";
import { d1Bindings, migrateAll } from "../../scripts/migrate.ts";

// scripts/migrate.ts is how `npm start` (local) and `npm run db:migrate:*` (remote) migrate D1.

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("D1 migrations", () => {
  it("cover the directory of every jurisdiction in every configuration", () => {
    for (const environment of [undefined, "staging", "production"]) {
      expect(d1Bindings(environment), environment ?? "local").toEqual(["DB", "DB_EU"]);
    }
  });

  it("are applied to every local database, as npm start applies them", () => {
    dir = mkdtempSync(join(tmpdir(), "parley-migrate-"));
    const status = migrateAll(["--local", "--persist-to", dir], {
      env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false" },
      stdin: "ignore",
    });
    expect(status).toBe(0);
    const d1 = join(dir, "v3", "d1", "miniflare-D1DatabaseObject");
    const files = readdirSync(d1).filter((f) => f.endsWith(".sqlite") && f !== "metadata.sqlite");
    expect(files).toHaveLength(2);
    for (const file of files) {
      const db = new DatabaseSync(join(d1, file), { readOnly: true });
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      db.close();
      expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(["tenants", "users", "api_tokens"]));
    }
  }, 120_000);
});
