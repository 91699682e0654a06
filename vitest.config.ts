/**
 * @module Tests run inside workerd with the real bindings of wrangler.toml (Durable Objects, D1).
 * Each run gets a fresh dev signing key and the D1 migrations, applied by test/setup.ts.
 */
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { exportJWK, generateKeyPair } from "jose";
import { defineConfig } from "vitest/config";

const migrations = await readD1Migrations("./migrations");
const { privateKey } = await generateKeyPair("RS256", { extractable: true });
const devKey = JSON.stringify({ ...(await exportJWK(privateKey)), alg: "RS256", kid: "test" });

export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: {
          TEST_MIGRATIONS: migrations,
          DEV_JWT_PRIVATE_JWK: devKey,
          // Low enough to test the limiter, high enough for the concurrency tests' bursts.
          PARLEY_USER_COMMANDS_PER_SECOND: "200",
        },
      },
    }),
  ],
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["./test/setup.ts"],
    testTimeout: 30_000,
  },
});
