/**
 * The seam between a node and the network. A `Transport` sends protocol
 * requests to peers and hands authenticated inbound requests to the handlers
 * the node installs. The TCP implementation lives in `src/platform/`; an
 * in-memory one that runs the same handlers (with the same schemas) serves
 * tests and the simulator. Node code depends only on this Tag.
 *
 * @since 0.1.0
 */
import { Context, type Duration, type Effect, type Request, Schema, type Scope } from "effect"
import type { Address } from "../core/Contact.js"
import type { NodeId } from "../core/Id.js"
import type { AuthenticatedPeer, FindNode, FindValue, NodeRequest, Ping, Store } from "./Protocol.js"

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

/** Whom to call: an address, and the node id the peer must prove when we already know it. */
export interface PeerTarget {
  readonly address: Address
  readonly nodeId?: NodeId | undefined
}

/** A successful call: the handler's answer and the identity the peer proved. */
export interface CallResult<A> {
  readonly value: A
  readonly peer: AuthenticatedPeer
}

/** The node's answers to each request, given the authenticated caller. */
export interface RequestHandlers {
  readonly Ping: (caller: AuthenticatedPeer, request: Ping, observedHost: string) => Effect.Effect<Request.Request.Success<Ping>, Request.Request.Error<Ping>>
  readonly FindNode: (caller: AuthenticatedPeer, request: FindNode) => Effect.Effect<Request.Request.Success<FindNode>, Request.Request.Error<FindNode>>
  readonly FindValue: (caller: AuthenticatedPeer, request: FindValue) => Effect.Effect<Request.Request.Success<FindValue>, Request.Request.Error<FindValue>>
  readonly Store: (caller: AuthenticatedPeer, request: Store) => Effect.Effect<Request.Request.Success<Store>, Request.Request.Error<Store>>
}

/** Sends requests to peers and serves this node's handlers. */
export class Transport extends Context.Tag("peerchat/Transport")<Transport, {
  /** The address this node is reachable at (with the bound port when it listened on port 0). */
  readonly localAddress: Address
  /**
   * Sends `request` to `peer`, authenticating it (and checking its node id when
   * given) first. Fails with the handler's typed error or a `TransportError`;
   * never waits longer than `timeout` (the transport's default when omitted).
   */
  readonly send: <R extends NodeRequest>(
    peer: PeerTarget,
    request: R,
    options?: { readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError>
  /**
   * Installs the handlers that answer inbound requests, for the lifetime of the
   * scope. Until then inbound requests are refused as `Overloaded`.
   */
  readonly serve: (handlers: RequestHandlers) => Effect.Effect<void, never, Scope.Scope>
}>() {}
