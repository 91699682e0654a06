/**
 * @module The chaos run's HTTP side: dev sign-in (and signing in again when a token stops being
 * accepted), requests as a user, and paging a room's whole log, which is what the run is checked
 * against at the end.
 */
import type { RoomEvent } from "../../protocol/index.ts";

export interface User {
  email: string;
  name: string;
  tenant: string;
  token: string;
  /** From GET /api/me; empty if the server did not say. */
  id: string;
}

export interface HttpResult {
  status: number;
  body: unknown;
}

export class Api {
  readonly base: string;
  /** Sign-ins after the first of each user: tokens the server stopped accepting. */
  relogins = 0;
  readonly #refreshing = new Map<User, Promise<void>>();

  constructor(base: string) {
    this.base = base;
  }

  async login(user: User): Promise<void> {
    const res = await this.raw("POST", "/auth/dev/login", null, {
      email: user.email,
      name: user.name,
      tenant: user.tenant,
    });
    const token = (res.body as { token?: unknown } | null)?.token;
    if (res.status !== 200 && res.status !== 201)
      throw new Error(`POST /auth/dev/login → ${res.status} ${show(res.body)}`);
    if (typeof token !== "string" || token === "")
      throw new Error(`POST /auth/dev/login gave no token: ${show(res.body)}`);
    user.token = token;
    if (user.id === "") {
      const me = await this.raw("GET", "/api/me", user);
      const id = (me.body as { user?: { id?: unknown } } | null)?.user?.id;
      if (me.status === 200 && typeof id === "string") user.id = id;
    }
  }

  /**
   * Signs `user` in again after a 401. Dev tokens outlive restarts (the key is in .dev.vars), so
   * this should not happen; if it does, every session of the user shares one sign-in, and reads
   * the new token from `user.token` on its next request or socket.
   */
  refresh(user: User): Promise<void> {
    let running = this.#refreshing.get(user);
    if (!running) {
      running = this.login(user)
        .then(() => {
          this.relogins++;
        })
        .finally(() => this.#refreshing.delete(user));
      this.#refreshing.set(user, running);
    }
    return running;
  }

  /** A request as `user`; a 401 (token no longer accepted) signs in again and retries once. */
  async request(user: User, method: string, path: string, body?: unknown): Promise<HttpResult> {
    const res = await this.raw(method, path, user, body);
    if (res.status !== 401) return res;
    await this.refresh(user);
    return this.raw(method, path, user, body);
  }

  async raw(method: string, path: string, user: User | null, body?: unknown): Promise<HttpResult> {
    const headers: Record<string, string> = {};
    if (user) headers["Cf-Access-Jwt-Assertion"] = user.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      // not JSON: keep the text for the error message
    }
    return { status: res.status, body: parsed };
  }

  /**
   * Every event of a room with seq > after, paged with GET /api/rooms/:id/messages?after=S&limit=200.
   * Reports any page that is not strictly ascending or does not continue where the previous one stopped.
   */
  async history(user: User, roomId: string, after = 0) {
    const events: RoomEvent[] = [];
    const problems: string[] = [];
    let cursor = after;
    for (let page = 0; page < 100_000; page++) {
      const res = await this.request(user, "GET", `/api/rooms/${roomId}/messages?after=${cursor}&limit=200`);
      if (res.status !== 200)
        throw new Error(`GET messages?after=${cursor} → ${res.status} ${show(res.body)}`);
      const body = res.body as { events?: unknown; hasMore?: unknown };
      if (!Array.isArray(body.events))
        throw new Error(`GET messages gave no events array: ${show(res.body)}`);
      const batch = body.events as RoomEvent[];
      for (const e of batch) {
        if (typeof e?.seq !== "number" || e.seq <= cursor) {
          problems.push(`page after=${cursor}: seq ${e?.seq} is not above the cursor`);
          continue;
        }
        cursor = e.seq;
        events.push(e);
      }
      if (body.hasMore !== true || batch.length === 0) break;
    }
    return { events, problems };
  }
}

export function show(v: unknown): string {
  return (typeof v === "string" ? v : (JSON.stringify(v) ?? "")).slice(0, 300);
}
