/**
 * @module The workerd tests' one protocol client: a WebSocket through the worker that records every
 * frame and lets a test wait for a condition, failing (never hanging) after a deadline. The room's
 * `Client` (helpers.ts) and the presence tests' `Session` are this with their protocol's frames.
 * (bench/workerd/pipeline-harness.ts keeps its own small reader: it is copied into older
 * checkouts, which do not have this file.)
 */
import { exports } from "cloudflare:workers";
import { Waits } from "./waits.ts";

const ORIGIN = "http://parley.test";

/** A request through the worker's own fetch handler, as from outside. */
export function fetchWorker(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(`${ORIGIN}${path}`, init));
}

/** How a client presents its credential: API tokens (`pk_…`) as Bearer, Access tokens in their header. */
export function authHeaders(token: string): Record<string, string> {
  return token.startsWith("pk_")
    ? { authorization: `Bearer ${token}` }
    : { "cf-access-jwt-assertion": token };
}

export class FrameSocket<F> {
  readonly frames: F[] = [];
  closed: { code: number; reason: string } | null = null;
  readonly #ws: WebSocket;
  readonly #waits = new Waits();

  /** `parse` turns a text frame into the protocol's frame (null: not one, which fails the test);
   * `received` sees each frame with its text after it is recorded. */
  protected constructor(
    ws: WebSocket,
    parse: (text: string) => F | null,
    received?: (f: F, text: string) => void,
  ) {
    this.#ws = ws;
    ws.addEventListener("message", (e) => {
      const text = typeof e.data === "string" ? e.data : "";
      const frame = parse(text);
      if (frame === null)
        throw new Error(`server sent a frame that is not one: ${String(e.data).slice(0, 200)}`);
      this.frames.push(frame);
      received?.(frame, text);
      this.#waits.wake();
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this.#waits.wake();
    });
  }

  /** Upgrades `path` through the worker as `token`'s user and accepts the socket; throws with the
   * status and body when the worker refuses. */
  static async socket(path: string, token: string): Promise<WebSocket> {
    const res = await FrameSocket.request(path, token);
    if (!res.webSocket) throw new Error(`upgrade of ${path} refused: ${res.status} ${await res.text()}`);
    res.webSocket.accept();
    return res.webSocket;
  }

  /** The upgrade's response as the worker gives it (a test of a refusal reads its status). */
  static request(path: string, token: string): Promise<Response> {
    return fetchWorker(path, { headers: { upgrade: "websocket", ...authHeaders(token) } });
  }

  send(frame: unknown): void {
    this.#ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  close(code = 1000, reason = "bye"): void {
    this.#ws.close(code, reason);
  }

  /** Resolves when `check` holds after some frame; fails (never hangs) after `ms`, or when the
   * socket closes first. */
  async until(check: (s: this) => boolean, what: string, ms = 15_000): Promise<void> {
    await this.#waits.until(
      () => check(this),
      what,
      ms,
      () => this.closed?.code ?? null,
    );
  }

  /** The first frame after index `from` that `match` accepts, once there is one. */
  async find(match: (f: F) => boolean, what: string, from = 0, ms = 15_000): Promise<F> {
    await this.until((s) => s.frames.slice(from).some(match), what, ms);
    return this.frames.slice(from).find(match) as F;
  }
}
