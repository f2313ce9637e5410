/**
 * Token buckets: the rate bound (no sequence of takes gets more than
 * capacity + rate × elapsed), retry hints that are exactly long enough, time
 * that goes backwards, and the keyed, bounded `TokenBuckets` against an oracle
 * (pure buckets in a plain least-recently-updated list).
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { makeTokenBucket, take, type TokenBucket, TokenBuckets } from "../../src/core/TokenBucket.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

describe("take", () => {
  const limits = { ratePerSecond: 10, capacity: 5 }

  it("allows a burst of `capacity`, then refuses with the time until the next token", () => {
    let bucket = makeTokenBucket(5, 1000)
    expect(bucket).toEqual({ tokens: 5, updatedAt: 1000 })
    for (let i = 0; i < 5; i++) {
      const result = take(bucket, { ...limits, now: 1000 })
      expect(result.allowed).toBe(true)
      expect(result.retryAfterMillis).toBe(0)
      bucket = result.bucket
    }
    const refused = take(bucket, { ...limits, now: 1000 })
    expect(refused).toEqual({ allowed: false, bucket: { tokens: 0, updatedAt: 1000 }, retryAfterMillis: 100 })
    // 10 tokens a second: one token after 100 ms, and a refusal takes nothing.
    expect(take(refused.bucket, { ...limits, now: 1099 }).allowed).toBe(false)
    const later = take(refused.bucket, { ...limits, now: 1100 })
    expect(later.allowed).toBe(true)
    expect(later.bucket.tokens).toBeCloseTo(0, 12)
  })

  it("refills by elapsed time but never above capacity", () => {
    const empty: TokenBucket = { tokens: 0, updatedAt: 0 }
    expect(take(empty, { ...limits, now: 250, cost: 0 }).bucket).toEqual({ tokens: 2.5, updatedAt: 250 })
    expect(take(empty, { ...limits, now: 1_000_000, cost: 0 }).bucket).toEqual({ tokens: 5, updatedAt: 1_000_000 })
    // A bucket made for a larger capacity is trimmed to this one.
    expect(take({ tokens: 50, updatedAt: 0 }, { ...limits, now: 0, cost: 0 }).bucket.tokens).toBe(5)
  })

  it("does not refill or throw when time goes backwards, and keeps its later time", () => {
    const bucket: TokenBucket = { tokens: 1, updatedAt: 5000 }
    const back = take(bucket, { ...limits, now: 1000, cost: 2 })
    expect(back).toEqual({ allowed: false, bucket: { tokens: 1, updatedAt: 5000 }, retryAfterMillis: 100 })
    // Back at 5100 only the 100 ms since 5000 count, not the 4100 since 1000.
    expect(take(back.bucket, { ...limits, now: 5100, cost: 0 }).bucket.tokens).toBeCloseTo(2, 12)
    expect(take(bucket, { ...limits, now: Number.NaN }).bucket).toEqual({ tokens: 0, updatedAt: 5000 })
  })

  it("says never when a take can never be allowed", () => {
    const full = makeTokenBucket(5, 0)
    expect(take(full, { ...limits, now: 0, cost: 6 })).toEqual({ allowed: false, bucket: full, retryAfterMillis: Infinity })
    const empty: TokenBucket = { tokens: 0, updatedAt: 0 }
    expect(take(empty, { ratePerSecond: 0, capacity: 5, now: 10_000 }).retryAfterMillis).toBe(Infinity)
    expect(take(empty, { ratePerSecond: 0, capacity: 5, now: 10_000, cost: 0 }).allowed).toBe(true)
  })

  it("rejects limits that cannot work", () => {
    const bucket = makeTokenBucket(1, 0)
    expect(() => take(bucket, { ratePerSecond: -1, capacity: 1, now: 0 })).toThrow(RangeError)
    expect(() => take(bucket, { ratePerSecond: 1, capacity: Number.NaN, now: 0 })).toThrow(RangeError)
    expect(() => take(bucket, { ratePerSecond: 1, capacity: 1, now: 0, cost: -1 })).toThrow(RangeError)
    expect(() => makeTokenBucket(-1, 0)).toThrow(RangeError)
    expect(() => makeTokenBucket(1, Number.POSITIVE_INFINITY)).toThrow(RangeError)
  })

  // Rates and capacities that are not round, and clock steps that include going backwards.
  const arbLimits = fc.record({
    ratePerSecond: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.double({ min: 0.01, max: 1000, noNaN: true })),
    capacity: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.double({ min: 0, max: 50, noNaN: true }))
  })
  const arbSteps = fc.array(
    fc.record({
      advance: fc.oneof({ arbitrary: fc.integer({ min: 0, max: 500 }), weight: 4 }, { arbitrary: fc.integer({ min: -2000, max: -1 }), weight: 1 }),
      cost: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 10 }), fc.double({ min: 0, max: 10, noNaN: true }))
    }),
    { maxLength: 200 }
  )

  it.prop(
    "no sequence of takes gets more than capacity + rate × elapsed, and tokens stay within [0, capacity]",
    [arbLimits, arbSteps],
    ([{ ratePerSecond, capacity }, steps]) => {
      const start = 1_000_000
      let bucket = makeTokenBucket(capacity, start)
      let now = start
      let latest = start
      let granted = 0
      // Plain checks, one expect at the end: expect is slow in loops.
      const violations: Array<string> = []
      for (const { advance, cost } of steps) {
        now += advance
        latest = Math.max(latest, now)
        const result = take(bucket, { ratePerSecond, capacity, now, cost })
        if (result.allowed) granted += cost
        else if (!(result.bucket.tokens < cost)) violations.push(`refused ${cost} while holding ${result.bucket.tokens}`)
        bucket = result.bucket
        if (!(bucket.tokens >= 0 && bucket.tokens <= capacity)) violations.push(`holds ${bucket.tokens} of ${capacity}`)
        if (bucket.updatedAt !== latest) violations.push(`updatedAt ${bucket.updatedAt}, latest time ${latest}`)
        // Only time actually gone by refills: the clock stepping back and forth earns nothing.
        const bound = capacity + (ratePerSecond * (latest - start)) / 1000
        if (granted > bound * (1 + 1e-12) + 1e-9) violations.push(`granted ${granted} > ${bound} at ${now}`)
      }
      expect(violations).toEqual([])
    },
    propOptions(500)
  )

  it.prop(
    "waiting exactly retryAfterMillis is enough, and one ms less is not",
    [arbLimits, fc.double({ min: 0, max: 50, noNaN: true }), fc.double({ min: 0, max: 10, noNaN: true })],
    ([{ ratePerSecond, capacity }, held, cost]) => {
      const bucket: TokenBucket = { tokens: Math.min(held, capacity), updatedAt: 0 }
      const first = take(bucket, { ratePerSecond, capacity, now: 0, cost })
      if (first.allowed) {
        expect(first.retryAfterMillis).toBe(0)
        return
      }
      const wait = first.retryAfterMillis
      if (wait === Infinity) {
        expect(cost > capacity || ratePerSecond === 0).toBe(true)
        return
      }
      expect(Number.isInteger(wait) && wait > 0).toBe(true)
      expect(take(first.bucket, { ratePerSecond, capacity, now: wait, cost }).allowed).toBe(true)
      expect(take(first.bucket, { ratePerSecond, capacity, now: wait - 1, cost }).allowed).toBe(false)
    },
    propOptions(1000)
  )
})

describe("TokenBuckets", () => {
  it("keeps one bucket per key, each starting full", () => {
    const buckets = new TokenBuckets({ ratePerSecond: 1, capacity: 2, maxKeys: 10 })
    expect(buckets.take("a", 0).allowed).toBe(true)
    expect(buckets.take("a", 0).allowed).toBe(true)
    expect(buckets.take("a", 0)).toEqual({ allowed: false, bucket: { tokens: 0, updatedAt: 0 }, retryAfterMillis: 1000 })
    expect(buckets.take("b", 0).allowed).toBe(true) // b has its own bucket
    expect(buckets.take("a", 1000).allowed).toBe(true)
    expect(buckets.size).toBe(2)
    expect(buckets.get("b")).toEqual({ tokens: 1, updatedAt: 0 })
  })

  it("forgets the least recently updated key at the bound, which then starts full again", () => {
    const buckets = new TokenBuckets({ ratePerSecond: 0, capacity: 1, maxKeys: 2 })
    expect(buckets.take("a", 0).allowed).toBe(true)
    expect(buckets.take("b", 1).allowed).toBe(true)
    expect(buckets.take("a", 2).allowed).toBe(false) // a refused take is an update too: a is now the freshest
    expect(buckets.take("c", 3).allowed).toBe(true) // evicts b
    expect(buckets.size).toBe(2)
    expect(buckets.get("b")).toBeUndefined()
    expect(buckets.get("a")).toBeDefined()
    expect(buckets.take("b", 4).allowed).toBe(true) // b is new again (evicting a)
    expect(buckets.get("a")).toBeUndefined()
  })

  it("a bucket forgotten on purpose starts full, and a non-finite time does not throw", () => {
    const buckets = new TokenBuckets({ ratePerSecond: 0, capacity: 1, maxKeys: 4 })
    buckets.take("a", 0)
    expect(buckets.delete("a")).toBe(true)
    expect(buckets.delete("a")).toBe(false)
    expect(buckets.take("a", 0).allowed).toBe(true)
    expect(buckets.take("z", Number.NaN).allowed).toBe(true)
  })

  it("rejects limits that cannot work", () => {
    expect(() => new TokenBuckets({ ratePerSecond: 1, capacity: 1, maxKeys: 0 })).toThrow(RangeError)
    expect(() => new TokenBuckets({ ratePerSecond: 1, capacity: 1, maxKeys: 1.5 })).toThrow(RangeError)
    expect(() => new TokenBuckets({ ratePerSecond: -1, capacity: 1, maxKeys: 1 })).toThrow(RangeError)
  })

  it.prop(
    "behaves as pure buckets in a bounded least-recently-updated list",
    [
      fc.record({
        ratePerSecond: fc.integer({ min: 0, max: 20 }),
        capacity: fc.integer({ min: 0, max: 5 }),
        maxKeys: fc.integer({ min: 1, max: 6 })
      }),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: -50, max: 300 }), fc.integer({ min: 0, max: 3 })), { maxLength: 300 })
    ],
    ([config, ops]) => {
      const buckets = new TokenBuckets(config)
      // Oracle: [key, bucket] pairs, least recently updated first.
      let order: Array<readonly [string, TokenBucket]> = []
      let now = 0
      for (const [index, advance, cost] of ops) {
        now += advance
        const key = `k${index}`
        const known = order.find(([k]) => k === key)
        let bucket: TokenBucket
        if (known === undefined) {
          if (order.length >= config.maxKeys) order = order.slice(1)
          bucket = makeTokenBucket(config.capacity, now)
        } else {
          bucket = known[1]
          order = order.filter(([k]) => k !== key)
        }
        const expected = take(bucket, { ratePerSecond: config.ratePerSecond, capacity: config.capacity, now, cost })
        order.push([key, expected.bucket])
        expect(buckets.take(key, now, cost)).toEqual(expected)
        expect(buckets.size).toBe(order.length)
        expect(buckets.size).toBeLessThanOrEqual(config.maxKeys)
      }
      for (const [key, bucket] of order) expect(buckets.get(key)).toEqual(bucket)
    },
    propOptions(300)
  )
})
