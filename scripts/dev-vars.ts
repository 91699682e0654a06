/**
 * @module The local `.dev.vars` of `npm start`: dev sign-in (`AUTH_MODE=dev`) and its private
 * signing key. It holds a secret, so it is kept readable by its owner alone (mode 0600) every time
 * it is touched, not only when it is created: a file made by hand, copied, or left by an older
 * version with looser permissions is tightened too.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { exportJWK, generateKeyPair } from "jose";

const OWNER_ONLY = 0o600;

/** What `ensureDevVars` did, for the caller to report. */
export interface DevVarsResult {
  /** A new dev signing key was generated and written. */
  wroteKey: boolean;
  /** The file's permissions were looser than 0600 and were tightened. */
  tightened: boolean;
}

/**
 * Makes sure `file` exists with `AUTH_MODE=dev` (unless it names another mode) and a dev signing
 * key (`DEV_JWT_PRIVATE_JWK`, generated once so dev tokens stay valid across restarts), and that
 * it is mode 0600. Existing lines are kept as they are.
 */
export async function ensureDevVars(file: string): Promise<DevVarsResult> {
  let tightened = false;
  if (existsSync(file)) {
    // Tighten before reading or writing: the key should be exposed for no longer than it must.
    tightened = (statSync(file).mode & 0o777) !== OWNER_ONLY;
    if (tightened) chmodSync(file, OWNER_ONLY);
  }
  const before = existsSync(file) ? readFileSync(file, "utf8") : "";
  let next = before;
  if (!/^AUTH_MODE=/m.test(next)) next = `AUTH_MODE=dev\n${next}`;
  let wroteKey = false;
  if (!/^DEV_JWT_PRIVATE_JWK=/m.test(next)) {
    const { privateKey } = await generateKeyPair("RS256", { extractable: true, modulusLength: 2048 });
    const jwk = { ...(await exportJWK(privateKey)), alg: "RS256", kid: `dev-${Date.now().toString(36)}` };
    const line = `DEV_JWT_PRIVATE_JWK=${Buffer.from(JSON.stringify(jwk)).toString("base64")}\n`;
    next += (next === "" || next.endsWith("\n") ? "" : "\n") + line;
    wroteKey = true;
  }
  if (next !== before || !existsSync(file)) writeFileSync(file, next, { mode: OWNER_ONLY });
  // `mode` applies only when the file is created; a umask may also have narrowed it. Either way,
  // end at exactly 0600.
  chmodSync(file, OWNER_ONLY);
  return { wroteKey, tightened };
}
