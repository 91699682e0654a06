/**
 * @module A push service stand-in for tests and the bench, in Node: `web-push-testing` on a free loopback port. It
 * subscribes fake browsers, checks each request's VAPID JWT against the key the browser subscribed
 * with, decrypts the payload per RFC 8291, and keeps what it received per subscription. Expiring a
 * subscription makes it answer 410 from then on.
 */
import { createServer, type Server } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";

// The package's `main` names a file it does not ship: its server and model are required directly.
const require = createRequire(import.meta.url);
/** web-push-testing's server, started here on loopback (its own `startServer` listens on every
 * interface and exits the process on an error). */
interface MockPushServer {
  _app: {
    listen(port: number, host: string, ready: () => void): Server;
    use(fn: (req: { method: string; url: string }, res: unknown, next: () => void) => void): void;
  };
  setRequestHandlers(): void;
}
const TestingServer = require("web-push-testing/src/server.js") as new (
  model: unknown,
  port: number,
) => MockPushServer;
const { PushApiModel } = require("web-push-testing/src/PushApiModel.js") as {
  PushApiModel: new () => unknown;
};

/** A fake browser's subscription. */
export interface MockSubscription {
  /** The endpoint as the stand-in names it (`http://localhost:…`). */
  endpoint: string;
  /** The same on 127.0.0.1, where it listens (it names itself localhost). */
  url: string;
  keys: { p256dh: string; auth: string };
  clientHash: string;
}

export interface MockPushService {
  base: string;
  subscribe(applicationServerKey: string): Promise<MockSubscription>;
  /** The decrypted payloads this subscription received, parsed as JSON, oldest first. */
  received(clientHash: string): Promise<unknown[]>;
  /** From now on the subscription answers 410 Gone. */
  expire(clientHash: string): Promise<void>;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

/** `onArrival`: told of each notification as it arrives, before the stand-in decrypts it (the
 * bench times deliveries by it). */
export async function startMockPushService(
  options: { onArrival?: (clientHash: string, at: number) => void } = {},
): Promise<MockPushService> {
  const port = await freePort();
  const mock = new TestingServer(new PushApiModel(), port);
  const { onArrival } = options;
  if (onArrival)
    mock._app.use((req, _res, next) => {
      const hash = /^\/notify\/([^/?]+)/.exec(req.url)?.[1];
      if (req.method === "POST" && hash) onArrival(hash, performance.now());
      next();
    });
  mock.setRequestHandlers();
  const server = await new Promise<Server>((resolve) => {
    const s = mock._app.listen(port, "127.0.0.1", () => resolve(s));
  });
  const base = `http://127.0.0.1:${port}`;
  const post = async <T>(path: string, body: unknown): Promise<T> => {
    const res = await fetch(`${base}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    // Some routes answer a bare `OK`.
    const text = await res.text();
    return (text.startsWith("{") ? JSON.parse(text) : text) as T;
  };
  return {
    base,
    async subscribe(applicationServerKey) {
      const { data } = await post<{
        data: { endpoint: string; keys: { p256dh: string; auth: string }; clientHash: string };
      }>("/subscribe", { applicationServerKey, userVisibleOnly: "true" });
      return {
        endpoint: data.endpoint,
        url: data.endpoint.replace("//localhost:", "//127.0.0.1:"),
        keys: data.keys,
        clientHash: data.clientHash,
      };
    },
    async received(clientHash) {
      const { data } = await post<{ data: { messages: string[] } }>("/get-notifications", { clientHash });
      return data.messages.map((m) => JSON.parse(m));
    },
    async expire(clientHash) {
      await post(`/expire-subscription/${clientHash}`, {});
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
