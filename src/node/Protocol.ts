/**
 * The Peerchat wire protocol: every request a node answers (the DHT's and
 * the chat's), with the schemas of its payload, success and typed failures. Requests are
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
import { Mail, MailboxAccessDenied, MailboxAuthorization, MAX_MAIL_PER_ACK, MAX_MAIL_PER_FETCH, Postage } from "../core/Mail.js"
import { Envelope, MessageId, SignedReceipt } from "../core/Message.js"
import { RecordRejected, UserRecord } from "../core/UserRecord.js"

/** Protocol version spoken in the handshake; a peer on another version is refused. */
export const PROTOCOL_VERSION = 2

/** Most contacts a FindNode or FindValue answer may carry (the largest k a node accepts). */
export const MAX_CONTACTS_PER_ANSWER = 64

/** A list of contacts as it travels in answers: bounded. */
export const ContactList = Schema.Array(Contact).pipe(Schema.maxItems(MAX_CONTACTS_PER_ANSWER))

/**
 * The node refused to do the work (load shedding, quotas, placement); the
 * caller may try another node. `NotResponsible`: the callee is not among the
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

// ---------------------------------------------------------------------------
// Chat: direct delivery, relay mailboxes

/** The recipient's node did not accept a message (it is not for this node's user, or it does not check out). */
export class MessageRefused extends Schema.TaggedError<MessageRefused>()("MessageRefused", {
  reason: Schema.Literal(
    /** The envelope is filed under another user than the one this node serves. */
    "WrongRecipient",
    /** The sender's record could not be found, so the signature cannot be checked (yet). */
    "SenderUnknown",
    /** It does not decrypt, or the signed message does not match the sender's published key. */
    "Invalid"
  ),
  detail: Schema.String.pipe(Schema.maxLength(500))
}) {
  override get message(): string {
    return `the recipient refused the message (${this.reason}): ${this.detail}`
  }
}

/**
 * Delivers a sealed message to its recipient's node, which checks it,
 * commits it to its history and only then answers with a signed receipt.
 * A duplicate is answered with a receipt too (so a retry ends delivery).
 */
export class SendMessage extends Schema.TaggedRequest<SendMessage>()("SendMessage", {
  payload: { envelope: Envelope },
  success: Schema.Struct({ receipt: SignedReceipt }),
  failure: Schema.Union(MessageRefused, RequestRefused)
}) {}

/** Hands a delivery receipt to the node of the message's sender (from the recipient, or from a relay). */
export class DeliverReceipt extends Schema.TaggedRequest<DeliverReceipt>()("DeliverReceipt", {
  payload: { receipt: SignedReceipt },
  success: Schema.Struct({
    /** Whether the receipt matched a message this node sent ("Unknown" is final: do not retry). */
    outcome: Schema.Literal("Accepted", "Unknown")
  }),
  failure: RequestRefused
}) {}

/**
 * Leaves mail with a relay for a user who is offline. `postage` is the
 * sender's signed record and its signature over the mail, its mailbox and
 * `postage.expiresAt`, when the first copy expires: copies made by
 * re-replication pass it on unchanged and never outlive it (a relay keeps
 * the earlier of it and its own lifetime). Refused `NotResponsible` by a
 * node that is not among the mailbox key's k closest, `QuotaExceeded` when a
 * quota (the mailbox's, the total, or one sender's or one address's share)
 * is full, `NotAccepted` when the postage does not check out.
 */
export class StoreMail extends Schema.TaggedRequest<StoreMail>()("StoreMail", {
  payload: { mail: Mail, postage: Postage },
  success: Schema.Struct({ outcome: Schema.Literal("Stored", "Duplicate") }),
  failure: RequestRefused
}) {}

/** Reads the caller's own mailbox at a relay, oldest first; `authorization` is signed by the mailbox's owner. */
export class FetchMail extends Schema.TaggedRequest<FetchMail>()("FetchMail", {
  payload: { recipientKey: Key, authorization: MailboxAuthorization },
  success: Schema.Struct({
    mail: Schema.Array(Mail).pipe(Schema.maxItems(MAX_MAIL_PER_FETCH)),
    /** More mail is waiting beyond this answer (acknowledge these, then fetch again). */
    more: Schema.Boolean
  }),
  failure: Schema.Union(MailboxAccessDenied, RequestRefused)
}) {}

/** Deletes mail its owner has committed; `authorization` is signed by the owner over the ids. */
export class AckMail extends Schema.TaggedRequest<AckMail>()("AckMail", {
  payload: {
    recipientKey: Key,
    ids: Schema.Array(MessageId).pipe(Schema.maxItems(MAX_MAIL_PER_ACK)),
    authorization: MailboxAuthorization
  },
  success: Schema.Struct({ removed: Schema.NonNegativeInt }),
  failure: Schema.Union(MailboxAccessDenied, RequestRefused)
}) {}

/** Every request of the protocol. */
export type NodeRequest = Ping | FindNode | FindValue | Store | SendMessage | DeliverReceipt | StoreMail | FetchMail | AckMail

/** The request classes by tag, for transports that encode, decode or check a request by its tag. */
export const requestClasses = {
  Ping,
  FindNode,
  FindValue,
  Store,
  SendMessage,
  DeliverReceipt,
  StoreMail,
  FetchMail,
  AckMail
} as const

/** Schema of any request, for transports that decode a frame before dispatching it. */
export const NodeRequest = Schema.Union(...Object.values(requestClasses))

/** The tags of every request. */
export type NodeRequestTag = NodeRequest["_tag"]

/** The protocol as an `@effect/rpc` group, served by the TCP transport. */
export class NodeRpcs extends RpcGroup.make(
  Rpc.fromTaggedRequest(Ping),
  Rpc.fromTaggedRequest(FindNode),
  Rpc.fromTaggedRequest(FindValue),
  Rpc.fromTaggedRequest(Store),
  Rpc.fromTaggedRequest(SendMessage),
  Rpc.fromTaggedRequest(DeliverReceipt),
  Rpc.fromTaggedRequest(StoreMail),
  Rpc.fromTaggedRequest(FetchMail),
  Rpc.fromTaggedRequest(AckMail)
) {}

/** The peer that sent a request, as proven by the transport's handshake. */
export const AuthenticatedPeer = Schema.Struct({
  nodeId: NodeId,
  /**
   * Where the peer can be reached: for a peer we called, the address we
   * dialled; for a caller, the host its connection comes from and the port it
   * says it listens on (verified only once dialled back, see `Routing`).
   */
  address: Contact.fields.address,
  /**
   * The host (IP address) the callee saw the connection come from, set by
   * the serving transport on inbound requests (never taken from the peer).
   * Relays count mail per source with it; absent, they count per node id.
   */
  observedHost: Schema.optional(Schema.String.pipe(Schema.maxLength(253)))
})
/** @see AuthenticatedPeer */
export type AuthenticatedPeer = typeof AuthenticatedPeer.Type
