/**
 * @module Bench ceilings: two SQLite-backed Durable Objects that do the least a chat room can do.
 *
 * - `BareBroadcast` accepts hibernatable WebSockets and rebroadcasts every text frame, unchanged,
 *   to every socket of the object (the sender included: seeing its own frame is its ack).
 * - `BareDurable` first inserts the frame into its SQLite log under `seq` = previous + 1, then
 *   broadcasts `{"type":"event","seq":N,"frame":<the frame>}` to every socket. The runtime's output
 *   gate holds those sends until the write is durable, exactly as it holds Parley's ack.
 *
 * Routes: `GET /bare/:name/ws`, `GET /durable/:name/ws` (to the object named `:name`), `GET /healthz`,
 * and `GET /bare/:name/info`, `GET /durable/:name/info`: which instance of the object answers (a
 * fresh id per construction: a new id after an idle spell means the runtime evicted the object, and
 * its sockets survived if `sockets` still counts them) and how many sockets it holds. The idle bench
 * (bench/idle.ts) uses it to see hibernation happen; it wakes the object like any request.
 *
 * The file declares the few runtime types it uses instead of importing the Workers types, so that it
 * type-checks under the bench's Node configuration (tsconfig.node.json) as well.
 */

interface CfWebSocket {
  send(message: string): void;
  close(code?: number, reason?: string): void;
}

interface SqlCursor {
  toArray(): Record<string, unknown>[];
}

interface CtxLike {
  acceptWebSocket(ws: CfWebSocket): void;
  getWebSockets(): CfWebSocket[];
  storage: { sql: { exec(query: string, ...bindings: unknown[]): SqlCursor } };
}

interface StubLike {
  fetch(request: Request): Promise<Response>;
}

interface NamespaceLike {
  getByName(name: string): StubLike;
}

interface Env {
  BARE: NamespaceLike;
  DURABLE: NamespaceLike;
}

declare const WebSocketPair: new () => { 0: CfWebSocket; 1: CfWebSocket };

/** What one construction of an object reports on `/info`. */
class Incarnation {
  readonly instance = crypto.randomUUID();
  /** Constructed at (the runtime's clock, which only advances between I/O events). */
  readonly born = Date.now();

  info(ctx: CtxLike): Response {
    return Response.json({ instance: this.instance, born: this.born, sockets: ctx.getWebSockets().length });
  }
}

function isInfo(request: Request): boolean {
  return new URL(request.url).pathname.endsWith("/info");
}

function accept(ctx: CtxLike, request: Request): Response {
  if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
    return new Response("expected a WebSocket upgrade\n", { status: 426 });
  }
  const pair = new WebSocketPair();
  ctx.acceptWebSocket(pair[1]);
  return new Response(null, { status: 101, webSocket: pair[0] } as ResponseInit);
}

function broadcast(ctx: CtxLike, frame: string): void {
  for (const ws of ctx.getWebSockets()) {
    try {
      ws.send(frame);
    } catch {
      // The socket is closing; the client notices on its own.
    }
  }
}

function closeQuietly(ws: CfWebSocket, code: number, reason: string): void {
  try {
    ws.close(code === 1005 || code === 1006 ? 1000 : code, reason);
  } catch {
    // Already closed.
  }
}

export class BareBroadcast {
  ctx: CtxLike;
  incarnation = new Incarnation();

  constructor(ctx: CtxLike, _env: Env) {
    this.ctx = ctx;
  }

  fetch(request: Request): Response {
    return isInfo(request) ? this.incarnation.info(this.ctx) : accept(this.ctx, request);
  }

  webSocketMessage(_ws: CfWebSocket, message: string | ArrayBuffer): void {
    if (typeof message === "string") broadcast(this.ctx, message);
  }

  webSocketClose(ws: CfWebSocket, code: number, reason: string): void {
    closeQuietly(ws, code, reason);
  }
}

export class BareDurable {
  ctx: CtxLike;
  seq: number;
  incarnation = new Incarnation();

  constructor(ctx: CtxLike, _env: Env) {
    this.ctx = ctx;
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL)");
    this.seq = Number(sql.exec("SELECT COALESCE(MAX(seq), 0) AS seq FROM log").toArray()[0]?.seq ?? 0);
  }

  fetch(request: Request): Response {
    return isInfo(request) ? this.incarnation.info(this.ctx) : accept(this.ctx, request);
  }

  webSocketMessage(_ws: CfWebSocket, message: string | ArrayBuffer): void {
    if (typeof message !== "string") return;
    const seq = this.seq + 1;
    this.ctx.storage.sql.exec("INSERT INTO log (seq, frame) VALUES (?, ?)", seq, message);
    this.seq = seq;
    broadcast(this.ctx, `{"type":"event","seq":${seq},"frame":${message}}`);
  }

  webSocketClose(ws: CfWebSocket, code: number, reason: string): void {
    closeQuietly(ws, code, reason);
  }
}

const ROUTE = /^\/(bare|durable)\/([A-Za-z0-9_-]{1,128})\/(ws|info)$/;

export default {
  fetch(request: Request, env: Env): Response | Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return Response.json({ ok: true });
    const m = ROUTE.exec(url.pathname);
    if (!m || request.method !== "GET") return new Response("not found\n", { status: 404 });
    const namespace = m[1] === "bare" ? env.BARE : env.DURABLE;
    return namespace.getByName(m[2] as string).fetch(request);
  },
};
