/**
 * @module The WebhookEndpoint Durable Object: one per registered outgoing webhook
 * (`<tenantId>:webhook:<id>`, docs/architecture.md, decision 10). It receives its tenant's room
 * events from the room-events consumer (worker/archive/consumer.ts), at least once and in any
 * order, and delivers those its filter takes to the endpoint:
 *
 * - **In order per room.** Events wait by (room, seq); a room's next delivery is the seq after the
 *   last one delivered or passed over. A seq that has not arrived holds the room back (the room
 *   resends what the consumer has not confirmed, and the consumer forwards before it confirms), for
 *   at most `GAP_WAIT_MS`, after which it is passed over and logged.
 * - **At least once, with a stable id.** `X-Parley-Id: tenant:room:seq`; a delivery whose answer
 *   is lost is sent again. One request in flight per room; rooms go in parallel.
 * - **Signed.** `X-Parley-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>` with
 *   `X-Parley-Timestamp` (Unix seconds): docs/protocol.md gives the recipe to verify.
 * - **Backoff, then disabled.** A failure (no 2xx within 10 s) is tried again after 2 s, doubling to
 *   `webhookMaxBackoffMs`; failing for `webhookDisableAfterMs` without a success disables the
 *   endpoint. It goes on holding what comes (up to `MAX_HELD`): re-enabling delivers it, in order
 *   (the dead letters).
 * - **A delivery log**: the latest `LOG_ROWS` attempts with status, time and body, which admins read
 *   and replay from (a replay sends logged deliveries again, with their ids, after anything due).
 *
 * Alarms drive delivery; every step is idempotent, so an alarm run twice sends at most a duplicate.
 */
import { DurableObject } from "cloudflare:workers";
import { limitsOf } from "../config/limits.ts";
import { log } from "../platform/log.ts";
import { tenantNamespace } from "../platform/residency.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { migrate } from "./schema.ts";

/** How long a missing seq holds its room's deliveries back before it is passed over. */
const GAP_WAIT_MS = 5 * 60 * 1000;
/** Deliveries per room per alarm (then the alarm runs again at once). */
const PER_ALARM = 50;
/** Events a disabled endpoint holds for when it is back (its dead letters). */
const MAX_HELD = 10_000;
/** Attempts the log keeps. */
const LOG_ROWS = 1000;
/** A delivery that has not answered by then has failed. */
const TIMEOUT_MS = 10_000;

const MIGRATIONS = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE waiting (room TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT, PRIMARY KEY (room, seq)) WITHOUT ROWID;
   CREATE TABLE cursors (
     room TEXT PRIMARY KEY, through INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
     next_at INTEGER NOT NULL DEFAULT 0, gap_since INTEGER
   ) WITHOUT ROWID;
   CREATE TABLE deliveries (
     id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
     status INTEGER, ok INTEGER NOT NULL, attempt INTEGER NOT NULL, ms INTEGER NOT NULL, error TEXT,
     body TEXT NOT NULL
   );
   CREATE TABLE replays (id INTEGER PRIMARY KEY AUTOINCREMENT, room TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL);`,
];

export interface WebhookConfig {
  tenantId: string;
  id: string;
  url: string;
  secret: string;
  /** Only these rooms (null: every room of the tenant). */
  rooms: string[] | null;
  /** Only these event kinds (null: every kind). */
  kinds: string[] | null;
  /** Dev deployments may deliver to http on loopback (tests); production never. */
  allowLoopback: boolean;
}

export interface WebhookState {
  state: "active" | "disabled";
  /** Events held, not yet delivered (the dead letters, when disabled). */
  waiting: number;
  failingSince: number | null;
  disabledAt: number | null;
}

export interface Delivery {
  id: number;
  room: string;
  seq: number;
  at: number;
  status: number | null;
  ok: boolean;
  attempt: number;
  ms: number;
  error: string | null;
}

/** An event as the consumer forwards it. */
export interface ForwardedEvent {
  seq: number;
  event: RoomEvent;
}

export class WebhookEndpoint extends DurableObject<Env> {
  readonly #sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    migrate(ctx.storage, MIGRATIONS);
  }

  // ---- configuration -------------------------------------------------------------------------

  configure(config: WebhookConfig): void {
    this.#put("config", JSON.stringify(config));
    if (this.#get("state") === undefined) this.#put("state", "active");
  }

  /** Re-enables a disabled endpoint: what it held is delivered, in order, from now. */
  async enable(): Promise<void> {
    this.#put("state", "active");
    this.#del("failing_since");
    this.#del("disabled_at");
    this.#sql.exec("UPDATE cursors SET attempts = 0, next_at = 0");
    await this.ctx.storage.setAlarm(Date.now());
  }

  /** Forgets everything (the webhook was deleted). */
  async destroy(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }

  status(): WebhookState {
    const waiting = this.#sql
      .exec<{ n: number }>("SELECT COUNT(*) AS n FROM waiting WHERE body IS NOT NULL")
      .one().n;
    const since = this.#get("failing_since");
    const disabled = this.#get("disabled_at");
    return {
      state: this.#get("state") === "disabled" ? "disabled" : "active",
      waiting,
      failingSince: since ? Number(since) : null,
      disabledAt: disabled ? Number(disabled) : null,
    };
  }

  deliveries(limit: number, before?: number): Delivery[] {
    return this.#sql
      .exec<{
        id: number;
        room: string;
        seq: number;
        at: number;
        status: number | null;
        ok: number;
        attempt: number;
        ms: number;
        error: string | null;
      }>(
        "SELECT id, room, seq, at, status, ok, attempt, ms, error FROM deliveries WHERE id < ? ORDER BY id DESC LIMIT ?",
        before ?? Number.MAX_SAFE_INTEGER,
        limit,
      )
      .toArray()
      .map((r) => ({ ...r, ok: r.ok === 1 }));
  }

  /** Sends logged deliveries again (each event once, the latest body logged), from log id `from`
   * on, at most `limit`, in log order; returns how many. */
  async replay(from: number, limit: number): Promise<number> {
    const rows = this.#sql
      .exec<{ room: string; seq: number; body: string }>(
        `SELECT room, seq, body FROM deliveries WHERE id IN (
           SELECT MAX(id) FROM deliveries WHERE id >= ? GROUP BY room, seq
         ) ORDER BY id LIMIT ?`,
        from,
        limit,
      )
      .toArray();
    for (const r of rows)
      this.#sql.exec("INSERT INTO replays (room, seq, body) VALUES (?, ?, ?)", r.room, r.seq, r.body);
    if (rows.length > 0) await this.ctx.storage.setAlarm(Date.now());
    return rows.length;
  }

  // ---- receiving -----------------------------------------------------------------------------

  /** A room's events from the consumer (any order, maybe again). A disabled endpoint holds them
   * too (its dead letters), up to `MAX_HELD`; past that an event is passed over (kept as a seq
   * without a body, so the room's order has no hole to wait at once the endpoint is back). */
  async accept(roomId: string, events: ForwardedEvent[]): Promise<void> {
    const config = this.#config();
    if (!config || events.length === 0) return;
    if (config.rooms && !config.rooms.includes(roomId)) return;
    const lowest = Math.min(...events.map((e) => e.seq));
    // A room's first events here start its order: what came before the webhook is not sent.
    this.#sql.exec("INSERT OR IGNORE INTO cursors (room, through) VALUES (?, ?)", roomId, lowest - 1);
    const through = this.#sql
      .exec<{ through: number }>("SELECT through FROM cursors WHERE room = ?", roomId)
      .one().through;
    const full =
      this.#get("state") === "disabled" &&
      this.#sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM waiting WHERE body IS NOT NULL").one().n >=
        MAX_HELD;
    for (const { seq, event } of events) {
      if (seq <= through) continue;
      const wanted = !full && (!config.kinds || config.kinds.includes(event.kind));
      const body = wanted
        ? JSON.stringify({
            id: `${config.tenantId}:${roomId}:${seq}`,
            tenant: config.tenantId,
            room: roomId,
            event,
          })
        : null;
      this.#sql.exec("INSERT OR IGNORE INTO waiting (room, seq, body) VALUES (?, ?, ?)", roomId, seq, body);
    }
    if (this.#get("state") === "disabled") return;
    const alarm = await this.ctx.storage.getAlarm();
    if (alarm === null || alarm > Date.now()) await this.ctx.storage.setAlarm(Date.now());
  }

  // ---- delivering ----------------------------------------------------------------------------

  override async alarm(): Promise<void> {
    const config = this.#config();
    if (!config || this.#get("state") === "disabled") return;
    const now = Date.now();
    await this.#sendReplays(config);
    const rooms = this.#sql
      .exec<{ room: string }>("SELECT DISTINCT room FROM waiting")
      .toArray()
      .map((r) => r.room);
    const next = await Promise.all(rooms.map((room) => this.#deliverRoom(config, room, now)));
    if (this.#get("state") === "disabled") return;
    const due = Math.min(...next.filter((t): t is number => t !== null));
    if (Number.isFinite(due)) await this.ctx.storage.setAlarm(due);
  }

  /** Delivers a room's due events in order; returns when it next has something due (null: none). */
  async #deliverRoom(config: WebhookConfig, room: string, now: number): Promise<number | null> {
    const limits = limitsOf(this.env);
    for (let sent = 0; sent < PER_ALARM; sent++) {
      const cursor = this.#sql
        .exec<{ through: number; attempts: number; next_at: number; gap_since: number | null }>(
          "SELECT through, attempts, next_at, gap_since FROM cursors WHERE room = ?",
          room,
        )
        .toArray()[0];
      if (!cursor) return null;
      const seq = cursor.through + 1;
      const row = this.#sql
        .exec<{ body: string | null }>("SELECT body FROM waiting WHERE room = ? AND seq = ?", room, seq)
        .toArray()[0];
      if (!row) {
        const later = this.#sql
          .exec<{ n: number }>("SELECT COUNT(*) AS n FROM waiting WHERE room = ? AND seq > ?", room, seq)
          .one().n;
        if (later === 0) return null;
        // A seq that has not come yet: wait for it, a while.
        const since = cursor.gap_since ?? now;
        if (cursor.gap_since === null)
          this.#sql.exec("UPDATE cursors SET gap_since = ? WHERE room = ?", now, room);
        if (now - since < GAP_WAIT_MS) return since + GAP_WAIT_MS;
        log({ event: "webhook_gap_skipped", webhook: config.id, room, seq });
        this.#advance(room, seq);
        continue;
      }
      if (row.body === null) {
        this.#advance(room, seq);
        continue;
      }
      if (cursor.next_at > now) return cursor.next_at;
      const outcome = await this.#post(config, room, seq, row.body, cursor.attempts + 1);
      if (outcome.ok) {
        this.#advance(room, seq);
        this.#del("failing_since");
        continue;
      }
      const attempts = cursor.attempts + 1;
      const at = now + Math.min(limits.webhookMaxBackoffMs, 2000 * 2 ** (attempts - 1));
      this.#sql.exec("UPDATE cursors SET attempts = ?, next_at = ? WHERE room = ?", attempts, at, room);
      const since = Number(this.#get("failing_since") ?? now);
      if (this.#get("failing_since") === undefined) this.#put("failing_since", String(now));
      if (now - since >= limits.webhookDisableAfterMs) {
        this.#put("state", "disabled");
        this.#put("disabled_at", String(now));
        log({ event: "webhook_disabled", webhook: config.id, tenant: config.tenantId });
        return null;
      }
      return at;
    }
    return Date.now();
  }

  /** Replays first, each tried once (a failed one is logged; the admin may replay it again). */
  async #sendReplays(config: WebhookConfig): Promise<void> {
    const rows = this.#sql
      .exec<{ id: number; room: string; seq: number; body: string }>(
        "SELECT id, room, seq, body FROM replays ORDER BY id LIMIT ?",
        PER_ALARM,
      )
      .toArray();
    for (const r of rows) {
      await this.#post(config, r.room, r.seq, r.body, 1);
      this.#sql.exec("DELETE FROM replays WHERE id = ?", r.id);
    }
  }

  #advance(room: string, seq: number): void {
    this.#sql.exec("DELETE FROM waiting WHERE room = ? AND seq = ?", room, seq);
    this.#sql.exec(
      "UPDATE cursors SET through = ?, attempts = 0, next_at = 0, gap_since = NULL WHERE room = ?",
      seq,
      room,
    );
  }

  /** One signed request; logged. */
  async #post(
    config: WebhookConfig,
    room: string,
    seq: number,
    body: string,
    attempt: number,
  ): Promise<{ ok: boolean }> {
    const started = Date.now();
    let status: number | null = null;
    let error: string | null = null;
    const refusal = webhookTargetRefusal(config.url, config.allowLoopback);
    if (refusal) error = refusal;
    else {
      const timestamp = Math.floor(started / 1000);
      try {
        const res = await fetch(config.url, {
          method: "POST",
          redirect: "manual",
          signal: AbortSignal.timeout(TIMEOUT_MS),
          headers: {
            "content-type": "application/json",
            "user-agent": "Parley-Webhooks/1",
            "x-parley-id": `${config.tenantId}:${room}:${seq}`,
            "x-parley-timestamp": String(timestamp),
            "x-parley-signature": `v1=${await sign(config.secret, `${timestamp}.${body}`)}`,
          },
          body,
        });
        status = res.status;
        await res.body?.cancel();
        if (status < 200 || status >= 300) error = `answered ${status}`;
      } catch (err) {
        error = String(err);
      }
    }
    const ok = error === null;
    this.#sql.exec(
      "INSERT INTO deliveries (room, seq, at, status, ok, attempt, ms, error, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      room,
      seq,
      started,
      status,
      ok ? 1 : 0,
      attempt,
      Date.now() - started,
      error,
      body,
    );
    this.#sql.exec("DELETE FROM deliveries WHERE id <= (SELECT MAX(id) FROM deliveries) - ?", LOG_ROWS);
    return { ok };
  }

  #config(): WebhookConfig | null {
    const raw = this.#get("config");
    return raw ? (JSON.parse(raw) as WebhookConfig) : null;
  }

  #get(key: string): string | undefined {
    return this.#sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key).toArray()[0]?.value;
  }

  #put(key: string, value: string): void {
    this.#sql.exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key, value);
  }

  #del(key: string): void {
    this.#sql.exec("DELETE FROM meta WHERE key = ?", key);
  }
}

/** HMAC-SHA256 of `message` under `secret`, as lowercase hex. */
export async function sign(secret: string, message: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(message)));
  return [...mac].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Why a webhook may not be sent to this URL, or null when it may: https only, no credentials, and
 * no host that names a private, loopback, link-local or unique-local address, nor a name that only
 * resolves inside a network (`localhost`, `.local`, `.internal`, …). A Worker cannot resolve names
 * itself, so a public name that resolves to a private address is left to Cloudflare's egress, which
 * does not reach private networks. `allowLoopback` (dev deployments only): http to 127.0.0.1 or
 * localhost, for a local receiver.
 */
export function webhookTargetRefusal(raw: string, allowLoopback: boolean): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return "not a URL";
  }
  if (url.username || url.password) return "a URL with credentials";
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const loopbackHost = host === "localhost" || host === "127.0.0.1" || host === "::1";
  if (allowLoopback && loopbackHost && (url.protocol === "http:" || url.protocol === "https:")) return null;
  if (url.protocol !== "https:") return "not https";
  if (
    host === "localhost" ||
    /\.(localhost|local|internal|intranet|lan|home|corp|private)$/.test(host) ||
    (!host.includes(".") && !host.includes(":"))
  )
    return "a host that only resolves inside a network";
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    if (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) ||
      (a === 192 && b === 168) ||
      (a === 100 && b >= 64 && b <= 127) ||
      a >= 224
    )
      return "a private, loopback or link-local address";
  }
  if (host.includes(":")) {
    if (
      host === "::" ||
      host === "::1" ||
      /^f[cd]/.test(host) ||
      /^fe[89ab]/.test(host) ||
      host.startsWith("::ffff:")
    )
      return "a private, loopback or link-local address";
  }
  return null;
}

export function webhookStub(env: Env, tenantId: string, id: string) {
  const namespace = tenantNamespace(env, env.WEBHOOKS, tenantId);
  return namespace.get(namespace.idFromName(`${tenantId}:webhook:${id}`));
}
