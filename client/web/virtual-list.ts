/**
 * @module A virtualised list of variable-height rows: only the rows near the viewport exist in the
 * DOM, so a room of 10,000+ messages scrolls like one of 50. Heights start as estimates and are
 * replaced by measurements as rows are rendered; offsets are prefix sums over them.
 *
 * Keeping the reader's place is the hard part of a chat list. Two rules do it:
 * - at the bottom, stay at the bottom (new messages, images that finish loading);
 * - otherwise keep the first visible row where it is on screen, whatever changed above it
 *   (a history page prepended, a row above re-measured).
 */
export interface ListRow {
  key: string;
}

export interface VirtualListOptions<R extends ListRow> {
  viewport: HTMLElement;
  estimate(row: R): number;
  render(row: R): HTMLElement;
  /** Called after each render pass with the index range that is on screen (plus overscan). */
  onVisible?(first: number, last: number): void;
  overscanPx?: number;
}

/** How close to the bottom still counts as "at the bottom". */
const BOTTOM_SLACK_PX = 24;

export class VirtualList<R extends ListRow> {
  readonly #o: VirtualListOptions<R>;
  readonly #canvas: HTMLElement;
  #rows: R[] = [];
  #index = new Map<string, number>();
  #heights = new Map<string, number>();
  #offsets: number[] = [0];
  #mounted = new Map<string, HTMLElement>();
  #stuck = true;
  #frame = 0;
  #ignoreScroll = false;

  constructor(options: VirtualListOptions<R>) {
    this.#o = options;
    this.#canvas = document.createElement("div");
    this.#canvas.className = "vl-canvas";
    options.viewport.appendChild(this.#canvas);
    options.viewport.addEventListener("scroll", () => {
      if (this.#ignoreScroll) {
        this.#ignoreScroll = false;
      } else {
        this.#stuck = this.#atBottom();
      }
      this.#schedule();
    });
    new ResizeObserver(() => this.#schedule()).observe(options.viewport);
  }

  get rows(): readonly R[] {
    return this.#rows;
  }

  /** Whether the view follows new rows at the bottom. */
  get stuck(): boolean {
    return this.#stuck;
  }

  /** Replaces the rows (keys identify rows across calls), keeping the reader's place. */
  setRows(rows: R[]): void {
    const anchor = this.#stuck ? null : this.#anchor();
    this.#rows = rows;
    this.#index = new Map(rows.map((r, i) => [r.key, i]));
    for (const [key, el] of this.#mounted) {
      if (!this.#index.has(key)) {
        el.remove();
        this.#mounted.delete(key);
      }
    }
    this.#layout();
    this.#restore(anchor);
    this.#paint();
  }

  /** Renders one row again (its content changed), keeping its place. */
  refresh(key: string): void {
    const el = this.#mounted.get(key);
    const i = this.#index.get(key);
    if (!el || i === undefined) return;
    const fresh = this.#o.render(this.#rows[i] as R);
    fresh.dataset.key = key;
    fresh.style.top = el.style.top;
    el.replaceWith(fresh);
    this.#mounted.set(key, fresh);
    this.#schedule();
  }

  /** Something inside a row changed its size (an image loaded, an editor opened): measure again. */
  remeasure(): void {
    this.#schedule();
  }

  scrollToBottom(): void {
    this.#stuck = true;
    this.#setScroll(this.#total() - this.#o.viewport.clientHeight);
    this.#paint();
  }

  /** Scrolls a row to the middle of the viewport and returns its element once rendered. */
  scrollToKey(key: string): HTMLElement | undefined {
    const i = this.#index.get(key);
    if (i === undefined) return undefined;
    this.#stuck = false;
    const vp = this.#o.viewport;
    const h = this.#heights.get(key) ?? this.#o.estimate(this.#rows[i] as R);
    this.#setScroll((this.#offsets[i] as number) - vp.clientHeight / 2 + h / 2);
    this.#paint();
    // Measuring may have moved it: settle once more.
    this.#setScroll((this.#offsets[i] as number) - vp.clientHeight / 2 + h / 2);
    this.#paint();
    return this.#mounted.get(key);
  }

  element(key: string): HTMLElement | undefined {
    return this.#mounted.get(key);
  }

  // ---- internals ---------------------------------------------------------------------------

  #schedule(): void {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame(() => {
      this.#frame = 0;
      this.#paint();
    });
  }

  #total(): number {
    return this.#offsets[this.#rows.length] ?? 0;
  }

  #atBottom(): boolean {
    const vp = this.#o.viewport;
    return vp.scrollTop + vp.clientHeight >= this.#total() - BOTTOM_SLACK_PX;
  }

  #setScroll(top: number): void {
    const vp = this.#o.viewport;
    const max = Math.max(0, this.#total() - vp.clientHeight);
    const next = Math.max(0, Math.min(max, Math.round(top)));
    if (vp.scrollTop !== next) {
      this.#ignoreScroll = true;
      vp.scrollTop = next;
    }
  }

  #height(i: number): number {
    const row = this.#rows[i] as R;
    return this.#heights.get(row.key) ?? this.#o.estimate(row);
  }

  /** Prefix sums of the row heights, from row `from` on. */
  #layout(from = 0): void {
    const offsets = this.#offsets;
    offsets.length = this.#rows.length + 1;
    if (from === 0) offsets[0] = 0;
    for (let i = from; i < this.#rows.length; i++) offsets[i + 1] = (offsets[i] as number) + this.#height(i);
    this.#canvas.style.height = `${this.#total()}px`;
  }

  /** The first row at or below the top of the viewport, and how far below the top it is. */
  #anchor(): { key: string; delta: number } | null {
    const i = this.#find(this.#o.viewport.scrollTop);
    const row = this.#rows[i];
    if (!row) return null;
    return { key: row.key, delta: (this.#offsets[i] as number) - this.#o.viewport.scrollTop };
  }

  #restore(anchor: { key: string; delta: number } | null): void {
    if (this.#stuck || !anchor) {
      if (this.#stuck) this.#setScroll(this.#total());
      return;
    }
    const i = this.#index.get(anchor.key);
    if (i !== undefined) this.#setScroll((this.#offsets[i] as number) - anchor.delta);
  }

  /** Index of the row containing pixel `y` (binary search over the offsets). */
  #find(y: number): number {
    let lo = 0;
    let hi = this.#rows.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((this.#offsets[mid] as number) <= y) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  /** Mounts the rows in view, measures the new ones, and fixes the layout if they differ. */
  #paint(): void {
    const vp = this.#o.viewport;
    const overscan = this.#o.overscanPx ?? 600;
    if (this.#rows.length === 0) {
      this.#o.onVisible?.(0, -1);
      return;
    }
    for (let pass = 0; pass < 3; pass++) {
      const top = vp.scrollTop - overscan;
      const bottom = vp.scrollTop + vp.clientHeight + overscan;
      const first = this.#find(Math.max(0, top));
      let last = first;
      while (last < this.#rows.length - 1 && (this.#offsets[last + 1] as number) < bottom) last++;
      const wanted = new Set<string>();
      for (let i = first; i <= last; i++) {
        const row = this.#rows[i] as R;
        wanted.add(row.key);
        let el = this.#mounted.get(row.key);
        if (!el) {
          el = this.#o.render(row);
          el.dataset.key = row.key;
          this.#canvas.appendChild(el);
          this.#mounted.set(row.key, el);
        }
        el.style.top = `${this.#offsets[i]}px`;
      }
      for (const [key, el] of this.#mounted) {
        if (!wanted.has(key) && !el.contains(document.activeElement)) {
          el.remove();
          this.#mounted.delete(key);
        }
      }
      // Measure every mounted row (reads after all writes: one layout), so rows that grew later,
      // such as an image that loaded, are corrected too.
      const anchor = this.#stuck ? null : this.#anchor();
      let changedFrom = -1;
      for (const [key, el] of this.#mounted) {
        const h = el.offsetHeight;
        if (h > 0 && this.#heights.get(key) !== h) {
          this.#heights.set(key, h);
          const i = this.#index.get(key) as number;
          if (changedFrom === -1 || i < changedFrom) changedFrom = i;
        }
      }
      if (changedFrom === -1) {
        this.#o.onVisible?.(first, last);
        return;
      }
      this.#layout(changedFrom);
      for (const [key, el] of this.#mounted) {
        el.style.top = `${this.#offsets[this.#index.get(key) as number]}px`;
      }
      this.#restore(anchor);
    }
    this.#o.onVisible?.(this.#find(vp.scrollTop), this.#find(vp.scrollTop + vp.clientHeight));
  }
}
