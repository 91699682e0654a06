/**
 * @module The web client's state: who is signed in, the room list with unread and mention counts,
 * the open rooms (RoomControllers), presence, names for mentions, and the connection picture the
 * banner shows. Views read it and subscribe to its events; only this module and the controllers
 * reach the network.
 */
import type { Me, PresenceStatus, RoomSummary, UserRef } from "../../protocol/index.ts";
import type { NotifyPrefs } from "../../protocol/notify.ts";
import {
  browserSocket,
  HttpError,
  type MyStatus,
  PresenceSession,
  type SessionEnded,
  type SessionStatus,
} from "../sdk/index.ts";
import { IndexedDbOutboxStore } from "../sdk/outbox-idb.ts";
import { api, conn } from "./api.ts";
import { Emitter } from "./emitter.ts";
import { RoomController } from "./room-controller.ts";

export type View =
  | { kind: "room"; roomId: string; focus?: number }
  | { kind: "search"; q: string }
  | { kind: "empty" };

export interface Connection {
  state: "online" | "connecting" | "offline";
  queued: number;
}

/** Something the user should be told that is not about the connection, with what they can do. */
export interface Notice {
  text: string;
  action?: { label: string; run: () => void };
}

/** What this client keeps in localStorage starts with this: the signed-in user and their room
 * list, for an offline start. `forgetLocal` removes all of it. */
export const LOCAL_PREFIX = "parley:";

/** Removes everything the client keeps in localStorage (sign-out). */
export function forgetLocal(): void {
  for (const key of Object.keys(localStorage)) if (key.startsWith(LOCAL_PREFIX)) localStorage.removeItem(key);
}

/** Whether a request is answered; false when it is refused (a network failure throws as it is). */
async function passes(call: () => Promise<unknown>): Promise<boolean> {
  try {
    await call();
    return true;
  } catch (err) {
    if (err instanceof HttpError && err.code === "network") throw err;
    return false;
  }
}

/** How long to wait before refreshing the room list after activity (coalesces bursts). */
const ROOMS_REFRESH_MS = 250;
const MAX_WATCH = 500;
/** How the user's own status shows to themselves (others see it through the presence object). */
const STATUS_SHOWN: Record<MyStatus, PresenceStatus> = { active: "online", away: "away", dnd: "dnd" };

export class AppState {
  readonly me: Me;
  readonly events = new Emitter<{
    rooms: undefined;
    view: View;
    presence: string;
    connection: Connection;
    notice: Notice;
    /** The user lost access to a room (it has left `rooms`). */
    lost: string;
    /** New events in a room the user belongs to (`mention`: one of them mentions the user). */
    activity: { roomId: string; mention: boolean };
    /** The user's notification preferences, changed here or on another device. */
    prefs: NotifyPrefs;
  }>();
  rooms = new Map<string, RoomSummary>();
  view: View = { kind: "empty" };
  myStatus: MyStatus = "active";
  readonly controllers = new Map<string, RoomController>();
  readonly names = new Map<string, string>();
  readonly presence: PresenceSession;
  readonly store: IndexedDbOutboxStore;
  #statuses = new Map<string, SessionStatus>();
  #refresh: ReturnType<typeof setTimeout> | null = null;
  #online = typeof navigator === "undefined" ? true : navigator.onLine;
  #presenceUp = false;
  /** Rooms this client is leaving itself: their 4403 is expected, not news. */
  readonly #leaving = new Set<string>();
  /** The user was asked to sign in again (once: the notice stays until they do). */
  #askedToSignIn = false;

  constructor(me: Me) {
    this.me = me;
    this.names.set(me.user.id, me.user.name);
    // One outbox per signed-in user: its commands are sent as the user who wrote them.
    this.store = new IndexedDbOutboxStore(`parley-outbox:${me.tenant.id}:${me.user.id}`);
    // A stream whose token expired (4402), or a request refused with 401, renews the sign-in; every
    // session then resumes where it was.
    conn.reauthenticate = () => this.#renewSignIn();
    this.presence = new PresenceSession({
      open: browserSocket(""),
      conn,
      onPresence: (user) => this.events.emit("presence", user),
      onActivity: (room, _lastSeq, mention) => {
        this.#activity(room);
        this.events.emit("activity", { roomId: room, mention });
      },
      onNotifyPrefs: (prefs) => this.events.emit("prefs", prefs),
      onRead: (room, seq) => this.#readElsewhere(room, seq),
      onConnection: (up) => {
        this.#presenceUp = up;
        if (up) this.refreshRooms(); // catch up on activity missed while away
        this.#emitConnection();
      },
    });
  }

  async start(): Promise<void> {
    addEventListener("online", () => this.#network(true));
    addEventListener("offline", () => this.#network(false));
    await this.loadRooms();
    this.presence.start();
    if (!this.#online) this.presence.setNetwork(false);
    // Messages queued before a reload: start those rooms' sessions so they are delivered.
    for (const roomId of await this.store.roomIds())
      if (this.rooms.has(roomId)) void this.controller(roomId).start();
  }

  /** The room list, from the server; offline at start-up, the one this browser last had (so a
   * reload without network opens the app, and its outbox sends once back). */
  async loadRooms(): Promise<void> {
    const key = `${LOCAL_PREFIX}rooms:${this.me.tenant.id}:${this.me.user.id}`;
    let list: RoomSummary[];
    try {
      list = await api.rooms();
      localStorage.setItem(key, JSON.stringify(list));
    } catch (err) {
      const kept = localStorage.getItem(key);
      const offline = err instanceof HttpError && err.code === "network";
      if (this.rooms.size > 0 || !offline || kept === null) throw err;
      list = JSON.parse(kept) as RoomSummary[];
    }
    this.rooms = new Map(list.map((r) => [r.id, r]));
    for (const r of list) for (const m of r.members ?? []) this.names.set(m.id, m.name);
    this.#watch();
    this.events.emit("rooms", undefined);
  }

  refreshRooms(): void {
    if (this.#refresh) return;
    this.#refresh = setTimeout(() => {
      this.#refresh = null;
      this.loadRooms().catch(() => undefined);
    }, ROOMS_REFRESH_MS);
  }

  controller(roomId: string): RoomController {
    let c = this.controllers.get(roomId);
    if (!c) {
      c = new RoomController(roomId, this.store, this.me.user.id);
      this.controllers.set(roomId, c);
      c.events.on("status", (s) => {
        this.#statuses.set(roomId, s);
        this.#emitConnection();
      });
      c.events.on("ended", (e) => this.#lost(e));
      c.events.on("change", ({ live }) => {
        for (const e of live) this.names.set(e.author.id, e.author.name);
        const room = this.rooms.get(roomId);
        const last = live.at(-1);
        if (room && last && last.seq > room.lastSeq) room.lastSeq = last.seq;
      });
    }
    return c;
  }

  setView(view: View): void {
    this.view = view;
    this.events.emit("view", view);
  }

  /** The name to show for a user id (mentions, presence), as far as this client has seen it. */
  nameOf(id: string): string {
    return this.names.get(id) ?? "unknown user";
  }

  remember(users: UserRef[]): void {
    for (const u of users) this.names.set(u.id, u.name);
  }

  presenceOf(userId: string): PresenceStatus {
    if (userId === this.me.user.id) return this.#online ? STATUS_SHOWN[this.myStatus] : "offline";
    return this.presence.presence.get(userId)?.status ?? "offline";
  }

  setStatus(status: MyStatus): void {
    this.myStatus = status;
    this.presence.setStatus(status);
    this.events.emit("presence", this.me.user.id);
  }

  /** The other person of a two-person dm (for its name and presence dot). */
  dmPartner(room: RoomSummary): UserRef | undefined {
    return room.members?.find((m) => m.id !== this.me.user.id);
  }

  roomTitle(room: RoomSummary): string {
    if (room.kind !== "dm") return room.name;
    const others = (room.members ?? []).filter((m) => m.id !== this.me.user.id);
    return others.map((m) => m.name).join(", ") || room.name;
  }

  /** Marks a room read up to `seq` (never backwards), here at once and on the server. */
  markRead(roomId: string, seq: number): void {
    if (!this.#advanceRead(roomId, seq)) return;
    this.events.emit("rooms", undefined);
    const session = this.controllers.get(roomId)?.session;
    void session?.read(seq).catch(() => undefined);
  }

  /** Moves the local read marker forward; false if it would not move. */
  #advanceRead(roomId: string, seq: number): boolean {
    const room = this.rooms.get(roomId);
    if (!room || seq <= room.readSeq) return false;
    room.readSeq = seq;
    if (seq >= room.lastSeq) {
      room.unread = 0;
      room.mentions = 0;
    }
    return true;
  }

  async join(roomId: string): Promise<void> {
    const room = await api.join(roomId);
    this.rooms.set(room.id, room);
    this.events.emit("rooms", undefined);
  }

  async leave(roomId: string): Promise<void> {
    this.#leaving.add(roomId);
    try {
      await api.leave(roomId);
    } finally {
      this.#leaving.delete(roomId);
    }
    this.#drop(roomId);
    await this.loadRooms();
    if (this.view.kind === "room" && this.view.roomId === roomId) this.setView({ kind: "empty" });
  }

  /** The user's access to a room ended elsewhere (removed by someone, or left on another device):
   * its session has stopped; the room leaves the list and the user is told. */
  #lost(ended: SessionEnded): void {
    const roomId = ended.roomId;
    if (this.#leaving.has(roomId)) return;
    if (ended.reason === "deactivated") {
      // The whole account, not this room: every session stops; the next request shows why.
      this.presence.close();
      for (const id of [...this.controllers.keys()]) this.#drop(id);
      this.events.emit("notice", { text: "Your account was deactivated. Ask your administrator." });
      this.#emitConnection();
      return;
    }
    const room = this.rooms.get(roomId);
    const name = room ? `${room.kind === "dm" ? "" : "#"}${this.roomTitle(room)}` : "a room";
    this.#drop(roomId);
    this.rooms.delete(roomId);
    this.events.emit("rooms", undefined);
    this.events.emit("notice", {
      text:
        ended.reason === "left"
          ? `You left ${name} on another device`
          : ended.reason === "removed"
            ? `You were removed from ${name}`
            : `You no longer have access to ${name}`,
    });
    this.events.emit("lost", roomId);
    this.#emitConnection();
    // A public channel stays in the directory (not joined): the list comes back from the server.
    this.refreshRooms();
  }

  /**
   * Renews the sign-in (docs/protocol.md, "Identity"). In dev the app signs in again as the same
   * person. Behind Access, where that route answers 404, any same-origin request carries the current
   * `CF_Authorization` cookie: one that passes means a fresh token is there (this or another tab went
   * through Access's sign-in). When Access's own session has ended, the request is redirected to
   * the sign-in, which only a page load can follow: the user is asked to reload rather than having
   * the page reloaded under them (a draft would go; unsent messages wait in the outbox either way).
   * A network failure throws as it is: the sessions retry later.
   */
  async #renewSignIn(): Promise<undefined> {
    const { email, name } = this.me.user;
    if (await passes(() => api.devLogin({ email, name, tenant: this.me.tenant.id }))) return undefined;
    if (await passes(() => api.me())) return undefined;
    if (!this.#askedToSignIn) {
      this.#askedToSignIn = true;
      this.events.emit("notice", {
        text: "Your sign-in has expired.",
        action: { label: "Sign in again", run: () => location.reload() },
      });
    }
    throw new Error("sign in again");
  }

  #drop(roomId: string): void {
    this.controllers.get(roomId)?.close();
    this.controllers.delete(roomId);
    this.#statuses.delete(roomId);
  }

  async createRoom(body: { name?: string; kind: RoomSummary["kind"]; topic?: string; members?: string[] }) {
    const room = await api.createRoom(body);
    this.rooms.set(room.id, room);
    this.remember(room.members ?? []);
    this.#watch();
    this.events.emit("rooms", undefined);
    return room;
  }

  connection(): Connection {
    let queued = 0;
    let state: Connection["state"] = this.#online ? "online" : "offline";
    for (const s of this.#statuses.values()) {
      queued += s.queued;
      if (state === "online" && s.state !== "online" && s.state !== "closed") state = "connecting";
    }
    if (this.#online && !this.#presenceUp && state === "online") state = "connecting";
    return { state, queued };
  }

  #emitConnection(): void {
    this.events.emit("connection", this.connection());
  }

  #network(online: boolean): void {
    this.#online = online;
    this.presence.setNetwork(online);
    for (const c of this.controllers.values()) c.session?.setNetwork(online);
    this.#emitConnection();
  }

  #activity(roomId: string): void {
    // The open room's own stream already has the event; everything else refreshes the list
    // (counts come from the rooms, so they match what a reload would show).
    if (this.view.kind === "room" && this.view.roomId === roomId && this.rooms.has(roomId)) return;
    this.refreshRooms();
  }

  /** Another of the user's sessions read this room: follow it (the counts of a partial read come
   * from the server). */
  #readElsewhere(roomId: string, seq: number): void {
    if (!this.#advanceRead(roomId, seq)) return;
    const room = this.rooms.get(roomId);
    if (room && room.unread === 0) this.events.emit("rooms", undefined);
    else this.refreshRooms();
  }

  /** Watches dm partners, then people seen in open rooms, up to the protocol's 500. */
  #watch(): void {
    const ids = new Set<string>();
    for (const r of this.rooms.values())
      for (const m of r.members ?? []) if (m.id !== this.me.user.id) ids.add(m.id);
    for (const id of this.names.keys()) {
      if (ids.size >= MAX_WATCH) break;
      if (id !== this.me.user.id && id !== "system") ids.add(id);
    }
    this.presence.watch([...ids]);
  }

  watchMore(): void {
    this.#watch();
  }
}
