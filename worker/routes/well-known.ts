/**
 * @module `/.well-known/…`: what Parley publishes to anyone, without authentication.
 * `GET /.well-known/parley-export-keys` is the JWKS of the keys that sign export heads (the current
 * key, then retired ones kept so that heads they signed stay verifiable): an auditor fetches it once
 * and keeps it, or gives its URL to `npm run verify-export -- --keys`.
 */
import { Hono } from "hono";
import { exportJwks } from "../exports/keys.ts";
import type { AppEnv } from "../types.ts";

export const wellKnownRoutes = new Hono<AppEnv>().get("/parley-export-keys", (c) =>
  // Keys change only with a deployment, and a retired key stays listed, so a cached copy is never
  // wrong for long.
  c.json(exportJwks(c.env), 200, { "cache-control": "public, max-age=300" }),
);
