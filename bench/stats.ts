/**
 * @module Latency samples: a growable Float64Array with a hard cap (reservoir sampling past it), and
 * nearest-rank percentiles.
 */

const CAP = 4_000_000;

export class Samples {
  buf = new Float64Array(65_536);
  n = 0;
  seen = 0;

  push(x: number): void {
    this.seen++;
    if (this.n < this.buf.length) {
      this.buf[this.n++] = x;
      return;
    }
    if (this.buf.length < CAP) {
      const next = new Float64Array(Math.min(CAP, this.buf.length * 2));
      next.set(this.buf);
      this.buf = next;
      this.buf[this.n++] = x;
      return;
    }
    const j = Math.floor(Math.random() * this.seen);
    if (j < CAP) this.buf[j] = x;
  }

  summary(): LatencySummary | null {
    if (this.n === 0) return null;
    const sorted = this.buf.slice(0, this.n).sort();
    const at = (q: number) => sorted[Math.min(this.n - 1, Math.max(0, Math.ceil(q * this.n) - 1))] as number;
    return {
      p50: at(0.5),
      p95: at(0.95),
      p99: at(0.99),
      max: sorted[this.n - 1] as number,
      count: this.seen,
    };
  }
}

export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  max: number;
  count: number;
}

/** A growable byte array indexed by a message counter. */
export class Bytes {
  a = new Uint8Array(256);

  get(i: number): number {
    return i < this.a.length ? (this.a[i] as number) : 0;
  }

  set(i: number, v: number): void {
    if (i >= this.a.length) {
      let len = this.a.length * 2;
      while (len <= i) len *= 2;
      const next = new Uint8Array(len);
      next.set(this.a);
      this.a = next;
    }
    this.a[i] = v;
  }
}

/** A growable float array indexed by a message counter. */
export class Floats {
  a = new Float64Array(256);

  get(i: number): number {
    return i < this.a.length ? (this.a[i] as number) : 0;
  }

  set(i: number, v: number): void {
    if (i >= this.a.length) {
      let len = this.a.length * 2;
      while (len <= i) len *= 2;
      const next = new Float64Array(len);
      next.set(this.a);
      this.a = next;
    }
    this.a[i] = v;
  }
}
