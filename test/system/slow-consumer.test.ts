/**
 * Slow consumers against the real app (`npm start`'s server, started by the "app" project's global
 * setup): readers whose TCP sockets stop reading (`ws`'s `pause()`: nothing is read, the kernel's
 * buffers fill, and the server's writes back up) while a busy room goes on. The room keeps serving
 * everyone else, and what it writes to each stalled reader stays bounded: exactly what a reader
 * finds waiting when it reads again is what the room wrote while it was stopped.
 *
 * The app runs (test/browser/server.ts) with the default window (1 MiB), a budget of 1 MiB for
 * sockets that never confirm (PARLEY_UNCONFIRMED_STREAM_BYTES; 4 MiB by default) and a stall limit
 * of 10 s (PARLEY_FLOW_STALL_MS; 30 s by default), so that the test sends less and waits less.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { DEFAULT_LIMITS } from "../../config/limits.ts";
import { CLOSE } from "../../protocol/index.ts";
import { Api, type User } from "../../scripts/chaos/api.ts";
// The app's base URL is provided by the global setup (declared there).
import type {} from "../browser/global-setup.ts";
import { NodeRoomSocket } from "./node-socket.ts";

const WINDOW = DEFAULT_LIMITS.flowWindowBytes;
const BUDGET = 1024 * 1024;
const FRAME = DEFAULT_LIMITS.maxOutFrameChars + 64;
const STALL_MS = 10_000;
const TEXT = "y".repeat(12 * 1024);
const MESSAGES = 150; // 1.8 MiB: past both the window and the budget

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const seqs = (r: Reader) => r.events.map((e) => e.seq);

describe("readers that stop reading their sockets", () => {
  const base = inject("baseUrl");
  const api = new Api(base);
  const tenant = `slow${Date.now().toString(36)}`;
  const people: User[] = ["sender", "fast", "paused", "legacy", "stalled"].map((name) => ({
    email: `${name}@${tenant}.test`,
    name,
    tenant,
    token: "",
    id: "",
  }));
  const [sender, fast, paused, legacy, stalled] = people as [User, User, User, User, User];
  let roomId = "";
  const open: NodeRoomSocket[] = [];
  const socket = (u: User, flow: boolean, after = 0) => {
    const url = `${base.replace(/^http/, "ws")}/api/rooms/${roomId}/ws?after=${after}${flow ? "&flow=1" : ""}`;
    // Readers with flow control act like the SDK and send the ping first, which lets the room's
    // close complete at once (docs/protocol.md, close codes). The legacy reader, a v1 client that
    // predates flow control, sends nothing: its 4008 completes only when the runtime lets go of the
    // connection (about 10 s here; durable-objects/room-sockets.ts, `close`).
    const r = new NodeRoomSocket(url, {
      headers: { "Cf-Access-Jwt-Assertion": u.token },
      pingFirst: flow,
      confirming: flow,
    });
    open.push(r);
    return r;
  };

  beforeAll(async () => {
    for (const u of people) await api.login(u);
    const created = await api.request(sender, "POST", "/api/rooms", { name: "busy", kind: "channel" });
    expect(created.status).toBe(201);
    roomId = (created.body as { id: string }).id;
    for (const u of people.slice(1))
      expect((await api.request(u, "POST", `/api/rooms/${roomId}/join`)).status).toBe(200);
  });

  afterAll(() => {
    for (const r of open) r.ws.terminate();
  });

  it("keep the room serving everyone else, are written at most their window (or budget), and lose nothing", async () => {
    const readers = {
      fast: socket(fast, true),
      paused: socket(paused, true),
      legacy: socket(legacy, false), // no flow=1: a v1 client that predates flow control
      stalled: socket(stalled, true),
    };
    // With flow=1, but confirming nothing until they read again.
    readers.paused.confirming = false;
    readers.stalled.confirming = false;
    await Promise.all(Object.values(readers).map((r) => r.ready()));
    const start = readers.fast.lastSeq;
    for (const r of [readers.paused, readers.legacy, readers.stalled]) r.ws.pause();

    // A busy room: 150 messages of 12 KiB over HTTP, 8 at a time.
    let next = 0;
    const post = async () => {
      while (next < MESSAGES) {
        const i = next++;
        const res = await api.request(sender, "POST", `/api/rooms/${roomId}/messages`, {
          clientId: `m${i}`,
          text: `${i} ${TEXT}`,
        });
        expect(res.status).toBe(201);
      }
    };
    await Promise.all(Array.from({ length: 8 }, post));
    const last = start + MESSAGES;
    // The room kept serving the reader that reads: all of it, in order, once.
    await readers.fast.until(() => readers.fast.lastSeq >= last, "the fast reader has everything");
    expect(seqs(readers.fast)).toEqual(range(1, last));
    const sendsDone = Date.now();

    // The paused reader reads again: what it finds is what the room wrote while it was stopped.
    readers.paused.ws.resume();
    await readers.paused.drained();
    expect(readers.paused.closed).toBeNull();
    expect(readers.paused.eventBytes).toBeGreaterThan(WINDOW);
    expect(readers.paused.eventBytes).toBeLessThanOrEqual(WINDOW + FRAME);
    expect(readers.paused.lastSeq).toBeLessThan(last);
    // Confirming resumes it where it stopped: everything else, once, in order.
    readers.paused.confirming = true;
    readers.paused.confirm();
    await readers.paused.until(() => readers.paused.lastSeq >= last, "the paused reader catches up");
    expect(seqs(readers.paused)).toEqual(range(1, last));

    // The reader without flow control was closed at its budget; it resumes with `after`.
    readers.legacy.ws.resume();
    await readers.legacy.until(() => readers.legacy.closed !== null, "the legacy reader's close");
    expect(readers.legacy.closed?.code).toBe(CLOSE.slow.code);
    expect(readers.legacy.eventBytes).toBeGreaterThan(BUDGET);
    expect(readers.legacy.eventBytes).toBeLessThanOrEqual(BUDGET + FRAME);
    const resumed = socket(legacy, false, readers.legacy.lastSeq);
    await resumed.ready();
    expect([...seqs(readers.legacy), ...seqs(resumed)]).toEqual(range(1, last));

    // The reader that stays stopped past the stall limit is closed at the room's next event.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, sendsDone + STALL_MS + 500 - Date.now())));
    const trigger = await api.request(sender, "POST", `/api/rooms/${roomId}/messages`, {
      clientId: "trigger",
      text: "wake the stalled reader's check",
    });
    expect(trigger.status).toBe(201);
    await readers.fast.until(() => readers.fast.lastSeq >= last + 1, "the trigger message");
    readers.stalled.ws.resume();
    await readers.stalled.until(() => readers.stalled.closed !== null, "the stalled reader's close");
    expect(readers.stalled.closed?.code).toBe(CLOSE.slow.code);
    expect(readers.stalled.eventBytes).toBeLessThanOrEqual(WINDOW + FRAME);
    const back = socket(stalled, true, readers.stalled.lastSeq);
    await back.until(() => back.lastSeq >= last + 1, "the stalled reader resumes");
    expect([...seqs(readers.stalled), ...seqs(back)]).toEqual(range(1, last + 1));

    // Nothing the room acknowledged is missing from its log.
    const { events, problems } = await api.history(sender, roomId);
    expect(problems).toEqual([]);
    expect(events.map((e) => e.seq)).toEqual(range(1, last + 1));
  });
});
