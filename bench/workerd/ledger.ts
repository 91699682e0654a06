/**
 * @module The pipeline harness's ledger (bench/workerd/pipeline-harness.ts): what every store was
 * asked to do, counted by wrapping, in this isolate (the worker and every Durable Object run in it
 * under the vitest plugin), the prototypes of the runtime's own APIs:
 *
 * - `SqlStorage.exec`: each cursor's `rowsRead`/`rowsWritten`, by statement target (table, and the
 *   key of a `meta` key-value row); the synchronous and asynchronous KV methods and `setAlarm`,
 *   which are billed as rows (a delete only where the key was there);
 * - D1's session `_send`, under every query method: each statement's `meta.rows_read`/`rows_written`;
 * - the queue producer's `send`/`sendBatch`, the worker's `queue` handler (deliveries) and its
 *   messages' `ack`/`retry`, in Queues' billed operations (one per 64 KB);
 * - R2's operations by class, and the bytes each put stored;
 * - every method of every Durable Object class the worker exports: a call from outside the object
 *   (the worker, another object, the runtime delivering an alarm or a WebSocket message) is one
 *   billed request.
 *
 * An AsyncLocalStorage carries which object and which entry point is running, so each count is
 * attributed to a class and the step that made it (a context does not cross an RPC, so the callee
 * knows it was called, not by whom). The harness's own look-ups run as `HARNESS`, which nothing
 * counts. Nothing here knows which design it counts.
 */
import { runInDurableObject } from "cloudflare:test";
import { DurableObject } from "cloudflare:workers";
import { AsyncLocalStorage } from "node:async_hooks";
import type { Tally } from "./plan.ts";

export type { Tally } from "./plan.ts";

/** Who is running: a Durable Object class (and the instance) with the entry point that started it,
 * the worker's queue or scheduled handler, or the harness itself (never counted). */
interface Running {
  cls: string;
  via: string;
  self: object | null;
}
export const HARNESS: Running = { cls: "harness", via: "harness", self: null };
export const als = new AsyncLocalStorage<Running>();
const running = (): Running => als.getStore() ?? { cls: "Worker", via: "fetch", self: null };
const counting = (): boolean => als.getStore() !== HARNESS;

const ledger = new Map<string, Tally>();

function tally(
  t: Omit<Tally, "calls" | "rowsRead" | "rowsWritten" | "bytes" | "ms">,
  add: { calls?: number; rowsRead?: number; rowsWritten?: number; bytes?: number; ms?: number },
): void {
  const key = [t.store, t.owner, t.table, t.op, t.via].join("\t");
  let e = ledger.get(key);
  if (!e) {
    e = { ...t, calls: 0, rowsRead: 0, rowsWritten: 0, bytes: 0, ms: 0 };
    ledger.set(key, e);
  }
  e.calls += add.calls ?? 0;
  e.rowsRead += add.rowsRead ?? 0;
  e.rowsWritten += add.rowsWritten ?? 0;
  e.bytes += add.bytes ?? 0;
  e.ms += add.ms ?? 0;
}

/** The operation and table a statement targets (the first one of a multi-statement string). */
function statementTarget(sql: string, params: readonly unknown[] = []): { op: string; table: string } {
  const s = sql
    .replace(/--[^\n]*/g, " ")
    .replace(/\s+/g, " ")
    .trim();
  const write =
    /^(?:WITH .*?\) )?(INSERT(?: OR \w+)? INTO|REPLACE INTO|UPDATE(?: OR \w+)?|DELETE FROM) ["`[]?(\w+)/i.exec(
      s,
    );
  if (write) {
    const verb = (write[1] as string).split(" ")[0]?.toUpperCase() ?? "?";
    const table = write[2] as string;
    // Key-value tables (the objects' `meta`: counters, watermarks): which key, when it is bound or
    // written literally.
    const key = /VALUES \('(\w+)'/i.exec(s)?.[1] ?? (typeof params[0] === "string" ? params[0] : null);
    const named = table === "meta" && verb === "INSERT" && key !== null ? `meta[${key}]` : table;
    return { op: verb === "REPLACE" ? "INSERT" : verb, table: named };
  }
  if (/^(?:WITH|SELECT)\b/i.test(s)) {
    const from = /\bFROM ["`[]?(\w+)/i.exec(s);
    return { op: "SELECT", table: from?.[1] ?? "-" };
  }
  const ddl = /^(CREATE|DROP|ALTER|PRAGMA|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b/i.exec(s);
  return { op: ddl ? "DDL" : (s.split(" ")[0]?.toUpperCase() ?? "?"), table: ddl ? "schema" : "-" };
}

let bindings: Record<string, unknown> = {};
let sqlPatched = false;
let messageProtoPatched = false;
/** The D1 bindings by their fetcher (sessions keep the fetcher, not the binding). */
export const d1Names = new Map<unknown, string>();
const namespaceNames = new Map<unknown, string>();
/** Every object name the worker addressed, by namespace binding (SEARCH: the search shards). */
export const objectNames = new Map<string, Set<string>>();

const protoName = (v: unknown): string | undefined =>
  v && typeof v === "object"
    ? (Object.getPrototypeOf(v)?.constructor?.name as string | undefined)
    : undefined;

/**
 * Installs every wrapper but the storage ones (see `patchStorage`): on the worker module `main`'s
 * Durable Object classes and handlers, and on the prototypes of `env`'s bindings.
 */
export function instrument(main: Record<string, unknown>, env: Record<string, unknown>): void {
  bindings = env;
  for (const [name, value] of Object.entries(env)) {
    if (protoName(value) === "D1Database") d1Names.set((value as { fetcher: unknown }).fetcher, name);
    if (protoName(value) === "DurableObjectNamespace") namespaceNames.set(value, name);
  }
  patchClasses(main);
  patchD1();
  patchQueues(main.default as Record<string, ((...a: unknown[]) => Promise<unknown>) | undefined>);
  patchR2();
  patchNamespaces();
}

// ---- Durable Object classes: entry points and requests -----------------------------------------

function patchClasses(main: Record<string, unknown>): void {
  const classes = new Map<string, { prototype: object }>();
  for (const [name, value] of Object.entries(main)) {
    if (typeof value === "function" && value.prototype instanceof DurableObject)
      classes.set(name, value as { prototype: object });
  }
  for (const [cls, klass] of classes) {
    const proto = klass.prototype as Record<string, unknown>;
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === "constructor") continue;
      const d = Object.getOwnPropertyDescriptor(proto, key);
      if (!d || typeof d.value !== "function") continue;
      const original = d.value as (...args: unknown[]) => unknown;
      proto[key] = function (this: object, ...args: unknown[]): unknown {
        const outer = als.getStore();
        if (outer === HARNESS) return original.apply(this, args);
        // A call from the object itself is a plain method call; from anywhere else (the worker, another
        // object, the runtime delivering an alarm or a WebSocket message) it is a billed request.
        if (outer?.self === this) return original.apply(this, args);
        // (Where it came from is not known here: a context does not cross an RPC.)
        tally({ store: "DO requests", owner: cls, table: "-", op: key, via: "-" }, { calls: 1 });
        const end = busy(this, cls);
        try {
          const result = als.run({ cls, via: key, self: this }, () => original.apply(this, args));
          if (result instanceof Promise) result.then(end, end);
          else end();
          return result;
        } catch (err) {
          end();
          throw err;
        }
      };
    }
  }
}

/**
 * Busy time, for the duration estimate: from a request's start until its result settles, the
 * union per object (overlapping requests to one object are billed once). A lower bound of what is
 * billed: workerd's clock moves only across I/O, so JS that runs without awaiting shows no time,
 * and an object that cannot hibernate between requests (a pending timer) is billed while idle too.
 */
const active = new WeakMap<object, { n: number; since: number }>();
function busy(self: object, cls: string): () => void {
  let a = active.get(self);
  if (!a) {
    a = { n: 0, since: 0 };
    active.set(self, a);
  }
  if (a.n++ === 0) a.since = performance.now();
  const entry = a;
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--entry.n === 0)
      tally(
        { store: "DO duration", owner: cls, table: "-", op: "busy", via: "-" },
        { calls: 1, ms: performance.now() - entry.since },
      );
  };
}

// ---- Durable Object storage: SQL, KV, alarms ---------------------------------------------------

type Cursor = { rowsRead: number; rowsWritten: number };

/** Patches the storage prototypes, found on a live object's state (they are not globals). */
export function patchStorage(state: DurableObjectState): void {
  if (sqlPatched) return;
  sqlPatched = true;
  const sqlProto = Object.getPrototypeOf(state.storage.sql) as { exec: (...a: unknown[]) => Cursor };
  const exec = sqlProto.exec;
  sqlProto.exec = function (this: unknown, query: unknown, ...params: unknown[]): Cursor {
    const cursor = exec.call(this, query, ...params);
    if (!counting()) return cursor;
    const who = running();
    const { op, table } = statementTarget(String(query), params);
    // Writes are done when exec returns; reads once the caller has consumed the cursor, which
    // every caller here does before it yields.
    queueMicrotask(() =>
      tally(
        { store: "DO SQL", owner: who.cls, table, op, via: who.via },
        { calls: 1, rowsRead: cursor.rowsRead, rowsWritten: cursor.rowsWritten },
      ),
    );
    return cursor;
  };

  const kvProto = Object.getPrototypeOf(state.storage.kv) as Record<string, (...a: unknown[]) => unknown>;
  const kvGet = kvProto.get as (key: string) => unknown;
  for (const method of ["get", "put", "delete", "list"] as const) {
    const original = kvProto[method] as (...a: unknown[]) => unknown;
    kvProto[method] = function (this: unknown, ...args: unknown[]): unknown {
      if (counting()) {
        const who = running();
        const key = typeof args[0] === "string" ? args[0] : "(list)";
        // A delete writes a row only where there was one (billed as a row written).
        const present = method === "delete" ? kvGet.call(this, key) !== undefined : true;
        tally(
          { store: "DO KV", owner: who.cls, table: key, op: `kv.${method}`, via: who.via },
          {
            calls: 1,
            rowsRead: method === "get" || method === "list" ? 1 : 0,
            rowsWritten: method === "put" || (method === "delete" && present) ? 1 : 0,
          },
        );
      }
      return original.apply(this, args);
    };
  }

  const storageProto = Object.getPrototypeOf(state.storage) as Record<string, (...a: unknown[]) => unknown>;
  for (const method of ["get", "put", "delete", "list", "setAlarm", "deleteAlarm"] as const) {
    const original = storageProto[method] as (...a: unknown[]) => unknown;
    storageProto[method] = function (this: unknown, ...args: unknown[]): unknown {
      if (counting()) {
        const who = running();
        const written = method === "put" || method === "delete" || method === "setAlarm";
        const read = method === "get" || method === "list";
        tally(
          {
            store: "DO KV",
            owner: who.cls,
            table: method.endsWith("Alarm") ? "alarm" : String(args[0]),
            op: `storage.${method}`,
            via: who.via,
          },
          { calls: 1, rowsRead: read ? 1 : 0, rowsWritten: written ? 1 : 0 },
        );
      }
      return original.apply(this, args);
    };
  }
}

// ---- D1: every statement's meta, by binding -----------------------------------------------------

interface D1Answer {
  meta?: { rows_read?: number; rows_written?: number; size_after?: number };
}
function patchD1(): void {
  const anyDb = [...d1Names.keys()][0];
  const first = Object.entries(bindings).find(
    ([, v]) => (v as { fetcher?: unknown })?.fetcher === anyDb,
  )?.[1];
  const session = (first as D1Database).withSession();
  const sessionProto = Object.getPrototypeOf(session) as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  const send = sessionProto._send as (...a: unknown[]) => Promise<unknown>;
  sessionProto._send = async function (this: { fetcher: unknown }, ...args: unknown[]): Promise<unknown> {
    const who = running();
    const answer = await send.apply(this, args);
    if (who === HARNESS) return answer;
    const query = args[1];
    const queries = Array.isArray(query) ? query.map(String) : [String(query)];
    const answers = (Array.isArray(answer) ? answer : [answer]) as D1Answer[];
    const owner = d1Names.get(this.fetcher) ?? "D1";
    queries.forEach((q, i) => {
      const { op, table } = statementTarget(q);
      const meta = answers[i]?.meta ?? {};
      tally(
        { store: "D1", owner, table, op, via: `${who.cls}.${who.via}` },
        { calls: 1, rowsRead: meta.rows_read ?? 0, rowsWritten: meta.rows_written ?? 0 },
      );
    });
    return answer;
  };
}

// ---- Queues: producer and consumer --------------------------------------------------------------

/** Queues bill one operation per 64 KB of a message written, read or deleted; a message carries
 * about 100 bytes of metadata. */
const opsOf = (body: unknown): number =>
  Math.max(1, Math.ceil((new TextEncoder().encode(JSON.stringify(body)).length + 100) / 64_000));

function patchQueues(handlers: Record<string, ((...a: unknown[]) => Promise<unknown>) | undefined>): void {
  const producer = Object.values(bindings).find(
    (v) => v && typeof v === "object" && Object.getPrototypeOf(v)?.constructor?.name === "WorkerQueue",
  );
  const queueProto = Object.getPrototypeOf(producer ?? {}) as Record<string, (...a: unknown[]) => unknown>;
  if (typeof queueProto.sendBatch === "function" && typeof queueProto.send === "function") {
    const sendBatch = queueProto.sendBatch;
    const sendOne = queueProto.send;
    queueProto.sendBatch = function (this: unknown, ...args: unknown[]): unknown {
      if (counting()) {
        const who = running();
        const messages = [...(args[0] as Iterable<{ body: unknown }>)];
        tally(
          {
            store: "Queues",
            owner: "producer",
            table: "sendBatch",
            op: "write",
            via: `${who.cls}.${who.via}`,
          },
          { calls: messages.length, bytes: messages.reduce((n, m) => n + opsOf(m.body), 0) },
        );
        return sendBatch.call(this, messages, ...args.slice(1));
      }
      return sendBatch.apply(this, args);
    };
    queueProto.send = function (this: unknown, ...args: unknown[]): unknown {
      if (counting()) {
        const who = running();
        tally(
          { store: "Queues", owner: "producer", table: "send", op: "write", via: `${who.cls}.${who.via}` },
          { calls: 1, bytes: opsOf(args[0]) },
        );
      }
      return sendOne.apply(this, args);
    };
  }
  const queue = handlers.queue;
  if (queue) {
    handlers.queue = (batch: unknown, ...rest: unknown[]) => {
      const b = batch as MessageBatch<unknown>;
      tally(
        { store: "Workers", owner: "worker", table: b.queue, op: "queue invocation", via: "-" },
        { calls: 1 },
      );
      for (const m of b.messages) {
        tally(
          {
            store: "Queues",
            owner: "consumer",
            table: b.queue,
            op: m.attempts > 1 ? "read (retry)" : "read",
            via: "-",
          },
          { calls: 1, bytes: opsOf(m.body) },
        );
      }
      const first = b.messages[0];
      if (first && !messageProtoPatched) {
        messageProtoPatched = true;
        const proto = Object.getPrototypeOf(first) as Record<string, (...a: unknown[]) => unknown>;
        for (const method of ["ack", "retry"] as const) {
          const original = proto[method] as (...a: unknown[]) => unknown;
          proto[method] = function (this: Message<unknown>, ...args: unknown[]): unknown {
            tally(
              {
                store: "Queues",
                owner: "consumer",
                table: "-",
                op: method === "ack" ? "delete (ack)" : "retry",
                via: "-",
              },
              { calls: 1, bytes: method === "ack" ? opsOf(this.body) : 0 },
            );
            return original.apply(this, args);
          };
        }
      }
      return als.run({ cls: "Worker", via: `queue ${b.queue}`, self: null }, () => queue(batch, ...rest));
    };
  }
  const scheduled = handlers.scheduled;
  if (scheduled) {
    handlers.scheduled = (...args: unknown[]) =>
      als.run({ cls: "Worker", via: "scheduled", self: null }, () => scheduled(...args));
  }
}

// ---- R2 -----------------------------------------------------------------------------------------

const R2_CLASS: Record<string, string> = {
  put: "class A",
  list: "class A",
  createMultipartUpload: "class A",
  get: "class B",
  head: "class B",
  delete: "free",
};
function patchR2(): void {
  const bucket = Object.values(bindings).find(
    (v) => v && typeof v === "object" && Object.getPrototypeOf(v)?.constructor?.name === "R2Bucket",
  );
  const r2Proto = Object.getPrototypeOf(bucket ?? {}) as Record<
    string,
    (...a: unknown[]) => Promise<unknown>
  >;
  for (const method of Object.keys(R2_CLASS)) {
    const original = r2Proto[method];
    if (typeof original !== "function") continue;
    r2Proto[method] = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
      const who = running();
      const result = await original.apply(this, args);
      if (who !== HARNESS) {
        const size = method === "put" ? ((result as { size?: number } | null)?.size ?? 0) : 0;
        tally(
          {
            store: "R2",
            owner: "bucket",
            table: R2_CLASS[method] as string,
            op: method,
            via: `${who.cls}.${who.via}`,
          },
          { calls: 1, bytes: size },
        );
      }
      return result;
    };
  }
}

// ---- Durable Object names, for the sizes and checks at the end -------------------------------------

function patchNamespaces(): void {
  const anyNs = [...namespaceNames.keys()][0];
  const nsProto = Object.getPrototypeOf(anyNs ?? {}) as Record<string, (...a: unknown[]) => unknown>;
  const idFromName = nsProto.idFromName as (name: string) => unknown;
  nsProto.idFromName = function (this: unknown, ...args: unknown[]): unknown {
    const name = String(args[0]);
    const binding = namespaceNames.get(this) ?? "?";
    const set = objectNames.get(binding) ?? new Set<string>();
    set.add(name);
    objectNames.set(binding, set);
    return idFromName.call(this, name);
  };
}

export function stubOf(binding: string, name: string): DurableObjectStub {
  const ns = bindings[binding] as DurableObjectNamespace;
  return ns.get(ns.idFromName(name));
}

export function inObject<T>(
  stub: DurableObjectStub,
  fn: (instance: unknown, state: DurableObjectState) => T,
): Promise<T> {
  return runInDurableObject(stub, (instance: unknown, state: DurableObjectState) =>
    als.run(HARNESS, () => {
      patchStorage(state);
      return fn(instance, state);
    }),
  );
}

// ---- snapshots ----------------------------------------------------------------------------------

/** The ledger as it stands. */
export function snapshot(): Map<string, Tally> {
  return new Map([...ledger].map(([k, v]) => [k, { ...v }]));
}

/** What changed between two snapshots. */
export function diff(after: Map<string, Tally>, before: Map<string, Tally>): Tally[] {
  const out: Tally[] = [];
  for (const [k, a] of after) {
    const b = before.get(k);
    const d = {
      ...a,
      calls: a.calls - (b?.calls ?? 0),
      rowsRead: a.rowsRead - (b?.rowsRead ?? 0),
      rowsWritten: a.rowsWritten - (b?.rowsWritten ?? 0),
      bytes: a.bytes - (b?.bytes ?? 0),
      ms: a.ms - (b?.ms ?? 0),
    };
    if (d.calls || d.rowsRead || d.rowsWritten || d.bytes || d.ms) out.push(d);
  }
  return out;
}
