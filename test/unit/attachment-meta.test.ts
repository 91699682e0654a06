import { describe, expect, it } from "vitest";
import { downloadHeaders, normalizeContentType, sanitizeFilename } from "../../worker/attachment-meta.ts";

describe("sanitizeFilename", () => {
  it.each([
    ["report.pdf", "report.pdf"],
    ["../../etc/passwd", "passwd"],
    ["..%2F..%2Fetc%2Fpasswd", "passwd"],
    ["C:\\Windows\\system32\\cmd.exe", "cmd.exe"],
    ["a\"b'c`d.txt", "abcd.txt"],
    ["a<b>c:d|e?f*g.txt", "a_b_c_d_e_f_g.txt"],
    ["line%0D%0Abreak%00.txt", "linebreak.txt"],
    ["tab\there.txt", "tabhere.txt"],
    ["invoice%E2%80%AEgpj.exe", "invoicegpj.exe"],
    ["zero%E2%80%8Bwidth.txt", "zerowidth.txt"],
    ["%E6%97%A5%E6%9C%AC%E8%AA%9E.txt", "日本語.txt"],
    ["caf\u00c3\u00a9.txt", "café.txt"], // raw UTF-8 bytes, read by the runtime as Latin-1
    ["caf\u00e9.txt", "café.txt"], // a Latin-1 name stays as it is
    ["Cafe\u0301.txt", "Café.txt"], // NFC
    ["100%.txt", "100%.txt"], // not percent-encoding: taken literally
    ["%E0%A4%A.txt", "%E0%A4%A.txt"],
    [".htaccess", "htaccess"],
    ["  spaced   out  .txt  ", "spaced out .txt"],
    ["trailing dots...", "trailing dots"],
    ["CON", "_CON"],
    ["lpt1.txt", "_lpt1.txt"],
    ["console.txt", "console.txt"],
    ["", "file"],
    ["..", "file"],
    ["/", "file"],
    ["%00%01", "file"],
  ])("%j becomes %j", (raw, expected) => {
    expect(sanitizeFilename(raw, 200)).toBe(expected);
  });

  it("answers file when there is no header", () => {
    expect(sanitizeFilename(undefined, 200)).toBe("file");
  });

  it("shortens long names to the limit in code points, keeping the extension", () => {
    const name = sanitizeFilename(`${"a".repeat(300)}.docx`, 200);
    expect(name).toHaveLength(200);
    expect(name.endsWith("a.docx")).toBe(true);
    const emoji = sanitizeFilename(`${"😀".repeat(300)}.png`, 200);
    expect(Array.from(emoji)).toHaveLength(200);
    expect(emoji.endsWith("😀.png")).toBe(true);
    expect(sanitizeFilename("x".repeat(300), 200)).toBe("x".repeat(200));
  });
});

describe("normalizeContentType", () => {
  it.each([
    ["image/png", "image/png"],
    ["IMAGE/PNG", "image/png"],
    ["text/plain; charset=utf-8", "text/plain"],
    [
      "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
      "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ],
    ["image/svg+xml", "image/svg+xml"],
    [undefined, "application/octet-stream"],
    ["", "application/octet-stream"],
    ["text", "application/octet-stream"],
    ["text/", "application/octet-stream"],
    ["/plain", "application/octet-stream"],
    ["a/b/c", "application/octet-stream"],
    ["text/html<script>", "application/octet-stream"],
    ["te xt/plain", "application/octet-stream"],
  ])("%j is recorded as %j", (raw, expected) => {
    expect(normalizeContentType(raw)).toBe(expected);
  });
});

describe("downloadHeaders", () => {
  const file = (name: string, contentType: string) => ({ name, contentType, size: 42 });

  it("serves everything as an octet-stream download behind nosniff and a sandbox", () => {
    const h = downloadHeaders(file("a.html", "text/html"), true);
    expect(Object.fromEntries(h)).toEqual({
      "content-type": "application/octet-stream",
      "content-length": "42",
      "content-disposition": `attachment; filename="a.html"; filename*=UTF-8''a.html`,
      "x-content-type-options": "nosniff",
      "content-security-policy": "default-src 'none'; sandbox",
      "cache-control": "private",
    });
  });

  it("shows only raster images inline, and only when asked", () => {
    for (const type of ["image/png", "image/jpeg", "image/gif", "image/webp"]) {
      expect(downloadHeaders(file("x", type), true).get("content-disposition")).toMatch(/^inline;/);
      expect(downloadHeaders(file("x", type), true).get("content-type")).toBe(type);
      expect(downloadHeaders(file("x", type), false).get("content-disposition")).toMatch(/^attachment;/);
    }
    for (const type of ["image/svg+xml", "text/html", "application/xhtml+xml", "application/pdf"]) {
      expect(downloadHeaders(file("x", type), true).get("content-disposition")).toMatch(/^attachment;/);
    }
  });

  it("quotes names as ASCII with an RFC 8187 UTF-8 form beside", () => {
    expect(downloadHeaders(file("Ünï 100% (1)*'.txt", "text/plain"), false).get("content-disposition")).toBe(
      `attachment; filename="_n_ 100_ (1)*'.txt"; filename*=UTF-8''%C3%9Cn%C3%AF%20100%25%20%281%29%2A%27.txt`,
    );
  });
});
