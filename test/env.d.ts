/** Test-only bindings added by vitest.config.ts (everything else comes from `wrangler types`). */
declare namespace Cloudflare {
  interface Env {
    TEST_MIGRATIONS: import("cloudflare:test").D1Migration[];
    /** The history shards' migrations (migrations/history). */
    TEST_HISTORY_MIGRATIONS: import("cloudflare:test").D1Migration[];
    /** Pipeline project only: runs the verify-export CLI in Node on a posted export (test/verify-cli.ts). */
    VERIFY_EXPORT_CLI: Fetcher;
  }
}
