/**
 * What a room session does after each kind of close (client/sdk/close-policy.ts applied by
 * RoomSession), on a fake transport and fake timers: when it reconnects is then exact, not a race.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  RoomSession,
  type SessionEnded,
  type StreamEnd,
  type TransportFactory,
} from "../../client/sdk/index.ts";
import { CLOSE } from "../../protocol/index.ts";

/** A transport that connects, says `ready`, and is closed by the server `after` ms later with `how`. */
function closingWith(how: StreamEnd, after = 10) {
  const attempts: number[] = [];
  const factory: TransportFactory = async (_roomId, _after, h) => {
    attempts.push(Date.now());
    void h.frame({ type: "ready", lastSeq: 0 });
    const timer = setTimeout(() => h.closed(how), after);
    return { kind: "websocket", send: () => true, close: () => clearTimeout(timer) };
  };
  return { factory, attempts };
}

function start(factory: TransportFactory, onEnded?: (e: SessionEnded) => void) {
  const s = new RoomSession({
    conn: { baseUrl: "http://parley.invalid" },
    roomId: "r_sessionclosetest000",
    transports: [factory],
    // Delays are exact: full jitter at 0.5 of the bound; the bound doubles from 1 s.
    backoff: { baseMs: 1000, capMs: 60_000 },
    random: () => 0.5,
    ...(onEnded ? { onEnded } : {}),
  });
  void s.start();
  return s;
}

describe("a session closed by the server", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("after a drop with no code of ours (1006), reconnects after the first backoff step", async () => {
    const t = closingWith({ code: 1006, reason: "" });
    const s = start(t.factory);
    await vi.advanceTimersByTimeAsync(10 + 499);
    expect(t.attempts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.attempts).toEqual([1_000_000, 1_000_510]);
    s.close();
  });

  it("after 4008, resumes at once", async () => {
    const t = closingWith(CLOSE.slow);
    const s = start(t.factory);
    await vi.advanceTimersByTimeAsync(10);
    expect(t.attempts).toEqual([1_000_000, 1_000_010]);
    await vi.advanceTimersByTimeAsync(10);
    expect(t.attempts).toEqual([1_000_000, 1_000_010, 1_000_020]);
    s.close();
  });

  it("after 1008, backs off (a 16 s bound here, 4 s with the default backoff), longer after each further 1008", async () => {
    const t = closingWith(CLOSE.policy);
    const s = start(t.factory);
    await vi.advanceTimersByTimeAsync(10 + 7999);
    expect(t.attempts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.attempts).toEqual([1_000_000, 1_008_010]);
    // The next one waits the step after (a 32 s bound, 0.5 of it), although it had been ready.
    await vi.advanceTimersByTimeAsync(10 + 16_000);
    expect(t.attempts).toEqual([1_000_000, 1_008_010, 1_024_020]);
    s.close();
  });

  it("after 4403, ends for good: one onEnded, state closed, never another attempt", async () => {
    const t = closingWith(CLOSE.removed);
    const ended: SessionEnded[] = [];
    const s = start(t.factory, (e) => ended.push(e));
    await vi.advanceTimersByTimeAsync(10);
    expect(ended).toEqual([{ roomId: "r_sessionclosetest000", reason: "removed" }]);
    expect(s.status.state).toBe("closed");
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(t.attempts).toHaveLength(1);
    expect(ended).toHaveLength(1);
  });
});
