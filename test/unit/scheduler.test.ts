import { describe, expect, it } from "vitest";
import { type AlarmStorage, Scheduler, type Task } from "../../durable-objects/scheduler.ts";

// durable-objects/scheduler.ts on fake storage: one alarm at the earliest stored due time.

class FakeAlarm implements AlarmStorage {
  at: number | null = null;
  sets: number[] = [];
  async getAlarm() {
    return this.at;
  }
  setAlarm(at: number) {
    this.at = at;
    this.sets.push(at);
  }
}

/** A task due at a stored time, which running clears (or moves to `then`). */
function stored(at: number | null, log: string[], name: string, then: number | null = null) {
  const task = {
    at,
    due: () => task.at,
    run: async () => {
      log.push(name);
      task.at = then;
    },
  };
  return task;
}

describe("the scheduler", () => {
  it("arms one alarm at the earliest due task, and never later than one already armed", () => {
    const alarm = new FakeAlarm();
    const log: string[] = [];
    const s = new Scheduler<"a" | "b" | "c">(alarm, () => {});
    s.add("a", stored(300, log, "a"))
      .add("b", stored(100, log, "b"))
      .add("c", stored(null, log, "c"));
    s.schedule(0);
    expect(alarm.at).toBe(100);
    s.wakeAt(200);
    expect(alarm.sets).toEqual([100]);
    s.wakeAt(50);
    expect(alarm.sets).toEqual([100, 50]);
    expect(s.plan(0)).toEqual({ a: 300, b: 100, c: null });
  });

  it("runs only the tasks due, in the order they were added, then arms for what is left", async () => {
    const alarm = new FakeAlarm();
    const log: string[] = [];
    const s = new Scheduler<"late" | "first" | "second">(alarm, () => {});
    s.add("late", stored(500, log, "late"))
      .add("first", stored(90, log, "first"))
      .add("second", stored(100, log, "second", 400));
    await s.alarm(() => 100);
    expect(log).toEqual(["first", "second"]);
    expect(alarm.at).toBe(400);
  });

  it("runs every due task even when one fails, and reports the failure by name", async () => {
    const alarm = new FakeAlarm();
    const log: string[] = [];
    const failures: [string, string][] = [];
    const broken: Task = {
      due: () => 0,
      run: async () => {
        throw new Error("R2 is down");
      },
    };
    const s = new Scheduler<"broken" | "after">(alarm, (name, err) => failures.push([name, String(err)]));
    s.add("broken", broken).add("after", stored(0, log, "after"));
    await s.alarm(() => 10);
    expect(log).toEqual(["after"]);
    expect(failures).toEqual([["broken", "Error: R2 is down"]]);
    // The failed task is still due: the alarm comes back for it.
    expect(alarm.at).toBe(0);
  });

  it("finds the alarm a previous instance armed, and does not arm a later one", async () => {
    const alarm = new FakeAlarm();
    alarm.at = 50;
    const s = new Scheduler<"a">(alarm, () => {});
    s.add("a", stored(80, [], "a"));
    await s.load();
    s.schedule(0);
    expect(alarm.sets).toEqual([]);
  });

  it("runs an every-alarm task whatever woke the alarm, without arming one for it", async () => {
    const alarm = new FakeAlarm();
    const log: string[] = [];
    const net: Task = {
      due: () => null,
      run: async () => {
        log.push("net");
      },
      everyAlarm: true,
    };
    const s = new Scheduler<"net" | "work">(alarm, () => {});
    s.add("net", net).add("work", stored(100, log, "work"));
    s.schedule(0);
    expect(alarm.sets).toEqual([100]);
    await s.alarm(() => 100);
    expect(log).toEqual(["net", "work"]);
    expect(alarm.sets).toEqual([100]);
  });

  it("refuses a task name twice", () => {
    const s = new Scheduler<"a">(new FakeAlarm(), () => {});
    s.add("a", stored(null, [], "a"));
    expect(() => s.add("a", stored(null, [], "a"))).toThrow(/already scheduled/);
  });
});
