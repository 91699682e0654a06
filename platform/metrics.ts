/**
 * @module Metrics: data points in the Workers Analytics Engine dataset bound as `METRICS`, one per
 * `Metric`, written by `record`. docs/observability.md has the schema and the queries over it.
 *
 * Layout: `blob1` is always the metric's name, so every metric shares one dataset and a query
 * filters on it; the other blobs and doubles are per metric (`pointOf`). The one index is the
 * tenant id (`-` when a point belongs to no single tenant): Analytics Engine samples per index
 * value, so a busy tenant is sampled down without drowning a quiet one. Queries therefore weight
 * by `_sample_interval`.
 */
import type { ClientFrame, ErrorCode, RoomEvent } from "../protocol/index.ts";
import { log } from "./log.ts";

export type Metric =
  /** An HTTP request or WebSocket upgrade answered by the Worker. */
  | { name: "http"; tenant: string | null; route: string; method: string; status: number; ms: number }
  /** A socket accepted by a Room or Presence object; `sockets`: the object's open sockets after it. */
  | { name: "ws_open"; tenant: string; object: "room" | "presence"; room: string; sockets: number }
  /** A socket gone from a Room or Presence object: closed by the client, failed, or closed by us. */
  | { name: "ws_close"; tenant: string; object: "room" | "presence"; room: string; code: number }
  /** Events appended to a room's log in one call (`count` > 1 only for several joins at once). */
  | { name: "append"; tenant: string; room: string; kind: RoomEvent["kind"]; count: number; seq: number }
  /** A client frame or command a room refused (`command`: the frame's type, `frame` if unparsable). */
  | {
      name: "command_error";
      tenant: string;
      room: string;
      code: ErrorCode;
      command: ClientFrame["type"] | "frame";
      transport: "ws" | "http";
    }
  /** One batch handled by the queue consumer (worker/queues.ts); `redelivered`: messages with
   * attempts > 1, i.e. retries of earlier batches arriving. */
  | {
      name: "queue_batch";
      queue: string;
      outcome: "ok" | "error";
      size: number;
      redelivered: number;
      maxAttempts: number;
      ms: number;
    };

/** Analytics Engine refuses an index longer than this (bytes); tenant ids are far shorter. */
const MAX_INDEX_BYTES = 96;
/** The index of a point that belongs to no single tenant. */
export const NO_TENANT = "-";

function statusClass(status: number): string {
  return `${Math.floor(status / 100)}xx`;
}

/** Where each field of a metric goes. Positions are the schema queries depend on: append new
 * blobs and doubles at the end, never reorder. */
function pointOf(m: Metric): { tenant: string | null; blobs: string[]; doubles: number[] } {
  switch (m.name) {
    case "http":
      return {
        tenant: m.tenant,
        blobs: [m.name, m.route, m.method, statusClass(m.status)],
        doubles: [m.ms, m.status],
      };
    case "ws_open":
      return { tenant: m.tenant, blobs: [m.name, m.object, m.room], doubles: [m.sockets] };
    case "ws_close":
      return { tenant: m.tenant, blobs: [m.name, m.object, m.room, String(m.code)], doubles: [] };
    case "append":
      return { tenant: m.tenant, blobs: [m.name, m.room, m.kind], doubles: [m.count, m.seq] };
    case "command_error":
      return { tenant: m.tenant, blobs: [m.name, m.room, m.code, m.command, m.transport], doubles: [] };
    case "queue_batch":
      return {
        tenant: null,
        blobs: [m.name, m.queue, m.outcome],
        doubles: [m.size, m.redelivered, m.ms, m.maxAttempts],
      };
  }
}

function indexFor(tenant: string | null): string {
  if (!tenant) return NO_TENANT;
  const bytes = new TextEncoder().encode(tenant);
  return bytes.byteLength <= MAX_INDEX_BYTES
    ? tenant
    : new TextDecoder().decode(bytes.slice(0, MAX_INDEX_BYTES));
}

let warned = false;

/**
 * Writes one data point. Never throws and never waits: a metric must not break or slow the work it
 * measures. Without a `METRICS` binding it does nothing; a failing binding is logged once per
 * isolate (not per point, which would flood the log with the same line).
 */
export function record(env: { METRICS?: AnalyticsEngineDataset }, metric: Metric): void {
  try {
    const dataset = env.METRICS;
    if (!dataset) return;
    const { tenant, blobs, doubles } = pointOf(metric);
    dataset.writeDataPoint({ indexes: [indexFor(tenant)], blobs, doubles });
  } catch (err) {
    if (warned) return;
    warned = true;
    try {
      log({ event: "metrics_write_failed", error: String(err) });
    } catch {
      // logging is best effort here too
    }
  }
}
