/** Helpers shared by the benchmarks: seeded bytes and percentiles. */
import type { RandomBytes } from "../src/core/Id.js"

/** A deterministic byte stream (xorshift32): the same seed gives the same ids, so runs are comparable. */
export const seededBytes = (seed: number): RandomBytes => {
  let state = seed >>> 0 || 1
  return (length) => {
    const out = new Uint8Array(length)
    for (let i = 0; i < length; i++) {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      out[i] = state & 0xff
    }
    return out
  }
}

/** The `p`-th percentile (nearest rank) of `values`; 0 for none. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0
}
