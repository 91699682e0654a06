/**
 * @module The people whose account was deactivated, as a room or a presence shard keeps them
 * (docs/architecture.md, decisions 11 and 12): a stream one of them asks for is refused here, by
 * the object, whatever identity the worker hands over. That is what lets the worker answer a
 * stream's opening from an identity it read a while ago instead of reading the directory again.
 * Reactivation takes them off. One small table (`ENDED_USERS_TABLE`, in each object's migrations),
 * read once per life into memory.
 */

export const ENDED_USERS_TABLE =
  "CREATE TABLE IF NOT EXISTS ended_users (user_id TEXT PRIMARY KEY, at INTEGER NOT NULL);";

export class EndedUsers {
  readonly #sql: SqlStorage;
  #ids: Set<string> | null = null;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
  }

  has(userId: string): boolean {
    this.#ids ??= new Set(
      this.#sql
        .exec<{ user_id: string }>("SELECT user_id FROM ended_users")
        .toArray()
        .map((r) => r.user_id),
    );
    return this.#ids.has(userId);
  }

  /** Idempotent. */
  add(userId: string): void {
    if (this.has(userId)) return;
    this.#sql.exec("INSERT OR REPLACE INTO ended_users (user_id, at) VALUES (?, ?)", userId, Date.now());
    this.#ids?.add(userId);
  }

  /** Idempotent. */
  remove(userId: string): void {
    if (!this.has(userId)) return;
    this.#sql.exec("DELETE FROM ended_users WHERE user_id = ?", userId);
    this.#ids?.delete(userId);
  }
}
