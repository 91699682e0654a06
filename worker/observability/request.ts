/**
 * @module The request middleware: gives every request an id (Cloudflare's `cf-ray`, else a random
 * one), returns it as `x-request-id`, and when the response is ready writes one `request` log line
 * and one `http` data point: route pattern, status, time, tenant, user, room. It runs first, so it
 * also sees the responses of `onError` and of refused sign-ins.
 */
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { matchedRoutes } from "hono/route";
import { log } from "../../platform/log.ts";
import { record } from "../../platform/metrics.ts";
import type { AppEnv } from "../types.ts";

export const REQUEST_ID_HEADER = "x-request-id";

/** A ray id is hex, with a data-centre suffix on some hops (`8f1c2d3e4a5b6c7d-AMS`). Cloudflare's
 * edge sets the header; without it (locally) a client could send anything, so a value of another
 * shape is not let into the logs and a fresh id is used instead. */
const RAY = /^[0-9a-f]{8,32}(-[A-Za-z0-9]{2,8})?$/;
const ROOM_ID = /^r_[0-9a-z]{20}$/;

/** The pattern of the route that answers (the last matched handler; `use` middleware is registered
 * for method ALL), so `/api/rooms/r_…/messages` logs as `/api/rooms/:roomId/messages`. */
function routeOf(c: Context<AppEnv>): string {
  const handler = matchedRoutes(c).findLast((r) => r.method !== "ALL");
  return handler?.path ?? "unmatched";
}

/** The room a request is about, when its path names one in the shape of a room id (a path segment
 * is whatever the client typed, so nothing else of it reaches the log). */
function roomOf(c: Context<AppEnv>, route: string): string | undefined {
  const id = c.req.param("roomId") ?? (route.includes("/rooms/:id") ? c.req.param("id") : undefined);
  return id !== undefined && ROOM_ID.test(id) ? id : undefined;
}

/** The response with the request id header. A response passed through from a Durable Object's
 * `fetch` (WebSocket upgrades, event streams) has immutable headers and is rebuilt, keeping its
 * socket. */
function withRequestId(res: Response, id: string): Response {
  // An upgrade always comes from an object: rebuilt without first failing to set the header (a
  // thrown error per socket opened).
  if (res.webSocket) return rebuilt(res, id);
  try {
    res.headers.set(REQUEST_ID_HEADER, id);
    return res;
  } catch {
    return rebuilt(res, id);
  }
}

function rebuilt(res: Response, id: string): Response {
  const headers = new Headers(res.headers);
  headers.set(REQUEST_ID_HEADER, id);
  return new Response(res.body, {
    status: res.status,
    statusText: res.statusText,
    headers,
    webSocket: res.webSocket,
  });
}

export const observeRequests = createMiddleware<AppEnv>(async (c, next) => {
  const started = Date.now();
  const ray = c.req.header("cf-ray");
  const requestId = ray !== undefined && RAY.test(ray) ? ray : crypto.randomUUID();
  c.set("requestId", requestId);
  await next();

  const res = withRequestId(c.res, requestId);
  if (res !== c.res) {
    // Hono's `res` setter copies the new response over the old one with `new Response(body, old)`,
    // which a 101 cannot survive; clearing it first makes the assignment a plain replacement.
    c.res = undefined;
    c.res = res;
  }
  const route = routeOf(c);
  const identity = c.get("identity") as AppEnv["Variables"]["identity"] | undefined;
  const ms = Date.now() - started;
  const room = roomOf(c, route);
  log({
    event: "request",
    requestId,
    method: c.req.method,
    route,
    status: res.status,
    ms,
    tenant: identity?.tenantId ?? null,
    user: identity?.userId ?? null,
    ...(room ? { room } : {}),
  });
  record(c.env, {
    name: "http",
    tenant: identity?.tenantId ?? null,
    route,
    method: c.req.method,
    status: res.status,
    ms,
  });
});
