/**
 * @module The tenant's audit log (D1): who did what to whom and when. Entries carry ids, never
 * message text or tokens. Admins read it through `GET /api/audit`.
 */
import { type DrizzleD1Database, drizzle } from "drizzle-orm/d1";
import { directoryDb } from "../platform/residency.ts";
import { auditLog } from "./db/schema.ts";

export type AuditAction =
  | "user.provisioned"
  | "user.role_changed"
  | "user.email_changed"
  | "room.member_added"
  | "room.member_joined"
  | "room.member_removed"
  | "room.member_left"
  | "token.created"
  | "token.revoked"
  | "message.deleted_by_admin"
  | "dead_letter.replayed"
  | "export.requested"
  | "export.downloaded"
  | "export.deleted"
  | "tenant.retention_changed"
  | "tenant.notification_previews_changed"
  | "tenant.scim_role_groups_changed"
  | "user.deactivated"
  | "user.deleted"
  | "user.reactivated"
  | "webhook.created"
  | "webhook.enabled"
  | "webhook.deleted"
  | "webhook.replayed";

type AuditDetail = Record<string, string | number | boolean | null>;

/** The insert of one entry, unexecuted: a caller puts it in the same D1 batch as the change it
 * records, so the change and its entry commit together. */
export function auditEntry(
  db: DrizzleD1Database,
  actor: { tenantId: string; userId: string },
  action: AuditAction,
  target: string,
  detail: AuditDetail = {},
) {
  return db.insert(auditLog).values({
    tenantId: actor.tenantId,
    actorId: actor.userId,
    action,
    target,
    detail: JSON.stringify(detail),
    at: Date.now(),
  });
}

/** Records one entry in the actor's tenant's directory. */
export async function audit(
  env: Env,
  actor: { tenantId: string; userId: string },
  action: AuditAction,
  target: string,
  detail: AuditDetail = {},
): Promise<void> {
  await auditEntry(drizzle(directoryDb(env, actor.tenantId)), actor, action, target, detail);
}
