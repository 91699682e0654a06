import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS, readLimits } from "../../config/limits.ts";
import {
  exceedsUtf8,
  mentionsIn,
  parseClientFrame,
  TENANT_ID,
  TENANT_ID_PATTERN,
  utf8Bytes,
} from "../../protocol/index.ts";

describe("parseClientFrame", () => {
  it("returns only the known fields of a valid command", () => {
    const parsed = parseClientFrame(
      JSON.stringify({
        type: "send",
        clientId: "a-1",
        text: "hi",
        threadRoot: 3,
        evil: "<script>",
        author: { id: "x" },
      }),
      DEFAULT_LIMITS,
    );
    expect(parsed).toEqual({ ok: true, value: { type: "send", clientId: "a-1", text: "hi", threadRoot: 3 } });
  });

  it("never throws on hostile input", () => {
    const inputs = [
      "",
      "null",
      "0",
      "[]",
      '{"type":null}',
      '{"type":{"a":1}}',
      '{"__proto__":{"x":1},"type":"send"}',
      "\u0000",
      "{".repeat(10_000),
    ];
    for (const raw of inputs) {
      const parsed = parseClientFrame(raw, DEFAULT_LIMITS);
      expect(parsed.ok).toBe(false);
    }
    expect(parseClientFrame(new ArrayBuffer(8), DEFAULT_LIMITS)).toMatchObject({
      ok: false,
      code: "bad_request",
    });
  });

  it("measures text in UTF-8 bytes, not UTF-16 units", () => {
    expect(utf8Bytes("aé€😀")).toBe(1 + 2 + 3 + 4);
    const limit = { ...DEFAULT_LIMITS, maxTextBytes: 8 };
    expect(parseClientFrame(JSON.stringify({ type: "send", clientId: "c", text: "😀😀" }), limit).ok).toBe(
      true,
    );
    expect(
      parseClientFrame(JSON.stringify({ type: "send", clientId: "c", text: "😀😀a" }), limit),
    ).toMatchObject({ code: "too_large" });
  });

  it("finds @<userId> mentions once each", () => {
    expect(mentionsIn("hi @<u_1> and @<u_2>, @<u_1> again; not @u_3 or @<bad id>")).toEqual(["u_1", "u_2"]);
  });
});

describe("readLimits", () => {
  it("uses the defaults when variables are empty and applies valid overrides", () => {
    expect(readLimits({})).toEqual({ ...DEFAULT_LIMITS });
    const raised = readLimits({ PARLEY_USER_COMMANDS_PER_SECOND: "5000", PARLEY_REPLAY_CAP: "800" });
    expect(raised).toMatchObject({ userCommandsPerSecond: 5000, userCommandBurst: 10_000, replayCap: 800 });
  });

  it("refuses values that are not numbers or outside their range", () => {
    expect(() => readLimits({ PARLEY_REPLAY_CAP: "100" })).toThrow(/PARLEY_REPLAY_CAP/);
    expect(() => readLimits({ PARLEY_USER_COMMANDS_PER_SECOND: "fast" })).toThrow(/integer/);
    // docs/protocol.md caps text at 16 KiB: a deployment may lower it, never raise it.
    expect(() => readLimits({ PARLEY_MAX_TEXT_BYTES: "20000" })).toThrow(/PARLEY_MAX_TEXT_BYTES/);
  });

  it("reads the stream cap and the per-user quotas, and refuses a day's bytes below one largest upload", () => {
    expect(
      readLimits({
        PARLEY_MAX_STREAMS_PER_USER: "3",
        PARLEY_USER_ROOMS_PER_HOUR: "100",
        PARLEY_USER_SEARCHES_PER_MINUTE: "60",
        PARLEY_USER_UPLOADS_PER_DAY: "10",
        PARLEY_USER_UPLOAD_BYTES_PER_DAY: String(30 * 1024 * 1024),
      }),
    ).toMatchObject({
      maxStreamsPerUser: 3,
      roomsPerUserPerHour: 100,
      searchesPerUserPerMinute: 60,
      uploadsPerUserPerDay: 10,
      uploadBytesPerUserPerDay: 30 * 1024 * 1024,
    });
    expect(() => readLimits({ PARLEY_MAX_STREAMS_PER_USER: "0" })).toThrow(/PARLEY_MAX_STREAMS_PER_USER/);
    expect(() => readLimits({ PARLEY_USER_SEARCHES_PER_MINUTE: "0" })).toThrow(
      /PARLEY_USER_SEARCHES_PER_MINUTE/,
    );
    // 25 MiB is the default largest upload.
    expect(() => readLimits({ PARLEY_USER_UPLOAD_BYTES_PER_DAY: String(20 * 1024 * 1024) })).toThrow(
      /PARLEY_USER_UPLOAD_BYTES_PER_DAY .* must be at least PARLEY_MAX_ATTACHMENT_BYTES/,
    );
    expect(
      readLimits({ PARLEY_MAX_ATTACHMENT_BYTES: "2048", PARLEY_USER_UPLOAD_BYTES_PER_DAY: "5000" }),
    ).toMatchObject({ maxAttachmentBytes: 2048, uploadBytesPerUserPerDay: 5000 });
  });
});

describe("exceedsUtf8", () => {
  it("agrees with the exact byte count around the limit", () => {
    for (const s of ["", "a".repeat(10), "é".repeat(5), "€".repeat(4), "😀".repeat(3), `${"a".repeat(9)}é`]) {
      for (const limit of [0, 1, 9, 10, 11, 12])
        expect(exceedsUtf8(s, limit), `${s} ${limit}`).toBe(utf8Bytes(s) > limit);
    }
  });
});

describe("TENANT_ID", () => {
  it("accepts 1-40 of [a-z0-9-] not starting with -, and its source compiles as a browser's pattern (v flag)", () => {
    for (const ok of ["a", "acme", "acme-corp-2", "0", "a".repeat(40)])
      expect(TENANT_ID.test(ok), ok).toBe(true);
    for (const bad of ["", "-acme", "Acme", "acme_corp", "a".repeat(41), "acme\n"])
      expect(TENANT_ID.test(bad), bad).toBe(false);
    // How a browser compiles <input pattern>: anchored, with the v flag.
    expect(() => new RegExp(`^(?:${TENANT_ID_PATTERN})$`, "v")).not.toThrow();
  });
});
