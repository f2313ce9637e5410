/**
 * How the tests on the test clock run: a seeded random stream, the log
 * quiet below a level, and a test clock that lets the fibers settle through
 * `setImmediate` instead of `setTimeout(0)`.
 *
 * Why the clock: before it fires a sleep, `TestClock.adjust` waits until
 * every fiber is done or suspended, and to let them run it yields to the
 * event loop with `setTimeout(0)`, two to four times per sleep fired. Node
 * rounds that timeout up to 1 ms, so a test that lets days pass (mail
 * lifetimes, hourly rounds) fired thousands of sleeps and spent most of its
 * time asleep: 80 % of `test/chat/Relay.test.ts`'s 39 s, measured with
 * `--cpu-prof`. `setImmediate` still yields to the event loop, after any
 * I/O that is ready, without the timer's floor; the clock's rules (which
 * sleeps fire, in what order, at what time) are unchanged. It is meant for
 * tests whose fibers wait on nothing real (the memory network, the memory
 * stores): the event loop no longer idles a millisecond between checks, so
 * a socket's reply still in flight would find the clock already moved on.
 */
import { Duration, Effect, Logger, LogLevel, Random, TestClock } from "effect"

/** A turn of the event loop, as `setTimeout(0)` gives one, without its 1 ms floor. */
const nextTurn: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * Runs `self` on the current test clock, made to yield with `setImmediate`.
 * The yield is a field of Effect's `TestClockImpl` (Effect 3.22); if a new
 * Effect drops it, this fails loudly rather than leaving the tests slow.
 */
export const withFastTestClock = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(TestClock.testClock(), (clock) => {
    const fields = clock as unknown as { adjust?: unknown; yieldTimer?: unknown }
    if (typeof fields.adjust !== "function") {
      return Effect.dieMessage("withFastTestClock needs the test clock (it.effect or it.scoped, not it.live)")
    }
    if (!("yieldTimer" in fields)) {
      return Effect.dieMessage("Effect's TestClock no longer yields through `yieldTimer`: update test/support/deterministic.ts")
    }
    fields.yieldTimer = nextTurn
    return self
  })

/** `self` with the random stream of `seed`, logs below `minimumLogLevel` dropped, on the fast test clock. */
export const deterministic = <A, E, R>(
  self: Effect.Effect<A, E, R>,
  seed: number,
  minimumLogLevel: LogLevel.LogLevel = LogLevel.Error
): Effect.Effect<A, E, R> =>
  withFastTestClock(self).pipe(Effect.withRandom(Random.make(seed)), Logger.withMinimumLogLevel(minimumLogLevel))

/** Lets the background fibers run for `seconds` of virtual time, one second at a time. */
export const runSeconds = (seconds: number): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let i = 0; i < seconds; i++) yield* TestClock.adjust(Duration.seconds(1))
  })
