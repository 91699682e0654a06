/**
 * @module Rooms as earlier releases left them, for the upgrade tests: undoes what the room's schema
 * v8 added (R2 holding the complete history: the segments' format, last time and edit targets, the
 * redactions table, the sealed, floor and sealing marks), so the next start migrates it again.
 */

/** Removes schema v8's additions from a room's SQLite (run inside the room object). */
export function undoSchemaV8(sql: SqlStorage): void {
  undoSchemaV9(sql);
  sql.exec(`DROP INDEX segments_dirty;
    DROP TABLE redactions;
    ALTER TABLE segments DROP COLUMN format;
    ALTER TABLE segments DROP COLUMN last_ts;
    ALTER TABLE segments DROP COLUMN edit_targets;
    DELETE FROM meta WHERE key IN ('sealed_seq', 'floor_seq', 'sealing');`);
}

/** Undoes schema v9 (the count of messages through each event, for the inbox). */
export function undoSchemaV9(sql: SqlStorage): void {
  sql.exec("ALTER TABLE events DROP COLUMN msgs");
}
