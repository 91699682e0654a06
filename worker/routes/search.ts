/**
 * @module `GET /api/search?q=&room=&author=&from=&to=`: full-text search (FTS5, ranked by bm25) of
 * the tenant's search shards (durable-objects/search.ts), only in rooms the caller belongs to now.
 * The query goes to the parts that hold those rooms, each with its share of the room list, and
 * their hits are merged by rank. Snippets come HTML-escaped with matches in <mark>: message text
 * never reaches a page unescaped.
 */
import { and, eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { Hono } from "hono";
import { limitsOf } from "../../config/limits.ts";
import { directoryDb } from "../../platform/residency.ts";
import type { SearchHit } from "../../protocol/index.ts";
import { memberships } from "../db/schema.ts";
import { ApiError } from "../errors.ts";
import { intParam } from "../http.ts";
import { spend } from "../quota.ts";
import {
  partOf,
  type SearchQuery,
  type ShardHit,
  SNIPPET_CLOSE,
  SNIPPET_OPEN,
  searchStub,
} from "../stubs.ts";
import type { AppEnv } from "../types.ts";

const escapeHtml = (s: string) =>
  s.replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch] as string,
  );

/** Each tenant's number of search parts, as its part 0 fixed it: it never changes for a tenant, so
 * an isolate asks once. */
const partsOf = new Map<string, number>();

async function tenantParts(env: Env, tenantId: string): Promise<number> {
  const known = partsOf.get(tenantId);
  if (known !== undefined) return known;
  const root = { tenantId, part: 0, gen: 0 };
  const { parts } = await searchStub(env, root).layout(root, limitsOf(env).searchParts);
  partsOf.set(tenantId, parts);
  return parts;
}

export const searchRoutes = new Hono<AppEnv>().get("/", async (c) => {
  const me = c.get("identity");
  const q = (c.req.query("q") ?? "").trim();
  if (q === "" || q.length > 200) throw new ApiError("bad_request", "q must be 1-200 characters");
  const room = c.req.query("room");
  const author = c.req.query("author");
  const from = intParam(c, "from");
  const to = intParam(c, "to");
  // Every check of the request above; a query that reaches the shards counts (an invalid FTS
  // expression too: it is found out by running it).
  await spend(c.env, me, "searches");
  // Only rooms the caller belongs to now: leaving a room (or being removed) ends access at once.
  let rooms = (
    await drizzle(directoryDb(c.env, me.tenantId))
      .select({ roomId: memberships.roomId })
      .from(memberships)
      .where(and(eq(memberships.tenantId, me.tenantId), eq(memberships.userId, me.userId)))
      .all()
  ).map((r) => r.roomId);
  if (me.roomScope) rooms = rooms.filter((r) => me.roomScope?.includes(r));
  if (room !== undefined) rooms = rooms.filter((r) => r === room);
  if (rooms.length === 0) return c.json({ hits: [] as SearchHit[] });

  const limit = limitsOf(c.env).searchHits;
  const parts = await tenantParts(c.env, me.tenantId);
  const byPart = new Map<number, string[]>();
  for (const r of rooms) {
    const part = partOf(r, parts);
    byPart.set(part, [...(byPart.get(part) ?? []), r]);
  }
  const results = await Promise.all(
    [...byPart].map(([part, partRooms]) => {
      const at = { tenantId: me.tenantId, part, gen: 0 };
      const query: SearchQuery = { q, rooms: partRooms, author, from, to, limit };
      return searchStub(c.env, at).search(at, query);
    }),
  );
  const hits: ShardHit[] = [];
  for (const result of results) {
    if (!result.ok) throw ApiError.from(result);
    hits.push(...result.hits);
  }
  hits.sort((a, b) => a.rank - b.rank);
  return c.json({
    hits: hits.slice(0, limit).map((h) => ({
      room: h.room,
      seq: h.seq,
      text: h.text,
      author: h.author,
      ts: h.ts,
      snippet: escapeHtml(h.snippet).replaceAll(SNIPPET_OPEN, "<mark>").replaceAll(SNIPPET_CLOSE, "</mark>"),
    })) satisfies SearchHit[],
  });
});
