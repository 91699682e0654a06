/**
 * @module Tests run inside workerd with the real bindings of wrangler.toml (Durable Objects, D1).
 * Each run gets a fresh dev signing key and the D1 migrations, applied by test/setup.ts.
 *
 * Two projects differ only in the per-user command rate: "core" raises it so concurrency tests are
 * never throttled; "limits" lowers it to 1/s so throttling tests never depend on machine speed.
 */
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { exportJWK, generateKeyPair } from "jose";
import { defineConfig } from "vitest/config";

const migrations = await readD1Migrations("./migrations");
const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const devKey = JSON.stringify({ ...(await exportJWK(privateKey)), alg: "RS256", kid: "test" });

function workerd(name: string, include: string[], commandsPerSecond: string) {
  return {
    plugins: [
      cloudflareTest({
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: {
            TEST_MIGRATIONS: migrations,
            DEV_JWT_PRIVATE_JWK: devKey,
            PARLEY_USER_COMMANDS_PER_SECOND: commandsPerSecond,
          },
        },
      }),
    ],
    test: { name, include, setupFiles: ["./test/setup.ts"], testTimeout: 60_000 },
  };
}

export default defineConfig({
  test: {
    projects: [
      workerd("core", ["test/*.test.ts", "test/unit/**/*.test.ts"], "200"),
      workerd("limits", ["test/limits/**/*.test.ts"], "1"),
    ],
  },
});
