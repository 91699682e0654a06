/**
 * @module The worker's queue handler: one consumer per queue of wrangler.toml, chosen by the
 * batch's queue name. Each batch is measured (`queue_batch`: size, redeliveries, time, outcome).
 */
import { consumeRoomEvents } from "./archive/consumer.ts";
import { consumeDeadLetters } from "./archive/dead-letters.ts";
import { consumeExports } from "./exports/job.ts";
import { log } from "./observability/log.ts";
import { record } from "./observability/metrics.ts";

export const QUEUES = {
  roomEvents: "parley-room-events",
  deadLetters: "parley-room-events-dlq",
  exports: "parley-exports",
} as const;

function consumerOf(batch: MessageBatch<unknown>, env: Env): Promise<void> {
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
      log({ event: "queue_unknown", queue: batch.queue });
      batch.retryAll();
      return Promise.resolve();
  }
}

export async function consumeQueue(
  batch: MessageBatch<unknown>,
  env: Env,
  _ctx?: ExecutionContext,
): Promise<void> {
  const started = Date.now();
  let outcome: "ok" | "error" = "error";
  try {
    await consumerOf(batch, env);
    outcome = "ok";
  } finally {
    // Redeliveries rather than this batch's retry() calls: they are on the messages, so counting
    // them needs no hook into each consumer, and a steady share of them is what a failing consumer
    // looks like from outside.
    record(env, {
      name: "queue_batch",
      queue: batch.queue,
      outcome,
      size: batch.messages.length,
      redelivered: batch.messages.filter((m) => m.attempts > 1).length,
      maxAttempts: Math.max(0, ...batch.messages.map((m) => m.attempts)),
      ms: Date.now() - started,
    });
  }
}
