/**
 * @module The rules of the room's sequenced commands (send, edit, delete, react): who may do what
 * to which target. Every outcome is a value of `CommandResult`; nothing invalid reaches the log.
 */
import { type Failure, failure, mentionsIn, type SequencedCommand, type UserRef } from "../protocol/index.ts";
import type { RoomAttachments } from "./room-attachments.ts";
import type { AppendResult, RoomLog } from "./room-log.ts";

export interface Actor extends UserRef {
  /** The actor's tenant role: owners and admins may delete anyone's message. */
  role: string;
}

/** `targetAuthor`: for a delete that was created, whose message it was (for the audit log);
 * `mentioned`: for a message, the members it mentions. */
export type CommandResult =
  | ({ ok: true; targetAuthor?: string; mentioned?: string[] } & AppendResult)
  | (Failure & { clientId: string });

const ADMIN_ROLES = new Set(["owner", "admin"]);

/** The room's stores a command reads and writes; all in the same SQLite, so one transaction. */
export interface CommandStores {
  log: RoomLog;
  attachments: RoomAttachments;
  /** Most attachments one message may carry. */
  maxAttachments: number;
}

/**
 * Applies one command: the idempotency check, the rules and the append run in one SQLite
 * transaction, so the seq is assigned together with the check on (author, clientId).
 */
export function applyCommand(
  stores: CommandStores,
  actor: Actor,
  cmd: SequencedCommand,
  now: number,
): CommandResult {
  return stores.log.transaction(() => decide(stores, actor, cmd, now));
}

function decide(stores: CommandStores, actor: Actor, cmd: SequencedCommand, now: number): CommandResult {
  const { log, attachments } = stores;
  const fail = (code: Failure["code"], message: string): CommandResult => ({
    ...failure(code, message),
    clientId: cmd.clientId,
  });
  // A retry of a command that already committed answers its original seq, whatever happened since.
  const existing = log.seqForClientId(actor.id, cmd.clientId);
  if (existing !== undefined) return { ok: true, created: false, seq: existing };

  const author: UserRef = { id: actor.id, name: actor.name };
  switch (cmd.type) {
    case "send": {
      if (cmd.threadRoot !== undefined) {
        const root = log.target(cmd.threadRoot);
        if (root?.kind !== "message") return fail("not_found", `no message ${cmd.threadRoot} to reply to`);
        if (root.threadRoot !== null) return fail("bad_request", "threadRoot must be a top-level message");
      }
      // Only the sender's own pending uploads of this room; they become referenced by this
      // message's seq in the same transaction as its append.
      const ids = cmd.attachments ?? [];
      const refs = ids.length > 0 ? attachments.claimable(ids, actor.id, stores.maxAttachments) : [];
      if (!Array.isArray(refs)) return fail(refs.code, refs.message);
      const event = {
        kind: "message" as const,
        ts: now,
        author,
        clientId: cmd.clientId,
        text: cmd.text,
        ...(cmd.threadRoot !== undefined ? { threadRoot: cmd.threadRoot } : {}),
        ...(refs.length > 0 ? { attachments: refs } : {}),
      };
      const mentions = mentionsIn(cmd.text).filter((id) => id !== actor.id && log.member(id) !== undefined);
      return {
        ok: true,
        mentioned: mentions,
        ...log.append(event, { mentions, apply: (seq) => attachments.attach(ids, seq) }),
      };
    }
    case "edit": {
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.authorId !== actor.id) return fail("forbidden", "only the author may edit a message");
      if (target.deleted) return fail("conflict", `message ${cmd.target} was deleted`);
      return {
        ok: true,
        ...log.append({
          kind: "edit",
          ts: now,
          author,
          clientId: cmd.clientId,
          target: cmd.target,
          text: cmd.text,
        }),
      };
    }
    case "delete": {
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.authorId !== actor.id && !ADMIN_ROLES.has(actor.role)) {
        return fail("forbidden", "only the author or an admin may delete a message");
      }
      if (target.deleted) return fail("conflict", `message ${cmd.target} was already deleted`);
      return {
        ok: true,
        targetAuthor: target.authorId,
        ...log.append(
          { kind: "delete", ts: now, author, clientId: cmd.clientId, target: cmd.target },
          {
            // The message's attachments go with its text: doomed now, deleted by the next cleanup.
            apply: () => {
              log.scrubMessage(cmd.target);
              attachments.doomMessage(cmd.target);
            },
          },
        ),
      };
    }
    case "react": {
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.deleted) return fail("conflict", `message ${cmd.target} was deleted`);
      if (log.hasReaction(cmd.target, actor.id, cmd.emoji) === cmd.on) {
        return fail("conflict", cmd.on ? "already reacted with that emoji" : "no such reaction to remove");
      }
      return {
        ok: true,
        ...log.append(
          {
            kind: "reaction",
            ts: now,
            author,
            clientId: cmd.clientId,
            target: cmd.target,
            emoji: cmd.emoji,
            on: cmd.on,
          },
          { apply: () => log.setReaction(cmd.target, actor.id, cmd.emoji, cmd.on) },
        ),
      };
    }
  }
}
