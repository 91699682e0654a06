/**
 * @module The worker's one way in to the Durable Objects: typed stubs by name, and the types and
 * constants of the objects' RPCs and requests that routes need. No other worker module imports
 * durable-objects/ (worker/index.ts only exports the classes to the runtime); biome.json enforces
 * it. Every object's name starts with its tenant's id, and each lives in its tenant's namespace
 * (platform/residency.ts).
 */
import { limitsOf } from "../config/limits.ts";
import { presenceStub, shardOf } from "../durable-objects/presence.ts";
import type { Room } from "../durable-objects/room.ts";
import { tenantNamespace } from "../platform/residency.ts";

export type { InboxEntry } from "../durable-objects/inbox-store.ts";
export type { NotifyJob } from "../durable-objects/notify-store.ts";
export { PRESENCE_IDENTITY_HEADER, presenceStub, shardOf } from "../durable-objects/presence.ts";
export { type QuotaKind, quotaStub } from "../durable-objects/quota.ts";
export type { ArchiveMessage } from "../durable-objects/room-archive.ts";
export { type AttachmentRecord, attachmentKey } from "../durable-objects/room-attachments.ts";
export type { CommandResult } from "../durable-objects/room-commands.ts";
export { encodeIdentity, IDENTITY_HEADER } from "../durable-objects/room-streams.ts";
export {
  partOf,
  type SearchQuery,
  type ShardHit,
  SNIPPET_CLOSE,
  SNIPPET_OPEN,
  searchStub,
} from "../durable-objects/search.ts";
export {
  type Delivery,
  type ForwardedEvent,
  type WebhookState,
  webhookStub,
  webhookTargetRefusal,
} from "../durable-objects/webhook.ts";

/** The namespace a tenant's rooms live in. */
export function roomNamespace(env: Env, tenantId: string): DurableObjectNamespace<Room> {
  return tenantNamespace(env, env.ROOM, tenantId);
}

/** A user's presence shard (their sessions, inbox, notification settings): its number and stub. */
export function userShard(env: Env, tenantId: string, userId: string) {
  const shard = shardOf(userId, limitsOf(env).presenceShards);
  return { shard, stub: presenceStub(env, tenantId, shard) };
}

export function roomStub(env: Env, tenantId: string, roomId: string) {
  const namespace = roomNamespace(env, tenantId);
  return namespace.get(namespace.idFromName(`${tenantId}:${roomId}`));
}

/** The request headers a stream's object reads: the upgrade and where an EventSource resumes. */
const STREAM_HEADERS = ["upgrade", "last-event-id"];

/**
 * Hands a stream's opening request (a WebSocket upgrade, or SSE) to its object with `identity` in
 * header `name`, and of the caller's headers only those the object reads: the object never sees the
 * caller's token or cookies, and nothing is copied that it would not use.
 */
export function openStreamAt(
  stub: { fetch(input: string, init: RequestInit): Promise<Response> },
  request: Request,
  name: string,
  identity: string,
): Promise<Response> {
  const headers = new Headers();
  for (const header of STREAM_HEADERS) {
    const value = request.headers.get(header);
    if (value !== null) headers.set(header, value);
  }
  headers.set(name, identity);
  return stub.fetch(request.url, { headers });
}
