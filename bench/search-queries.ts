/**
 * @module The queries of the search-at-scale bench and their timing. From a tenant's plan it draws
 * the same text the fill writes (without sending it) to count in how many messages each word occurs,
 * overall and in each searcher's rooms, and picks the queries from those counts: the same plan, the
 * same queries on both designs. Each search is one `GET /api/search` as a real member, paired with
 * a `GET /api/me` by the same user (the same auth path without the search) as the in-run baseline.
 */

import { type Corpus, messageStream, roomSeed } from "./corpus.ts";
import { mulberry32 } from "./random.ts";
import { isMember, messagesIn, type SearcherPlan, type TenantLive, type TenantPlan } from "./search-world.ts";
import { type Server, workerdSnapshot } from "./servers.ts";
import { type LatencySummary, Samples } from "./stats.ts";

export const KINDS = ["common", "rarer", "rare", "phrase", "room", "author"] as const;
export type Kind = (typeof KINDS)[number];

export const KIND_LABELS: Record<Kind, string> = {
  common: "common word",
  rarer: "rarer word",
  rare: "rare word",
  phrase: "rare phrase",
  room: "common word, one room",
  author: "common word, one author",
};

/** How each kind is chosen, for the report. */
export const KIND_RULES: Record<Kind, string> = {
  common: "one of the 50 most frequent words",
  rarer: "a word in 0.05–0.5% of the tenant's messages",
  rare: "a word in 1–20 of the tenant's messages, at least one of them in the searcher's rooms",
  phrase:
    'two adjacent words outside the 500 most frequent, quoted ("a b"), from a message in the searcher\'s rooms',
  room: "a common word with `room=` one of the searcher's rooms",
  author: "a common word with `author=` one of the tenant's authors",
};

interface Visible {
  messages: number;
  /** Messages of the searcher's rooms that hold each word, by rank. */
  df: Uint32Array;
  phrases: string[];
}

export interface TenantStats {
  messages: number;
  df: Uint32Array;
  visible: Map<string, Visible>;
}

const PHRASES = 400;

/** Draws every message of the tenant as the fill will (no sentinels: they are not query words). */
export function tenantStats(corpus: Corpus, plan: TenantPlan): TenantStats {
  const size = corpus.words.length;
  const df = new Uint32Array(size);
  const stamp = new Int32Array(size).fill(-1);
  const visible = new Map<string, Visible>();
  for (const s of plan.searchers) {
    let messages = 0;
    for (let r = 0; r < plan.rooms; r++) if (isMember(s, r)) messages += messagesIn(plan, r);
    visible.set(s.key, { messages, df: new Uint32Array(size), phrases: [] });
  }
  const pick = mulberry32(plan.index * 7919 + 17);
  let m = 0;
  for (let r = 0; r < plan.rooms; r++) {
    const next = messageStream(corpus, roomSeed(plan.index, r));
    const n = messagesIn(plan, r);
    const mine = plan.searchers.filter((s) => isMember(s, r)).map((s) => visible.get(s.key) as Visible);
    for (let i = 0; i < n; i++, m++) {
      const ranks = next();
      for (const rank of ranks) {
        if (stamp[rank] === m) continue;
        stamp[rank] = m;
        df[rank] = (df[rank] as number) + 1;
        for (const v of mine) v.df[rank] = (v.df[rank] as number) + 1;
      }
      for (const v of mine) {
        if (v.phrases.length >= PHRASES || pick() > (2 * PHRASES) / v.messages) continue;
        for (let k = 0; k + 1 < ranks.length; k++) {
          const a = ranks[k] as number;
          const b = ranks[k + 1] as number;
          if (a >= 500 && b >= 500) {
            v.phrases.push(`"${corpus.words[a]} ${corpus.words[b]}"`);
            break;
          }
        }
      }
    }
  }
  return { messages: m, df, visible };
}

export interface Query {
  kind: Kind;
  q: string;
  /** Index of the room (`room=`) or author (`author=`) in the tenant, resolved per design. */
  room?: number;
  author?: number;
  /** Messages of the searcher's rooms that hold the word (single-word kinds), else 0. */
  visibleDf: number;
}

/** `perKind` queries of every kind for `searcher`, kinds interleaved, from a fixed seed. */
export function planQueries(
  corpus: Corpus,
  plan: TenantPlan,
  stats: TenantStats,
  searcher: SearcherPlan,
  perKind: number,
): Query[] {
  const v = stats.visible.get(searcher.key) as Visible;
  const random = mulberry32(plan.index * 104_729 + searcher.step);
  const choose = <T>(list: T[], what: string): T => {
    if (list.length === 0) throw new Error(`tenant ${plan.slug}: no ${what} for searcher ${searcher.key}`);
    return list[Math.floor(random() * list.length)] as T;
  };
  const ranks = (ok: (df: number, vdf: number) => boolean) => {
    const out: number[] = [];
    for (let r = 0; r < corpus.words.length; r++)
      if (ok(stats.df[r] as number, v.df[r] as number)) out.push(r);
    return out;
  };
  const common = Array.from({ length: 50 }, (_, r) => r);
  const lo = stats.messages * 0.0005;
  const hi = stats.messages * 0.005;
  const rarer = ranks((df, vdf) => df >= lo && df <= hi && vdf >= 1);
  const rare = ranks((df, vdf) => df >= 1 && df <= 20 && vdf >= 1);
  const myRooms = Array.from({ length: plan.rooms }, (_, r) => r).filter((r) => isMember(searcher, r));
  const word = (kind: Kind, rank: number, extra: Partial<Query> = {}): Query => ({
    kind,
    q: corpus.words[rank] as string,
    visibleDf: v.df[rank] as number,
    ...extra,
  });
  const out: Query[] = [];
  for (let i = 0; i < perKind; i++) {
    for (const kind of KINDS) {
      switch (kind) {
        case "common":
          out.push(word(kind, choose(common, "common word")));
          break;
        case "rarer":
          out.push(word(kind, choose(rarer, "rarer word")));
          break;
        case "rare":
          out.push(word(kind, choose(rare, "rare word")));
          break;
        case "phrase":
          out.push({ kind, q: choose(v.phrases, "phrase"), visibleDf: 0 });
          break;
        case "room":
          out.push(word(kind, choose(common, "common word"), { room: choose(myRooms, "room") }));
          break;
        case "author":
          out.push(
            word(kind, choose(common, "common word"), { author: Math.floor(random() * plan.authors) }),
          );
          break;
      }
    }
  }
  return out;
}

export interface KindResult {
  latency: LatencySummary | null;
  /** Mean hits returned (the route returns at most 50) and mean messages of the searcher's rooms
   * holding the word. */
  hits: number;
  visibleDf: number;
}

export interface SearchRun {
  kinds: Map<Kind, KindResult>;
  all: LatencySummary | null;
  me: LatencySummary | null;
  errors: Map<string, number>;
  seconds: number;
  clientCpu: number;
  serverCpu: number;
}

const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

async function timedGet(
  url: string,
  token: string,
): Promise<{ ms: number; body: unknown; error: string | null }> {
  const t = performance.now();
  try {
    const res = await fetch(url, {
      headers: { "Cf-Access-Jwt-Assertion": token },
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    const ms = performance.now() - t;
    if (!res.ok) return { ms, body: null, error: `HTTP ${res.status}` };
    return { ms, body: JSON.parse(text), error: null };
  } catch (err) {
    return { ms: performance.now() - t, body: null, error: err instanceof Error ? err.name : String(err) };
  }
}

/**
 * Runs `queries` as `searcher` one request at a time, each right after a `GET /api/me`; a warm-up of
 * one round of every kind first (not measured). The room and author of a filtered query are the
 * tenant's, by index, on this server.
 */
export async function runQueries(
  server: Server,
  live: TenantLive,
  searcher: SearcherPlan,
  queries: Query[],
): Promise<SearchRun> {
  const base = server.baseUrl;
  const user = live.searchers.get(searcher.key);
  if (!user) throw new Error(`no searcher ${searcher.key} in ${live.plan.slug}`);
  const url = (q: Query) => {
    const params = new URLSearchParams({ q: q.q });
    if (q.room !== undefined) params.set("room", (live.rooms[q.room] as { id: string }).id);
    if (q.author !== undefined) params.set("author", (live.authors[q.author] as { id: string }).id);
    return `${base}/api/search?${params}`;
  };
  const me = `${base}/api/me`;
  // Warm-up, not measured: the last round of kinds, so the measured queries start cold alike.
  for (const q of queries.slice(-KINDS.length)) {
    await timedGet(me, user.token);
    await timedGet(url(q), user.token);
  }
  const samples = new Map(KINDS.map((k) => [k, new Samples()]));
  const hits = new Map(KINDS.map((k) => [k, { hits: 0, df: 0, n: 0 }]));
  const all = new Samples();
  const meSamples = new Samples();
  const errors = new Map<string, number>();
  const cpu0 = process.cpuUsage();
  const w0 = workerdSnapshot(server);
  const t0 = performance.now();
  for (const q of queries) {
    const m = await timedGet(me, user.token);
    if (m.error) bump(errors, `me ${m.error}`);
    else meSamples.push(m.ms);
    const r = await timedGet(url(q), user.token);
    if (r.error) {
      bump(errors, `${q.kind} ${r.error}`);
      continue;
    }
    (samples.get(q.kind) as Samples).push(r.ms);
    all.push(r.ms);
    const h = hits.get(q.kind) as { hits: number; df: number; n: number };
    h.hits += (r.body as { hits: unknown[] }).hits.length;
    h.df += q.visibleDf;
    h.n++;
  }
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const w1 = workerdSnapshot(server);
  const kinds = new Map<Kind, KindResult>();
  for (const k of KINDS) {
    const h = hits.get(k) as { hits: number; df: number; n: number };
    kinds.set(k, {
      latency: (samples.get(k) as Samples).summary(),
      hits: h.n > 0 ? h.hits / h.n : 0,
      visibleDf: h.n > 0 ? h.df / h.n : 0,
    });
  }
  return {
    kinds,
    all: all.summary(),
    me: meSamples.summary(),
    errors,
    seconds: ms / 1000,
    clientCpu: (cpu.user + cpu.system) / 1000 / ms,
    serverCpu: (w1.ticks - w0.ticks) / 100 / (ms / 1000),
  };
}
