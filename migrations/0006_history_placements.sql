CREATE TABLE `history_placements` (
	`tenant_id` text NOT NULL,
	`from_ts` integer NOT NULL,
	`shard` text NOT NULL,
	PRIMARY KEY(`tenant_id`, `from_ts`)
);
