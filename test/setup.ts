import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { directories } from "../worker/residency.ts";

// Every directory database (DB, DB_EU, …) takes the same migrations, as `npm start` applies them.
for (const { db } of directories(env)) await applyD1Migrations(db, env.TEST_MIGRATIONS);
