/**
 * @module The chaos clients: a small HTTP API helper and a room sender that behaves like the SDK
 * (outbox of unacknowledged sends resent with the same clientId, resume with `after`, backoff with
 * jitter) while recording everything it was told, so the log can be checked against it afterwards.
 */
import WebSocket from "ws";
import { eventsOf, parseServerFrame, type RoomEvent } from "../../protocol/index.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface User {
  email: string;
  name: string;
  tenant: string;
  token: string;
  /** From GET /api/me; empty if the server did not say. */
  id: string;
}

export interface HttpResult {
  status: number;
  body: unknown;
}

export class Api {
  readonly base: string;
  logins = 0;

  constructor(base: string) {
    this.base = base;
  }

  async login(user: User): Promise<void> {
    const res = await this.raw("POST", "/auth/dev/login", null, {
      email: user.email,
      name: user.name,
      tenant: user.tenant,
    });
    const token = (res.body as { token?: unknown } | null)?.token;
    if (res.status !== 200 && res.status !== 201)
      throw new Error(`POST /auth/dev/login → ${res.status} ${show(res.body)}`);
    if (typeof token !== "string" || token === "")
      throw new Error(`POST /auth/dev/login gave no token: ${show(res.body)}`);
    user.token = token;
    this.logins++;
    if (user.id === "") {
      const me = await this.raw("GET", "/api/me", user);
      const id = (me.body as { user?: { id?: unknown } } | null)?.user?.id;
      if (me.status === 200 && typeof id === "string") user.id = id;
    }
  }

  /** A request as `user`; a 401 (token no longer accepted) logs in again and retries once. */
  async request(user: User, method: string, path: string, body?: unknown): Promise<HttpResult> {
    const res = await this.raw(method, path, user, body);
    if (res.status !== 401) return res;
    await this.login(user);
    return this.raw(method, path, user, body);
  }

  async raw(method: string, path: string, user: User | null, body?: unknown): Promise<HttpResult> {
    const headers: Record<string, string> = {};
    if (user) headers["Cf-Access-Jwt-Assertion"] = user.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      // not JSON: keep the text for the error message
    }
    return { status: res.status, body: parsed };
  }

  /**
   * Every event of a room with seq > after (and ≤ upTo if given), paged with
   * GET /api/rooms/:id/messages?after=S&limit=200. Reports any page that is not strictly ascending
   * or does not continue where the previous one stopped.
   */
  async history(user: User, roomId: string, after = 0, upTo = Number.POSITIVE_INFINITY) {
    const events: RoomEvent[] = [];
    const problems: string[] = [];
    let cursor = after;
    for (let page = 0; page < 100_000; page++) {
      const res = await this.request(user, "GET", `/api/rooms/${roomId}/messages?after=${cursor}&limit=200`);
      if (res.status !== 200)
        throw new Error(`GET messages?after=${cursor} → ${res.status} ${show(res.body)}`);
      const body = res.body as { events?: unknown; hasMore?: unknown };
      if (!Array.isArray(body.events))
        throw new Error(`GET messages gave no events array: ${show(res.body)}`);
      const batch = body.events as RoomEvent[];
      for (const e of batch) {
        if (typeof e?.seq !== "number" || e.seq <= cursor) {
          problems.push(`page after=${cursor}: seq ${e?.seq} is not above the cursor`);
          continue;
        }
        cursor = e.seq;
        if (e.seq <= upTo) events.push(e);
      }
      if (body.hasMore !== true || batch.length === 0 || cursor >= upTo) break;
    }
    return { events, problems };
  }
}

export function show(v: unknown): string {
  return (typeof v === "string" ? v : (JSON.stringify(v) ?? "")).slice(0, 300);
}

/** What one room's senders learned, shared between them: the ground truth to check the log with. */
export class Ledger {
  readonly roomId: string;
  /** clientId → the seq it was acked with (the first ack; later ones must agree). */
  readonly acks = new Map<string, number>();
  /** seq → the clientId acked with it. */
  readonly ackedSeq = new Map<number, string>();
  /** Every send made: clientId → what the log must hold for it. */
  readonly sent = new Map<string, { text: string; authorId: string; sender: string }>();
  /** clientIds resent from an outbox after a reconnect. */
  readonly resent = new Set<string>();
  /** clientIds the server refused for good (error frame with that clientId). */
  readonly rejected = new Map<string, string>();

  constructor(roomId: string) {
    this.roomId = roomId;
  }
}

export interface Counters {
  sendFrames: number;
  acks: number;
  resentIds: number;
  resendFrames: number;
  /** Resent sends whose ack named a seq the server already had before the resend (deduplicated). */
  resentDeduped: number;
  connects: number;
  connectFailures: number;
  relogins: number;
  stalls: number;
  gapFrames: number;
  /** Events received before `ready` on a resumed connection. */
  replayed: number;
  /** Readers disconnected on purpose for a while, to resume from far behind. */
  pauses: number;
  rateLimited: number;
  retriedErrors: number;
  otherErrors: number;
}

export function newCounters(): Counters {
  return {
    sendFrames: 0,
    acks: 0,
    resentIds: 0,
    resendFrames: 0,
    resentDeduped: 0,
    connects: 0,
    connectFailures: 0,
    relogins: 0,
    stalls: 0,
    gapFrames: 0,
    replayed: 0,
    pauses: 0,
    rateLimited: 0,
    retriedErrors: 0,
    otherErrors: 0,
  };
}

/** Invariant violations found while running, by kind, with the first few described. */
export class Violations {
  readonly counts = new Map<string, number>();
  readonly examples: string[] = [];

  add(kind: string, detail: string): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
    if (this.examples.length < 30) this.examples.push(`${kind}: ${detail}`);
  }

  count(kind: string): number {
    return this.counts.get(kind) ?? 0;
  }
}

interface Pending {
  clientId: string;
  text: string;
  resends: number;
  /** The server's lastSeq when this was last resent: an ack at or below it was deduplicated. */
  resentAtLastSeq: number;
}

interface Connection {
  ws: WebSocket;
  after: number;
  /** Seqs received on this connection. */
  seqs: Set<number>;
  synced: boolean;
  syncedLastSeq: number;
  openedAt: number;
  lastFrameAt: number;
}

export interface SenderOptions {
  wsBase: string;
  api: Api;
  user: User;
  roomId: string;
  key: string;
  runId: string;
  /** Unacked sends kept in flight; 0 makes a reader that never sends. */
  window: number;
  ratePerSecond: number;
  ledger: Ledger;
  counters: Counters;
  violations: Violations;
  random: () => number;
  log: (line: string) => void;
}

const FILLER = [
  "lorem",
  "ipsum",
  "dolor",
  "sit",
  "amet",
  "ünïcödé",
  "数据",
  "🦀",
  "**bold**",
  "`code`",
  "<b>x</b>",
];

export class Sender {
  readonly o: SenderOptions;
  /** The last seq this client has seen (stream, replay or HTTP gap fill): the `after` of a resume. */
  lastSeen = 0;
  /** Every event this client received: seq → clientId ("" for none). */
  readonly seen = new Map<number, string>();
  readonly outbox = new Map<string, Pending>();
  producing = true;
  stopped = false;
  private conn: Connection | null = null;
  private counter = 0;
  private tokens = 0;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private needLogin = false;
  private gapFills = 0;

  constructor(o: SenderOptions) {
    this.o = o;
  }

  get ready(): boolean {
    return this.conn?.synced === true;
  }

  get pendingGapFills(): number {
    return this.gapFills;
  }

  connect(): void {
    if (this.stopped || this.conn) return;
    const o = this.o;
    const after = this.lastSeen;
    const ws = new WebSocket(`${o.wsBase}/api/rooms/${o.roomId}/ws?after=${after}`, {
      headers: { "Cf-Access-Jwt-Assertion": o.user.token },
      handshakeTimeout: 5000,
    });
    const now = Date.now();
    const conn: Connection = {
      ws,
      after,
      seqs: new Set(),
      synced: false,
      syncedLastSeq: 0,
      openedAt: now,
      lastFrameAt: now,
    };
    this.conn = conn;
    let opened = false;
    ws.on("open", () => {
      opened = true;
      o.counters.connects++;
    });
    ws.on("message", (data, isBinary) => {
      if (this.conn !== conn) return;
      conn.lastFrameAt = Date.now();
      if (isBinary) {
        o.violations.add("protocol", `${o.key}: binary frame from the server`);
        return;
      }
      this.onFrame(conn, data.toString());
    });
    ws.on("error", (err) => {
      if (!opened && /\b401\b/.test(err.message)) this.needLogin = true;
    });
    ws.on("close", () => {
      if (!opened) o.counters.connectFailures++;
      if (this.conn === conn) {
        this.conn = null;
        this.scheduleReconnect();
      }
    });
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const base = Math.min(2000, 100 * 2 ** this.attempt);
    const delay = base * (0.5 + this.o.random() * 0.5);
    this.attempt = Math.min(this.attempt + 1, 10);
    this.reconnectTimer = setTimeout(async () => {
      this.reconnectTimer = null;
      if (this.needLogin) {
        this.needLogin = false;
        try {
          await this.o.api.login(this.o.user);
          this.o.counters.relogins++;
        } catch {
          // server still down: the next attempt will tell
        }
      }
      this.connect();
    }, delay);
  }

  private onFrame(conn: Connection, raw: string): void {
    const o = this.o;
    const frame = parseServerFrame(raw);
    if (!frame) {
      o.violations.add("protocol", `${o.key}: unparseable server frame ${raw.slice(0, 120)}`);
      return;
    }
    switch (frame.type) {
      case "event":
      case "events":
        for (const e of eventsOf(frame)) this.onEvent(conn, e);
        return;
      case "ready":
        if (typeof frame.lastSeq !== "number")
          o.violations.add("protocol", `${o.key}: ready without lastSeq`);
        else if (frame.lastSeq < this.lastSeen) {
          o.violations.add(
            "forgotten",
            `${o.key}: ready.lastSeq ${frame.lastSeq} < ${this.lastSeen}, a seq this client already received`,
          );
        }
        this.synced(conn, frame.lastSeq);
        return;
      case "gap": {
        o.counters.gapFrames++;
        const upTo = frame.lastSeq;
        if (typeof upTo !== "number" || upTo < this.lastSeen) {
          o.violations.add("forgotten", `${o.key}: gap.lastSeq ${upTo} < ${this.lastSeen}`);
        } else if (upTo > this.lastSeen) {
          void this.fillGap(this.lastSeen, upTo);
          this.lastSeen = upTo;
        }
        this.synced(conn, upTo);
        return;
      }
      case "ack":
        this.onAck(frame.clientId, frame.seq);
        return;
      case "error":
        this.onError(conn, frame.code, frame.message, frame.clientId, frame.retryAfter);
        return;
      case "typing":
      case "pong":
        return;
      default:
        o.violations.add("protocol", `${o.key}: unknown frame ${raw.slice(0, 120)}`);
    }
  }

  private onEvent(conn: Connection, e: RoomEvent): void {
    const o = this.o;
    if (typeof e?.seq !== "number") {
      o.violations.add("protocol", `${o.key}: event without seq ${show(e)}`);
      return;
    }
    const clientId = typeof e.clientId === "string" ? e.clientId : "";
    if (conn.seqs.has(e.seq)) {
      o.violations.add("stream-duplicate", `${o.key}: seq ${e.seq} received twice on one connection`);
      return;
    }
    conn.seqs.add(e.seq);
    if (!conn.synced && conn.after > 0) o.counters.replayed++;
    const before = this.seen.get(e.seq);
    if (before !== undefined && before !== clientId) {
      o.violations.add("received-mismatch", `${o.key}: seq ${e.seq} was "${before}", now "${clientId}"`);
    }
    if (e.seq <= this.lastSeen) {
      o.violations.add(
        "stream-order",
        `${o.key}: seq ${e.seq} received after ${this.lastSeen} (resumed with after=${conn.after})`,
      );
    } else if (e.seq !== this.lastSeen + 1) {
      o.violations.add(
        "stream-skip",
        `${o.key}: seq ${e.seq} follows ${this.lastSeen} (after=${conn.after})`,
      );
    }
    this.seen.set(e.seq, clientId);
    if (e.seq > this.lastSeen) this.lastSeen = e.seq;
  }

  private synced(conn: Connection, lastSeq: number): void {
    if (conn.synced) return;
    conn.synced = true;
    conn.syncedLastSeq = lastSeq;
    this.attempt = 0;
    this.tokens = 0;
    for (const p of this.outbox.values()) {
      if (p.resends === 0) {
        this.o.counters.resentIds++;
        this.o.ledger.resent.add(p.clientId);
      }
      p.resends++;
      p.resentAtLastSeq = lastSeq;
      this.o.counters.resendFrames++;
      this.transmit(p);
    }
  }

  private onAck(clientId: string, seq: number): void {
    const { ledger, violations, counters, key } = this.o;
    if (typeof clientId !== "string" || typeof seq !== "number") {
      violations.add("protocol", `${key}: malformed ack ${show({ clientId, seq })}`);
      return;
    }
    const sent = ledger.sent.get(clientId);
    if (!sent) {
      violations.add("protocol", `${key}: ack for unknown clientId ${clientId}`);
      return;
    }
    const first = ledger.acks.get(clientId);
    if (first !== undefined && first !== seq) {
      violations.add("ack-moved", `${clientId} acked with seq ${first}, later with ${seq}`);
    }
    const holder = ledger.ackedSeq.get(seq);
    if (holder !== undefined && holder !== clientId) {
      violations.add("ack-collision", `seq ${seq} acked for both ${holder} and ${clientId}`);
    }
    if (first === undefined) {
      ledger.acks.set(clientId, seq);
      counters.acks++;
    }
    if (holder === undefined) ledger.ackedSeq.set(seq, clientId);
    const p = this.outbox.get(clientId);
    if (p) {
      if (p.resends > 0 && seq <= p.resentAtLastSeq) counters.resentDeduped++;
      this.outbox.delete(clientId);
    }
  }

  private onError(
    conn: Connection,
    code: string,
    message: string,
    clientId?: string,
    retryAfter?: number,
  ): void {
    const o = this.o;
    const p = clientId === undefined ? undefined : this.outbox.get(clientId);
    if (!p) {
      o.counters.otherErrors++;
      if (o.counters.otherErrors <= 5) o.log(`${o.key}: server error ${code}: ${message}`);
      return;
    }
    if (code === "rate_limited" || code === "internal") {
      if (code === "rate_limited") o.counters.rateLimited++;
      else o.counters.retriedErrors++;
      const delay = code === "rate_limited" ? Math.max(0.05, retryAfter ?? 1) * 1000 : 250;
      setTimeout(() => {
        if (this.conn === conn && conn.synced && this.outbox.has(p.clientId)) this.transmit(p);
      }, delay);
      return;
    }
    o.violations.add("rejected", `${o.key}: ${p.clientId} refused with ${code}: ${message}`);
    o.ledger.rejected.set(p.clientId, code);
    this.outbox.delete(p.clientId);
  }

  private transmit(p: Pending): void {
    const conn = this.conn;
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) return;
    this.o.counters.sendFrames++;
    conn.ws.send(JSON.stringify({ type: "send", clientId: p.clientId, text: p.text }), () => {
      // a send into a dying socket fails; the outbox resends it after the reconnect
    });
  }

  private text(n: number): string {
    const words: string[] = [`chaos ${this.o.key} #${n}`];
    const count = Math.floor(this.o.random() * 12);
    for (let i = 0; i < count; i++) words.push(FILLER[Math.floor(this.o.random() * FILLER.length)] ?? "x");
    return words.join(" ");
  }

  /** Called every few ms: paces new sends, keeps at most `window` unacked, and spots dead sockets. */
  tick(dtSeconds: number, now: number): void {
    const conn = this.conn;
    if (!conn) return;
    const idleMs = now - conn.lastFrameAt;
    if (!conn.synced && now - conn.openedAt > 15_000) {
      this.o.counters.stalls++;
      this.o.log(`${this.o.key}: no ready within 15 s, reconnecting`);
      conn.ws.terminate();
      return;
    }
    if (conn.synced && this.outbox.size > 0 && idleMs > 10_000) {
      this.o.counters.stalls++;
      this.o.log(`${this.o.key}: ${this.outbox.size} unacked and nothing received for 10 s, reconnecting`);
      conn.ws.terminate();
      return;
    }
    if (!conn.synced || !this.producing || this.o.window === 0) return;
    const o = this.o;
    this.tokens = Math.min(this.tokens + o.ratePerSecond * dtSeconds, o.window);
    while (this.tokens >= 1 && this.outbox.size < o.window) {
      this.tokens--;
      const n = ++this.counter;
      const clientId = `${o.runId}-${o.key}-${n}`;
      const p: Pending = { clientId, text: this.text(n), resends: 0, resentAtLastSeq: 0 };
      this.outbox.set(clientId, p);
      o.ledger.sent.set(clientId, { text: p.text, authorId: o.user.id, sender: o.key });
      this.transmit(p);
    }
  }

  get sentCount(): number {
    return this.counter;
  }

  /** After a `gap`, pages the missed events over HTTP, as a client would, retrying while the server is down. */
  private async fillGap(after: number, upTo: number): Promise<void> {
    this.gapFills++;
    try {
      for (let attempt = 0; !this.stopped; attempt++) {
        try {
          const { events, problems } = await this.o.api.history(this.o.user, this.o.roomId, after, upTo);
          for (const p of problems) this.o.violations.add("history", `${this.o.key}: ${p}`);
          for (const e of events) {
            const clientId = typeof e.clientId === "string" ? e.clientId : "";
            const before = this.seen.get(e.seq);
            if (before !== undefined && before !== clientId) {
              this.o.violations.add(
                "received-mismatch",
                `${this.o.key}: seq ${e.seq} was "${before}", now "${clientId}"`,
              );
            }
            this.seen.set(e.seq, clientId);
          }
          return;
        } catch {
          await sleep(Math.min(2000, 200 * 2 ** attempt));
        }
      }
    } finally {
      this.gapFills--;
    }
  }

  /** Drops the connection and stays away for `ms`, then resumes from the last seq seen. */
  pause(ms: number): void {
    if (this.stopped) return;
    this.o.counters.pauses++;
    const conn = this.conn;
    this.conn = null;
    conn?.ws.terminate();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, ms);
  }

  /** Ends a pause now. */
  resume(): void {
    if (this.stopped || this.conn) return;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.connect();
  }

  close(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const conn = this.conn;
    this.conn = null;
    conn?.ws.terminate();
  }
}
