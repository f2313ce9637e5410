/**
 * The DHT's part of the wire protocol (`Ping`, `FindNode`, `FindValue`,
 * `Store`), with the schemas of each request's payload, success and typed
 * failures, and what every request shares: the protocol version, the
 * authenticated caller, `RequestRefused`. The chat's part is
 * `src/chat/ChatProtocol.ts`. Requests are `Schema.TaggedRequest` classes, so
 * one definition serves the TCP transport, the in-memory transport and the
 * handlers. Callers are authenticated by the transport's handshake before any
 * request reaches a handler, so no payload carries a claimed sender id.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { Address, ContactOnWire } from "../core/Contact.js"
import { Key, NodeId } from "../core/Id.js"
import { RecordRejected, UserRecord } from "../core/UserRecord.js"

/** Protocol version spoken in the handshake; a peer on another version is refused. */
export const PROTOCOL_VERSION = 3

/** Most contacts a FindNode or FindValue answer may carry (the largest k a node accepts). */
export const MAX_CONTACTS_PER_ANSWER = 64

/** A list of contacts as it travels in answers: bounded, each checked in one step (`ContactOnWire`). */
export const ContactList = Schema.Array(ContactOnWire).pipe(Schema.maxItems(MAX_CONTACTS_PER_ANSWER))

/**
 * The node refused to do the work (load shedding, quotas, placement); the
 * caller may try another node. `Overloaded` also answers a request whose name
 * claim would cost a hash evaluation beyond the caller's or the node's
 * claim-check budget (core `ClaimCheckBudget`; the detail names which).
 * `NotResponsible`: the callee is not among the
 * k closest nodes of the key (a `Store` or `StoreMail` there would hold
 * something it has no reason to keep; see core `StoragePolicy`): ask the
 * nodes closer to the key.
 */
export class RequestRefused extends Schema.TaggedError<RequestRefused>()("RequestRefused", {
  reason: Schema.Literal("Overloaded", "QuotaExceeded", "NotAccepted", "NotResponsible"),
  detail: Schema.String.pipe(Schema.maxLength(500))
}) {
  override get message(): string {
    return `the peer refused the request (${this.reason}): ${this.detail}`
  }
}

/** Liveness check; the answer also tells the caller the address it was seen from. */
export class Ping extends Schema.TaggedRequest<Ping>()("Ping", {
  payload: {},
  success: Schema.Struct({
    /** Host the callee saw this connection come from (helps a node learn its public address). */
    observedHost: Schema.String.pipe(Schema.maxLength(253))
  }),
  failure: RequestRefused
}) {}

/** The k contacts closest to `target` that the callee knows (never the caller itself). */
export class FindNode extends Schema.TaggedRequest<FindNode>()("FindNode", {
  payload: { target: Key },
  success: Schema.Struct({ contacts: ContactList }),
  failure: RequestRefused
}) {}

/** What FindValue answers: the record when the callee holds it, otherwise closer contacts. */
export const FindValueAnswer = Schema.Union(
  Schema.TaggedStruct("Found", {
    record: UserRecord,
    /** A claim of the same name by another key that the callee also holds (see RecordStore.putRival). */
    rival: Schema.optional(UserRecord),
    contacts: ContactList
  }),
  Schema.TaggedStruct("Closer", { contacts: ContactList })
)
/** @see FindValueAnswer */
export type FindValueAnswer = typeof FindValueAnswer.Type

/** Kademlia FIND_VALUE for the user record stored under `key` (a user key). */
export class FindValue extends Schema.TaggedRequest<FindValue>()("FindValue", {
  payload: { key: Key },
  success: FindValueAnswer,
  failure: RequestRefused
}) {}

/** Stores a signed user record at the callee, which checks it with the core's acceptance rules. */
export class Store extends Schema.TaggedRequest<Store>()("Store", {
  payload: { record: UserRecord },
  success: Schema.Struct({ outcome: Schema.Literal("Stored", "Unchanged") }),
  failure: Schema.Union(RecordRejected, RequestRefused)
}) {}

/**
 * Asks the callee to dial the caller back at the caller's address (the host
 * its connection comes from and the port it listens on) and say whether the
 * caller's node id answered there: how a node learns whether it is reachable
 * (AutoNAT style). The callee dials only that address, never one the caller
 * names, so it cannot be used to make a node connect to a third party.
 */
export class DialBack extends Schema.TaggedRequest<DialBack>()("DialBack", {
  payload: {},
  success: Schema.Struct({ reachable: Schema.Boolean }),
  failure: RequestRefused
}) {}

/** The DHT's requests, listed once: the request classes by tag. */
export const dhtRequests = {
  Ping,
  FindNode,
  FindValue,
  Store,
  DialBack
} as const

/** Every request of the DHT. */
export type DhtRequest = InstanceType<(typeof dhtRequests)[keyof typeof dhtRequests]>

/** The peer that sent a request, as proven by the transport's handshake. */
export const AuthenticatedPeer = Schema.Struct({
  nodeId: NodeId,
  /**
   * Where the peer can be reached: for a peer we called, the address we
   * dialled; for a caller, the host its connection comes from and the port it
   * says it listens on (verified only once dialled back, see `Routing`).
   */
  address: Address,
  /**
   * The host (IP address) the connection came from, set by the transport,
   * never taken from the peer: as the socket shows it for a direct caller;
   * for a peer reached through a relay (either way), as the relay saw it
   * (the host a hole punch may dial; absent when the relay did not say).
   * Relays count mail per source with it; absent, they count per node id.
   */
  observedHost: Schema.optional(Schema.String.pipe(Schema.maxLength(253))),
  /**
   * Set when the connection runs through a circuit at this relay (the peer
   * is behind a NAT, or this node is): `address` is then the relay's for a
   * peer we called, and port 0 (not dialable) for a caller. A connection a
   * hole punch opened has no `relayedBy` and port 0 (a NAT's mapping).
   */
  relayedBy: Schema.optional(NodeId)
})
/** @see AuthenticatedPeer */
export type AuthenticatedPeer = typeof AuthenticatedPeer.Type
