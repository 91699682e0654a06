/**
 * @module What Parley records and serves about an uploaded file: its name (from `X-Filename`,
 * sanitised), its type (from `Content-Type`, normalised), and the headers it is downloaded with.
 * Pure functions: every input here is hostile.
 */

const FALLBACK_NAME = "file";
const OCTET_STREAM = "application/octet-stream";

/**
 * Image types a browser may show in place (`?inline=1`): raster formats only. Never SVG (it is a
 * document that runs script) nor HTML or anything else a browser renders as a page.
 */
export const INLINE_TYPES: ReadonlySet<string> = new Set([
  "image/png",
  "image/jpeg",
  "image/gif",
  "image/webp",
]);

/** Control characters (C0, DEL, C1); bidi marks, embeddings, overrides and isolates (which make
 * "gnp.exe" look like "exe.png"); zero-width characters and the BOM. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const INVISIBLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
/** Characters reserved by common file systems (Windows is the strictest), or that break quoting. */
const RESERVED = /[<>:|?*]/g;
const QUOTES = /["'`]/g;
/** Names Windows reserves for devices, with or without an extension. */
const DEVICE = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\.|$)/i;
/** An extension worth keeping when a name is shortened. */
const EXTENSION = /\.[^.\s]{1,16}$/;

/** Header values are bytes, which Workers read as Latin-1: a client that sent raw UTF-8 instead of
 * percent-encoding it gets its name read back as UTF-8 when that decodes cleanly. */
function fromLatin1Bytes(s: string): string {
  if (!/[\u0080-\u00ff]/.test(s) || /[\u0100-\uffff]/.test(s)) return s;
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(
      Uint8Array.from(s, (c) => c.charCodeAt(0)),
    );
  } catch {
    return s;
  }
}

/** At most `max` code points, keeping the extension when there is room for it. */
function shorten(name: string, max: number): string {
  const chars = Array.from(name);
  if (chars.length <= max) return name;
  const ext = Array.from(EXTENSION.exec(name)?.[0] ?? "");
  if (ext.length >= max / 2) return chars.slice(0, max).join("");
  return chars.slice(0, max - ext.length).join("") + ext.join("");
}

const trimEnds = (s: string) => s.replace(/^[\s.]+/, "").replace(/[\s.]+$/, "");

/**
 * The stored name of an upload: `X-Filename` percent-decoded (clients send non-ASCII names as
 * encodeURIComponent), reduced to its last path component, without invisible or reserved
 * characters, quotes, leading dots (no hidden files, no `..`) or trailing dots and spaces, not a
 * Windows device name, at most `maxChars` code points; `file` when nothing is left.
 */
export function sanitizeFilename(raw: string | undefined, maxChars: number): string {
  let name = fromLatin1Bytes(raw ?? "");
  if (/%[0-9a-f]{2}/i.test(name)) {
    try {
      name = decodeURIComponent(name);
    } catch {
      // not valid percent-encoding: the name is taken literally
    }
  }
  name = name.normalize("NFC");
  name = name.split(/[/\\]/).at(-1) ?? "";
  name = name.replace(INVISIBLE, "").replace(QUOTES, "").replace(RESERVED, "_");
  name = trimEnds(name.replace(/\s+/g, " "));
  if (DEVICE.test(name)) name = `_${name}`;
  name = trimEnds(shorten(name, maxChars));
  return name === "" ? FALLBACK_NAME : name;
}

/** RFC 6838 type and subtype names. */
const MEDIA_TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/;

/** The recorded type of an upload: the request's `Content-Type` without parameters, lowercased,
 * when it is a well-formed `type/subtype`; otherwise `application/octet-stream`. */
export function normalizeContentType(raw: string | undefined): string {
  const essence = (raw ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  return MEDIA_TYPE.test(essence) ? essence : OCTET_STREAM;
}

/** RFC 8187 `ext-value` characters: everything else is percent-encoded. */
function encodeExtValue(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** `filename="…"` for clients that ignore `filename*`: printable ASCII only, without `%` (some
 * browsers decode it there). Sanitised names hold no quotes or backslashes. */
function asciiFallback(name: string): string {
  return name.replace(/[^\u0020-\u007e]|%/g, "_");
}

/**
 * The headers an attachment is downloaded with. It is served as a download (`attachment`) of type
 * `application/octet-stream`, with `nosniff` and a sandboxing CSP, so nothing uploaded can run as
 * a page of Parley's origin even if a browser were to render it. Only an image of `INLINE_TYPES`
 * is served with its own type, and shown in place when `inline` is asked for. Clients learn the
 * recorded type of any attachment from its `contentType` in the message event.
 */
export function downloadHeaders(
  file: { name: string; contentType: string; size: number },
  inline: boolean,
): Headers {
  const image = INLINE_TYPES.has(file.contentType);
  const disposition = inline && image ? "inline" : "attachment";
  return new Headers({
    "content-type": image ? file.contentType : OCTET_STREAM,
    "content-length": String(file.size),
    "content-disposition": `${disposition}; filename="${asciiFallback(file.name)}"; filename*=UTF-8''${encodeExtValue(file.name)}`,
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; sandbox",
    "cache-control": "private",
  });
}
