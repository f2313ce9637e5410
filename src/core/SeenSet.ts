/**
 * A bounded memory of recently seen message ids, used to drop duplicates
 * (a message relayed twice, a retried delivery). It keeps two generations of
 * ids, `current` and `previous`; when `current` is full or old it becomes
 * `previous` and the old `previous` is forgotten in one step, so forgetting
 * costs nothing per id and memory has a hard ceiling. The set is immutable:
 * every call returns a new value and leaves its input untouched.
 *
 * Guarantees, with `half = floor(capacity / 2)` and `halfWindow = windowMs / 2`,
 * for an id first marked (markSeen returned `duplicate: false`) at time `t`,
 * and for monotonically non-decreasing `now` values:
 * - it is always reported as seen at time `now` if `now - t < halfWindow`
 *   and at most `half` other ids have been newly marked since;
 * - it is never reported as seen once `now - t >= windowMs`;
 * - the set never holds more than `2 * half <= capacity` ids.
 * A duplicate does not refresh an id: the guarantee counts from its first marking.
 *
 * @since 0.1.0
 */
import { HashSet } from "effect"

/** Limits of a seen set. */
export interface SeenSetConfig {
  /** Most ids held in total (both generations); at least 2. */
  readonly capacity: number
  /** Longest time, in ms, an id may be remembered; ids are guaranteed to be remembered for half of it. */
  readonly windowMs: number
}

/** Default limits: 100,000 ids, a 14-day window. */
export const defaultSeenSetConfig: SeenSetConfig = { capacity: 100_000, windowMs: 14 * 24 * 60 * 60 * 1000 }

/**
 * Recently seen ids in two generations. Bound: `current` holds at most
 * `floor(capacity / 2)` ids and so does `previous`; an id is in at most one.
 */
export interface SeenSet {
  readonly config: SeenSetConfig
  readonly current: HashSet.HashSet<string>
  readonly previous: HashSet.HashSet<string>
  /**
   * When the current generation began, aligned to multiples of `windowMs / 2`
   * after an age rotation so that `previous` never starts earlier than
   * `windowMs / 2` before `current`; this gives the upper retention bound.
   */
  readonly currentStartedAt: number
}

/** An empty seen set; throws a RangeError for a capacity below 2 or a non-positive window (programming errors). */
export const makeSeenSet = (now: number, config: Partial<SeenSetConfig> = {}): SeenSet => {
  const full: SeenSetConfig = { ...defaultSeenSetConfig, ...config }
  if (!Number.isSafeInteger(full.capacity) || full.capacity < 2) {
    throw new RangeError(`capacity must be an integer >= 2, got ${full.capacity}`)
  }
  if (!Number.isFinite(full.windowMs) || full.windowMs <= 0) {
    throw new RangeError(`windowMs must be a positive number, got ${full.windowMs}`)
  }
  return { config: full, current: HashSet.empty(), previous: HashSet.empty(), currentStartedAt: now }
}

/**
 * Rotates the generations as needed at time `now`; returns `set` itself when
 * nothing is due. Age is checked first, then size (`sizeRotation` is only
 * asked for when an id is about to be inserted, so a full current generation
 * is not rotated by a mere query).
 */
const housekeep = (set: SeenSet, now: number, sizeRotation: boolean): SeenSet => {
  const halfWindow = set.config.windowMs / 2
  const age = now - set.currentStartedAt
  if (age >= set.config.windowMs) {
    // Both generations began more than windowMs / 2 before the last possible insertion: forget everything.
    return { config: set.config, current: HashSet.empty(), previous: HashSet.empty(), currentStartedAt: now }
  }
  if (age >= halfWindow) {
    return {
      config: set.config,
      current: HashSet.empty(),
      previous: set.current,
      currentStartedAt: set.currentStartedAt + halfWindow
    }
  }
  if (sizeRotation && HashSet.size(set.current) >= Math.floor(set.config.capacity / 2)) {
    return { config: set.config, current: HashSet.empty(), previous: set.current, currentStartedAt: now }
  }
  return set
}

const contains = (set: SeenSet, id: string): boolean => HashSet.has(set.current, id) || HashSet.has(set.previous, id)

/**
 * Records `id` as seen at `now`. `duplicate` is true when it was already
 * remembered; then the returned set differs from the input only by rotation.
 */
export const markSeen = (
  set: SeenSet,
  id: string,
  now: number
): { readonly set: SeenSet; readonly duplicate: boolean } => {
  const aged = housekeep(set, now, false)
  if (contains(aged, id)) return { set: aged, duplicate: true }
  const rotated = housekeep(aged, now, true)
  return { set: { ...rotated, current: HashSet.add(rotated.current, id) }, duplicate: false }
}

/** True when `id` is remembered at `now`; always agrees with what `markSeen(set, id, now).duplicate` would say. */
export const hasSeen = (set: SeenSet, id: string, now: number): boolean => contains(housekeep(set, now, false), id)

/** Number of ids held (at most `capacity`), before any rotation due by time. */
export const seenSetSize = (set: SeenSet): number => HashSet.size(set.current) + HashSet.size(set.previous)
