/** Helpers shared by the benchmarks: seeded bytes and percentiles. */
import { seededRandomBytes } from "../src/core/Id.js"
import { percentile as percentileOf } from "../src/sim/Summary.js"

/** A deterministic byte stream (xorshift32): the same seed gives the same ids, so runs are comparable. */
export const seededBytes = seededRandomBytes

/** The `p`-th percentile (nearest rank) of `values`; 0 for none. */
export const percentile = percentileOf
