/** @module The browser's outbox store (IndexedDB): the outbox survives a reload. Compiled with the
 * DOM library (tsconfig.client.json), never loaded by the Worker. */
import type { OutboxEntry, OutboxStore } from "./outbox.ts";

/** The browser store: one object store keyed by [roomId, clientId]. Give each signed-in user their
 * own database name: an outbox holds commands to be sent as the user who wrote them.
 *
 * An IndexedDB write completes a moment after it is asked for, and a page closed or reloaded
 * meanwhile aborts it: a message the user saw queued would be gone. So `put` first writes the entry
 * to localStorage, which holds it the moment the call returns, and takes it out once IndexedDB has
 * it; whatever is left there (the page went away first, or IndexedDB refused the write) is moved
 * into IndexedDB before the outbox is next read. */
export class IndexedDbOutboxStore implements OutboxStore {
  readonly #db: Promise<IDBDatabase>;
  readonly #name: string;
  /** localStorage keys of entries not yet known to be in IndexedDB start with this. */
  readonly #journal: string;

  constructor(name = "parley-outbox") {
    this.#name = name;
    this.#journal = `${name}:unsaved:`;
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

  #journalKey(roomId: string, clientId: string): string {
    return `${this.#journal}${entryKey(roomId, clientId)}`;
  }

  /** The localStorage keys of the entries only it holds (none where it cannot be used). */
  #journalKeys(): string[] {
    const storage = localStore();
    const keys: string[] = [];
    for (let i = 0; i < (storage?.length ?? 0); i++) {
      const key = storage?.key(i);
      if (key?.startsWith(this.#journal)) keys.push(key);
    }
    return keys;
  }

  /** The entries only localStorage holds; one it cannot parse is dropped. */
  #unsaved(): { key: string; entry: OutboxEntry }[] {
    const out: { key: string; entry: OutboxEntry }[] = [];
    const storage = localStore();
    if (!storage) return out;
    for (const key of this.#journalKeys()) {
      try {
        out.push({ key, entry: JSON.parse(storage.getItem(key) ?? "") as OutboxEntry });
      } catch {
        storage.removeItem(key);
      }
    }
    return out;
  }

  /** Moves what only localStorage holds into IndexedDB (an entry IndexedDB still refuses stays in
   * localStorage, and is read from there). */
  async #adopt(): Promise<OutboxEntry[]> {
    const stranded: OutboxEntry[] = [];
    for (const { key, entry } of this.#unsaved()) {
      // Removed meanwhile (acknowledged while an earlier entry was being moved): not put back.
      if (localStore()?.getItem(key) === null) continue;
      try {
        await this.#run("readwrite", (s) => s.put(entry));
        localStore()?.removeItem(key);
      } catch {
        stranded.push(entry);
      }
    }
    return stranded;
  }

  async #all(): Promise<OutboxEntry[]> {
    const stranded = await this.#adopt();
    // IndexedDB unusable (private browsing in some browsers): what localStorage holds still counts.
    const saved = (await this.#run("readonly", (s) => s.getAll()).catch(() => [])) as OutboxEntry[];
    const seen = new Set(saved.map((e) => entryKey(e.roomId, e.clientId)));
    return [...saved, ...stranded.filter((e) => !seen.has(entryKey(e.roomId, e.clientId)))];
  }

  async list(roomId: string): Promise<OutboxEntry[]> {
    const all = await this.#all();
    return all.filter((e) => e.roomId === roomId).sort((a, b) => a.createdAt - b.createdAt);
  }

  /** How many commands wait, over every room. */
  async count(): Promise<number> {
    return (await this.#all()).length;
  }

  /** Deletes the whole database (sign-out): what was not sent is gone. */
  async destroy(): Promise<void> {
    for (const key of this.#journalKeys()) localStore()?.removeItem(key);
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
    const all = await this.#all();
    return [...new Set(all.map((e) => e.roomId))];
  }

  async put(entry: OutboxEntry): Promise<void> {
    const key = this.#journalKey(entry.roomId, entry.clientId);
    try {
      localStore()?.setItem(key, JSON.stringify(entry));
    } catch {
      // Full or unavailable: IndexedDB alone, as before.
    }
    await this.#run("readwrite", (s) => s.put(entry));
    localStore()?.removeItem(key);
  }

  async remove(roomId: string, clientId: string): Promise<void> {
    localStore()?.removeItem(this.#journalKey(roomId, clientId));
    await this.#run("readwrite", (s) => s.delete([roomId, clientId]));
  }
}

/** An entry's identity as a string: its key in IndexedDB, [roomId, clientId]. */
function entryKey(roomId: string, clientId: string): string {
  return JSON.stringify([roomId, clientId]);
}

/** The page's localStorage, or null where there is none (a worker) or it is refused. */
function localStore(): Storage | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}
