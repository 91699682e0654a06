/**
 * @module The tenants of the search-at-scale bench (bench/search-scale.ts), on either design: what
 * each holds (a plan: rooms, messages per room, who is in which room, who writes which room), and
 * making it real through the public API (dev sign-in, rooms created with their members). The same
 * plan gives the same rooms, memberships and message text on both designs; only the ids differ.
 */

import { type Corpus, messageStream, roomSeed, textOf } from "./corpus.ts";
import { api, pool } from "./targets.ts";

/** A user who searches: a member of every `step`-th room of their tenant. */
export interface SearcherPlan {
  key: string;
  step: number;
}

export interface TenantPlan {
  /** Index in the run (seeds the text of its rooms). */
  index: number;
  /** The tenant id (dev sign-in's `tenant`). */
  slug: string;
  rooms: number;
  messages: number;
  /** Users who write: every one is a member of every room; each room has one writer. */
  authors: number;
  searchers: SearcherPlan[];
}

export interface User {
  token: string;
  id: string;
  name: string;
}

export interface RoomLive {
  id: string;
  /** The room's last seq when it was created (its member joins). */
  lastSeq: number;
}

/** A plan made real on one server. */
export interface TenantLive {
  plan: TenantPlan;
  admin: User;
  authors: User[];
  searchers: Map<string, User>;
  rooms: RoomLive[];
}

/** Messages room `r` gets: the tenant's messages spread evenly over its rooms. */
export function messagesIn(plan: TenantPlan, r: number): number {
  const base = Math.floor(plan.messages / plan.rooms);
  return base + (r < plan.messages % plan.rooms ? 1 : 0);
}

/** The author (index) who writes room `r`. */
export function authorOf(plan: TenantPlan, r: number): number {
  return (roomSeed(plan.index, r) >>> 7) % plan.authors;
}

export const isMember = (s: SearcherPlan, r: number): boolean => r % s.step === 0;

/** A word that only the last message of room `r` holds: finding it means the room is indexed. */
export const sentinelOf = (plan: TenantPlan, r: number): string => `sentinel${plan.index}x${r}`;

/**
 * The texts of room `r`, in order: message `i` (0-based) of a stream seeded by (tenant, room); the
 * last one ends with the room's sentinel.
 */
export function roomTexts(corpus: Corpus, plan: TenantPlan, r: number): (i: number) => string {
  const next = messageStream(corpus, roomSeed(plan.index, r));
  const n = messagesIn(plan, r);
  let made = 0;
  return (i) => {
    if (i !== made) throw new Error(`room ${r}: text ${i} asked out of order (next is ${made})`);
    made++;
    const text = textOf(corpus, next());
    return i === n - 1 ? `${text} ${sentinelOf(plan, r)}` : text;
  };
}

async function login(base: string, tenant: string, email: string, name: string): Promise<User> {
  const { token } = await api<{ token?: unknown }>(base, "POST", "/auth/dev/login", undefined, {
    email,
    name,
    tenant,
  });
  if (typeof token !== "string") throw new Error("POST /auth/dev/login answered no token");
  const me = await api<{ user?: { id?: unknown } }>(base, "GET", "/api/me", token);
  if (typeof me.user?.id !== "string") throw new Error("GET /api/me answered no user id");
  return { token, id: me.user.id, name };
}

/**
 * Signs the tenant's users in (the first, the admin, owns the tenant) and has the admin create its
 * channels, each with every author and its searchers as members (`members` on create: one request
 * per room).
 */
export async function setUpTenant(base: string, plan: TenantPlan, concurrency = 6): Promise<TenantLive> {
  const mail = (who: string) => `${who}@${plan.slug}.bench.test`;
  const admin = await login(base, plan.slug, mail("admin"), "Admin");
  const authors = await pool(
    Array.from({ length: plan.authors }, (_, k) => k),
    4,
    (k) => login(base, plan.slug, mail(`author${k}`), `Author ${k}`),
  );
  const searchers = new Map<string, User>();
  for (const s of plan.searchers)
    searchers.set(s.key, await login(base, plan.slug, mail(`searcher-${s.key}`), `Searcher ${s.key}`));
  const rooms = await pool(
    Array.from({ length: plan.rooms }, (_, r) => r),
    concurrency,
    async (r): Promise<RoomLive> => {
      const members = [
        ...authors.map((a) => a.id),
        ...plan.searchers.filter((s) => isMember(s, r)).map((s) => (searchers.get(s.key) as User).id),
      ];
      const room = await api<{ id?: unknown; lastSeq?: unknown }>(base, "POST", "/api/rooms", admin.token, {
        name: `room ${r}`,
        kind: "channel",
        members,
      });
      if (typeof room.id !== "string" || typeof room.lastSeq !== "number")
        throw new Error(`POST /api/rooms answered ${JSON.stringify(room).slice(0, 200)}`);
      return { id: room.id, lastSeq: room.lastSeq };
    },
  );
  return { plan, admin, authors, searchers, rooms };
}

/** Every sentinel of a tenant, with its room. */
export function sentinels(live: TenantLive): { word: string; room: string }[] {
  return live.rooms.map((room, r) => ({ word: sentinelOf(live.plan, r), room: room.id }));
}
