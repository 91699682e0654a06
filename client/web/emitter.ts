/** @module A minimal typed event emitter: how the web client's state tells views what changed. */
export class Emitter<Events extends Record<string, unknown>> {
  readonly #handlers = new Map<keyof Events, Set<(value: never) => void>>();

  on<K extends keyof Events>(type: K, fn: (value: Events[K]) => void): () => void {
    const set = this.#handlers.get(type) ?? new Set();
    this.#handlers.set(type, set);
    set.add(fn as (value: never) => void);
    return () => set.delete(fn as (value: never) => void);
  }

  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    for (const fn of this.#handlers.get(type) ?? []) (fn as (value: Events[K]) => void)(value);
  }
}
