/**
 * @module The bench's Socket.IO + SQLite ceiling (bench/ceiling/socketio.ts) and the bench client's
 * Engine.IO framing for it (bench/cell.ts): a short cell delivers every acknowledged message to every
 * receiver once, in seq order, and the server refuses a socket without a valid room.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Cell, runCell } from "../../bench/cell.ts";
import type { Options } from "../../bench/options.ts";
import { type Server, startSocketio } from "../../bench/servers.ts";
import { socketioTarget, type Target } from "../../bench/targets.ts";

const root = resolve(import.meta.dirname, "../..");
let server: Server;
let target: Target;
let logDir: string;

beforeAll(async () => {
  logDir = mkdtempSync(join(tmpdir(), "parley-socketio-test-"));
  server = await startSocketio(root, logDir);
  target = socketioTarget(server);
}, 40_000);

afterAll(async () => {
  await server?.stop();
  rmSync(logDir, { recursive: true, force: true });
});

const options: Options = {
  quick: true,
  durationMs: 400,
  receivers: [],
  senders: [],
  modes: ["ack"],
  targets: [],
  window: 4,
  rate: 100,
  drainMs: 5000,
  stallMs: 3000,
  clientBound: 1,
  budgetMs: 60_000,
  out: "",
  parleyUrl: undefined,
};

test("every acknowledged message reaches every receiver once, in seq order", async () => {
  const r = await runCell(target, { mode: "ack", receivers: 3, senders: 2 }, options, "t-order", true);
  expect(r.error).toBeUndefined();
  expect(r.ok).toBe(true);
  expect(r.acked).toBeGreaterThan(10);
  expect(r.acked).toBe(r.sent);
  expect(r.delivered).toBe(r.acked * 3);
  expect([r.lost, r.duplicated, r.reordered, r.unacked]).toEqual([0, 0, 0, 0]);
  // Its memory and CPU are the Node process's, which the snapshots read.
  expect(r.memory?.after.count).toBe(1);
  expect(r.serverCpuMs).not.toBeNull();
}, 30_000);

test("a room's seq continues where it stopped", async () => {
  const first = await runCell(target, { mode: "rate", receivers: 1, senders: 1 }, options, "t-seq", false);
  const again = await runCell(target, { mode: "rate", receivers: 1, senders: 1 }, options, "t-seq", false);
  expect(first.ok && again.ok).toBe(true);
  // The receiver of the second run starts with no seq and must see the room's, past the first run's.
  const cell = new Cell("socketio", { mode: "rate", receivers: 1, senders: 1 }, 1);
  const room = await target.prepare("t-seq", 1, 1);
  await cell.open(room.receiver(0, 0), true, cell.receivers[0] ?? null, null);
  const sender = cell.senders[0];
  if (!sender) throw new Error("no sender");
  sender.ws = (await cell.open(room.sender(0, 0), true, null, sender)).ws;
  cell.sendingOpen = true;
  cell.sendOne(sender);
  await expect.poll(() => cell.receivers[0]?.lastSeq, { timeout: 5000 }).toBe(first.acked + again.acked + 1);
  await cell.closeAll();
}, 30_000);

test("a socket without a valid room is refused", async () => {
  const cell = new Cell("socketio", { mode: "ack", receivers: 1, senders: 0 }, 1);
  const url = `${server.baseUrl.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket&room=bad%20name`;
  await expect(cell.open({ url, headers: {} }, true, cell.receivers[0] ?? null, null)).rejects.toThrow(
    /closed before ready|refused/,
  );
  await cell.closeAll();
}, 15_000);
