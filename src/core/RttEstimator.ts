/**
 * Round-trip-time estimates that tell a lookup when an unanswered query is
 * probably not coming back, so it stops waiting out dead peers and keeps
 * alpha live queries going. Per peer it keeps TCP's smoothed RTT and RTT
 * variation (Jacobson/Karels as in RFC 6298: gains 1/8 and 1/4, timeout =
 * srtt + 3·rttvar, clamped to [minMs, maxMs]; see `VARIATION_FACTOR`); a peer never measured gets the
 * timeout of a network-wide estimate fed by every sample, and before any
 * sample at all `initialMs` (1 s, RFC 6298's initial RTO: a node's first
 * lookup, seeded from a table that may hold peers gone since, would
 * otherwise wait out each dead one for the whole call timeout).
 *
 * Only answered queries are samples. A query that failed or never answered
 * is not one and does not back the timeout off as TCP would: TCP backs off
 * to spare a congested path it must retransmit on, while a lookup never
 * retransmits and an overdue query keeps running, so a longer timeout would
 * only make the lookup wait longer on a peer that is probably gone. A slow
 * peer's late answer is a true sample (each query is sent once, so Karn's
 * ambiguity does not arise) and raises its timeout by itself.
 *
 * Unlike the rest of the core, the estimator is a small mutable object: one
 * per node, fed on every answered query of every lookup, and a simulator runs
 * 10,000 nodes, so a sample must cost a map update in place (about 0.1 µs)
 * rather than a persistent-map copy (about 3 µs). It is owned by one service,
 * its methods are synchronous (so atomic between fibers), and it never hands
 * out its internal entries. The update rule itself is the pure
 * `updateRttStats`, and `timeoutOf` turns stats into a timeout.
 *
 * Bound: at most `capacity` peers, least recently sampled evicted first,
 * about 30 bytes each.
 *
 * @since 0.1.0
 */
import type { NodeId } from "./Id.js"

/** Smoothed round-trip time and its mean deviation, in ms (RFC 6298's SRTT and RTTVAR). */
export interface RttStats {
  readonly srtt: number
  readonly rttvar: number
}

/** Bounds of an estimator. */
export interface RttEstimatorConfig {
  /** Smallest timeout given, in ms; also stands in for RFC 6298's clock granularity. */
  readonly minMs: number
  /** Largest timeout given, in ms: the call timeout. */
  readonly maxMs: number
  /** The timeout before anything was measured, in ms (kept within [minMs, maxMs]). */
  readonly initialMs: number
  /** Most peers remembered; at least 1. */
  readonly capacity: number
}

/**
 * Defaults: timeouts between 100 ms and the 2 s call timeout, 1 s before any
 * sample, 256 peers
 * remembered (about 7 KB). The peers a node asks again and again are its
 * routing table's, about k·log2(N / k) ≈ 200 for k = 20 and N = 10,000;
 * strangers met deeper in a lookup get the network-wide estimate.
 */
export const defaultRttEstimatorConfig: RttEstimatorConfig = { minMs: 100, maxMs: 2000, initialMs: 1000, capacity: 256 }

/** RFC 6298's alpha: the weight of a new sample in the smoothed RTT. */
const SRTT_GAIN = 1 / 8
/** RFC 6298's beta: the weight of a new deviation in the RTT variation. */
const RTTVAR_GAIN = 1 / 4
/**
 * RFC 6298's K: the timeout allows this many mean deviations above the
 * smoothed RTT. TCP takes 4 because a timeout there retransmits and backs
 * off; here it only marks a query slow (the call goes on, a late answer
 * counts) and lets the lookup ask another peer. 2 (about the 95th
 * percentile of round trips) was chosen while each disjoint path waited out
 * its own silent peers one wave after another; since a path's window also
 * counts peers the other paths heard (see `DisjointLookup`), silent peers
 * are waited out side by side and 2 bought little time, while about one of
 * a resolve's k closest, slow but alive, went overdue and was left out of
 * the result. 3 keeps them (a model of 1,000 nodes with 30 % silent:
 * 19.8 of the true 20 closest found on average, against 19.4 with 2) for
 * about 25 ms more at the resolve's p95 (see docs/decisions.md).
 */
const VARIATION_FACTOR = 3

/** The stats after one more sample (RFC 6298 2.2 for the first one, 2.3 afterwards). */
export const updateRttStats = (stats: RttStats | undefined, sampleMs: number): RttStats => {
  if (stats === undefined) return { srtt: sampleMs, rttvar: sampleMs / 2 }
  // RTTVAR is updated first, with the old SRTT, as RFC 6298 prescribes.
  const rttvar = (1 - RTTVAR_GAIN) * stats.rttvar + RTTVAR_GAIN * Math.abs(stats.srtt - sampleMs)
  return { srtt: (1 - SRTT_GAIN) * stats.srtt + SRTT_GAIN * sampleMs, rttvar }
}

/** The timeout the stats call for: srtt + 3·rttvar, clamped to the configured bounds. */
export const timeoutOf = (stats: RttStats, config: RttEstimatorConfig): number =>
  Math.min(config.maxMs, Math.max(config.minMs, stats.srtt + VARIATION_FACTOR * stats.rttvar))

/** Checks bounds that cannot work; throws a RangeError (a programming error). */
const checkConfig = (config: RttEstimatorConfig): void => {
  if (!Number.isFinite(config.minMs) || config.minMs < 0) {
    throw new RangeError(`minMs must be a finite number >= 0, got ${config.minMs}`)
  }
  if (!Number.isFinite(config.maxMs) || config.maxMs < config.minMs) {
    throw new RangeError(`maxMs must be a finite number >= minMs (${config.minMs}), got ${config.maxMs}`)
  }
  if (!Number.isFinite(config.initialMs)) {
    throw new RangeError(`initialMs must be a finite number, got ${config.initialMs}`)
  }
  if (!Number.isSafeInteger(config.capacity) || config.capacity < 1) {
    throw new RangeError(`capacity must be a positive integer, got ${config.capacity}`)
  }
}

/** Slots the stats store starts with; it doubles on demand up to `capacity`. */
const INITIAL_SLOTS = 16

/**
 * Per-peer and network-wide RTT estimates of one node (mutable, see the
 * module comment). Bound: `capacity` peers, least recently sampled evicted
 * first. A peer costs one map entry (id to slot number) and two doubles in a
 * typed array, about 30 bytes (measured), less than half of an object per peer.
 */
export class RttEstimator {
  /** The bounds it was made with. */
  readonly config: RttEstimatorConfig
  /** Each peer's slot, in the order peers were last sampled, oldest first (a JS Map keeps insertion order). */
  private readonly slots = new Map<NodeId, number>()
  /** srtt of slot i at 2i, rttvar at 2i + 1. */
  private stats = new Float64Array(2 * INITIAL_SLOTS)
  /** Every sample of every peer smoothed together; undefined before the first sample. */
  private network: RttStats | undefined = undefined

  /** An estimator that has measured nothing; throws a RangeError for bounds that cannot work. */
  constructor(config: Partial<RttEstimatorConfig> = {}) {
    const full = { ...defaultRttEstimatorConfig, ...config }
    checkConfig(full)
    this.config = full
  }

  /**
   * Records that `peer` answered after `sampleMs`. A sample that is negative
   * or not finite (a clock that jumped back) is ignored.
   */
  record(peer: NodeId, sampleMs: number): void {
    if (!(sampleMs >= 0) || !Number.isFinite(sampleMs)) return
    this.network = updateRttStats(this.network, sampleMs)
    const known = this.slots.get(peer)
    if (known !== undefined) {
      const next = updateRttStats(this.read(known), sampleMs)
      this.write(known, next.srtt, next.rttvar)
      // Re-inserting moves the peer to the most recent end.
      this.slots.delete(peer)
      this.slots.set(peer, known)
      return
    }
    let slot = this.slots.size
    if (slot >= this.config.capacity) {
      // Full: the least recently sampled peer gives up its slot.
      const oldest = this.slots.entries().next()
      if (oldest.done === true) return // unreachable: capacity >= 1, so a full map has an entry
      this.slots.delete(oldest.value[0])
      slot = oldest.value[1]
    } else if (2 * slot >= this.stats.length) {
      const grown = new Float64Array(Math.min(2 * this.stats.length, 2 * this.config.capacity))
      grown.set(this.stats)
      this.stats = grown
    }
    this.slots.set(peer, slot)
    this.write(slot, sampleMs, sampleMs / 2)
  }

  private read(slot: number): RttStats {
    // Slots are below capacity and the array has grown to hold every slot handed out, so both reads are defined.
    return { srtt: this.stats[2 * slot] as number, rttvar: this.stats[2 * slot + 1] as number }
  }

  private write(slot: number, srtt: number, rttvar: number): void {
    this.stats[2 * slot] = srtt
    this.stats[2 * slot + 1] = rttvar
  }

  /** What is remembered of `peer` (a copy), if anything. */
  statsOf(peer: NodeId): RttStats | undefined {
    const slot = this.slots.get(peer)
    return slot === undefined ? undefined : this.read(slot)
  }

  /** The network-wide stats, undefined before any sample. */
  get networkStats(): RttStats | undefined {
    return this.network
  }

  /** Peers remembered: at most `capacity`. */
  get size(): number {
    return this.slots.size
  }

  /**
   * How long to wait for `peer` before treating its query as overdue: its own
   * timeout when it is remembered, else the network-wide one, else `initialMs`.
   * Reading does not count as use for the eviction order.
   */
  overdueAfter(peer: NodeId): number {
    const slot = this.slots.get(peer)
    return slot === undefined ? this.networkOverdueAfter() : timeoutOf(this.read(slot), this.config)
  }

  /** The network-wide timeout: what a peer never measured gets. */
  networkOverdueAfter(): number {
    return this.network === undefined
      ? Math.min(this.config.maxMs, Math.max(this.config.minMs, this.config.initialMs))
      : timeoutOf(this.network, this.config)
  }
}
