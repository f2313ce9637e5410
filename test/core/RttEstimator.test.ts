import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { NodeId } from "../../src/core/Id.js"
import {
  defaultRttEstimatorConfig,
  RttEstimator,
  type RttStats,
  timeoutOf,
  updateRttStats
} from "../../src/core/RttEstimator.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

// ---------------------------------------------------------------------------
// Oracle: RFC 6298 written out over a whole sample list, and an LRU kept as a
// plain array of peers (least recently sampled first) with each peer's samples
// since it last entered the array.

const oracleStats = (samples: ReadonlyArray<number>): RttStats | undefined => {
  let srtt: number | undefined
  let rttvar = 0
  for (const r of samples) {
    if (srtt === undefined) {
      srtt = r
      rttvar = r / 2
    } else {
      rttvar = 0.75 * rttvar + 0.25 * Math.abs(srtt - r)
      srtt = 0.875 * srtt + 0.125 * r
    }
  }
  return srtt === undefined ? undefined : { srtt, rttvar }
}

const clampedTimeout = (stats: RttStats, minMs: number, maxMs: number): number =>
  Math.min(maxMs, Math.max(minMs, stats.srtt + 3 * stats.rttvar))

class OracleLru {
  readonly order: Array<number> = []
  readonly samples = new Map<number, Array<number>>()
  readonly all: Array<number> = []
  constructor(readonly capacity: number) {}
  record(index: number, ms: number): void {
    this.all.push(ms)
    const at = this.order.indexOf(index)
    if (at >= 0) {
      this.order.splice(at, 1)
    } else {
      this.samples.set(index, [])
      if (this.order.length === this.capacity) {
        const evicted = this.order.shift()
        if (evicted !== undefined) this.samples.delete(evicted)
      }
    }
    this.order.push(index)
    this.samples.get(index)?.push(ms)
  }
}

const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b))

// Test ids need not be real hashes: the estimator only uses them as map keys.
const peer = (index: number): NodeId => `peer-${index}` as NodeId

// More peers than the store's first 16 slots, so that growing it is exercised too.
const POOL = 48

const arbSamples = (pool: number, maxLength: number) =>
  fc.array(fc.tuple(fc.integer({ min: 0, max: pool - 1 }), fc.integer({ min: 0, max: 5000 })), { maxLength, size: "max" })

describe("RttEstimator", () => {
  it("follows RFC 6298 on a worked example", () => {
    const estimator = new RttEstimator({ minMs: 100, maxMs: 2000 })
    const a = peer(1)
    // RFC 6298 2.1: one second before the first measurement.
    expect(estimator.overdueAfter(a)).toBe(1000)
    estimator.record(a, 100)
    expect(estimator.statsOf(a)).toEqual({ srtt: 100, rttvar: 50 })
    expect(estimator.overdueAfter(a)).toBe(250)
    estimator.record(a, 200)
    // rttvar = 3/4·50 + 1/4·|100 − 200| = 62.5; srtt = 7/8·100 + 1/8·200 = 112.5; 112.5 + 3·62.5 = 300
    expect(estimator.statsOf(a)).toEqual({ srtt: 112.5, rttvar: 62.5 })
    expect(estimator.overdueAfter(a)).toBe(300)
    // Clamped at both ends.
    const fast = new RttEstimator({ minMs: 100, maxMs: 2000 })
    fast.record(a, 0)
    expect(fast.overdueAfter(a)).toBe(100)
    const slow = new RttEstimator({ minMs: 100, maxMs: 2000 })
    slow.record(a, 1500)
    expect(slow.overdueAfter(a)).toBe(2000)
    // The pure update agrees.
    expect(updateRttStats(updateRttStats(undefined, 100), 200)).toEqual({ srtt: 112.5, rttvar: 62.5 })
    expect(timeoutOf({ srtt: 112.5, rttvar: 62.5 }, estimator.config)).toBe(300)
  })

  it("gives a peer never measured the network-wide timeout, and initialMs (within the bounds) before any sample", () => {
    expect(new RttEstimator().networkOverdueAfter()).toBe(1000)
    expect(new RttEstimator({ minMs: 10, maxMs: 500, initialMs: 1000 }).networkOverdueAfter()).toBe(500)
    expect(new RttEstimator({ minMs: 300, maxMs: 500, initialMs: 100 }).overdueAfter(peer(1))).toBe(300)
    expect(() => new RttEstimator({ initialMs: Number.NaN })).toThrow(RangeError)
    const estimator = new RttEstimator({ minMs: 10, maxMs: 2000, initialMs: 1500 })
    expect(estimator.networkOverdueAfter()).toBe(1500)
    expect(estimator.networkStats).toBeUndefined()
    estimator.record(peer(1), 40)
    estimator.record(peer(2), 80)
    // Network: first 40 → (40, 20); then rttvar = 15 + 10 = 25, srtt = 35 + 10 = 45; 45 + 3·25 = 120.
    expect(estimator.networkStats).toEqual({ srtt: 45, rttvar: 25 })
    expect(estimator.overdueAfter(peer(3))).toBe(120)
    expect(estimator.networkOverdueAfter()).toBe(120)
    // A measured peer gets its own, not the network's.
    expect(estimator.overdueAfter(peer(1))).toBe(40 + 3 * 20)
  })

  it("ignores samples that are negative or not finite", () => {
    const estimator = new RttEstimator()
    estimator.record(peer(1), 50)
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      estimator.record(peer(1), bad)
      estimator.record(peer(2), bad)
    }
    expect(estimator.statsOf(peer(1))).toEqual({ srtt: 50, rttvar: 25 })
    expect(estimator.statsOf(peer(2))).toBeUndefined()
    expect(estimator.networkStats).toEqual({ srtt: 50, rttvar: 25 })
    expect(estimator.size).toBe(1)
  })

  it("never hands out its internal entries", () => {
    const estimator = new RttEstimator()
    estimator.record(peer(1), 50)
    const copy = estimator.statsOf(peer(1)) as { srtt: number } // a deliberate attempt to write through
    copy.srtt = 1
    expect(estimator.statsOf(peer(1))).toEqual({ srtt: 50, rttvar: 25 })
  })

  it("rejects bounds that cannot work", () => {
    expect(new RttEstimator().config).toEqual(defaultRttEstimatorConfig)
    expect(() => new RttEstimator({ minMs: -1 })).toThrow(RangeError)
    expect(() => new RttEstimator({ minMs: 500, maxMs: 100 })).toThrow(RangeError)
    expect(() => new RttEstimator({ capacity: 0 })).toThrow(RangeError)
    expect(() => new RttEstimator({ capacity: 2.5 })).toThrow(RangeError)
    expect(() => new RttEstimator({ maxMs: Number.NaN })).toThrow(RangeError)
  })

  it.prop(
    "matches the oracle after every sample: per-peer LRU stats, network stats, clamped timeouts",
    [arbSamples(POOL, 200), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 3000 })],
    ([samples, capacity, minMs, extra]) => {
      const maxMs = minMs + extra
      const estimator = new RttEstimator({ minMs, maxMs, capacity })
      const oracle = new OracleLru(capacity)
      // Mismatches are collected and asserted once: an expect per check would make the run slow.
      const mismatches: Array<string> = []
      samples.forEach(([index, ms], step) => {
        estimator.record(peer(index), ms)
        oracle.record(index, ms)
        if (estimator.size !== oracle.order.length || estimator.size > capacity) {
          mismatches.push(`step ${step}: size ${estimator.size}, oracle ${oracle.order.length}`)
        }
        const network = oracleStats(oracle.all)
        const actualNetwork = estimator.networkStats
        if (
          network === undefined || actualNetwork === undefined ||
          !close(actualNetwork.srtt, network.srtt) || !close(actualNetwork.rttvar, network.rttvar)
        ) {
          mismatches.push(`step ${step}: network ${JSON.stringify(actualNetwork)}, oracle ${JSON.stringify(network)}`)
          return
        }
        for (let other = 0; other < POOL; other++) {
          const own = oracle.samples.get(other)
          const expected = own === undefined ? undefined : oracleStats(own)
          const actual = estimator.statsOf(peer(other))
          const timeout = estimator.overdueAfter(peer(other))
          const statsMatch = expected === undefined
            ? actual === undefined
            : actual !== undefined && close(actual.srtt, expected.srtt) && close(actual.rttvar, expected.rttvar)
          const expectedTimeout = clampedTimeout(expected ?? network, minMs, maxMs)
          if (!statsMatch || !close(timeout, expectedTimeout) || timeout < minMs || timeout > maxMs) {
            mismatches.push(
              `step ${step}, peer ${other}: ${JSON.stringify(actual)} → ${timeout}, ` +
                `oracle ${JSON.stringify(expected)} → ${expectedTimeout}`
            )
          }
        }
      })
      expect(mismatches).toEqual([])
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it("stays at capacity over many peers and remembers the most recent ones", () => {
    const estimator = new RttEstimator({ capacity: 1024 })
    for (let i = 0; i < 50_000; i++) estimator.record(peer(i % 5000), 50 + (i % 7))
    expect(estimator.size).toBe(1024)
    for (let i = 50_000 - 1024; i < 50_000; i++) expect(estimator.statsOf(peer(i % 5000))).toBeDefined()
    expect(estimator.statsOf(peer((50_000 - 1025) % 5000))).toBeUndefined()
  })
})
