/**
 * Property tests of the wire protocol's parsers (protocol/index.ts): parseClientFrame, parseCommand
 * (the HTTP command path) and parsePresenceFrame, over arbitrary strings and bytes, arbitrary JSON,
 * frames generated from a model, and model frames mutated in hostile ways.
 *
 * Every outcome is checked against a reference model written from docs/protocol.md
 * (`expectClientFrame`, `expectCommand`, `expectPresenceFrame` below), not against the parser's code:
 * a parser never throws; it answers either ok with exactly the model's value (only known fields,
 * a value whose JSON parses back to itself and re-validates) or a failure with one of the codes the
 * model allows (`bad_request` or `too_large`, among docs/protocol.md's codes) and the frame's clientId
 * when it had a valid one.
 */
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../../config/limits.ts";
import {
  ERROR_STATUS,
  exceedsUtf8,
  type FieldLimits,
  type Parsed,
  parseClientFrame,
  parseCommand,
  parsePresenceFrame,
  utf8Bytes,
} from "../../protocol/index.ts";

/** Runs per property: eight properties, 16,000 generated inputs, each checked through several parsers
 * (about 57,000 parser calls against the model) in a few seconds. */
const RUNS = 2_000;
let cases = 0;

// ---------------------------------------------------------------------------------------------
// The reference model

type Limits = FieldLimits & { maxWatch: number };
type Expected = { ok: true; value: unknown } | { ok: false; codes: string[]; clientId?: string };

const FIELD_LIMITS: Limits = {
  maxFrameBytes: DEFAULT_LIMITS.maxFrameBytes,
  maxTextBytes: DEFAULT_LIMITS.maxTextBytes,
  maxAttachmentsPerMessage: DEFAULT_LIMITS.maxAttachmentsPerMessage,
  maxEmojiChars: DEFAULT_LIMITS.maxEmojiChars,
  maxWatch: DEFAULT_LIMITS.maxWatch,
};
/** docs/protocol.md: clientId is 1–64 of [A-Za-z0-9_-]; user ids (watch) have the same shape. */
const ID = /^[A-Za-z0-9_-]{1,64}$/;
const COMMANDS = ["send", "edit", "delete", "react"];
/** What a parser may answer: the codes of docs/protocol.md that describe a malformed frame. */
const PARSER_CODES = ["bad_request", "too_large"];

const encoder = new TextEncoder();
/** UTF-8 as the wire carries it (a lone surrogate becomes U+FFFD: three bytes). */
const bytesOf = (s: string) => encoder.encode(s).byteLength;
const isId = (v: unknown): v is string => typeof v === "string" && ID.test(v);
const isSeq = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 1;
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const blank = (s: string) => s.trim() === "";
const ok = (value: unknown): Expected => ({ ok: true, value });
const fail = (codes: string[], clientId?: string): Expected =>
  clientId === undefined ? { ok: false, codes } : { ok: false, codes, clientId };

/** The envelope every frame shares: text only, at most maxFrameBytes of UTF-8, a JSON object. */
function expectEnvelope(raw: string | ArrayBuffer, maxFrameBytes: number): Expected {
  if (typeof raw !== "string") return fail([raw.byteLength > maxFrameBytes ? "too_large" : "bad_request"]);
  if (bytesOf(raw) > maxFrameBytes) return fail(["too_large"]);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return fail(["bad_request"]);
  }
  return isObject(value) ? ok(value) : fail(["bad_request"]);
}

/** A sequenced command's fields. Several violations at once may be reported by any of their codes. */
function expectCommand(type: string, o: Record<string, unknown>, l: FieldLimits): Expected {
  const clientId = o.clientId;
  if (!isId(clientId)) return fail(["bad_request"]);
  const codes = new Set<string>();
  const text = (allowEmpty: boolean) => {
    if (typeof o.text !== "string") codes.add("bad_request");
    else {
      if (!allowEmpty && blank(o.text)) codes.add("bad_request");
      if (bytesOf(o.text) > l.maxTextBytes) codes.add("too_large");
    }
  };
  const target = () => {
    if (!isSeq(o.target)) codes.add("bad_request");
  };
  let value: Record<string, unknown>;
  switch (type) {
    case "send": {
      const a = o.attachments;
      // Attachment ids are the server's; 64 characters is the parser's bound on them.
      const attachmentsOk =
        a === undefined ||
        (Array.isArray(a) &&
          a.length <= l.maxAttachmentsPerMessage &&
          a.every((x) => typeof x === "string" && x.length <= 64));
      if (!attachmentsOk) codes.add("bad_request");
      const withFiles = Array.isArray(a) && a.length > 0;
      text(attachmentsOk && withFiles);
      // docs/protocol.md is silent on `threadRoot: null`; the parser reads it as absent.
      if (o.threadRoot !== undefined && o.threadRoot !== null && !isSeq(o.threadRoot))
        codes.add("bad_request");
      value = { type, clientId, text: o.text };
      if (isSeq(o.threadRoot)) value.threadRoot = o.threadRoot;
      if (withFiles) value.attachments = a;
      break;
    }
    case "edit":
      target();
      text(false);
      value = { type, clientId, target: o.target, text: o.text };
      break;
    case "delete":
      target();
      value = { type, clientId, target: o.target };
      break;
    case "react": {
      target();
      const e = o.emoji;
      if (typeof e !== "string" || blank(e) || [...e].length > l.maxEmojiChars) codes.add("bad_request");
      if (typeof o.on !== "boolean") codes.add("bad_request");
      value = { type, clientId, target: o.target, emoji: e, on: o.on };
      break;
    }
    default:
      return fail(["bad_request"]);
  }
  return codes.size === 0 ? ok(value) : fail([...codes], clientId);
}

function expectClientFrame(raw: string | ArrayBuffer, l: FieldLimits): Expected {
  const envelope = expectEnvelope(raw, l.maxFrameBytes);
  if (!envelope.ok) return envelope;
  const o = envelope.value as Record<string, unknown>;
  if (o.type === "ping" || o.type === "typing") return ok({ type: o.type });
  if (o.type === "read") return isSeq(o.seq) ? ok({ type: "read", seq: o.seq }) : fail(["bad_request"]);
  if (typeof o.type === "string" && COMMANDS.includes(o.type)) return expectCommand(o.type, o, l);
  // docs/protocol.md: errors carry the frame's clientId whenever it had a valid one.
  return fail(["bad_request"], isId(o.clientId) ? o.clientId : undefined);
}

function expectPresenceFrame(raw: string | ArrayBuffer, l: Limits): Expected {
  const envelope = expectEnvelope(raw, l.maxFrameBytes);
  if (!envelope.ok) return envelope;
  const o = envelope.value as Record<string, unknown>;
  switch (o.type) {
    case "ping":
      return ok({ type: "ping" });
    case "heartbeat":
      return o.status === "active" || o.status === "away" || o.status === "dnd"
        ? ok({ type: "heartbeat", status: o.status })
        : fail(["bad_request"]);
    case "watch": {
      if (!Array.isArray(o.users) || !o.users.every(isId)) return fail(["bad_request"]);
      // docs/protocol.md: duplicates collapsed; more than maxWatch ids is too_large.
      const users = [...new Set(o.users)];
      return users.length > l.maxWatch ? fail(["too_large"]) : ok({ type: "watch", users });
    }
    default:
      return fail(["bad_request"]);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks every outcome gets

const KNOWN_FIELDS: Record<string, string[]> = {
  send: ["type", "clientId", "text", "threadRoot", "attachments"],
  edit: ["type", "clientId", "target", "text"],
  delete: ["type", "clientId", "target"],
  react: ["type", "clientId", "target", "emoji", "on"],
  read: ["type", "seq"],
  ping: ["type"],
  typing: ["type"],
  heartbeat: ["type", "status"],
  watch: ["type", "users"],
};
const PROTOTYPE_KEYS = Object.getOwnPropertyNames(Object.prototype).sort();

/** Deep strict equality (own keys, prototypes, Object.is on primitives): the hot path's
 * toStrictEqual, kept cheap because it runs tens of thousands of times. */
function same(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(rb, k) && same(ra[k], rb[k]));
}

/** Fails the property with what went wrong, the input and the outcome (as JSON, so lone
 * surrogates stay readable). */
function violated(what: string, raw: string | ArrayBuffer, actual: unknown, expected?: unknown): never {
  const show = (v: unknown) => JSON.stringify(v)?.slice(0, 600);
  throw new Error(
    `${what}\n  input: ${typeof raw === "string" ? show(raw) : `ArrayBuffer(${raw.byteLength})`}` +
      `\n  got: ${show(actual)}${expected === undefined ? "" : `\n  expected: ${show(expected)}`}`,
  );
}

/**
 * Never throws; ok values re-validate; failures are well-formed; and the outcome is the model's.
 * `frameLimit` is the parser's frame limit, if it has one: a value's canonical JSON escapes lone
 * surrogates and control characters (six bytes each), so it can outgrow a frame the original
 * (with them raw) fitted; then re-validating it must answer too_large.
 */
function check<T>(
  parse: (raw: string | ArrayBuffer) => Parsed<T>,
  raw: string | ArrayBuffer,
  expected: Expected,
  frameLimit = Number.POSITIVE_INFINITY,
): Parsed<T> {
  cases += 1;
  let actual: Parsed<T>;
  try {
    actual = parse(raw);
  } catch (err) {
    return violated(`the parser threw ${String(err)}`, raw, null);
  }
  if (actual.ok) {
    const value = actual.value as Record<string, unknown>;
    if (Object.getPrototypeOf(value) !== Object.prototype) violated("not a plain object", raw, actual);
    if (!Object.keys(value).every((k) => KNOWN_FIELDS[String(value.type)]?.includes(k)))
      violated("a field the protocol does not define", raw, actual);
    const json = JSON.stringify(value);
    if (!same(JSON.parse(json), value)) violated("the value does not survive JSON", raw, actual);
    const again = parse(json);
    const outgrown = bytesOf(json) > frameLimit && !again.ok && again.code === "too_large";
    if (!same(again, actual) && !outgrown)
      violated("the value does not re-validate to itself", json, again, actual);
  } else {
    if (!(actual.code in ERROR_STATUS) || !PARSER_CODES.includes(actual.code))
      violated("a code a parser must not answer", raw, actual);
    // A failure never echoes much of a hostile frame back.
    if (typeof actual.message !== "string" || actual.message.length === 0 || actual.message.length >= 300)
      violated("no message, or one quoting too much", raw, actual);
    if (!Object.keys(actual).every((k) => ["ok", "code", "message", "clientId"].includes(k)))
      violated("a field a failure does not have", raw, actual);
    if ("clientId" in actual && !isId(actual.clientId)) violated("an invalid clientId", raw, actual);
  }
  const matches = expected.ok
    ? same(actual, { ok: true, value: expected.value })
    : !actual.ok && expected.codes.includes(actual.code) && actual.clientId === expected.clientId;
  if (!matches) violated("the outcome differs from the model", raw, actual, expected);
  // JSON.parse makes `__proto__` an own key; nothing a frame says reaches Object.prototype.
  if (Object.getOwnPropertyNames(Object.prototype).length !== PROTOTYPE_KEYS.length)
    violated("Object.prototype changed", raw, Object.getOwnPropertyNames(Object.prototype));
  return actual;
}

/** Both parsers, and for a command-shaped object the HTTP path (parseCommand on the parsed body). */
function checkAll(raw: string | ArrayBuffer, l: Limits = FIELD_LIMITS): void {
  check((r) => parseClientFrame(r, l), raw, expectClientFrame(raw, l), l.maxFrameBytes);
  check((r) => parsePresenceFrame(r, l), raw, expectPresenceFrame(raw, l), l.maxFrameBytes);
  if (typeof raw !== "string") return;
  let o: unknown;
  try {
    o = JSON.parse(raw);
  } catch {
    return;
  }
  if (!isObject(o)) return;
  const body = o;
  // The HTTP routes parse the body with the route's type, whatever the body says (its size is
  // checked before it is parsed).
  for (const type of COMMANDS) {
    check(
      (r) => parseCommand(type, r === raw ? body : JSON.parse(r as string), l),
      raw,
      expectCommand(type, body, l),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Generators

/** Single units of text, biased towards what breaks parsers: escapes, controls, line and paragraph
 * separators, BOM, bidi and zero-width characters, surrogate pairs, combining marks, lone surrogates. */
const EDGE_UNITS = [
  "\u0000",
  "\u0007",
  "\u001f",
  '"',
  "\\",
  "/",
  "\u007f",
  "\u0085",
  "\u00a0",
  "\u2028",
  "\u2029",
  "\u200b",
  "\u200d",
  "\u202e",
  "\ufeff",
  "\ufffd",
  "\uffff",
  "\ud800",
  "\udbff",
  "\udc00",
  "\udfff",
  "😀",
  "👍🏽",
  "👨‍👩‍👧",
  "e\u0301",
  "\u{10ffff}",
  "é",
  "€",
  "<",
  " ",
  "\t",
  "\n",
  "\r",
];
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const unit = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.constantFrom(...EDGE_UNITS) },
  { weight: 1, arbitrary: loneSurrogate },
);
/** One code point (or lone surrogate) at a time, for emoji, whose limit counts code points. */
const codePoint = fc.oneof(fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), loneSurrogate);
const hasControl = (s: string) => [...s].some((ch) => ch.charCodeAt(0) < 0x20);
/** Whether JSON must escape some character of `s` (so its JSON is longer than its UTF-8). */
const needsEscape = (s: string) => hasControl(s) || s.includes('"') || s.includes("\\");
const anyText = (maxLength = 40) => fc.string({ unit, maxLength });
const idArb = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);
const seqArb = fc.oneof(
  fc.integer({ min: 1, max: 1000 }),
  fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  fc.constant(Number.MAX_SAFE_INTEGER),
);

/** Text of at most `maxBytes` UTF-8 bytes: short and hostile, or long, up to exactly the limit.
 * Long text is made of units whose JSON escape is at most three times their UTF-8 size, so a
 * model frame always fits its frame limit. */
function textWithin(maxBytes: number, nonBlank: boolean): fc.Arbitrary<string> {
  const short = anyText().filter((t) => bytesOf(t) <= maxBytes && (!nonBlank || !blank(t)));
  const long = fc
    .record({
      chunk: fc
        .string({
          unit: fc.oneof(fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }), loneSurrogate),
          minLength: 1,
          maxLength: 3,
        })
        .filter((c) => !hasControl(c)),
      fill: fc.double({ min: 0, max: 1, noNaN: true }),
    })
    .map(({ chunk, fill }) => {
      // Every UTF-16 unit is at most three UTF-8 bytes, so this stays within the limit.
      const base = `x${chunk.repeat(Math.floor((maxBytes - 1) / (3 * chunk.length)))}`;
      return base + "a".repeat(Math.floor((maxBytes - bytesOf(base)) * fill));
    })
    .filter((t) => bytesOf(t) <= maxBytes);
  return fc.oneof({ weight: 3, arbitrary: short }, { weight: 1, arbitrary: long });
}

/** JSON string literals written in any of the forms JSON allows for the same string. */
type StringMode = "json" | "ascii" | "raw" | "escaped";
function encodeString(s: string, mode: StringMode): string {
  if (mode === "json") return JSON.stringify(s);
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    const escaped = [...Array(ch.length).keys()]
      .map((i) => `\\u${ch.charCodeAt(i).toString(16).padStart(4, "0")}`)
      .join("");
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (c < 0x20 || mode === "escaped" || (mode === "ascii" && c > 0x7e)) out += escaped;
    else out += ch; // "raw" keeps even lone surrogates unescaped
  }
  return `${out}"`;
}

/** A value as JSON text, its strings in the given mode. */
function encode(v: unknown, mode: StringMode): string {
  if (typeof v === "string") return encodeString(v, mode);
  if (Array.isArray(v)) return `[${v.map((x) => encode(x, mode)).join(",")}]`;
  return JSON.stringify(v);
}

type Entry = [key: string, raw: string];
interface Layout {
  keyMode: StringMode;
  valueMode: StringMode;
  spaces: string[];
}
const layoutArb: fc.Arbitrary<Layout> = fc.record({
  keyMode: fc.constantFrom<StringMode>("json", "json", "escaped"),
  valueMode: fc.constantFrom<StringMode>("json", "ascii", "raw"),
  spaces: fc.array(fc.constantFrom("", "", " ", "\n", "\t", "\r\n  "), { minLength: 4, maxLength: 4 }),
});

/** An object's JSON text from entries in order: keys may repeat and values are raw JSON text. */
function objectText(entries: Entry[], layout: Layout): string {
  const [a = "", b = "", c = "", d = ""] = layout.spaces;
  const body = entries.map(([k, v]) => `${b}${encodeString(k, layout.keyMode)}${c}:${d}${v}`).join(`${a},`);
  return `${a}{${body}${b}}${d}`;
}

interface ModelFrame {
  entries: Entry[];
  value: Record<string, unknown>;
}

/** A valid frame and the value the parser must return for it. Optional fields may be absent or
 * (threadRoot) null; attachments may be empty. */
function clientModel(l: FieldLimits, mode: StringMode): fc.Arbitrary<ModelFrame> {
  const e = (k: string, v: unknown): Entry => [k, encode(v, mode)];
  const send = fc
    .record({
      clientId: idArb,
      threadRoot: fc.option(fc.oneof(seqArb, fc.constant(null)), { nil: undefined }),
      attachments: fc.option(
        fc.array(
          anyText(64).map((s) => s.slice(0, 64)),
          { maxLength: l.maxAttachmentsPerMessage },
        ),
        { nil: undefined },
      ),
    })
    .chain((r) =>
      textWithin(l.maxTextBytes, (r.attachments?.length ?? 0) === 0).map((text) => {
        const entries = [e("type", "send"), e("clientId", r.clientId), e("text", text)];
        const value: Record<string, unknown> = { type: "send", clientId: r.clientId, text };
        if (r.threadRoot !== undefined) entries.push(e("threadRoot", r.threadRoot));
        if (r.threadRoot) value.threadRoot = r.threadRoot;
        if (r.attachments !== undefined) entries.push(e("attachments", r.attachments));
        if (r.attachments?.length) value.attachments = r.attachments;
        return { entries, value };
      }),
    );
  const edit = fc
    .record({ clientId: idArb, target: seqArb, text: textWithin(l.maxTextBytes, true) })
    .map(({ clientId, target, text }) => ({
      entries: [e("type", "edit"), e("clientId", clientId), e("target", target), e("text", text)],
      value: { type: "edit", clientId, target, text },
    }));
  const del = fc.record({ clientId: idArb, target: seqArb }).map(({ clientId, target }) => ({
    entries: [e("type", "delete"), e("clientId", clientId), e("target", target)],
    value: { type: "delete", clientId, target },
  }));
  const react = fc
    .record({
      clientId: idArb,
      target: seqArb,
      emoji: fc
        .oneof(
          fc.constantFrom("👍", "🎉", "👍🏽", "+1", "👨‍👩‍👧"),
          fc.string({ unit: codePoint, maxLength: 32 }),
        )
        .filter((s) => !blank(s) && [...s].length <= l.maxEmojiChars),
      on: fc.boolean(),
    })
    .map(({ clientId, target, emoji, on }) => ({
      entries: [
        e("type", "react"),
        e("clientId", clientId),
        e("target", target),
        e("emoji", emoji),
        e("on", on),
      ],
      value: { type: "react", clientId, target, emoji, on },
    }));
  const read = seqArb.map((seq) => ({
    entries: [e("type", "read"), e("seq", seq)],
    value: { type: "read", seq },
  }));
  const bare = fc
    .constantFrom("ping", "typing")
    .map((type) => ({ entries: [e("type", type)], value: { type } }));
  return fc.oneof(send, edit, del, react, read, bare);
}

/** Presence frames; with `over`, watch sets may pass maxWatch (then the frame is too_large). */
function presenceModel(l: Limits, mode: StringMode, over = false): fc.Arbitrary<ModelFrame> {
  const e = (k: string, v: unknown): Entry => [k, encode(v, mode)];
  const heartbeat = fc.constantFrom("active", "away", "dnd").map((status) => ({
    entries: [e("type", "heartbeat"), e("status", status)],
    value: { type: "heartbeat", status },
  }));
  // Ids picked from a pool, so duplicates are common; the unique ones never exceed maxWatch.
  const small = fc
    .uniqueArray(idArb, { minLength: 1, maxLength: Math.min(l.maxWatch, 20) })
    .chain((pool) => fc.array(fc.constantFrom(...pool), { maxLength: 40 }));
  // Sets right at the limit (and, with `over`, just past it), each id listed up to three times.
  const big = fc
    .record({
      n: fc.integer({ min: Math.max(0, l.maxWatch - 2), max: l.maxWatch + (over ? 2 : 0) }),
      repeats: fc.array(fc.nat(), { maxLength: 30 }),
    })
    .map(({ n, repeats }) => {
      const ids = Array.from({ length: n }, (_, i) => `user_${i}`);
      return [...ids, ...(n > 0 ? repeats.map((r) => ids[r % n]!) : [])];
    });
  const watch = fc.oneof({ weight: 3, arbitrary: small }, big).map((users) => {
    const unique = [...new Set(users)];
    return {
      entries: [e("type", "watch"), e("users", users)],
      value: { type: "watch", users: unique },
    };
  });
  const ping = fc.constant<ModelFrame>({ entries: [e("type", "ping")], value: { type: "ping" } });
  return fc.oneof(heartbeat, watch, ping);
}

/** Unknown fields a client may add, prototype keys among them; the parser must drop them all. */
const extraKey = fc
  .oneof(
    fc.constantFrom(
      "__proto__",
      "constructor",
      "prototype",
      "toString",
      "hasOwnProperty",
      "valueOf",
      "__defineGetter__",
      "author",
      "seq",
      "ts",
    ),
    fc.string({ unit, maxLength: 12 }),
  )
  .filter((k) => !Object.values(KNOWN_FIELDS).flat().includes(k) || k === "seq");

/** Raw JSON text (some of it not JSON at all) for a field: numbers JSON can only approximate
 * (1e309 is Infinity, -0, floats, unsafe integers), wrong types, prototype-polluting objects,
 * hostile strings, strings near the limits, and deep nesting. */
function hostileRaw(l: Limits): fc.Arbitrary<string> {
  const numbers = fc.constantFrom(
    "0",
    "-0",
    "1",
    "-1",
    "1.5",
    "1.0",
    "1e0",
    "1E2",
    "2e-0",
    "0.1e1",
    "1e309",
    "-1e309",
    "1e-400",
    "9007199254740991",
    "9007199254740992",
    "9007199254740993",
    "18446744073709551616",
    "5e-324",
  );
  const notJson = fc.constantFrom(
    "NaN",
    "Infinity",
    "-Infinity",
    "undefined",
    "0x10",
    "01",
    "+1",
    ".5",
    "1.",
    "1e",
    "'x'",
    '"unterminated',
    "tru",
    "[1,]",
    '{"a":1,}',
    "",
  );
  const shapes = fc.constantFrom(
    "null",
    "true",
    "false",
    '""',
    '" "',
    "[]",
    "{}",
    "[1]",
    '"1"',
    '"true"',
    '["a","a"]',
    '{"__proto__":{"polluted":1}}',
    '{"constructor":{"prototype":{"polluted":1}}}',
    '"active"',
    '"away"',
    '"online"',
    '"👍"',
  );
  const huge = fc
    .record({
      chunk: fc.string({ unit, minLength: 1, maxLength: 3 }),
      size: fc.constantFrom(
        l.maxTextBytes - 1,
        l.maxTextBytes,
        l.maxTextBytes + 1,
        l.maxTextBytes + 3,
        l.maxFrameBytes - 80,
        l.maxFrameBytes + 1,
      ),
      mode: fc.constantFrom<StringMode>("json", "raw"),
    })
    .map(({ chunk, size, mode }) => {
      let s = chunk.repeat(Math.max(1, Math.floor(size / Math.max(1, bytesOf(chunk)))));
      const gap = size - bytesOf(s);
      if (gap > 0) s += "a".repeat(gap);
      return encodeString(s, mode);
    });
  const deep = fc
    .record({ depth: fc.integer({ min: 1, max: 12_000 }), open: fc.constantFrom("[", '{"a":') })
    .map(({ depth, open }) =>
      open === "["
        ? `${"[".repeat(depth)}${"]".repeat(depth)}`
        : `${open.repeat(depth)}1${"}".repeat(depth)}`,
    );
  const ids = fc.oneof(idArb, fc.constantFrom("", " ", "a b", "a".repeat(65), "ü", "a/b", "a.b", "a\u0000"));
  return fc.oneof(
    { weight: 3, arbitrary: numbers },
    { weight: 1, arbitrary: notJson },
    { weight: 2, arbitrary: shapes },
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)) },
    { weight: 2, arbitrary: anyText().map((s) => encodeString(s, "json")) },
    { weight: 2, arbitrary: ids.map((s) => JSON.stringify(s)) },
    { weight: 1, arbitrary: fc.array(ids, { maxLength: 5 }).map((a) => JSON.stringify(a)) },
    { weight: 1, arbitrary: seqArb.map(String) },
    {
      weight: 1,
      arbitrary: fc.string({ unit: codePoint, minLength: 30, maxLength: 34 }).map((s) => JSON.stringify(s)),
    },
    { weight: 1, arbitrary: huge },
    { weight: 1, arbitrary: deep },
  );
}

type Mutation =
  | { kind: "drop"; pick: number }
  | { kind: "replace"; pick: number; raw: string }
  | { kind: "extra"; at: number; key: string; raw: string }
  | { kind: "duplicate"; pick: number; raw: string; after: boolean }
  | { kind: "type"; raw: string }
  | { kind: "set"; key: string; raw: string };
type TextMutation =
  | { kind: "none" }
  | { kind: "wrap" }
  | { kind: "truncate"; at: number }
  | { kind: "affix"; prefix: string; suffix: string };

const TYPES = ["send", "edit", "delete", "react", "read", "ping", "typing", "heartbeat", "watch"];
const typeRaw = fc.oneof(
  fc.constantFrom(...TYPES).map((t) => JSON.stringify(t)),
  fc
    .constantFrom(...TYPES)
    .chain((t) =>
      fc
        .constantFrom(t.toUpperCase(), ` ${t}`, `${t} `, `${t}\u0000`, `${t}\u200b`, t.slice(1))
        .map((s) => JSON.stringify(s)),
    ),
  fc.constantFrom('"__proto__"', '"constructor"', '"toString"', "null", "1", '["send"]', '{"send":1}'),
);

function mutationArb(l: Limits): fc.Arbitrary<Mutation> {
  const raw = hostileRaw(l);
  return fc.oneof(
    fc.record({ kind: fc.constant("drop" as const), pick: fc.nat() }),
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("replace" as const), pick: fc.nat(), raw }) },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant("extra" as const), at: fc.nat(), key: extraKey, raw }),
    },
    fc.record({ kind: fc.constant("duplicate" as const), pick: fc.nat(), raw, after: fc.boolean() }),
    fc.record({ kind: fc.constant("type" as const), raw: typeRaw }),
    { weight: 2, arbitrary: aroundLimits(l) },
  );
}

/** A field set to a value right at its limit or just past it: text in UTF-8 bytes, emoji in code
 * points, clientId in characters. */
function aroundLimits(l: Limits): fc.Arbitrary<Mutation> {
  const plain = fc
    .string({ unit, minLength: 1, maxLength: 3 })
    .filter((c) => !needsEscape(c) && c.trim() !== "");
  const text = fc.record({ chunk: plain, over: fc.integer({ min: -1, max: 3 }) }).map(({ chunk, over }) => {
    const size = l.maxTextBytes + over;
    let s = chunk.repeat(Math.floor(size / (3 * chunk.length)));
    s += "a".repeat(Math.max(0, size - bytesOf(s)));
    return { kind: "set" as const, key: "text", raw: JSON.stringify(s) };
  });
  const emoji = fc
    .record({ cp: codePoint.filter((c) => c.trim() !== ""), n: fc.integer({ min: 31, max: 34 }) })
    .map(({ cp, n }) => ({ kind: "set" as const, key: "emoji", raw: JSON.stringify(cp.repeat(n)) }));
  const clientId = fc
    .integer({ min: 63, max: 66 })
    .map((n) => ({ kind: "set" as const, key: "clientId", raw: JSON.stringify("c".repeat(n)) }));
  return fc.oneof({ weight: 3, arbitrary: text }, emoji, clientId);
}

const textMutationArb: fc.Arbitrary<TextMutation> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: "none" as const }) },
  fc.constant({ kind: "wrap" as const }),
  fc.record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant("affix" as const),
    prefix: fc.constantFrom("", " \n", "\ufeff", "\u00a0", "x", "[", "{"),
    suffix: fc.constantFrom("", " \t\r\n", "}", ",", "\u0000", "//", "{}"),
  }),
);

function mutate(entries: Entry[], mutations: Mutation[]): Entry[] {
  let out = [...entries];
  for (const m of mutations) {
    const i = out.length === 0 ? 0 : ("pick" in m ? m.pick : 0) % out.length;
    if (m.kind === "drop") out = out.filter((_, j) => j !== i);
    else if (m.kind === "replace" && out[i]) out[i] = [out[i][0], m.raw];
    else if (m.kind === "extra") out.splice(m.at % (out.length + 1), 0, [m.key, m.raw]);
    else if (m.kind === "duplicate" && out[i]) out.splice(m.after ? i + 1 : i, 0, [out[i][0], m.raw]);
    else if (m.kind === "type" || m.kind === "set") {
      const key = m.kind === "type" ? "type" : m.key;
      out = out.map(([k, v]) => (k === key ? [k, m.raw] : [k, v]));
    }
  }
  return out;
}

function mutateText(raw: string, m: TextMutation): string {
  if (m.kind === "wrap") return `[${raw}]`;
  if (m.kind === "truncate") return raw.slice(0, m.at % Math.max(1, raw.length));
  if (m.kind === "affix") return `${m.prefix}${raw}${m.suffix}`;
  return raw;
}

/** The defaults, or a deployment's lowered text limit and the smallest frame limit it may set
 * (config/limits.ts: frames ≥ 4096 bytes, text ≤ frame − 1024), or a small watch limit. */
const limitsArb: fc.Arbitrary<Limits> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(FIELD_LIMITS) },
  fc.constantFrom(4096, 65_536).chain((maxFrameBytes) =>
    fc.record({
      maxFrameBytes: fc.constant(maxFrameBytes),
      maxTextBytes: fc.integer({ min: 1, max: Math.min(16_384, maxFrameBytes - 1024) }),
      maxAttachmentsPerMessage: fc.constant(FIELD_LIMITS.maxAttachmentsPerMessage),
      maxEmojiChars: fc.constant(FIELD_LIMITS.maxEmojiChars),
      maxWatch: fc.integer({ min: 1, max: 600 }),
    }),
  ),
);
/** Limits under which every model frame fits a frame (see `textWithin`). */
const modelLimitsArb = limitsArb.map((l) => ({ ...l, maxFrameBytes: 65_536 }));

/** fc.assert with the report made well-formed: workerd's channel to the test runner refuses a
 * frame with a lone surrogate, so a failure quoting one would otherwise be lost. */
function assertProperty<T>(property: fc.IProperty<T>, params: fc.Parameters<T>): void {
  try {
    fc.assert(property, params);
  } catch (err) {
    const cause =
      err instanceof Error && err.cause instanceof Error ? `\nCaused by: ${err.cause.message}` : "";
    throw new Error(`${err instanceof Error ? err.message : String(err)}${cause}`.toWellFormed());
  }
}

// ---------------------------------------------------------------------------------------------

afterAll(() => {
  console.log(`protocol properties: ${cases} parser cases checked against the model`);
});

describe("the wire protocol's parsers", () => {
  it("never throw on arbitrary text, and answer every string as the model does", () => {
    const sized = fc
      .record({
        // Frames right around the frame limit, in JSON that needs no escapes.
        chunk: fc.string({ unit, minLength: 1, maxLength: 4 }).filter((c) => !needsEscape(c)),
        delta: fc.integer({ min: -8, max: 8 }),
      })
      .map(({ chunk, delta }) => {
        const target = FIELD_LIMITS.maxFrameBytes + delta;
        const s = `{"type":"ping","x":"${chunk.repeat(Math.floor((target - 40) / (3 * chunk.length)))}`;
        return `${s}${"a".repeat(target - bytesOf(s) - 2)}"}`;
      });
    assertProperty(
      fc.property(
        fc.oneof(
          fc.string({ unit, maxLength: 200 }),
          fc.string({ unit: "binary", maxLength: 200 }),
          fc.json({ maxDepth: 3 }),
          fc
            .json({ maxDepth: 3 })
            .chain((j) =>
              fc
                .record({ at: fc.nat(j.length), piece: fc.string({ unit, maxLength: 3 }) })
                .map(({ at, piece }) => j.slice(0, at) + piece + j.slice(at)),
            ),
          sized,
        ),
        (raw) => checkAll(raw),
      ),
      { numRuns: RUNS },
    );
  });

  it("refuse every binary frame: too_large past the frame limit, bad_request otherwise, and never a clientId", () => {
    assertProperty(
      fc.property(
        fc.oneof(
          { weight: 4, arbitrary: fc.uint8Array({ maxLength: 300 }) },
          {
            weight: 1,
            arbitrary: fc
              .integer({ min: -4, max: 4 })
              .map((d) => new Uint8Array(FIELD_LIMITS.maxFrameBytes + d).fill(0x7b)),
          },
          {
            weight: 2,
            arbitrary: fc
              .jsonValue({ maxDepth: 2 })
              .map((v) => encoder.encode(JSON.stringify({ type: "send", clientId: "c1", text: "hi", v }))),
          },
        ),
        fc.nat(8),
        (bytes, offset) => {
          // An ArrayBuffer exactly as long as the frame, and one sliced out of a bigger buffer.
          const exact = bytes.slice().buffer as ArrayBuffer;
          const sliced = bytes.buffer.slice(Math.min(offset, bytes.byteLength)) as ArrayBuffer;
          for (const buffer of [exact, sliced]) checkAll(buffer);
          // The same bytes read as UTF-8 text, as a runtime would hand a text frame over.
          checkAll(new TextDecoder().decode(bytes));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("answer any JSON value, and any object of known and unknown fields, as the model does", () => {
    const field = fc.oneof(
      fc.constantFrom(...Object.values(KNOWN_FIELDS).flat(), "__proto__", "constructor"),
      fc.string({ maxLength: 8 }),
    );
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.constantFrom(...TYPES),
      seqArb,
      idArb,
      fc.boolean(),
      anyText(),
      fc.array(idArb, { maxLength: 4 }),
    );
    assertProperty(
      fc.property(
        fc.oneof(
          fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
          fc
            .record({
              type: fc.option(fc.constantFrom(...TYPES), { nil: undefined }),
              fields: fc.array(fc.tuple(field, value), { maxLength: 8 }),
            })
            .map(({ type, fields }) =>
              objectText(
                [
                  ...(type === undefined ? [] : [["type", JSON.stringify(type)] as Entry]),
                  ...fields.map(([k, v]): Entry => [k, JSON.stringify(v)]),
                ],
                { keyMode: "json", valueMode: "json", spaces: ["", "", "", ""] },
              ),
            ),
        ),
        limitsArb,
        (raw, l) => checkAll(raw, l),
      ),
      { numRuns: RUNS },
    );
  });

  it("parse every valid room frame generated from the model to exactly the model", () => {
    assertProperty(
      fc.property(
        fc
          .tuple(modelLimitsArb, layoutArb)
          .chain(([l, layout]) =>
            clientModel(l, layout.valueMode).chain((m) =>
              fc
                .shuffledSubarray(m.entries, { minLength: m.entries.length })
                .map((entries) => ({ l, raw: objectText(entries, layout), value: m.value })),
            ),
          ),
        ({ l, raw, value }) => {
          expect(bytesOf(raw)).toBeLessThanOrEqual(l.maxFrameBytes);
          check((r) => parseClientFrame(r, l), raw, { ok: true, value }, l.maxFrameBytes);
          if (COMMANDS.includes(String(value.type))) {
            check((r) => parseCommand(String(value.type), JSON.parse(r as string), l), raw, {
              ok: true,
              value,
            });
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("parse every valid presence frame generated from the model to exactly the model, duplicates collapsed", () => {
    assertProperty(
      fc.property(
        fc
          .tuple(modelLimitsArb, layoutArb)
          .chain(([l, layout]) =>
            presenceModel(l, layout.valueMode).chain((m) =>
              fc
                .shuffledSubarray(m.entries, { minLength: m.entries.length })
                .map((entries) => ({ l, raw: objectText(entries, layout), value: m.value })),
            ),
          ),
        ({ l, raw, value }) => {
          check((r) => parsePresenceFrame(r, l), raw, { ok: true, value }, l.maxFrameBytes);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("answer valid room frames mutated in hostile ways (fields dropped, retyped, duplicated, added, oversized) as the model does", () => {
    assertProperty(
      fc.property(
        fc.tuple(limitsArb, layoutArb).chain(([l, layout]) =>
          fc.record({
            l: fc.constant(l),
            layout: fc.constant(layout),
            model: clientModel(l, layout.valueMode),
            mutations: fc.array(mutationArb(l), { minLength: 1, maxLength: 3 }),
            text: textMutationArb,
          }),
        ),
        ({ l, layout, model, mutations, text }) => {
          const raw = mutateText(objectText(mutate(model.entries, mutations), layout), text);
          checkAll(raw, l);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("answer valid presence frames mutated in hostile ways as the model does", () => {
    assertProperty(
      fc.property(
        fc.tuple(limitsArb, layoutArb).chain(([l, layout]) =>
          fc.record({
            l: fc.constant(l),
            layout: fc.constant(layout),
            model: presenceModel(l, layout.valueMode, true),
            mutations: fc.array(mutationArb(l), { maxLength: 2 }),
            text: textMutationArb,
          }),
        ),
        ({ l, layout, model, mutations, text }) => {
          const raw = mutateText(objectText(mutate(model.entries, mutations), layout), text);
          checkAll(raw, l);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it("measure text as UTF-8 the way the wire does, lone surrogates and all, on both sides of any limit", () => {
    assertProperty(
      fc.property(
        fc.oneof(
          anyText(200),
          fc.array(loneSurrogate, { maxLength: 20 }).map((a) => a.join("")),
        ),
        fc.nat(700),
        (s, limit) => {
          cases += 1;
          expect(utf8Bytes(s)).toBe(bytesOf(s));
          expect(exceedsUtf8(s, limit)).toBe(bytesOf(s) > limit);
          // …and so a send is refused as too_large exactly when its text is over the limit.
          const l = { ...FIELD_LIMITS, maxTextBytes: Math.max(1, limit) };
          const raw = JSON.stringify({ type: "send", clientId: "c1", text: `x${s}` });
          check((r) => parseClientFrame(r, l), raw, expectClientFrame(raw, l), l.maxFrameBytes);
        },
      ),
      {
        numRuns: RUNS,
        // Found by this property: a high surrogate followed by anything but a low one was counted
        // as a four-byte pair with its neighbour (2 to 4 bytes short per lone surrogate).
        examples: [
          ["\ud800\ud800", 0],
          ["\ud800é", 4],
          ["\ud800€\ud800€", 8],
        ],
      },
    );
  });
});
