/**
 * @module Test clients that drive Parley through its public surface only: HTTP through the worker's
 * fetch handler and WebSockets through real upgrades, as an outside client would.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { type InboxPush, noChanges } from "../durable-objects/inbox-store.ts";
import type { Room } from "../durable-objects/room.ts";
import { type ShipKey, WATERMARKS_KEY } from "../durable-objects/room-log.ts";
import type { RoomMaintenance } from "../durable-objects/room-maintenance.ts";
import { allHistoryShards } from "../platform/residency.ts";
import { parseServerFrame, type RoomEvent, type ServerFrame } from "../protocol/index.ts";

import { authHeaders, FrameSocket, fetchWorker } from "./frame-socket.ts";
import { RoomReading } from "./room-reading.ts";

export { authHeaders, fetchWorker };

let counter = 0;

/** A name no other test in the file uses (storage is isolated per file, not per test). */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}${counter}${Math.random().toString(36).slice(2, 8)}`;
}

export interface User {
  token: string;
  id: string;
  name: string;
  tenant: string;
}

export async function login(tenant: string, name = unique("user")): Promise<User> {
  const res = await fetchWorker("/auth/dev/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: `${unique("u").toLowerCase()}@example.com`, name, tenant }),
  });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`);
  const { token } = (await res.json()) as { token: string };
  const me = (await (await api({ token } as User, "GET", "/api/me")).json()) as { user: { id: string } };
  return { token, id: me.user.id, name, tenant };
}

export function api(
  user: Pick<User, "token">,
  method: string,
  path: string,
  body?: unknown,
): Promise<Response> {
  const headers: Record<string, string> = authHeaders(user.token);
  if (body !== undefined) headers["content-type"] = "application/json";
  return fetchWorker(path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
}

export async function json<T = Record<string, unknown>>(res: Response | Promise<Response>): Promise<T> {
  return (await (await res).json()) as T;
}

export async function createRoom(owner: User, name = unique("room")): Promise<string> {
  const res = await api(owner, "POST", "/api/rooms", { name, kind: "channel" });
  if (res.status !== 201) throw new Error(`create room failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

export async function join(user: User, roomId: string): Promise<void> {
  const res = await api(user, "POST", `/api/rooms/${roomId}/join`);
  if (res.status !== 200) throw new Error(`join failed: ${res.status} ${await res.text()}`);
}

/** A new room in a new tenant: its owner first, then `n - 1` more members. */
export async function roomWith(n: number): Promise<{ roomId: string; users: User[] }> {
  const tenant = unique("t");
  const owner = await login(tenant);
  const roomId = await createRoom(owner);
  const users = [owner];
  for (let i = 1; i < n; i++) {
    const u = await login(tenant);
    await join(u, roomId);
    users.push(u);
  }
  return { roomId, users };
}

/** A room client on one WebSocket (frame-socket.ts): records every frame and event, confirms
 * what it reads when flow control asks it to, and lets a test wait for a condition. */
export class Client extends FrameSocket<ServerFrame> {
  /** The events read, their bytes, and flow control's receipts (room-reading.ts). */
  readonly reading = new RoomReading();

  private constructor(ws: WebSocket) {
    super(ws, parseServerFrame, (frame, text) => {
      const due = this.reading.read(frame, text);
      if (due) this.send(due);
    });
  }

  get events(): RoomEvent[] {
    return this.reading.events;
  }

  get eventBytes(): number {
    return this.reading.eventBytes;
  }

  /** Flow control (sockets opened with `flow=1`): confirms with `received` as the SDK does. */
  get confirming(): boolean {
    return this.reading.confirming;
  }

  set confirming(on: boolean) {
    this.reading.confirming = on;
  }

  /** Confirms every event received so far (`{"type":"received"}`, flow control). */
  confirm(): void {
    const due = this.reading.confirmAll();
    if (due) this.send(due);
  }

  static async open(user: Pick<User, "token">, roomId: string, after = 0, query = ""): Promise<Client> {
    return new Client(await FrameSocket.socket(`/api/rooms/${roomId}/ws?after=${after}${query}`, user.token));
  }

  static upgrade(user: Pick<User, "token">, roomId: string, query = "after=0"): Promise<Response> {
    return FrameSocket.request(`/api/rooms/${roomId}/ws?${query}`, user.token);
  }

  ready(): Promise<void> {
    return this.until((c) => c.frames.some((f) => f.type === "ready" || f.type === "gap"), "ready");
  }

  /** Waits for the frame of a given type whose index is past `from`, and returns it. */
  async next<T extends ServerFrame["type"]>(type: T, from = 0): Promise<Extract<ServerFrame, { type: T }>> {
    return (await this.find((f) => f.type === type, `a ${type} frame`, from)) as Extract<
      ServerFrame,
      { type: T }
    >;
  }

  acks(): Extract<ServerFrame, { type: "ack" }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { type: "ack" }> => f.type === "ack");
  }

  errors(): Extract<ServerFrame, { type: "error" }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { type: "error" }> => f.type === "error");
  }

  /** Sends a message and resolves with its acked seq. */
  async sendMessage(clientId: string, text: string, extra: Record<string, unknown> = {}): Promise<number> {
    const from = this.frames.length;
    this.send({ type: "send", clientId, text, ...extra });
    await this.until(
      (c) =>
        c.frames.slice(from).some((f) => (f.type === "ack" || f.type === "error") && f.clientId === clientId),
      `ack of ${clientId}`,
    );
    const frame = this.frames
      .slice(from)
      .find((f) => (f.type === "ack" || f.type === "error") && f.clientId === clientId);
    if (frame?.type !== "ack") throw new Error(`send ${clientId} failed: ${JSON.stringify(frame)}`);
    return frame.seq;
  }
}

/** Runs a read on every D1 history shard and returns every row found (a row lives in one shard). */
export async function historyAll<T>(query: string, ...binds: unknown[]): Promise<T[]> {
  const out: T[] = [];
  for (const { db } of allHistoryShards(env)) {
    out.push(
      ...(
        await db
          .prepare(query)
          .bind(...binds)
          .all<T>()
      ).results,
    );
  }
  return out;
}

/** `base` with every history shard's methods passed through `wrap` (the method bound to its
 * database, and its name); whatever `wrap` returns is called instead. */
export function historyWrapped(
  base: Env,
  wrap: (method: (...args: unknown[]) => unknown, name: string | symbol) => (...args: unknown[]) => unknown,
): Env {
  const wrapped = { ...base } as Record<string, unknown>;
  for (const { name, db } of allHistoryShards(base)) {
    wrapped[name] = new Proxy(db, {
      get(target, prop) {
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? wrap(value.bind(target), prop) : value;
      },
    });
  }
  return wrapped as unknown as Env;
}

/** `base` with every history shard failing its batches (a D1 outage). */
export function historyDown(base: Env): Env {
  return historyWrapped(base, (method, name) =>
    name === "batch" ? () => Promise.reject(new Error("D1_ERROR: simulated outage")) : method,
  );
}

/** workerd's clock moves only across I/O: wait for the next millisecond. */
export async function after(ts: number): Promise<void> {
  while (Date.now() <= ts) await new Promise((r) => setTimeout(r, 1));
}

/** Sets a room's stored watermark `key` (room-log.ts writes those behind in one meta row) to what
 * `to` makes of it, as a lost confirmation or a rebuilt store leaves it. Write the room's own first
 * (`writeWatermarks()`): a room that still holds newer ones in memory writes them over it. */
export function storeWatermark(sql: SqlStorage, key: ShipKey, to: (stored: number) => number): void {
  const row = sql
    .exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", WATERMARKS_KEY)
    .toArray()[0];
  const marks = JSON.parse(row?.value ?? "{}") as Record<string, number>;
  marks[key] = to(marks[key] ?? 0);
  sql.exec(
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    WATERMARKS_KEY,
    JSON.stringify(marks),
  );
}

/** Calls `seen` with every statement `sql` runs from here on: its text, bindings and cursor. */
export function watchQueries(
  sql: SqlStorage,
  seen: (
    query: string,
    params: SqlStorageValue[],
    cursor: SqlStorageCursor<Record<string, SqlStorageValue>>,
  ) => void,
): void {
  const exec = sql.exec.bind(sql);
  sql.exec = ((query: string, ...params: SqlStorageValue[]) => {
    const cursor = exec(query, ...params);
    seen(query, params, cursor);
    return cursor;
  }) as typeof sql.exec;
}

/** Counts the rows written by the statements of `sql` whose text `matches`, from here on. */
export function countWrites(sql: SqlStorage, matches: (query: string) => boolean): { rows: number } {
  const counter = { rows: 0 };
  watchQueries(sql, (query, _params, cursor) => {
    if (matches(query)) counter.rows += cursor.rowsWritten;
  });
  return counter;
}

/** The room's Durable Object, as the worker names it. */
export function roomObject(tenant: string, roomId: string) {
  return env.ROOM.get(env.ROOM.idFromName(`${tenant}:${roomId}`));
}

/** A room's background work (durable-objects/room-maintenance.ts), run inside the object with a
 * given clock: its steps are not RPC methods. */
export function maintenanceOf(room: DurableObjectStub<Room>) {
  const inRoom = <T>(step: (m: RoomMaintenance) => Promise<T>) =>
    runInDurableObject(room, (r: Room) => step(r.maintenance));
  return {
    seal: (now: number) => inRoom((m) => m.seal(now)),
    housekeep: (now: number) => inRoom((m) => m.housekeep(now)),
    cleanupAttachments: (now: number) => inRoom((m) => m.cleanupAttachments(now)),
  };
}

/** Waits until the room has written the read markers its sockets sent (it holds them up to
 * `readFlushMs`) and every inbox has what the room has (docs/architecture.md, decisions 6 and 7). */
export async function settleInbox(tenant: string, roomId: string): Promise<void> {
  await roomObject(tenant, roomId).inboxSettled();
}

/** Requests an export, waits (bounded) for the local exports queue to run it, downloads it. */
export async function exportRoom(user: User, roomId: string): Promise<string> {
  const res = await api(user, "POST", "/api/admin/exports", { roomId });
  expect(res.status).toBe(202);
  const { id } = await json<{ id: string }>(res);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await json<{ status: string; error: string | null }>(
      api(user, "GET", `/api/admin/exports/${id}`),
    );
    if (s.status === "done") break;
    if (s.status === "failed") throw new Error(`export failed: ${s.error}`);
    if (Date.now() > deadline) throw new Error("export did not finish in 30 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  return (await api(user, "GET", `/api/admin/exports/${id}/download`)).text();
}

/** A room's push to an inbox (inbox-store.ts) of `room` at `to` with these parts; the rest empty. */
export const inboxPush = (
  tenant: string,
  room: string,
  from: number | null,
  to: number,
  parts: Partial<InboxPush>,
): InboxPush => ({
  tenantId: tenant,
  roomId: room,
  from,
  full: false,
  to,
  accLast: to,
  floor: 0,
  accFloor: 0,
  ...noChanges(),
  ...parts,
});
