/**
 * The relay's part of the wire protocol (`Reserve`, `AwaitCircuit`,
 * `OpenCircuit`): how a node that cannot be dialled keeps a slot at a
 * publicly reachable node, and how a caller asks that relay for a circuit to
 * it. The decisions are core `CircuitRelay`; the circuit itself is two fresh
 * connections to the relay, each opening with the circuit preamble (see
 * `CIRCUIT_PREAMBLE`) instead of a handshake, spliced by the relay; the two
 * ends then run the ordinary secure channel through it.
 *
 * @since 0.3.0
 */
import { Schema } from "effect"
import { parseIp } from "../core/AddressGroup.js"
import { NodeId } from "../core/Id.js"
import { RequestRefused } from "./Protocol.js"

/** A circuit token: 16 random bytes as 32 lower-case hex characters. */
export const CircuitToken = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{32}$/, { message: () => "expected 32 lower-case hex characters (a 16-byte circuit token)" })
)

/** Bytes of a circuit token on the wire. */
export const CIRCUIT_TOKEN_BYTES = 16

/**
 * What a circuit leg sends first instead of a handshake: the 4 ASCII bytes
 * "PCRL" and then the 16 token bytes. A handshake's first bytes are a
 * length of at most 1,024 (0x04 0x00), so an opening "P" (0x50) can never be
 * one: a relay tells the two apart from the first byte.
 */
export const CIRCUIT_PREAMBLE = Uint8Array.from([0x50, 0x43, 0x52, 0x4c])

/** Bytes a circuit leg sends before the relay decides: the preamble and the token. */
export const CIRCUIT_OPENING_BYTES = CIRCUIT_PREAMBLE.length + CIRCUIT_TOKEN_BYTES

/** Why a relay refused a reservation or a circuit (core `CircuitRefusal`), or that it relays nothing. */
export class CircuitRefused extends Schema.TaggedError<CircuitRefused>()("CircuitRefused", {
  reason: Schema.Literal(
    /** This node is not known to be publicly reachable, so it relays for nobody. */
    "NotRelaying",
    "ReservationsFull",
    "NetworkFull",
    "NoReservation",
    "TargetBusy",
    "CallerBusy",
    "CircuitsFull"
  ),
  detail: Schema.String.pipe(Schema.maxLength(500))
}) {
  override get message(): string {
    return `the relay refused (${this.reason}): ${this.detail}`
  }
}

/**
 * A host as a relay saw it (an IPv4 or IPv6 address, never a name): where
 * the other end of a circuit connected from, the only host a hole punch may dial.
 */
export const ObservedHost = Schema.String.pipe(
  Schema.maxLength(45),
  Schema.pattern(/^[0-9a-fA-F.:]+$/, { message: () => "expected an IP address" }),
  // The characters alone also spell names ("bad.de", "fab.be"), which a dial would resolve.
  Schema.filter((host) => parseIp(host) !== undefined, { message: () => "expected an IPv4 or IPv6 address" })
)

/**
 * Reserves (or renews) a slot at the callee for the caller, which cannot be
 * dialled: others may then reach it through the callee. The caller keeps it
 * by asking for circuits (`AwaitCircuit`) at least every `renewWithinMillis`.
 */
export class Reserve extends Schema.TaggedRequest<Reserve>()("Reserve", {
  payload: {},
  success: Schema.Struct({
    /** When the reservation lapses unless renewed (ms since the Unix epoch, the relay's clock). */
    expiresAt: Schema.NonNegativeInt,
    /** Renew within this long (the relay's reservation lifetime). */
    renewWithinMillis: Schema.NonNegativeInt,
    /** Bytes one circuit carries each way, and how long it lives (ms), before the relay closes it. */
    circuitBytes: Schema.NonNegativeInt,
    circuitLifetimeMillis: Schema.NonNegativeInt
  }),
  failure: Schema.Union(CircuitRefused, RequestRefused)
}) {}

/** Longest a relay holds an `AwaitCircuit` open before answering with no offer. */
export const AWAIT_CIRCUIT_MAX_MILLIS = 20_000

/** Most offers one `AwaitCircuit` answer carries. */
export const MAX_OFFERS_PER_ANSWER = 16

/**
 * Waits (at most `AWAIT_CIRCUIT_MAX_MILLIS`) for callers' circuits to the
 * caller, which holds a reservation at the callee, and renews it. Each offer
 * is the token to present on a fresh connection to the callee, and the node
 * id of who asked (which the secure channel through the circuit then proves).
 */
export class AwaitCircuit extends Schema.TaggedRequest<AwaitCircuit>()("AwaitCircuit", {
  payload: {},
  success: Schema.Struct({
    offers: Schema.Array(Schema.Struct({
      token: CircuitToken,
      caller: NodeId,
      /** The host the caller asked from, as the relay saw it (absent from relays before 0.4). */
      callerHost: Schema.optional(ObservedHost)
    })).pipe(
      Schema.maxItems(MAX_OFFERS_PER_ANSWER)
    )
  }),
  failure: Schema.Union(CircuitRefused, RequestRefused)
}) {}

/**
 * Asks the callee, a relay, for a circuit to `target`, which holds a
 * reservation there: the answer is the token both ends present on fresh
 * connections to the callee within `validForMillis`.
 */
export class OpenCircuit extends Schema.TaggedRequest<OpenCircuit>()("OpenCircuit", {
  payload: { target: NodeId },
  success: Schema.Struct({
    token: CircuitToken,
    validForMillis: Schema.NonNegativeInt,
    /** The host the target holds its reservation from, as the relay saw it (absent from relays before 0.4). */
    targetHost: Schema.optional(ObservedHost)
  }),
  failure: Schema.Union(CircuitRefused, RequestRefused)
}) {}

/** Why a peer did not take part in a hole punch (core `PunchRefusal`, or the request's own fault). */
export class PunchRefused extends Schema.TaggedError<PunchRefused>()("PunchRefused", {
  reason: Schema.Literal(
    /** One with this caller is under way. */
    "InProgress",
    /** This caller asked lately. */
    "TooSoon",
    /** As many are under way as the callee allows. */
    "Busy",
    /** Asked over a direct connection (nothing to upgrade), or the callee cannot be dialled out from. */
    "NotRelayed",
    /** The relay did not say where the caller connected from, so there is no host to dial. */
    "NoHost"
  ),
  detail: Schema.String.pipe(Schema.maxLength(500))
}) {
  override get message(): string {
    return `the peer did not punch (${this.reason}): ${this.detail}`
  }
}

/** The lowest port a punch may name (ports below are privileged, never a NAT mapping's). */
export const MIN_PUNCH_PORT = 1024

/**
 * Sent over a relayed connection: "let us connect directly". The caller
 * dials the callee, from `port`, at the host the relay saw the callee at;
 * the callee answers with the port it dials from and dials the caller, at
 * the host the relay saw the caller at, at once. Both keep dialling for a
 * few seconds (a simultaneous TCP open); the caller then runs the ordinary
 * handshake as initiator over the new connection, and the callee answers it.
 */
export class HolePunch extends Schema.TaggedRequest<HolePunch>()("HolePunch", {
  payload: { port: Schema.Int.pipe(Schema.between(MIN_PUNCH_PORT, 65535)) },
  success: Schema.Struct({ port: Schema.Int.pipe(Schema.between(MIN_PUNCH_PORT, 65535)) }),
  failure: Schema.Union(PunchRefused, RequestRefused)
}) {}

/** The relay's requests, listed once: the request classes by tag. */
export const circuitRequests = {
  Reserve,
  AwaitCircuit,
  OpenCircuit,
  HolePunch
} as const

/** Every request of the relay protocol. */
export type CircuitRequest = InstanceType<(typeof circuitRequests)[keyof typeof circuitRequests]>
