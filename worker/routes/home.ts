/** @module `GET /`: until the web client ships, a page that says what is running and how to use it. */
import { Hono } from "hono";
import type { AppEnv } from "../types.ts";

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Parley</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>Parley is running</h1>
<p>The API and room streams are up; the web client arrives with the client work.</p>
<ul>
<li><code>POST /auth/dev/login</code> <code>{"email","name","tenant"}</code> → <code>{"token"}</code> (dev mode)</li>
<li><code>GET /api/rooms</code>, <code>POST /api/rooms</code>, <code>POST /api/rooms/:id/join</code></li>
<li><code>GET /api/rooms/:id/ws?after=N</code> (WebSocket)</li>
</ul>
<p>Send the token as the <code>Cf-Access-Jwt-Assertion</code> header or the <code>CF_Authorization</code> cookie.</p>
</body></html>`;

export const homeRoutes = new Hono<AppEnv>().get("/", (c) =>
  c.html(PAGE, 200, { "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'" }),
);
