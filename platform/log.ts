/**
 * @module Parley's log: every line is one JSON object of the `LogEvent` union, written by `log`.
 * Events carry ids (tenant, user, room, request, queue message), counts and error strings; never
 * message text, tokens, cookies, emails or query strings. Workers Logs indexes the JSON fields of
 * each line, so an event is found by its `event` name and ids. docs/observability.md lists them.
 */

/** One line per HTTP request and WebSocket upgrade the Worker answers (worker/observability/request.ts). */
export interface RequestLog {
  event: "request";
  /** Cloudflare's `cf-ray` when present, else a random id; echoed as the `x-request-id` header. */
  requestId: string;
  method: string;
  /** The matched route pattern (`/api/rooms/:roomId/messages`), never the raw path; `unmatched`
   * when no route matched (a 404). */
  route: string;
  status: number;
  /** Wall time until the response was ready (for an upgrade: until the 101). */
  ms: number;
  /** Null when the request was not authenticated (sign-in, health, refused tokens). */
  tenant: string | null;
  user: string | null;
  room?: string;
}

/** Something failed that a retry, a resend or an admin will repair; `error` is `String(err)`. */
type Failure<E extends string, F> = { event: E; error: string } & F;

export type LogEvent =
  | RequestLog
  | Failure<"unhandled_error", { requestId: string | null; route: string; method: string }>
  | { event: "queue_unknown"; queue: string }
  | { event: "archive_malformed"; id: string; attempts: number }
  | Failure<"archive_failed", { room: string; seq: number; attempts: number }>
  | Failure<"archive_confirm_failed", { room: string }>
  /** A tenant's history moves on: its next period goes to another shard (worker/history/placement.ts). */
  | { event: "history_tenant_moved"; tenant: string; from: string; to: string; bytes: number }
  /** Every history shard of the tenant's jurisdiction is past its fill limit: add one. */
  | { event: "history_shards_full"; tenant: string; shard: string; bytes: number }
  | Failure<"history_fill_check_failed", Record<never, never>>
  | Failure<"history_window_failed", { shard: string }>
  | { event: "dead_letter_recorded"; id: string; attempts: number }
  | Failure<"dead_letter_record_failed", { id: string; attempts: number }>
  | { event: "dead_letters_replayed"; tenant: string; count: number }
  | { event: "export_malformed"; id: string }
  | Failure<"export_failed", { export: string; attempts: number }>
  | Failure<"attachment_discard_failed", { room: string; id: string }>
  | Failure<"quota_release_failed", { room: string; id: string }>
  | Failure<"inbox_push_failed", { room: string; attempts: number }>
  | Failure<"activity_failed", { room: string }>
  | Failure<"presence_relay_failed", { shard: number }>
  /** Notifications a presence shard could not hand to the queue: lost (the messages are not). */
  | Failure<"notify_enqueue_failed", { shard: number; jobs: number }>
  /** A push service answered; `outcome` is what it meant (worker/notify/consumer.ts). */
  | { event: "push_sent"; tenant: string; outcome: string; status: number | null; ms: number }
  /** An outgoing webhook passed over a seq that never came (durable-objects/webhook.ts). */
  | { event: "webhook_gap_skipped"; webhook: string; room: string; seq: number }
  /** An outgoing webhook failed for too long and was disabled; its events are held. */
  | { event: "webhook_disabled"; webhook: string; tenant: string }
  /** The consumer could not hand a room's events to a webhook (the pack is retried). */
  | Failure<"webhook_forward_failed", { webhook: string; room: string }>
  /** A notification the queue gave up on (its push service kept failing). */
  | { event: "push_dead_lettered"; tenant: string; subscription: string; attempts: number }
  | Failure<"audit_write_failed", { room: string }>
  | Failure<"room_alarm_step_failed", { step: string }>
  /** A delete or reply older than the command window could not read its target from R2; the
   * command was refused with `internal` and changed nothing (durable-objects/room-cold.ts). */
  | Failure<"room_archive_read_failed", { room: string }>
  /** A room could not send its events to its search part; the alarm retries (durable-objects/room-search.ts). */
  | Failure<"search_ship_failed", { room: string; attempts: number }>
  | Failure<"metrics_write_failed", Record<never, never>>
  /** A room socket that stopped reading was closed with 4008 (durable-objects/room-flow.ts). */
  | {
      event: "slow_consumer_closed";
      room: string;
      user: string;
      sentSeq: number;
      confirmedSeq: number;
      unconfirmedBytes: number;
      paused: boolean;
    };

type Level = "info" | "warn" | "error";

/** Each event's console level (Workers Logs keeps it as the line's level). A new event fails to
 * compile until it is given one here. */
const LEVEL: { [E in LogEvent["event"]]: Level } = {
  request: "info",
  slow_consumer_closed: "warn",
  unhandled_error: "error",
  queue_unknown: "error",
  archive_malformed: "error",
  archive_failed: "error",
  archive_confirm_failed: "error",
  history_tenant_moved: "warn",
  history_shards_full: "error",
  history_fill_check_failed: "error",
  history_window_failed: "error",
  dead_letter_recorded: "warn",
  dead_letter_record_failed: "error",
  dead_letters_replayed: "warn",
  export_malformed: "error",
  export_failed: "error",
  attachment_discard_failed: "error",
  quota_release_failed: "warn",
  inbox_push_failed: "warn",
  search_ship_failed: "warn",
  activity_failed: "error",
  presence_relay_failed: "warn",
  notify_enqueue_failed: "error",
  push_sent: "info",
  push_dead_lettered: "warn",
  webhook_gap_skipped: "warn",
  webhook_disabled: "error",
  webhook_forward_failed: "warn",
  audit_write_failed: "error",
  room_alarm_step_failed: "error",
  room_archive_read_failed: "error",
  metrics_write_failed: "warn",
};

export function log(event: LogEvent): void {
  const line = JSON.stringify(event);
  switch (LEVEL[event.event]) {
    case "info":
      console.log(line);
      break;
    case "warn":
      console.warn(line);
      break;
    case "error":
      console.error(line);
  }
}
