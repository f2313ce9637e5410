import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import {
  constant,
  Distribution,
  exponential,
  logNormal,
  mean,
  normalQuantile,
  quantile,
  quantileOfSorted,
  sample,
  standardNormal,
  type Uniform,
  uniformsPerSample
} from "../../src/core/Distributions.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

/** A seeded uniform stream (mulberry32), independent of the code under test. */
const seededUniform = (seed: number): Uniform => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const samples = (distribution: Distribution, count: number, seed: number): Array<number> => {
  const uniform = seededUniform(seed)
  return Array.from({ length: count }, () => sample(distribution, uniform)).sort((a, b) => a - b)
}

const fractionBelow = (values: ReadonlyArray<number>, bound: number): number =>
  values.filter((value) => value <= bound).length / values.length

const arbUniform = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })

describe("Distributions", () => {
  it("draws exactly uniformsPerSample uniforms per value", () => {
    for (const distribution of [constant(5), logNormal(50, 0.5), exponential(1000)]) {
      let calls = 0
      const uniform = seededUniform(1)
      sample(distribution, () => {
        calls++
        return uniform()
      })
      expect(calls).toBe(uniformsPerSample(distribution))
    }
    expect(uniformsPerSample(logNormal(50, 0.5))).toBe(2)
    expect(uniformsPerSample(exponential(1))).toBe(1)
    expect(uniformsPerSample(constant(1))).toBe(0)
  })

  it("Box–Muller maps known uniforms to known normals", () => {
    // sqrt(-2 ln(e^-1/2)) = 1, times cos(0) = 1.
    expect(standardNormal(1 - Math.exp(-0.5), 0)).toBeCloseTo(1, 12)
    expect(standardNormal(1 - Math.exp(-2), 0.5)).toBeCloseTo(-2, 12)
    expect(standardNormal(0, 0.3)).toBe(0)
  })

  it("log-normal samples have the configured median, spread and tail", () => {
    const distribution = logNormal(50, 0.5)
    const values = samples(distribution, 20_000, 7)
    expect(quantileOfSorted(values, 0.5)).toBeGreaterThan(48.5)
    expect(quantileOfSorted(values, 0.5)).toBeLessThan(51.5)
    expect(fractionBelow(values, quantile(distribution, 0.95))).toBeCloseTo(0.95, 2)
    expect(fractionBelow(values, quantile(distribution, 0.05))).toBeCloseTo(0.05, 2)
    const logs = values.map(Math.log)
    const logMean = logs.reduce((sum, x) => sum + x, 0) / logs.length
    const logSd = Math.sqrt(logs.reduce((sum, x) => sum + (x - logMean) ** 2, 0) / logs.length)
    expect(logMean).toBeCloseTo(Math.log(50), 1)
    expect(logSd).toBeGreaterThan(0.49)
    expect(logSd).toBeLessThan(0.51)
    const sampleMean = values.reduce((sum, x) => sum + x, 0) / values.length
    expect(sampleMean / mean(distribution)).toBeCloseTo(1, 1)
  })

  it("a log-normal with sigma 0 is its median", () => {
    expect(samples(logNormal(50, 0), 10, 3)).toEqual(Array.from({ length: 10 }, () => 50))
  })

  it("exponential samples have the configured mean and quantiles", () => {
    const distribution = exponential(3_600_000)
    const values = samples(distribution, 20_000, 11)
    const sampleMean = values.reduce((sum, x) => sum + x, 0) / values.length
    expect(sampleMean / 3_600_000).toBeGreaterThan(0.97)
    expect(sampleMean / 3_600_000).toBeLessThan(1.03)
    expect(fractionBelow(values, quantile(distribution, 0.5))).toBeCloseTo(0.5, 2)
    expect(quantile(distribution, 0.5)).toBeCloseTo(3_600_000 * Math.LN2, 6)
  })

  it("constant samples are the value", () => {
    expect(sample(constant(25), () => {
      throw new Error("a constant must not draw")
    })).toBe(25)
    expect(quantile(constant(25), 0.99)).toBe(25)
  })

  it("the normal quantile matches tabulated values", () => {
    expect(normalQuantile(0.5)).toBe(0)
    expect(normalQuantile(0.95)).toBeCloseTo(1.6448536269514722, 8)
    expect(normalQuantile(0.975)).toBeCloseTo(1.959963984540054, 8)
    expect(normalQuantile(0.99)).toBeCloseTo(2.3263478740408408, 8)
    expect(normalQuantile(0.001)).toBeCloseTo(-3.090232306167813, 8)
    expect(normalQuantile(0)).toBe(Number.NEGATIVE_INFINITY)
    expect(normalQuantile(1)).toBe(Number.POSITIVE_INFINITY)
    expect(normalQuantile(1.5)).toBeNaN()
  })

  it.prop("the normal quantile is odd-symmetric and increasing", [fc.double({ min: 1e-9, max: 0.5, noNaN: true })], ([p]) => {
    expect(normalQuantile(1 - p)).toBeCloseTo(-normalQuantile(p), 6)
    expect(normalQuantile(p)).toBeLessThanOrEqual(normalQuantile(Math.min(0.5, p + 1e-6)))
  }, { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } })

  it.prop("samples are finite and non-negative for any uniforms, even 0", [arbUniform, arbUniform], ([u1, u2]) => {
    const draws = [u1, u2]
    for (const distribution of [logNormal(50, 2), exponential(10), constant(0)]) {
      let index = 0
      const value = sample(distribution, () => draws[index++] ?? 0)
      expect(Number.isFinite(value)).toBe(true)
      expect(value).toBeGreaterThanOrEqual(0)
    }
  }, { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } })

  it("quantileOfSorted uses the nearest rank", () => {
    const oneToHundred = Array.from({ length: 100 }, (_, i) => i + 1)
    expect(quantileOfSorted(oneToHundred, 0.95)).toBe(95)
    expect(quantileOfSorted(oneToHundred, 0.5)).toBe(50)
    expect(quantileOfSorted(oneToHundred, 1)).toBe(100)
    expect(quantileOfSorted(oneToHundred, 0)).toBe(1)
    expect(quantileOfSorted([1, 2, 3, 4], 0.5)).toBe(2)
    expect(quantileOfSorted([7], 0.99)).toBe(7)
    expect(quantileOfSorted([], 0.5)).toBeUndefined()
  })

  it.prop(
    "quantileOfSorted returns the smallest value with at least a q share of values at or below it",
    [fc.array(fc.integer({ min: -1000, max: 1000 }), { minLength: 1, maxLength: 50 }), fc.double({ min: 0, max: 1, noNaN: true })],
    ([values, q]) => {
      const sorted = [...values].sort((a, b) => a - b)
      const result = quantileOfSorted(sorted, q)
      // Oracle: scan for the first value whose cumulative share reaches q.
      const expected = sorted.find((_, index) => (index + 1) / sorted.length >= q)
      expect(result).toBe(expected)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it("decodes distributions with readable errors and constructors refuse bad parameters", () => {
    const decode = Schema.decodeUnknownEither(Distribution)
    expect(decode({ _tag: "LogNormal", median: 50, sigma: 0.5 })).toEqual(Either.right(logNormal(50, 0.5)))
    expect(Either.isLeft(decode({ _tag: "LogNormal", median: 0, sigma: 0.5 }))).toBe(true)
    expect(Either.isLeft(decode({ _tag: "Exponential", mean: -1 }))).toBe(true)
    expect(() => logNormal(50, -1)).toThrow()
    expect(() => exponential(0)).toThrow()
    expect(() => constant(Number.NaN)).toThrow()
  })
})
