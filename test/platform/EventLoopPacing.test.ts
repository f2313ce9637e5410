/**
 * `eventLoopClaimPacing`: a turn of the event loop runs its share of claim
 * evaluations; the rest wait, oldest first, one timer per turn however many
 * wait; a caller that gives up leaves the queue.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { Signatures } from "../../src/node/Identity.js"
import { eventLoopClaimPacing } from "../../src/platform/EventLoopPacing.js"
import { signaturesLayer } from "../../src/platform/IdentityStore.js"

/** One turn of the event loop. */
const turn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** `count` evaluations paced by `pacing`, all asked for at once: the order they ran in, and after how many turns. */
const burst = (perTurn: number, count: number) =>
  Effect.gen(function*() {
    const pacing = eventLoopClaimPacing(perTurn)
    const ran: Array<{ readonly n: number; readonly turn: number }> = []
    let turns = 0
    const fiber = yield* Effect.fork(
      Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) => pacing.pace(() => ran.push({ n, turn: turns })), {
        concurrency: "unbounded"
      })
    )
    while (ran.length < count) {
      yield* turn
      turns++
    }
    yield* Fiber.join(fiber)
    return { ran, turns, pacing }
  })

describe("eventLoopClaimPacing", () => {
  it.live("a turn runs its share; the others wait, oldest first, and run a share per later turn", () =>
    Effect.gen(function*() {
      const { pacing, ran, turns } = yield* burst(2, 7)
      expect(ran.map((entry) => entry.n)).toEqual([0, 1, 2, 3, 4, 5, 6])
      const perTurn = new Map<number, number>()
      for (const entry of ran) perTurn.set(entry.turn, (perTurn.get(entry.turn) ?? 0) + 1)
      expect(Math.max(...perTurn.values())).toBe(2)
      expect(turns).toBeGreaterThanOrEqual(3)
      expect(pacing.waiting()).toBe(0)
    }))

  it.live("one timer per turn, however many wait", () =>
    Effect.gen(function*() {
      const original = globalThis.setImmediate
      let timers = 0
      const counting = ((...args: Parameters<typeof setImmediate>) => {
        timers++
        return original(...args)
      }) as typeof setImmediate
      globalThis.setImmediate = counting
      const { turns } = yield* burst(2, 200).pipe(Effect.ensuring(Effect.sync(() => (globalThis.setImmediate = original))))
      // The test's own turns, and at most one of the pacing's per turn (a timer per waiter would be 200 a turn).
      expect(timers).toBeLessThanOrEqual(2 * turns + 2)
      expect(turns).toBeGreaterThanOrEqual(100)
    }))

  it.live("a slow turn earns a larger share: one evaluation per 10 ms of it, so the queue drains at the budget's rate", () =>
    Effect.gen(function*() {
      const pacing = eventLoopClaimPacing(2, 10)
      const ranAt: Array<number> = []
      let turns = 0
      const evaluation = (n: number) => () => {
        // The first one makes its turn last 60 ms, as a node busy with a flood would.
        if (n === 0) for (const until = performance.now() + 60; performance.now() < until;);
        ranAt.push(turns)
      }
      const fiber = yield* Effect.fork(
        Effect.forEach(Array.from({ length: 12 }, (_, n) => n), (n) => pacing.pace(evaluation(n)), { concurrency: "unbounded" })
      )
      while (ranAt.length < 12) {
        yield* turn
        turns++
      }
      yield* Fiber.join(fiber)
      const perTurn = new Map<number, number>()
      for (const at of ranAt) perTurn.set(at, (perTurn.get(at) ?? 0) + 1)
      // 2 ran in the slow turn; the next turn's share was at least 6.
      expect(Math.max(...perTurn.values())).toBeGreaterThanOrEqual(6)
    }))

  it.live("a caller that gives up leaves the queue; the others keep their order", () =>
    Effect.gen(function*() {
      const pacing = eventLoopClaimPacing(1)
      const ran: Array<string> = []
      const ask = (name: string) => Effect.fork(pacing.pace(() => ran.push(name)))
      const first = yield* ask("first") // runs at once: the share was free
      const second = yield* ask("second")
      const third = yield* ask("third")
      yield* Fiber.join(first)
      expect(pacing.waiting()).toBe(2)
      yield* Fiber.interrupt(second)
      expect(pacing.waiting()).toBe(1)
      yield* Fiber.join(third)
      expect(ran).toEqual(["first", "third"])
      expect(pacing.waiting()).toBe(0)
    }))

  it("refuses a share that cannot work", () => {
    expect(() => eventLoopClaimPacing(0)).toThrow(RangeError)
    expect(() => eventLoopClaimPacing(1.5)).toThrow(RangeError)
    expect(() => eventLoopClaimPacing(2, 0)).toThrow(RangeError)
    expect(() => eventLoopClaimPacing(2, Number.NaN)).toThrow(RangeError)
  })
})

describe("a real node's signatures", () => {
  it.effect("pace the claim evaluations peers cause", () =>
    Effect.gen(function*() {
      const signatures = yield* Signatures.pipe(Effect.provide(signaturesLayer))
      expect(signatures.claimPacing).toBeDefined()
      expect(signatures.claimPacing?.waiting()).toBe(0)
    }))
})
