/** @module drizzle-kit configuration: D1 (SQLite) migrations generated from worker/db/schema.ts. */
import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "sqlite",
  schema: "./worker/db/schema.ts",
  out: "./migrations",
});
