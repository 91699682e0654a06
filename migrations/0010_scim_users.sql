ALTER TABLE `users` ADD `external_id` text;--> statement-breakpoint
ALTER TABLE `users` ADD `given_name` text;--> statement-breakpoint
ALTER TABLE `users` ADD `family_name` text;--> statement-breakpoint
ALTER TABLE `users` ADD `scim_deleted_at` integer;--> statement-breakpoint
CREATE INDEX `users_tenant_external` ON `users` (`tenant_id`,`external_id`);