/** Test seams for the SDK (client/sdk): a network the test can cut, and session helpers. */
import { exports } from "cloudflare:workers";
import {
  type Connection,
  HttpError,
  RoomSession,
  type RoomSessionOptions,
  type SocketLike,
  type SocketOpener,
  type TransportFactory,
  websocketTransport,
} from "../client/sdk/index.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { api, authHeaders, json, type User } from "./helpers.ts";

/** A network the test can cut: while down, new sockets and HTTP requests fail, open sockets close. */
export class Network {
  down = false;
  readonly #sockets = new Set<WebSocket>();

  conn(user: User): Connection {
    return {
      baseUrl: "http://parley.test",
      token: user.token,
      fetch: async (input, init) => {
        if (this.down) throw new TypeError("network is down");
        return exports.default.fetch(new Request(input as string, init));
      },
    };
  }

  /** Opens sockets as `user` through the worker; refused while the network is down. */
  opener(user: Pick<User, "token">): SocketOpener {
    return async (path) => {
      if (this.down) throw new Error("network is down");
      const res = await exports.default.fetch(
        new Request(`http://parley.test${path}`, {
          headers: { upgrade: "websocket", ...authHeaders(user.token) },
        }),
      );
      const ws = res.webSocket;
      // Like an opener that can see the refusal (Node's `ws`), unlike a browser: the status says
      // whether retrying can help (403/404: the user has no access to the room).
      if (!ws) throw new HttpError(res.status, "forbidden", `upgrade refused: ${res.status}`);
      ws.accept();
      this.#sockets.add(ws);
      ws.addEventListener("close", () => this.#sockets.delete(ws));
      return ws as unknown as SocketLike;
    };
  }

  socket(user: Pick<User, "token">): TransportFactory {
    return websocketTransport(this.opener(user));
  }

  cut(): void {
    this.down = true;
    for (const ws of this.#sockets) ws.close(1001, "network cut");
    this.#sockets.clear();
  }
}

export const failing: TransportFactory = async () => {
  throw new Error("blocked by a proxy");
};

export function session(
  user: User,
  roomId: string,
  transports: TransportFactory[],
  extra: Partial<RoomSessionOptions> = {},
) {
  const events: RoomEvent[] = [];
  const s = new RoomSession({
    conn: extra.conn ?? new Network().conn(user),
    roomId,
    transports,
    backoff: { baseMs: 5, capMs: 40 },
    random: () => 0.5,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { s, events };
}

/** Waits for a condition the SDK reaches asynchronously; fails after `ms` instead of hanging. */
export async function until(check: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function history(user: User, roomId: string): Promise<RoomEvent[]> {
  const out: RoomEvent[] = [];
  for (;;) {
    const page = await json<{ events: RoomEvent[]; hasMore: boolean }>(
      api(user, "GET", `/api/rooms/${roomId}/messages?after=${out.at(-1)?.seq ?? 0}&limit=200`),
    );
    out.push(...page.events);
    if (!page.hasMore) return out;
  }
}

export const texts = (events: RoomEvent[]) => events.flatMap((e) => (e.kind === "message" ? [e.text] : []));
