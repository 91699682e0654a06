/**
 * @module One cell of the bench: N receivers and S senders in a fresh room of one target, one mode,
 * for a fixed duration, then a bounded drain, then the accounting.
 *
 * Every message a sender sends carries `{"s":sender,"c":counter,"t":send time}` as its text. A
 * receiver records each (s, c) it gets: a second copy is a duplicate, one that arrives after a later
 * one (by the room's seq, or by the sender's counter for BareBroadcast, which has no seq) is
 * reordered, and an acknowledged message a receiver never got is lost (counted per receiver).
 * Parley acknowledges with `ack`; the ceilings echo the frame to everyone, the sender included, and
 * the sender takes its own message as its ack. The Socket.IO ceiling is spoken in Engine.IO v4
 * framing over the same WebSocket client: the frame goes out as a `send` event
 * (`42["send",<frame>]`) and comes back as an `event` (`42["event",{"seq":N,"frame":<frame>}]`).
 */
import WebSocket from "ws";
import { eventsOf, parseServerFrame, Receipts } from "../protocol/index.ts";
import type { Mode, Options, TargetName } from "./options.ts";
import { reloadCount, type WorkerdSnapshot, workerdSnapshot } from "./servers.ts";
import { Bytes, Floats, type LatencySummary, Samples } from "./stats.ts";
import { type Endpoint, type PreparedRoom, pool, type Target } from "./targets.ts";

export interface CellSpec {
  mode: Mode;
  receivers: number;
  senders: number;
}

export interface MemoryResult {
  receivers: number;
  before: WorkerdSnapshot;
  after: WorkerdSnapshot;
}

export interface CellResult {
  target: TargetName;
  spec: CellSpec;
  ok: boolean;
  error?: string;
  durationMs: number;
  /** From the first send to the last delivery (at least the duration). */
  elapsedMs: number;
  drainMs: number;
  setupMs: number;
  sent: number;
  acked: number;
  /** Sends answered with an error frame (never counted as acked). */
  nacked: number;
  errorCodes: Record<string, number>;
  /** Sockets the server closed, or that dropped, before the end of the cell. */
  closes: string[];
  /** wrangler dev reloaded the worker during the cell (a source file changed): results are void. */
  reloaded: boolean;
  /** Sends neither acked nor refused by the end of the drain. */
  unacked: number;
  /** Mode "rate": sends skipped because a sender already had the maximum in flight. */
  throttled: number;
  /** Unique (receiver, message) deliveries. */
  delivered: number;
  /** Frames that carried them (Parley coalesces several events into one `events` frame). */
  frames: number;
  lost: number;
  /** Acked messages some receiver had not got yet when the drain ran out of time while the server
   * was still delivering (a backlog; counted as lost instead if deliveries had stalled). */
  pending: number;
  /** How the drain ended: everything accounted for, nothing moved for `stallMs`, or out of time. */
  drainEnd: DrainEnd;
  /** The server fell behind: a backlog at the drain deadline, or (mode B) under 95% of the
   * offered messages acked or more than 1 s to drain; latency then includes queueing that grows
   * with the duration. */
  overloaded: boolean;
  duplicated: number;
  reordered: number;
  gaps: number;
  latency: LatencySummary | null;
  ackLatency: LatencySummary | null;
  /** CPU used during the sending phase, as a fraction of one core. */
  clientCpu: number;
  serverCpu: number | null;
  /** CPU milliseconds of all the server's workerd processes from the first send to the end of the
   * drain (work the server defers past its acks, such as shipping to derived stores, included
   * as far as it is done by then); null when the server's processes are not ours to read. */
  serverCpuMs: number | null;
  clientBound: boolean;
  memory?: MemoryResult;
  /** Cores used by processes outside the bench and its servers while the cell ran (set by the
   * repeated benches, bench/repeats.ts): other work on the machine that the cell competed with. */
  otherCpu?: number;
}

const MAX_INFLIGHT_RATE_MODE = 2000;
const OPEN_TIMEOUT_MS = 20_000;
const OPEN_CONCURRENCY = 32;
const FILLER = "the quick brown fox jumps over the lazy dog";

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Payload {
  s: number;
  c: number;
  t: number;
}

function payloadOf(text: unknown): Payload | null {
  if (typeof text !== "string" || text.charCodeAt(0) !== 123) return null;
  try {
    const p = JSON.parse(text) as Payload;
    return typeof p.s === "number" && typeof p.c === "number" && typeof p.t === "number" ? p : null;
  } catch {
    return null;
  }
}

function counterOf(clientId: string): number {
  const i = clientId.indexOf("c", 1);
  return i < 0 ? -1 : Number(clientId.slice(i + 1));
}

class Receiver {
  seen: Bytes[] = [];
  unique = 0;
  dup = 0;
  reord = 0;
  lastSeq = 0;
  lastC: Float64Array;

  constructor(senders: number) {
    for (let s = 0; s < senders; s++) this.seen.push(new Bytes());
    this.lastC = new Float64Array(senders).fill(-1);
  }
}

class Sender {
  index: number;
  ws: WebSocket | null = null;
  next = 0;
  inflight = 0;
  acked = new Bytes();
  sentAt = new Floats();
  ackedCount = 0;
  nacked = 0;
  throttled = 0;

  constructor(index: number) {
    this.index = index;
  }
}

/**
 * One room's clients and their bookkeeping. Latency samples may be shared by several cells (many
 * rooms measured as one, fleet.ts).
 */
export class Cell {
  kind: TargetName;
  spec: CellSpec;
  /** Mode "ack": most unacknowledged sends per sender. */
  window: number;
  receivers: Receiver[] = [];
  senders: Sender[] = [];
  latency: Samples;
  ackLatency: Samples;
  delivered = 0;
  frames = 0;
  lastDelivery = 0;
  lastProgress = 0;
  sendingOpen = false;
  gaps = 0;
  errorCodes: Record<string, number> = {};
  sockets: WebSocket[] = [];
  /** Appended to every message text (the slow-consumers bench sends bigger messages). */
  padding = "";
  closing = false;
  /** Sockets the server closed (or that dropped) before the bench closed them. */
  closes: string[] = [];
  start = 0;

  constructor(
    kind: TargetName,
    spec: CellSpec,
    window: number,
    samples: { latency: Samples; ackLatency: Samples } = {
      latency: new Samples(),
      ackLatency: new Samples(),
    },
  ) {
    this.kind = kind;
    this.spec = spec;
    this.window = window;
    this.latency = samples.latency;
    this.ackLatency = samples.ackLatency;
    for (let r = 0; r < spec.receivers; r++) this.receivers.push(new Receiver(spec.senders));
    for (let s = 0; s < spec.senders; s++) this.senders.push(new Sender(s));
  }

  /** Sends the sender's next message; false when its socket is not open (it closed mid-cell). */
  sendOne(sender: Sender): boolean {
    const ws = sender.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const c = sender.next++;
    const t = now();
    const text = JSON.stringify({ s: sender.index, c, t, m: FILLER + this.padding });
    sender.sentAt.set(c, t);
    sender.inflight++;
    const frame = JSON.stringify({ type: "send", clientId: `s${sender.index}c${c}`, text });
    ws.send(this.kind === "socketio" ? `42["send",${frame}]` : frame);
    return true;
  }

  fillWindow(sender: Sender): void {
    while (this.sendingOpen && sender.inflight < this.window) if (!this.sendOne(sender)) return;
  }

  ack(sender: Sender, c: number, at: number): void {
    if (c < 0 || c >= sender.next || sender.acked.get(c) !== 0) return;
    sender.acked.set(c, 1);
    sender.ackedCount++;
    sender.inflight--;
    this.ackLatency.push(at - sender.sentAt.get(c));
    this.lastProgress = at;
    if (this.spec.mode === "ack") this.fillWindow(sender);
  }

  nack(sender: Sender, c: number, code: string, at: number): void {
    this.errorCodes[code] = (this.errorCodes[code] ?? 0) + 1;
    if (c < 0 || c >= sender.next || sender.acked.get(c) !== 0) return;
    sender.acked.set(c, 2);
    sender.nacked++;
    sender.inflight--;
    this.lastProgress = at;
    if (this.spec.mode === "ack") this.fillWindow(sender);
  }

  deliver(r: Receiver, p: Payload, seq: number, at: number): void {
    const seen = r.seen[p.s];
    if (!seen) return;
    const count = seen.get(p.c);
    if (count !== 0) {
      r.dup++;
      if (count < 255) seen.set(p.c, count + 1);
      return;
    }
    seen.set(p.c, 1);
    r.unique++;
    this.delivered++;
    this.latency.push(at - p.t);
    this.lastDelivery = at;
    this.lastProgress = at;
    if (this.kind === "bare") {
      if (p.c < (r.lastC[p.s] as number)) r.reord++;
      else r.lastC[p.s] = p.c;
    } else if (seq < r.lastSeq) r.reord++;
    else r.lastSeq = seq;
  }

  /** Handles one frame for a receiver (`r`) or a sender (`s`); resolves `ready` with the last seq. */
  /** Handles one frame; returns the seq of the last event it carried (Parley), else 0. */
  onFrame(raw: string, r: Receiver | null, s: Sender | null, ready: (lastSeq: number) => void): number {
    const at = now();
    if (this.kind === "parley") {
      const frame = parseServerFrame(raw);
      if (!frame) return 0;
      switch (frame.type) {
        case "event":
        case "events": {
          const events = eventsOf(frame);
          if (!r) return events.at(-1)?.seq ?? 0;
          this.frames++;
          for (const ev of events) {
            if (ev.kind !== "message") continue;
            const p = payloadOf(ev.text);
            if (p) this.deliver(r, p, ev.seq, at);
          }
          return events.at(-1)?.seq ?? 0;
        }
        case "ack":
          if (s) this.ack(s, counterOf(frame.clientId), at);
          return 0;
        case "ready":
          ready(frame.lastSeq);
          return 0;
        case "gap":
          this.gaps++;
          ready(frame.lastSeq);
          return 0;
        case "error":
          if (s && typeof frame.clientId === "string")
            this.nack(s, counterOf(frame.clientId), frame.code, at);
          else this.errorCodes[frame.code] = (this.errorCodes[frame.code] ?? 0) + 1;
          return 0;
        default:
          return 0;
      }
    }
    type Sent = { text?: unknown; clientId?: unknown };
    type Echo = Sent & { seq?: unknown; frame?: Sent };
    let o: Echo | undefined;
    try {
      o = this.kind === "socketio" ? (JSON.parse(raw.slice(2)) as [string, Echo])[1] : JSON.parse(raw);
    } catch {
      return 0;
    }
    if (!o) return 0;
    const inner = this.kind === "bare" ? o : o.frame;
    if (!inner) return 0;
    const p = payloadOf(inner.text);
    if (!p) return 0;
    if (r) {
      this.frames++;
      this.deliver(r, p, typeof o.seq === "number" ? o.seq : 0, at);
    }
    if (s && p.s === s.index && typeof inner.clientId === "string")
      this.ack(s, counterOf(inner.clientId), at);
    return 0;
  }

  open(
    endpoint: Endpoint,
    hasReady: boolean,
    r: Receiver | null,
    s: Sender | null,
  ): Promise<{ ws: WebSocket; lastSeq: number }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(endpoint.url, {
        headers: endpoint.headers,
        perMessageDeflate: false,
        skipUTF8Validation: true,
        handshakeTimeout: OPEN_TIMEOUT_MS,
        maxPayload: 16 * 1024 * 1024,
      });
      this.sockets.push(ws);
      let settled = false;
      const timer = setTimeout(
        () => fail(new Error(`no ready within ${OPEN_TIMEOUT_MS / 1000} s`)),
        OPEN_TIMEOUT_MS,
      );
      const done = (lastSeq: number) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ws, lastSeq });
      };
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.terminate();
        reject(err);
      };
      // Flow control (Parley sockets are opened with flow=1): confirm what was read, as the SDK does.
      const receipts = new Receipts();
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        if (isBinary) return;
        const raw = data.toString();
        if (this.kind === "socketio" && !engineIoEvent(ws, raw, done, fail)) return;
        const seq = this.onFrame(raw, r, s, done);
        const due = seq === 0 ? null : receipts.handled(data.length, seq);
        if (due) ws.send(JSON.stringify(due));
      });
      ws.on("open", () => {
        if (!hasReady) done(0);
      });
      ws.on("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d.toString();
        });
        res.on("end", () => fail(new Error(`upgrade answered ${res.statusCode}: ${body.slice(0, 200)}`)));
        res.on("error", () => fail(new Error(`upgrade answered ${res.statusCode}`)));
      });
      ws.on("error", (err) => fail(err));
      ws.on("close", (code, reason) => {
        if (!settled) fail(new Error(`closed before ready: ${code} ${reason.toString()}`));
        else if (!this.closing) {
          this.errorCodes[`close_${code}`] = (this.errorCodes[`close_${code}`] ?? 0) + 1;
          const who = r ? `receiver ${this.receivers.indexOf(r)}` : `sender ${s?.index}`;
          const when =
            this.start > 0 ? `${((now() - this.start) / 1000).toFixed(2)} s into the cell` : "during setup";
          this.closes.push(`${who} closed ${code} ${reason.toString()} ${when}`.replace(/\s+/g, " "));
        }
      });
    });
  }

  async closeAll(): Promise<void> {
    this.closing = true;
    const open = this.sockets.filter(
      (ws) => ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING,
    );
    const closed = Promise.all(
      open.map(
        (ws) =>
          new Promise<void>((resolve) =>
            ws.readyState === WebSocket.CLOSED ? resolve() : ws.once("close", () => resolve()),
          ),
      ),
    );
    for (const ws of open) {
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, "bench done");
      else ws.terminate();
    }
    await Promise.race([closed, sleep(3000)]);
    for (const ws of this.sockets) if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
  }
}

/**
 * Engine.IO v4 framing of the Socket.IO ceiling: answers the open packet (`0{…}`) with the default
 * namespace's CONNECT (`40`) and each ping (`2`) with a pong (`3`); the CONNECT's answer (`40{…}`)
 * makes the socket ready, a CONNECT_ERROR (`44…`) fails it. True for an event packet (`42…`), which
 * is the cell's to read.
 */
function engineIoEvent(
  ws: WebSocket,
  raw: string,
  ready: (lastSeq: number) => void,
  fail: (err: Error) => void,
): boolean {
  if (raw.startsWith("42")) return true;
  if (raw === "2") ws.send("3");
  else if (raw.startsWith("40")) ready(0);
  else if (raw.startsWith("0")) ws.send("40");
  else if (raw.startsWith("44")) fail(new Error(`Socket.IO refused the connection: ${raw.slice(2, 200)}`));
  return false;
}

/**
 * Opens a cell's clients: the first receiver alone (it learns where the room's log ends, Parley:
 * after the joins, so that the others skip that replay and the ordering check starts there), the
 * other receivers, then `between` (the memory snapshot), then the senders.
 */
export async function connectCell(
  cell: Cell,
  target: Target,
  room: PreparedRoom,
  between?: () => Promise<void>,
): Promise<void> {
  const first = await cell.open(room.receiver(0, 0), target.hasReady, cell.receivers[0] as Receiver, null);
  const after = first.lastSeq;
  (cell.receivers[0] as Receiver).lastSeq = after;
  const rest = Array.from({ length: cell.spec.receivers - 1 }, (_, k) => k + 1);
  await pool(rest, OPEN_CONCURRENCY, async (i) => {
    const rcv = cell.receivers[i] as Receiver;
    rcv.lastSeq = after;
    const { lastSeq } = await cell.open(room.receiver(i, after), target.hasReady, rcv, null);
    if (lastSeq > rcv.lastSeq) rcv.lastSeq = lastSeq;
  });
  if (between) await between();
  await pool(cell.senders, OPEN_CONCURRENCY, async (s) => {
    s.ws = (await cell.open(room.sender(s.index, after), target.hasReady, null, s)).ws;
  });
}

/**
 * Mode "rate": sends what is due `elapsedMs` into the phase from every sender of `cells`, each at
 * `perSender` msg/s, their schedules staggered evenly so that the senders (of all rooms) do not
 * fire together. A sender with the maximum in flight skips the send (`throttled`).
 */
export function sendDue(cells: Cell[], perSender: number, elapsedMs: number): void {
  const total = cells.reduce((n, c) => n + c.senders.length, 0);
  let k = 0;
  for (const cell of cells) {
    for (const s of cell.senders) {
      const due = Math.floor((elapsedMs / 1000) * perSender + (k + 0.5) / total);
      k++;
      while (s.next + s.throttled < due) {
        if (s.inflight >= MAX_INFLIGHT_RATE_MODE) s.throttled++;
        else if (!cell.sendOne(s)) break;
      }
    }
  }
}

export type DrainEnd = "settled" | "stalled" | "deadline";

/** Waits until every send of `cells` is answered and every receiver has every acked message of
 * its room, or nothing moved anywhere for `stallMs`, or `drainMs` passed. */
export async function drainCells(cells: Cell[], drainMs: number, stallMs: number): Promise<DrainEnd> {
  const deadline = now() + drainMs;
  for (;;) {
    const t = now();
    const settled = cells.every((cell) => {
      const acked = cell.senders.reduce((n, s) => n + s.ackedCount, 0);
      return cell.senders.every((s) => s.inflight === 0) && cell.receivers.every((r) => r.unique >= acked);
    });
    if (settled) return "settled";
    if (t - Math.max(...cells.map((c) => c.lastProgress)) >= stallMs) return "stalled";
    if (t >= deadline) return "deadline";
    await sleep(20);
  }
}

/** The counts of a finished run, summed over `cells`. */
export interface Tally {
  sent: number;
  acked: number;
  nacked: number;
  unacked: number;
  throttled: number;
  delivered: number;
  frames: number;
  /** (receiver, acked message) pairs never received: lost, or pending if the drain ran out. */
  missing: number;
  duplicated: number;
  reordered: number;
  gaps: number;
}

export function tally(cells: Cell[]): Tally {
  const t: Tally = {
    sent: 0,
    acked: 0,
    nacked: 0,
    unacked: 0,
    throttled: 0,
    delivered: 0,
    frames: 0,
    missing: 0,
    duplicated: 0,
    reordered: 0,
    gaps: 0,
  };
  for (const cell of cells) {
    for (const s of cell.senders) {
      t.sent += s.next;
      t.acked += s.ackedCount;
      t.nacked += s.nacked;
      t.unacked += s.inflight;
      t.throttled += s.throttled;
    }
    for (const r of cell.receivers) {
      t.duplicated += r.dup;
      t.reordered += r.reord;
      for (const s of cell.senders) {
        const seen = r.seen[s.index] as Bytes;
        for (let c = 0; c < s.next; c++) if (s.acked.get(c) === 1 && seen.get(c) === 0) t.missing++;
      }
    }
    t.delivered += cell.delivered;
    t.frames += cell.frames;
    t.gaps += cell.gaps;
  }
  return t;
}

/** Runs one cell against one target; never throws (a failure is a result with `ok: false`). */
export async function runCell(
  target: Target,
  spec: CellSpec,
  opts: Options,
  roomName: string,
  measureMemory: boolean,
): Promise<CellResult> {
  const cell = new Cell(target.name, spec, opts.window);
  const reloads = reloadCount(target.server);
  const t0 = performance.now();
  const result: CellResult = {
    target: target.name,
    spec,
    ok: false,
    durationMs: opts.durationMs,
    elapsedMs: 0,
    drainMs: 0,
    setupMs: 0,
    sent: 0,
    acked: 0,
    nacked: 0,
    errorCodes: cell.errorCodes,
    closes: cell.closes,
    reloaded: false,
    unacked: 0,
    throttled: 0,
    delivered: 0,
    frames: 0,
    lost: 0,
    pending: 0,
    drainEnd: "settled",
    overloaded: false,
    duplicated: 0,
    reordered: 0,
    gaps: 0,
    latency: null,
    ackLatency: null,
    clientCpu: 0,
    serverCpu: null,
    serverCpuMs: null,
    clientBound: false,
  };
  try {
    const room = await target.prepare(roomName, spec.receivers, spec.senders);
    const before = measureMemory ? workerdSnapshot(target.server) : null;
    await connectCell(cell, target, room, async () => {
      if (!measureMemory || !before) return;
      await sleep(300);
      result.memory = { receivers: spec.receivers, before, after: workerdSnapshot(target.server) };
    });
    result.setupMs = performance.now() - t0;

    // Sending phase.
    const cpu0 = process.cpuUsage();
    const srv0 = workerdSnapshot(target.server);
    const start = now();
    cell.lastProgress = start;
    cell.start = start;
    cell.sendingOpen = true;
    let timer: NodeJS.Timeout | null = null;
    if (spec.mode === "ack") {
      for (const s of cell.senders) cell.fillWindow(s);
    } else {
      const perSender = opts.rate / spec.senders;
      const tick = () => {
        const elapsed = now() - start;
        if (elapsed < opts.durationMs) sendDue([cell], perSender, elapsed);
      };
      tick();
      timer = setInterval(tick, 1);
    }
    await sleep(Math.max(0, start + opts.durationMs - now()));
    cell.sendingOpen = false;
    if (timer) clearInterval(timer);
    const cpu1 = process.cpuUsage(cpu0);
    const srv1 = workerdSnapshot(target.server);
    const sendEnd = now();

    result.drainEnd = await drainCells([cell], opts.drainMs, opts.stallMs);
    result.drainMs = now() - sendEnd;
    const srv2 = workerdSnapshot(target.server);
    result.serverCpuMs = srv0.count > 0 ? (srv2.ticks - srv0.ticks) * 10 : null;

    // Accounting.
    const wallMs = sendEnd - start;
    result.clientCpu = (cpu1.user + cpu1.system) / 1000 / wallMs;
    result.clientBound = result.clientCpu > opts.clientBound;
    result.serverCpu = srv0.count > 0 ? ((srv1.ticks - srv0.ticks) * 10) / wallMs : null;
    const { missing, ...counts } = tally([cell]);
    Object.assign(result, counts);
    // Still arriving when the drain ran out of time: a backlog, not a loss.
    if (result.drainEnd === "deadline") result.pending = missing;
    else result.lost = missing;
    const offered = spec.mode === "rate" ? (opts.rate * opts.durationMs) / 1000 : 0;
    // A server that keeps up with a fixed rate has delivered nearly everything when the sending
    // stops; one that needs more than a second after that was queueing.
    result.overloaded =
      result.drainEnd === "deadline" ||
      (spec.mode === "rate" && (result.acked < 0.95 * offered || result.drainMs > 1000));
    result.elapsedMs = Math.max(opts.durationMs, cell.lastDelivery - start);
    result.latency = cell.latency.summary();
    result.ackLatency = cell.ackLatency.summary();
    result.ok = true;
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
  } finally {
    cell.sendingOpen = false;
    await cell.closeAll();
  }
  result.reloaded = reloadCount(target.server) !== reloads;
  return result;
}
