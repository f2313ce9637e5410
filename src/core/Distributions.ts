/**
 * Probability distributions for the simulator, as pure functions of uniform
 * draws: link latency (log-normal, like measured internet delays), churn
 * (log-normal session lengths, exponential offline gaps) and the quantiles
 * its reports print. Sampling never reads a random source: it takes a
 * `Uniform` function (values in [0, 1)) and calls it exactly
 * `uniformsPerSample(distribution)` times, so the shell can feed it from
 * Effect's seeded `Random` and a seed replays every sample. A `Distribution`
 * is also a `Schema`, so the command line can decode one with readable errors.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** Always the same value. */
export const Constant = Schema.TaggedStruct("Constant", {
  value: Schema.Number.pipe(Schema.nonNegative(), Schema.finite())
})

/** `median · e^(sigma · Z)` with Z standard normal: a right-skewed, positive value around `median`. */
export const LogNormal = Schema.TaggedStruct("LogNormal", {
  median: Schema.Number.pipe(Schema.positive(), Schema.finite()),
  sigma: Schema.Number.pipe(Schema.nonNegative(), Schema.finite())
})

/** Memoryless waiting time with the given `mean`. */
export const Exponential = Schema.TaggedStruct("Exponential", {
  mean: Schema.Number.pipe(Schema.positive(), Schema.finite())
})

/** A distribution of non-negative numbers (the unit is the caller's: ms for latency and churn). */
export const Distribution = Schema.Union(Constant, LogNormal, Exponential)

/** A distribution of non-negative numbers. */
export type Distribution = typeof Distribution.Type

/** A source of uniform numbers in [0, 1), such as Effect's `Random.next`. */
export type Uniform = () => number

/** A constant distribution; throws on a negative or non-finite value (meant for literals in code). */
export const constant = (value: number): Distribution => Schema.decodeSync(Constant)({ _tag: "Constant", value })

/** A log-normal distribution; throws on a non-positive median or a negative sigma (meant for literals in code). */
export const logNormal = (median: number, sigma: number): Distribution =>
  Schema.decodeSync(LogNormal)({ _tag: "LogNormal", median, sigma })

/** An exponential distribution; throws on a non-positive mean (meant for literals in code). */
export const exponential = (mean: number): Distribution => Schema.decodeSync(Exponential)({ _tag: "Exponential", mean })

/** How many uniforms `sample` draws for one value of `distribution` (fixed per distribution, for replayable draw order). */
export const uniformsPerSample = (distribution: Distribution): 0 | 1 | 2 => {
  switch (distribution._tag) {
    case "Constant":
      return 0
    case "LogNormal":
      return 2
    case "Exponential":
      return 1
  }
}

/**
 * A standard normal value from two uniforms in [0, 1) (Box–Muller, cosine
 * branch). The sine branch's second value is dropped on purpose: keeping it
 * would make a sample depend on what was drawn before, not only on its own
 * two uniforms.
 */
export const standardNormal = (u1: number, u2: number): number =>
  // 1 - u1 lies in (0, 1], so the logarithm is finite.
  Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2)

/** One value of `distribution`, drawing exactly `uniformsPerSample(distribution)` uniforms. */
export const sample = (distribution: Distribution, uniform: Uniform): number => {
  switch (distribution._tag) {
    case "Constant":
      return distribution.value
    case "LogNormal": {
      const u1 = uniform()
      const u2 = uniform()
      return distribution.median * Math.exp(distribution.sigma * standardNormal(u1, u2))
    }
    case "Exponential":
      // 1 - u lies in (0, 1], so the value is finite and non-negative.
      return -distribution.mean * Math.log(1 - uniform())
  }
}

/**
 * The standard normal quantile Φ⁻¹(p) for p in (0, 1) (Acklam's rational
 * approximation, relative error below 1.2e-9); ±Infinity at 0 and 1, NaN
 * outside [0, 1].
 */
export const normalQuantile = (p: number): number => {
  if (Number.isNaN(p) || p < 0 || p > 1) return Number.NaN
  if (p === 0) return Number.NEGATIVE_INFINITY
  if (p === 1) return Number.POSITIVE_INFINITY
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239] as const
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1] as const
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783] as const
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416] as const
  const low = 0.02425
  const tail = (q: number): number =>
    (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
    ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
  if (p < low) return tail(Math.sqrt(-2 * Math.log(p)))
  if (p > 1 - low) return -tail(Math.sqrt(-2 * Math.log(1 - p)))
  const q = p - 0.5
  const r = q * q
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
}

/** The exact p-quantile of `distribution` (p in [0, 1]), e.g. to print a latency model's p95. */
export const quantile = (distribution: Distribution, p: number): number => {
  switch (distribution._tag) {
    case "Constant":
      return distribution.value
    case "LogNormal":
      return distribution.median * Math.exp(distribution.sigma * normalQuantile(p))
    case "Exponential":
      return -distribution.mean * Math.log(1 - p)
  }
}

/** The mean of `distribution`. */
export const mean = (distribution: Distribution): number => {
  switch (distribution._tag) {
    case "Constant":
      return distribution.value
    case "LogNormal":
      return distribution.median * Math.exp((distribution.sigma * distribution.sigma) / 2)
    case "Exponential":
      return distribution.mean
  }
}

/**
 * The q-quantile (q in [0, 1]) of values already sorted ascending, by the
 * nearest-rank method (always one of the values, so reports show observed
 * numbers); undefined when there are none.
 */
export const quantileOfSorted = (sorted: ReadonlyArray<number>, q: number): number | undefined => {
  if (sorted.length === 0) return undefined
  const share = Math.min(1, Math.max(0, q))
  let rank = Math.ceil(share * sorted.length)
  // Rounding can push share · length just past an integer (0.3 · 10 = 3.0000000000000004).
  if (rank > 1 && (rank - 1) / sorted.length >= share) rank--
  return sorted[Math.max(0, rank - 1)]
}
