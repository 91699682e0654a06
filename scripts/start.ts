/**
 * @module `npm start`: makes sure .dev.vars holds the dev signing keys (mode 0600, checked each run),
 * builds the web client, applies the D1
 * migrations to every local database (scripts/migrate.ts), and runs the whole system with `wrangler dev` on 127.0.0.1:PORT (default 8787):
 * the Parley Worker, which listens, and the web client's Worker beside it (client/web/wrangler.toml).
 *
 * Environment:
 *   PORT                      port to listen on (default 8787)
 *   PARLEY_STATE_DIR          where local state persists (default .wrangler/state)
 *   INSPECTOR_PORT            wrangler's debugger port (set it when several runtimes start at once)
 *   PARLEY_*                  any limit variable of wrangler.toml, passed through as `--var`
 *   TENANT_JURISDICTIONS      tenants pinned to a jurisdiction (JSON), passed through as `--var`
 */
import { spawn, spawnSync } from "node:child_process";
import { delimiter, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { ensureDevVars } from "./dev-vars.ts";
import { migrateAll } from "./migrate.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const port = process.env.PORT ?? "8787";
const stateDir = process.env.PARLEY_STATE_DIR ?? ".wrangler/state";
// Wrangler runs on this same Node (22, pinned by the `node` devDependency), also when this script
// is started directly rather than through npm, which would put node_modules/.bin first on PATH.
const wrangler = resolve(root, "node_modules/wrangler/bin/wrangler.js");
const childEnv = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  PATH: `${resolve(root, "node_modules/.bin")}${delimiter}${process.env.PATH ?? ""}`,
};

/** The web client is static assets built from client/web: build it, so what runs is current. */
function buildClient(): void {
  const vite = resolve(root, "node_modules/vite/bin/vite.js");
  const result = spawnSync(process.execPath, [vite, "build", "--logLevel", "warn"], {
    cwd: root,
    env: childEnv,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (result.status !== 0) {
    console.error("parley: building the web client failed");
    process.exit(result.status ?? 1);
  }
}

/** Every D1 database of the local configuration: the directory of each jurisdiction (DB, DB_EU). */
function applyMigrations(): void {
  const status = migrateAll(["--local", "--persist-to", stateDir], {
    env: { ...childEnv, CI: "true" },
    stdin: "ignore",
  });
  if (status !== 0) process.exit(status);
}

/** Limit overrides from the environment, e.g. PARLEY_USER_COMMANDS_PER_SECOND=5000 npm start, and
 * tenants pinned to a jurisdiction: TENANT_JURISDICTIONS='{"acme":"eu"}' npm start. */
function varFlags(): string[] {
  const passed = (k: string) =>
    (k.startsWith("PARLEY_") && k !== "PARLEY_STATE_DIR") || k === "TENANT_JURISDICTIONS";
  return Object.entries(process.env)
    .filter(([k, v]) => passed(k) && v !== undefined)
    .flatMap(([k, v]) => ["--var", `${k}:${v}`]);
}

const devVars = await ensureDevVars(resolve(root, ".dev.vars"));
for (const key of devVars.wroteKeys) console.log(`parley: wrote a new dev key ${key} to .dev.vars`);
if (devVars.tightened)
  console.log("parley: .dev.vars holds signing keys: made it readable by its owner only (0600)");
buildClient();
applyMigrations();
const child = spawn(
  process.execPath,
  [
    wrangler,
    "dev",
    // The first configuration is the Worker that listens; the web client's is reached through it.
    "-c",
    "wrangler.toml",
    "-c",
    "client/web/wrangler.toml",
    "--ip",
    "127.0.0.1",
    "--port",
    port,
    "--persist-to",
    stateDir,
    "--show-interactive-dev-session=false",
    ...(process.env.INSPECTOR_PORT ? ["--inspector-port", process.env.INSPECTOR_PORT] : []),
    ...varFlags(),
  ],
  { cwd: root, env: childEnv, stdio: ["ignore", "pipe", "inherit"] },
);
let announced = false;
child.stdout.on("data", (chunk: Buffer) => {
  process.stdout.write(chunk);
  if (!announced && /Ready on/i.test(chunk.toString())) {
    announced = true;
    console.log(
      `\nParley is running.\n  Browser:  http://127.0.0.1:${port}/\n  Clients:  ws://127.0.0.1:${port}/api/rooms/<roomId>/ws (sign in with POST /auth/dev/login)\n`,
    );
  }
});
for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal));
child.on("exit", (code) => process.exit(code ?? 0));
