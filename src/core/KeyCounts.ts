/**
 * Counts per key in a `Map` that holds only keys counted now: what the
 * resource manager's per-address, per-network and per-peer bounds keep
 * (connections, sessions, slots, circuits). A count that drops to zero takes
 * its key out, so such a map is bounded by what is held, never by who once
 * held something.
 *
 * @since 0.4.0
 */

/** `key`'s count (0 when absent). */
export const countOf = <K>(counts: ReadonlyMap<K, number>, key: K): number => counts.get(key) ?? 0

/** Adds one to `key`'s count. */
export const countUp = <K>(counts: Map<K, number>, key: K): void => {
  counts.set(key, (counts.get(key) ?? 0) + 1)
}

/** Takes one from `key`'s count, removing the key when none is left (a key not counted stays absent). */
export const countDown = <K>(counts: Map<K, number>, key: K): void => {
  const left = (counts.get(key) ?? 1) - 1
  if (left > 0) counts.set(key, left)
  else counts.delete(key)
}
