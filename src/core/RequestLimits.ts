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
  /**
   * When the global bucket is empty, a peer may still draw on a reserve (a
   * quarter of the global rate and burst) at this small rate of its own, so
   * peers that ask little are not crowded out by many peers that each stay
   * within their own budget but add up to a flood (the soak measured 4.7 % of
   * honest requests refused by the global budget under 50 flooding peers
   * before the reserve). Flooders exhaust their reserve rate at once; total
   * work stays bounded by global plus reserve.
   */
  readonly reserveRatePerPeer: number
  /** Burst of `reserveRatePerPeer`. */
  readonly reserveBurstPerPeer: number
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
  maxTracked: 4096,
  reserveRatePerPeer: 5,
  reserveBurstPerPeer: 20
})

/**
 * Tokens a request takes: a `Store` or `StoreMail` may cost the node a
 * scrypt evaluation of a name claim (about 1.7 ms) where every other request
 * costs tens of microseconds, so it takes 20 (5 per second per peer at the
 * default rate, 100 per second in total); a `DialBack` and a `HolePunch`
 * too, since they make the node dial out.
 */
export const requestCost = (tag: string): number =>
  tag === "Store" || tag === "StoreMail" || tag === "DialBack" || tag === "HolePunch" ? 20 : 1

/** Which limit refused a request. */
export type RequestRefusal = "PeerRate" | "IpRate" | "GlobalRate"

/** Longest wait a refusal suggests to the caller: a minute (a hint beyond that says nothing useful). */
const MAX_RETRY_HINT_MILLIS = 60_000

/**
 * What the caller of a refused request is told, in the `detail` of its
 * `RequestRefused` (Overloaded): the limit that refused it and when a token
 * is due (whole ms, at most a minute). One wording for every transport.
 */
export const refusalDetail = (reason: RequestRefusal, retryAfterMillis: number): string =>
  `rate limit (${reason}); retry in ${Math.min(Math.ceil(retryAfterMillis), MAX_RETRY_HINT_MILLIS)} ms`

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
  /** For requests within `reserve…PerPeer` when `global` is empty: a quarter of its rate and burst. */
  private reserve: TokenBucket
  private readonly reservePeers: TokenBuckets
  private readonly refused: Record<RequestRefusal, number> = { PeerRate: 0, IpRate: 0, GlobalRate: 0 }

  constructor(now: number, config: Partial<RequestLimitsConfig> = {}) {
    this.config = { ...defaultRequestLimits, ...config }
    const { maxTracked } = this.config
    this.peers = new TokenBuckets({ ratePerSecond: this.config.perPeerRate, capacity: this.config.perPeerBurst, maxKeys: maxTracked })
    this.ips = new TokenBuckets({ ratePerSecond: this.config.perIpRate, capacity: this.config.perIpBurst, maxKeys: maxTracked })
    this.global = makeTokenBucket(this.config.globalBurst, now)
    this.reserve = makeTokenBucket(this.config.globalBurst / 4, now)
    this.reservePeers = new TokenBuckets({
      ratePerSecond: this.config.reserveRatePerPeer,
      capacity: this.config.reserveBurstPerPeer,
      maxKeys: maxTracked
    })
  }

  /**
   * Admits or refuses one request of `peer` (its node id) from `ip` at `now`,
   * taking `cost` tokens from each bucket it passes (see `requestCost`). A
   * peer within its small reserve rate (`reserveRatePerPeer`) may use the
   * reserve when the global bucket is empty. The narrowest bucket is
   * checked first, so a flooding peer exhausts its own budget, not the
   * node's.
   */
  admit(peer: string, ip: string, now: number, cost = 1): RequestAdmission {
    const byPeer = this.peers.take(peer, now, cost)
    if (!byPeer.allowed) return this.refuse("PeerRate", byPeer.retryAfterMillis)
    const byIp = this.ips.take(ip, now, cost)
    if (!byIp.allowed) return this.refuse("IpRate", byIp.retryAfterMillis)
    const globally = take(this.global, { ratePerSecond: this.config.globalRate, capacity: this.config.globalBurst, now, cost })
    this.global = globally.bucket
    if (globally.allowed) return ADMIT
    if (this.reservePeers.take(peer, now, cost).allowed) {
      const reserved = take(this.reserve, {
        ratePerSecond: this.config.globalRate / 4,
        capacity: this.config.globalBurst / 4,
        now,
        cost
      })
      this.reserve = reserved.bucket
      if (reserved.allowed) return ADMIT
    }
    return this.refuse("GlobalRate", globally.retryAfterMillis)
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
