import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { COMMAND_TYPES, COMMANDS, commandRequest } from "../../protocol/commands.ts";

// protocol/commands.ts: the one place a command's HTTP form is written. The worker's routes and the
// SDK's fallback are built from it; the published table in docs/protocol.md must say the same.

const protocolDoc = readFileSync(new URL("../../docs/protocol.md", import.meta.url), "utf8");

describe("the command registry", () => {
  it("has every command's HTTP form in docs/protocol.md's table of HTTP resources", () => {
    for (const type of COMMAND_TYPES) {
      const { method, path, clientIdOptional } = COMMANDS[type].http;
      const row = `| \`${method} /api/rooms/:roomId${path}${clientIdOptional ? "[?clientId=]" : ""}\``;
      expect(protocolDoc, `${type}: ${row}`).toContain(row);
    }
  });

  it("builds the SDK's request for each command: target in the path, the other fields in the body or query", () => {
    expect(commandRequest("r_1", { type: "send", clientId: "c1", text: "hi", threadRoot: 4 })).toEqual({
      method: "POST",
      path: "/api/rooms/r_1/messages",
      body: { clientId: "c1", text: "hi", threadRoot: 4 },
    });
    expect(commandRequest("r_1", { type: "edit", clientId: "c2", target: 7, text: "fixed" })).toEqual({
      method: "PATCH",
      path: "/api/rooms/r_1/messages/7",
      body: { clientId: "c2", text: "fixed" },
    });
    expect(commandRequest("r_1", { type: "delete", clientId: "c3", target: 7 })).toEqual({
      method: "DELETE",
      path: "/api/rooms/r_1/messages/7?clientId=c3",
    });
    expect(
      commandRequest("r_1", { type: "react", clientId: "c4", target: 7, emoji: "👍", on: true }),
    ).toEqual({
      method: "POST",
      path: "/api/rooms/r_1/messages/7/reactions",
      body: { clientId: "c4", emoji: "👍", on: true },
    });
  });
});
