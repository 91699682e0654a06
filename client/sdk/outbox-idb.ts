/** @module The browser's outbox store (IndexedDB): the outbox survives a reload. Compiled with the
 * DOM library (tsconfig.client.json), never loaded by the Worker. */
import type { OutboxEntry, OutboxStore } from "./outbox.ts";

/** The browser store: one object store keyed by [roomId, clientId]. Give each signed-in user their
 * own database name: an outbox holds commands to be sent as the user who wrote them. */
export class IndexedDbOutboxStore implements OutboxStore {
  readonly #db: Promise<IDBDatabase>;
  readonly #name: string;

  constructor(name = "parley-outbox") {
    this.#name = name;
    this.#db = new Promise((resolve, reject) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () =>
        open.result.createObjectStore("outbox", { keyPath: ["roomId", "clientId"] });
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }

  async #run<T>(mode: IDBTransactionMode, work: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
    const db = await this.#db;
    return new Promise((resolve, reject) => {
      const tx = db.transaction("outbox", mode);
      const request = work(tx.objectStore("outbox"));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  async list(roomId: string): Promise<OutboxEntry[]> {
    const all = (await this.#run("readonly", (s) => s.getAll())) as OutboxEntry[];
    return all.filter((e) => e.roomId === roomId).sort((a, b) => a.createdAt - b.createdAt);
  }

  /** How many commands wait, over every room. */
  async count(): Promise<number> {
    return this.#run("readonly", (s) => s.count());
  }

  /** Deletes the whole database (sign-out): what was not sent is gone. */
  async destroy(): Promise<void> {
    (await this.#db).close();
    await new Promise<void>((resolve, reject) => {
      const del = indexedDB.deleteDatabase(this.#name);
      del.onsuccess = () => resolve();
      del.onerror = () => reject(del.error);
      del.onblocked = () => resolve();
    });
  }

  /** Rooms with something in the outbox: a reload starts their sessions so it gets delivered. */
  async roomIds(): Promise<string[]> {
    const all = (await this.#run("readonly", (s) => s.getAll())) as OutboxEntry[];
    return [...new Set(all.map((e) => e.roomId))];
  }

  async put(entry: OutboxEntry): Promise<void> {
    await this.#run("readwrite", (s) => s.put(entry));
  }

  async remove(roomId: string, clientId: string): Promise<void> {
    await this.#run("readwrite", (s) => s.delete([roomId, clientId]));
  }
}
