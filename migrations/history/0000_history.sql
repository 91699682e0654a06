CREATE TABLE `archived_events` (
	`tenant_id` text NOT NULL,
	`room_id` text NOT NULL,
	`seq` integer NOT NULL,
	`kind` text NOT NULL,
	`author_id` text NOT NULL,
	`author_name` text NOT NULL,
	`ts` integer NOT NULL,
	`target` integer,
	`text` text DEFAULT '' NOT NULL,
	`text_seq` integer DEFAULT 0 NOT NULL,
	`deleted` integer DEFAULT 0 NOT NULL,
	`json` text NOT NULL,
	PRIMARY KEY(`tenant_id`, `room_id`, `seq`)
);
--> statement-breakpoint
CREATE INDEX `archived_target` ON `archived_events` (`tenant_id`,`room_id`,`target`,`seq`);--> statement-breakpoint
CREATE INDEX `archived_ts` ON `archived_events` (`ts`);