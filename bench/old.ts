/**
 * @module The previous design, measured in the same run as the current one. Issue 14's figures
 * compare the sharded history and search with the single-D1 design of tag `pre-shards`; the
 * benches that do start it from a checkout of that commit beside this one, made on first use with
 * `git worktree add` and `npm install` (offline from npm's cache once the lock's packages are in it).
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The last commit of the single-D1 design: one archive database, its FTS5 index, the outbox. */
export const PRE_SHARDS = "13b8b736701b800ef2f24d471a4f9f7e6fed48db";

/** The last commit before issue 15's small-room work (tag `pre-small`). */
export const PRE_SMALL = "d7e60095a1cfef76fa39c7b624aa7e47ec600909";

/** What a tag stands for where the clone fetched no tags. */
const KNOWN_TAGS: Record<string, string> = { "pre-shards": PRE_SHARDS, "pre-small": PRE_SMALL };

/**
 * The directory of a ready checkout of `rev` (a tag, falling back to its commit in KNOWN_TAGS when
 * the tag is missing, as in a fresh clone that fetched no tags): `BENCH_OLD_ROOT` if set, otherwise
 * `../parley-<name>` beside this checkout, created and installed if absent.
 */
export function oldDesignRoot(rev = "pre-shards", log: (msg: string) => void = () => {}): string {
  const override = process.env.BENCH_OLD_ROOT;
  if (override) {
    if (!existsSync(join(override, "node_modules"))) {
      throw new Error(`BENCH_OLD_ROOT=${override} has no node_modules: run npm install there`);
    }
    return override;
  }
  const dir = resolve(root, "..", `parley-${rev.replace(/[^\w.-]/g, "_")}`);
  if (!existsSync(dir)) {
    const commit = resolveRev(rev);
    log(`checking out ${rev} (${commit.slice(0, 12)}) in ${dir}`);
    execFileSync("git", ["-C", root, "worktree", "add", "--detach", dir, commit], {
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  if (!existsSync(join(dir, "node_modules", ".package-lock.json"))) {
    log(`npm install in ${dir}`);
    execFileSync("npm", ["install", "--no-audit", "--no-fund"], {
      cwd: dir,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  return dir;
}

/** The commit `rev` names here (see `oldDesignRoot` for the fallback). */
export function resolveRev(rev: string): string {
  try {
    return execFileSync("git", ["-C", root, "rev-parse", "--verify", `${rev}^{commit}`], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    const known = KNOWN_TAGS[rev];
    if (known) return known;
    throw new Error(`no such revision: ${rev}`);
  }
}
