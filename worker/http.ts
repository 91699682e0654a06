/** @module Request-body reading with a size limit, and query-parameter parsing that never throws. */
import type { Context } from "hono";
import { ApiError } from "./errors.ts";

/** Reads a JSON object body of at most `maxBytes`, or throws `bad_request` / `too_large`. */
export async function readJsonObject(c: Context, maxBytes: number): Promise<Record<string, unknown>> {
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > maxBytes) throw new ApiError("too_large", `body exceeds ${maxBytes} bytes`);
  const raw = await c.req.raw.arrayBuffer();
  if (raw.byteLength > maxBytes) throw new ApiError("too_large", `body exceeds ${maxBytes} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(raw));
  } catch {
    throw new ApiError("bad_request", "body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ApiError("bad_request", "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** An optional non-negative integer query parameter. */
export function intParam(
  c: Context,
  name: string,
  { min = 0, max = Number.MAX_SAFE_INTEGER } = {},
): number | undefined {
  const raw = c.req.query(name);
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,16}$/.test(raw)) throw new ApiError("bad_request", `${name} must be a non-negative integer`);
  const n = Number(raw);
  if (n < min || n > max) throw new ApiError("bad_request", `${name} must be between ${min} and ${max}`);
  return n;
}
