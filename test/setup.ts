import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { allHistoryShards, directories } from "../platform/residency.ts";

// Every directory database (DB, DB_EU, …) takes the same migrations, as `npm start` applies them.
for (const { db } of directories(env)) await applyD1Migrations(db, env.TEST_MIGRATIONS);
// Every history shard (HISTORY_0, HISTORY_EU_0, …) takes the history migrations.
for (const { db } of allHistoryShards(env)) await applyD1Migrations(db, env.TEST_HISTORY_MIGRATIONS);
