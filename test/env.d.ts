/** Test-only bindings added by vitest.config.ts (everything else comes from `wrangler types`). */
declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
  }
}
