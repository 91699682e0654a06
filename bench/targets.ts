/**
 * @module What the bench talks to. Each target prepares a fresh room for a cell and says where
 * every simulated client connects. Parley goes through its public API (dev login, create room,
 * join, WebSocket with the token header); the ceilings only need an object (or, Socket.IO, a room) name.
 */
import { FLOW_PARAM } from "../protocol/index.ts";
import { TARGETS, type TargetName } from "./options.ts";
import { externalServer, type Server, startCeiling, startParley, startSocketio } from "./servers.ts";

export interface Endpoint {
  url: string;
  headers: Record<string, string>;
}

export interface PreparedRoom {
  receiver(i: number, after: number): Endpoint;
  sender(i: number, after: number): Endpoint;
}

export interface Target {
  name: TargetName;
  label: string;
  server: Server;
  /** Parley answers `ready` after its replay, Socket.IO its namespace CONNECT; a Durable Object
   * ceiling's socket is ready once open. */
  hasReady: boolean;
  prepare(roomName: string, receivers: number, senders: number): Promise<PreparedRoom>;
}

export const LABELS: Record<TargetName, string> = {
  parley: "Parley",
  durable: "BareDurable",
  bare: "BareBroadcast",
  socketio: "Socket.IO + SQLite",
};

/** Runs `fn` over `items` with at most `limit` calls in flight. */
export async function pool<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function ceilingTarget(name: "durable" | "bare", server: Server): Target {
  const wsBase = server.baseUrl.replace(/^http/, "ws");
  return {
    name,
    label: LABELS[name],
    server,
    hasReady: false,
    async prepare(roomName) {
      const url = `${wsBase}/${name}/${roomName}/ws`;
      return { receiver: () => ({ url, headers: {} }), sender: () => ({ url, headers: {} }) };
    },
  };
}

/**
 * The Socket.IO ceiling, spoken over a plain WebSocket in Engine.IO v4 framing (see cell.ts): the
 * same client code and per-frame cost as the other targets, instead of socket.io-client's.
 */
export function socketioTarget(server: Server): Target {
  const wsBase = server.baseUrl.replace(/^http/, "ws");
  return {
    name: "socketio",
    label: LABELS.socketio,
    server,
    hasReady: true,
    async prepare(roomName) {
      const url = `${wsBase}/socket.io/?EIO=4&transport=websocket&room=${encodeURIComponent(roomName)}`;
      return { receiver: () => ({ url, headers: {} }), sender: () => ({ url, headers: {} }) };
    },
  };
}

class ApiError extends Error {
  status: number;
  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

/** Signs `who` in to `tenant` through the dev sign-in (as `<who>@<tenant>.test`); the token. */
export async function devLogin(base: string, tenant: string, who: string): Promise<string> {
  const res = await api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, {
    email: `${who}@${tenant}.test`,
    name: who,
    tenant,
  });
  return res.token;
}

/** JSON over HTTP to a bench server, retrying 429s as a client would. */
export async function api<T>(
  base: string,
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers["Cf-Access-Jwt-Assertion"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(`${base}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    if (res.status === 429 && attempt < 5) {
      const retry = Number(/"retryAfter":\s*([\d.]+)/.exec(text)?.[1] ?? 1);
      await new Promise((r) => setTimeout(r, Math.min(5, retry) * 1000));
      continue;
    }
    if (!res.ok) throw new ApiError(`${method} ${path} → ${res.status} ${text.slice(0, 200)}`, res.status);
    return (text === "" ? {} : JSON.parse(text)) as T;
  }
}

export function parleyTarget(server: Server, runId: string): Target {
  const base = server.baseUrl;
  const wsBase = base.replace(/^http/, "ws");
  const receiverTokens: string[] = [];
  const senderTokens: string[] = [];

  const login = (email: string, name: string) =>
    api<{ token: string }>(base, "POST", "/auth/dev/login", undefined, { email, name, tenant: "bench" }).then(
      (r) => {
        if (typeof r.token !== "string") throw new Error(`POST /auth/dev/login answered no token`);
        return r.token;
      },
    );

  async function ensureUsers(receivers: number, senders: number): Promise<void> {
    const missingR = Array.from({ length: Math.max(0, receivers - receiverTokens.length) }, (_, k) => k);
    const firstR = receiverTokens.length;
    const tokensR = await pool(missingR, 8, (k) =>
      login(`r${firstR + k}@bench.test`, `Receiver ${firstR + k}`),
    );
    receiverTokens.push(...tokensR);
    const missingS = Array.from({ length: Math.max(0, senders - senderTokens.length) }, (_, k) => k);
    const firstS = senderTokens.length;
    const tokensS = await pool(missingS, 8, (k) =>
      login(`s${firstS + k}@bench.test`, `Sender ${firstS + k}`),
    );
    senderTokens.push(...tokensS);
  }

  const endpoint = (roomId: string, token: string, after: number): Endpoint => ({
    url: `${wsBase}/api/rooms/${encodeURIComponent(roomId)}/ws?after=${after}&${FLOW_PARAM}`,
    headers: { "Cf-Access-Jwt-Assertion": token },
  });

  return {
    name: "parley",
    label: LABELS.parley,
    server,
    hasReady: true,
    async prepare(roomName, receivers, senders) {
      await ensureUsers(receivers, senders);
      const creator = senderTokens[0] as string;
      const room = await api<{ id?: unknown }>(base, "POST", "/api/rooms", creator, {
        name: `${runId} ${roomName}`.slice(0, 80),
        kind: "channel",
      });
      if (typeof room.id !== "string")
        throw new Error(`POST /api/rooms answered no id: ${JSON.stringify(room)}`);
      const roomId = room.id;
      const joiners = [...receiverTokens.slice(0, receivers), ...senderTokens.slice(1, senders)];
      await pool(joiners, 8, (token) =>
        api(base, "POST", `/api/rooms/${encodeURIComponent(roomId)}/join`, token),
      );
      return {
        receiver: (i, after) => endpoint(roomId, receiverTokens[i] as string, after),
        sender: (i, after) => endpoint(roomId, senderTokens[i] as string, after),
      };
    },
  };
}

/**
 * Starts the servers that the targets `names` need, concurrently: Parley (unless `parleyUrl` names
 * a running one), and one ceiling server per ceiling target (so that each one's memory and CPU are
 * its own). Each server is handed to `track` as soon as it is up, so that a signal can stop it. A
 * server that does not start (after one retry) is reported in `failures` and its target left out;
 * the others still run.
 */
export async function startTargets(
  names: readonly TargetName[],
  o: {
    root: string;
    logDir: string;
    runId: string;
    parleyUrl?: string | undefined;
    /** PARLEY_* limits for the Parley server this starts (on top of the bench's default). */
    parleyEnv?: Record<string, string>;
    log: (m: string) => void;
  },
  track: (s: Server) => void,
  failures: string[],
): Promise<Target[]> {
  const wanted = TARGETS.filter((name) => names.includes(name));
  const retry = async (start: () => Promise<Server>) => {
    let server: Server;
    try {
      server = await start();
    } catch (err) {
      o.log(`${err instanceof Error ? err.message : String(err)}; retrying once`);
      server = await start();
    }
    track(server);
    return server;
  };
  const starting = wanted.map(async (name): Promise<Target> => {
    if (name === "socketio") return socketioTarget(await retry(() => startSocketio(o.root, o.logDir)));
    if (name !== "parley")
      return ceilingTarget(name, await retry(() => startCeiling(o.root, o.logDir, name)));
    if (!o.parleyUrl)
      return parleyTarget(
        await retry(() => startParley(o.root, o.logDir, { env: o.parleyEnv ?? {} })),
        o.runId,
      );
    return parleyTarget(externalServer(o.parleyUrl), o.runId);
  });
  const settled = await Promise.allSettled(starting);
  const targets: Target[] = [];
  settled.forEach((r, i) => {
    if (r.status === "fulfilled") targets.push(r.value);
    else
      failures.push(
        `the ${wanted[i]} server did not start: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`,
      );
  });
  return targets;
}
