/**
 * @module The room's history in R2 (docs/architecture.md, decision 4): every event is sealed, soon
 * after it is appended, into a gzip NDJSON segment in the tenant's jurisdiction's bucket, one
 * `segmentLine` per event (protocol/chain.ts: seq, digest, chain, the evidence of its state, the
 * event). The room's SQLite then keeps, newest first: the hot window with its JSON, slim rows back
 * to the command window, and nothing older. This module seals, rewrites, and reads back.
 *
 * Invariants:
 * - Segments cover seqs 1..`sealedSeq` contiguously, each seq in exactly one (`segments`, keyed by
 *   first seq). A range is sealed when `segmentEvents` events are unsealed, or when the oldest of
 *   them is `sealAfterMs` old: then the range is everything unsealed, shorter than a full one, and
 *   final (a later event starts the next range). The range is recorded before its upload, so an
 *   upload retried after a crash writes the same range under the same key.
 * - Past the hot window (`coldSeq`) an event's row loses its JSON; past the command window (the
 *   log's `floor`) the row goes. Both move in whole segments, and the floor only over segments that
 *   are clean and of the current format, so what a row says is in R2 before the row goes.
 * - A change to a sealed event (deletion, retention) marks its segment dirty, and the alarm
 *   rewrites it: from the rows, and for events without a row from their lines with the redactions
 *   that apply (the retention watermark; `redactions`, messages deleted below the floor). Readers
 *   apply the same at once, so nothing a delete or retention removed is served while a rewrite is
 *   pending. Segments are never deleted (retention's tombstones stay in them), only rewritten.
 */
import type { Limits } from "../config/limits.ts";
import { type ExportRow, parseSegmentLine, recommit, segmentLine, stateOf } from "../protocol/chain.ts";
import type { RoomEvent } from "../protocol/index.ts";
import { type RoomLog, type StoredRow, scrubbedJson, type TargetRow, tombstoneJson } from "./room-log.ts";
import { segmentKey } from "./room-schema.ts";

interface Segment {
  from: number;
  to: number;
  key: string;
  dirty: number;
  lastTs: number;
}

/** A segment's line as read: its row form and its event, parsed once. */
interface SegmentLine {
  row: ExportRow;
  event: RoomEvent;
}

/** What readers apply to the lines of events without a row, taken in one synchronous step. */
interface Redactions {
  expiredThrough: number;
  deleted: ReadonlySet<number>;
}

/** Cached decoded segments: history paging reads the same segment page after page. */
const CACHE_SEGMENTS = 4;
/** Segments one pass seals: a room that was idle through an R2 outage catches up in a few passes. */
const SEAL_PER_PASS = 8;
/** Rows one pass drops past the command window, in one transaction (at least one segment's). */
const PRUNE_PER_PASS = 10_000;

export interface ColdArchiveDeps {
  storage: DurableObjectStorage;
  log: RoomLog;
  limits: Limits;
  /** The tenant's jurisdiction's files bucket (read when used: the room learns its tenant late). */
  bucket: () => R2Bucket;
  /** `<tenant>/rooms/<room>`. */
  prefix: () => string;
}

export class ColdArchive {
  readonly #deps: ColdArchiveDeps;
  readonly #sql: SqlStorage;
  readonly #cache = new Map<string, Map<number, SegmentLine>>();
  /** Bumped when a key is rewritten, so a read that raced the rewrite never caches the old text. */
  readonly #generation = new Map<string, number>();
  /** Sealing and rewriting run one at a time (the alarm, and tests calling in with their clock). */
  #exclusive: Promise<unknown> = Promise.resolve();
  /** `meta` values read since they were last written: every socket's open asks for `coldSeq`. */
  readonly #metaRead = new Map<string, string | undefined>();

  constructor(deps: ColdArchiveDeps) {
    this.#deps = deps;
    this.#sql = deps.storage.sql;
  }

  /** Every event through this seq has left the hot window: its row (if any) has no JSON. */
  get coldSeq(): number {
    return Number(this.#meta("cold_seq") ?? 0);
  }

  /** Every event through this seq is in a segment. */
  get sealedSeq(): number {
    return Number(this.#meta("sealed_seq") ?? 0);
  }

  // ---- sealing, the hot window, the command window ------------------------------------------

  /** When the alarm should come for this module's work (null: nothing to do or wait for): never
   * before the backoff after a failed upload ends. */
  nextDue(now: number): number | null {
    const due = this.#due(now);
    return due === null ? null : Math.max(due, this.retryAt);
  }

  #due(now: number): number | null {
    const { log, limits } = this.#deps;
    const sealed = this.sealedSeq;
    const unsealed = log.lastSeq - sealed;
    if (this.#meta("sealing") !== undefined || unsealed >= limits.segmentEvents) return now;
    if (this.#coldTarget() > this.coldSeq || this.#floorTarget() > log.floor || this.hasDirty()) return now;
    if (unsealed > 0) return (log.tsOf(sealed + 1) ?? now) + limits.sealAfterMs;
    return null;
  }

  /** After a failed upload or read of R2, the alarm leaves sealing and rewriting alone until this
   * time (1 s, 2 s, 4 s … up to `outboxMaxBackoffMs`), as it does the queue: an outage must not
   * turn every room's alarm into a loop. 0 when none failed. */
  get retryAt(): number {
    return Number(this.#deps.storage.kv.get("segments_retry_at") ?? 0);
  }

  async #backingOff<T>(work: () => Promise<T>): Promise<T> {
    const kv = this.#deps.storage.kv;
    try {
      const result = await work();
      if (kv.get("segments_attempts") !== undefined) {
        kv.delete("segments_attempts");
        kv.delete("segments_retry_at");
      }
      return result;
    } catch (err) {
      const attempts = Number(kv.get("segments_attempts") ?? 0) + 1;
      kv.put("segments_attempts", attempts);
      kv.put(
        "segments_retry_at",
        Date.now() + Math.min(this.#deps.limits.outboxMaxBackoffMs, 1000 * 2 ** (attempts - 1)),
      );
      throw err;
    }
  }

  /**
   * What is due at `now`: seals ranges (a full one whenever `segmentEvents` are unsealed, else all
   * of them once the oldest is `sealAfterMs` old), drops the JSON of events past the hot window,
   * drops the rows of events past the command window. Idempotent.
   */
  maintain(now: number): Promise<void> {
    return this.#runExclusive(() =>
      this.#backingOff(async () => {
        for (let i = 0; i < SEAL_PER_PASS; i++) {
          const range = this.#dueRange(now);
          if (!range) break;
          await this.#seal(range);
        }
        this.#dropJson();
        const floor = this.#floorTarget();
        if (floor > this.#deps.log.floor) this.#deps.log.pruneThrough(floor);
      }),
    );
  }

  #dueRange(now: number): { from: number; to: number } | null {
    const pending = this.#meta("sealing");
    if (pending !== undefined) {
      const [from = 0, to = 0] = pending.split("-").map(Number);
      return { from, to };
    }
    const { log, limits } = this.#deps;
    const sealed = this.sealedSeq;
    const unsealed = log.lastSeq - sealed;
    if (unsealed >= limits.segmentEvents) return { from: sealed + 1, to: sealed + limits.segmentEvents };
    const oldest = unsealed > 0 ? log.tsOf(sealed + 1) : undefined;
    if (oldest !== undefined && oldest + limits.sealAfterMs <= now)
      return { from: sealed + 1, to: log.lastSeq };
    return null;
  }

  /**
   * Writes one range to R2 from its rows and then, in one transaction, records the segment. The
   * range is recorded first (`sealing`), so after a crash the next pass writes exactly it again.
   * Rows changed while the upload ran (deleted, expired) leave the new segment dirty.
   */
  async #seal(range: { from: number; to: number }): Promise<void> {
    const { log, storage } = this.#deps;
    this.#setMeta("sealing", `${range.from}-${range.to}`);
    const rows = log.rowsIn(range.from, range.to);
    if (rows.length !== range.to - range.from + 1 || rows.some((r) => r.json === "")) {
      throw new Error(`range ${range.from}-${range.to} is not whole in the log`);
    }
    const key = segmentKey(this.#deps.prefix(), range.from, range.to);
    await this.#put(key, rows, range);
    const written = new Map(rows.map((r) => [r.seq, r.json]));
    const { lastTs, editTargets } = summary(rows);
    storage.transactionSync(() => {
      if (this.sealedSeq < range.to) {
        const changed = log.rowsIn(range.from, range.to).filter((r) => written.get(r.seq) !== r.json).length;
        this.#sql.exec(
          "INSERT INTO segments (from_seq, to_seq, object_key, dirty, format, last_ts, edit_targets) VALUES (?, ?, ?, ?, 2, ?, ?)",
          range.from,
          range.to,
          key,
          changed,
          lastTs,
          JSON.stringify(editTargets),
        );
        this.#setMeta("sealed_seq", String(range.to));
      }
      this.#metaRead.delete("sealing");
      this.#sql.exec("DELETE FROM meta WHERE key = 'sealing'");
    });
  }

  /** The last whole segment whose events are all past the hot window. */
  #coldTarget(): number {
    const { log, limits } = this.#deps;
    return this.#alignDown(Math.min(this.sealedSeq, log.lastSeq - limits.hotEvents));
  }

  #dropJson(): void {
    const cold = this.coldSeq;
    const target = this.#coldTarget();
    if (target <= cold) return;
    this.#deps.storage.transactionSync(() => {
      // A tombstone keeps its JSON: it is small, and it is what readers serve for it.
      this.#sql.exec(
        "UPDATE events SET json = '' WHERE seq > ? AND seq <= ? AND kind != 'expired'",
        cold,
        target,
      );
      this.#setMeta("cold_seq", String(target));
    });
  }

  /**
   * Where the floor may move now: the last whole segment past the command window (and past the
   * hot window), stopping before the first segment that is dirty or of the old format (its rows
   * still hold what R2 lacks), and at most `PRUNE_PER_PASS` rows on.
   */
  #floorTarget(): number {
    const { log, limits } = this.#deps;
    const floor = log.floor;
    let target = this.#alignDown(Math.min(this.coldSeq, log.lastSeq - limits.commandWindowEvents));
    if (target <= floor) return floor;
    const unclean = this.#sql
      .exec<{ f: number | null }>(
        "SELECT MIN(from_seq) AS f FROM segments WHERE from_seq > ? AND from_seq <= ? AND (dirty > 0 OR format != 2)",
        floor,
        target,
      )
      .one().f;
    if (unclean !== null) target = unclean - 1;
    if (target - floor > PRUNE_PER_PASS) {
      const capped = this.#alignDown(floor + PRUNE_PER_PASS);
      target =
        capped > floor
          ? capped
          : (this.#sql
              .exec<{ t: number }>("SELECT to_seq AS t FROM segments WHERE from_seq = ?", floor + 1)
              .toArray()[0]?.t ?? floor);
    }
    return Math.max(target, floor);
  }

  /** The end of the last whole segment at or before `seq` (segments are contiguous from 1). */
  #alignDown(seq: number): number {
    if (seq <= 0) return 0;
    const seg = this.#sql
      .exec<{ from_seq: number; to_seq: number }>(
        "SELECT from_seq, to_seq FROM segments WHERE from_seq <= ? ORDER BY from_seq DESC LIMIT 1",
        seq,
      )
      .toArray()[0];
    if (!seg) return 0;
    return seg.to_seq <= seq ? seg.to_seq : seg.from_seq - 1;
  }

  // ---- rewriting ------------------------------------------------------------------------------

  hasDirty(): boolean {
    return this.#sql.exec("SELECT 1 FROM segments WHERE dirty > 0 LIMIT 1").toArray().length > 0;
  }

  /** Segments waiting to be rewritten. */
  get dirtySegments(): number {
    return this.#sql.exec<{ n: number }>("SELECT COUNT(*) AS n FROM segments WHERE dirty > 0").one().n;
  }

  /**
   * Rewrites the oldest dirty segment in the current format: each event from its row when it has
   * one (its JSON, or for a slim row the segment's line with the row's deletion applied, and the
   * row's commitments), else from its line with the redactions that apply. Returns whether there
   * was one. A segment dirtied again while this ran stays dirty for the next pass.
   */
  rewriteOneDirty(): Promise<boolean> {
    return this.#runExclusive(() =>
      this.#backingOff(async () => {
        const seg = this.#segments(
          "SELECT from_seq, to_seq, object_key, dirty, last_ts FROM segments WHERE dirty > 0 ORDER BY from_seq LIMIT 1",
        )[0];
        if (!seg) return false;
        const rows = new Map(this.#deps.log.rowsIn(seg.from, seg.to).map((r) => [r.seq, r]));
        const redactions = this.#redactions();
        const whole = rows.size === seg.to - seg.from + 1 && [...rows.values()].every((r) => r.json !== "");
        const old = whole ? new Map<number, SegmentLine>() : await this.#load(seg);
        const lines: ExportRow[] = [];
        for (let seq = seg.from; seq <= seg.to; seq++) {
          const row = rows.get(seq);
          if (row && row.json !== "") {
            lines.push(row);
            continue;
          }
          const line = old.get(seq);
          if (!line) throw new Error(`segment ${seg.key} lacks event ${seq}`);
          if (row) lines.push({ ...row, json: row.deleted ? scrubbedJson(line.row.json) : line.row.json });
          else lines.push(fullLine(seg, redact(line, redactions)).row);
        }
        await this.#put(seg.key, lines, seg);
        const { lastTs, editTargets } = summary(lines);
        this.#deps.storage.transactionSync(() => {
          this.#sql.exec(
            "UPDATE segments SET dirty = CASE WHEN dirty = ? THEN 0 ELSE dirty END, format = 2, last_ts = ?, edit_targets = ? WHERE from_seq = ?",
            seg.dirty,
            lastTs,
            JSON.stringify(editTargets),
            seg.from,
          );
          // A deletion below the floor is done once no segment that may hold it or its edits is dirty.
          this.#sql.exec(
            "DELETE FROM redactions WHERE NOT EXISTS (SELECT 1 FROM segments WHERE dirty > 0 AND to_seq >= redactions.seq)",
          );
        });
        return true;
      }),
    );
  }

  // ---- reading --------------------------------------------------------------------------------

  /**
   * Events with seq in (after, until], ascending, at most `limit`, whole: rows of the log with slim
   * ones filled in from their segments, and events older than the command window from theirs.
   * What the rows and the redactions say is taken before any read from R2.
   */
  async readAfter(after: number, limit: number, until = this.#deps.log.lastSeq): Promise<StoredRow[]> {
    const { log } = this.#deps;
    const floor = log.floor;
    const rows =
      after + limit > floor && until > floor ? log.rowsAfter(Math.max(after, floor), limit, until) : [];
    const redactions = this.#redactions();
    const belowTo = Math.min(floor, until, after + limit);
    const below = after < belowTo ? await this.#linesIn(after + 1, belowTo, redactions) : [];
    return [...below, ...(await this.fill(rows))].slice(0, limit);
  }

  /** Events with seq < before, the newest `limit` of them, ascending, whole (as `readAfter`). */
  async readBefore(before: number, limit: number): Promise<StoredRow[]> {
    const { log } = this.#deps;
    const floor = log.floor;
    const rows = log.rowsBefore(before, limit);
    const redactions = this.#redactions();
    const to = Math.min(before - 1, floor);
    const need = limit - rows.length;
    const below = need > 0 && to >= 1 ? await this.#linesIn(Math.max(1, to - need + 1), to, redactions) : [];
    return [...below, ...(await this.fill(rows))];
  }

  /** Fills in the JSON of slim rows (json ''), reading their segments; deleted ones come back
   * scrubbed even before their segment is rewritten. */
  async fill<T extends { seq: number; json: string; deleted: boolean }>(rows: T[]): Promise<T[]> {
    const slim = rows.filter((r) => r.json === "");
    if (slim.length === 0) return rows;
    const lines = new Map<number, SegmentLine>();
    for (const seg of this.#segmentsOver(slim[0]?.seq ?? 0, slim.at(-1)?.seq ?? 0)) {
      for (const [seq, line] of await this.#load(seg)) lines.set(seq, line);
    }
    return rows.map((r) => {
      if (r.json !== "") return r;
      const line = lines.get(r.seq);
      if (line === undefined) throw new Error(`event ${r.seq} is in no segment`);
      return { ...r, json: r.deleted ? scrubbedJson(line.row.json) : line.row.json };
    });
  }

  /** An event older than the command window, read from its segment, as the command rules see it. */
  async targetOf(seq: number): Promise<TargetRow | undefined> {
    if (seq > this.#deps.log.floor) return this.#deps.log.target(seq);
    const [row] = await this.#linesIn(seq, seq, this.#redactions());
    if (!row) return undefined;
    const event = JSON.parse(row.json) as RoomEvent;
    return {
      seq,
      kind: event.kind,
      authorId: event.author.id,
      threadRoot: event.kind === "message" ? (event.threadRoot ?? null) : null,
      deleted: row.deleted,
    };
  }

  /** When each of these events was written: from the rows, or from the segments for events older
   * than the command window. */
  async timesOf(seqs: readonly number[]): Promise<Map<number, number>> {
    const { log } = this.#deps;
    const times = log.timesOf(seqs);
    const floor = log.floor;
    for (const seq of new Set(seqs)) {
      if (times.has(seq) || seq > floor) continue;
      const [seg] = this.#segmentsOver(seq, seq);
      const line = seg ? (await this.#load(seg)).get(seq) : undefined;
      if (line) times.set(seq, line.event.ts);
    }
    return times;
  }

  /** The first seq after `after` (up to `until`) written at or after `ts`, or null. Below the floor
   * this is found to the segment (its first seq, or `after + 1`): a few older events may follow. */
  firstSeqSince(after: number, until: number, ts: number): number | null {
    const { log } = this.#deps;
    const floor = log.floor;
    if (after < floor) {
      const seg = this.#sql
        .exec<{ from_seq: number }>(
          `SELECT from_seq FROM segments WHERE from_seq <= ? AND to_seq > ? AND last_ts >= ? AND from_seq >= COALESCE(
             (SELECT MAX(from_seq) FROM segments WHERE from_seq <= ?), 0) ORDER BY from_seq LIMIT 1`,
          floor,
          after,
          ts,
          after + 1,
        )
        .toArray()[0];
      if (seg) {
        const first = Math.max(after + 1, seg.from_seq);
        return first <= until ? first : null;
      }
    }
    return log.firstSeqSince(Math.max(after, floor), until, ts);
  }

  /**
   * Retention below the floor: the seq through which every event older than the command window
   * (from the retention watermark on) was written before `cutoffTs`. A segment whose last event is
   * older than the cutoff is passed on its index row alone; the one the cutoff falls in is read.
   */
  async expiryPoint(cutoffTs: number): Promise<number> {
    const { log } = this.#deps;
    const floor = log.floor;
    let through = log.expiredThrough;
    while (through < floor) {
      const segs = this.#segmentsOver(through + 1, floor, 100);
      if (segs.length === 0) return through;
      for (const seg of segs) {
        const end = Math.min(seg.to, floor);
        if (seg.lastTs > 0 && seg.lastTs < cutoffTs) {
          through = end;
          continue;
        }
        const lines = await this.#load(seg);
        for (let seq = through + 1; seq <= end; seq++) {
          const line = lines.get(seq);
          if (!line || line.event.ts >= cutoffTs) return through;
          through = seq;
        }
      }
    }
    return through;
  }

  /** Deletes every segment object (the room is being erased). */
  async deleteAll(): Promise<void> {
    for (const seg of this.#segments("SELECT from_seq, to_seq, object_key, dirty, last_ts FROM segments")) {
      await this.#deps.bucket().delete(seg.key);
    }
  }

  // ---- internals ------------------------------------------------------------------------------

  /** Lines of [from, to], all older than the command window, with the redactions applied. */
  async #linesIn(from: number, to: number, redactions: Redactions): Promise<StoredRow[]> {
    const out: StoredRow[] = [];
    for (const seg of this.#segmentsOver(from, to)) {
      const lines = await this.#load(seg);
      for (let seq = Math.max(from, seg.from); seq <= Math.min(to, seg.to); seq++) {
        const line = lines.get(seq);
        if (!line) throw new Error(`segment ${seg.key} lacks event ${seq}`);
        const { row, event } = fullLine(seg, redact(line, redactions));
        out.push({
          ...row,
          deleted: stateOf(event) !== "plain",
          target: "target" in event ? event.target : null,
        });
      }
    }
    if (out.length !== to - from + 1) throw new Error(`events ${from}-${to} are not all in segments`);
    return out;
  }

  #redactions(): Redactions {
    const { log } = this.#deps;
    return { expiredThrough: log.expiredThrough, deleted: log.redactions() };
  }

  /** The segments holding any seq of [from, to], in order, the first `limit` of them (-1: all).
   * The first is the last one starting at or before `from`: keyed by first seq, this reads the
   * index, not the table. */
  #segmentsOver(from: number, to: number, limit = -1): Segment[] {
    return this.#segments(
      `SELECT from_seq, to_seq, object_key, dirty, last_ts FROM segments
       WHERE from_seq <= ? AND to_seq >= ? AND from_seq >= COALESCE((SELECT MAX(from_seq) FROM segments WHERE from_seq <= ?), 0)
       ORDER BY from_seq LIMIT ?`,
      to,
      from,
      from,
      limit,
    );
  }

  #segments(query: string, ...params: SqlStorageValue[]): Segment[] {
    return this.#sql
      .exec<{ from_seq: number; to_seq: number; object_key: string; dirty: number; last_ts: number }>(
        query,
        ...params,
      )
      .toArray()
      .map((r) => ({ from: r.from_seq, to: r.to_seq, key: r.object_key, dirty: r.dirty, lastTs: r.last_ts }));
  }

  async #put(key: string, rows: readonly ExportRow[], range: { from: number; to: number }): Promise<void> {
    const body = new Blob([rows.map(segmentLine).join("\n"), "\n"])
      .stream()
      .pipeThrough(new CompressionStream("gzip"));
    await this.#deps.bucket().put(key, await new Response(body).arrayBuffer(), {
      httpMetadata: { contentType: "application/x-ndjson", contentEncoding: "gzip" },
      customMetadata: { format: "2", from: String(range.from), to: String(range.to) },
    });
    this.#generation.set(key, (this.#generation.get(key) ?? 0) + 1);
    this.#cache.delete(key);
  }

  async #load(seg: Segment): Promise<Map<number, SegmentLine>> {
    const cached = this.#cache.get(seg.key);
    if (cached) return cached;
    const generation = this.#generation.get(seg.key) ?? 0;
    const object = await this.#deps.bucket().get(seg.key);
    if (!object) throw new Error(`segment ${seg.key} is missing from R2`);
    const text = await new Response(object.body.pipeThrough(new DecompressionStream("gzip"))).text();
    const lines = new Map<number, SegmentLine>();
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const row = parseSegmentLine(line);
      lines.set(row.seq, { row, event: JSON.parse(row.json) as RoomEvent });
    }
    if ((this.#generation.get(seg.key) ?? 0) !== generation) return lines;
    this.#cache.set(seg.key, lines);
    while (this.#cache.size > CACHE_SEGMENTS) {
      const oldest = this.#cache.keys().next().value;
      if (oldest === undefined) break;
      this.#cache.delete(oldest);
    }
    return lines;
  }

  #runExclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#exclusive.then(work, work);
    this.#exclusive = run.catch(() => undefined);
    return run;
  }

  #meta(key: string): string | undefined {
    if (this.#metaRead.has(key)) return this.#metaRead.get(key);
    const value = this.#sql
      .exec<{ value: string }>("SELECT value FROM meta WHERE key = ?", key)
      .toArray()[0]?.value;
    this.#metaRead.set(key, value);
    return value;
  }

  #setMeta(key: string, value: string): void {
    // Forgotten, not replaced: a transaction that rolls back must not leave its value here.
    this.#metaRead.delete(key);
    this.#sql.exec(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
  }
}

/** A line older than the command window must carry its commitments (segments of the old format are
 * rewritten before the floor passes them). */
function fullLine(seg: Segment, line: SegmentLine): SegmentLine {
  if (line.row.digest === "") throw new Error(`segment ${seg.key} is of the old format below the floor`);
  return line;
}

/**
 * A line as the redactions say it is now: past the retention watermark an expired tombstone (its
 * metaHash recomputed from the evidence the line carries); a plain message deleted below the floor,
 * or an edit of one, scrubbed (its contentHash recomputed from its nonce, which goes). Scheme-1
 * events carry no evidence and keep their digest alone, as their rows do.
 */
function redact(line: SegmentLine, redactions: Redactions): SegmentLine {
  const { row, event } = line;
  const state = stateOf(event);
  if (row.seq <= redactions.expiredThrough && state !== "expired") {
    const json = tombstoneJson(row.seq, event.ts);
    const metaHash = row.scheme === 2 ? recommitted(line).metaHash : null;
    return { row: { ...row, json, nonce: null, contentHash: null, metaHash }, event: JSON.parse(json) };
  }
  const deleted =
    state === "plain" &&
    ((event.kind === "message" && redactions.deleted.has(row.seq)) ||
      (event.kind === "edit" && redactions.deleted.has(event.target)));
  if (!deleted) return line;
  const json = scrubbedJson(row.json);
  const contentHash = row.scheme === 2 ? recommitted(line).contentHash : null;
  return { row: { ...row, json, nonce: null, contentHash }, event: JSON.parse(json) };
}

function recommitted(line: SegmentLine): { metaHash: string; contentHash: string | null } {
  const { row, event } = line;
  const evidence =
    row.nonce !== null
      ? { nonce: row.nonce }
      : row.contentHash !== null
        ? { contentHash: row.contentHash }
        : null;
  if (evidence === null) throw new Error(`event ${row.seq} carries no evidence to redact it from`);
  const c = recommit(event, evidence);
  if (!c.ok) throw new Error(`event ${row.seq} does not recommit: ${c.reason}`);
  return { metaHash: c.metaHash, contentHash: c.contentHash };
}

/** What the segments index keeps of a segment's lines: its last event's time (retention and the D1
 * history's window skip whole segments by it) and the messages its edits target (a deletion below
 * the floor finds the edits it must scrub by it). */
function summary(rows: readonly ExportRow[]): { lastTs: number; editTargets: number[] } {
  const targets = new Set<number>();
  let lastTs = 0;
  for (const r of rows) {
    const event = JSON.parse(r.json) as RoomEvent;
    lastTs = event.ts;
    if (event.kind === "edit") targets.add(event.target);
  }
  return { lastTs, editTargets: [...targets] };
}
