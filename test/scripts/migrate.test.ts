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
      expect(d1Bindings(environment), environment ?? "local").toEqual(
        expect.arrayContaining(["DB", "DB_EU"]),
      );
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
    // One database per binding; the two directories (DB, DB_EU) with the directory's schema.
    expect(files).toHaveLength(d1Bindings().length);
    const directories = files.filter((file) => {
      const db = new DatabaseSync(join(d1, file), { readOnly: true });
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      db.close();
      const names = tables.map((t) => t.name);
      return ["tenants", "users", "api_tokens", "audit_log"].every((n) => names.includes(n));
    });
    expect(directories).toHaveLength(2);
  }, 120_000);
});
