/**
 * @module Tests run inside workerd with the real bindings of wrangler.toml (Durable Objects, D1).
 * Each run gets a fresh dev signing key, a fresh export signing key (Ed25519), a fresh VAPID key and the D1
 * migrations, applied by test/setup.ts to every directory database (DB, DB_EU).
 *
 * Projects differ only in configuration: "core" (dev auth, a high per-user command rate so
 * concurrency tests are never throttled, two tenants pinned to the EU); "limits" (1 command/s, so throttling tests never depend on
 * machine speed, and small daily upload quotas); "pipeline" (small thresholds for segments and the room's windows); "access" (production auth: Cloudflare Access applications, an origin allow-list).
 * "scripts" runs Node-side scripts' tests in plain Node. "browser" is the other exception: plain Node driving chromium (test/browser) or raw TCP sockets
 * (test/system) against the real app (`npm start`'s server, started once per run by
 * test/browser/global-setup.ts).
 */
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { exportJWK, generateKeyPair } from "jose";
import { defineConfig } from "vitest/config";
import { verifyCliBinding } from "./test/verify-cli.ts";

const migrations = await readD1Migrations("./migrations");
const historyMigrations = await readD1Migrations("./migrations/history");
const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const devKey = JSON.stringify({ ...(await exportJWK(privateKey)), alg: "RS256", kid: "test" });
const exportKeyPair = await generateKeyPair("Ed25519", { extractable: true });
const exportKey = JSON.stringify({ ...(await exportJWK(exportKeyPair.privateKey)), kid: "test-export" });
// wrangler.toml requires it as a secret; the plugin looks for secrets in the environment and warns
// of a missing one before the bindings below supply it. (The browser project's app reads its own
// from .dev.vars, which wrangler prefers to the environment.)
process.env.EXPORT_SIGNING_JWK ??= exportKey;
const vapidPair = await generateKeyPair("ES256", { extractable: true });
const vapidKey = JSON.stringify(await exportJWK(vapidPair.privateKey));
process.env.VAPID_PRIVATE_JWK ??= vapidKey;

/** Two Access applications (tenants acme and globex, pinned to the EU) and one whose key endpoint
 * is down (initech), as a production deployment would configure them. (workerd has no
 * jurisdictions: a pinned tenant's objects run in the plain namespace there, platform/residency.ts;
 * that the deployed path scopes them is tested against a namespace double,
 * test/unit/residency.test.ts. Its directory is DB_EU, locally as deployed.) */
const ACCESS_TENANTS = JSON.stringify([
  {
    id: "acme",
    name: "Acme",
    teamDomain: "https://acme.cloudflareaccess.com",
    aud: "acmeaud0123456789abcdef",
    owners: ["boss@acme.test"],
    admins: ["it@acme.test"],
    adminGroups: ["parley-admins"],
    guestDomains: ["contractor.test"],
  },
  {
    id: "globex",
    teamDomain: "https://globex.cloudflareaccess.com",
    aud: "globexaud0123456789abcd",
    jurisdiction: "eu",
  },
  { id: "initech", teamDomain: "https://initech.cloudflareaccess.com", aud: "initechaud0123456789abc" },
]);

/** The core project's tenants pinned to the EU by TENANT_JURISDICTIONS (the access project pins
 * globex by ACCESS_TENANTS instead, so both ways are exercised). */
const EU_TENANTS = { "eu-acme": "eu", "eu-umbrella": "eu" };

/** Stands in for the web client's Worker (client/web/wrangler.toml, reached through the `WEB`
 * binding): it says which path it was handed. The browser project loads the real one through
 * `npm start`. */
async function webStandIn(request: Request): Promise<Response> {
  return new Response(`web client: ${new URL(request.url).pathname}`, {
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

function workerd(
  name: string,
  include: string[],
  commandsPerSecond: string,
  vars: Record<string, string> = {},
  serviceBindings: Record<string, (request: Request) => Promise<Response>> = {},
) {
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            TEST_MIGRATIONS: migrations,
            TEST_HISTORY_MIGRATIONS: historyMigrations,
            AUTH_MODE: "dev",
            DEV_JWT_PRIVATE_JWK: devKey,
            EXPORT_SIGNING_JWK: exportKey,
            VAPID_PRIVATE_JWK: vapidKey,
            VAPID_SUBJECT: "mailto:ops@parley.test",
            PARLEY_USER_COMMANDS_PER_SECOND: commandsPerSecond,
            // Presence runs sharded in tests, so cross-shard paths are always exercised.
            PARLEY_PRESENCE_SHARDS: "3",
            ...vars,
          },
          serviceBindings: { WEB: webStandIn, ...serviceBindings },
        },
      }),
    ],
    test: { name, include, setupFiles: ["./test/setup.ts"], testTimeout: 60_000 },
  };
}

export default defineConfig({
  test: {
    // The worker logs one line per request (worker/observability/request.ts): thousands in a run,
    // which would bury everything else the tests print. test/observability.test.ts reads them
    // through a console spy, which still sees them.
    onConsoleLog: (line) => !line.startsWith('{"event":"request"'),
    projects: [
      // Tenants pinned to the EU in dev mode (test/residency.test.ts): their directory is DB_EU.
      workerd("core", ["test/*.test.ts", "test/unit/**/*.test.ts"], "200", {
        TENANT_JURISDICTIONS: JSON.stringify(EU_TENANTS),
      }),
      // Small daily upload quotas, so a test reaches them with a few small files; every other quota
      // keeps its default (the quota tests show the defaults refuse a burst).
      workerd("limits", ["test/limits/**/*.test.ts"], "1", {
        PARLEY_MAX_ATTACHMENT_BYTES: "2048",
        PARLEY_USER_UPLOADS_PER_DAY: "5",
        PARLEY_USER_UPLOAD_BYTES_PER_DAY: "5000",
      }),
      // Small thresholds for segments and the room's windows, so a test of a few hundred events
      // reaches R2, and one of a few thousand leaves events in R2 alone. Its exports can
      // hold real retention tombstones (a test may run a room's retention with a later clock), so
      // it may also run the verify-export CLI on them, in Node (test/verify-cli.ts).
      workerd(
        "pipeline",
        ["test/pipeline/**/*.test.ts"],
        "100000",
        {
          PARLEY_HOT_EVENTS: "500",
          PARLEY_SEGMENT_EVENTS: "100",
          PARLEY_REPLAY_CAP: "500",
          // Rows for the newest 1,000 events only, so a test of a few thousand events has events
          // that live in R2 alone (test/pipeline/r2-window.test.ts).
          PARLEY_COMMAND_WINDOW_EVENTS: "1000",
          // Tests seal by age with a given clock (`room.seal(now)`); a minute is short next to the
          // default hour yet longer than a test file runs, so no real alarm seals by age mid-test
          // and where segments begin and end does not depend on the machine's speed.
          PARLEY_SEAL_AFTER_MS: "60000",
          // Search shards that fill with a handful of messages (test/pipeline/search-generations).
          PARLEY_SEARCH_SHARD_MESSAGES: "20",
          PARLEY_SEARCH_PARTS: "2",
          // History shards that fill with a few large messages (test/pipeline/history-shards).
          PARLEY_HISTORY_SHARD_BYTES: "65536",
        },
        { VERIFY_EXPORT_CLI: verifyCliBinding },
      ),
      workerd("access", ["test/access/**/*.test.ts"], "200", {
        AUTH_MODE: "access",
        ACCESS_TENANTS,
        ALLOWED_ORIGINS: "https://chat.acme.test, https://parley.test",
      }),
      // Node-side scripts (npm start's helpers, command-line tools), in plain Node.
      {
        test: { name: "scripts", include: ["test/scripts/**/*.test.ts"], environment: "node" },
      },
      // What the Worker sends to other services, against local stand-ins of them, in plain Node.
      {
        test: { name: "push", include: ["test/push/**/*.test.ts"], environment: "node" },
      },
      {
        test: {
          name: "browser",
          include: ["test/browser/**/*.test.ts", "test/system/**/*.test.ts"],
          environment: "node",
          globalSetup: ["./test/browser/global-setup.ts"],
          testTimeout: 60_000,
          // Launching chromium and signing users in happens in hooks, on a 2-core machine.
          hookTimeout: 120_000,
          // One server and one machine: files in parallel would only make each chromium slower
          // and the tests' timing less like a user's.
          fileParallelism: false,
        },
      },
    ],
  },
});
