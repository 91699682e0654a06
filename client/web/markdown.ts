/** @module Chat markdown: a linear-time parser into a small AST, a DOM builder, and a plain-text view. */
import { MENTION } from "../../protocol/index.ts";

type Emphasis = "strong" | "em" | "del";
export type Inline =
  | { type: "text"; text: string }
  | { type: "br" }
  | { type: "code"; text: string }
  | { type: Emphasis; children: Inline[] }
  | { type: "link"; href: string; children: Inline[] }
  | { type: "mention"; id: string };

export type Block =
  | { type: "paragraph"; children: Inline[] }
  | { type: "code"; lang: string | null; text: string }
  | { type: "quote"; children: Inline[] }
  | { type: "list"; ordered: boolean; start: number; items: Inline[][] };

/** Counts the parser's loop iterations and scans, so tests can bound its work without a clock. */
export type Meter = { steps: number };

/** Emphasis and links nested deeper than this stay literal: it bounds recursion, and nobody means it. */
const MAX_DEPTH = 8;
const LANG = /^[A-Za-z0-9_+-]{1,20}$/;
/** The protocol's own mention syntax, so the client shows exactly the mentions the server notifies. */
const MENTION_AT = new RegExp(MENTION.source, "y");
/** Brackets, quotes and backticks end a bare URL, so it never swallows the markup around it. */
const AUTOLINK = /https?:\/\/[^\s<>[\]`"]+/iy;
const TRAILING = /[.,:;!?'*_~]/;
const ESCAPABLE = /[!-/:-@[-`{-~]/;
const [PUNCT, SPACE, WORD] = [/[\p{P}\p{S}]/u, /\s/, /[\p{L}\p{N}_]/u];

// Block syntax, matched one line at a time; none of these can backtrack more than linearly.
const FENCE = /^ {0,3}(`{3,})([^`]*)$/;
const FENCE_END = /^ {0,3}(`{3,})\s*$/;
const QUOTE = /^ {0,3}>(?: |$)(.*)$/;
const ITEM = /^ {0,3}(?:[-*]|(\d{1,9})\.) (.*)$/;
const BLANK = /^\s*$/;

/** Parses chat markdown. Never throws; its work grows linearly with the input (see `Meter`). */
export function parseMarkdown(src: string, meter: Meter = { steps: 0 }): Block[] {
  const lines = (typeof src === "string" ? src : "").split(/\r\n?|\n/);
  const blocks: Block[] = [];
  const inline = (parts: string[]) => parseInline(parts.join("\n"), meter);
  let i = 0;
  /** Consumes lines while `take` gives their content. */
  const run = (take: (line: string) => string | undefined) => {
    const out: string[] = [];
    for (; i < lines.length; i++, meter.steps++) {
      const content = take(lines[i] ?? "");
      if (content === undefined) break;
      out.push(content);
    }
    return out;
  };
  while (i < lines.length) {
    const first = lines[i] ?? "";
    const fence = FENCE.exec(first);
    const item = ITEM.exec(first);
    meter.steps++;
    if (fence) {
      const width = fence[1]?.length ?? 3;
      const lang = (fence[2] ?? "").trim().split(/\s/)[0] ?? "";
      i++;
      // An unclosed fence runs to the end, so half-typed code still shows as code.
      const text = run((l) => ((FENCE_END.exec(l)?.[1]?.length ?? 0) >= width ? undefined : l)).join("\n");
      i++;
      blocks.push({ type: "code", lang: LANG.test(lang) ? lang : null, text });
    } else if (QUOTE.test(first)) {
      blocks.push({ type: "quote", children: inline(run((l) => QUOTE.exec(l)?.[1])) });
    } else if (item) {
      const ordered = item[1] !== undefined;
      const texts = run((l) => {
        const m = ITEM.exec(l);
        return m && (m[1] !== undefined) === ordered ? (m[2] ?? "") : undefined;
      });
      const items = texts.map((t) => inline([t]));
      blocks.push({ type: "list", ordered, start: ordered ? Number(item[1]) : 1, items });
    } else if (BLANK.test(first)) {
      i++;
    } else {
      // A paragraph runs until a blank line or a line that starts another block.
      const starts = (l: string) => BLANK.test(l) || FENCE.test(l) || QUOTE.test(l) || ITEM.test(l);
      blocks.push({ type: "paragraph", children: inline(run((l) => (starts(l) ? undefined : l))) });
    }
  }
  return blocks;
}

/** A lexed piece of inline text: `s` is the text, code, user id, URL or delimiter ("*", "__", "~~"…);
 * `a`..`b` its source range, so that a refused link can be shown exactly as typed. */
type Tok = { k: TokKind; s: string; a: number; b: number; href?: string; opens?: boolean; closes?: boolean };
type TokKind = "text" | "br" | "code" | "mention" | "auto" | "delim" | "open" | "close";

const runLength = (s: string, at: number, ch: string) => {
  let k = at;
  while (s.charAt(k) === ch) k++;
  return k - at;
};

/**
 * One pass over a block's text. What would make a naive parser quadratic is looked up, never
 * rescanned: a pre-pass records the ")" closing each "(", backtick runs by length, and prefix counts
 * of whitespace (does a link destination contain a space?).
 */
function lex(s: string, meter: Meter): Tok[] {
  const n = s.length;
  const spaces = new Int32Array(n + 1);
  const closeOf = new Int32Array(n).fill(-1);
  const ticks = new Map<number, number[]>();
  const parens: number[] = [];
  for (let k = 0; k < n; k++) {
    const ch = s.charAt(k);
    spaces[k + 1] = (spaces[k] ?? 0) + (SPACE.test(ch) ? 1 : 0);
    if (ch === "\n") parens.length = 0;
    else if (ch === "(") parens.push(k);
    else if (ch === ")" && parens.length) closeOf[parens.pop() ?? 0] = k;
    else if (ch === "`" && s.charAt(k - 1) !== "`") {
      const len = runLength(s, k, "`");
      const list = ticks.get(len);
      if (list) list.push(k);
      else ticks.set(len, [k]);
    }
  }
  meter.steps += 2 * n; // the pass, and runLength over at most n backticks
  const cursor = new Map<number, number>();
  /** The first backtick run of exactly `len` starting after `at`, or -1. Cursors only move forward. */
  const nextTicks = (len: number, at: number) => {
    const list = ticks.get(len) ?? [];
    let c = cursor.get(len) ?? 0;
    for (; (list[c] ?? n) <= at; c++) meter.steps++;
    cursor.set(len, c);
    return list[c] ?? -1;
  };

  const toks: Tok[] = [];
  let text = "";
  const emit = (t: Tok) => {
    if (text) toks.push({ k: "text", s: text, a: t.a, b: t.a });
    text = "";
    toks.push(t);
    return t.b;
  };
  const escaped = (i: number) => {
    if (!ESCAPABLE.test(s.charAt(i + 1))) return -1;
    text += s.charAt(i + 1);
    return i + 2;
  };
  const code = (i: number) => {
    const len = runLength(s, i, "`");
    const end = nextTicks(len, i);
    if (end < 0) return -len;
    // Verbatim but for CommonMark's one-space trim, which is how `` ` `` shows a lone backtick.
    const body = s.slice(i + len, end);
    const padded = body.startsWith(" ") && body.endsWith(" ") && /[^ ]/.test(body);
    return emit({ k: "code", s: padded ? body.slice(1, -1) : body, a: i, b: end + len });
  };
  const delims = (i: number) => {
    const ch = s.charAt(i);
    const len = runLength(s, i, ch);
    const [before, after] = [s.charAt(i - 1) || " ", s.charAt(i + len) || " "];
    const [sb, sa, pb, pa] = [SPACE.test(before), SPACE.test(after), PUNCT.test(before), PUNCT.test(after)];
    const left = !sa && (!pa || sb || pb);
    const right = !sb && (!pb || sa || pa);
    // "_" opens and closes only at a word boundary, so snake_case_words stay plain.
    const canOpen = ch === "_" ? left && (!right || pb) : left;
    const canClose = ch === "_" ? right && (!left || pa) : right;
    // Runs of one or two are one delimiter; three split with the double one outermost, so ***x*** is
    // strong(em(x)); longer runs, and tildes other than ~~, are text.
    const [one, two] = [ch, ch + ch];
    const triple = canOpen ? [two, one] : [one, two];
    const parts =
      ch === "~" ? (len === 2 ? [two] : []) : len === 3 ? triple : len <= 2 ? [ch.repeat(len)] : [];
    if (!parts.length || !(canOpen || canClose)) return -len;
    let at = i;
    for (const p of parts)
      at = emit({ k: "delim", s: p, a: at, b: at + p.length, opens: canOpen, closes: canClose });
    return at;
  };
  const linkEnd = (i: number) => {
    const close = s.charAt(i + 1) === "(" ? (closeOf[i + 1] ?? -1) : -1;
    let [a, b] = [i + 2, close];
    while (a < b && SPACE.test(s.charAt(a))) a++;
    while (b > a && SPACE.test(s.charAt(b - 1))) b--;
    meter.steps += a - i + Math.max(0, close - b);
    if (a >= b || spaces[a] !== spaces[b]) return -1;
    return emit({ k: "close", s: s.slice(a, b), a: i, b: close + 1 });
  };
  const mention = (i: number) => {
    MENTION_AT.lastIndex = i;
    const id = MENTION_AT.exec(s)?.[1];
    return id ? emit({ k: "mention", s: id, a: i, b: i + id.length + 3 }) : -1;
  };
  const autolink = (i: number) => {
    if (WORD.test(s.charAt(i - 1))) return -1;
    AUTOLINK.lastIndex = i;
    const run = AUTOLINK.exec(s)?.[0] ?? "";
    // Trailing punctuation belongs to the sentence; a ")" to the URL only if it closes a "(".
    let unclosed = run.split(")").length - run.split("(").length;
    let end = run.length;
    for (let last = run.charAt(end - 1); end > 0; last = run.charAt(end - 1)) {
      if (TRAILING.test(last) || (last === ")" && unclosed-- > 0)) end--;
      else break;
    }
    const href = safeHref(run.slice(0, end));
    // A URL that is refused stays text, and is not rescanned from its next character (quadratic).
    return href ? emit({ k: "auto", s: run.slice(0, end), href, a: i, b: i + end }) : -Math.max(1, end);
  };

  const br = (i: number) => emit({ k: "br", s: "", a: i, b: i + 1 });
  const open = (i: number) => emit({ k: "open", s: "[", a: i, b: i + 1 });
  const readers: Record<string, (i: number) => number> = {
    "\\": escaped,
    "\n": br,
    "`": code,
    "*": delims,
    _: delims,
    "~": delims,
    "[": open,
    "]": linkEnd,
    "@": mention,
    h: autolink,
    H: autolink,
  };
  // A reader returns the index after what it took, or minus the length to keep as plain text.
  for (let i = 0; i < n; ) {
    let to = readers[s.charAt(i)]?.(i) ?? -1;
    if (to < 0) {
      text += s.slice(i, i - to);
      to = i - to;
    }
    meter.steps += to - i;
    i = to;
  }
  if (text) toks.push({ k: "text", s: text, a: n, b: n });
  return toks;
}

const EMPHASIS: Record<string, Emphasis> = { "*": "em", _: "em", "**": "strong", __: "strong", "~~": "del" };

/**
 * The partner of each token, or -1. A "](url)" closes the nearest "[" before it. An emphasis closer
 * takes the nearest open delimiter of its kind and drops the unmatched ones between (CommonMark's
 * rule, so pairs always nest), never reaching across a link's bounds. With a stack per kind, each
 * token is pushed and popped at most once.
 */
function pair(toks: Tok[], meter: Meter): Int32Array {
  const match = new Int32Array(toks.length).fill(-1);
  for (let k = 0, open = -1; k < toks.length; k++) {
    if (toks[k]?.k === "open") open = k;
    else if (toks[k]?.k === "close" && open >= 0) [match[open], match[k], open] = [k, open, -1];
  }
  const stacks = new Map<string, number[]>();
  const cut = (above: number) => {
    for (const st of stacks.values()) for (; (st.at(-1) ?? -1) > above; meter.steps++) st.pop();
  };
  let floor = -1;
  toks.forEach((t, k) => {
    meter.steps += 2;
    const partner = match[k] ?? -1;
    if (t.k === "open" && partner >= 0) floor = k;
    else if (t.k === "close" && partner >= 0) {
      cut(partner); // openers left inside the link text stay literal
      floor = -1;
    } else if (t.k === "delim") {
      const st = stacks.get(t.s) ?? [];
      stacks.set(t.s, st);
      const o = st.at(-1) ?? -1;
      if (t.closes && o > floor) {
        [match[o], match[k]] = [k, o];
        cut(o - 1); // the opener, and every unmatched delimiter after it
      } else if (t.opens) st.push(k);
    }
  });
  return match;
}

/** Appends text, merged with the text before it; newlines (from source shown as typed) are breaks. */
function addText(out: Inline[], text: string): void {
  text.split("\n").forEach((line, k) => {
    const last = out.at(-1);
    if (k > 0) out.push({ type: "br" });
    if (k === 0 && last?.type === "text") last.text += line;
    else if (line) out.push({ type: "text", text: line });
  });
}

type Ctx = { src: string; toks: Tok[]; match: Int32Array; meter: Meter };

function build(c: Ctx, from: number, to: number, depth: number, inLink: boolean): Inline[] {
  const out: Inline[] = [];
  for (let k = from; k < to; k++) {
    c.meter.steps++;
    const t = c.toks[k];
    const j = c.match[k] ?? -1;
    const nested = j > k && j < to && depth < MAX_DEPTH;
    if (!t) break;
    if (t.k === "text") addText(out, t.s);
    else if (t.k === "br") out.push({ type: "br" });
    else if (t.k === "code") out.push({ type: "code", text: t.s });
    else if (t.k === "mention") out.push({ type: "mention", id: t.s });
    else if (t.k === "auto" && t.href && !inLink)
      out.push({ type: "link", href: t.href, children: [{ type: "text", text: t.s }] });
    else if (t.k === "delim" && nested) {
      out.push({ type: EMPHASIS[t.s] ?? "em", children: build(c, k + 1, j, depth + 1, inLink) });
      k = j;
    } else if (t.k === "open" && nested) {
      const end = c.toks[j];
      const href = safeHref(end?.s ?? "");
      // A refused link stays exactly as typed, so the reader sees what the sender wrote.
      if (href) out.push({ type: "link", href, children: build(c, k + 1, j, depth + 1, true) });
      else addText(out, c.src.slice(t.a, end?.b));
      k = j;
    } else addText(out, c.src.slice(t.a, t.b)); // an unpaired "[", "](url)" or delimiter; a URL inside a link
  }
  return out;
}

function parseInline(src: string, meter: Meter): Inline[] {
  const toks = lex(src, meter);
  return build({ src, toks, match: pair(toks, meter), meter }, 0, toks.length, 0, false);
}

/** Checked on the text as typed: the URL parser forgives tabs, newlines, controls and leading spaces,
 * which is how "java\tscript:" gets past checks made after parsing. */
const SAFE_PREFIX = /^(?:https?:\/\/|mailto:)/i;

/**
 * The normalised URL if it is an absolute http:, https: or mailto: URL without whitespace or control
 * characters, else null. Over 4 KiB is refused too: nobody clicks that, and it bounds the work.
 */
export function safeHref(url: string): string | null {
  if (typeof url !== "string" || url.length > 4096 || !SAFE_PREFIX.test(url) || SPACE.test(url)) return null;
  for (let k = 0; k < url.length; k++) {
    const c = url.charCodeAt(k);
    if (c <= 0x20 || (c >= 0x7f && c <= 0x9f)) return null;
  }
  try {
    const { protocol, href } = new URL(url);
    return protocol === "http:" || protocol === "https:" || protocol === "mailto:" ? href : null;
  } catch {
    return null;
  }
}

/** The words without the markup, for notifications, previews and aria-labels. */
export function plainText(blocks: Block[], mentionName: (id: string) => string = (id) => id): string {
  const flat = (xs: Inline[]): string => xs.map(one).join("");
  const one = (x: Inline): string => {
    if ("children" in x) return flat(x.children);
    if (x.type === "br") return "\n";
    return x.type === "mention" ? `@${mentionName(x.id)}` : x.text;
  };
  const block = (b: Block) =>
    b.type === "code" ? b.text : b.type === "list" ? b.items.map(flat).join("\n") : flat(b.children);
  return blocks.map(block).join("\n");
}

/** The only tag and attribute names the renderer can use: closed unions, so no text becomes a name. */
type Tag = "p" | "br" | "pre" | "code" | "blockquote" | "ul" | "ol" | "li" | "a" | "span" | Emphasis;
type Attr = "href" | "rel" | "target" | "class" | "data-user-id" | "data-lang" | "start";
type Attrs = Partial<Record<Attr, string>>;

/** The slice of the DOM the renderer uses. Structural, so this module compiles without the DOM lib
 * (the unit tests run in workerd); a browser `document` satisfies it. */
export type DomParent = { appendChild(child: object): unknown };
export type DomElement = DomParent & { setAttribute(name: Attr, value: string): void };
export type DomLike<F extends DomParent> = {
  createElement(tag: Tag): DomElement;
  createTextNode(text: string): object;
  createDocumentFragment(): F;
};

/** Builds DOM nodes for parsed markdown: text only ever becomes text nodes and attribute values. */
export function renderMarkdown<F extends DomParent>(
  blocks: Block[],
  doc: DomLike<F>,
  opts: { mentionName(id: string): string },
): F {
  const el = (tag: Tag, attrs: Attrs, children: object[] = []) => {
    const e = doc.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) e.setAttribute(name as Attr, value);
    for (const child of children) e.appendChild(child);
    return e;
  };
  const text = (t: string) => doc.createTextNode(t);
  const inline = (x: Inline): object => {
    if (x.type === "text") return text(x.text);
    if (x.type === "br") return el("br", {});
    if (x.type === "code") return el("code", {}, [text(x.text)]);
    if (x.type === "mention") {
      const name = text(`@${opts.mentionName(x.id)}`);
      return el("span", { class: "mention", "data-user-id": x.id }, [name]);
    }
    const children = x.children.map(inline);
    if (x.type !== "link") return el(x.type, {}, children);
    // Checked again: an AST can come from somewhere other than parseMarkdown.
    const href = safeHref(x.href);
    if (!href) return el("span", {}, children);
    return el("a", { href, rel: "noopener noreferrer nofollow", target: "_blank" }, children);
  };
  const frag = doc.createDocumentFragment();
  for (const b of blocks) {
    if (b.type === "paragraph") frag.appendChild(el("p", {}, b.children.map(inline)));
    else if (b.type === "quote") frag.appendChild(el("blockquote", {}, b.children.map(inline)));
    else if (b.type === "code") {
      const lang = b.lang && LANG.test(b.lang) ? { "data-lang": b.lang } : {};
      frag.appendChild(el("pre", {}, [el("code", lang, [text(b.text)])]));
    } else {
      const items = b.items.map((item) => el("li", {}, item.map(inline)));
      frag.appendChild(el(b.ordered ? "ol" : "ul", b.start !== 1 ? { start: String(b.start) } : {}, items));
    }
  }
  return frag;
}
