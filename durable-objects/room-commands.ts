/**
 * @module The rules of the room's sequenced commands (send, edit, delete, react, pin): who may do what
 * to which target. Every outcome is a value of `CommandResult`; nothing invalid reaches the log.
 */
import {
  type Failure,
  failure,
  isAdmin,
  mentionsIn,
  type Role,
  type SequencedCommand,
  type UserRef,
} from "../protocol/index.ts";
import type { RoomAttachments } from "./room-attachments.ts";
import type { AppendResult, RoomLog, TargetRow } from "./room-log.ts";

export interface Actor extends UserRef {
  /** The actor's tenant role: owners and admins may delete anyone's message. */
  role: Role;
}

/** `targetAuthor`: for a delete that was created, whose message it was (for the audit log);
 * `mentioned`: for a message, the members it mentions. */
export type CommandResult =
  | ({ ok: true; targetAuthor?: string; mentioned?: string[] } & AppendResult)
  | (Failure & { clientId: string });

/** The room's stores a command reads and writes; all in the same SQLite, so one transaction. */
export interface CommandStores {
  log: RoomLog;
  attachments: RoomAttachments;
  /** Most attachments one message may carry. */
  maxAttachments: number;
}

/** Events older than the command window the rules need, read from their segments in R2 before the
 * command runs (the room's `archivedTargetsOf`). */
export type ArchivedTargets = ReadonlyMap<number, TargetRow>;

/**
 * The events older than the command window (at or below the log's floor, so without a row) that
 * this command's rules read: a delete's target, a reply's thread root. Edits and reactions of such
 * an event are refused without reading it, so they need none.
 */
export function archivedTargetsOf(log: RoomLog, cmd: SequencedCommand): number[] {
  const seq = cmd.type === "delete" ? cmd.target : cmd.type === "send" ? cmd.threadRoot : undefined;
  return seq !== undefined && seq <= log.floor ? [seq] : [];
}

/**
 * Applies one command: the idempotency check, the rules and the append run in one SQLite
 * transaction, so the seq is assigned together with the check on (author, clientId). `archived`
 * holds what `archivedTargetsOf` named, read beforehand.
 */
export function applyCommand(
  stores: CommandStores,
  actor: Actor,
  cmd: SequencedCommand,
  now: number,
  archived: ArchivedTargets = new Map(),
): CommandResult {
  return stores.log.transaction(() => decide(stores, actor, cmd, now, archived));
}

/** A message too old to change: edits and reactions reach back as far as the command window. */
const TOO_OLD = "message too old to change";

/**
 * The event `seq` as the rules see it: its row, or for an event older than the command window what
 * was read from its segment, brought up to date with what the log has learnt since the read (a
 * delete appended, retention). Null when it is older and was not read.
 */
function targetOf(log: RoomLog, archived: ArchivedTargets, seq: number): TargetRow | undefined | null {
  if (seq > log.floor) return log.target(seq);
  const read = archived.get(seq);
  if (!read) return null;
  const now = log.belowFloor(seq);
  if (now.expired) return { ...read, kind: "expired", deleted: true };
  return now.deleted ? { ...read, deleted: true } : read;
}

/**
 * A retry of a command that already committed answers its original seq, whatever happened since
 * (within the command window: an older one has no row left to find, docs/protocol.md). The append
 * answers it when the rules pass again (`appendOnce`); when they refuse (a repeated reaction, a
 * delete of what the first try deleted), the log is asked whether the clientId is taken, so a
 * first command, nearly every one, pays no query for being new.
 */
function decide(
  stores: CommandStores,
  actor: Actor,
  cmd: SequencedCommand,
  now: number,
  archived: ArchivedTargets,
): CommandResult {
  const result = rules(stores, actor, cmd, now, archived);
  if (result.ok) return result;
  const seq = stores.log.seqForClientId(actor.id, cmd.clientId);
  return seq === undefined ? result : { ok: true, created: false, seq };
}

function rules(
  stores: CommandStores,
  actor: Actor,
  cmd: SequencedCommand,
  now: number,
  archived: ArchivedTargets,
): CommandResult {
  const { log, attachments } = stores;
  const fail = (code: Failure["code"], message: string): CommandResult => ({
    ...failure(code, message),
    clientId: cmd.clientId,
  });
  const author: UserRef = { id: actor.id, name: actor.name };
  switch (cmd.type) {
    case "send": {
      if (cmd.threadRoot !== undefined) {
        const root = targetOf(log, archived, cmd.threadRoot);
        if (root === null) return fail("conflict", TOO_OLD);
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
        ...log.appendOnce(event, { mentions, apply: (seq) => attachments.attach(ids, seq) }),
      };
    }
    case "edit": {
      if (cmd.target <= log.floor) return fail("conflict", TOO_OLD);
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.authorId !== actor.id) return fail("forbidden", "only the author may edit a message");
      if (target.deleted) return fail("conflict", `message ${cmd.target} was deleted`);
      return {
        ok: true,
        ...log.appendOnce({
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
      const target = targetOf(log, archived, cmd.target);
      if (target === null) return fail("conflict", TOO_OLD);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.authorId !== actor.id && !isAdmin(actor.role)) {
        return fail("forbidden", "only the author or an admin may delete a message");
      }
      if (target.deleted) return fail("conflict", `message ${cmd.target} was already deleted`);
      return {
        ok: true,
        targetAuthor: target.authorId,
        ...log.appendOnce(
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
      if (cmd.target <= log.floor) return fail("conflict", TOO_OLD);
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.deleted) return fail("conflict", `message ${cmd.target} was deleted`);
      if (log.hasReaction(cmd.target, actor.id, cmd.emoji) === cmd.on) {
        return fail("conflict", cmd.on ? "already reacted with that emoji" : "no such reaction to remove");
      }
      return {
        ok: true,
        ...log.appendOnce(
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
    case "pin": {
      // Any member may pin or unpin; a pin that changes nothing is appended too (the latest pin
      // event of a message decides, so a repeat is harmless), which spares a lookup.
      if (cmd.target <= log.floor) return fail("conflict", TOO_OLD);
      const target = log.target(cmd.target);
      if (target?.kind !== "message") return fail("not_found", `no message ${cmd.target}`);
      if (target.deleted) return fail("conflict", `message ${cmd.target} was deleted`);
      return {
        ok: true,
        ...log.appendOnce({
          kind: "pin",
          ts: now,
          author,
          clientId: cmd.clientId,
          target: cmd.target,
          on: cmd.on,
        }),
      };
    }
  }
}
