/** @module Memoises a reader per key for an isolate's life: per env object (env is stable for an
 * isolate's life, so each configuration is parsed and checked once, not per request), or per
 * plain key from a small, bounded set (a statement's text per row count). */
function memoised<K, T>(
  cache: { get(key: K): T | undefined; set(key: K, value: T): unknown },
  read: (key: K) => T,
) {
  return (key: K): T => {
    let value = cache.get(key);
    if (value === undefined) {
      value = read(key);
      cache.set(key, value);
    }
    return value;
  };
}

export function perEnv<E extends object, T>(read: (env: E) => T): (env: E) => T {
  return memoised(new WeakMap<E, T>(), read);
}

/** Kept for the isolate's life: only for keys from a small, bounded set. */
export function perKey<K, T>(read: (key: K) => T): (key: K) => T {
  return memoised(new Map<K, T>(), read);
}
