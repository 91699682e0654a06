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
}
