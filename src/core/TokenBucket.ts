/**
 * Token buckets: the rate limits of the resource manager (requests per peer,
 * handshakes per address, work of the whole node). A bucket holds up to
 * `capacity` tokens and gains `ratePerSecond` of them per second; an action
 * costing `cost` tokens is allowed when that many are there, and takes them.
 * So over any interval of `t` ms a bucket allows at most
 * `capacity + ratePerSecond · t / 1000` tokens' worth of actions: a burst of
 * `capacity`, then the rate.
 *
 * `TokenBucket` is an immutable value and `take` a pure function. Time (`now`,
 * ms) is an argument; time that goes backwards (a clock stepped back) neither
 * refills a bucket nor throws, and the bucket keeps its later `updatedAt`, so
 * the same interval is never credited twice.
 *
 * `TokenBuckets` keeps one bucket per key (a peer, an address) for a bounded
 * number of keys. Like `RttEstimator` it is a small mutable object, because it
 * is consulted on every request and a persistent-map copy per request would
 * cost more than the request's own bookkeeping; it is owned by one service,
 * its methods are synchronous (so atomic between fibers) and it never hands
 * out anything it mutates (buckets are immutable values).
 *
 * @since 0.1.0
 */

/** A bucket's state: tokens held when it was last updated, and when (ms). */
export interface TokenBucket {
  /** Tokens held at `updatedAt`; between 0 and the capacity it is used with. */
  readonly tokens: number
  /** The latest time (ms) the bucket was refilled to. */
  readonly updatedAt: number
}

/** What one `take` asks for, and the limits of the bucket it is taken from. */
export interface TakeOptions {
  /** Tokens gained per second; 0 makes the bucket a fixed allowance. */
  readonly ratePerSecond: number
  /** Most tokens held: the largest burst. */
  readonly capacity: number
  /** The current time, ms. */
  readonly now: number
  /** Tokens the action costs (default 1); 0 is always allowed. */
  readonly cost?: number | undefined
}

/** The outcome of a `take`. */
export interface TakeResult {
  /** Whether the action may go ahead; its cost has then been taken. */
  readonly allowed: boolean
  /** The bucket after the take (refilled up to `now`, less the cost when allowed). */
  readonly bucket: TokenBucket
  /**
   * 0 when allowed; otherwise how long (the least whole number of ms) until
   * the same take would be allowed if nothing else is taken meanwhile, or `Infinity` when it never will (the cost exceeds the
   * capacity, or the rate is 0).
   */
  readonly retryAfterMillis: number
}

const requireNonNegative = (name: string, value: number): void => {
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0, got ${value}`)
}

/** A full bucket of `capacity` tokens at `now`; throws a RangeError for a negative capacity or a time that is not finite. */
export const makeTokenBucket = (capacity: number, now: number): TokenBucket => {
  requireNonNegative("capacity", capacity)
  if (!Number.isFinite(now)) throw new RangeError(`now must be a finite number, got ${now}`)
  return { tokens: capacity, updatedAt: now }
}

/**
 * Tokens after `elapsed` ms, before the capacity clamp. `take` and the
 * retry-time check share this one expression so that waiting exactly
 * `retryAfterMillis` is always enough, floating-point rounding included.
 */
const refilled = (tokens: number, elapsed: number, ratePerSecond: number): number =>
  tokens + (elapsed * ratePerSecond) / 1000

/**
 * Takes `cost` tokens (default 1) from `bucket` at `now` if it holds them
 * after refilling. The bucket is first refilled by the time since
 * `updatedAt` (never above `capacity`; not at all if `now` is earlier), then
 * debited when allowed; a refused take returns the refilled bucket. Throws a
 * RangeError for a negative or non-finite rate, capacity or cost (programming
 * errors, not input).
 */
export const take = (bucket: TokenBucket, options: TakeOptions): TakeResult => {
  const { ratePerSecond, capacity, now } = options
  const cost = options.cost ?? 1
  requireNonNegative("ratePerSecond", ratePerSecond)
  requireNonNegative("capacity", capacity)
  requireNonNegative("cost", cost)
  // `now > updatedAt` is false for a clock that went back and for NaN: no refill, and updatedAt stays.
  const elapsed = now > bucket.updatedAt ? now - bucket.updatedAt : 0
  const updatedAt = elapsed > 0 ? now : bucket.updatedAt
  // The clamp also trims a bucket made with a larger capacity than this take's.
  const tokens = Math.min(capacity, refilled(bucket.tokens, elapsed, ratePerSecond))
  if (tokens >= cost) {
    return { allowed: true, bucket: { tokens: tokens - cost, updatedAt }, retryAfterMillis: 0 }
  }
  const refused: TokenBucket = { tokens, updatedAt }
  if (cost > capacity || ratePerSecond === 0) return { allowed: false, bucket: refused, retryAfterMillis: Infinity }
  let wait = Math.ceil(((cost - tokens) * 1000) / ratePerSecond)
  // Rounding can leave the refill after `wait` a hair short of the cost, or
  // make `wait` one more than needed; one step fixes either, so the hint is
  // the least whole number of ms that suffices.
  if (refilled(tokens, wait, ratePerSecond) < cost) wait += 1
  else if (wait > 1 && refilled(tokens, wait - 1, ratePerSecond) >= cost) wait -= 1
  return { allowed: false, bucket: refused, retryAfterMillis: wait }
}

/** Limits of a `TokenBuckets`: every key's bucket has the same rate and capacity. */
export interface TokenBucketsConfig {
  /** Tokens each bucket gains per second. */
  readonly ratePerSecond: number
  /** Most tokens each bucket holds; a new key starts with this many. */
  readonly capacity: number
  /** Most keys remembered; at least 1. */
  readonly maxKeys: number
}

/**
 * One token bucket per key (mutable, see the module comment). Bound:
 * `maxKeys` buckets; when a new key arrives at the bound, the key updated
 * least recently (by any take, allowed or not) is forgotten.
 *
 * A forgotten key starts again with a full bucket. That is a deliberate
 * trade: the bound is what caps memory against an attacker with many keys
 * (addresses, ids), and such an attacker gains nothing from the fresh
 * buckets that a new key would not get anyway; what caps the node's total
 * work is a single global bucket, which the caller checks as well and which
 * is never forgotten. An attacker with few keys stays in the map, because
 * each of its takes makes its key the most recently updated.
 */
export class TokenBuckets {
  /** The limits it was made with. */
  readonly config: TokenBucketsConfig
  /** Buckets in the order their keys were last updated, oldest first (a JS Map keeps insertion order). */
  private readonly buckets = new Map<string, TokenBucket>()

  /** No buckets yet; throws a RangeError for limits that cannot work. */
  constructor(config: TokenBucketsConfig) {
    requireNonNegative("ratePerSecond", config.ratePerSecond)
    requireNonNegative("capacity", config.capacity)
    if (!Number.isSafeInteger(config.maxKeys) || config.maxKeys < 1) {
      throw new RangeError(`maxKeys must be a positive integer, got ${config.maxKeys}`)
    }
    this.config = { ratePerSecond: config.ratePerSecond, capacity: config.capacity, maxKeys: config.maxKeys }
  }

  /**
   * Takes `cost` tokens (default 1) from `key`'s bucket at `now`, as `take`
   * does; a key not remembered starts with a full bucket, evicting the least
   * recently updated key when `maxKeys` are remembered.
   */
  take(key: string, now: number, cost = 1): TakeResult {
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= this.config.maxKeys) {
        const oldest = this.buckets.keys().next()
        if (oldest.done !== true) this.buckets.delete(oldest.value)
      }
      // A take at a non-finite time must not throw (time is input here), so the bucket is made directly.
      bucket = { tokens: this.config.capacity, updatedAt: Number.isFinite(now) ? now : 0 }
    } else {
      // Re-inserting below moves the key to the most recently updated end.
      this.buckets.delete(key)
    }
    const result = take(bucket, { ratePerSecond: this.config.ratePerSecond, capacity: this.config.capacity, now, cost })
    this.buckets.set(key, result.bucket)
    return result
  }

  /** `key`'s bucket as last updated, if remembered; reading does not count as an update. */
  get(key: string): TokenBucket | undefined {
    return this.buckets.get(key)
  }

  /**
   * Forgets `key`, whose next take then starts with a full bucket (so not for
   * a peer that merely disconnected: reconnecting would reset its limit);
   * true if it was remembered.
   */
  delete(key: string): boolean {
    return this.buckets.delete(key)
  }

  /** Keys remembered: at most `maxKeys`. */
  get size(): number {
    return this.buckets.size
  }
}
