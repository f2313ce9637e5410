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
 * reached through a relay, only to the host that relay saw it at, one try per
 * caller at a time and at most one per `answerIntervalMs`, and a few at once.
 *
 * @since 0.4.0
 */
import type { NodeId } from "./Id.js"

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
}

export const defaultHolePunchLimits: HolePunchLimits = Object.freeze({
  retryAfterFailureMs: 10 * 60_000,
  maxAnswering: 4,
  answerIntervalMs: 30_000,
  maxInitiating: 4,
  maxRemembered: 1_024,
  attemptMs: 6_000
})

/** Why a punch is not tried or not answered now. */
export type PunchRefusal =
  /** One with this peer is under way. */
  | "InProgress"
  /** The last try with this peer failed lately. */
  | "FailedLately"
  /** This caller asked lately. */
  | "TooSoon"
  /** As many are under way as the limits allow. */
  | "Busy"

export type PunchDecision = { readonly _tag: "Go" } | { readonly _tag: "Refused"; readonly reason: PunchRefusal }

/** What this node knows of its punches, as initiator and as answerer. */
export class HolePunchBook {
  readonly limits: HolePunchLimits
  private readonly initiating = new Set<NodeId>()
  private readonly answering = new Set<NodeId>()
  /** Until when a peer is not tried again, after a failure. Insertion order: oldest first. */
  private readonly failedUntil = new Map<NodeId, number>()
  /** When each caller's last request was answered. Insertion order: oldest first. */
  private readonly answeredAt = new Map<NodeId, number>()
  private totals = { succeeded: 0, failed: 0, answered: 0, refused: 0 }

  constructor(limits?: Partial<HolePunchLimits>) {
    this.limits = { ...defaultHolePunchLimits, ...limits }
  }

  /** Whether to try a direct connection to `peer`, now reached through a relay; `Go` marks it under way. */
  initiate(peer: NodeId, now: number): PunchDecision {
    if (this.initiating.has(peer)) return refused("InProgress")
    const until = this.failedUntil.get(peer)
    if (until !== undefined && until > now) return refused("FailedLately")
    if (this.initiating.size >= this.limits.maxInitiating) return refused("Busy")
    this.initiating.add(peer)
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
      remember(this.failedUntil, peer, now + this.limits.retryAfterFailureMs, this.limits.maxRemembered)
    }
  }

  /** Whether to answer `caller`'s request to punch (and dial it); `Go` marks it under way. */
  answer(caller: NodeId, now: number): PunchDecision {
    const decision = this.answerDecision(caller, now)
    if (decision._tag === "Refused") {
      this.totals.refused++
      return decision
    }
    this.answering.add(caller)
    this.totals.answered++
    remember(this.answeredAt, caller, now, this.limits.maxRemembered)
    return go
  }

  /** The answered punch with `caller` ended. */
  answered(caller: NodeId): void {
    this.answering.delete(caller)
  }

  /** Counts for `status`. */
  counts(): {
    readonly initiating: number
    readonly answering: number
    readonly succeeded: number
    readonly failed: number
    readonly answered: number
    readonly refused: number
  } {
    return { initiating: this.initiating.size, answering: this.answering.size, ...this.totals }
  }

  private answerDecision(caller: NodeId, now: number): PunchDecision {
    if (this.answering.has(caller)) return refused("InProgress")
    const last = this.answeredAt.get(caller)
    if (last !== undefined && now - last < this.limits.answerIntervalMs) return refused("TooSoon")
    if (this.answering.size >= this.limits.maxAnswering) return refused("Busy")
    return go
  }
}

const go: PunchDecision = { _tag: "Go" }

const refused = (reason: PunchRefusal): PunchDecision => ({ _tag: "Refused", reason })

/** Sets `key` to `value` as the newest entry, forgetting the oldest beyond `capacity`. */
const remember = (map: Map<NodeId, number>, key: NodeId, value: number, capacity: number): void => {
  map.delete(key)
  map.set(key, value)
  while (map.size > capacity) {
    const oldest = map.keys().next()
    if (oldest.done === true) break
    map.delete(oldest.value)
  }
}
