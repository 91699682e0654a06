/**
 * @module Forwarding room events to a tenant's outgoing webhooks, from the room-events consumer
 * (worker/archive/consumer.ts): one RPC per webhook and room pack, before the pack is confirmed to
 * its room, so an event the endpoint never received is sent again by the room. The tenant's
 * webhooks are read from the directory at most every `CACHE_MS` per isolate (a new webhook starts
 * receiving within that; one deleted here stops at once).
 */
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { log } from "../platform/log.ts";
import { directoryDb } from "../platform/residency.ts";
import { webhooks } from "./db/schema.ts";
import { type ArchiveMessage, webhookStub } from "./stubs.ts";

const CACHE_MS = 10_000;

interface Target {
  id: string;
  rooms: string[] | null;
}

const cache = new Map<string, { at: number; targets: Target[] }>();

/** Drops this isolate's copy of a tenant's webhooks (one was created or deleted here). */
export function forgetWebhooks(tenantId: string): void {
  cache.delete(tenantId);
}

async function targetsOf(env: Env, tenantId: string, now: number): Promise<Target[]> {
  const held = cache.get(tenantId);
  if (held && now - held.at < CACHE_MS) return held.targets;
  const rows = await drizzle(directoryDb(env, tenantId))
    .select({ id: webhooks.id, rooms: webhooks.rooms })
    .from(webhooks)
    .where(eq(webhooks.tenantId, tenantId))
    .all();
  const targets = rows.map((r) => ({ id: r.id, rooms: r.rooms ? (JSON.parse(r.rooms) as string[]) : null }));
  cache.set(tenantId, { at: now, targets });
  return targets;
}

/** Hands one room's events (a pack) to each of its tenant's webhooks that takes the room; throws
 * when one could not be reached, so the pack is retried. */
export async function forwardToWebhooks(env: Env, items: ArchiveMessage[]): Promise<void> {
  const [first] = items;
  if (!first) return;
  const { tenantId, roomId } = first;
  const targets = (await targetsOf(env, tenantId, Date.now())).filter(
    (t) => !t.rooms || t.rooms.includes(roomId),
  );
  if (targets.length === 0) return;
  const events = items.map((i) => ({ seq: i.event.seq, event: i.event }));
  const results = await Promise.allSettled(
    targets.map((t) => webhookStub(env, tenantId, t.id).accept(roomId, events)),
  );
  const failed = results.findIndex((r) => r.status === "rejected");
  if (failed >= 0) {
    const reason = (results[failed] as PromiseRejectedResult).reason;
    log({
      event: "webhook_forward_failed",
      webhook: targets[failed]?.id ?? "",
      room: roomId,
      error: String(reason),
    });
    throw reason;
  }
}
