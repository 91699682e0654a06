/**
 * @module What the pipeline bench's counts (bench/pipeline-counts.ts) cost at Cloudflare's published
 * prices: the usage per message of each measured phase, summed by billing line, and each line
 * priced. Every figure here is computed from the harness's ledger; only the prices (with the page
 * each comes from) and the retention assumptions are written down.
 */
import type { HarnessResult, PhaseResult, Tally } from "./pipeline-counts.ts";

export interface Price {
  /** What is billed, as the page names it. */
  item: string;
  /** US dollars per `unit`. */
  usd: number;
  unit: string;
  url: string;
}

const DO_PRICING = "https://developers.cloudflare.com/durable-objects/platform/pricing/";
const D1_PRICING = "https://developers.cloudflare.com/d1/platform/pricing/";
const QUEUES_PRICING = "https://developers.cloudflare.com/queues/platform/pricing/";
const R2_PRICING = "https://developers.cloudflare.com/r2/pricing/";
const WORKERS_PRICING = "https://developers.cloudflare.com/workers/platform/pricing/";

/** Workers Paid, standard storage, past the included amounts (checked December 2026). */
export const PRICES = {
  doRequest: {
    item: "Durable Objects requests (HTTP, RPC, alarm invocations; incoming WebSocket messages at 20:1)",
    usd: 0.15,
    unit: "million",
    url: DO_PRICING,
  },
  doDuration: { item: "Durable Objects duration", usd: 12.5, unit: "million GB-s", url: DO_PRICING },
  doRowRead: {
    item: "Durable Objects SQLite rows read (KV reads too)",
    usd: 0.001,
    unit: "million",
    url: DO_PRICING,
  },
  doRowWritten: {
    item: "Durable Objects SQLite rows written (KV writes and deletes, each setAlarm too)",
    usd: 1.0,
    unit: "million",
    url: DO_PRICING,
  },
  doStorage: { item: "Durable Objects SQL stored data", usd: 0.2, unit: "GB-month", url: DO_PRICING },
  d1RowRead: { item: "D1 rows read", usd: 0.001, unit: "million", url: D1_PRICING },
  d1RowWritten: {
    item: "D1 rows written (each index row counts)",
    usd: 1.0,
    unit: "million",
    url: D1_PRICING,
  },
  d1Storage: { item: "D1 storage", usd: 0.75, unit: "GB-month", url: D1_PRICING },
  queueOp: {
    item: "Queues operations (per 64 KB written, read or deleted: 3 a delivered message)",
    usd: 0.4,
    unit: "million",
    url: QUEUES_PRICING,
  },
  r2ClassA: {
    item: "R2 class A operations (PutObject, ListObjects, …)",
    usd: 4.5,
    unit: "million",
    url: R2_PRICING,
  },
  r2ClassB: {
    item: "R2 class B operations (GetObject, HeadObject, …)",
    usd: 0.36,
    unit: "million",
    url: R2_PRICING,
  },
  r2Storage: { item: "R2 storage (standard)", usd: 0.015, unit: "GB-month", url: R2_PRICING },
  workersRequest: { item: "Workers requests", usd: 0.3, unit: "million", url: WORKERS_PRICING },
  workersCpu: { item: "Workers CPU time", usd: 0.02, unit: "million CPU ms", url: WORKERS_PRICING },
} as const satisfies Record<string, Price>;

/** What one unit of a phase (a message, an edit, …) used, by billing line. */
export interface Usage {
  doRequests: number;
  /** Incoming WebSocket messages, RPCs and fetches, alarms: the parts of `doRequests` before the 20:1. */
  wsMessages: number;
  rpcs: number;
  alarms: number;
  doRowsWritten: number;
  doRowsRead: number;
  d1RowsWritten: number;
  d1RowsRead: number;
  queueMessages: number;
  queueOps: number;
  r2ClassA: number;
  r2ClassB: number;
  r2BytesPut: number;
  workersRequests: number;
  /** Milliseconds Durable Objects were busy (ledger.ts: a request's start to its settling, the union
   * per object), every class together. */
  doBusyMs: number;
}

/** The memory duration is billed at, whatever an object uses: 128 MB (the Durable Objects pricing page). */
export const DO_MEMORY_GB = 0.128;

const sum = (tallies: Tally[], pick: (t: Tally) => number, where: (t: Tally) => boolean = () => true) =>
  tallies.filter(where).reduce((n, t) => n + pick(t), 0);

/** Usage per unit of a phase (per message, per edit, …). */
export function usageOf(phase: PhaseResult, units = phase.units): Usage {
  const t = phase.tallies;
  const per = (n: number) => (units > 0 ? n / units : 0);
  const requests = (op: (o: string) => boolean) =>
    sum(
      t,
      (x) => x.calls,
      (x) => x.store === "DO requests" && op(x.op),
    );
  const ws = requests((o) => o === "webSocketMessage");
  const alarms = requests((o) => o === "alarm");
  const rpcs = requests((o) => o !== "webSocketMessage" && o !== "alarm" && !o.startsWith("webSocket"));
  const isDo = (x: Tally) => x.store === "DO SQL" || x.store === "DO KV";
  return {
    doRequests: per(rpcs + alarms + ws / 20),
    wsMessages: per(ws),
    rpcs: per(rpcs),
    alarms: per(alarms),
    doRowsWritten: per(sum(t, (x) => x.rowsWritten, isDo)),
    doRowsRead: per(sum(t, (x) => x.rowsRead, isDo)),
    d1RowsWritten: per(
      sum(
        t,
        (x) => x.rowsWritten,
        (x) => x.store === "D1",
      ),
    ),
    d1RowsRead: per(
      sum(
        t,
        (x) => x.rowsRead,
        (x) => x.store === "D1",
      ),
    ),
    queueMessages: per(
      sum(
        t,
        (x) => x.calls,
        (x) => x.store === "Queues" && x.op === "write",
      ),
    ),
    queueOps: per(
      sum(
        t,
        (x) => x.bytes,
        (x) => x.store === "Queues" && x.op !== "retry",
      ),
    ),
    r2ClassA: per(
      sum(
        t,
        (x) => x.calls,
        (x) => x.store === "R2" && x.table === "class A",
      ),
    ),
    r2ClassB: per(
      sum(
        t,
        (x) => x.calls,
        (x) => x.store === "R2" && x.table === "class B",
      ),
    ),
    r2BytesPut: per(
      sum(
        t,
        (x) => x.bytes,
        (x) => x.store === "R2",
      ),
    ),
    workersRequests: per(
      sum(
        t,
        (x) => x.calls,
        (x) => x.store === "Workers",
      ),
    ),
    doBusyMs: per(
      sum(
        t,
        (x) => x.ms,
        (x) => x.store === "DO duration",
      ),
    ),
  };
}

/** Bytes each store gains per message over the measured burst and paced phases (the rooms past
 * their windows: the steady state). */
export interface StorageUse {
  /** Room SQLite: the old design keeps a row per event for ever; the new one drops rows past its
   * command window, so past it a room no longer grows. */
  roomPerMessage: number;
  /** Room SQLite bytes per event it still holds a row for (the newest 500 with their JSON). */
  roomPerRowHeld: number;
  searchPerMessage: number;
  d1PerMessage: number;
  r2PerMessage: number;
}

export function storageOf(result: HarnessResult): StorageUse {
  const phases = result.phases.filter((p) => p.name === "burst" || p.name === "paced");
  const first = phases[0];
  const last = phases.at(-1);
  if (!first || !last)
    return { roomPerMessage: 0, roomPerRowHeld: 0, searchPerMessage: 0, d1PerMessage: 0, r2PerMessage: 0 };
  const messages = phases.reduce((n, p) => n + p.units, 0);
  const grow = (a: number, b: number) => Math.max(0, b - a) / Math.max(1, messages);
  const d1 = (s: typeof first.sizesBefore) => Object.values(s.d1).reduce((n, b) => n + b, 0);
  return {
    roomPerMessage: grow(first.sizesBefore.objects.Room ?? 0, last.sizesAfter.objects.Room ?? 0),
    roomPerRowHeld: (last.sizesAfter.objects.Room ?? 0) / Math.max(1, last.sizesAfter.rooms.rowsHeld),
    searchPerMessage: grow(
      first.sizesBefore.objects.SearchShard ?? 0,
      last.sizesAfter.objects.SearchShard ?? 0,
    ),
    d1PerMessage: grow(d1(first.sizesBefore), d1(last.sizesAfter)),
    r2PerMessage: grow(first.sizesBefore.r2.bytes, last.sizesAfter.r2.bytes),
  };
}

export interface CostLine {
  line: string;
  /** Usage per million messages, in the price's unit. */
  quantity: number;
  unit: string;
  usd: number;
}

/** The deferred cost per message of the D1 history's window (rows deleted 90 days on), or null. */
export function windowUsage(result: HarnessResult): { rowsWritten: number; rowsRead: number } | null {
  const phase = result.phases.find((p) => p.name === "window");
  if (!phase) return null;
  const deleted = sum(
    phase.tallies,
    (x) => x.rowsWritten,
    (x) => x.store === "D1" && x.op === "DELETE" && x.table === "archived_events",
  );
  if (deleted === 0) return null;
  // Per row deleted; every event (so every message) has one row.
  return {
    rowsWritten:
      sum(
        phase.tallies,
        (x) => x.rowsWritten,
        (x) => x.store === "D1",
      ) / deleted,
    rowsRead:
      sum(
        phase.tallies,
        (x) => x.rowsRead,
        (x) => x.store === "D1",
      ) / deleted,
  };
}

/** The write path of a million messages, line by line (usage per message × price per million). */
export function writeCost(u: Usage, deferred: { rowsWritten: number; rowsRead: number } | null): CostLine[] {
  const line = (name: string, perMessage: number, price: Price): CostLine => ({
    line: name,
    quantity: perMessage,
    unit: price.unit === "million" ? "M" : price.unit,
    usd: perMessage * price.usd,
  });
  const lines = [
    line("Durable Objects requests", u.doRequests, PRICES.doRequest),
    line(
      "Durable Objects duration, lower bound (busy time × 128 MB, GB-s)",
      (u.doBusyMs / 1000) * DO_MEMORY_GB,
      PRICES.doDuration,
    ),
    line("Durable Objects rows written", u.doRowsWritten, PRICES.doRowWritten),
    line("Durable Objects rows read", u.doRowsRead, PRICES.doRowRead),
    line("D1 rows written", u.d1RowsWritten, PRICES.d1RowWritten),
    line("D1 rows read", u.d1RowsRead, PRICES.d1RowRead),
  ];
  if (deferred) {
    lines.push(line("D1 rows written by the window, 90 days on", deferred.rowsWritten, PRICES.d1RowWritten));
    lines.push(line("D1 rows read by the window", deferred.rowsRead, PRICES.d1RowRead));
  }
  lines.push(
    line("Queues operations", u.queueOps, PRICES.queueOp),
    line("R2 class A", u.r2ClassA, PRICES.r2ClassA),
    line("R2 class B", u.r2ClassB, PRICES.r2ClassB),
    line("Workers requests (queue consumer invocations)", u.workersRequests, PRICES.workersRequest),
  );
  return lines;
}

/** How long each store keeps a message, in months, for the twelve-month figure. */
export interface Retention {
  room: number;
  search: number;
  d1: number;
  r2: number;
}

/** A month of holding a million messages, store by store (bytes per message × GB-month price). */
export function storageCost(s: StorageUse): CostLine[] {
  const gb = (bytes: number) => (bytes * 1e6) / 1e9;
  const line = (name: string, bytes: number, price: Price): CostLine => ({
    line: name,
    quantity: gb(bytes),
    unit: "GB",
    usd: gb(bytes) * price.usd,
  });
  return [
    line("room SQLite (Durable Objects)", s.roomPerMessage, PRICES.doStorage),
    line("search shards' SQLite (Durable Objects)", s.searchPerMessage, PRICES.doStorage),
    line("D1", s.d1PerMessage, PRICES.d1Storage),
    line("R2 segments", s.r2PerMessage, PRICES.r2Storage),
  ];
}

export const total = (lines: CostLine[]) => lines.reduce((n, l) => n + l.usd, 0);

/** Twelve months of a million messages: their write path once, each store's month × its retention. */
export function yearCost(write: CostLine[], storage: CostLine[], keep: Retention): number {
  const months = [keep.room, keep.search, keep.d1, keep.r2];
  return total(write) + storage.reduce((n, l, i) => n + l.usd * (months[i] ?? 0), 0);
}
