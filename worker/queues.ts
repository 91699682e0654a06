/**
 * @module The worker's queue handler: one consumer per queue of wrangler.toml, chosen by the
 * batch's queue name.
 */
import { consumeRoomEvents } from "./archive/consumer.ts";
import { consumeDeadLetters } from "./archive/dead-letters.ts";
import { consumeExports } from "./exports/job.ts";

export const QUEUES = {
  roomEvents: "parley-room-events",
  deadLetters: "parley-room-events-dlq",
  exports: "parley-exports",
} as const;

export async function consumeQueue(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  switch (batch.queue) {
    case QUEUES.roomEvents:
      return consumeRoomEvents(batch, env);
    case QUEUES.exports:
      return consumeExports(batch, env);
    case QUEUES.deadLetters:
      return consumeDeadLetters(batch, env);
    default:
      // A queue bound in wrangler.toml without a consumer here is a deployment mistake: keep the
      // messages (retry) rather than acknowledge them unread.
      console.error(JSON.stringify({ event: "queue_unknown", queue: batch.queue }));
      batch.retryAll();
  }
}
