/** @module drizzle-kit configuration of the history shards: D1 (SQLite) migrations generated from
 * worker/db/history-schema.ts into migrations/history/. */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  schema: "./worker/db/history-schema.ts",
  out: "./migrations/history",
});
