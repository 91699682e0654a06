/**
 * @module How the idle bench (idle.ts) tells that the runtime evicted an idle object while its
 * hibernatable sockets stayed open.
 *
 * - The ceilings answer `GET /bare|durable/:name/info` with an instance id drawn at construction
 *   (bench/ceiling): a different id after the idle spell is a new instance.
 * - Parley's API has no such probe, so a witness watches state that only lives in the object's
 *   memory: the per-user rate-limit buckets (durable-objects/rate-limit.ts). With Parley started at
 *   `WITNESS_RATE` commands a second, a burst of charged pings before idling empties the witness
 *   user's bucket; after idling, the same burst shows how full it is. A room kept in memory refilled
 *   `WITNESS_RATE` tokens a second; a new instance starts with the whole burst.
 */
import WebSocket from "ws";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import { parseServerFrame } from "../protocol/index.ts";
import type { Endpoint, Target } from "./targets.ts";

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Parley's rate limit on the idle bench's server: slow enough that a bucket emptied before the
 * idle spell is still far from full after it (the spell must stay well under BURST / rate). */
export const WITNESS_RATE = 1;
export const BURST = DEFAULT_LIMITS.userCommandBurst;
/** Not the exact PING_FRAME, which the runtime answers itself without waking the object: this one
 * reaches the room, which answers `pong` and charges it like any command. */
const CHARGED_PING = '{"type": "ping"}';
const OPEN_TIMEOUT_MS = 20_000;

/** What a ceiling object says on `/info`. */
export interface Incarnation {
  instance: string;
  born: number;
  sockets: number;
}

/** Asks a ceiling object which instance it is (null for Parley, or when it does not answer). The
 * request wakes the object, so it must not fall inside an idle spell. */
export async function incarnation(target: Target, room: string): Promise<Incarnation | null> {
  if (target.name === "parley") return null;
  try {
    const res = await fetch(`${target.server.baseUrl}/${target.name}/${room}/info`, {
      signal: AbortSignal.timeout(10_000),
    });
    return res.ok ? ((await res.json()) as Incarnation) : null;
  } catch {
    return null;
  }
}

export interface Burst {
  pings: number;
  pongs: number;
  limited: number;
  /** When the last answer arrived (bench clock, ms). */
  at: number;
}

export interface WitnessResult {
  before: Burst;
  after: Burst;
  /** Most tokens a bucket kept in memory could hold when the second burst started. */
  keptMax: number;
}

/** A socket that spends its user's rate-limit tokens with charged pings and counts the answers. */
export class Witness {
  ws: WebSocket;
  pongs = 0;
  limited = 0;
  last = 0;

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data: Buffer) => {
      const frame = parseServerFrame(data.toString());
      if (frame?.type === "pong") this.pongs++;
      else if (frame?.type === "error" && frame.code === "rate_limited") this.limited++;
      else return;
      this.last = now();
    });
  }

  /** Opens the witness socket; resolves on the room's `ready`. */
  static open(endpoint: Endpoint): Promise<Witness> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(endpoint.url, { headers: endpoint.headers, perMessageDeflate: false });
      const fail = (err: Error) => {
        clearTimeout(timer);
        ws.terminate();
        reject(err);
      };
      const timer = setTimeout(() => fail(new Error("the witness socket got no ready")), OPEN_TIMEOUT_MS);
      const witness = new Witness(ws);
      ws.on("message", (data: Buffer) => {
        if (parseServerFrame(data.toString())?.type !== "ready") return;
        clearTimeout(timer);
        resolve(witness);
      });
      ws.on("error", fail);
      ws.on("close", () => fail(new Error("the witness socket closed")));
    });
  }

  /** Sends `n` charged pings at once; resolves when every one is answered (pong or refusal). */
  async burst(n: number): Promise<Burst> {
    const p0 = this.pongs;
    const l0 = this.limited;
    for (let i = 0; i < n; i++) this.ws.send(CHARGED_PING);
    const deadline = now() + 10_000;
    while (this.pongs - p0 + this.limited - l0 < n && now() < deadline) await sleep(10);
    return { pings: n, pongs: this.pongs - p0, limited: this.limited - l0, at: this.last };
  }
}

/** The witness's reading: "yes: …", "no: …" or why it cannot tell. */
export function witnessVerdict(w: WitnessResult | undefined): string {
  if (!w) return "unknown (no witness)";
  const seen = `${w.after.pongs} of ${w.after.pings} pings admitted after idling; kept in memory it would admit at most ${Math.floor(w.keptMax)}, a new instance ${BURST}`;
  if (w.before.limited === 0) return `unknown: the bucket was not emptied before idling (${seen})`;
  if (w.keptMax >= BURST - 2) return `unknown: idled too long for the rate-limit witness (${seen})`;
  if (w.after.pongs >= BURST - 1 && w.after.pongs > w.keptMax + 2)
    return `yes: its rate-limit bucket came back full (${seen})`;
  if (w.after.pongs <= w.keptMax + 1) return `no: its rate-limit bucket was kept (${seen})`;
  return `unclear (${seen})`;
}

/** The ceiling's reading, from its instance before and after the idle spell. */
export function incarnationVerdict(
  before: Incarnation | null | undefined,
  after: Incarnation | null | undefined,
  idleSeconds: number,
): string {
  if (!before || !after) return "unknown (no answer from /info)";
  if (before.instance === after.instance)
    return `no: the same instance answered after ${idleSeconds.toFixed(0)} s`;
  return `yes: a new instance woke for the message, holding ${after.sockets.toLocaleString("en-US")} sockets`;
}
