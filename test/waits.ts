/**
 * @module Waiting for a condition that frames make true, in either runtime: the test clients
 * (frame-socket.ts, system/node-socket.ts) wake it on every frame and on close, and a wait fails
 * (never hangs) at its deadline or when the socket closes first.
 */
export class Waits {
  #waiters: (() => void)[] = [];

  /** Something happened: every wait checks its condition again. */
  wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves when `check` holds; fails after `ms`, or once `closedCode()` is not null while
   * `check` still fails. */
  async until(
    check: () => boolean,
    what: string,
    ms: number,
    closedCode: () => number | null,
  ): Promise<void> {
    const deadline = performance.now() + ms;
    while (!check()) {
      const code = closedCode();
      if (code !== null) throw new Error(`socket closed (${code}) while waiting for ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}
