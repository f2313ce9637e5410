/**
 * The Peerchat DHT wire protocol: every request a node answers, with the
 * schemas of its payload, success and typed failures. Requests are
 * `Schema.TaggedRequest` classes, so one definition serves the TCP transport
 * (through the `@effect/rpc` group below), the in-memory transport and the
 * handlers. Callers are authenticated by the transport's handshake before any
 * request reaches a handler, so no payload carries a claimed sender id.
 *
 * @since 0.1.0
 */
import { Rpc, RpcGroup } from "@effect/rpc"
import { Schema } from "effect"
import { Contact } from "../core/Contact.js"
import { Key, NodeId } from "../core/Id.js"
import { RecordRejected, UserRecord } from "../core/UserRecord.js"

/** Protocol version spoken in the handshake; a peer on another version is refused. */
export const PROTOCOL_VERSION = 1

/** Most contacts a FindNode or FindValue answer may carry (the largest k a node accepts). */
export const MAX_CONTACTS_PER_ANSWER = 64

/** A list of contacts as it travels in answers: bounded. */
export const ContactList = Schema.Array(Contact).pipe(Schema.maxItems(MAX_CONTACTS_PER_ANSWER))

/** The node refused to do the work (load shedding, quotas); the caller may try another node. */
export class RequestRefused extends Schema.TaggedError<RequestRefused>()("RequestRefused", {
  reason: Schema.Literal("Overloaded", "QuotaExceeded", "NotAccepted"),
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
  Schema.TaggedStruct("Found", { record: UserRecord, contacts: ContactList }),
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

/** Every request of the DHT protocol. */
export type NodeRequest = Ping | FindNode | FindValue | Store

/** Schema of any request, for transports that decode a frame before dispatching it. */
export const NodeRequest = Schema.Union(Ping, FindNode, FindValue, Store)

/** The protocol as an `@effect/rpc` group, served by the TCP transport. */
export class NodeRpcs extends RpcGroup.make(
  Rpc.fromTaggedRequest(Ping),
  Rpc.fromTaggedRequest(FindNode),
  Rpc.fromTaggedRequest(FindValue),
  Rpc.fromTaggedRequest(Store)
) {}

/** The peer that sent a request, as proven by the transport's handshake. */
export const AuthenticatedPeer = Schema.Struct({
  nodeId: NodeId,
  /** Where the peer says it listens (its advertised address, which it signed in the handshake). */
  address: Contact.fields.address
})
/** @see AuthenticatedPeer */
export type AuthenticatedPeer = typeof AuthenticatedPeer.Type
