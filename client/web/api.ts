/**
 * @module The web client's REST calls, typed from the protocol module. Same-origin, signed in by
 * the Access (or dev) cookie, through the SDK's `request` so error envelopes become HttpErrors.
 * Uploads use XMLHttpRequest because fetch still has no upload progress.
 */
import type {
  AttachmentRef,
  DirectoryUser,
  HistoryPage,
  Me,
  RoomKind,
  RoomSummary,
  SearchHit,
} from "../../protocol/index.ts";
import type { NotifyMode, NotifyPrefs, PushSubscriptionView } from "../../protocol/notify.ts";
import { type Connection, HttpError, request, requestJson } from "../sdk/index.ts";

export const conn: Connection = { baseUrl: "" };

export const api = {
  me: () => requestJson<Me>(conn, "GET", "/api/me"),
  devLogin: (body: { email: string; name: string; tenant: string }) =>
    requestJson<{ token: string }>(conn, "POST", "/auth/dev/login", body),
  rooms: () => requestJson<RoomSummary[]>(conn, "GET", "/api/rooms"),
  createRoom: (body: { name?: string; kind: RoomKind; topic?: string; members?: string[] }) =>
    requestJson<RoomSummary>(conn, "POST", "/api/rooms", body),
  join: (roomId: string) => requestJson<RoomSummary>(conn, "POST", `/api/rooms/${roomId}/join`),
  leave: (roomId: string) => request(conn, "POST", `/api/rooms/${roomId}/leave`),
  users: (q: string) =>
    requestJson<{ users: DirectoryUser[] }>(conn, "GET", `/api/users?q=${encodeURIComponent(q)}`),
  deactivate: (userId: string) => request(conn, "POST", `/api/users/${userId}/deactivate`),
  reactivate: (userId: string) => request(conn, "POST", `/api/users/${userId}/reactivate`),
  history: (roomId: string, where: { before?: number; after?: number }, limit = 100) => {
    const q = where.before !== undefined ? `before=${where.before}` : `after=${where.after ?? 0}`;
    return requestJson<HistoryPage>(conn, "GET", `/api/rooms/${roomId}/messages?${q}&limit=${limit}`);
  },
  latest: (roomId: string, limit = 100) =>
    requestJson<HistoryPage>(conn, "GET", `/api/rooms/${roomId}/messages?limit=${limit}`),
  notifyPrefs: () => requestJson<NotifyPrefs>(conn, "GET", "/api/notifications"),
  setNotifyPrefs: (body: { default?: NotifyMode; pausedUntil?: number | null }) =>
    requestJson<NotifyPrefs>(conn, "PUT", "/api/notifications", body),
  setRoomNotify: (roomId: string, body: { mode?: NotifyMode | null; muteUntil?: number | null }) =>
    requestJson<NotifyPrefs>(conn, "PUT", `/api/notifications/rooms/${roomId}`, body),
  pushKey: () => requestJson<{ publicKey: string }>(conn, "GET", "/api/push/key"),
  subscribe: (sub: PushSubscriptionJSON) =>
    requestJson<{ id: string }>(conn, "POST", "/api/push/subscriptions", sub),
  subscriptions: () =>
    requestJson<{ subscriptions: PushSubscriptionView[] }>(conn, "GET", "/api/push/subscriptions"),
  unsubscribe: (id: string) => request(conn, "DELETE", `/api/push/subscriptions/${id}`),
  testPush: () => requestJson<{ devices: number }>(conn, "POST", "/api/push/test"),
  search: (params: { q: string; room?: string; author?: string; from?: number; to?: number }) => {
    const qs = new URLSearchParams({ q: params.q });
    if (params.room) qs.set("room", params.room);
    if (params.author) qs.set("author", params.author);
    if (params.from !== undefined) qs.set("from", String(params.from));
    if (params.to !== undefined) qs.set("to", String(params.to));
    return requestJson<{ hits: SearchHit[] }>(conn, "GET", `/api/search?${qs}`);
  },
};

export function attachmentUrl(id: string, inline = false): string {
  return `/api/attachments/${encodeURIComponent(id)}${inline ? "?inline=1" : ""}`;
}

/** Uploads one file into a room, reporting progress (0..1); resolves with the stored attachment. */
export function upload(
  roomId: string,
  file: Blob & { name?: string },
  onProgress: (fraction: number) => void,
  signal?: AbortSignal,
): Promise<AttachmentRef> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/rooms/${roomId}/attachments`);
    xhr.setRequestHeader("content-type", file.type || "application/octet-stream");
    xhr.setRequestHeader("x-filename", encodeURIComponent(file.name || "pasted"));
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status === 201) {
        onProgress(1);
        resolve(JSON.parse(xhr.responseText) as AttachmentRef);
        return;
      }
      let error: { code?: string; message?: string } = {};
      try {
        error = (JSON.parse(xhr.responseText) as { error?: typeof error }).error ?? {};
      } catch {}
      reject(new HttpError(xhr.status, (error.code ?? "internal") as never, error.message ?? xhr.statusText));
    };
    xhr.onerror = () => reject(new HttpError(0, "network", "upload failed: network"));
    xhr.onabort = () => reject(new HttpError(0, "network", "upload cancelled"));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(file);
  });
}
