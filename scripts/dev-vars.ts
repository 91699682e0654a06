/**
 * @module The local `.dev.vars` of `npm start`: dev sign-in (`AUTH_MODE=dev`) and its private
 * signing keys (sign-in tokens, export heads, Web Push). It holds secrets, so it is kept readable by its owner alone (mode 0600) every time
 * it is touched, not only when it is created: a file made by hand, copied, or left by an older
 * version with looser permissions is tightened too.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { exportJWK, generateKeyPair } from "jose";

const OWNER_ONLY = 0o600;

/** What `ensureDevVars` did, for the caller to report. */
export interface DevVarsResult {
  /** The keys generated and written this time (by variable name). */
  wroteKeys: string[];
  /** The file's permissions were looser than 0600 and were tightened. */
  tightened: boolean;
}

/** The keys a local run needs, each generated once so what it signed stays valid across restarts. */
const KEYS: { name: string; make: () => Promise<Record<string, unknown>> }[] = [
  {
    // Dev sign-in tokens (worker/auth/tokens.ts).
    name: "DEV_JWT_PRIVATE_JWK",
    make: async () => {
      const { privateKey } = await generateKeyPair("RS256", { extractable: true, modulusLength: 2048 });
      return { ...(await exportJWK(privateKey)), alg: "RS256", kid: `dev-${Date.now().toString(36)}` };
    },
  },
  {
    // Export heads (worker/exports/keys.ts): the Worker refuses to start without one, and
    // GET /.well-known/parley-export-keys publishes its public half.
    name: "EXPORT_SIGNING_JWK",
    make: async () => {
      const { privateKey } = await generateKeyPair("Ed25519", { extractable: true });
      return { ...(await exportJWK(privateKey)), kid: `dev-export-${Date.now().toString(36)}` };
    },
  },
  {
    // Web Push's application server key (VAPID, worker/notify/web-push.ts): kept across restarts,
    // since browsers subscribed with its public half.
    name: "VAPID_PRIVATE_JWK",
    make: async () => {
      const { privateKey } = await generateKeyPair("ES256", { extractable: true });
      return { ...(await exportJWK(privateKey)), kid: `dev-vapid-${Date.now().toString(36)}` };
    },
  },
];

/**
 * Makes sure `file` exists with `AUTH_MODE=dev` (unless it names another mode) and the dev keys
 * (each generated once), and that it is mode 0600. Existing lines are kept as they are.
 */
export async function ensureDevVars(file: string): Promise<DevVarsResult> {
  let tightened = false;
  if (existsSync(file)) {
    // Tighten before reading or writing: the keys should be exposed for no longer than they must.
    tightened = (statSync(file).mode & 0o777) !== OWNER_ONLY;
    if (tightened) chmodSync(file, OWNER_ONLY);
  }
  const before = existsSync(file) ? readFileSync(file, "utf8") : "";
  let next = before;
  if (!/^AUTH_MODE=/m.test(next)) next = `AUTH_MODE=dev\n${next}`;
  const wroteKeys: string[] = [];
  for (const key of KEYS) {
    if (new RegExp(`^${key.name}=`, "m").test(next)) continue;
    const line = `${key.name}=${Buffer.from(JSON.stringify(await key.make())).toString("base64")}\n`;
    next += (next === "" || next.endsWith("\n") ? "" : "\n") + line;
    wroteKeys.push(key.name);
  }
  if (next !== before || !existsSync(file)) writeFileSync(file, next, { mode: OWNER_ONLY });
  // `mode` applies only when the file is created; a umask may also have narrowed it. Either way,
  // end at exactly 0600.
  chmodSync(file, OWNER_ONLY);
  return { wroteKeys, tightened };
}
