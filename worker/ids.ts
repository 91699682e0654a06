/** @module Opaque ids: a type prefix and 20 characters of crypto randomness (100 bits). */
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/** Prefixes: `u` user, `r` room, `k` API token, `a` attachment, `x` export, `w` webhook, `g` SCIM group. */
export function newId(prefix: "u" | "r" | "k" | "a" | "x" | "w" | "g"): string {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  let out = `${prefix}_`;
  for (const b of bytes) out += ALPHABET[b & 31];
  return out;
}
