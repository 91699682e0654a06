/** @module Chat markdown: the AST of each construct and of hostile input, link safety, plain text, and
 * the renderer against a recording fake DOM (workerd has none). */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type Block,
  type DomLike,
  type DomParent,
  type Inline,
  type Meter,
  parseMarkdown,
  plainText,
  renderMarkdown,
  safeHref,
} from "../../client/web/markdown.ts";
import { mentionsIn } from "../../protocol/index.ts";

const text = (t: string): Inline => ({ type: "text", text: t });
const br: Inline = { type: "br" };
/** The inlines of a message that is a single paragraph. */
const inl = (src: string): Inline[] => {
  const blocks = parseMarkdown(src);
  expect(blocks).toHaveLength(1);
  const [only] = blocks;
  if (only?.type !== "paragraph") throw new Error(`expected one paragraph, got ${JSON.stringify(blocks)}`);
  return only.children;
};

function* walk(xs: Inline[]): Generator<Inline> {
  for (const x of xs) {
    yield x;
    if ("children" in x) yield* walk(x.children);
  }
}
const inlinesOf = (blocks: Block[]): Inline[] =>
  blocks.flatMap((b) => (b.type === "code" ? [] : b.type === "list" ? b.items.flat() : b.children));
const allInlines = (blocks: Block[]) => [...walk(inlinesOf(blocks))];
const emDepth = (xs: Inline[]): number =>
  Math.max(0, ...xs.map((x) => ("children" in x ? 1 + emDepth(x.children) : 0)));

describe("parseMarkdown blocks", () => {
  it("splits paragraphs on blank lines and keeps single newlines as line breaks", () => {
    expect(parseMarkdown("one\ntwo\n\n  \nthree")).toEqual([
      { type: "paragraph", children: [text("one"), br, text("two")] },
      { type: "paragraph", children: [text("three")] },
    ]);
  });

  it("treats CRLF and CR line endings like LF", () => {
    expect(parseMarkdown("a\r\nb\rc")).toEqual(parseMarkdown("a\nb\nc"));
  });

  it("returns no blocks for empty or whitespace-only input", () => {
    expect(parseMarkdown("")).toEqual([]);
    expect(parseMarkdown(" \n\t\n")).toEqual([]);
  });

  it("keeps a fenced code block verbatim, with its language", () => {
    expect(parseMarkdown("before\n```ts\nconst a = **b** <i>;\n\n  [x](javascript:y)\n```\nafter")).toEqual([
      { type: "paragraph", children: [text("before")] },
      { type: "code", lang: "ts", text: "const a = **b** <i>;\n\n  [x](javascript:y)" },
      { type: "paragraph", children: [text("after")] },
    ]);
  });

  it("keeps only a language that is a plain word, and takes the first word of the info", () => {
    const lang = (info: string) => {
      const [block] = parseMarkdown(`\`\`\`${info}\nx\n\`\`\``);
      return block?.type === "code" ? block.lang : "not code";
    };
    expect(lang("")).toBeNull();
    expect(lang("c++")).toBe("c++");
    expect(lang("objective-c extra words")).toBe("objective-c");
    expect(lang('"><script>alert(1)</script>')).toBeNull();
    expect(lang("a".repeat(21))).toBeNull();
  });

  it("runs an unclosed fence to the end of the message", () => {
    expect(parseMarkdown("```\nstill\n\ncode")).toEqual([
      { type: "code", lang: null, text: "still\n\ncode" },
    ]);
  });

  it("closes a fence only with at least as many backticks", () => {
    expect(parseMarkdown("````\n```\n````")).toEqual([{ type: "code", lang: null, text: "```" }]);
  });

  it("reads ```code``` on one line as an inline code span", () => {
    expect(inl("```a *b*```")).toEqual([{ type: "code", text: "a *b*" }]);
  });

  it("joins consecutive quote lines with line breaks and parses their inlines", () => {
    expect(parseMarkdown("> first **bold**\n>\n> third\nafter")).toEqual([
      {
        type: "quote",
        children: [text("first "), { type: "strong", children: [text("bold")] }, br, br, text("third")],
      },
      { type: "paragraph", children: [text("after")] },
    ]);
  });

  it("needs a space after > for a quote, so >_< stays text", () => {
    expect(inl(">_<")).toEqual([text(">_<")]);
  });

  it("groups - and * items into one bullet list, each item parsed inline", () => {
    expect(parseMarkdown("- one *it*\n* two")).toEqual([
      {
        type: "list",
        ordered: false,
        start: 1,
        items: [[text("one "), { type: "em", children: [text("it")] }], [text("two")]],
      },
    ]);
  });

  it("keeps the first number of an ordered list and starts a new list when the kind changes", () => {
    expect(parseMarkdown("3. c\n4. d\n- e")).toEqual([
      { type: "list", ordered: true, start: 3, items: [[text("c")], [text("d")]] },
      { type: "list", ordered: false, start: 1, items: [[text("e")]] },
    ]);
  });

  it("ends a list at a line that is not an item, and lets a list interrupt a paragraph", () => {
    expect(parseMarkdown("todo:\n- a\nmore")).toEqual([
      { type: "paragraph", children: [text("todo:")] },
      { type: "list", ordered: false, start: 1, items: [[text("a")]] },
      { type: "paragraph", children: [text("more")] },
    ]);
  });

  it("does not take **bold** or -1 at the start of a line for a list item", () => {
    expect(inl("**b** x")[0]).toEqual({ type: "strong", children: [text("b")] });
    expect(inl("-1 degrees")).toEqual([text("-1 degrees")]);
  });
});

describe("parseMarkdown inlines", () => {
  it("reads bold, italic with * or _, and strikethrough", () => {
    expect(inl("**b** *i* _j_ ~~s~~")).toEqual([
      { type: "strong", children: [text("b")] },
      text(" "),
      { type: "em", children: [text("i")] },
      text(" "),
      { type: "em", children: [text("j")] },
      text(" "),
      { type: "del", children: [text("s")] },
    ]);
  });

  it("nests emphasis, including *** as strong around em and the same marker inside itself", () => {
    expect(inl("***x***")).toEqual([{ type: "strong", children: [{ type: "em", children: [text("x")] }] }]);
    expect(inl("**a _b_ c**")).toEqual([
      { type: "strong", children: [text("a "), { type: "em", children: [text("b")] }, text(" c")] },
    ]);
    expect(inl("*a *b* c*")).toEqual([
      { type: "em", children: [text("a "), { type: "em", children: [text("b")] }, text(" c")] },
    ]);
  });

  it("leaves underscores inside words alone, so snake_case_words stay plain", () => {
    expect(inl("use snake_case_words and _x_y_ here")).toEqual([
      text("use snake_case_words and "),
      { type: "em", children: [text("x_y")] },
      text(" here"),
    ]);
  });

  it("allows * inside a word, as in un*frigging*believable", () => {
    expect(inl("un*frig*ble")).toEqual([text("un"), { type: "em", children: [text("frig")] }, text("ble")]);
  });

  it("keeps unclosed or unflanked markers literal", () => {
    for (const src of [
      "**bold",
      "*a",
      "_a",
      "~~x",
      "~x~",
      "`code",
      "2 * 3 * 4",
      "a ** b **",
      "****",
      "[text]",
      "[text](",
    ]) {
      expect(inl(src)).toEqual([text(src)]);
    }
  });

  it("keeps code spans verbatim and lets double backticks hold a backtick", () => {
    expect(inl("run `a *b* [c](https://x.y) @<u1>` now")).toEqual([
      text("run "),
      { type: "code", text: "a *b* [c](https://x.y) @<u1>" },
      text(" now"),
    ]);
    expect(inl("`` a`b ``")).toEqual([{ type: "code", text: "a`b" }]);
    expect(inl("`` ` ``")).toEqual([{ type: "code", text: "`" }]);
  });

  it("lets a code span win over emphasis around it", () => {
    expect(inl("*a `*` b*")).toEqual([
      { type: "em", children: [text("a "), { type: "code", text: "*" }, text(" b")] },
    ]);
  });

  it("takes backslash-escaped punctuation literally and keeps other backslashes", () => {
    expect(inl("\\*no\\* \\_no\\_ \\`no\\` \\[no](https://x.y) \\@<u1> \\\\ \\a")).toEqual([
      text("*no* _no_ `no` [no](https://x.y) @<u1> \\ \\a"),
    ]);
    expect(parseMarkdown("\\> not a quote\n\\- not a list")).toEqual([
      { type: "paragraph", children: [text("> not a quote"), br, text("- not a list")] },
    ]);
  });

  it("turns [text](url) into a link with a normalised href and parsed text", () => {
    expect(inl("see [**the** docs](HTTPS://Example.COM/a?b=1#c) now")).toEqual([
      text("see "),
      {
        type: "link",
        href: "https://example.com/a?b=1#c",
        children: [{ type: "strong", children: [text("the")] }, text(" docs")],
      },
      text(" now"),
    ]);
  });

  it("allows balanced parentheses and surrounding spaces in a link destination", () => {
    expect(inl("[w](https://en.wikipedia.org/wiki/Foo_(bar))")).toEqual([
      { type: "link", href: "https://en.wikipedia.org/wiki/Foo_(bar)", children: [text("w")] },
    ]);
    expect(inl("[x]( https://x.y )")).toEqual([
      { type: "link", href: "https://x.y/", children: [text("x")] },
    ]);
  });

  it("accepts mailto links", () => {
    expect(inl("[mail](mailto:a@b.example)")).toEqual([
      { type: "link", href: "mailto:a@b.example", children: [text("mail")] },
    ]);
  });

  it("pairs ] with the nearest [ and never nests links", () => {
    expect(inl("[a [b](https://x.y) c](https://z.y)")).toEqual([
      text("[a "),
      { type: "link", href: "https://x.y/", children: [text("b")] },
      text(" c](https://z.y)"),
    ]);
    expect(inl("[https://a.example](https://b.example)")).toEqual([
      { type: "link", href: "https://b.example/", children: [text("https://a.example")] },
    ]);
  });

  it("keeps emphasis from reaching into or out of link text", () => {
    expect(inl("**[a**](https://x.y)")).toEqual([
      text("**"),
      { type: "link", href: "https://x.y/", children: [text("a**")] },
    ]);
  });

  it("turns bare http and https URLs into links, leaving trailing punctuation outside", () => {
    const auto = (url: string): Inline => ({ type: "link", href: url, children: [text(url)] });
    expect(inl("go to https://example.com/a.")).toEqual([
      text("go to "),
      auto("https://example.com/a"),
      text("."),
    ]);
    expect(inl("(see http://x.example/p?q=1), ok?!")).toEqual([
      text("(see "),
      { type: "link", href: "http://x.example/p?q=1", children: [text("http://x.example/p?q=1")] },
      text("), ok?!"),
    ]);
    expect(inl("https://en.wikipedia.org/wiki/Foo_(bar)!")).toEqual([
      auto("https://en.wikipedia.org/wiki/Foo_(bar)"),
      text("!"),
    ]);
    expect(inl("**https://x.example/**")).toEqual([
      { type: "strong", children: [auto("https://x.example/")] },
    ]);
  });

  it("does not autolink other schemes, URLs glued to a word, or an empty host", () => {
    for (const src of [
      "ftp://x.example",
      "xhttps://x.example",
      "http://",
      "https:// x",
      "javascript://%0aalert(1)",
    ]) {
      expect(allInlines(parseMarkdown(src)).filter((x) => x.type === "link")).toEqual([]);
      expect(plainText(parseMarkdown(src))).toBe(src);
    }
  });

  it("reads @<userId> as a mention, with the same syntax the server counts", () => {
    expect(inl("hi @<u_alice-1>, and @<u2>@<u3>")).toEqual([
      text("hi "),
      { type: "mention", id: "u_alice-1" },
      text(", and "),
      { type: "mention", id: "u2" },
      { type: "mention", id: "u3" },
    ]);
  });

  it("keeps mentions with invalid ids as text", () => {
    for (const src of ["@<>", "@<bad id>", "@<a.b>", `@<${"a".repeat(65)}>`, "@<u1", "@ <u1>", "@alice"]) {
      expect(inl(src)).toEqual([text(src)]);
    }
    expect(inl(`@<${"a".repeat(64)}>`)).toEqual([{ type: "mention", id: "a".repeat(64) }]);
  });

  it("caps emphasis nesting at 8 levels; deeper markers stay literal", () => {
    const src = `${"*a ".repeat(12)}y${"*z".repeat(12)}`;
    expect(emDepth(inl(src))).toBe(8);
    expect(plainText(parseMarkdown(src))).toBe(
      `${"a ".repeat(8)}${"*a ".repeat(4)}y${"*z".repeat(4)}${"z".repeat(8)}`,
    );
  });

  it("survives thousands of nested markers without deep recursion", () => {
    const src = `${"*a _b ".repeat(5000)}y${"_z*z".repeat(5000)}`;
    expect(emDepth(inl(src))).toBe(8);
  });
});

describe("hostile input", () => {
  it("keeps HTML as literal text", () => {
    for (const src of [
      "<img src=x onerror=alert(1)>",
      "<script>alert(1)</script>",
      '<a href="javascript:x">y</a>',
    ]) {
      expect(inl(src)).toEqual([text(src)]);
    }
  });

  it("shows a link with an unsafe destination exactly as typed", () => {
    for (const src of [
      "[x](javascript:alert(1))",
      "[x](JaVaScRiPt:alert(1))",
      "[x]( javascript:alert(1))",
      "[x](java&#x09;script:alert(1))",
      "[x](java\tscript:alert(1))",
      "[x](vbscript:msgbox(1))",
      "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
      "[x](/relative/path)",
      "[x](//evil.example/)",
      "[x](https:evil.example)",
      "[**bold** `code`](javascript:alert(1))",
    ]) {
      expect(inl(src)).toEqual([text(src)]);
    }
  });

  it("keeps an unsafe link spanning lines as typed, line breaks included", () => {
    expect(inl("[a\nb](javascript:x)")).toEqual([text("[a"), br, text("b](javascript:x)")]);
  });
});

describe("safeHref", () => {
  it("returns the normalised URL for http, https and mailto", () => {
    expect(safeHref("https://Example.COM")).toBe("https://example.com/");
    expect(safeHref("HTTP://example.com/a b".replace(" ", "%20"))).toBe("http://example.com/a%20b");
    expect(safeHref("mailto:someone@example.com")).toBe("mailto:someone@example.com");
  });

  it("refuses every other scheme, relative URLs and whitespace or control tricks", () => {
    for (const url of [
      "javascript:alert(1)",
      "JaVaScRiPt:alert(1)",
      " javascript:alert(1)",
      " https://example.com",
      "https://example.com ",
      "java\tscript:alert(1)",
      "java\nscript:alert(1)",
      "\u0000https://example.com",
      "https://exa\u0000mple.com",
      "https://example.com/\u0085",
      "https://example.com/\u2028",
      "https:\t//example.com",
      "data:text/html,<script>alert(1)</script>",
      "vbscript:msgbox(1)",
      "file:///etc/passwd",
      "ftp://example.com",
      "/relative",
      "//example.com",
      "https:example.com",
      "http://",
      "",
      `https://example.com/${"a".repeat(5000)}`,
    ]) {
      expect(safeHref(url), JSON.stringify(url)).toBeNull();
    }
  });
});

describe("plainText", () => {
  it("drops the markup and names mentions through the resolver", () => {
    const blocks = parseMarkdown(
      "**Hi** @<u1>, see [docs](https://x.example) and `code`\n\n> quoted\n- one\n- two\n```\nraw *x*\n```",
    );
    expect(plainText(blocks, (id) => (id === "u1" ? "Alice" : id))).toBe(
      "Hi @Alice, see docs and code\nquoted\none\ntwo\nraw *x*",
    );
  });

  it("falls back to the user id without a resolver", () => {
    expect(plainText(parseMarkdown("ping @<u_bob>"))).toBe("ping @u_bob");
  });
});

type FakeNode = { tag?: string; attrs: Record<string, string>; children: FakeNode[]; text?: string };

/** A recording stand-in for `document`: the renderer's only way to make nodes. */
function fakeDoc(): DomLike<FakeNode & DomParent> {
  const node = (tag?: string): FakeNode => {
    const n: FakeNode = { attrs: {}, children: [] };
    if (tag) n.tag = tag;
    return n;
  };
  const element = (tag: string) => {
    const n = node(tag);
    return Object.assign(n, {
      setAttribute: (name: string, value: string) => {
        n.attrs[name] = value;
      },
      appendChild: (child: object) => n.children.push(child as FakeNode),
    });
  };
  return {
    createElement: element,
    createTextNode: (t: string) => ({ ...node(), text: t }),
    createDocumentFragment: () => element("#fragment"),
  };
}

/** HTML-like rendering of the fake tree, escaping text, to compare structure at a glance. */
const show = (n: FakeNode): string => {
  if (n.text !== undefined) return n.text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const inner = n.children.map(show).join("");
  if (n.tag === "#fragment") return inner;
  const attrs = Object.entries(n.attrs).map(([k, v]) => ` ${k}="${v.replace(/"/g, "&quot;")}"`);
  return `<${n.tag}${attrs.join("")}>${inner}</${n.tag}>`;
};

describe("renderMarkdown", () => {
  const render = (src: string) =>
    show(renderMarkdown(parseMarkdown(src), fakeDoc(), { mentionName: (id) => `<${id}>` }));

  it("builds elements for every construct, with text only in text nodes", () => {
    expect(render("**b** *i* ~~s~~ `c` <img src=x onerror=alert(1)>\nnext")).toBe(
      "<p><strong>b</strong> <em>i</em> <del>s</del> <code>c</code> &lt;img src=x onerror=alert(1)&gt;<br></br>next</p>",
    );
    expect(render("```js\n<b>\n```\n> q\n- a\n3. b")).toBe(
      '<pre><code data-lang="js">&lt;b&gt;</code></pre><blockquote>q</blockquote><ul><li>a</li></ul><ol start="3"><li>b</li></ol>',
    );
  });

  it("gives links a safe href, rel and target, and mentions a data-user-id and resolved name", () => {
    expect(render("[x](https://a.example) @<u1>")).toBe(
      '<p><a href="https://a.example/" rel="noopener noreferrer nofollow" target="_blank">x</a> ' +
        '<span class="mention" data-user-id="u1">@&lt;u1&gt;</span></p>',
    );
  });

  it("checks hrefs again, so a hand-built AST with javascript: renders no link", () => {
    const blocks: Block[] = [
      { type: "paragraph", children: [{ type: "link", href: "javascript:alert(1)", children: [text("x")] }] },
    ];
    expect(show(renderMarkdown(blocks, fakeDoc(), { mentionName: (id) => id }))).toBe(
      "<p><span>x</span></p>",
    );
  });
});

/** Every node satisfies the AST's safety promises. */
function assertSafe(blocks: Block[]): void {
  for (const b of blocks)
    if (b.type === "code" && b.lang !== null) expect(b.lang).toMatch(/^[A-Za-z0-9_+-]{1,20}$/);
  for (const x of allInlines(blocks)) {
    if (x.type === "link") expect(safeHref(x.href)).toBe(x.href);
    if (x.type === "mention") expect(x.id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
  }
}

const chars = (s: string) => fc.constantFrom(...s);
const markdownish = fc.string({
  unit: fc.oneof(
    chars("*_~`[]()\\@<>!:/.- \n\t#1ah"),
    fc.constantFrom("https://", "http://a.b", "javascript:", "@<u1>", "```", "> ", "- ", "1. ", "](", "\r\n"),
  ),
  maxLength: 200,
});

describe("parseMarkdown properties", () => {
  it("never throws, and every link, mention and language it yields is a safe one", () => {
    fc.assert(
      fc.property(fc.oneof(markdownish, fc.string({ unit: "binary", maxLength: 200 })), (src) => {
        const blocks = parseMarkdown(src);
        assertSafe(blocks);
        plainText(blocks);
        renderMarkdown(blocks, fakeDoc(), { mentionName: (id) => id });
      }),
      { numRuns: 1000 },
    );
  });

  it("gives back text without markdown punctuation unchanged, blank lines aside", () => {
    const plain = fc.string({ unit: chars("abcXYZ019 \tÄé日😀\n"), maxLength: 120 });
    fc.assert(
      fc.property(plain, (src) => {
        const expected = src
          .split("\n")
          .filter((l) => l.trim() !== "")
          .join("\n");
        expect(plainText(parseMarkdown(src))).toBe(expected);
      }),
    );
  });

  it("shows any line literally once every punctuation character is escaped", () => {
    const line = fc.string({ maxLength: 80 }).filter((s) => s.trim() !== "" && !/[\r\n]/.test(s));
    fc.assert(
      fc.property(line, (src) => {
        const escaped = src.replace(/[!-/:-@[-`{-~]/g, "\\$&");
        expect(parseMarkdown(escaped)).toEqual([{ type: "paragraph", children: [text(src)] }]);
      }),
    );
  });

  it("finds the same mentions the server counts, outside code", () => {
    const chat = fc.string({
      unit: fc.oneof(chars("ab_-@<>*~ .1\n"), fc.constantFrom("@<u1>", "@<u_2>", "- ", "> ")),
      maxLength: 80,
    });
    fc.assert(
      fc.property(chat, (src) => {
        const found = allInlines(parseMarkdown(src)).flatMap((x) => (x.type === "mention" ? [x.id] : []));
        expect(new Set(found)).toEqual(new Set(mentionsIn(src)));
      }),
    );
  });
});

describe("parseMarkdown work bound", () => {
  const SIZE = 16 * 1024;
  const fill = (unit: string, n: number) => unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
  const variedTicks = (n: number) => {
    let s = "";
    for (let k = 1; s.length < n; k++) s += `${"`".repeat(k)}a`;
    return s.slice(0, n);
  };
  const hostile: Record<string, (n: number) => string> = {
    stars: (n) => fill("*", n),
    underscores: (n) => fill("_", n),
    brackets: (n) => fill("[", n),
    backticks: (n) => fill("`", n),
    "backtick runs of every length": variedTicks,
    "unclosed openers": (n) => fill("*a _b ~~c [d `e ", n),
    "intraword stars": (n) => fill("a*", n),
    "nested openers then closers": (n) => fill("*a ", n / 2) + fill("b* ", n / 2),
    "link heads": (n) => fill("[a](", n),
    "nested link tails with spaces": (n) => fill("]( ", n / 2) + fill(")", n / 2),
    "open parens": (n) => fill("(", n / 2) + fill("](x y)", n / 2),
    "bad URLs": (n) => fill("http://%h", n),
    "URL then punctuation": (n) => `https://a.example/${fill(".", n)}`,
    "broken mentions": (n) => fill("@<aaaa", n),
    escapes: (n) => fill("\\", n),
    "quote lines": (n) => fill("> *a\n", n),
    "list lines": (n) => fill("- _\n", n),
  };

  // Steps count the parser's own loops and scans; regexes and string slices inside them are linear
  // by construction. A bound on steps per character catches any quadratic path without a clock.
  for (const [name, gen] of Object.entries(hostile)) {
    it(`stays linear on 16 KiB of ${name}`, () => {
      const steps = (n: number) => {
        const meter: Meter = { steps: 0 };
        parseMarkdown(gen(n), meter);
        return meter.steps;
      };
      const [one, two] = [steps(SIZE), steps(2 * SIZE)];
      expect(one).toBeLessThanOrEqual(8 * SIZE);
      expect(two).toBeLessThanOrEqual(2.1 * one + 16);
    });
  }
});
