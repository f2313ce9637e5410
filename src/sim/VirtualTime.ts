/**
 * Virtual time for simulations: a discrete-event driver for the Effect
 * runtime. Every fiber of a simulated run is scheduled on one task queue
 * that the driver drains synchronously, and every `Effect.sleep` (so every
 * timeout, schedule and timer in node code) is a timer in a heap keyed by
 * virtual time. When no task is runnable, every fiber is waiting on a timer
 * (or on another fiber), so the driver jumps the clock to the earliest timer
 * and fires it. Nothing waits on the wall clock, and nothing runs
 * concurrently, so a run is a pure function of its program and its seed.
 *
 * `TestClock` does the same job for unit tests but polls the wall clock to
 * learn when fibers are idle (milliseconds per wake-up); this driver knows
 * it exactly, which is what lets thousands of nodes run in one process.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Exit, Scheduler } from "effect"

interface Timer {
  readonly at: number
  /** Breaks ties between timers due at the same time: first set, first fired. */
  readonly order: number
  /**
   * Resumes the sleeping fiber; undefined once the sleep was interrupted. A
   * cancelled timer stays in the heap until its time comes, and its resume
   * would keep the dead fiber alive until then, and with it the context of a
   * node that stopped (its whole session, for up to an hour of virtual time).
   */
  fire: (() => void) | undefined
}

/** A binary min-heap of timers by (at, order). Bound: one entry per sleeping fiber. */
class TimerHeap {
  private readonly items: Array<Timer> = []

  get size(): number {
    return this.items.length
  }

  push(timer: Timer): void {
    const items = this.items
    items.push(timer)
    let index = items.length - 1
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (!before(timer, items[parent] as Timer)) break
      items[index] = items[parent] as Timer
      index = parent
    }
    items[index] = timer
  }

  pop(): Timer | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (top === undefined || last === undefined || items.length === 0) return top
    let index = 0
    for (;;) {
      const left = 2 * index + 1
      if (left >= items.length) break
      const right = left + 1
      const child = right < items.length && before(items[right] as Timer, items[left] as Timer) ? right : left
      if (!before(items[child] as Timer, last)) break
      items[index] = items[child] as Timer
      index = child
    }
    items[index] = last
    return top
  }

}

const isArmed = (timer: Timer): timer is Timer & { readonly fire: () => void } => timer.fire !== undefined

const before = (a: Timer, b: Timer): boolean => a.at < b.at || (a.at === b.at && a.order < b.order)

/** A run did not finish: its fibers are all waiting and no timer is left, or the time limit came first. */
export class SimulationStalled extends Error {
  constructor(readonly reason: "Deadlock" | "TimeLimit", readonly at: number) {
    super(
      reason === "Deadlock"
        ? `the simulation deadlocked at ${at} ms: every fiber waits and no timer is set`
        : `the simulation did not finish by ${at} ms of virtual time`
    )
  }
}

/** Counters of a driver, for speed reports. */
export interface VirtualTimeStats {
  /** Tasks run (fiber steps). */
  readonly tasks: number
  /** Timers fired. */
  readonly timers: number
}

/** A virtual clock and scheduler, and the driver that runs effects on them. */
export interface VirtualTime {
  /** Virtual now, ms since the epoch the driver started at. */
  readonly now: () => number
  readonly stats: () => VirtualTimeStats
  /**
   * Runs `effect` in virtual time until it completes (and returns its exit),
   * draining every runnable task before each jump of the clock. Throws
   * `SimulationStalled` when it deadlocks or passes `limitMs` of virtual time.
   * `onAdvance` is called whenever the clock moves (for progress reports).
   */
  readonly run: <A, E>(
    effect: Effect.Effect<A, E>,
    options?: { readonly limitMs?: number; readonly onAdvance?: (now: number) => void }
  ) => Exit.Exit<A, E>
  /**
   * The same as `run`, but returns to the host's event loop every
   * `sliceMs` of wall time (default 100), so a long run does not starve
   * timers outside the simulation (a test runner's heartbeats, progress
   * output). The simulation itself is unaffected: the same exit, the same
   * virtual times.
   */
  readonly runPromise: <A, E>(
    effect: Effect.Effect<A, E>,
    options?: { readonly limitMs?: number; readonly onAdvance?: (now: number) => void; readonly sliceMs?: number }
  ) => Promise<Exit.Exit<A, E>>
}

/** Most fiber steps before a fiber yields to others (the runtime's default is 2048). */
const MAX_OPS_BEFORE_YIELD = 2048

/** A fresh virtual time starting at `startMs`. */
export const makeVirtualTime = (startMs = 0): VirtualTime => {
  let now = startMs
  let order = 0
  let tasksRun = 0
  let timersFired = 0
  let queue: Array<() => void> = []
  const timers = new TimerHeap()

  const scheduler = Scheduler.make(
    (task) => {
      queue.push(task)
    },
    (fiber) => (fiber.currentOpCount > MAX_OPS_BEFORE_YIELD ? 0 : false)
  )

  const sleep = (duration: Duration.Duration): Effect.Effect<void> =>
    Effect.async<void>((resume) => {
      const timer: Timer = {
        // Whole milliseconds, as a real clock reads (node code stores times as integers), and
        // rounded up: a fiber that sleeps until a deadline must never wake before it.
        at: now + Math.max(0, Math.ceil(Duration.toMillis(duration))),
        order: order++,
        fire: () => resume(Effect.void)
      }
      timers.push(timer)
      return Effect.sync(() => {
        timer.fire = undefined
      })
    })

  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    currentTimeMillis: Effect.sync(() => now),
    unsafeCurrentTimeNanos: () => BigInt(Math.round(now * 1_000_000)),
    currentTimeNanos: Effect.sync(() => BigInt(Math.round(now * 1_000_000))),
    sleep
  }

  const drain = (): void => {
    while (queue.length > 0) {
      const batch = queue
      queue = []
      for (const task of batch) {
        tasksRun++
        task()
      }
    }
  }

  /** The earliest timer still armed; cancelled ones met on the way are dropped. */
  const nextArmed = (): (Timer & { readonly fire: () => void }) | undefined => {
    for (let timer = timers.pop(); timer !== undefined; timer = timers.pop()) {
      if (isArmed(timer)) return timer
    }
    return undefined
  }

  /** Starts `effect` and returns a stepper: each step drains the runnable tasks, then fires one timer. */
  const start = <A, E>(
    effect: Effect.Effect<A, E>,
    options: { readonly limitMs?: number; readonly onAdvance?: (now: number) => void } | undefined
  ) => {
    const fiber = Effect.runFork(Effect.withClock(effect, clock), { scheduler })
    const limit = options?.limitMs === undefined ? Number.POSITIVE_INFINITY : startMs + options.limitMs
    return {
      /** The exit once the effect has finished, else undefined (one timer fired); throws when stalled. */
      step: (): Exit.Exit<A, E> | undefined => {
        drain()
        const done = fiber.unsafePoll()
        if (done !== null) return done
        const next = nextArmed()
        if (next === undefined) {
          fiber.unsafeInterruptAsFork(fiber.id())
          drain()
          throw new SimulationStalled("Deadlock", now)
        }
        if (next.at > limit) {
          fiber.unsafeInterruptAsFork(fiber.id())
          drain()
          throw new SimulationStalled("TimeLimit", limit)
        }
        if (next.at > now) {
          now = next.at
          options?.onAdvance?.(now)
        }
        timersFired++
        next.fire()
        return undefined
      }
    }
  }

  return {
    now: () => now,
    stats: () => ({ tasks: tasksRun, timers: timersFired }),
    run: (effect, options) => {
      const driver = start(effect, options)
      for (;;) {
        const done = driver.step()
        if (done !== undefined) return done
      }
    },
    runPromise: async (effect, options) => {
      const driver = start(effect, options)
      const sliceMs = options?.sliceMs ?? 100
      for (;;) {
        const sliceEnd = performance.now() + sliceMs
        while (performance.now() < sliceEnd) {
          const done = driver.step()
          if (done !== undefined) return done
        }
        await new Promise<void>((resume) => setImmediate(resume))
      }
    }
  }
}

/** For tests: the fiber's result once a run returned it. */
export const exitValue = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (Exit.isSuccess(exit)) return exit.value
  throw new Error(`the simulated program failed: ${String(exit.cause)}`)
}
