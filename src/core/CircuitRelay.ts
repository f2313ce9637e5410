/**
 * The decisions of a relay for nodes that cannot be dialled (Circuit Relay v2
 * style): which nodes hold a reservation, which circuits are offered and
 * which are spliced, each bounded and expiring. The relay's shell keeps the
 * sockets; this table only says yes or no.
 *
 * The life of a circuit:
 * 1. A node behind a NAT reserves a slot (`reserve`) and keeps asking for
 *    circuits (each ask renews the reservation; one that stops asking loses it).
 * 2. A caller asks to open a circuit to it (`open`): the relay picks a random
 *    token, tells it to the caller, and offers it to the holder (`takeOffers`).
 * 3. Both dial the relay afresh and present the token (`arrive`): the first
 *    leg waits, the second is spliced to it, and from then on the relay copies
 *    bytes both ways without reading them (the two ends run their own secure
 *    channel through it), until the circuit's byte or time bound.
 *
 * What a relay risks is bounded here: reservations in total and per network,
 * offers waiting per holder, circuits per caller and in total, and how long
 * an unclaimed token lives. Time is an argument, so the table is pure.
 *
 * @since 0.3.0
 */
import { addressGroupOf } from "./AddressGroup.js"
import type { NodeId } from "./Id.js"
import { countDown } from "./KeyCounts.js"

/** Bounds of a relay. */
export interface CircuitLimits {
  /** Reservations held at once. */
  readonly maxReservations: number
  /** Reservations held at once by holders in one network (/24, /48). */
  readonly maxReservationsPerNetwork: number
  /** A reservation not renewed (by asking for circuits) for this long lapses. */
  readonly reservationTtlMs: number
  /** Offers waiting for one holder to take them. */
  readonly maxOffersPerHolder: number
  /** Circuits (offered or spliced) one caller has open at once. */
  readonly maxCircuitsPerCaller: number
  /** Circuits (offered or spliced) open at once. */
  readonly maxCircuits: number
  /** How long an offered circuit waits for both legs. */
  readonly offerTtlMs: number
  /** Bytes a spliced circuit carries in each direction before the relay closes it. */
  readonly circuitBytes: number
  /** How long a spliced circuit lives before the relay closes it (the ends open another). */
  readonly circuitLifetimeMs: number
}

/**
 * Defaults: 128 reservations (8 per network), renewed within 90 s; 4 offers
 * per holder; 8 circuits per caller, 256 in all; tokens live 10 s; a circuit
 * carries 16 MiB each way for at most 15 minutes. A chat message is a few
 * KiB, so a circuit carries thousands; what a relay commits is at most 256 x
 * 32 MiB of copying per 15 minutes, and no memory beyond the socket buffers.
 */
export const defaultCircuitLimits: CircuitLimits = Object.freeze({
  maxReservations: 128,
  maxReservationsPerNetwork: 8,
  reservationTtlMs: 90_000,
  maxOffersPerHolder: 4,
  maxCircuitsPerCaller: 8,
  maxCircuits: 256,
  offerTtlMs: 10_000,
  circuitBytes: 16 * 1024 * 1024,
  circuitLifetimeMs: 15 * 60_000
})

/** Why a relay refused a reservation or a circuit. */
export type CircuitRefusal =
  /** The relay holds as many reservations as it takes. */
  | "ReservationsFull"
  /** The holder's network holds as many reservations as one network may. */
  | "NetworkFull"
  /** The target holds no reservation here (it moved to other relays, or never had one). */
  | "NoReservation"
  /** The target has as many offers waiting as it may. */
  | "TargetBusy"
  /** The caller has as many circuits open as one caller may. */
  | "CallerBusy"
  /** The relay has as many circuits open as it takes. */
  | "CircuitsFull"

/** An offered circuit, as the holder learns it: the token to present and who asked. */
export interface CircuitOffer {
  readonly token: string
  readonly caller: NodeId
  /**
   * The host the caller's request for the circuit came from, as this relay
   * saw it: the one host the holder may try to reach the caller at directly
   * (hole punching), so a caller cannot point it at a third party.
   */
  readonly callerHost?: string | undefined
}

/** What a leg presenting a token gets: wait for the other leg, be spliced to it, or be closed. */
export type Arrival = "Wait" | "Splice" | "Unknown"

interface Reservation {
  readonly group: string
  /** The host the reservation was made from, as this relay saw it. */
  readonly host: string
  expiresAt: number
  offers: Array<CircuitOffer>
}

interface Circuit {
  readonly caller: NodeId
  readonly target: NodeId
  /** Until when the legs may arrive; after splicing, until when the circuit lives. */
  deadline: number
  legs: number
}

/** The relay's reservations and circuits. */
export class CircuitTable {
  readonly limits: CircuitLimits
  private readonly reservations = new Map<NodeId, Reservation>()
  private readonly perNetwork = new Map<string, number>()
  private readonly circuits = new Map<string, Circuit>()
  private readonly perCaller = new Map<NodeId, number>()
  /** Circuits whose two legs were spliced, since the table was made. */
  private splicedTotal = 0

  constructor(limits?: Partial<CircuitLimits>) {
    this.limits = { ...defaultCircuitLimits, ...limits }
  }

  /**
   * Grants or renews `holder`'s reservation, made from `host`, until
   * `now + reservationTtlMs`. A renewal is never refused; a new one is when
   * the relay or the holder's network is full.
   */
  reserve(
    holder: NodeId,
    host: string,
    now: number
  ): { readonly _tag: "Granted"; readonly expiresAt: number } | { readonly _tag: "Refused"; readonly reason: CircuitRefusal } {
    this.expire(now)
    const expiresAt = now + this.limits.reservationTtlMs
    const held = this.reservations.get(holder)
    if (held !== undefined) {
      held.expiresAt = expiresAt
      return { _tag: "Granted", expiresAt }
    }
    if (this.reservations.size >= this.limits.maxReservations) return { _tag: "Refused", reason: "ReservationsFull" }
    const group = addressGroupOf(host)
    const inNetwork = this.perNetwork.get(group) ?? 0
    if (inNetwork >= this.limits.maxReservationsPerNetwork) return { _tag: "Refused", reason: "NetworkFull" }
    this.perNetwork.set(group, inNetwork + 1)
    this.reservations.set(holder, { group, host, expiresAt, offers: [] })
    return { _tag: "Granted", expiresAt }
  }

  /** Whether `holder` holds a live reservation. */
  holds(holder: NodeId, now: number): boolean {
    const held = this.reservations.get(holder)
    return held !== undefined && held.expiresAt > now
  }

  /** Gives up `holder`'s reservation (it left); its waiting offers are dropped. */
  cancel(holder: NodeId): void {
    const held = this.reservations.get(holder)
    if (held === undefined) return
    this.reservations.delete(holder)
    this.dropFromNetwork(held.group)
    for (const offer of held.offers) this.forget(offer.token)
  }

  /**
   * Opens a circuit from `caller` to `target` under `token` (random, chosen
   * by the shell) and offers it to the target; the caller then has
   * `offerTtlMs` for both legs to arrive. A node cannot open a circuit to itself.
   * `callerHost` is where the caller's request came from; the answer carries
   * the host the target's reservation came from: each end learns the other's
   * host from the relay, never from the other end, which is all a hole punch
   * may dial.
   */
  open(
    caller: NodeId,
    target: NodeId,
    token: string,
    now: number,
    callerHost?: string
  ):
    | { readonly _tag: "Opened"; readonly deadline: number; readonly targetHost: string }
    | { readonly _tag: "Refused"; readonly reason: CircuitRefusal }
  {
    this.expire(now)
    const held = this.reservations.get(target)
    if (held === undefined || caller === target) return { _tag: "Refused", reason: "NoReservation" }
    if (held.offers.length >= this.limits.maxOffersPerHolder) return { _tag: "Refused", reason: "TargetBusy" }
    if ((this.perCaller.get(caller) ?? 0) >= this.limits.maxCircuitsPerCaller) return { _tag: "Refused", reason: "CallerBusy" }
    if (this.circuits.size >= this.limits.maxCircuits) return { _tag: "Refused", reason: "CircuitsFull" }
    const deadline = now + this.limits.offerTtlMs
    this.circuits.set(token, { caller, target, deadline, legs: 0 })
    this.perCaller.set(caller, (this.perCaller.get(caller) ?? 0) + 1)
    held.offers.push(callerHost === undefined ? { token, caller } : { token, caller, callerHost })
    return { _tag: "Opened", deadline, targetHost: held.host }
  }

  /** The offers waiting for `holder` (handed over once) and renews its reservation; none without one. */
  takeOffers(holder: NodeId, now: number): ReadonlyArray<CircuitOffer> {
    this.expire(now)
    const held = this.reservations.get(holder)
    if (held === undefined) return []
    held.expiresAt = now + this.limits.reservationTtlMs
    const offers = held.offers
    held.offers = []
    return offers
  }

  /**
   * A leg presents `token`: the first of an offered circuit waits, the second
   * is spliced (the circuit then lives `circuitLifetimeMs`), anything else —
   * unknown, expired or a third leg — is closed.
   */
  arrive(token: string, now: number): Arrival {
    this.expire(now)
    const circuit = this.circuits.get(token)
    if (circuit === undefined || circuit.legs >= 2) return "Unknown"
    circuit.legs++
    if (circuit.legs === 1) return "Wait"
    circuit.deadline = now + this.limits.circuitLifetimeMs
    this.splicedTotal++
    return "Splice"
  }

  /** Until when the circuit of `token` lives (legs waiting or spliced); undefined once it is gone. */
  deadlineOf(token: string): number | undefined {
    return this.circuits.get(token)?.deadline
  }

  /** The circuit of `token` closed (a leg hung up, a bound was reached): it frees its caller's slot. */
  close(token: string): void {
    this.forget(token)
  }

  /** Reservations and circuits (offered or spliced) now, and circuits spliced since the start, for status and tests. */
  counts(now: number): { readonly reservations: number; readonly circuits: number; readonly splicedTotal: number } {
    this.expire(now)
    return { reservations: this.reservations.size, circuits: this.circuits.size, splicedTotal: this.splicedTotal }
  }

  /** Drops lapsed reservations and circuits whose deadline passed (offered but never spliced). */
  private expire(now: number): void {
    for (const [holder, held] of this.reservations) {
      if (held.expiresAt <= now) this.cancel(holder)
    }
    for (const [token, circuit] of this.circuits) {
      // A spliced circuit is closed by the shell when its deadline passes; one still waiting for legs expires here.
      if (circuit.legs < 2 && circuit.deadline <= now) this.forget(token)
    }
  }

  private forget(token: string): void {
    const circuit = this.circuits.get(token)
    if (circuit === undefined) return
    this.circuits.delete(token)
    countDown(this.perCaller, circuit.caller)
    const held = this.reservations.get(circuit.target)
    if (held !== undefined) held.offers = held.offers.filter((offer) => offer.token !== token)
  }

  private dropFromNetwork(group: string): void {
    countDown(this.perNetwork, group)
  }
}
