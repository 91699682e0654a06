-- Full-text search over archived message text (FTS5, external content: the text lives once, in
-- archived_events). Triggers keep the index equal to archived_events.text on every insert, text
-- change and delete, so an edit re-indexes and a deleted message is no longer found.
CREATE VIRTUAL TABLE `archive_fts` USING fts5(`text`, content='archived_events', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2');
--> statement-breakpoint
CREATE TRIGGER `archived_events_ai` AFTER INSERT ON `archived_events` WHEN new.`text` != '' BEGIN
  INSERT INTO `archive_fts`(rowid, `text`) VALUES (new.rowid, new.`text`);
END;
--> statement-breakpoint
CREATE TRIGGER `archived_events_au` AFTER UPDATE OF `text` ON `archived_events` BEGIN
  INSERT INTO `archive_fts`(`archive_fts`, rowid, `text`) SELECT 'delete', old.rowid, old.`text` WHERE old.`text` != '';
  INSERT INTO `archive_fts`(rowid, `text`) SELECT new.rowid, new.`text` WHERE new.`text` != '';
END;
--> statement-breakpoint
CREATE TRIGGER `archived_events_ad` AFTER DELETE ON `archived_events` WHEN old.`text` != '' BEGIN
  INSERT INTO `archive_fts`(`archive_fts`, rowid, `text`) VALUES ('delete', old.rowid, old.`text`);
END;
