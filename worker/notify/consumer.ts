/**
 * @module The notify queue's consumers (docs/architecture.md, decision 10). Each job is one
 * notification to one device, decided by the user's presence shard (durable-objects/notify-store.ts).
 * Before sending, the room is asked whether the user is still a member: a job may wait in the queue
 * while they are removed. Then the notification is encrypted, signed and sent (web-push.ts), and
 * the push service's answer decides: delivered (ack), gone (the shard drops the subscription),
 * retry (429, 5xx, no answer: with backoff, `Retry-After` when given, until the queue's
 * `max_retries` send it to the dead-letter queue), refused (a 4xx that retrying will not fix: ack,
 * logged). The dead-letter consumer counts the failure on the subscription, where the user's
 * settings show it; a notification hours late is not worth replaying.
 */
import { limitsOf } from "../../config/limits.ts";
import { log } from "../../platform/log.ts";
import { TENANT_ID } from "../../protocol/index.ts";
import { type NotifyJob, presenceStub, roomStub } from "../stubs.ts";
import { type PushTarget, sendPush, vapidOf } from "./web-push.ts";

/** Backoff of a retried job: 2, 4, 8 … seconds, at most `notifyRetryMaxSeconds`. */
function backoff(env: Env, attempts: number): number {
  return Math.min(limitsOf(env).notifyRetryMaxSeconds, 2 ** Math.min(attempts, 12));
}

function isJob(body: unknown): body is NotifyJob {
  const j = body as Partial<NotifyJob> | null;
  return (
    typeof j === "object" &&
    j !== null &&
    typeof j.tenantId === "string" &&
    TENANT_ID.test(j.tenantId) &&
    typeof j.userId === "string" &&
    typeof j.shard === "number" &&
    typeof j.subscription?.endpoint === "string" &&
    typeof j.subscription.id === "string" &&
    typeof j.notice?.room === "string"
  );
}

/** Where to sign for and where to send: a dev run's local push service is plain http on
 * loopback (only accepted in dev mode, at subscribe time), which the library will not sign for. */
function targetOf(job: NotifyJob): { target: PushTarget; fetchUrl?: string } {
  const { endpoint, keys } = job.subscription;
  if (endpoint.startsWith("http://"))
    return { target: { endpoint: `https://${endpoint.slice(7)}`, keys }, fetchUrl: endpoint };
  return { target: { endpoint, keys } };
}

async function deliver(message: Message<unknown>, env: Env): Promise<void> {
  const job = message.body;
  if (!isJob(job)) {
    // Only presence shards produce these; a malformed one cannot become well-formed by retrying.
    log({ event: "push_sent", tenant: "", outcome: "malformed", status: null, ms: 0 });
    message.ack();
    return;
  }
  if (job.notice.room !== "" && !(await roomStub(env, job.tenantId, job.notice.room).isMember(job.userId))) {
    message.ack();
    return;
  }
  const started = Date.now();
  const { target, fetchUrl } = targetOf(job);
  const outcome = await sendPush(target, job.notice, vapidOf(env), fetchUrl ? { fetchUrl } : {});
  const status = outcome.kind === "delivered" ? 201 : outcome.status;
  log({ event: "push_sent", tenant: job.tenantId, outcome: outcome.kind, status, ms: Date.now() - started });
  switch (outcome.kind) {
    case "delivered":
    case "refused":
      message.ack();
      return;
    case "gone":
      await presenceStub(env, job.tenantId, job.shard).pushUnsubscribe(job.userId, job.subscription.id);
      message.ack();
      return;
    case "retry":
      message.retry({
        delaySeconds: Math.min(
          limitsOf(env).notifyRetryMaxSeconds,
          outcome.retryAfterSeconds ?? backoff(env, message.attempts),
        ),
      });
  }
}

/** The queue handler for parley-notify (and its EU twin). */
export async function consumeNotify(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  // Devices are independent: one slow push service must not hold back the others.
  await Promise.all(
    batch.messages.map(async (message) => {
      try {
        await deliver(message, env);
      } catch (err) {
        // The room or the shard did not answer: try again later, like a push service that failed.
        log({ event: "push_sent", tenant: "", outcome: `error: ${String(err)}`, status: null, ms: 0 });
        message.retry({ delaySeconds: backoff(env, message.attempts) });
      }
    }),
  );
}

/** The queue handler for parley-notify-dlq: the failure is counted on the subscription. */
export async function consumeNotifyDeadLetters(batch: MessageBatch<unknown>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    const job = message.body;
    if (isJob(job)) {
      try {
        await presenceStub(env, job.tenantId, job.shard).pushFailed(job.userId, job.subscription.id);
      } catch {
        message.retry({ delaySeconds: backoff(env, message.attempts) });
        continue;
      }
      log({
        event: "push_dead_lettered",
        tenant: job.tenantId,
        subscription: job.subscription.id,
        attempts: message.attempts,
      });
    }
    message.ack();
  }
}
