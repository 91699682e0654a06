/**
 * @module The registry of sequenced commands: per command type, the event kind it appends and its
 * HTTP form (docs/protocol.md, "HTTP resources"). The worker registers its command routes from
 * it (worker/routes/messages.ts) and the SDK's HTTP fallback builds its requests from it
 * (client/sdk/room.ts), so a route exists once. The frame parser is `parseCommand` (index.ts) and
 * the room's rules are durable-objects/room-commands.ts; both switch on the same type, which the
 * compiler checks for completeness.
 */
import type { RoomEvent, SequencedCommand } from "./index.ts";

export type CommandType = SequencedCommand["type"];

export interface HttpForm {
  method: "POST" | "PATCH" | "DELETE";
  /** Under `/api/rooms/:roomId`; `:seq` is the command's `target`. */
  path: string;
  /** Where the command's fields other than `type` and `target` travel: a JSON body, or the query
   * string (a DELETE has no body). */
  fields: "body" | "query";
  /** The HTTP form may leave `clientId` out: the worker then makes one up, and a repeat answers
   * `conflict` instead of the original seq (docs/protocol.md). */
  clientIdOptional?: true;
  /** Which body limit applies: a frame's (a message's text) or a small JSON object's. */
  bodyLimit: "maxFrameBytes" | "maxJsonBodyBytes";
}

export interface CommandSpec<C extends SequencedCommand = SequencedCommand> {
  /** The kind of the event the room appends when the command succeeds. */
  kind: RoomEvent["kind"];
  http: HttpForm;
  /** A valid command's own fields (all but `type`, `clientId` and `target`): what tests that
   * exercise every command route send, so a new command needs no entry of its own there. */
  example: Omit<C, "type" | "clientId" | "target">;
}

export const COMMANDS: { readonly [T in CommandType]: CommandSpec<Extract<SequencedCommand, { type: T }>> } =
  {
    send: {
      kind: "message",
      http: { method: "POST", path: "/messages", fields: "body", bodyLimit: "maxFrameBytes" },
      example: { text: "hello" },
    },
    edit: {
      kind: "edit",
      http: { method: "PATCH", path: "/messages/:seq", fields: "body", bodyLimit: "maxFrameBytes" },
      example: { text: "hello, edited" },
    },
    delete: {
      kind: "delete",
      http: {
        method: "DELETE",
        path: "/messages/:seq",
        fields: "query",
        clientIdOptional: true,
        bodyLimit: "maxJsonBodyBytes",
      },
      example: {},
    },
    react: {
      kind: "reaction",
      http: {
        method: "POST",
        path: "/messages/:seq/reactions",
        fields: "body",
        bodyLimit: "maxJsonBodyBytes",
      },
      example: { emoji: "👍", on: true },
    },
    pin: {
      kind: "pin",
      http: { method: "POST", path: "/messages/:seq/pin", fields: "body", bodyLimit: "maxJsonBodyBytes" },
      example: { on: true },
    },
  };

export const COMMAND_TYPES = Object.keys(COMMANDS) as CommandType[];

/** The HTTP request that carries `cmd` to room `roomId`: what the SDK sends when its socket
 * cannot. */
export function commandRequest(
  roomId: string,
  cmd: SequencedCommand,
): { method: HttpForm["method"]; path: string; body?: Record<string, unknown> } {
  const { http } = COMMANDS[cmd.type];
  const { type: _type, ...rest } = cmd;
  const fields: Record<string, unknown> = { ...rest };
  let path = `/api/rooms/${encodeURIComponent(roomId)}${http.path}`;
  if ("target" in cmd) {
    path = path.replace(":seq", String(cmd.target));
    delete fields.target;
  }
  if (http.fields === "body") return { method: http.method, path, body: fields };
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) query.set(k, String(v));
  const qs = query.toString();
  return { method: http.method, path: qs ? `${path}?${qs}` : path };
}
