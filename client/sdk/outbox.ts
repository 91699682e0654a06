/**
 * @module The outbox of commands not yet acknowledged, per room, with their clientIds. It survives
 * a reload in browsers (IndexedDB) and lives in memory in Node. Entries keep their order of
 * creation; every one is resent after each reconnect until the server acknowledges it, and the
 * server's idempotency on (author, clientId) makes the resend harmless.
 */
import type { SequencedCommand } from "../../protocol/index.ts";

export interface OutboxEntry {
  roomId: string;
  clientId: string;
  command: SequencedCommand;
  createdAt: number;
}

export interface OutboxStore {
  list(roomId: string): Promise<OutboxEntry[]>;
  put(entry: OutboxEntry): Promise<void>;
  remove(roomId: string, clientId: string): Promise<void>;
}

export class MemoryOutboxStore implements OutboxStore {
  readonly #entries = new Map<string, OutboxEntry>();

  async list(roomId: string): Promise<OutboxEntry[]> {
    return [...this.#entries.values()]
      .filter((e) => e.roomId === roomId)
      .sort((a, b) => a.createdAt - b.createdAt);
  }

  async put(entry: OutboxEntry): Promise<void> {
    this.#entries.set(`${entry.roomId}\n${entry.clientId}`, entry);
  }

  async remove(roomId: string, clientId: string): Promise<void> {
    this.#entries.delete(`${roomId}\n${clientId}`);
  }
}
