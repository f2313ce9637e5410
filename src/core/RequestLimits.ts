/**
 * How much work one peer may ask of a node: token buckets per authenticated
 * node id, per source IP (one host with many ids) and one for the whole node,
 * checked in that order before a request reaches its handler. A request over
 * any of them is refused at once (a few microseconds) instead of being
 * answered (a lookup in the routing table, a store, a signature check), so a
 * flood from one peer, or from one host with many ids, costs the node little
 * and leaves capacity for everyone else. Mutable, like `TokenBuckets`; time
 * is an argument.
 *
 * @since 0.2.0
 */
import { makeTokenBucket, take, type TokenBucket, TokenBuckets } from "./TokenBucket.js"

/** Rates and bursts of the request limits. */
export interface RequestLimitsConfig {
  /** Requests per second one node id may sustain. */
  readonly perPeerRate: number
  /** Requests one node id may send in a burst. */
  readonly perPeerBurst: number
  /** Requests per second one source IP may sustain, over all its node ids. */
  readonly perIpRate: number
  /** Requests one source IP may send in a burst. */
  readonly perIpBurst: number
  /** Requests per second the node answers in total. */
  readonly globalRate: number
  /** Requests the node answers in a burst, in total. */
  readonly globalBurst: number
  /** Peers (and IPs) whose buckets are remembered; beyond it the least recently active are forgotten. */
  readonly maxTracked: number
}

/**
 * Defaults. An honest node asks one peer for a few requests a second (a
 * lookup sends one query per peer; hand-over and replication send one per
 * record, in bursts after a join): 100/s with bursts of 400 leaves room for
 * that, while a flood of 26,000/s from one connection is cut to 100/s. One
 * host may run a few nodes (3x). The global bucket (2,000/s, about a quarter
 * of what one core answers) keeps a node responsive however many peers ask.
 */
export const defaultRequestLimits: RequestLimitsConfig = Object.freeze({
  perPeerRate: 100,
  perPeerBurst: 400,
  perIpRate: 300,
  perIpBurst: 1200,
  globalRate: 2000,
  globalBurst: 4000,
  maxTracked: 4096
})

/** Which limit refused a request. */
export type RequestRefusal = "PeerRate" | "IpRate" | "GlobalRate"

/** The answer for one request. */
export type RequestAdmission =
  | { readonly _tag: "Admit" }
  | { readonly _tag: "Refuse"; readonly reason: RequestRefusal; readonly retryAfterMillis: number }

const ADMIT: RequestAdmission = Object.freeze({ _tag: "Admit" })

/** Per-peer, per-IP and global request budgets of one node. */
export class RequestLimiter {
  readonly config: RequestLimitsConfig
  private readonly peers: TokenBuckets
  private readonly ips: TokenBuckets
  private global: TokenBucket
  private readonly refused: Record<RequestRefusal, number> = { PeerRate: 0, IpRate: 0, GlobalRate: 0 }

  constructor(now: number, config: Partial<RequestLimitsConfig> = {}) {
    this.config = { ...defaultRequestLimits, ...config }
    const { maxTracked } = this.config
    this.peers = new TokenBuckets({ ratePerSecond: this.config.perPeerRate, capacity: this.config.perPeerBurst, maxKeys: maxTracked })
    this.ips = new TokenBuckets({ ratePerSecond: this.config.perIpRate, capacity: this.config.perIpBurst, maxKeys: maxTracked })
    this.global = makeTokenBucket(this.config.globalBurst, now)
  }

  /**
   * Admits or refuses one request of `peer` (its node id) from `ip` at `now`,
   * taking a token from each bucket it passes. The narrowest bucket is
   * checked first, so a flooding peer exhausts its own budget, not the
   * node's.
   */
  admit(peer: string, ip: string, now: number): RequestAdmission {
    const byPeer = this.peers.take(peer, now)
    if (!byPeer.allowed) return this.refuse("PeerRate", byPeer.retryAfterMillis)
    const byIp = this.ips.take(ip, now)
    if (!byIp.allowed) return this.refuse("IpRate", byIp.retryAfterMillis)
    const globally = take(this.global, { ratePerSecond: this.config.globalRate, capacity: this.config.globalBurst, now })
    this.global = globally.bucket
    if (!globally.allowed) return this.refuse("GlobalRate", globally.retryAfterMillis)
    return ADMIT
  }

  private refuse(reason: RequestRefusal, retryAfterMillis: number): RequestAdmission {
    this.refused[reason] += 1
    return { _tag: "Refuse", reason, retryAfterMillis }
  }

  /** Requests refused so far, by the limit that refused them. */
  refusals(): Readonly<Record<RequestRefusal, number>> {
    return { ...this.refused }
  }
}
