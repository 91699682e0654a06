/**
 * @module A room's log over HTTP (history and the command fallbacks of docs/protocol.md) and its
 * WebSocket stream. Every call is checked against the caller's tenant here and against the room's
 * membership inside the room object.
 */
import { type Context, Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { COMMAND_TYPES, COMMANDS, type CommandType } from "../../protocol/commands.ts";
import { isSeq, parseCommand } from "../../protocol/index.ts";
import { streamExpiry } from "../auth/identity.ts";
import { ApiError } from "../errors.ts";
import { intParam, readJsonObject } from "../http.ts";
import { checkSocketOrigin } from "../origins.ts";
import { actorOf, reachRoom } from "../rooms.ts";
import { type CommandResult, encodeIdentity, IDENTITY_HEADER, openStreamAt, roomStub } from "../stubs.ts";
import type { AppEnv } from "../types.ts";

/** Longest long poll: under the idle timeouts of common proxies (docs/protocol.md suggests 25 s). */
const MAX_POLL_SECONDS = 25;

async function stubFor(c: Context<AppEnv>) {
  const me = c.get("identity");
  const room = await reachRoom(c.env, me, c.req.param("roomId") ?? "");
  return roomStub(c.env, room.tenantId, room.id);
}

function seqParam(c: Context<AppEnv>): number {
  const raw = c.req.param("seq") ?? "";
  const seq = /^\d{1,15}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!isSeq(seq)) throw new ApiError("bad_request", "seq must be a positive integer");
  return seq;
}

/** A command's fields as its HTTP form carries them (protocol/commands.ts): the JSON body or the
 * query string, plus the target from the path. */
async function commandFields(c: Context<AppEnv>, type: CommandType): Promise<Record<string, unknown>> {
  const http = COMMANDS[type].http;
  const fields: Record<string, unknown> =
    http.fields === "body" ? await readJsonObject(c, limitsOf(c.env)[http.bodyLimit]) : { ...c.req.query() };
  if (http.path.includes(":seq")) fields.target = seqParam(c);
  // Without a clientId a repeat answers 409 instead of the original seq (parseCommand checks one
  // that is given).
  if (http.clientIdOptional && fields.clientId === undefined)
    fields.clientId = `http-${type}-${crypto.randomUUID()}`;
  return fields;
}

/** Parses a command from fields, runs it in the room, and answers 201 (created) or 200 (a retry). */
async function runCommand(c: Context<AppEnv>, type: CommandType, fields: Record<string, unknown>) {
  const parsed = parseCommand(type, fields, limitsOf(c.env));
  if (!parsed.ok) throw ApiError.from(parsed);
  const stub = await stubFor(c);
  const result = (await stub.command(actorOf(c.get("identity")), parsed.value)) as CommandResult;
  if (!result.ok) throw ApiError.from(result);
  return c.json({ seq: result.seq }, result.created ? 201 : 200);
}

export const messageRoutes = new Hono<AppEnv>();

// The sequenced commands, each at the HTTP form the registry gives it.
for (const type of COMMAND_TYPES) {
  const { method, path } = COMMANDS[type].http;
  messageRoutes.on(method, `/:roomId${path}`, async (c) => runCommand(c, type, await commandFields(c, type)));
}

messageRoutes
  .get("/:roomId/messages", async (c) => {
    const limits = limitsOf(c.env);
    const before = intParam(c, "before", { min: 1 });
    const after = intParam(c, "after");
    if (before !== undefined && after !== undefined)
      throw new ApiError("bad_request", "give before or after, not both");
    const limit = intParam(c, "limit", { min: 1, max: limits.historyMaxLimit }) ?? limits.historyDefaultLimit;
    const stub = await stubFor(c);
    const page = await stub.history(c.get("identity").userId, { before, after, limit });
    if (!page.ok) throw ApiError.from(page);
    return c.body(page.body, 200, { "content-type": "application/json; charset=utf-8" });
  })
  .put("/:roomId/read", async (c) => {
    const body = await readJsonObject(c, limitsOf(c.env).maxJsonBodyBytes);
    if (!isSeq(body.seq)) throw new ApiError("bad_request", "seq must be a positive integer");
    const stub = await stubFor(c);
    const result = await stub.markRead(c.get("identity").userId, body.seq);
    if (!result.ok) throw ApiError.from(result);
    return c.json({ readSeq: result.readSeq });
  })
  // Fallback transports (docs/protocol.md): the same stream as the socket, for clients whose WebSockets
  // cannot connect.
  .get("/:roomId/events", (c) => openStream(c))
  .get("/:roomId/poll", async (c) => {
    const after = intParam(c, "after") ?? 0;
    const timeout = intParam(c, "timeout", { max: MAX_POLL_SECONDS }) ?? MAX_POLL_SECONDS;
    // A poll waits no longer than its token lives: the next one brings a fresh token or is refused.
    const expiresAt = streamExpiry(c);
    const waitMs = Math.min(timeout * 1000, expiresAt === undefined ? Infinity : expiresAt - Date.now());
    const stub = await stubFor(c);
    const page = await stub.poll(c.get("identity").userId, after, waitMs);
    if (!page.ok) throw ApiError.from(page);
    return c.body(page.body, 200, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
    });
  })
  .get("/:roomId/ws", async (c) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new ApiError("bad_request", "this endpoint needs a WebSocket upgrade");
    }
    checkSocketOrigin(c);
    return openStream(c);
  });

/** A socket upgrade or an SSE request, handed to the room unchanged (so it can accept a socket with
 * hibernation) but for the identity header, (over)written here: who is asking, and when the token
 * that opened the stream expires (the room ends the stream then, `4402`). */
async function openStream(c: Context<AppEnv>): Promise<Response> {
  const me = c.get("identity");
  const expiresAt = streamExpiry(c);
  const stub = await stubFor(c);
  return openStreamAt(
    stub,
    c.req.raw,
    IDENTITY_HEADER,
    encodeIdentity({
      ...actorOf(me),
      tenantId: me.tenantId,
      ...(expiresAt === undefined ? {} : { expiresAt }),
    }),
  );
}
