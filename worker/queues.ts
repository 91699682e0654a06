/**
 * @module The worker's queue handler: one consumer per queue of wrangler.toml, chosen by the
 * batch's queue name (by its suffix, so every environment's queues are served). Each batch is
 * measured (`queue_batch`: size, redeliveries, time, outcome).
 */

import { log } from "../platform/log.ts";
import { record } from "../platform/metrics.ts";
import { consumeRoomEvents } from "./archive/consumer.ts";
import { consumeDeadLetters } from "./archive/dead-letters.ts";
import { consumeExports } from "./exports/job.ts";
import { consumeNotify, consumeNotifyDeadLetters } from "./notify/consumer.ts";

/** Queue names end with these; environments prefix them (`parley-staging-room-events`). The
 * dead-letter suffixes are checked first, since they end the other names too. */
export const QUEUE_SUFFIXES = {
  deadLetters: "-room-events-dlq",
  roomEvents: "-room-events",
  exports: "-exports",
  notifyDeadLetters: "-notify-dlq",
  notify: "-notify",
} as const;

export type QueueKind = keyof typeof QUEUE_SUFFIXES;

/** Which consumer a queue name belongs to, or null for a queue Parley does not know. */
export function queueKind(name: string): QueueKind | null {
  for (const kind of Object.keys(QUEUE_SUFFIXES) as QueueKind[]) {
    if (name.endsWith(QUEUE_SUFFIXES[kind])) return kind;
  }
  return null;
}

function consumerOf(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  switch (queueKind(batch.queue)) {
    case "roomEvents":
      return consumeRoomEvents(batch, env);
    case "exports":
      return consumeExports(batch, env);
    case "deadLetters":
      return consumeDeadLetters(batch, env);
    case "notify":
      return consumeNotify(batch, env);
    case "notifyDeadLetters":
      return consumeNotifyDeadLetters(batch, env);
    case null:
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
