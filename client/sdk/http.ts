/** @module The SDK's HTTP access to Parley: one place that adds the credential and turns error
 * envelopes (docs/protocol.md) into typed failures. */
import type { ErrorCode } from "../../protocol/index.ts";

export interface Connection {
  /** e.g. "https://chat.example.com"; "" for same-origin requests in a browser. */
  baseUrl: string;
  /** An Access JWT or a `pk_…` API token; omit in a browser signed in through Access (cookie). */
  token?: string;
  fetch?: typeof fetch;
  /**
   * Gets a fresh credential when the server says this one expired (a stream closed with `4402`, a
   * request answered 401): returns the new token, or nothing when the credential is a cookie that
   * the call renewed (behind Access, any same-origin request carries the current one; the dev
   * client signs in again). Throws when it cannot (the user must sign in): sessions then retry with
   * backoff. Sessions resume with `after` once it resolves, so nothing is lost. Without it, a
   * session retries with the credential it has.
   */
  reauthenticate?: () => Promise<string | undefined>;
}

const renewing = new WeakMap<Connection, Promise<void>>();

/** Renews the connection's credential (`Connection.reauthenticate`), once for all the sessions that
 * find it expired at the same time. */
export function reauthenticate(conn: Connection): Promise<void> {
  const running = renewing.get(conn);
  if (running) return running;
  const renew = async () => {
    try {
      const token = await conn.reauthenticate?.();
      if (typeof token === "string") conn.token = token;
    } finally {
      renewing.delete(conn);
    }
  };
  const promise = renew();
  renewing.set(conn, promise);
  return promise;
}

export class HttpError extends Error {
  readonly status: number;
  readonly code: ErrorCode | "network";
  readonly retryAfter: number | undefined;

  constructor(status: number, code: ErrorCode | "network", message: string, retryAfter?: number) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** Worth retrying later: the network, a rate limit, or the server's own trouble. */
  get transient(): boolean {
    return this.code === "network" || this.status === 429 || this.status >= 500;
  }
}

export function authHeaders(conn: Connection): Record<string, string> {
  if (!conn.token) return {};
  return conn.token.startsWith("pk_")
    ? { authorization: `Bearer ${conn.token}` }
    : { "cf-access-jwt-assertion": conn.token };
}

export async function request(
  conn: Connection,
  method: string,
  path: string,
  body?: unknown,
  signal?: AbortSignal,
): Promise<Response> {
  const headers: Record<string, string> = authHeaders(conn);
  if (body !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await (conn.fetch ?? fetch)(`${conn.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      // The API never redirects. A redirect is a gateway sending the caller to sign in (Access,
      // once its own session has ended): followed, it would fail as a cross-origin request and look
      // like a network error, so it is a 401 here, and sessions renew their sign-in.
      redirect: "manual",
    });
  } catch (err) {
    throw new HttpError(0, "network", String(err));
  }
  // Browsers hide a redirect not followed behind an "opaqueredirect" response with status 0.
  if ((res.type as string) === "opaqueredirect" || (res.status >= 300 && res.status < 400)) {
    throw new HttpError(401, "unauthorized", "redirected to sign in: the sign-in has ended");
  }
  if (!res.ok) {
    const text = await res.text().catch(() => "");
    let error: { code?: ErrorCode; message?: string; retryAfter?: number } = {};
    try {
      error = (JSON.parse(text) as { error?: typeof error }).error ?? {};
    } catch {}
    throw new HttpError(res.status, error.code ?? "internal", error.message ?? text, error.retryAfter);
  }
  return res;
}

export async function requestJson<T>(
  conn: Connection,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  return (await (await request(conn, method, path, body)).json()) as T;
}
