/**
 * Admission of connections: which ones a node accepts or dials, so that a
 * flood of connections (from one address, one network or everywhere) cannot
 * exhaust its sockets, its handshake work or the slots its own calls need.
 * In the spirit of go-libp2p's resource manager, the decisions are made here
 * and the transport carries them out: `ConnectionLedger` only counts and
 * answers Admit or Refuse; it never opens, closes or times out anything.
 *
 * The ledger counts open connections by direction, inbound ones also by
 * address (`normalizeHost`) and by network (`addressGroupOf`), and whether
 * each inbound one is still in its handshake (the unauthenticated phase, where
 * an attacker costs us a signature check per attempt and proves nothing).
 * Inbound and outbound budgets are separate, so an inbound flood never takes
 * the slots a node needs for its own calls. Outbound connections are not
 * counted as pending: we dial them ourselves, and `maxOutbound` bounds them.
 *
 * The caller's duties: release every ticket when its connection closes,
 * including a handshake that fails or times out (the ledger has no clock, so a
 * ticket never released holds its slot forever), and call `handshakeDone` once
 * the peer is authenticated. When the inbound budget is full the ledger
 * refuses (`InboundFull`); the transport may then pick an idle authenticated
 * inbound connection (`establishedInbound` lists them, oldest first; only the
 * transport knows which are idle) and call `admitInboundEvicting`, which
 * admits in its place only if that is enough to admit.
 *
 * Like `RttEstimator`, the ledger is a small mutable object: one per
 * transport, owned by it, with synchronous methods (so atomic between fibers).
 * Bound: one entry per open connection, so at most `maxInbound + maxOutbound`,
 * and per-address and per-network counters only for open inbound connections.
 *
 * @since 0.1.0
 */
import { addressGroupOf, normalizeHost } from "./AddressGroup.js"
import { countDown } from "./KeyCounts.js"

/** Most connections of each kind a node holds at once. */
export interface ConnectionLimits {
  /** Open inbound connections, including those still in their handshake. */
  readonly maxInbound: number
  /** Open or opening outbound connections. */
  readonly maxOutbound: number
  /** Inbound connections still in their handshake, over all addresses. */
  readonly maxPendingHandshakes: number
  /** Inbound connections still in their handshake from one address. */
  readonly maxPendingPerIp: number
  /** Open inbound connections from one address. */
  readonly maxInboundPerIp: number
  /** Open inbound connections from one network (an IPv4 /24, an IPv6 /48, see `addressGroupOf`). */
  readonly maxInboundPerGroup: number
  /**
   * Outbound connections kept open with no call in flight; past it, the least
   * recently used idle ones close when a call ends (`idleBeyond`), once
   * they have been idle for `idleLingerMs`.
   */
  readonly maxIdleOutbound: number
  /**
   * Milliseconds an idle outbound connection beyond `maxIdleOutbound` stays
   * open after its last call, for the calls of the same burst of work (a
   * join's lookups ask many of the same peers within a few seconds).
   */
  readonly idleLingerMs: number
}

/**
 * Default limits:
 * - `maxInbound` 192 and `maxOutbound` 128: 320 sockets in all, well under
 *   the usual soft limit of 1,024 file descriptors, leaving room for the
 *   database, the control socket and files. Inbound gets more because every
 *   peer that keeps us in its routing table may call us, while our own
 *   outbound pool (one connection per peer, dropped when idle) serves a few
 *   lookups at a time with alpha = 3 queries each.
 * - `maxPendingHandshakes` 64: a handshake costs a signature and a signature
 *   check and is cut off by the transport's handshake timeout (2 s), so even
 *   if every attempt stalls to the timeout, 32 new connections a second still
 *   get through; an honest handshake takes one round trip.
 * - `maxPendingPerIp` 4: an honest node dials us at most once at a time (its
 *   pool keeps one connection per address), and 4 lets a few nodes behind one
 *   NAT connect together, while one address holds at most 1/16 of the
 *   pending slots.
 * - `maxInboundPerIp` 8: several nodes behind one NAT or on one machine.
 * - `maxInboundPerGroup` 16: one /24 (or /48) holds at most 1/12 of the
 *   inbound slots, so filling them takes at least 12 networks.
 * - `maxIdleOutbound` 8: a connection costs each end about 30 KB of heap and
 *   two fibers, and a node calls most peers once in a while (a lookup asks
 *   20-40 of them), so keeping every one open after a join cost 5.7 MB per
 *   node in a 100-node network (about 170 open connections each). Only the
 *   dialler closes them: it knows no call of its own is on the way, so no
 *   request can cross the close (a server closing an idle connection could
 *   meet a request already sent). Eight covers the liveness probes and the
 *   few peers called again soon; the others are dialled again when needed.
 * - `idleLingerMs` 5 s: a join's self lookup and bucket refreshes ask many
 *   of the same peers within a few seconds (about 160 queries to 110 peers
 *   at 200 nodes), and closing all but eight between them cost a new
 *   authenticated connection for each; 200 nodes joined in 99 s with the
 *   linger against 124 s without (`bench/manyNodes.ts --linger`). Five seconds
 *   covers a join's lookups on a link with 100 ms round trips and keeps
 *   what a quiet node holds unchanged.
 */
export const defaultConnectionLimits: ConnectionLimits = Object.freeze({
  maxInbound: 192,
  maxOutbound: 128,
  maxPendingHandshakes: 64,
  maxPendingPerIp: 4,
  maxInboundPerIp: 8,
  maxInboundPerGroup: 16,
  maxIdleOutbound: 8,
  idleLingerMs: 5_000
})

/**
 * Why an inbound connection is refused, in the order the limits are checked
 * (cheapest and most telling first): handshakes over all addresses, handshakes
 * of this address, the inbound budget, this address's and this network's
 * shares of it. A refusal names the first limit in this order that is reached.
 */
export type InboundRefusal = "PendingHandshakes" | "PendingPerIp" | "InboundFull" | "PerIp" | "PerGroup"

/** Why an outbound connection is refused: the outbound budget is spent. */
export type OutboundRefusal = "OutboundFull"

/** Any reason for a refusal. */
export type RefusalReason = InboundRefusal | OutboundRefusal

/** Every refusal reason, inbound ones in the order they are checked. */
export const refusalReasons: ReadonlyArray<RefusalReason> = Object.freeze([
  "PendingHandshakes",
  "PendingPerIp",
  "InboundFull",
  "PerIp",
  "PerGroup",
  "OutboundFull"
] as const)

/** An admitted inbound connection: hand it back to `handshakeDone` and `release`. */
export interface InboundTicket {
  readonly direction: "inbound"
  /** Unique within its ledger. */
  readonly id: number
  /** The peer's address as counted (`normalizeHost`). */
  readonly ip: string
  /** The peer's network as counted (`addressGroupOf`). */
  readonly group: string
}

/** An admitted outbound connection: hand it back to `release`. */
export interface OutboundTicket {
  readonly direction: "outbound"
  /** Unique within its ledger. */
  readonly id: number
}

/** Either kind of ticket. */
export type ConnectionTicket = InboundTicket | OutboundTicket

/** The connection may proceed; its slot is held until `ticket` is released. */
export interface Admit<T extends ConnectionTicket> {
  readonly _tag: "Admit"
  readonly ticket: T
}

/** The connection must be closed at once; `reason` names the limit reached. */
export interface Refuse<R extends RefusalReason> {
  readonly _tag: "Refuse"
  readonly reason: R
}

/** The answer to an inbound connection. */
export type InboundDecision = Admit<InboundTicket> | Refuse<InboundRefusal>

/** The answer to dialling out. */
export type OutboundDecision = Admit<OutboundTicket> | Refuse<OutboundRefusal>

/** An inbound admission that may have taken an evicted connection's slot. */
export interface AdmitEvicting extends Admit<InboundTicket> {
  /** The connection released to make room, which the caller must now close; undefined if there was room anyway. */
  readonly evicted: InboundTicket | undefined
}

/** The answer of `admitInboundEvicting`. */
export type EvictingDecision = AdmitEvicting | Refuse<InboundRefusal>

/** Counters of a ledger, for monitoring and tests. */
export interface ConnectionSnapshot {
  /** Open inbound connections, including those in their handshake. */
  readonly inbound: number
  /** Open outbound connections. */
  readonly outbound: number
  /** Inbound connections still in their handshake. */
  readonly pending: number
  /** Refusals returned since the ledger was made, by reason. */
  readonly byReason: Readonly<Record<RefusalReason, number>>
}

/** An open connection as the ledger holds it. */
interface OpenEntry {
  readonly ticket: ConnectionTicket
  pending: boolean
}

/** Inbound connections of one address. */
interface AddressCount {
  open: number
  pending: number
}

/** The limits of `partial` over the defaults, only the known ones; throws a RangeError for one that is not an integer >= 0. */
const resolveLimits = (partial: Partial<ConnectionLimits>): ConnectionLimits => {
  const limits: ConnectionLimits = {
    maxInbound: partial.maxInbound ?? defaultConnectionLimits.maxInbound,
    maxOutbound: partial.maxOutbound ?? defaultConnectionLimits.maxOutbound,
    maxPendingHandshakes: partial.maxPendingHandshakes ?? defaultConnectionLimits.maxPendingHandshakes,
    maxPendingPerIp: partial.maxPendingPerIp ?? defaultConnectionLimits.maxPendingPerIp,
    maxInboundPerIp: partial.maxInboundPerIp ?? defaultConnectionLimits.maxInboundPerIp,
    maxInboundPerGroup: partial.maxInboundPerGroup ?? defaultConnectionLimits.maxInboundPerGroup,
    maxIdleOutbound: partial.maxIdleOutbound ?? defaultConnectionLimits.maxIdleOutbound,
    idleLingerMs: partial.idleLingerMs ?? defaultConnectionLimits.idleLingerMs
  }
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${name} must be an integer >= 0, got ${value}`)
  }
  return Object.freeze(limits)
}

/** Whether `a` and `b` are the same ticket (a copy counts; a ticket of another ledger almost never does). */
const sameTicket = (a: ConnectionTicket, b: ConnectionTicket): boolean =>
  a.id === b.id && a.direction === b.direction &&
  (a.direction === "outbound" || (b.direction === "inbound" && a.ip === b.ip && a.group === b.group))

const emptyCounts = (): Record<RefusalReason, number> => ({
  PendingHandshakes: 0,
  PendingPerIp: 0,
  InboundFull: 0,
  PerIp: 0,
  PerGroup: 0,
  OutboundFull: 0
})

/**
 * The open connections of one transport and the admission decisions over
 * them (mutable, see the module comment). Every count equals the tickets
 * admitted and not yet released; none goes negative, whatever order tickets
 * come back in, and releasing a ticket twice (or one never admitted) does
 * nothing.
 */
export class ConnectionLedger {
  /** The limits it was made with. */
  readonly limits: ConnectionLimits
  /** Open connections by ticket id, in the order they were admitted. */
  private readonly open = new Map<number, OpenEntry>()
  private readonly byIp = new Map<string, AddressCount>()
  private readonly byGroup = new Map<string, number>()
  private readonly refused = emptyCounts()
  private inbound = 0
  private outbound = 0
  private pending = 0
  private nextId = 1

  /** An empty ledger; unspecified limits are the defaults. Throws a RangeError for a limit that is not an integer >= 0. */
  constructor(limits: Partial<ConnectionLimits> = {}) {
    this.limits = resolveLimits(limits)
  }

  /**
   * The first limit an inbound connection from `ip` in `group` would reach,
   * if any, as if the established connection `victim` (if given) were gone.
   */
  private inboundRefusal(ip: string, group: string, victim: InboundTicket | undefined): InboundRefusal | undefined {
    const limits = this.limits
    if (this.pending >= limits.maxPendingHandshakes) return "PendingHandshakes"
    const atIp = this.byIp.get(ip)
    // The victim is established, so it holds no pending slot to give back.
    if ((atIp?.pending ?? 0) >= limits.maxPendingPerIp) return "PendingPerIp"
    const freed = victim === undefined ? 0 : 1
    if (this.inbound - freed >= limits.maxInbound) return "InboundFull"
    const freedAtIp = victim !== undefined && victim.ip === ip ? 1 : 0
    if ((atIp?.open ?? 0) - freedAtIp >= limits.maxInboundPerIp) return "PerIp"
    const freedInGroup = victim !== undefined && victim.group === group ? 1 : 0
    if ((this.byGroup.get(group) ?? 0) - freedInGroup >= limits.maxInboundPerGroup) return "PerGroup"
    return undefined
  }

  /** The open entry of `ticket`, if it is one of ours and not released. */
  private lookup(ticket: ConnectionTicket): OpenEntry | undefined {
    const entry = this.open.get(ticket.id)
    return entry !== undefined && sameTicket(entry.ticket, ticket) ? entry : undefined
  }

  private refuse<R extends RefusalReason>(reason: R): Refuse<R> {
    this.refused[reason] += 1
    return { _tag: "Refuse", reason }
  }

  /** Records a new inbound connection, in its handshake; the limits have been checked. */
  private admitInboundChecked(ip: string, group: string): InboundTicket {
    const ticket: InboundTicket = Object.freeze({ direction: "inbound", id: this.nextId++, ip, group })
    this.open.set(ticket.id, { ticket, pending: true })
    this.inbound += 1
    this.pending += 1
    const atIp = this.byIp.get(ip)
    if (atIp === undefined) this.byIp.set(ip, { open: 1, pending: 1 })
    else {
      atIp.open += 1
      atIp.pending += 1
    }
    this.byGroup.set(group, (this.byGroup.get(group) ?? 0) + 1)
    return ticket
  }

  /**
   * Decides on an inbound connection from `host` (the peer's observed
   * address). Admitted, it counts as open and in its handshake until
   * `handshakeDone` or `release`. Refused, the reason is the first limit
   * reached in the order of `InboundRefusal`.
   */
  admitInbound(host: string): InboundDecision {
    // The global handshake limit needs no parsing: checked first, it keeps a flood cheap to refuse.
    if (this.pending >= this.limits.maxPendingHandshakes) return this.refuse("PendingHandshakes")
    const ip = normalizeHost(host)
    const group = addressGroupOf(host)
    const reason = this.inboundRefusal(ip, group, undefined)
    if (reason !== undefined) return this.refuse(reason)
    return { _tag: "Admit", ticket: this.admitInboundChecked(ip, group) }
  }

  /**
   * Decides on an inbound connection from `host`, evicting `victim` if that
   * is what it takes. Without need (there is room) it admits like
   * `admitInbound` and evicts nothing. When only the inbound budget is in the
   * way and `victim` is an open, authenticated inbound connection whose slot
   * (and address and network shares) would let `host` in, `victim` is
   * released and `host` admitted; the caller must then close the victim's
   * connection. Otherwise it refuses, and `victim` stays: a connection is
   * never evicted for a newcomer that would be refused anyway.
   */
  admitInboundEvicting(host: string, victim: InboundTicket): EvictingDecision {
    if (this.pending >= this.limits.maxPendingHandshakes) return this.refuse("PendingHandshakes")
    const ip = normalizeHost(host)
    const group = addressGroupOf(host)
    const reason = this.inboundRefusal(ip, group, undefined)
    if (reason === undefined) return { _tag: "Admit", ticket: this.admitInboundChecked(ip, group), evicted: undefined }
    const entry = this.lookup(victim)
    if (reason !== "InboundFull" || entry === undefined || entry.pending || entry.ticket.direction !== "inbound") {
      return this.refuse(reason)
    }
    const stored = entry.ticket
    const withEviction = this.inboundRefusal(ip, group, stored)
    if (withEviction !== undefined) return this.refuse(withEviction)
    this.release(stored)
    return { _tag: "Admit", ticket: this.admitInboundChecked(ip, group), evicted: stored }
  }

  /**
   * The limit that would refuse an inbound connection from `host` now, if
   * any, counting nothing: a transport that can make room (by evicting a
   * connection) asks this first, so a connection it then admits is not
   * counted as refused.
   */
  inboundRefusalFor(host: string): InboundRefusal | undefined {
    // As in `admitInbound`: the global handshake limit first, before any parsing, so a flood stays cheap.
    if (this.pending >= this.limits.maxPendingHandshakes) return "PendingHandshakes"
    return this.inboundRefusal(normalizeHost(host), addressGroupOf(host), undefined)
  }

  /** Whether `maxOutbound` connections are open (counting nothing; see `inboundRefusalFor`). */
  get outboundFull(): boolean {
    return this.outbound >= this.limits.maxOutbound
  }

  /** Decides on dialling out: refused only when `maxOutbound` connections are open. */
  admitOutbound(): OutboundDecision {
    if (this.outbound >= this.limits.maxOutbound) return this.refuse("OutboundFull")
    const ticket: OutboundTicket = Object.freeze({ direction: "outbound", id: this.nextId++ })
    this.open.set(ticket.id, { ticket, pending: false })
    this.outbound += 1
    return { _tag: "Admit", ticket }
  }

  /**
   * Records that the peer of an inbound `ticket` authenticated: its
   * connection no longer counts against the handshake limits. True if the
   * ticket was open and in its handshake; anything else (an outbound ticket,
   * a second call, a released ticket) does nothing and gives false.
   */
  handshakeDone(ticket: ConnectionTicket): boolean {
    const entry = this.lookup(ticket)
    if (entry === undefined || !entry.pending || entry.ticket.direction !== "inbound") return false
    entry.pending = false
    this.pending -= 1
    const atIp = this.byIp.get(entry.ticket.ip)
    if (atIp !== undefined) atIp.pending -= 1
    return true
  }

  /**
   * Records that `ticket`'s connection closed, for whatever reason, freeing
   * its slots. True if it was open; releasing again (or a ticket this ledger
   * did not issue) does nothing and gives false.
   */
  release(ticket: ConnectionTicket): boolean {
    const entry = this.lookup(ticket)
    if (entry === undefined) return false
    this.open.delete(ticket.id)
    const stored = entry.ticket // the ledger's own copy, whatever fields the argument carries
    if (stored.direction === "outbound") {
      this.outbound -= 1
      return true
    }
    this.inbound -= 1
    if (entry.pending) this.pending -= 1
    const atIp = this.byIp.get(stored.ip)
    if (atIp !== undefined) {
      atIp.open -= 1
      if (entry.pending) atIp.pending -= 1
      // Counters of addresses and networks with nothing open are dropped, so memory follows open connections.
      if (atIp.open === 0) this.byIp.delete(stored.ip)
    }
    countDown(this.byGroup, stored.group)
    return true
  }

  /**
   * The open inbound connections whose peers have authenticated, oldest
   * admitted first: the candidates for eviction when the inbound budget is
   * full (the caller knows which of them are idle).
   */
  establishedInbound(): Array<InboundTicket> {
    const established: Array<InboundTicket> = []
    for (const entry of this.open.values()) {
      if (!entry.pending && entry.ticket.direction === "inbound") established.push(entry.ticket)
    }
    return established
  }

  /**
   * When the handshake budget is full, the connection to give up for a
   * newcomer from `host`, or undefined when nothing should be evicted:
   *
   * 1. the oldest one still in its handshake from the address holding the
   *    most of them, provided that address holds at least two more than the
   *    newcomer's. Half-open floods then cost their senders their own slots:
   *    an honest peer's fresh connection (from an address with none pending)
   *    takes the place of a flooder's, while a flooder can only displace
   *    addresses holding more than itself;
   * 2. otherwise, for a newcomer whose address has nothing pending, the
   *    oldest handshake of all if it is stale (`isStale`, the caller's
   *    judgement of its age: the transport says so after 500 ms). This is
   *    for floods from many addresses holding one handshake each, which rule
   *    1 cannot touch and which would otherwise keep every newcomer out for
   *    as long as they reconnect once per handshake timeout. A handshake
   *    younger than that is never pushed out, so an honest one under way
   *    has its time to finish, and the flooders must reconnect four times
   *    as often to hold their slots.
   */
  pendingVictimFor(host: string, isStale: (ticket: InboundTicket) => boolean = () => false): InboundTicket | undefined {
    const newcomer = this.byIp.get(normalizeHost(host))?.pending ?? 0
    let crowded: string | undefined = undefined
    let most = newcomer + 1
    for (const [ip, count] of this.byIp) {
      if (count.pending > most) {
        most = count.pending
        crowded = ip
      }
    }
    let oldest: InboundTicket | undefined = undefined
    // `open` keeps admission order, so the first pending entry met is the oldest (of all, or of `crowded`).
    for (const entry of this.open.values()) {
      if (!entry.pending || entry.ticket.direction !== "inbound") continue
      if (crowded === undefined) {
        oldest = entry.ticket
        break
      }
      if (entry.ticket.ip === crowded) return entry.ticket
    }
    return newcomer === 0 && oldest !== undefined && isStale(oldest) ? oldest : undefined
  }

  /** Whether `ticket` is open (admitted here and not released). */
  isOpen(ticket: ConnectionTicket): boolean {
    return this.lookup(ticket) !== undefined
  }

  /** Open inbound connections from the address of `host` (as `normalizeHost` keys it). */
  inboundFrom(host: string): number {
    return this.byIp.get(normalizeHost(host))?.open ?? 0
  }

  /** Open inbound connections from the network of `host` (as `addressGroupOf` groups it). */
  inboundFromGroup(host: string): number {
    return this.byGroup.get(addressGroupOf(host)) ?? 0
  }

  /** The current counts and the refusals so far (a copy). */
  snapshot(): ConnectionSnapshot {
    return { inbound: this.inbound, outbound: this.outbound, pending: this.pending, byReason: { ...this.refused } }
  }
}

/**
 * The connection to close for a newcomer when a budget is full (and the
 * ledger's `admitInboundEvicting` or a second `admitOutbound` is to take its
 * place): of the candidates that are idle, the one least recently active, the
 * first of equals. `lastActiveIfIdle` gives a candidate's last activity
 * (milliseconds), or undefined when it must not be closed (a call in flight,
 * not established yet), which only the transport knows. Undefined when no
 * candidate is idle.
 */
export const leastRecentlyActive = <T>(
  candidates: Iterable<T>,
  lastActiveIfIdle: (candidate: T) => number | undefined
): T | undefined => {
  let chosen: { readonly candidate: T; readonly lastActive: number } | undefined = undefined
  for (const candidate of candidates) {
    const lastActive = lastActiveIfIdle(candidate)
    if (lastActive !== undefined && (chosen === undefined || lastActive < chosen.lastActive)) {
      chosen = { candidate, lastActive }
    }
  }
  return chosen?.candidate
}

/** What `idleBeyond` decided: the connections to close now, and when to look again. */
export interface IdleDecision<T> {
  /** Idle beyond the cap and past their linger, least recently active first. */
  readonly close: ReadonlyArray<T>
  /** When the first connection beyond the cap that still lingers will have lingered enough (undefined: none lingers). */
  readonly recheckAt: number | undefined
}

/**
 * The idle connections to close so that at most `keep` stay open while idle:
 * the least recently active beyond `keep`, oldest first (`lastActiveIfIdle`
 * as for `leastRecentlyActive`: undefined for one that must stay), each once
 * it has been idle for `lingerMs` at `now`. A node keeps a few idle
 * connections for the peers it will likely call again and dials the rest
 * again when it needs them; each open connection costs both ends memory
 * (about 30 KB of heap each, measured with `bench/manyNodes.ts`). The linger
 * keeps a burst of work (a join's lookups, which ask many of the same peers
 * within seconds) from dialling the same peers again and again.
 */
export const idleBeyond = <T>(
  candidates: Iterable<T>,
  keep: number,
  lastActiveIfIdle: (candidate: T) => number | undefined,
  now: number,
  lingerMs: number
): IdleDecision<T> => {
  const idle: Array<{ readonly candidate: T; readonly lastActive: number }> = []
  for (const candidate of candidates) {
    const lastActive = lastActiveIfIdle(candidate)
    if (lastActive !== undefined) idle.push({ candidate, lastActive })
  }
  if (idle.length <= keep) return { close: [], recheckAt: undefined }
  // A stable sort keeps the first of equals first, as `leastRecentlyActive` does.
  idle.sort((a, b) => a.lastActive - b.lastActive)
  const beyond = idle.slice(0, idle.length - Math.max(0, keep))
  const close: Array<T> = []
  let recheckAt: number | undefined = undefined
  for (const { candidate, lastActive } of beyond) {
    if (now - lastActive >= lingerMs) close.push(candidate)
    else recheckAt = Math.min(recheckAt ?? Infinity, lastActive + lingerMs)
  }
  return { close, recheckAt }
}
