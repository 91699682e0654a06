/**
 * @module The real app for a browser test run: `scripts/start.ts` (client build, D1 migrations,
 * `wrangler dev`) on a free 127.0.0.1 port with fresh state in a temporary directory. Starting and
 * stopping are bench/servers.ts's: one detached process group per server, so stopping it reaches
 * wrangler and both of its workerd processes, and the state directory goes with it.
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Server, startParley, stopAllSync } from "../../bench/servers.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** Where the server's log goes (test-results/ is git-ignored); it outlives the run for debugging. */
export const LOG_DIR = resolve(root, "test-results/browser");

export type AppServer = Pick<Server, "baseUrl" | "logFile" | "stop">;

/**
 * Starts the app and resolves once `GET /healthz` answers 200; fails within ~90 s with the tail of
 * the server's log otherwise (a cold start builds the client first, which takes a while on 2 cores).
 */
export async function startApp(): Promise<AppServer> {
  return startParley(root, LOG_DIR, {
    name: "parley",
    tempPrefix: "parley-browser-",
    // Browser tests act as several users at machine speed; 1000/s keeps them clear of the per-user
    // throttle without hiding it entirely as the bench's 100000 does.
    // The slow-consumer test (test/system) needs less traffic and waits less with a smaller budget
    // for sockets that never confirm and a shorter stall limit.
    env: {
      PARLEY_USER_COMMANDS_PER_SECOND: "1000",
      PARLEY_UNCONFIRMED_STREAM_BYTES: String(1024 * 1024),
      PARLEY_FLOW_STALL_MS: "10000",
      // Notifications (test/system/notify.test.ts): a short collapse window, no grace after a room
      // leaves the screen, and retries without backoff, so no test waits minutes.
      PARLEY_NOTIFY_COLLAPSE_MS: "2000",
      PARLEY_NOTIFY_FOCUS_GRACE_MS: "0",
      PARLEY_NOTIFY_RETRY_MAX_SECONDS: "0",
      // Webhooks (test/system/webhooks.test.ts): tries at most 500 ms apart, a dead endpoint
      // disabled after 3 s.
      PARLEY_WEBHOOK_MAX_BACKOFF_MS: "500",
      PARLEY_WEBHOOK_DISABLE_AFTER_MS: "3000",
    },
    timeoutMs: 90_000,
  });
}

/**
 * Last resort when the test process exits without running teardown (an interrupted run): kills
 * every server group still running and removes its state, synchronously, as `exit` requires.
 * Vitest turns SIGINT and SIGTERM into `process.exit`, so this covers Ctrl-C too.
 */
export function stopOnExit(): void {
  process.once("exit", stopAllSync);
}
