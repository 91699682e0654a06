/** The SDK's close-code policy (client/sdk/close-policy.ts; docs/protocol.md, close codes). */
import { describe, expect, it } from "vitest";
import { closeAction } from "../../client/sdk/close-policy.ts";
import { CLOSE, revokedReason } from "../../protocol/index.ts";

describe("what a session does when its stream ends", () => {
  it("stops for good on 4403, whatever the reason", () => {
    for (const how of [CLOSE.left, CLOSE.removed, CLOSE.revoked, { code: 4403, reason: "" }])
      expect(closeAction(how)).toBe("end");
  });

  it("stops for good when a connection is refused with 403 or 404", () => {
    expect(closeAction({ status: 403 })).toBe("end");
    expect(closeAction({ status: 404 })).toBe("end");
  });

  it("resumes at once on 4008 (flow control cut a reader that fell behind)", () => {
    expect(closeAction(CLOSE.slow)).toBe("resume");
  });

  it("re-authenticates on 4402 (the token expired) and on a 401 refusal", () => {
    expect(closeAction(CLOSE.expired)).toBe("reauth");
    expect(closeAction({ status: 401 })).toBe("reauth");
  });

  it("backs off on 1008 (the client broke the protocol)", () => {
    expect(closeAction(CLOSE.policy)).toBe("back-off");
  });

  it("reconnects with backoff on anything else: drops, restarts, refusals that may pass", () => {
    for (const how of [
      { code: 1000 },
      { code: 1001 },
      { code: 1006 },
      { code: 1011 },
      { code: 4000 },
      { reason: "socket error" },
      { status: 429 },
      { status: 500 },
      { status: 0 },
      {},
    ])
      expect(closeAction(how)).toBe("reconnect");
  });

  it("names who ended access from 4403's reason", () => {
    expect(revokedReason(CLOSE.left.reason)).toBe("left");
    expect(revokedReason(CLOSE.removed.reason)).toBe("removed");
    expect(revokedReason(CLOSE.revoked.reason)).toBe("revoked");
    expect(revokedReason(CLOSE.deactivated.reason)).toBe("deactivated");
    expect(revokedReason("anything else")).toBe("revoked");
  });
});
