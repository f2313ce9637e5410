/**
 * The chat's part of the wire protocol: direct delivery of sealed messages
 * and receipts, and the relay mailboxes of offline users, with the schemas of
 * each request's payload, success and typed failures. The DHT's part is
 * `src/node/Protocol.ts`; the transports serve both, merged where they are
 * built (`src/platform/WireProtocol.ts`).
 *
 * @since 0.2.0
 */
import { Schema } from "effect"
import { Key } from "../core/Id.js"
import { Mail, MailboxAccessDenied, MailboxAuthorization, MAX_MAIL_PER_ACK, MAX_MAIL_PER_FETCH, Postage } from "../core/Mail.js"
import { Envelope, MessageId, SignedReceipt } from "../core/Message.js"
import { RequestRefused } from "../node/Protocol.js"
import type { Handlers } from "../node/Transport.js"

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

/** The chat's requests, listed once: the request classes by tag. */
export const chatRequests = {
  SendMessage,
  DeliverReceipt,
  StoreMail,
  FetchMail,
  AckMail
} as const

/** Every request of the chat. */
export type ChatRequest = InstanceType<(typeof chatRequests)[keyof typeof chatRequests]>

/** The chat's handlers (installed by `Delivery` and `Relay`). */
export type ChatHandlers = Handlers<ChatRequest>
