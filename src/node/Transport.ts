/**
 * The seam between a node and the network. A `Transport` sends protocol
 * requests to peers and hands authenticated inbound requests to the handlers
 * the node installs. The TCP implementation lives in `src/platform/`; an
 * in-memory one that runs the same handlers (with the same schemas) serves
 * tests and the simulator. Node code depends only on this Tag.
 *
 * @since 0.1.0
 */
import { Context, type Duration, Effect, Either, type Request, Schema, type Scope, type Stream } from "effect"
import type { Arrival } from "../core/CircuitRelay.js"
import type { Address } from "../core/Contact.js"
import type { NodeId } from "../core/Id.js"
import { PortMappingState } from "../core/PortMapping.js"
import { type RelayHint, routesOf } from "../core/PeerAddress.js"
import { type AuthenticatedPeer, type DhtRequest, RequestRefused } from "./Protocol.js"

/** Why a request did not get an answer from the peer's handler. */
export class TransportError extends Schema.TaggedError<TransportError>()("TransportError", {
  /** The peer's address, `host:port`. */
  peer: Schema.String,
  reason: Schema.Literal(
    /** No connection could be made (refused, unreachable, DNS). */
    "Unreachable",
    /** No answer within the call timeout. */
    "Timeout",
    /** The handshake failed: bad signature, wrong version, or the peer hung up during it. */
    "HandshakeFailed",
    /** The peer proved an identity other than the node id we expected at that address. */
    "IdentityMismatch",
    /** The peer sent something that does not decode (garbage, wrong schema, oversized frame). */
    "ProtocolViolation",
    /** The connection closed before the answer arrived. */
    "Closed",
    /** This node has too many calls or connections open; the call was not attempted. */
    "Overloaded"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    return `${this.peer}: ${this.reason}${this.detail === "" ? "" : ` (${this.detail})`}`
  }
}

/**
 * Whether a failed call counts against the peer in a routing table: it did
 * not answer, could not be reached or broke the protocol. A typed refusal
 * is an answer (the peer is there, only busy or unwilling), and
 * `Overloaded` is this node's own limit (the call was never made); neither
 * says the peer is gone.
 */
export const failureCountsAgainstPeer = (error: unknown): error is TransportError =>
  error instanceof TransportError && error.reason !== "Overloaded"

/**
 * What the transport has open and what its limits refused, for `peerchat
 * status`: refusals are how a node under attack (or overloaded) shows it.
 */
export const TransportHealth = Schema.Struct({
  /** Open inbound connections, including those in their handshake. */
  inbound: Schema.NonNegativeInt,
  /** Inbound connections still in their handshake. */
  pending: Schema.NonNegativeInt,
  /** Open outbound connections. */
  outbound: Schema.NonNegativeInt,
  /** Connections refused since start, by the limit that refused them (only those that did). */
  refusedConnections: Schema.Record({ key: Schema.String, value: Schema.NonNegativeInt }),
  /** Requests refused since start by a rate limit, by the limit (only those that did). */
  rateLimited: Schema.Record({ key: Schema.String, value: Schema.NonNegativeInt }),
  /** Bytes this node copied between the legs of circuits it relays, since start, both ways (absent: it relays none). */
  bytesRelayed: Schema.optional(Schema.NonNegativeInt),
  /** The port mapping on the home router (UPnP/NAT-PMP), when the node asked for one. */
  portMapping: Schema.optional(PortMappingState)
})
/** @see TransportHealth */
export type TransportHealth = typeof TransportHealth.Type

/** Health of a transport that has no connections to count (the in-memory one). */
export const noConnectionsHealth: TransportHealth = { inbound: 0, pending: 0, outbound: 0, refusedConnections: {}, rateLimited: {} }

/**
 * Whom to call: an address, and the node id the peer must prove when we
 * already know it; or, for a node that cannot be dialled, the relay to reach
 * it through (`via`; see `relayedTarget`).
 */
export interface PeerTarget {
  readonly address: Address
  readonly nodeId?: NodeId | undefined
  /** Reach the peer through a circuit at this relay, not at `address` (which is then the relay's). */
  readonly via?: RelayHint | undefined
}

/** The node `nodeId` reached through `relay`, where it keeps a reservation (its record lists the relay). */
export const relayedTarget = (nodeId: NodeId, relay: RelayHint): PeerTarget => ({
  address: relay.address,
  nodeId,
  via: relay
})

/**
 * A relay's decisions on circuit legs (core `CircuitTable`), which the node
 * gives its transport: whether a token is good, until when, and what a
 * circuit may carry. The transport only splices.
 */
export interface CircuitGate {
  /** A leg presented `token`: wait for the other leg, splice it, or close it. */
  readonly arrive: (token: string) => Arrival
  /** Until when the circuit of `token` may wait or live (ms since the epoch), if it is still known. */
  readonly deadlineOf: (token: string) => number | undefined
  /** The circuit of `token` ended. */
  readonly close: (token: string) => void
  /** Bytes a circuit carries each way before it is closed. */
  readonly circuitBytes: number
}

/** A connection this node opened to a peer through a relay (a circuit), once it carries the secure channel. */
export interface RelayedConnection {
  /** The peer reached. */
  readonly nodeId: NodeId
  /** The relay it was reached through. */
  readonly via: RelayHint
  /** The host the peer holds its reservation from, as the relay saw it (absent from older relays). */
  readonly peerHost: string | undefined
}

/**
 * One end of a hole punch (core `HolePunch`): dial `host:port` from
 * `localPort` until the other end, dialling back at the same time, is
 * reached or `withinMillis` pass. The `Initiator` then runs the handshake as
 * the caller and keeps the connection for its calls to `peer`, in place of
 * the relayed one; the `Responder` answers the handshake and serves it.
 */
export interface PunchPlan {
  readonly peer: NodeId
  readonly host: string
  readonly port: number
  readonly localPort: number
  readonly role: "Initiator" | "Responder"
  readonly withinMillis: number
}

/** A successful call: the handler's answer and the identity the peer proved. */
export interface CallResult<A> {
  readonly value: A
  readonly peer: AuthenticatedPeer
}

/**
 * A request of any layer of the protocol (the DHT's in `Protocol.ts`, the
 * chat's in `src/chat/ChatProtocol.ts`): a tagged request with its success
 * and error types. The transport carries any of them; which ones it serves is
 * whatever the layers install.
 */
export type AnyRequest = Request.Request<unknown, unknown> & { readonly _tag: string }

/** A handler of `R`: its answer given the authenticated caller. */
export type Handler<R extends AnyRequest> = (
  caller: AuthenticatedPeer,
  request: R
) => Effect.Effect<Request.Request.Success<R>, Request.Request.Error<R>>

/** One handler per request of the union `R`, by tag. */
export type Handlers<R extends AnyRequest> = {
  readonly [Tag in R["_tag"]]: Handler<Extract<R, { readonly _tag: Tag }>>
}

/** A handler of some request, as a transport keeps it (it hands each handler only requests of its tag). */
export type AnyHandler = (caller: AuthenticatedPeer, request: never) => Effect.Effect<unknown, unknown>

/** Handlers by tag, as layers install them. */
export type InstalledHandlers = { readonly [tag: string]: AnyHandler | undefined }

/** The DHT's handlers (installed by `DhtNode`). */
export type DhtHandlers = Handlers<DhtRequest>

/** Sends requests to peers and serves this node's handlers. */
export class Transport extends Context.Tag("peerchat/Transport")<Transport, {
  /** The address this node is reachable at (with the bound port when it listened on port 0). */
  readonly localAddress: Address
  /**
   * Sends `request` to `peer`, authenticating it (and checking its node id when
   * given) first. Fails with the handler's typed error or a `TransportError`;
   * never waits longer than `timeout` (the transport's default when omitted).
   */
  readonly send: <R extends AnyRequest>(
    peer: PeerTarget,
    request: R,
    options?: { readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError>
  /**
   * Checks that `target.nodeId` accepts connections at `target.address` (a
   * caller's dial-back, a `DialBack` request): dials there and has the node
   * that answers prove that id, without a call: no handler of the peer runs,
   * and it does not take this node for a caller (over TCP, core
   * `ListeningProbe`). Succeeds with the peer at the address dialled, now
   * verified; fails with a `TransportError` (`IdentityMismatch` when another
   * node listens there). Never waits longer than `timeout`.
   */
  readonly proveListening: (
    target: { readonly address: Address; readonly nodeId: NodeId },
    options?: { readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<AuthenticatedPeer, TransportError>
  /**
   * Installs handlers that answer inbound requests, for the lifetime of the
   * scope; each call adds its handlers to those already installed (the DHT
   * and the chat install theirs separately). A request whose handler is not
   * installed is refused (`RequestRefused`, NotAccepted).
   */
  readonly serve: (handlers: InstalledHandlers) => Effect.Effect<void, never, Scope.Scope>
  /** Open connections and refusals so far. */
  readonly health: Effect.Effect<TransportHealth>
  /**
   * Splices circuit legs that present tokens `gate` knows, for the lifetime
   * of the scope: how a publicly reachable node relays for nodes behind
   * NATs. Without it, every circuit leg is closed at once.
   */
  readonly relayCircuits: (gate: CircuitGate) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Takes a circuit a relay offered (this node holds a reservation there):
   * dials the relay, presents `token`, and serves `caller` through it as
   * if it had connected directly (it must prove that id in the handshake).
   * Completes once the circuit carries the secure channel; the connection
   * then lives on its own.
   */
  readonly acceptCircuit: (
    relay: RelayHint,
    token: string,
    caller: NodeId,
    callerHost?: string
  ) => Effect.Effect<void, TransportError>
  /** Each connection this node opens through a relay, once it is up (where a hole punch may start). */
  readonly relayedConnections: Stream.Stream<RelayedConnection>
  /**
   * Runs one end of a hole punch; completes once the direct connection
   * carries the secure channel with `plan.peer` (who must prove that id).
   * From then on the initiator's calls to the peer, even those addressed
   * through a relay, take the direct connection while it lasts.
   */
  readonly punch: (plan: PunchPlan) => Effect.Effect<void, TransportError>
}>() {}

/** A refusal for a request whose handler is not installed. */
export const refusedNotServed = (tag: string, anyInstalled: boolean): RequestRefused =>
  anyInstalled
    ? new RequestRefused({ reason: "NotAccepted", detail: `this node does not serve ${tag} requests` })
    : new RequestRefused({ reason: "Overloaded", detail: "the node is not serving requests yet" })

/**
 * The handlers a transport currently serves, for transports to share: each
 * `install` adds handlers for the lifetime of its scope, and removes exactly
 * the ones it added when the scope closes (unless another install replaced them).
 */
export const makeHandlerRegistry = () => {
  let installed: InstalledHandlers = {}
  let count = 0
  return {
    /** The handlers installed now, and whether any are. */
    current: (): { readonly handlers: InstalledHandlers; readonly any: boolean } => ({
      handlers: installed,
      any: count > 0
    }),
    /**
     * The handler installed for `request`'s tag, typed for that request: each
     * layer installs, under a tag, the handler of the request with that tag.
     */
    handlerFor: <R extends AnyRequest>(request: R): Handler<R> | undefined => installed[request._tag] as Handler<R> | undefined,
    install: (handlers: InstalledHandlers): Effect.Effect<void, never, Scope.Scope> =>
      Effect.acquireRelease(
        Effect.sync(() => {
          installed = { ...installed, ...handlers }
          count = Object.values(installed).filter((handler) => handler !== undefined).length
        }),
        () =>
          Effect.sync(() => {
            const next: { [tag: string]: AnyHandler | undefined } = { ...installed }
            for (const tag of Object.keys(handlers)) {
              if (next[tag] === handlers[tag]) delete next[tag]
            }
            installed = next
            count = Object.values(installed).filter((handler) => handler !== undefined).length
          })
      )
  }
}

/**
 * Sends `request` to the node of a user record by the routes it lists
 * (core `routesOf`: direct addresses first, then each relay), until one
 * carries it: a `TransportError` moves on to the next route, the peer's own
 * answer or typed failure ends the attempt. Fails with the last route's
 * error when none carried it.
 */
export const sendByRoutes = <R extends AnyRequest>(
  transport: Context.Tag.Service<Transport>,
  owner: {
    readonly nodeId: NodeId
    readonly addresses: ReadonlyArray<Address>
    readonly relays?: ReadonlyArray<RelayHint> | undefined
  },
  request: R,
  options?: { readonly timeout?: Duration.DurationInput }
): Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError> =>
  Effect.gen(function*() {
    let last = new TransportError({ peer: owner.nodeId.slice(0, 16), reason: "Unreachable", detail: "the record lists no route" })
    for (const route of routesOf(owner)) {
      const target: PeerTarget = route._tag === "Direct"
        ? { address: route.address, nodeId: owner.nodeId }
        : relayedTarget(owner.nodeId, route.relay)
      const outcome = yield* Effect.either(transport.send(target, request, options))
      if (Either.isRight(outcome)) return outcome.right
      if (!(outcome.left instanceof TransportError)) return yield* Effect.fail(outcome.left)
      last = outcome.left
    }
    return yield* Effect.fail(last)
  })
