/**
 * @module Versioned schemas for the objects' SQLite: each object lists its migrations, and
 * `migrate` runs the ones not yet applied, in order, each in its own transaction with the version
 * it reaches (`meta.schema_version`). Run from the constructor, so a schema is current before the
 * object serves anything.
 */

/** One step: SQL, or code for what SQL alone cannot do (recomputing values from existing rows). */
export type Migration = string | ((sql: SqlStorage) => void);

/** Applies the migrations `storage` has not seen yet. The first must create the `meta` table
 * (`key TEXT PRIMARY KEY, value TEXT NOT NULL`), where the version is kept. */
export function migrate(storage: DurableObjectStorage, migrations: readonly Migration[]): void {
  const sql = storage.sql;
  const hasMeta =
    sql
      .exec<{ n: number }>("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
      .one().n > 0;
  const version = hasMeta
    ? Number(
        sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'schema_version'").toArray()[0]
          ?.value ?? 0,
      )
    : 0;
  for (let v = version; v < migrations.length; v++) {
    storage.transactionSync(() => {
      const step = migrations[v];
      if (typeof step === "string") sql.exec(step);
      else step?.(sql);
      sql.exec(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        String(v + 1),
      );
    });
  }
}
