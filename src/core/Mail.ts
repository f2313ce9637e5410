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
 * Leaving mail takes **postage** (issue 12): the sender's signed user record
 * (self-certifying, with its name claim's proof of work) and a signature by
 * that record's key over the mail's id, its mailbox and its expiry. A relay
 * checks it before it keeps anything (`checkPostage`) and counts what it
 * holds per postage key, so mail costs a name claim per sender key and a
 * flood from one key takes only that key's share of a mailbox. The postage
 * travels with every copy (re-replication passes it on unchanged). Its
 * privacy cost: relays learn which user key left mail for whom (they already
 * saw the sending node's id and address).
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "./Bytes.js"
import { rawHex, uint16, uint64 } from "./Encoding.js"
import { Key, type NodeId } from "./Id.js"
import { Envelope, envelopeId, type MessageId, receiptSigningBytes, SignedReceipt } from "./Message.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import {
  acceptUserRecord,
  type ClaimRules,
  defaultRecordLimits,
  type RecordLimits,
  SignatureHex,
  UserRecord,
  type VerifySignature,
  verifySafely
} from "./UserRecord.js"
import { userKey } from "./Username.js"
import { SIGNATURE_BYTES } from "./KeySizes.js"

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
  if (signature.length !== SIGNATURE_BYTES) throw new RangeError(`an Ed25519 signature is ${SIGNATURE_BYTES} bytes, got ${signature.length}`)
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

// ---------------------------------------------------------------------------
// Postage: who leaves mail
// ---------------------------------------------------------------------------

/** Prefix of the bytes a postage signature covers. */
export const POSTAGE_SIGNING_PREFIX = "peerchat/postage/v1\n"

const POSTAGE_PREFIX_BYTES = utf8(POSTAGE_SIGNING_PREFIX)

/**
 * What pays for leaving a mail at a relay: the sender's signed user record
 * and its signature over the mail (`postageSigningBytes`). For a message the
 * sender is the message's sender (the relay cannot see inside the envelope,
 * so it learns the key here); for a receipt, the user who signed the receipt.
 */
export const Postage = Schema.Struct({
  /** The sender's user record: self-certifying, with the name claim's proof of work. */
  sender: UserRecord,
  /** When the first copy of the mail expires (ms); every copy keeps it, so none outlives it. */
  expiresAt: Schema.NonNegativeInt,
  /** Ed25519 signature by `sender.signingKey` over `postageSigningBytes`. */
  signature: SignatureHex
})
/** @see Postage */
export type Postage = typeof Postage.Type

/**
 * The canonical bytes a postage signature covers:
 *
 * ```
 * "peerchat/postage/v1\n"  20 bytes, ASCII
 * mailId        32 raw bytes (`mailId(mail)`: the envelope id, or a receipt mail's id)
 * recipientKey  32 raw bytes (`mailRecipientKey(mail)`: the mailbox)
 * expiresAt     u64 (ms since the Unix epoch)
 * ```
 */
export const postageSigningBytes = (fields: {
  readonly mailId: MessageId
  readonly recipientKey: Key
  readonly expiresAt: number
}): Uint8Array =>
  concatBytes(
    POSTAGE_PREFIX_BYTES,
    rawHex(fields.mailId, 32, "mail id"),
    rawHex(fields.recipientKey, 32, "recipientKey"),
    uint64(fields.expiresAt, "expiresAt")
  )

/** Stamps `mail` with postage: `sender` is the signer's own record, `sign` its Ed25519 key. */
export const signPostage = (args: {
  readonly mail: Mail
  readonly sender: UserRecord
  readonly expiresAt: number
  readonly sign: (bytes: Uint8Array) => Uint8Array
  readonly hash?: HashFunction | undefined
}): Postage => {
  const signature = args.sign(postageSigningBytes({
    mailId: mailId(args.mail, args.hash ?? sha256),
    recipientKey: mailRecipientKey(args.mail),
    expiresAt: args.expiresAt
  }))
  if (signature.length !== SIGNATURE_BYTES) throw new RangeError(`an Ed25519 signature is ${SIGNATURE_BYTES} bytes, got ${signature.length}`)
  // 64 bytes always encode to 128 lower-case hex characters, which is a SignatureHex.
  return { sender: args.sender, expiresAt: args.expiresAt, signature: toHex(signature) as SignatureHex }
}

/** Why a relay refuses a mail's postage. */
export class PostageRejected extends Schema.TaggedError<PostageRejected>()("PostageRejected", {
  reason: Schema.Literal(
    /** A receipt mail whose postage is not the record of the user who signed the receipt. */
    "SenderMismatch",
    /** The postage signature does not verify under the key of the record it carries. */
    "BadSignature",
    /** The carried record breaks a record rule (see `detail`; its claim's proof of work last). */
    "SenderRecordInvalid"
  ),
  detail: Schema.String.pipe(Schema.maxLength(400))
}) {
  override get message(): string {
    return `postage refused (${this.reason}): ${this.detail}`
  }
}

/**
 * Decides whether a relay accepts a mail's postage, cheapest check first:
 *
 * 1. for a receipt, the postage record is the receipt signer's: same user
 *    name (`SenderMismatch`);
 * 2. the postage signature verifies under the record's signing key over
 *    (mail id, mailbox, `expiresAt`) (`BadSignature`: a record of another
 *    key, or postage moved to other mail, fails here);
 * 3. for a receipt, the receipt's own signature verifies under that key
 *    (`SenderMismatch`: a record of another user with the same name);
 * 4. the record is valid by the storers' rules (`SenderRecordInvalid`): claim
 *    difficulty, node id, the record's signature, a sane lifetime, live at
 *    some moment of the mail's posting window [expiresAt - mailTtl, now]
 *    (copies re-replicated days later still carry the record their sender
 *    had then), and last, one memory-hard hash, the claim's proof of work.
 */
export const checkPostage = (args: {
  readonly mail: Mail
  readonly postage: Postage
  /** The relay's clock, ms. */
  readonly now: number
  /** The relay's mail lifetime, ms: how long before `expiresAt` the mail may have been posted. */
  readonly mailTtlMs: number
  readonly verify: VerifySignature
  readonly claim: ClaimRules
  readonly limits?: Partial<RecordLimits> | undefined
  readonly hash?: HashFunction | undefined
}): Either.Either<Postage, PostageRejected> => {
  const { mail, now, postage } = args
  const sender = postage.sender
  const limits: RecordLimits = { ...defaultRecordLimits, ...args.limits }
  const reject = (reason: PostageRejected["reason"], detail: string) =>
    Either.left(new PostageRejected({ reason, detail: detail.slice(0, 400) }))
  if (mail._tag === "Receipt" && mail.receipt.recipient !== sender.username) {
    return reject(
      "SenderMismatch",
      `the receipt is signed as ${JSON.stringify(mail.receipt.recipient)}, the postage is ${JSON.stringify(sender.username)}'s`
    )
  }
  const publicKey = fromHex(sender.signingKey)
  const signature = fromHex(postage.signature)
  const signed = postageSigningBytes({
    mailId: mailId(mail, args.hash ?? sha256),
    recipientKey: mailRecipientKey(mail),
    expiresAt: postage.expiresAt
  })
  if (publicKey === undefined || signature === undefined || !verifySafely(args.verify, publicKey, signed, signature)) {
    return reject("BadSignature", `the postage does not verify under the key of ${JSON.stringify(sender.username)}'s record`)
  }
  if (mail._tag === "Receipt") {
    const receiptSignature = fromHex(mail.receipt.signature)
    if (
      receiptSignature === undefined ||
      !verifySafely(args.verify, publicKey, receiptSigningBytes(mail.receipt), receiptSignature)
    ) {
      return reject("SenderMismatch", `the receipt is not signed by the key of ${JSON.stringify(sender.username)}'s record`)
    }
  }
  // The record must have been live at some moment between the earliest the mail can have been
  // posted and now: judge it at the moment of that window closest to when it was issued.
  const windowStart = Math.max(0, postage.expiresAt - args.mailTtlMs)
  const judgedAt = Math.min(now, Math.max(windowStart, sender.issuedAt))
  const record = acceptUserRecord({
    incoming: sender,
    now: judgedAt,
    verify: args.verify,
    claim: args.claim,
    hash: args.hash,
    limits
  })
  if (Either.isLeft(record)) return reject("SenderRecordInvalid", `${record.left.reason}: ${record.left.message}`)
  return Either.right(postage)
}
