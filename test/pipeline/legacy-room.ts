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

/** Undoes schema v9 (the count of messages through each event, for the inbox), and what came
 * after it. */
export function undoSchemaV9(sql: SqlStorage): void {
  undoSchemaV10(sql);
  sql.exec("ALTER TABLE events DROP COLUMN msgs");
}

/** Undoes schema v10 (read markers by page): the markers go back to `members.read_seq`. */
export function undoSchemaV10(sql: SqlStorage): void {
  for (const { markers } of sql.exec<{ markers: string }>("SELECT markers FROM read_pages").toArray()) {
    for (const [userId, seq] of Object.entries(JSON.parse(markers) as Record<string, number>))
      sql.exec("UPDATE members SET read_seq = ? WHERE user_id = ?", seq, userId);
  }
  sql.exec("DROP TABLE read_pages");
}
