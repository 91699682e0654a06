DROP INDEX `archived_target`;--> statement-breakpoint
CREATE INDEX `archived_target` ON `archived_events` (`tenant_id`,`room_id`,`target`,`seq`);