/**
 * @module The worker's queue handler: one consumer per queue of wrangler.toml, chosen by the
 * batch's queue name (by its suffix, so every environment's queues are served).
 */
import { consumeRoomEvents } from "./archive/consumer.ts";
import { consumeDeadLetters } from "./archive/dead-letters.ts";
import { consumeExports } from "./exports/job.ts";

/** Queue names end with these; environments prefix them (`parley-staging-room-events`). The
 * dead-letter suffix is checked first, since it ends the room-events name too. */
export const QUEUE_SUFFIXES = {
  deadLetters: "-room-events-dlq",
  roomEvents: "-room-events",
  exports: "-exports",
} as const;

export type QueueKind = keyof typeof QUEUE_SUFFIXES;

/** Which consumer a queue name belongs to, or null for a queue Parley does not know. */
export function queueKind(name: string): QueueKind | null {
  for (const kind of Object.keys(QUEUE_SUFFIXES) as QueueKind[]) {
    if (name.endsWith(QUEUE_SUFFIXES[kind])) return kind;
  }
  return null;
}

export async function consumeQueue(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  switch (queueKind(batch.queue)) {
    case "roomEvents":
      return consumeRoomEvents(batch, env);
    case "exports":
      return consumeExports(batch, env);
    case "deadLetters":
      return consumeDeadLetters(batch, env);
    case null:
      // A queue bound in wrangler.toml without a consumer here is a deployment mistake: keep the
      // messages (retry) rather than acknowledge them unread.
      console.error(JSON.stringify({ event: "queue_unknown", queue: batch.queue }));
      batch.retryAll();
  }
}
