/**
 * @module The chaos clients: SDK room sessions (client/sdk RoomSession over a `ws` socket, with a
 * MemoryOutboxStore) driven as an application would, and watched: every message issued, every
 * ack, every event delivered through `onEvent`, and the frames on the wire, recorded so that the
 * room's log can be checked against them afterwards. Reconnecting, resuming, gap filling and the
 * outbox are the SDK's own; nothing here resends or reorders anything.
 */
import WebSocket from "ws";
import {
  CommandError,
  type Connection,
  MemoryOutboxStore,
  RoomSession,
  type SocketLike,
  type SocketOpener,
  type TransportFactory,
  websocketTransport,
} from "../../client/sdk/index.ts";
import type { RoomEvent, ServerFrame } from "../../protocol/index.ts";
import { type Api, show, type User } from "./api.ts";
import { tokenOf } from "./stores.ts";

/** What one room's clients learned, shared between them: the ground truth to check the log with. */
export class Ledger {
  readonly roomId: string;
  /** clientId → the seq its `acked` promise resolved with. */
  readonly acks = new Map<string, number>();
  /** seq → the clientId acked with it. */
  readonly ackedSeq = new Map<number, string>();
  /** clientId → the seq of the first ack frame seen for it (a resend's ack must repeat it). */
  readonly ackFrames = new Map<string, number>();
  /** Every message issued: clientId → what the log must hold for it. */
  readonly sent = new Map<string, { text: string; authorId: string; sender: string; token: string }>();
  /** clientIds of messages deleted during the run (their log entry keeps its seq, without text). */
  readonly deleted = new Set<string>();
  /** clientIds the SDK put on a socket more than once: resent from its outbox after a reconnect. */
  readonly resent = new Set<string>();
  /** clientIds in an outbox once a killed runtime was gone: in flight at the kill, or issued while
   * it went down (those are first sent after the reconnect). */
  readonly unackedAtKill = new Set<string>();
  /** clientIds the server refused for good (`acked` rejected with a CommandError). */
  readonly rejected = new Map<string, string>();

  constructor(roomId: string) {
    this.roomId = roomId;
  }
}

export interface Counters {
  /** `send` frames the SDK wrote to a socket, resends included. */
  sendFrames: number;
  resendFrames: number;
  acks: number;
  /** Own messages delivered by a replay or history page before `ready`: their ack died with a kill. */
  settledByReplay: number;
  connects: number;
  connectFailures: number;
  gapFrames: number;
  /** Events received before `ready` on a connection resuming with after > 0. */
  replayed: number;
  /** Readers taken offline with setNetwork(false), and readers closed and started again. */
  offlinePauses: number;
  restarts: number;
  rateLimited: number;
  otherErrors: number;
}

export function newCounters(): Counters {
  return {
    sendFrames: 0,
    resendFrames: 0,
    acks: 0,
    settledByReplay: 0,
    connects: 0,
    connectFailures: 0,
    gapFrames: 0,
    replayed: 0,
    offlinePauses: 0,
    restarts: 0,
    rateLimited: 0,
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

export interface ClientOptions {
  /** The runtime, e.g. http://127.0.0.1:8795. */
  baseUrl: string;
  api: Api;
  user: User;
  roomId: string;
  key: string;
  /** Unacked messages allowed in the outbox; 0 makes a reader that never sends. */
  window: number;
  ratePerSecond: number;
  ledger: Ledger;
  counters: Counters;
  violations: Violations;
  random: () => number;
  log: (line: string) => void;
}

/**
 * Reconnect delays for the run. The SDK's default cap (30 s) would leave some clients waiting half
 * a minute after each restart; a 2 s cap keeps the resync after a kill short with the same full
 * jitter policy.
 */
const BACKOFF = { baseMs: 100, capMs: 2000 };

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

/** One user's view of one room: a sender (window > 0) or a reader that goes away now and then. */
export class ChaosClient {
  readonly o: ClientOptions;
  session: RoomSession;
  /** The last seq delivered through onEvent, over all of this client's sessions. */
  lastSeen = 0;
  /** Every event delivered: seq → its clientId ("" for none). */
  readonly seen = new Map<number, string>();
  /** Messages issued and neither acked nor refused yet. */
  readonly waiting = new Set<string>();
  issued = 0;
  producing = true;
  readonly #store = new MemoryOutboxStore();
  /** clientIds put on a socket at least once. */
  readonly #transmitted = new Set<string>();
  #tokens = 0;
  #pause: { timer: NodeJS.Timeout; end: () => void } | null = null;
  #stopped = false;

  constructor(o: ClientOptions) {
    this.o = o;
    this.session = this.#open();
  }

  get online(): boolean {
    return this.session.status.state === "online";
  }

  get sender(): boolean {
    return this.o.window > 0;
  }

  /** A new session resuming after the last seq this client was given, on the same outbox. */
  #open(): RoomSession {
    const { baseUrl, user, roomId, random } = this.o;
    // A getter, so that a token renewed after a 401 is what the SDK's next HTTP request carries.
    const conn: Connection = {
      baseUrl,
      get token() {
        return user.token;
      },
    };
    const session: RoomSession = new RoomSession({
      conn,
      roomId,
      transports: [this.#watched(websocketTransport(this.#opener()))],
      store: this.#store,
      after: this.lastSeen,
      random,
      backoff: BACKOFF,
      onEvent: (e) => this.#delivered(session, e),
    });
    void session.start();
    return session;
  }

  /** Node's opener: the `ws` package, which can send the Access header a browser's cookie would. */
  #opener(): SocketOpener {
    const { baseUrl, user, api, counters } = this.o;
    const base = baseUrl.replace(/^http/, "ws");
    return (path) =>
      new Promise<SocketLike>((resolve, reject) => {
        const ws = new WebSocket(base + path, {
          headers: { "Cf-Access-Jwt-Assertion": user.token },
          handshakeTimeout: 5000,
        });
        let opened = false;
        ws.once("open", () => {
          opened = true;
          counters.connects++;
          resolve(ws as unknown as SocketLike);
        });
        ws.once("error", (err) => {
          if (opened) return; // the transport's own listener reports it
          counters.connectFailures++;
          if (!/\b401\b/.test(err.message)) return reject(err);
          // A refused token: sign in again before failing, so the SDK's next attempt carries the new one.
          api
            .refresh(user)
            .catch(() => undefined) // the server is down again: the next attempt will tell
            .then(() => reject(err));
        });
      });
  }

  /** The SDK's transport, with the frames in both directions observed (never changed). */
  #watched(inner: TransportFactory): TransportFactory {
    return async (roomId, after, handlers) => {
      let ready = false;
      const transport = await inner(roomId, after, {
        frame: (f) => {
          this.#observe(f, after, ready);
          if (f.type === "ready") ready = true;
          handlers.frame(f);
        },
        closed: handlers.closed,
      });
      return {
        kind: transport.kind,
        send: (frame) => {
          const sent = transport.send(frame);
          if (sent && frame.type === "send") this.#transmittedOnce(frame.clientId);
          return sent;
        },
        close: () => transport.close(),
      };
    };
  }

  #transmittedOnce(clientId: string): void {
    const { counters, ledger } = this.o;
    counters.sendFrames++;
    if (!this.#transmitted.has(clientId)) {
      this.#transmitted.add(clientId);
      return;
    }
    counters.resendFrames++;
    ledger.resent.add(clientId);
  }

  #observe(f: ServerFrame, after: number, ready: boolean): void {
    const { counters, violations, ledger, key, log } = this.o;
    switch (f.type) {
      case "event":
      case "events":
        if (!ready && after > 0) counters.replayed += f.type === "event" ? 1 : f.events.length;
        return;
      case "gap":
      case "ready":
        if (f.type === "gap") counters.gapFrames++;
        // this.lastSeen was delivered, so the server had it: a restart must not forget it
        if (f.lastSeq < this.lastSeen)
          violations.add(
            "forgotten",
            `${key}: ${f.type}.lastSeq ${f.lastSeq} < ${this.lastSeen}, already delivered`,
          );
        return;
      case "ack": {
        const first = ledger.ackFrames.get(f.clientId);
        if (first === undefined) ledger.ackFrames.set(f.clientId, f.seq);
        else if (first !== f.seq)
          violations.add("ack-moved", `${f.clientId} acked with seq ${first}, later with ${f.seq}`);
        return;
      }
      case "error":
        if (f.code === "rate_limited") counters.rateLimited++;
        else if (++counters.otherErrors <= 5) log(`${key}: server error ${f.code}: ${f.message}`);
        return;
      default:
        return;
    }
  }

  /** onEvent: the SDK promises each event once, in seq order, with no hole, from `after` on. */
  #delivered(session: RoomSession, e: RoomEvent): void {
    const { violations, counters, key } = this.o;
    if (session !== this.session) {
      violations.add("after-close", `${key}: seq ${e.seq} delivered by a session already closed`);
      return;
    }
    const clientId = typeof e.clientId === "string" ? e.clientId : "";
    if (this.seen.has(e.seq)) {
      violations.add("delivered-twice", `${key}: seq ${e.seq} delivered again (last ${this.lastSeen})`);
      return;
    }
    if (e.seq < this.lastSeen) {
      violations.add("delivered-out-of-order", `${key}: seq ${e.seq} delivered after ${this.lastSeen}`);
    } else if (e.seq !== this.lastSeen + 1) {
      violations.add("delivered-skipping", `${key}: seq ${e.seq} delivered after ${this.lastSeen}`);
    }
    this.seen.set(e.seq, clientId);
    this.lastSeen = Math.max(this.lastSeen, e.seq);
    // Settled by the event itself before `ready`: stored before a kill that took its ack.
    if (this.waiting.has(clientId) && !this.online) counters.settledByReplay++;
  }

  /** Called every few ms: issues messages at the steady rate, keeping at most `window` unacked. */
  tick(dtSeconds: number): void {
    if (!this.producing || !this.sender || this.#stopped) return;
    const { ratePerSecond, window } = this.o;
    this.#tokens = Math.min(this.#tokens + ratePerSecond * dtSeconds, window);
    while (this.#tokens >= 1 && this.session.status.queued < window) {
      this.#tokens--;
      this.#issue();
    }
  }

  #issue(): void {
    const { ledger, user, key } = this.o;
    const n = ++this.issued;
    const token = tokenOf(key, n);
    const text = this.#text(n, token);
    const { clientId, acked } = this.session.send(text);
    ledger.sent.set(clientId, { text, authorId: user.id, sender: key, token });
    this.waiting.add(clientId);
    acked.then(
      (seq) => this.#acked(clientId, seq),
      (err: unknown) => this.#refused(clientId, err),
    );
  }

  #acked(clientId: string, seq: number): void {
    const { ledger, violations, counters } = this.o;
    this.waiting.delete(clientId);
    counters.acks++;
    ledger.acks.set(clientId, seq);
    const holder = ledger.ackedSeq.get(seq);
    if (holder === undefined) ledger.ackedSeq.set(seq, clientId);
    else violations.add("ack-collision", `seq ${seq} acked for both ${holder} and ${clientId}`);
  }

  #refused(clientId: string, err: unknown): void {
    const { ledger, violations, key } = this.o;
    this.waiting.delete(clientId);
    const code = err instanceof CommandError ? err.code : "unknown";
    ledger.rejected.set(clientId, code);
    violations.add("rejected", `${key}: ${clientId} refused with ${code}: ${show(String(err))}`);
  }

  /** A message's text: its sender and number, its own search token, then filler words. */
  #text(n: number, token: string): string {
    const words: string[] = [`chaos ${this.o.key} #${n} ${token}`];
    const count = Math.floor(this.o.random() * 12);
    for (let i = 0; i < count; i++) words.push(FILLER[Math.floor(this.o.random() * FILLER.length)] ?? "x");
    return words.join(" ");
  }

  /**
   * Goes away for `ms`, as a device does, and comes back resuming from the last seq it had:
   * "offline" tells the session the network is gone (setNetwork), "restart" closes it and starts
   * a new session with `after`, as an application opening the room again would.
   */
  pause(ms: number, how: "offline" | "restart"): void {
    if (this.#stopped || this.#pause) return;
    const { counters } = this.o;
    let end: () => void;
    if (how === "offline") {
      counters.offlinePauses++;
      this.session.setNetwork(false);
      end = () => this.session.setNetwork(true);
    } else {
      counters.restarts++;
      this.session.close();
      end = () => {
        this.session = this.#open();
      };
    }
    const timer = setTimeout(() => this.resume(), ms);
    this.#pause = { timer, end };
  }

  /** Ends a pause now. */
  resume(): void {
    const pause = this.#pause;
    if (!pause) return;
    this.#pause = null;
    clearTimeout(pause.timer);
    if (!this.#stopped) pause.end();
  }

  close(): void {
    this.#stopped = true;
    if (this.#pause) clearTimeout(this.#pause.timer);
    this.#pause = null;
    this.session.close();
  }
}
