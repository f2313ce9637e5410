/**
 * `eventLoopClaimPacing`: a turn of the event loop runs its share of claim
 * evaluations, then checks wait for a later turn; waiting can be interrupted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { eventLoopClaimPacing } from "../../src/platform/EventLoopPacing.js"

/** One turn of the event loop. */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("eventLoopClaimPacing", () => {
  it.effect("a check waits once the turn's share is spent, and runs in the next turn", () =>
    Effect.gen(function*() {
      const pacing = eventLoopClaimPacing(2)
      yield* pacing.awaitTurn
      pacing.spent(1)
      yield* pacing.awaitTurn // one of two spent: no wait
      pacing.spent(1)
      const waiting = yield* Effect.fork(pacing.awaitTurn)
      // Work that only reads its share does not finish the wait (microtasks run, no turn passes).
      yield* Effect.yieldNow()
      expect(waiting.unsafePoll()).toBeNull()
      yield* turn
      yield* Fiber.join(waiting)
      // The new turn started with the whole share.
      pacing.spent(1)
      yield* pacing.awaitTurn
    }))

  it.effect("checks that waited run their share per turn, the rest wait again", () =>
    Effect.gen(function*() {
      const pacing = eventLoopClaimPacing(2)
      pacing.spent(2)
      const ran: Array<number> = []
      let turns = 0
      const check = (n: number) => Effect.zipRight(pacing.awaitTurn, Effect.sync(() => (ran.push(n), pacing.spent(1))))
      const checks = yield* Effect.fork(Effect.forEach([0, 1, 2, 3, 4], check, { concurrency: "unbounded" }))
      while (ran.length < 5) {
        yield* turn
        turns++
        expect(ran.length).toBeLessThanOrEqual(2 * turns)
      }
      yield* Fiber.join(checks)
      expect([...ran].sort()).toEqual([0, 1, 2, 3, 4])
      expect(turns).toBeGreaterThanOrEqual(3)
    }))

  it.effect("an interrupted wait ends at once, and the pacing still works after it", () =>
    Effect.gen(function*() {
      const pacing = eventLoopClaimPacing(1)
      pacing.spent(1)
      const waiting = yield* Effect.fork(pacing.awaitTurn)
      yield* Fiber.interrupt(waiting)
      yield* turn
      yield* pacing.awaitTurn
    }))

  it("refuses a share that cannot work", () => {
    expect(() => eventLoopClaimPacing(0)).toThrow(RangeError)
    expect(() => eventLoopClaimPacing(1.5)).toThrow(RangeError)
  })
})
