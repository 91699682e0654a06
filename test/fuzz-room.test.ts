/**
 * Model-based fuzzing of the real Room object through its public surface: random runs of valid
 * commands (send, edit, delete, react on good and bad targets, retries of earlier clientIds), reads,
 * pings and typing, mixed with malformed frames (garbage, wrong types, oversize, binary), over a real
 * WebSocket; and random malformed or refused HTTP commands. A model of the room predicts every answer.
 *
 * After each run: every command got exactly the ack or typed error the model predicts, with its
 * clientId; the socket stayed open, or closed 1008 exactly at the 10th malformed frame within 10 s
 * (docs/protocol.md); every ack came after its event; the socket saw each event once, in order;
 * history is gapless 1..lastSeq and equal to the model, with one event per acked clientId at its acked
 * seq; bursts of malformed frames (and refused HTTP commands) left history unchanged; nothing
 * answered 500.
 */
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../config/limits.ts";
import { ERROR_STATUS, parseServerFrame, type RoomEvent, type ServerFrame } from "../protocol/index.ts";
import {
  api,
  authHeaders,
  Client,
  createRoom,
  fetchWorker,
  join,
  json,
  login,
  type User,
  unique,
} from "./helpers.ts";
import { Waits } from "./waits.ts";

/** Socket runs (about 45 frames each, each run a new room), and HTTP requests against one room. */
const SOCKET_RUNS = 60;
const HTTP_REQUESTS = 1_000;

const tally = {
  runs: 0,
  frames: 0,
  malformed: 0,
  commands: 0,
  acks: 0,
  refused: 0,
  closes: 0,
  http: 0,
};
const crashes: string[] = [];

afterAll(() => {
  console.log(
    `fuzz: ${tally.runs} socket runs, ${tally.frames} frames (${tally.malformed} malformed), ` +
      `${tally.commands} commands (${tally.acks} acked, ${tally.refused} refused), ` +
      `${tally.closes} closes 1008, ` +
      `${tally.http} http requests, ${crashes.length} crashes`,
  );
});

// ---------------------------------------------------------------------------------------------
// A raw protocol socket: sends any frame (binary too), records every answer and how it closed.

type Answer =
  | { type: "ack"; clientId: string; seq: number }
  | { type: "error"; code: string; clientId?: string };

class FuzzSocket {
  readonly frames: ServerFrame[] = [];
  readonly events: RoomEvent[] = [];
  closed: { code: number; reason: string } | null = null;
  /** Highest seq received when each ack arrived, to check that acks follow their events. */
  readonly ackAfter: { seq: number; seen: number }[] = [];
  readonly #waits = new Waits();

  readonly ws: WebSocket;
  /** The `after` it connected with: its events must be after+1, after+2, … */
  readonly after: number;

  private constructor(ws: WebSocket, after: number) {
    this.ws = ws;
    this.after = after;
    ws.addEventListener("message", (e) => {
      const frame = parseServerFrame(typeof e.data === "string" ? e.data : "");
      if (!frame) {
        crashes.push(`a server frame that is not JSON: ${String(e.data).slice(0, 100)}`);
        return;
      }
      this.frames.push(frame);
      if (frame.type === "event") this.events.push(frame.event);
      if (frame.type === "events") this.events.push(...frame.events);
      if (frame.type === "ack")
        this.ackAfter.push({ seq: frame.seq, seen: this.events.at(-1)?.seq ?? this.after });
      if (frame.type === "error" && frame.code === "internal") crashes.push(`internal: ${frame.message}`);
      this.#waits.wake();
    });
    ws.addEventListener("close", (e) => {
      this.closed = { code: e.code, reason: e.reason };
      this.#waits.wake();
    });
  }

  static async open(user: User, roomId: string, after: number): Promise<FuzzSocket> {
    const res = await Client.upgrade(user, roomId, `after=${after}`);
    if (!res.webSocket) throw new Error(`upgrade refused: ${res.status} ${await res.text()}`);
    res.webSocket.accept();
    const socket = new FuzzSocket(res.webSocket, after);
    await socket.until(() => socket.frames.some((f) => f.type === "ready"), "ready");
    return socket;
  }

  send(frame: string | ArrayBuffer): void {
    this.ws.send(frame);
  }

  until(check: () => boolean, what: string, ms = 15_000): Promise<void> {
    return this.#waits.until(check, what, ms, () => this.closed?.code ?? null);
  }

  /** Acks, errors and pongs from frame `from` on. */
  answers(from: number): (Answer | { type: "pong" })[] {
    return this.frames.slice(from).flatMap((f): (Answer | { type: "pong" })[] => {
      if (f.type === "ack") return [{ type: "ack", clientId: f.clientId, seq: f.seq }];
      if (f.type === "error")
        return [
          f.clientId === undefined
            ? { type: "error", code: f.code }
            : { type: "error", code: f.code, clientId: f.clientId },
        ];
      if (f.type === "pong") return [{ type: "pong" }];
      return [];
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The model: the room's rules as docs/protocol.md states them

type Expected = Record<string, unknown> & { seq: number; kind: string };
interface Message {
  seq: number;
  author: string;
  deleted: boolean;
  threadRoot: number | null;
}
type Outcome = { ok: true; seq: number } | { ok: false; code: string };
type Command =
  | { type: "send"; clientId: string; text: string; threadRoot?: number }
  | { type: "edit"; clientId: string; target: number; text: string }
  | { type: "delete"; clientId: string; target: number }
  | { type: "react"; clientId: string; target: number; emoji: string; on: boolean };

class RoomModel {
  readonly events: Expected[] = [];
  readonly messages = new Map<number, Message>();
  readonly reactions = new Set<string>();
  /** `${authorId} ${clientId}` → seq: a retry answers the original seq. */
  readonly clientIds = new Map<string, number>();

  /** The log as it stood before the run (set up over HTTP, not under test here). */
  constructor(history: RoomEvent[]) {
    for (const e of history) {
      const { ts: _ts, ...rest } = e;
      this.events.push(rest as Expected);
      if (e.clientId) this.clientIds.set(`${e.author.id} ${e.clientId}`, e.seq);
      if (e.kind === "message")
        this.messages.set(e.seq, {
          seq: e.seq,
          author: e.author.id,
          deleted: e.deleted === true,
          threadRoot: e.threadRoot ?? null,
        });
      if (e.kind === "reaction") {
        const key = `${e.target} ${e.author.id} ${e.emoji}`;
        if (e.on) this.reactions.add(key);
        else this.reactions.delete(key);
      }
    }
  }

  get lastSeq(): number {
    return this.events.length;
  }

  /** What the room answers `actor` (an owner: may delete anyone's message) for `cmd`. */
  apply(actor: User, cmd: Command): Outcome {
    const key = `${actor.id} ${cmd.clientId}`;
    const original = this.clientIds.get(key);
    // A repeated clientId answers the original seq before any rule is checked.
    if (original !== undefined) return { ok: true, seq: original };
    const author = { id: actor.id, name: actor.name };
    const base = { author, clientId: cmd.clientId };
    let event: Omit<Expected, "seq">;
    if (cmd.type === "send") {
      if (cmd.threadRoot !== undefined) {
        const root = this.messages.get(cmd.threadRoot);
        if (!root) return { ok: false, code: "not_found" };
        // Threads are one level deep.
        if (root.threadRoot !== null) return { ok: false, code: "bad_request" };
      }
      event = { kind: "message", ...base, text: cmd.text };
      if (cmd.threadRoot !== undefined) event.threadRoot = cmd.threadRoot;
    } else {
      const target = this.messages.get(cmd.target);
      if (!target) return { ok: false, code: "not_found" };
      if (cmd.type === "edit" && target.author !== actor.id) return { ok: false, code: "forbidden" };
      if (target.deleted) return { ok: false, code: "conflict" };
      if (cmd.type === "react") {
        const reaction = `${cmd.target} ${actor.id} ${cmd.emoji}`;
        // A react that would change nothing is a conflict and writes nothing.
        if (this.reactions.has(reaction) === cmd.on) return { ok: false, code: "conflict" };
        if (cmd.on) this.reactions.add(reaction);
        else this.reactions.delete(reaction);
        event = { kind: "reaction", ...base, target: cmd.target, emoji: cmd.emoji, on: cmd.on };
      } else if (cmd.type === "edit") {
        event = { kind: "edit", ...base, target: cmd.target, text: cmd.text };
      } else {
        event = { kind: "delete", ...base, target: cmd.target };
        // The message and its edits keep their seqs; their text is gone.
        target.deleted = true;
        for (const e of this.events) {
          if (
            (e.seq === cmd.target && e.kind === "message") ||
            (e.kind === "edit" && e.target === cmd.target)
          ) {
            e.text = "";
            e.deleted = true;
            delete e.attachments;
          }
        }
        for (const r of [...this.reactions]) if (r.startsWith(`${cmd.target} `)) this.reactions.delete(r);
      }
    }
    const seq = this.lastSeq + 1;
    this.events.push({ seq, ...event } as Expected);
    if (cmd.type === "send")
      this.messages.set(seq, { seq, author: actor.id, deleted: false, threadRoot: cmd.threadRoot ?? null });
    this.clientIds.set(key, seq);
    return { ok: true, seq };
  }

  /** Seqs to aim commands at, by what the model knows of them. */
  targets(kind: TargetKind, actor: User): number[] {
    const all = [...this.messages.values()];
    switch (kind) {
      case "own":
        return all.filter((m) => m.author === actor.id && !m.deleted).map((m) => m.seq);
      case "other":
        return all.filter((m) => m.author !== actor.id && !m.deleted).map((m) => m.seq);
      case "deleted":
        return all.filter((m) => m.deleted).map((m) => m.seq);
      case "reply":
        return all.filter((m) => m.threadRoot !== null).map((m) => m.seq);
      case "notMessage":
        return this.events.filter((e) => e.kind !== "message").map((e) => e.seq);
      case "beyond":
        return [this.lastSeq + 1, this.lastSeq + 2, this.lastSeq + 1000];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// What a run sends

type TargetKind = "own" | "other" | "deleted" | "reply" | "notMessage" | "beyond";
interface Target {
  kind: TargetKind;
  pick: number;
}
/** A fresh clientId, or one of the run's earlier ones (acked or refused) sent again. */
type IdRef = { fresh: true } | { fresh: false; pick: number };

type Spec =
  | { kind: "send"; id: IdRef; text: string; root: Target | null }
  | { kind: "edit"; id: IdRef; target: Target; text: string }
  | { kind: "delete"; id: IdRef; target: Target }
  | { kind: "react"; id: IdRef; target: Target; emoji: string; on: boolean }
  | { kind: "read"; target: Target }
  | { kind: "ping"; exact: boolean }
  | { kind: "typing" }
  | { kind: "bad"; bad: Bad; id: IdRef };

/** Malformed frames: refused by the parser, so they count as strikes towards close 1008. */
type Bad =
  | { kind: "garbage"; text: string }
  | { kind: "notObject"; json: string }
  | { kind: "binary"; size: number }
  | { kind: "oversizeFrame" }
  | { kind: "fields"; frame: Record<string, unknown>; withId: boolean; code: "bad_request" | "too_large" }
  | { kind: "raw"; json: (clientId: string) => string; withId: boolean };

const EDGE = [
  "\u0000",
  "\u2028",
  "\ufeff",
  "\u202e",
  "\u200b",
  "\ud800",
  "\udfff",
  "😀",
  "👨‍👩‍👧",
  "e\u0301",
  '"',
  "\\",
  "<b>",
];
const textArb = fc.oneof(
  { weight: 6, arbitrary: fc.string({ minLength: 1, maxLength: 40 }).filter((t) => t.trim() !== "") },
  {
    weight: 3,
    arbitrary: fc
      .array(fc.oneof(fc.constantFrom(...EDGE), fc.string({ unit: "binary", minLength: 1, maxLength: 1 })), {
        minLength: 1,
        maxLength: 12,
      })
      .map((a) => `x${a.join("")}`),
  },
  // Exactly at the text limit, in two- and four-byte characters.
  { weight: 1, arbitrary: fc.constantFrom("é".repeat(8192), "😀".repeat(4096), "a".repeat(16_384)) },
);
const EMOJI = ["👍", "🎉", "👍🏽", "+1"];
const targetArb: fc.Arbitrary<Target> = fc.record({
  kind: fc.constantFrom<TargetKind>("own", "own", "other", "deleted", "reply", "notMessage", "beyond"),
  pick: fc.nat(),
});
const idArb: fc.Arbitrary<IdRef> = fc.oneof(
  { weight: 4, arbitrary: fc.constant({ fresh: true as const }) },
  { weight: 1, arbitrary: fc.record({ fresh: fc.constant(false as const), pick: fc.nat() }) },
);

const notJson = fc
  .oneof(
    fc.string({ maxLength: 30 }),
    fc.constantFrom("{nope", "{", "}", "[", "undefined", "NaN", "{'type':'send'}", '{"type":"send",}', ""),
  )
  .filter((t) => {
    try {
      JSON.parse(t);
      return false;
    } catch {
      return true;
    }
  });

const badArb: fc.Arbitrary<Bad> = fc.oneof(
  fc.record({ kind: fc.constant("garbage" as const), text: notJson }),
  fc.record({
    kind: fc.constant("notObject" as const),
    json: fc.oneof(
      fc.constantFrom("null", "[]", "1", '"send"', "true", '[{"type":"send","clientId":"a","text":"x"}]'),
      fc
        .jsonValue({ maxDepth: 2 })
        .filter((v) => typeof v !== "object" || v === null || Array.isArray(v))
        .map((v) => JSON.stringify(v)),
    ),
  }),
  fc.record({ kind: fc.constant("binary" as const), size: fc.nat(64) }),
  fc.constant({ kind: "oversizeFrame" as const }),
  // A valid command with one field broken; `withId`: the error carries the frame's clientId.
  fc
    .oneof(
      fc.constantFrom(
        { frame: { type: "send", text: "no id" }, withId: false },
        { frame: { type: "send", clientId: "", text: "x" }, withId: false },
        { frame: { type: "send", clientId: "has space", text: "x" }, withId: false },
        { frame: { type: "send", clientId: "a".repeat(65), text: "x" }, withId: false },
        { frame: { type: "edit", clientId: 7, target: 3, text: "x" }, withId: false },
        { frame: { type: "read", seq: 0 }, withId: false },
        { frame: { type: "read", seq: "2" }, withId: false },
        { frame: { type: "read", seq: 1.5 }, withId: false },
        { frame: { type: "shout" }, withId: true },
        { frame: { type: "Send", text: "x" }, withId: true },
        { frame: { text: "no type" }, withId: true },
        { frame: { type: null }, withId: true },
        { frame: { type: "send" }, withId: true },
        { frame: { type: "send", text: 42 }, withId: true },
        { frame: { type: "send", text: ["x"] }, withId: true },
        { frame: { type: "send", text: "   \n\t" }, withId: true },
        { frame: { type: "send", text: "x", threadRoot: "1" }, withId: true },
        { frame: { type: "send", text: "x", threadRoot: 0 }, withId: true },
        { frame: { type: "send", text: "x", attachments: "a1" }, withId: true },
        { frame: { type: "send", text: "x", attachments: Array(11).fill("a") }, withId: true },
        { frame: { type: "edit", target: 0, text: "x" }, withId: true },
        { frame: { type: "edit", target: -1, text: "x" }, withId: true },
        { frame: { type: "edit", target: 2.5, text: "x" }, withId: true },
        { frame: { type: "edit", target: "3", text: "x" }, withId: true },
        { frame: { type: "edit", target: 3 }, withId: true },
        { frame: { type: "edit", target: 3, text: "" }, withId: true },
        { frame: { type: "delete" }, withId: true },
        { frame: { type: "delete", target: null }, withId: true },
        { frame: { type: "delete", target: 2 ** 53 }, withId: true },
        { frame: { type: "react", target: 3, emoji: "", on: true }, withId: true },
        { frame: { type: "react", target: 3, emoji: "x".repeat(33), on: true }, withId: true },
        { frame: { type: "react", target: 3, emoji: "👍", on: "yes" }, withId: true },
        { frame: { type: "react", target: 3, emoji: "👍" }, withId: true },
        { frame: { type: "react", target: 3, emoji: 1, on: true }, withId: true },
      ),
    )
    .map(({ frame, withId }) => ({ kind: "fields" as const, frame, withId, code: "bad_request" as const })),
  fc.constantFrom("é".repeat(8193), "a".repeat(16_385), "😀".repeat(4097)).map((text) => ({
    kind: "fields" as const,
    frame: { type: "send", text },
    withId: true,
    code: "too_large" as const,
  })),
  // Written by hand: numbers JSON cannot hold, prototype keys, deep nesting, duplicate keys.
  fc
    .constantFrom(
      (id: string) => `{"type":"edit","clientId":"${id}","target":1e309,"text":"x"}`,
      (id: string) => `{"type":"delete","clientId":"${id}","target":-0}`,
      (id: string) => `{"type":"delete","clientId":"${id}","target":9007199254740993}`,
      (id: string) => `{"__proto__":{"type":"send"},"clientId":"${id}","text":"x"}`,
      (id: string) => `{"constructor":{"prototype":{"type":"send"}},"clientId":"${id}","text":"x"}`,
      (id: string) => `{"type":"send","clientId":"${id}","text":${"[".repeat(5000)}${"]".repeat(5000)}}`,
      (id: string) => `{"type":"send","clientId":"${id}","text":"x","type":"sned"}`,
      (id: string) => `{"type":"send","text":"ok","clientId":"${id}","text":null}`,
    )
    .map((json) => ({ kind: "raw" as const, json, withId: true })),
);

const specArb: fc.Arbitrary<Spec> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant("send" as const),
      id: idArb,
      text: textArb,
      root: fc.option(targetArb, { freq: 4, nil: null }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant("edit" as const), id: idArb, target: targetArb, text: textArb }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("delete" as const), id: idArb, target: targetArb }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("react" as const),
      id: idArb,
      target: targetArb,
      emoji: fc.constantFrom(...EMOJI),
      on: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("read" as const), target: targetArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("ping" as const), exact: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "typing" as const }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("bad" as const), bad: badArb, id: idArb }) },
);

interface Batch {
  /** Only malformed frames: history must be the same before and after. */
  burst: boolean;
  specs: Spec[];
}
const mixed = fc.record({
  burst: fc.constant(false),
  specs: fc.array(specArb, { minLength: 1, maxLength: 15 }),
});
const burst = fc.record({
  burst: fc.constant(true),
  specs: fc.array(
    badArb.map((bad): Spec => ({ kind: "bad", bad, id: { fresh: true } })),
    { minLength: 1, maxLength: 8 },
  ),
});
/** Abusive runs keep sending malformed frames past the limit (and reconnect when closed); polite
 * runs stay under it. */
const runArb = fc.oneof(
  fc.record({
    abusive: fc.constant(false),
    batches: fc.array(fc.oneof({ weight: 5, arbitrary: mixed }, burst), { minLength: 4, maxLength: 12 }),
  }),
  fc.record({
    abusive: fc.constant(true),
    batches: fc.array(fc.oneof({ weight: 2, arbitrary: mixed }, burst), { minLength: 4, maxLength: 12 }),
  }),
);

// ---------------------------------------------------------------------------------------------
// Running a script against the real room

/** The whole log over HTTP, page by page. */
async function history(user: User, roomId: string): Promise<RoomEvent[]> {
  const events: RoomEvent[] = [];
  for (;;) {
    const after = events.at(-1)?.seq ?? 0;
    const res = await api(user, "GET", `/api/rooms/${roomId}/messages?after=${after}&limit=200`);
    if (res.status !== 200) throw new Error(`history: ${res.status} ${await res.text()}`);
    const page = (await res.json()) as { events: RoomEvent[]; hasMore: boolean };
    events.push(...page.events);
    if (!page.hasMore) return events;
  }
}

/** A room with the fuzzing owner, a member who wrote a message and a reply, and their history. */
async function setUp() {
  const tenant = unique("fuzz");
  const owner = await login(tenant);
  const member = await login(tenant);
  const roomId = await createRoom(owner);
  await join(member, roomId);
  const post = async (user: User, body: Record<string, unknown>) => {
    const res = await api(user, "POST", `/api/rooms/${roomId}/messages`, body);
    if (res.status !== 201) throw new Error(`setup send: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { seq: number }).seq;
  };
  const root = await post(member, { clientId: "m-root", text: "a member's message" });
  await post(member, { clientId: "m-reply", text: "a reply", threadRoot: root });
  await post(owner, { clientId: "o-first", text: "the owner's message" });
  return { owner, member, roomId };
}

const pick = <T>(list: readonly T[], n: number): T | undefined =>
  list.length === 0 ? undefined : list[n % list.length];
const key = (a: Answer | { type: "pong" }) => JSON.stringify(a);

async function fuzzRun(run: { abusive: boolean; batches: Batch[] }) {
  tally.runs += 1;
  const { owner, roomId } = await setUp();
  const model = new RoomModel(await history(owner, roomId));
  let socket = await FuzzSocket.open(owner, roomId, 0);
  /** Every event the client has received, over all its connections. */
  const seen: RoomEvent[] = [...socket.events];
  let strikes = 0;
  let firstStrikeAt = 0;
  const usedIds: string[] = [];
  let nextId = 0;
  /** clientId → the seq of every ack it got. */
  const acked = new Map<string, Set<number>>();

  const clientId = (ref: IdRef) => {
    const reused = ref.fresh ? undefined : pick(usedIds, ref.pick);
    const id = reused ?? `f${nextId++}`;
    if (!reused) usedIds.push(id);
    return id;
  };
  const target = (t: Target) => pick(model.targets(t.kind, owner), t.pick) ?? model.lastSeq + 1;
  const catchUp = () => seen.push(...socket.events.filter((e) => e.seq > (seen.at(-1)?.seq ?? 0)));
  const record = (answers: (Answer | { type: "pong" })[]) => {
    for (const a of answers) {
      if (a.type === "ack") acked.set(a.clientId, (acked.get(a.clientId) ?? new Set()).add(a.seq));
      if (a.type === "ack") tally.acks += 1;
      if (a.type === "error") tally.refused += 1;
    }
  };
  const leave = async () => {
    catchUp();
    expect(
      socket.events.map((e) => e.seq),
      "a socket gets each event once, in order",
    ).toEqual(socket.events.map((_, i) => socket.after + 1 + i));
    for (const { seq, seen: latest } of socket.ackAfter)
      expect(seq, "an ack comes after its event").toBeLessThanOrEqual(latest);
    if (!socket.closed) socket.ws.close(1000, "bye");
  };

  for (const batch of run.batches) {
    const before = batch.burst ? await history(owner, roomId) : null;
    const from = socket.frames.length;
    const expected: (Answer | { type: "pong" })[] = [];
    let closing = false;
    for (const spec of batch.specs) {
      if (spec.kind === "bad") {
        // Polite runs stay below the limit; a strike window that has run long is left to a new
        // socket (below) rather than raced.
        if (strikes === DEFAULT_LIMITS.badFrameLimit - 1 && !run.abusive) continue;
        if (strikes > 0 && Date.now() - firstStrikeAt > 7_000) continue;
        const { frame, answer } = badFrame(spec.bad, clientId(spec.id));
        socket.send(frame);
        tally.frames += 1;
        tally.malformed += 1;
        expected.push(answer);
        if (strikes === 0) firstStrikeAt = Date.now();
        strikes += 1;
        // The 10th malformed frame within 10 s is answered, then the socket closes with 1008.
        closing = strikes === DEFAULT_LIMITS.badFrameLimit;
        if (closing) break;
        continue;
      }
      tally.frames += 1;
      switch (spec.kind) {
        case "ping":
          socket.send(spec.exact ? '{"type":"ping"}' : '{"type":"ping","n":1}');
          expected.push({ type: "pong" });
          break;
        case "typing":
          socket.send('{"type":"typing"}');
          break;
        case "read": {
          const seq = target(spec.target);
          socket.send(JSON.stringify({ type: "read", seq }));
          if (seq > model.lastSeq) expected.push({ type: "error", code: "bad_request" });
          break;
        }
        default: {
          const cmd = command(spec, clientId(spec.id), target);
          const frame = JSON.stringify(cmd);
          socket.send(frame);
          tally.commands += 1;
          const outcome = model.apply(owner, cmd);
          expected.push(
            outcome.ok
              ? { type: "ack", clientId: cmd.clientId, seq: outcome.seq }
              : { type: "error", code: outcome.code, clientId: cmd.clientId },
          );
        }
      }
    }

    if (!closing) {
      await socket.until(() => socket.answers(from).length >= expected.length, `${expected.length} answers`);
      // Anything unasked for would arrive about now.
      await new Promise((r) => setTimeout(r, 5));
      const answers = socket.answers(from);
      expect(answers.map(key).sort(), "every frame's answer, as the model predicts").toEqual(
        expected.map(key).sort(),
      );
      record(answers);
      expect(socket.closed, "the socket stays open below the malformed-frame limit").toBeNull();
    } else {
      await socket.until(() => socket.closed !== null, "close 1008").catch(() => undefined);
      expect(socket.closed?.code, "close after the 10th malformed frame within 10 s").toBe(1008);
      tally.closes += 1;
      // The room flushes committed events and their acks before it closes the socket, so every
      // answer the model predicts arrived, close or not.
      const answers = socket.answers(from);
      expect(answers.map(key).sort(), "every answer arrives before the close").toEqual(
        expected.map(key).sort(),
      );
      record(answers);
      await leave();
      socket = await FuzzSocket.open(owner, roomId, seen.at(-1)?.seq ?? 0);
      strikes = 0;
    }
    catchUp();
    if (before)
      expect(await history(owner, roomId), "a burst of malformed frames changed nothing").toEqual(before);
    if (!closing && strikes > 0 && Date.now() - firstStrikeAt > 7_000) {
      await leave();
      socket = await FuzzSocket.open(owner, roomId, seen.at(-1)?.seq ?? 0);
      strikes = 0;
    }
  }

  // The socket is still usable.
  const from = socket.frames.length;
  socket.send('{"type":"ping","last":true}');
  await socket.until(() => socket.answers(from).length > 0, "pong");
  expect(socket.answers(from)).toEqual([{ type: "pong" }]);
  await leave();

  // History: gapless, exactly the model, one event per acked clientId at its acked seq.
  const log = await history(owner, roomId);
  expect(log.map((e) => e.seq)).toEqual(log.map((_, i) => i + 1));
  for (const e of log) expect(typeof e.ts).toBe("number");
  expect(log.map(({ ts: _ts, ...rest }) => rest)).toEqual(model.events);
  for (const [id, seqs] of acked) {
    expect(seqs.size, `every ack of ${id} names one seq`).toBe(1);
    const mine = log.filter((e) => e.author.id === owner.id && e.clientId === id);
    expect(
      mine.map((e) => e.seq),
      `one event for ${id}, at its acked seq`,
    ).toEqual([...seqs]);
  }
  // Over all its sockets the client saw each event exactly once, in order.
  expect(seen.map((e) => e.seq)).toEqual(log.map((e) => e.seq));
  expect(seen.map((e) => `${e.kind} ${e.clientId}`)).toEqual(log.map((e) => `${e.kind} ${e.clientId}`));
}

function command(
  spec: Exclude<Spec, { kind: "read" | "ping" | "typing" | "bad" }>,
  clientId: string,
  target: (t: Target) => number,
): Command {
  switch (spec.kind) {
    case "send":
      return spec.root
        ? { type: "send", clientId, text: spec.text, threadRoot: target(spec.root) }
        : { type: "send", clientId, text: spec.text };
    case "edit":
      return { type: "edit", clientId, target: target(spec.target), text: spec.text };
    case "delete":
      return { type: "delete", clientId, target: target(spec.target) };
    case "react":
      return { type: "react", clientId, target: target(spec.target), emoji: spec.emoji, on: spec.on };
  }
}

/** A malformed frame with `clientId` where it has one, and the error it must get. */
function badFrame(bad: Bad, clientId: string): { frame: string | ArrayBuffer; answer: Answer } {
  const error = (code: string, withId: boolean): Answer =>
    withId ? { type: "error", code, clientId } : { type: "error", code };
  switch (bad.kind) {
    case "garbage":
      return { frame: bad.text, answer: error("bad_request", false) };
    case "notObject":
      return { frame: bad.json, answer: error("bad_request", false) };
    case "binary":
      return { frame: new Uint8Array(bad.size).fill(0x7b).buffer, answer: error("bad_request", false) };
    case "oversizeFrame":
      return {
        frame: JSON.stringify({ type: "send", clientId, text: "x".repeat(DEFAULT_LIMITS.maxFrameBytes) }),
        answer: error("too_large", false),
      };
    case "fields":
      return {
        frame: JSON.stringify(
          bad.withId && !("clientId" in bad.frame) ? { ...bad.frame, clientId } : bad.frame,
        ),
        answer: error(bad.code, bad.withId),
      };
    case "raw":
      return { frame: bad.json(clientId), answer: error("bad_request", bad.withId) };
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP: commands the worker or the room must refuse, and retries it must answer without writing

interface HttpCase {
  method: "POST" | "PATCH" | "DELETE";
  path: string;
  body?: string;
  contentType?: string;
  /** The status the contract gives. */
  status: number;
}

type Route = "send" | "edit" | "react" | "delete";
const badIds = fc.constantFrom("", "a b", "a".repeat(65), "ü", "x/y", "%41");
/** A valid body for each route with one field broken or dropped, and the status it must get. */
const brokenBody: Record<
  Exclude<Route, "delete">,
  fc.Arbitrary<{ body: Record<string, unknown>; status: number }>
> = {
  send: fc.oneof(
    badIds.map((clientId) => ({ body: { clientId, text: "x" }, status: 400 })),
    // No clientId at all (undefined fields are left out of the JSON).
    fc.constant({ body: { clientId: undefined, text: "x" }, status: 400 }),
    fc.constantFrom(42, null, [], {}, "", "  \n", true).map((text) => ({ body: { text }, status: 400 })),
    fc.constant({ body: {}, status: 400 }),
    fc
      .constantFrom("1", 0, -1, 1.5, true, {})
      .map((threadRoot) => ({ body: { text: "x", threadRoot }, status: 400 })),
    fc
      .constantFrom("a", [1], Array(11).fill("a"), ["a".repeat(65)], null)
      .map((attachments) => ({ body: { text: "x", attachments }, status: 400 })),
    fc.constantFrom("é".repeat(8193), "a".repeat(16_385)).map((text) => ({ body: { text }, status: 413 })),
  ),
  edit: fc.oneof(
    badIds.map((clientId) => ({ body: { clientId, text: "x" }, status: 400 })),
    fc.constantFrom(42, null, [], "", " ").map((text) => ({ body: { text }, status: 400 })),
    fc.constant({ body: {}, status: 400 }),
    fc.constant({ body: { text: "a".repeat(16_385) }, status: 413 }),
  ),
  react: fc.oneof(
    badIds.map((clientId) => ({ body: { clientId, emoji: "👍", on: true }, status: 400 })),
    fc
      .constantFrom("", " ", "x".repeat(33), 1, null)
      .map((emoji) => ({ body: { emoji, on: true }, status: 400 })),
    fc.constantFrom("true", 1, null, undefined).map((on) => ({ body: { emoji: "👍", on }, status: 400 })),
  ),
};

/** Path seqs that are not seqs, or seqs of what a command cannot act on. */
const badSeqs = fc.constantFrom("0", "-1", "abc", "1.5", "1e3", "99999999999999999", "%20", "0x1");

function httpCaseArb(
  roomId: string,
  targets: Record<"own" | "other" | "deleted" | "reply" | "notMessage" | "beyond", number[]>,
): fc.Arbitrary<HttpCase> {
  const base = `/api/rooms/${roomId}/messages`;
  const any = (kind: keyof typeof targets) => fc.constantFrom(...targets[kind]);
  const fresh = fc.nat().map((n) => `h${n}`);
  const path = (route: Route, seq: number | string) =>
    route === "send" ? base : route === "react" ? `${base}/${seq}/reactions` : `${base}/${seq}`;
  const method = (route: Route): HttpCase["method"] =>
    route === "edit" ? "PATCH" : route === "delete" ? "DELETE" : "POST";
  const jsonCase = (route: Route, seq: number | string, body: unknown, status: number): HttpCase => ({
    method: method(route),
    path: path(route, seq),
    body: JSON.stringify(body),
    status,
  });
  const routeWithBody = fc.constantFrom<Exclude<Route, "delete">>("send", "edit", "react");

  return fc.oneof(
    // Broken bodies, a fresh clientId unless the break is the clientId.
    routeWithBody.chain((route) =>
      fc
        .tuple(brokenBody[route], fresh, any("own"))
        .map(([{ body, status }, clientId, seq]) => jsonCase(route, seq, { clientId, ...body }, status)),
    ),
    // Any JSON at all, without a valid clientId.
    fc
      .tuple(routeWithBody, fc.jsonValue({ maxDepth: 3 }), badIds, any("own"))
      .map(([route, value, badId, seq]) =>
        jsonCase(
          route,
          seq,
          typeof value === "object" && value !== null && !Array.isArray(value)
            ? { ...value, clientId: badId }
            : value,
          400,
        ),
      ),
    // Not JSON, not declared as JSON, or too big to read.
    fc
      .tuple(routeWithBody, fc.constantFrom("{", "nope", "", "[1,", '{"clientId":', "\u0000"), any("own"))
      .map(
        ([route, body, seq]): HttpCase => ({
          method: method(route),
          path: path(route, seq),
          body,
          contentType: "application/json",
          status: 400,
        }),
      ),
    fc
      .tuple(
        routeWithBody,
        fc.constantFrom(
          undefined,
          "text/plain",
          "application/x-www-form-urlencoded",
          "application/jsonx",
          "multipart/form-data",
        ),
        fresh,
        any("own"),
      )
      .map(
        ([route, contentType, clientId, seq]): HttpCase => ({
          method: method(route),
          path: path(route, seq),
          body: JSON.stringify({ clientId, text: "valid but undeclared", emoji: "🎉", on: true }),
          contentType: contentType ?? "",
          status: 400,
        }),
      ),
    fc.tuple(routeWithBody, fresh, any("own")).map(
      ([route, clientId, seq]): HttpCase => ({
        method: method(route),
        path: path(route, seq),
        body: JSON.stringify({ clientId, text: "x", pad: "p".repeat(DEFAULT_LIMITS.maxJsonBodyBytes) }),
        status: 413,
      }),
    ),
    // Seqs in the path that are not seqs.
    fc
      .tuple(fc.constantFrom<Route>("edit", "react", "delete"), badSeqs, fresh)
      .map(([route, seq, clientId]) =>
        jsonCase(route, seq, { clientId, text: "x", emoji: "👍", on: true }, 400),
      ),
    fc.tuple(any("own"), badIds).map(([seq, clientId]) => ({
      method: "DELETE" as const,
      path: `${base}/${seq}?clientId=${encodeURIComponent(clientId)}`,
      status: 400,
    })),
    // Commands the room refuses by its rules.
    fc
      .tuple(any("other"), fresh)
      .map(([seq, clientId]) => jsonCase("edit", seq, { clientId, text: "not mine" }, 403)),
    fc
      .tuple(
        fc.constantFrom<Route>("edit", "react", "delete"),
        fc.oneof(any("notMessage"), any("beyond")),
        fresh,
      )
      .map(([route, seq, clientId]) =>
        jsonCase(route, seq, { clientId, text: "x", emoji: "👍", on: true }, 404),
      ),
    fc
      .tuple(fc.constantFrom<Route>("edit", "react"), any("deleted"), fresh)
      .map(([route, seq, clientId]) =>
        jsonCase(route, seq, { clientId, text: "x", emoji: "👍", on: true }, 409),
      ),
    any("deleted").map((seq) => ({ method: "DELETE" as const, path: `${base}/${seq}`, status: 409 })),
    fc
      .tuple(any("own"), fresh)
      .map(([seq, clientId]) => jsonCase("react", seq, { clientId, emoji: "🦄", on: false }, 409)),
    fc
      .tuple(any("reply"), fresh)
      .map(([threadRoot, clientId]) => jsonCase("send", 0, { clientId, text: "x", threadRoot }, 400)),
    fc
      .tuple(fc.oneof(any("notMessage"), any("beyond")), fresh)
      .map(([threadRoot, clientId]) => jsonCase("send", 0, { clientId, text: "x", threadRoot }, 404)),
    fresh.map((clientId) => jsonCase("send", 0, { clientId, text: "", attachments: ["att_nope"] }, 404)),
    // A retry of a command that succeeded: the original seq, and nothing written.
    fc.constant(jsonCase("send", 0, { clientId: "o-first", text: "again" }, 200)),
    any("own").map((seq) =>
      jsonCase("edit", seq, { clientId: "o-first", text: "a retry, whatever it says" }, 200),
    ),
  );
}

async function httpFuzz() {
  const { owner, member, roomId } = await setUp();
  // A message of the owner's, deleted, to act on.
  const doomed = await json<{ seq: number }>(
    api(owner, "POST", `/api/rooms/${roomId}/messages`, { clientId: "o-doomed", text: "soon gone" }),
  );
  expect((await api(owner, "DELETE", `/api/rooms/${roomId}/messages/${doomed.seq}`)).status).toBe(201);
  const before = await history(owner, roomId);
  const model = new RoomModel(before);
  const targets = {
    own: model.targets("own", owner),
    other: model.targets("other", owner),
    deleted: model.targets("deleted", owner),
    reply: model.targets("reply", owner),
    notMessage: model.targets("notMessage", owner),
    beyond: model.targets("beyond", owner),
  };
  const firstSeq = before.find((e) => e.clientId === "o-first")?.seq;

  await assertRuns(
    fc.asyncProperty(httpCaseArb(roomId, targets), async (c) => {
      tally.http += 1;
      const headers = authHeaders(owner.token);
      if (c.body !== undefined && c.contentType !== "")
        headers["content-type"] = c.contentType ?? "application/json";
      const res = await fetchWorker(c.path, { method: c.method, headers, body: c.body });
      const text = await res.text();
      if (res.status >= 500) crashes.push(`${c.method} ${c.path}: ${res.status} ${text.slice(0, 200)}`);
      expect(res.status, `${c.method} ${c.path} ${c.body?.slice(0, 80)} → ${text}`).toBe(c.status);
      if (res.status === 200) {
        expect(JSON.parse(text)).toEqual({ seq: firstSeq });
        return;
      }
      expect(res.status).toBeLessThan(500);
      const envelope = JSON.parse(text) as { error: { code: keyof typeof ERROR_STATUS; message: string } };
      expect(Object.keys(envelope)).toEqual(["error"]);
      expect(ERROR_STATUS[envelope.error.code]).toBe(res.status);
      expect(typeof envelope.error.message).toBe("string");
    }),
    HTTP_REQUESTS,
  );

  // Nothing any of it did reached the log; the member's view is the same.
  expect(await history(owner, roomId)).toEqual(before);
  expect(await history(member, roomId)).toEqual(before);
}

/** fc.assert with the report made well-formed: workerd's channel to the test runner refuses a
 * frame with a lone surrogate (and these runs send some), so a failure quoting one would be lost. */
async function assertRuns<T>(property: fc.IAsyncProperty<T>, numRuns: number): Promise<void> {
  try {
    await fc.assert(property, { numRuns, endOnFailure: true });
  } catch (err) {
    const cause =
      err instanceof Error && err.cause instanceof Error ? `\nCaused by: ${err.cause.message}` : "";
    throw new Error(`${err instanceof Error ? err.message : String(err)}${cause}`.toWellFormed());
  }
}

describe("the room under random traffic", () => {
  it("answers every frame as the model predicts, keeps a gapless log equal to the model, and survives malformed frames", async () => {
    await assertRuns(fc.asyncProperty(runArb, fuzzRun), SOCKET_RUNS);
    expect(crashes).toEqual([]);
  });

  it("refuses random malformed and forbidden HTTP commands with the error envelope, never 500, and writes nothing", async () => {
    await httpFuzz();
    expect(crashes).toEqual([]);
  });
});
