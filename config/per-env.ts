/** @module Memoises a configuration reader per env object: env is stable for an isolate's life,
 * so each configuration is parsed (and checked) once, not per request. */
export function perEnv<E extends object, T>(read: (env: E) => T): (env: E) => T {
  const cache = new WeakMap<E, T>();
  return (env) => {
    let value = cache.get(env);
    if (value === undefined) {
      value = read(env);
      cache.set(env, value);
    }
    return value;
  };
}
