/**
 * @module What the SCIM routes share (worker/routes/scim.ts, scim-groups.ts): the message schemas,
 * SCIM error responses, the request body reader, and the directory of the token's tenant.
 */
import { drizzle } from "drizzle-orm/d1";
import type { Context } from "hono";
import { type ScimPatchOperation, scimPatch } from "scim-patch";
import { type Filter, parse as parseFilter } from "scim2-parse-filter";
import type { Identity } from "../../platform/identity.ts";
import { directoryDb } from "../../platform/residency.ts";
import type { AppEnv } from "../types.ts";

export const LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error";
export const PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
export const MAX_COUNT = 200;
const MAX_BODY_BYTES = 64 * 1024;

/** A SCIM error response (RFC 7644 §3.12): nothing was changed. */
export class ScimError extends Error {
  readonly status: number;
  readonly scimType: string | undefined;

  constructor(status: number, detail: string, scimType?: string) {
    super(detail);
    this.status = status;
    this.scimType = scimType;
  }
}

export function scimJson(c: Context, body: unknown, status = 200): Response {
  return c.body(JSON.stringify(body), status as 200, {
    "content-type": "application/scim+json; charset=utf-8",
  });
}

export function scimError(c: Context, err: ScimError): Response {
  return scimJson(
    c,
    {
      schemas: [ERROR_SCHEMA],
      status: String(err.status),
      ...(err.scimType ? { scimType: err.scimType } : {}),
      detail: err.message,
    },
    err.status,
  );
}

export function base(c: Context): string {
  return `${new URL(c.req.url).origin}/scim/v2`;
}

export async function readBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.length > MAX_BODY_BYTES) throw new ScimError(413, `body exceeds ${MAX_BODY_BYTES} bytes`);
  try {
    return JSON.parse(text);
  } catch {
    throw new ScimError(400, "the body must be JSON", "invalidSyntax");
  }
}

export type ScimEnv = AppEnv & { Variables: { scim: Identity } };

export function dbOf(c: Context<ScimEnv>) {
  return drizzle(directoryDb(c.env, c.get("scim").tenantId));
}

/** A list request's `startIndex` (1-based), `count` (at most MAX_COUNT, default 100) and parsed
 * `filter` (null without one; 400 `invalidFilter` for one the parser refuses). */
export function listParams(c: Context): { startIndex: number; count: number; ast: Filter | null } {
  const startIndex = Math.max(1, Number(c.req.query("startIndex") ?? 1) || 1);
  const rawCount = c.req.query("count");
  const count = Math.min(MAX_COUNT, Math.max(0, rawCount === undefined ? 100 : Number(rawCount) || 0));
  const text = c.req.query("filter");
  if (text === undefined) return { startIndex, count, ast: null };
  try {
    return { startIndex, count, ast: parseFilter(text) };
  } catch (err) {
    throw new ScimError(400, `filter: ${(err as Error).message}`, "invalidFilter");
  }
}

/** The ListResponse of the matched resources' page. */
export function listResponse(matched: unknown[], startIndex: number, count: number) {
  return {
    schemas: [LIST_SCHEMA],
    totalResults: matched.length,
    startIndex,
    itemsPerPage: Math.min(count, Math.max(0, matched.length - startIndex + 1)),
    Resources: matched.slice(startIndex - 1, startIndex - 1 + count),
  };
}

/** A PATCH request's operations (RFC 7644 §3.5.2), with their `op` lower-cased: Entra sends
 * "Replace" and "Add", and the RFC's op names are case-insensitive. */
export async function patchOperations(c: Context): Promise<ScimPatchOperation[]> {
  const body = (await readBody(c)) as { schemas?: unknown; Operations?: unknown };
  if (
    !Array.isArray(body?.schemas) ||
    !body.schemas.includes(PATCH_SCHEMA) ||
    !Array.isArray(body.Operations)
  )
    throw new ScimError(400, `a PATCH body is a ${PATCH_SCHEMA} with Operations`, "invalidSyntax");
  return (body.Operations as Record<string, unknown>[]).map((o) => ({
    ...o,
    op: typeof o.op === "string" ? o.op.toLowerCase() : o.op,
  })) as ScimPatchOperation[];
}

/** `scim-patch` applied to a copy of a resource as SCIM JSON; its refusals as 400 SCIM errors. */
export function applyPatch<T>(resource: T, ops: ScimPatchOperation[]): T {
  try {
    // The library's resource type wants meta dates as Date; the JSON it patches has strings.
    const copy = structuredClone(resource) as unknown as Parameters<typeof scimPatch>[0];
    return scimPatch(copy, ops, { mutateDocument: false }) as unknown as T;
  } catch (err) {
    const scimType = (err as { scimType?: string }).scimType ?? "invalidValue";
    throw new ScimError(400, `PATCH: ${(err as Error).message}`, scimType);
  }
}
