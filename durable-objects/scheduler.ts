/**
 * @module One alarm over named tasks. Each task says when it is next due from what the object has
 * stored (a watermark behind the log, a stored time, a row waiting for its grace period), so a new
 * instance after a restart or an eviction finds the same work and nothing is scheduled only in
 * memory; the scheduler keeps the runtime's single alarm at the earliest of them. On the alarm, the
 * due tasks run in the order they were registered, each independently of the others' failures
 * (alarms are at-least-once, and every task is idempotent), and the alarm is armed again for
 * whatever is left.
 */

export interface Task {
  /** When the task is next due (ms since the epoch; at or before `now` when due now), or null when
   * there is nothing to do or wait for. Read from stored state, never from a timer. */
  due(now: number): number | null;
  /** Does what is due. A task that is not due when the alarm runs is skipped, unless it runs on
   * every alarm. */
  run(now: number): Promise<unknown>;
  /** Runs whenever the alarm fires, whatever woke it: for a safety net that is cheap when there is
   * nothing to do and that should not wake the object by itself (`due` still arms the alarm when
   * the task itself needs it). */
  everyAlarm?: boolean;
}

/** What the scheduler needs of the object's storage: its one alarm. */
export interface AlarmStorage {
  getAlarm(): Promise<number | null>;
  setAlarm(at: number): Promise<void> | void;
}

export class Scheduler<Name extends string> {
  readonly #storage: AlarmStorage;
  readonly #tasks: [Name, Task][] = [];
  readonly #failed: (task: Name, err: unknown) => void;
  /** The alarm as last armed by this instance (null: none, or not known since it began). */
  #armedAt: number | null = null;

  constructor(storage: AlarmStorage, failed: (task: Name, err: unknown) => void) {
    this.#storage = storage;
    this.#failed = failed;
  }

  /** Adds a task; tasks run in the order they were added. */
  add(name: Name, task: Task): this {
    if (this.#tasks.some(([n]) => n === name)) throw new Error(`task ${name} is already scheduled`);
    this.#tasks.push([name, task]);
    return this;
  }

  /** Reads the alarm the runtime holds (once per instance, before the object serves anything). */
  async load(): Promise<void> {
    this.#armedAt = await this.#storage.getAlarm();
  }

  /** When each task is next due, by name (null: nothing to do): for tests and operators. */
  plan(now: number): Record<Name, number | null> {
    return Object.fromEntries(this.#tasks.map(([name, task]) => [name, task.due(now)])) as Record<
      Name,
      number | null
    >;
  }

  /** Arms the alarm for the earliest due task, unless it already fires by then. */
  schedule(now: number): void {
    let earliest = Infinity;
    for (const [, task] of this.#tasks) {
      const at = task.due(now);
      if (at !== null && at < earliest) earliest = at;
    }
    if (earliest !== Infinity) this.wakeAt(earliest);
  }

  /** Makes sure the alarm fires by `at` (an earlier alarm already does). */
  wakeAt(at: number): void {
    if (this.#armedAt !== null && this.#armedAt <= at) return;
    this.#armedAt = at;
    void this.#storage.setAlarm(at);
  }

  /** The alarm fired: runs every task due at `clock()` (read again before each, since tasks take
   * time), then arms the alarm for what is left. */
  async alarm(clock: () => number = Date.now): Promise<void> {
    this.#armedAt = null;
    for (const [name, task] of this.#tasks) {
      const now = clock();
      const at = task.due(now);
      if (!task.everyAlarm && (at === null || at > now)) continue;
      try {
        await task.run(now);
      } catch (err) {
        this.#failed(name, err);
      }
    }
    this.schedule(clock());
  }
}
