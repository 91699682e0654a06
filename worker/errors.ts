/**
 * @module Request failures: thrown as `ApiError` anywhere in a handler and turned into docs/protocol.md's
 * envelope `{"error":{"code","message"}}` by the app's single `onError`. Unexpected errors are
 * logged with context and answered with a generic `internal`: never a stack trace to a client.
 */
import type { Context } from "hono";
import { log } from "../platform/log.ts";
import { type ErrorCode, errorResponse, type Failure } from "../protocol/index.ts";
import type { AppEnv } from "./types.ts";

export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly retryAfter: number | undefined;
  constructor(code: ErrorCode, message: string, retryAfter?: number) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
  static from(f: Failure): ApiError {
    return new ApiError(f.code, f.message, f.retryAfter);
  }
}

/** The request id (worker/observability/request.ts) ties the error line to the request line and to
 * the `x-request-id` the client saw. */
export function onError(err: Error, c: Context<AppEnv>): Response {
  if (err instanceof ApiError) return errorResponse(err.code, err.message, err.retryAfter);
  log({
    event: "unhandled_error",
    requestId: c.get("requestId") ?? null,
    route: c.req.routePath,
    method: c.req.method,
    error: String(err),
  });
  return errorResponse("internal", "internal error");
}
