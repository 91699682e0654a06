/**
 * @module Applies the D1 migrations to every D1 database one configuration of wrangler.toml binds:
 * the directory of each jurisdiction (`DB`, `DB_EU`), and whatever database is added later, so that
 * none is forgotten. `npm start` runs it on the local state; `npm run db:migrate:staging` and
 * `npm run db:migrate:production` on an environment's remote databases.
 *
 *   node scripts/migrate.ts --local [--persist-to <dir>]
 *   node scripts/migrate.ts --remote --env <staging|production>
 *
 * Each database is migrated with `wrangler d1 migrations apply <binding>`, from its binding's own
 * `migrations_dir`. The first failure stops the run with wrangler's exit status.
 */
import { spawnSync } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { unstable_readConfig } from "wrangler";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const wrangler = resolve(root, "node_modules/wrangler/bin/wrangler.js");

/** The binding of every D1 database of the configuration (`environment` undefined: the top level,
 * which is the local configuration). */
export function d1Bindings(environment?: string): string[] {
  // Typed here: wrangler's declaration of its Config comes from a package it bundles, not installed.
  const config: { d1_databases: { binding: string }[] } = unstable_readConfig(
    { config: resolve(root, "wrangler.toml"), env: environment },
    { hideWarnings: true },
  );
  return config.d1_databases.map((d) => d.binding);
}

/** Applies the migrations to each database; `args` are wrangler's (`--local`, `--remote`,
 * `--persist-to`, `--env`). Returns 0, or the exit status of the first failure. */
export function migrateAll(
  args: string[],
  options: { environment?: string; env?: NodeJS.ProcessEnv; stdin?: "inherit" | "ignore" } = {},
): number {
  for (const binding of d1Bindings(options.environment)) {
    console.log(`parley: applying D1 migrations to ${binding}`);
    const result = spawnSync(process.execPath, [wrangler, "d1", "migrations", "apply", binding, ...args], {
      cwd: root,
      env: options.env ?? process.env,
      // Remote: wrangler asks before it applies anything, and the operator answers.
      stdio: [options.stdin ?? "inherit", "inherit", "inherit"],
    });
    if (result.status !== 0) {
      console.error(`parley: applying D1 migrations to ${binding} failed`);
      return result.status ?? 1;
    }
  }
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const envAt = args.indexOf("--env");
  process.exit(migrateAll(args, { environment: envAt >= 0 ? args[envAt + 1] : undefined }));
}
