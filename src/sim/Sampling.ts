/**
 * Seeded draws the simulator shares: which nodes are hostile, which sit
 * behind NATs. Randomness comes from the `Random` service, so a seed replays
 * the same draw.
 */
import { Effect, Random } from "effect"

/**
 * `count` distinct elements of `eligible`, drawn uniformly (a partial
 * Fisher-Yates shuffle: the first `count` places end up a uniform sample),
 * in ascending order. Draws nothing when `count` is 0.
 */
export const uniformSample = (eligible: ReadonlyArray<number>, count: number): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const pool = [...eligible]
    const take = Math.min(count, pool.length)
    for (let i = 0; i < take; i++) {
      const j = yield* Random.nextIntBetween(i, pool.length)
      const chosen = pool[j] as number // i <= j < length
      pool[j] = pool[i] as number
      pool[i] = chosen
    }
    return pool.slice(0, take).sort((a, b) => a - b)
  })
