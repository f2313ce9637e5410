/**
 * Mail: what relays hold for a user who is offline, and how that user proves
 * it owns a mailbox. A mail is either a sealed message (an `Envelope`, for
 * its recipient) or a signed delivery receipt travelling back to the sender
 * of a message that was delivered while the sender was away. Relays file
 * mail under the user key of the user it is for and learn nothing else: the
 * message is encrypted, and a receipt names only a message id and the user
 * who received it.
 *
 * Reading or clearing a mailbox takes a `MailboxRequest` signed with the
 * owner's published signing key, bound to the relay it is sent to and to the
 * time it was made, so a relay (or anyone who saw the request) cannot replay
 * it elsewhere or later.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "./Bytes.js"
import { rawHex, uint16, uint64 } from "./Encoding.js"
import { Key, type NodeId } from "./Id.js"
import { Envelope, envelopeId, type MessageId, receiptSigningBytes, SignedReceipt } from "./Message.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import { SignatureHex, type UserRecord, type VerifySignature, verifySafely } from "./UserRecord.js"
import { userKey } from "./Username.js"

/** Most mails one FetchMail answer carries: 32 of the largest envelopes (about 22 KiB each) fit a 1 MiB frame. */
export const MAX_MAIL_PER_FETCH = 32

/** Most ids one AckMail names (the same as a fetch, so one fetch is acknowledged in one call). */
export const MAX_MAIL_PER_ACK = MAX_MAIL_PER_FETCH

/** How far a mailbox request's `requestedAt` may be from the relay's clock, either way (5 minutes). */
export const MAILBOX_REQUEST_MAX_SKEW_MS = 5 * 60_000

/** Prefix of the bytes a mailbox request signature covers. */
export const MAILBOX_SIGNING_PREFIX = "peerchat/mailbox/v1\n"

const MAILBOX_PREFIX_BYTES = utf8(MAILBOX_SIGNING_PREFIX)
const RECEIPT_MAIL_PREFIX_BYTES = utf8("peerchat/receipt-mail/v1\n")

/** A message for an offline user, as its sender sealed it. */
export const MessageMail = Schema.TaggedStruct("Message", { envelope: Envelope })
/** @see MessageMail */
export type MessageMail = typeof MessageMail.Type

/** A delivery receipt for the sender of a message, filed under the sender's user key. */
export const ReceiptMail = Schema.TaggedStruct("Receipt", {
  /** The user key of the message's sender, who this receipt is for. */
  recipientKey: Key,
  receipt: SignedReceipt
})
/** @see ReceiptMail */
export type ReceiptMail = typeof ReceiptMail.Type

/** Anything a relay holds for an offline user. */
export const Mail = Schema.Union(MessageMail, ReceiptMail)
/** @see Mail */
export type Mail = typeof Mail.Type

/** The user key a mail is filed under. */
export const mailRecipientKey = (mail: Mail): Key =>
  mail._tag === "Message" ? mail.envelope.recipientKey : mail.recipientKey

/**
 * The id a relay files a mail under and remembers as seen: the message id of
 * an envelope, or for a receipt SHA-256 of a distinct prefix, the receipt's
 * signed bytes and its signature (so it never equals the id of the message
 * it acknowledges).
 */
export const mailId = (mail: Mail, hash: HashFunction = sha256): MessageId => {
  if (mail._tag === "Message") return envelopeId(mail.envelope, hash)
  const digest = hash(
    concatBytes(
      RECEIPT_MAIL_PREFIX_BYTES,
      rawHex(mail.recipientKey, 32, "recipientKey"),
      receiptSigningBytes(mail.receipt),
      rawHex(mail.receipt.signature, 64, "signature")
    )
  )
  // 32 bytes always encode to 64 lower-case hex characters, which is a MessageId.
  return toHex(digest) as MessageId
}

/** What a mailbox request asks for. */
export const MailboxOperation = Schema.Literal("FetchMail", "AckMail")
/** @see MailboxOperation */
export type MailboxOperation = typeof MailboxOperation.Type

/** The fields of a mailbox request that its owner signs. */
export interface MailboxRequestFields {
  readonly operation: MailboxOperation
  /** The mailbox: the owner's user key. */
  readonly recipientKey: Key
  /** The relay the request is for; another relay refuses it. */
  readonly relay: NodeId
  /** When the owner made it, ms since the Unix epoch. */
  readonly requestedAt: number
  /** The mails to delete (AckMail); empty for FetchMail. */
  readonly ids: ReadonlyArray<MessageId>
}

/** Schema of the signed part that travels in FetchMail and AckMail. */
export const MailboxAuthorization = Schema.Struct({
  requestedAt: Schema.NonNegativeInt,
  signature: SignatureHex
})
/** @see MailboxAuthorization */
export type MailboxAuthorization = typeof MailboxAuthorization.Type

/**
 * The canonical bytes a mailbox request signature covers:
 *
 * ```
 * "peerchat/mailbox/v1\n"  20 bytes, ASCII
 * operation     1 byte: 1 FetchMail, 2 AckMail
 * recipientKey  32 raw bytes
 * relay         32 raw bytes (the relay's node id)
 * requestedAt   u64 (ms since the Unix epoch)
 * ids           u16 count ‖ 32 raw bytes each
 * ```
 */
export const mailboxRequestSigningBytes = (request: MailboxRequestFields): Uint8Array =>
  concatBytes(
    MAILBOX_PREFIX_BYTES,
    Uint8Array.of(request.operation === "FetchMail" ? 1 : 2),
    rawHex(request.recipientKey, 32, "recipientKey"),
    rawHex(request.relay, 32, "relay"),
    uint64(request.requestedAt, "requestedAt"),
    uint16(request.ids.length, "id count"),
    ...request.ids.map((id) => rawHex(id, 32, "mail id"))
  )

/** Signs a mailbox request with the owner's Ed25519 key. */
export const signMailboxRequest = (
  request: MailboxRequestFields,
  sign: (bytes: Uint8Array) => Uint8Array
): MailboxAuthorization => {
  const signature = sign(mailboxRequestSigningBytes(request))
  if (signature.length !== 64) throw new RangeError(`an Ed25519 signature is 64 bytes, got ${signature.length}`)
  // 64 bytes always encode to 128 lower-case hex characters, which is a SignatureHex.
  return { requestedAt: request.requestedAt, signature: toHex(signature) as SignatureHex }
}

/** Why a relay refuses to open or clear a mailbox. */
export class MailboxAccessDenied extends Schema.TaggedError<MailboxAccessDenied>()("MailboxAccessDenied", {
  reason: Schema.Literal(
    /** The relay knows no live record for the mailbox's user key, so it cannot tell who owns it. */
    "UnknownOwner",
    /** The caller is not the node the owner's record names. */
    "NotOwner",
    /** The request was made too long ago, or in the future, by the relay's clock. */
    "Stale",
    /** The signature does not verify under the owner's published key. */
    "BadSignature"
  ),
  detail: Schema.String.pipe(Schema.maxLength(500))
}) {
  override get message(): string {
    return `mailbox access denied (${this.reason}): ${this.detail}`
  }
}

/**
 * Decides whether a relay honours a mailbox request: `owner` must be the
 * live record under the mailbox's user key, the authenticated caller must be
 * the node it names, the request must be addressed to this relay and made
 * within `MAILBOX_REQUEST_MAX_SKEW_MS` of `now`, and the signature must
 * verify under the owner's signing key.
 */
export const checkMailboxRequest = (args: {
  readonly request: MailboxRequestFields
  readonly signature: SignatureHex
  readonly owner: UserRecord | undefined
  readonly caller: NodeId
  readonly now: number
  readonly verify: VerifySignature
  readonly hash?: HashFunction | undefined
}): Either.Either<MailboxRequestFields, MailboxAccessDenied> => {
  const { caller, now, owner, request } = args
  const deny = (reason: MailboxAccessDenied["reason"], detail: string) =>
    Either.left(new MailboxAccessDenied({ reason, detail }))
  if (owner === undefined || userKey(owner.username, args.hash ?? sha256) !== request.recipientKey) {
    return deny("UnknownOwner", "no live user record is known for this mailbox")
  }
  if (owner.nodeId !== caller) {
    return deny("NotOwner", `the mailbox belongs to ${JSON.stringify(owner.username)}, whose node is not the caller`)
  }
  if (Math.abs(now - request.requestedAt) > MAILBOX_REQUEST_MAX_SKEW_MS) {
    return deny("Stale", `made at ${request.requestedAt}, the relay's clock says ${now}`)
  }
  const publicKey = fromHex(owner.signingKey)
  const signature = fromHex(args.signature)
  if (
    publicKey === undefined || signature === undefined ||
    !verifySafely(args.verify, publicKey, mailboxRequestSigningBytes(request), signature)
  ) {
    return deny("BadSignature", `the request does not verify under the key ${JSON.stringify(owner.username)} publishes`)
  }
  return Either.right(request)
}
