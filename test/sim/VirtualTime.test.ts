import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Deferred, Duration, Effect, Exit, Fiber, Random } from "effect"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { makeVirtualTime, SimulationStalled } from "../../src/sim/VirtualTime.js"

const START = 1_000_000

describe("VirtualTime", () => {
  it("fires timers in time order, jumping the clock exactly, with fibers interleaved", () => {
    const time = makeVirtualTime(START)
    const trace: Array<string> = []
    const worker = (name: string, delays: ReadonlyArray<number>) =>
      Effect.forEach(delays, (delay) =>
        Effect.zipRight(
          Effect.sleep(Duration.millis(delay)),
          Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => trace.push(`${name}@${now - START}`)))
        ), { discard: true })
    const exit = time.run(Effect.all([worker("a", [10, 10, 10]), worker("b", [15, 1])], { concurrency: "unbounded" }))
    expect(Exit.isSuccess(exit)).toBe(true)
    expect(trace).toEqual(["a@10", "b@15", "b@16", "a@20", "a@30"])
    expect(time.now()).toBe(START + 30)
  })

  it("runs hours of virtual time instantly and supports timeouts and interruption", () => {
    const time = makeVirtualTime(START)
    const exit = time.run(Effect.gen(function*() {
      const slow = yield* Effect.timeout(Effect.sleep(Duration.hours(5)), Duration.hours(2)).pipe(Effect.either)
      const sleeper = yield* Effect.fork(Effect.sleep(Duration.days(30)))
      yield* Effect.sleep(Duration.hours(1))
      yield* Fiber.interrupt(sleeper)
      return slow._tag
    }))
    expect(exit).toEqual(Exit.succeed("Left"))
    // The timeout fired at 2 h, then one more hour; the interrupted 30-day timer never fired.
    expect(time.now()).toBe(START + 3 * 3_600_000)
  })

  it("lets go of a fiber whose sleep was interrupted, though its timer is not due yet", async () => {
    // A full collection on demand: what `--expose-gc` gives, switched on from inside the test.
    setFlagsFromString("--expose-gc")
    const collect = runInNewContext("gc") as () => void
    class Held extends Context.Tag("test/Held")<Held, { readonly payload: ReadonlyArray<number> }>() {}
    const time = makeVirtualTime(START)
    let held: WeakRef<object> | undefined
    const exit = time.run(Effect.gen(function*() {
      const service = { payload: Array.from({ length: 1000 }, (_, i) => i) }
      held = new WeakRef(service)
      // The sleeper's context holds the service, as a stopped node's loops hold its services.
      const sleeper = yield* Effect.fork(Effect.sleep(Duration.hours(1))).pipe(Effect.provideService(Held, service))
      yield* Effect.sleep(Duration.seconds(1))
      yield* Fiber.interrupt(sleeper)
    }))
    expect(Exit.isSuccess(exit)).toBe(true)
    // The run is over, its cancelled one-hour timer is still in the heap (the driver lives on).
    expect(time.now()).toBe(START + 1000)
    // A WeakRef keeps its target alive until the current job ends.
    await new Promise<void>((resume) => setImmediate(resume))
    collect()
    expect(held?.deref()).toBeUndefined()
  })

  it("replays a seeded run exactly", () => {
    const once = () => {
      const time = makeVirtualTime(START)
      const trace: Array<number> = []
      const exit = time.run(
        Effect.forEach(Array.from({ length: 20 }, (_, i) => i), () =>
          Effect.gen(function*() {
            yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(0, 1000)))
            trace.push((yield* Clock.currentTimeMillis) - START)
          }), { concurrency: "unbounded", discard: true }).pipe(Effect.withRandom(Random.make(42)))
      )
      expect(Exit.isSuccess(exit)).toBe(true)
      return trace
    }
    const first = once()
    expect(first).toEqual([...first].sort((a, b) => a - b))
    expect(once()).toEqual(first)
  })

  it("reports a deadlock and a time limit instead of hanging", () => {
    expect(() => makeVirtualTime(START).run(Effect.flatMap(Deferred.make<void>(), Deferred.await))).toThrow(SimulationStalled)
    const limited = makeVirtualTime(START)
    expect(() => limited.run(Effect.sleep(Duration.hours(2)), { limitMs: 3_600_000 })).toThrow(/did not finish/)
  })
})
