/**
 * Hole punching (DCUtR style) decisions: when two nodes talk through a relay,
 * they try a direct TCP connection by dialling each other at the same moment
 * (a simultaneous open), each from a port it told the other, each to the host
 * the relay saw the other come from. A NAT that keeps a connection's source
 * port (most home routers) then lets the other side's packets in as replies;
 * one that picks a new port per destination ("symmetric") does not, and the
 * conversation stays on the relay.
 *
 * What is pure here: which local port to punch from, whether to try (again)
 * with a peer, whether to answer a peer's request, and how much such work is
 * under way. A request to punch makes the answering node dial out, so it is
 * bounded like any other work a stranger can cause: only from a caller
 * reached through a relay, only to the host that relay saw it at, and only
 * to a host in the same scope as the relay's own address (never this node's
 * loopback or LAN because a relay said so); one try per caller, and per
 * network of the host dialled, at a time; at most one per caller per
 * `answerIntervalMs`, a few at once, and `maxAnswersPerMinute` in all. The
 * initiator dials the host the target's relay reported, which the target
 * chose (its record lists that relay): the same scope rule and one punch per
 * network at a time bound what a hostile target can aim it at.
 *
 * @since 0.4.0
 */
import { addressGroupOf, parseIp } from "./AddressGroup.js"
import type { NodeId } from "./Id.js"
import { setNewest } from "./NewestFirst.js"

/**
 * Where an address can be reached from: this host only (`loopback`), a
 * private network (RFC 1918, the carrier-grade NAT range 100.64.0.0/10,
 * IPv6 unique-local fc00::/7), one link (`link-local`), the internet
 * (`global`), or nowhere a punch should go (unspecified, multicast,
 * broadcast, 0.0.0.0/8, 240.0.0.0/4, or not an IP address at all).
 */
export type HostScope = "loopback" | "private" | "link-local" | "global" | "unusable"

export const hostScope = (host: string): HostScope => {
  const ip = parseIp(host)
  if (ip === undefined) return "unusable"
  const b = ip.bytes
  if (ip.family === 4) {
    const [a = 0, second = 0] = b
    if (a === 0 || a >= 224) return "unusable"
    if (a === 127) return "loopback"
    if (a === 169 && second === 254) return "link-local"
    if (a === 10 || (a === 172 && second >= 16 && second < 32) || (a === 192 && second === 168)) return "private"
    if (a === 100 && second >= 64 && second < 128) return "private"
    return "global"
  }
  const first = b[0] ?? 0
  if (b.every((byte) => byte === 0)) return "unusable"
  if (b.subarray(0, 15).every((byte) => byte === 0) && b[15] === 1) return "loopback"
  if (first === 0xff) return "unusable"
  if (first === 0xfe && ((b[1] ?? 0) & 0xc0) === 0x80) return "link-local"
  if ((first & 0xfe) === 0xfc) return "private"
  return "global"
}

/**
 * Whether a punch may dial `host`, reported by a relay reached at
 * `relayHost`: only an address in the relay's own scope (a relay on the
 * internet reports internet addresses; on a LAN or on this machine, as in
 * tests, addresses there), never an unusable one. So a relay, or a target
 * that runs its own relay, cannot turn punches into probes of the dialling
 * node's loopback or LAN.
 */
export const punchHostAllowed = (host: string, relayHost: string): boolean => {
  const scope = hostScope(host)
  return scope !== "unusable" && scope === hostScope(relayHost)
}

/**
 * Local ports a punch is made from: above Linux's default ephemeral range
 * (32768-60999), so the port told to the peer is not taken by an ordinary
 * outgoing connection of this host between telling and dialling.
 */
export const PUNCH_PORT_MIN = 61_000
export const PUNCH_PORT_MAX = 65_535

/** The local port to punch from, given a uniform random number in [0, 1). */
export const punchPort = (random: number): number =>
  PUNCH_PORT_MIN + Math.min(PUNCH_PORT_MAX - PUNCH_PORT_MIN, Math.floor(random * (PUNCH_PORT_MAX - PUNCH_PORT_MIN + 1)))

/** Limits on hole punching, as initiator and as answerer. */
export interface HolePunchLimits {
  /** After a failed try with a peer, the next waits this long (its NAT will not change soon). */
  readonly retryAfterFailureMs: number
  /** Punches this node answers at once, from all callers together. */
  readonly maxAnswering: number
  /** A caller's next request is answered only this long after its last one. */
  readonly answerIntervalMs: number
  /** Punches this node starts at once. */
  readonly maxInitiating: number
  /** Peers remembered (failures, last answers); the oldest are forgotten first. */
  readonly maxRemembered: number
  /** How long the two sides keep dialling each other before giving up. */
  readonly attemptMs: number
  /** Punches this node answers in any minute, from all callers together. */
  readonly maxAnswersPerMinute: number
}

export const defaultHolePunchLimits: HolePunchLimits = Object.freeze({
  retryAfterFailureMs: 10 * 60_000,
  maxAnswering: 4,
  answerIntervalMs: 30_000,
  maxInitiating: 4,
  maxRemembered: 1_024,
  attemptMs: 6_000,
  maxAnswersPerMinute: 20
})

/** Why a punch is not tried or not answered now. */
export type PunchRefusal =
  /** One with this peer is under way. */
  | "InProgress"
  /** The last try with this peer failed lately. */
  | "FailedLately"
  /** This caller asked lately. */
  | "TooSoon"
  /** As many are under way, or were answered this minute, as the limits allow; or one to that network is. */
  | "Busy"

export type PunchDecision<Reason extends PunchRefusal = PunchRefusal> =
  | { readonly _tag: "Go" }
  | { readonly _tag: "Refused"; readonly reason: Reason }

/** Why a peer's request is not answered (a failure back-off concerns only punches this node starts). */
export type AnswerRefusal = Exclude<PunchRefusal, "FailedLately">

/** How hole punching went since the node started, for `status`. */
export interface HolePunchCounts {
  /** Punches under way, as the one who asked and as the one who answered. */
  readonly initiating: number
  readonly answering: number
  /** Tries this node started that gave a direct connection, and that did not. */
  readonly succeeded: number
  readonly failed: number
  /** Peers' requests this node took part in, and turned down (limits). */
  readonly answered: number
  readonly refused: number
}

/** What this node knows of its punches, as initiator and as answerer. */
export class HolePunchBook {
  readonly limits: HolePunchLimits
  /** Punches under way, by peer, with the network of the host dialled. */
  private readonly initiating = new Map<NodeId, string>()
  private readonly answering = new Map<NodeId, string>()
  /** When the punches answered in the last minute were answered, oldest first. Bound: `maxAnswersPerMinute`. */
  private answerTimes: Array<number> = []
  /** Until when a peer is not tried again, after a failure. Insertion order: oldest first. */
  private readonly failedUntil = new Map<NodeId, number>()
  /** When each caller's last request was answered. Insertion order: oldest first. */
  private readonly answeredAt = new Map<NodeId, number>()
  private totals = { succeeded: 0, failed: 0, answered: 0, refused: 0 }

  constructor(limits?: Partial<HolePunchLimits>) {
    this.limits = { ...defaultHolePunchLimits, ...limits }
  }

  /**
   * Whether to try a direct connection to `peer`, now reached through a
   * relay, by dialling `host`; `Go` marks it under way. One punch per
   * network at a time, so peers whose relays all name one network get one.
   */
  initiate(peer: NodeId, host: string, now: number): PunchDecision {
    if (this.initiating.has(peer)) return refused("InProgress")
    const until = this.failedUntil.get(peer)
    if (until !== undefined && until > now) return refused("FailedLately")
    const group = addressGroupOf(host)
    if (this.initiating.size >= this.limits.maxInitiating || includes(this.initiating, group)) return refused("Busy")
    this.initiating.set(peer, group)
    return go
  }

  /** The try with `peer` ended: a failure holds the next one off for `retryAfterFailureMs`. */
  initiated(peer: NodeId, succeeded: boolean, now: number): void {
    if (!this.initiating.delete(peer)) return
    if (succeeded) {
      this.totals.succeeded++
      this.failedUntil.delete(peer)
    } else {
      this.totals.failed++
      setNewest(this.failedUntil, peer, now + this.limits.retryAfterFailureMs, this.limits.maxRemembered)
    }
  }

  /** Whether to answer `caller`'s request to punch (and dial it at `host`); `Go` marks it under way. */
  answer(caller: NodeId, host: string, now: number): PunchDecision<AnswerRefusal> {
    const group = addressGroupOf(host)
    const decision = this.answerDecision(caller, group, now)
    if (decision._tag === "Refused") {
      this.totals.refused++
      return decision
    }
    this.answering.set(caller, group)
    this.answerTimes.push(now)
    this.totals.answered++
    setNewest(this.answeredAt, caller, now, this.limits.maxRemembered)
    return go
  }

  /** The answered punch with `caller` ended. */
  answered(caller: NodeId): void {
    this.answering.delete(caller)
  }

  /** Counts for `status`. */
  counts(): HolePunchCounts {
    return { initiating: this.initiating.size, answering: this.answering.size, ...this.totals }
  }

  private answerDecision(caller: NodeId, group: string, now: number): PunchDecision<AnswerRefusal> {
    if (this.answering.has(caller)) return refused("InProgress")
    const last = this.answeredAt.get(caller)
    if (last !== undefined && now - last < this.limits.answerIntervalMs) return refused("TooSoon")
    this.answerTimes = this.answerTimes.filter((at) => now - at < 60_000)
    if (
      this.answering.size >= this.limits.maxAnswering || includes(this.answering, group) ||
      this.answerTimes.length >= this.limits.maxAnswersPerMinute
    ) return refused("Busy")
    return go
  }
}

const go = { _tag: "Go" } as const

/** Whether a punch under way dials into `group`. */
const includes = (underWay: ReadonlyMap<NodeId, string>, group: string): boolean => {
  for (const other of underWay.values()) if (other === group) return true
  return false
}

const refused = <Reason extends PunchRefusal>(reason: Reason): PunchDecision<Reason> => ({ _tag: "Refused", reason })

