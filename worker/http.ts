/** @module Request-body reading with a size limit, and query-parameter parsing that never throws. */
import type { Context } from "hono";
import { ApiError } from "./errors.ts";

/**
 * Reads a JSON object body of at most `maxBytes`, or throws `bad_request` / `too_large`. The body
 * must be declared `application/json`: a cross-site form cannot send that without a CORS
 * preflight, so a cookie-authenticated request with it came from a page of ours.
 */
export async function readJsonObject(c: Context, maxBytes: number): Promise<Record<string, unknown>> {
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type))
    throw new ApiError("bad_request", "send the body as application/json");
  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > maxBytes) throw new ApiError("too_large", `body exceeds ${maxBytes} bytes`);
  const text = await readCapped(c.req.raw, maxBytes);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError("bad_request", "body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ApiError("bad_request", "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** Reads a body as UTF-8 text, stopping as soon as it passes `maxBytes` (chunked bodies have no
 * Content-Length to check first). */
async function readCapped(request: Request, maxBytes: number): Promise<string> {
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw new ApiError("too_large", `body exceeds ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
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
