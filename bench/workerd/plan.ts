/**
 * @module The types the pipeline bench's two sides share: its Node side (bench/pipeline-counts.ts)
 * and the harness in workerd (pipeline-harness.ts, ledger.ts), which is copied with this file into
 * the checkout it measures. Types only: nothing here runs.
 */

/** What the harness does (see pipeline-harness.ts). */
export interface HarnessPlan {
  design: string;
  rooms: number;
  members: number;
  fill: number;
  burst: number;
  paced: number;
  intervalMs: number;
  window: number;
  edits: number;
  reactions: number;
  deletes: number;
  /** Every member but the sender holds a room socket and sends `{"type":"read","seq"}` for each
   * frame of events it receives, as the web client does while a room is open. */
  readersMark: boolean;
  texts: string[];
}

/** One line of the ledger: a store, its owner (object class or binding), the table or resource,
 * the operation, and the step that did it. */
export interface Tally {
  store: string;
  owner: string;
  table: string;
  op: string;
  via: string;
  calls: number;
  rowsRead: number;
  rowsWritten: number;
  bytes: number;
  /** "DO duration" lines only: milliseconds an object was busy (see ledger.ts). */
  ms: number;
}

/** What the stores hold at a moment of the run. */
export interface Sizes {
  /** SQLite bytes of the room objects and of the search shards. */
  objects: Record<string, number>;
  /** The rooms' events, and how many of them still have a row (the new design's floor drops the
   * rows of events older than its command window). */
  rooms: { events: number; rowsHeld: number };
  /** Messages the search shards hold. */
  searchDocs: number;
  d1: Record<string, number>;
  r2: { objects: number; bytes: number };
}

export interface PhaseResult {
  name: string;
  /** Commands sent in the phase (messages, edits, reactions, deletions), or rows trimmed. */
  units: number;
  seconds: number;
  tallies: Tally[];
  sizesBefore: Sizes;
  sizesAfter: Sizes;
}

export interface HarnessResult {
  design: string;
  phases: PhaseResult[];
  checks: Record<string, number>;
  seconds: number;
  /** The limits the harness ran with (PARLEY_* bindings). */
  vars: Record<string, string>;
}
