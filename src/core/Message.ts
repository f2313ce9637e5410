/**
 * The end-to-end message format of the chat layer. A `ChatMessage` (sender,
 * recipient, the sender's signing key, the sender's own signed user record,
 * a per-conversation sequence number, the sender's timestamp and the text)
 * is signed by the sender, serialized into a canonical binary payload and
 * encrypted to the recipient's X25519 key. What travels, and what relays
 * store, is an `Envelope`: the recipient's user key, an ephemeral public key,
 * a nonce and an opaque ciphertext, so a relay learns only whom a message is
 * for and how big it is; the sender, its record, the signature and the text
 * are inside the ciphertext. Because the message carries its sender's record
 * (self-certifying envelopes), the recipient checks the sender without a
 * lookup (`checkOpenedMessage`) and against its pin for that name
 * (`senderTrust`).
 * A message is named by the hash of its envelope (`MessageId`), which is what
 * duplicates are dropped by and what a signed delivery `Receipt` refers to.
 * This module holds the schemas, the exact byte layouts and the pure checks;
 * the cryptography is passed in (`sign`, `verify`, `hash`) or lives behind
 * the `MessageCrypto` seam in `src/chat`, so the core stays pure.
 *
 * @since 0.1.0
 */
import { Either, Encoding, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "./Bytes.js"
import { MAX_CLAIM_DIFFICULTY } from "./ClaimProof.js"
import { HOST_MAX_LENGTH } from "./Contact.js"
import { rawHex, shortString, uint16, uint32, uint64 } from "./Encoding.js"
import { Key } from "./Id.js"
import { claimantWithKey, claimantsOf, type NameAnswer } from "./NameResolution.js"
import type { ContactPin } from "./Pinning.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import {
  acceptUserRecord,
  type ClaimRules,
  defaultRecordLimits,
  MAX_RECORD_ADDRESSES,
  MAX_RECORD_RELAYS,
  PublicKeyHex,
  type RecordLimits,
  SignatureHex,
  USER_RECORD_SIGNING_PREFIX,
  UserRecord,
  userRecordSigningBytes,
  type VerifySignature,
  verifySafely
} from "./UserRecord.js"
import { USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, Username, userKey } from "./Username.js"
import { KEY_BYTES, SIGNATURE_BYTES } from "./KeySizes.js"

// --- Limits ------------------------------------------------------------------

/** Longest message text, in UTF-8 bytes (16 KiB). */
export const MAX_MESSAGE_TEXT_BYTES = 16_384

/**
 * Version of the message and envelope formats defined here. Version 2 carries
 * the sender's user record inside the signed message; version 1 messages do
 * not decode (the format is pre-1.0).
 */
export const MESSAGE_FORMAT_VERSION = 2

/** Version of the delivery receipt format (unchanged since version 1). */
export const RECEIPT_FORMAT_VERSION = 1

/** Length of a ChaCha20-Poly1305 nonce. */
export const NONCE_BYTES = 12
/** Length of the Poly1305 tag at the end of every ciphertext. */
export const AUTH_TAG_BYTES = 16

/** Domain-separation prefix of a message's signing bytes (and of the sealed payload). */
export const MESSAGE_SIGNING_PREFIX = "peerchat/message/v2\n"
/** Domain-separation prefix of a receipt's signing bytes. */
export const RECEIPT_SIGNING_PREFIX = "peerchat/receipt/v1\n"
/** Prefix of the canonical envelope bytes (and of the associated data). */
export const ENVELOPE_PREFIX = "peerchat/envelope/v2\n"

const MESSAGE_PREFIX_BYTES = utf8(MESSAGE_SIGNING_PREFIX)
const RECEIPT_PREFIX_BYTES = utf8(RECEIPT_SIGNING_PREFIX)
const ENVELOPE_PREFIX_BYTES = utf8(ENVELOPE_PREFIX)
const RECORD_PREFIX_BYTES = utf8(USER_RECORD_SIGNING_PREFIX)

/** Bytes of one address in a record: host (u16 length ‖ 1..253 ASCII bytes) and port (u16). */
const addressBytes = (hostBytes: number): number => 2 + hostBytes + 2

/**
 * Bytes of a record's canonical form (`userRecordBytes`) besides its
 * addresses: prefix, username, three 32-byte keys, the u8 address count,
 * three u64, the claim (u8 difficulty, u64 nonce) and the signature.
 */
const recordOverhead = (nameBytes: number): number =>
  RECORD_PREFIX_BYTES.length + 2 + nameBytes + 3 * KEY_BYTES + 1 + 3 * 8 + 1 + 8 + SIGNATURE_BYTES

/** Smallest canonical record (3-character name, one address with a 1-character host): 228 bytes. */
export const MIN_USER_RECORD_BYTES = recordOverhead(USERNAME_MIN_LENGTH) + addressBytes(1)
/** Bytes of one relay in a record: its 32-byte node id and its address. */
const relayBytes = (hostBytes: number): number => KEY_BYTES + addressBytes(hostBytes)

/**
 * Largest canonical record (32-character name, 4 addresses and 3 relays with
 * 253-character hosts): 2,148 bytes.
 */
export const MAX_USER_RECORD_BYTES = recordOverhead(USERNAME_MAX_LENGTH) +
  MAX_RECORD_ADDRESSES * addressBytes(HOST_MAX_LENGTH) + 1 + MAX_RECORD_RELAYS * relayBytes(HOST_MAX_LENGTH)

/**
 * Bytes of a sealed payload besides the text and the record: prefix, two
 * names, the sender key, the u16 record length, two u64, the u32 text length,
 * the signature.
 */
const payloadOverhead = (nameBytes: number): number =>
  MESSAGE_PREFIX_BYTES.length + 2 * (2 + nameBytes) + KEY_BYTES + 2 + 8 + 8 + 4 + SIGNATURE_BYTES

/** Smallest sealed payload (3-character names, the smallest record, empty text): 376 bytes. */
export const MIN_SEALED_PAYLOAD_BYTES = payloadOverhead(USERNAME_MIN_LENGTH) + MIN_USER_RECORD_BYTES
/** Largest sealed payload (32-character names, the largest record, 16 KiB of text): 17,870 bytes. */
export const MAX_SEALED_PAYLOAD_BYTES = payloadOverhead(USERNAME_MAX_LENGTH) + MAX_USER_RECORD_BYTES + MAX_MESSAGE_TEXT_BYTES
/** Smallest ciphertext an envelope may carry (payload plus tag): 392 bytes. */
export const MIN_CIPHERTEXT_BYTES = MIN_SEALED_PAYLOAD_BYTES + AUTH_TAG_BYTES
/** Largest ciphertext an envelope may carry (payload plus tag): 17,886 bytes. */
export const MAX_CIPHERTEXT_BYTES = MAX_SEALED_PAYLOAD_BYTES + AUTH_TAG_BYTES
/** Length of the base64 form of the largest ciphertext: 23,848 characters. */
export const MAX_CIPHERTEXT_BASE64_LENGTH = 4 * Math.ceil(MAX_CIPHERTEXT_BYTES / 3)

// --- Byte encoders -----------------------------------------------------------


// --- Base64 ------------------------------------------------------------------

/** Standard base64 with padding (RFC 4648 §4) of `bytes`. */
export const toBase64 = (bytes: Uint8Array): string => Encoding.encodeBase64(bytes)

/**
 * Decodes canonical standard base64 with padding; `undefined` for anything
 * else (wrong length, foreign characters, misplaced padding, non-zero unused
 * bits, line breaks). Being strict makes the text form of a ciphertext
 * unique, so two different strings never carry the same bytes. Effect's
 * decoder is lax on two of these (it skips line breaks and ignores the
 * unused bits of the last group), so a decoded text must also be exactly
 * what its bytes encode to.
 */
export const fromBase64 = (text: string): Uint8Array | undefined => {
  const decoded = Either.getOrUndefined(Encoding.decodeBase64(text))
  return decoded !== undefined && Encoding.encodeBase64(decoded) === text ? decoded : undefined
}

// --- Message text ------------------------------------------------------------

/**
 * Number of bytes `text` takes in UTF-8, without encoding it. A lone
 * surrogate counts as the 3 bytes of the U+FFFD that `TextEncoder` writes.
 */
export const utf8ByteLength = (text: string): number => {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit < 0x80) bytes += 1
    else if (unit < 0x800) bytes += 2
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1)
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4
        i++
      } else bytes += 3
    } else bytes += 3
  }
  return bytes
}

const LONE_SURROGATE = /\p{Cs}/u

/** Why a text cannot be sent: it is longer than 16 KiB in UTF-8. */
export class MessageTooLong extends Schema.TaggedError<MessageTooLong>()("MessageTooLong", {
  /** UTF-8 length of the refused text. */
  bytes: Schema.Number,
  /** The limit, `MAX_MESSAGE_TEXT_BYTES`. */
  limit: Schema.Number
}) {
  override get message(): string {
    return `message text is ${this.bytes} bytes in UTF-8, more than the limit of ${this.limit} bytes (16 KiB); ` +
      "split it into several messages"
  }
}

/** Why a text cannot be sent: it holds a lone UTF-16 surrogate, which has no UTF-8 form. */
export class MessageTextMalformed extends Schema.TaggedError<MessageTextMalformed>()("MessageTextMalformed", {
  /** Index (in UTF-16 code units) of the first lone surrogate. */
  index: Schema.Number
}) {
  override get message(): string {
    return `message text is not well-formed Unicode: a lone surrogate at position ${this.index} cannot be encoded in UTF-8`
  }
}

/** The text of a message: well-formed Unicode of at most 16 KiB in UTF-8. */
export const MessageText = Schema.String.pipe(
  Schema.filter((text) => {
    if (LONE_SURROGATE.test(text)) return "message text must be well-formed Unicode (no lone surrogates)"
    const bytes = utf8ByteLength(text)
    return bytes <= MAX_MESSAGE_TEXT_BYTES ||
      `message text is ${bytes} bytes in UTF-8, more than the limit of ${MAX_MESSAGE_TEXT_BYTES}`
  }),
  Schema.brand("peerchat/MessageText")
)
/** @see MessageText */
export type MessageText = typeof MessageText.Type

/** Checks a text against the message limits: the way user input becomes a `MessageText`. */
export const parseMessageText = (text: string): Either.Either<MessageText, MessageTooLong | MessageTextMalformed> => {
  const lone = LONE_SURROGATE.exec(text)
  if (lone !== null) return Either.left(new MessageTextMalformed({ index: lone.index }))
  const bytes = utf8ByteLength(text)
  if (bytes > MAX_MESSAGE_TEXT_BYTES) return Either.left(new MessageTooLong({ bytes, limit: MAX_MESSAGE_TEXT_BYTES }))
  // Both conditions of the MessageText filter were just checked.
  return Either.right(text as MessageText)
}

// --- The sender's record, in canonical binary form -------------------------

/**
 * The canonical bytes of a signed user record, as a message carries it:
 * `userRecordSigningBytes(record) ‖ signature` (64 raw bytes), 228 to 2,148
 * bytes (see `UserRecord.ts` for the layout). Throws a RangeError for a
 * record the schema would have rejected (a programming error).
 */
export const userRecordBytes = (record: UserRecord): Uint8Array => {
  const bytes = concatBytes(userRecordSigningBytes(record), rawHex(record.signature, SIGNATURE_BYTES, "record signature"))
  if (bytes.length < MIN_USER_RECORD_BYTES || bytes.length > MAX_USER_RECORD_BYTES) {
    throw new RangeError(`a record is ${MIN_USER_RECORD_BYTES} to ${MAX_USER_RECORD_BYTES} bytes, got ${bytes.length}`)
  }
  return bytes
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const decodeUsername = Schema.decodeUnknownEither(Username)
const decodeUserRecord = Schema.decodeUnknownEither(UserRecord)

/** A bounds-checked reader over one byte array; every read says what it was reading when it ran out. */
class ByteReader {
  private readonly view: DataView
  offset = 0
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }
  get remaining(): number {
    return this.bytes.length - this.offset
  }
  has(length: number): boolean {
    return this.offset + length <= this.bytes.length
  }
  take(length: number): Uint8Array {
    const part = this.bytes.subarray(this.offset, this.offset + length)
    this.offset += length
    return part
  }
  u8(what: string): Either.Either<number, string> {
    if (!this.has(1)) return Either.left(`truncated before ${what}`)
    return Either.right(this.view.getUint8(this.offset++))
  }
  u16(what: string): Either.Either<number, string> {
    if (!this.has(2)) return Either.left(`truncated before ${what}`)
    const value = this.view.getUint16(this.offset)
    this.offset += 2
    return Either.right(value)
  }
  u32(what: string): Either.Either<number, string> {
    if (!this.has(4)) return Either.left(`truncated before ${what}`)
    const value = this.view.getUint32(this.offset)
    this.offset += 4
    return Either.right(value)
  }
  /** A u64 that must be a safe integer (every integer the formats carry is one). */
  u64(what: string): Either.Either<number, string> {
    if (!this.has(8)) return Either.left(`truncated before ${what}`)
    const value = this.view.getUint32(this.offset) * 0x1_0000_0000 + this.view.getUint32(this.offset + 4)
    this.offset += 8
    return Number.isSafeInteger(value) ? Either.right(value) : Either.left(`${what} exceeds 2^53 - 1`)
  }
  /** `length` raw bytes as lower-case hex. */
  hex(length: number, what: string): Either.Either<string, string> {
    if (!this.has(length)) return Either.left(`truncated before ${what}`)
    return Either.right(toHex(this.take(length)))
  }
  /** A u16 length (at most `maxBytes`) and that many bytes of strict UTF-8. */
  shortText(what: string, maxBytes: number): Either.Either<string, string> {
    const length = this.u16(`${what} length`)
    if (Either.isLeft(length)) return Either.left(length.left)
    if (length.right > maxBytes || !this.has(length.right)) return Either.left(`${what} has a bad length ${length.right}`)
    try {
      return Either.right(utf8Decoder.decode(this.take(length.right)))
    } catch {
      return Either.left(`${what} is not valid UTF-8`)
    }
  }
  name(what: string): Either.Either<Username, string> {
    return Either.flatMap(
      this.shortText(what, USERNAME_MAX_LENGTH),
      (text) => Either.mapLeft(decodeUsername(text), () => `${what} is not a valid username`)
    )
  }
}

/** Reads the fields of a record at the reader's position (the inverse of `userRecordBytes`), unchecked by the schema. */
const readRecordFields = (reader: ByteReader): Either.Either<unknown, string> =>
  Either.gen(function*() {
    if (!reader.has(RECORD_PREFIX_BYTES.length)) return yield* Either.left("truncated before the record prefix")
    const prefix = reader.take(RECORD_PREFIX_BYTES.length)
    for (let i = 0; i < RECORD_PREFIX_BYTES.length; i++) {
      if (prefix[i] !== RECORD_PREFIX_BYTES[i]) return yield* Either.left("missing the peerchat/user-record/v2 prefix")
    }
    const username = yield* reader.name("record username")
    const signingKey = yield* reader.hex(KEY_BYTES, "record signingKey")
    const encryptionKey = yield* reader.hex(KEY_BYTES, "record encryptionKey")
    const nodeId = yield* reader.hex(KEY_BYTES, "record nodeId")
    const count = yield* reader.u8("record address count")
    if (count > MAX_RECORD_ADDRESSES) {
      return yield* Either.left(`a record lists 0 to ${MAX_RECORD_ADDRESSES} addresses, not ${count}`)
    }
    const addresses: Array<{ host: string; port: number }> = []
    for (let i = 0; i < count; i++) {
      const host = yield* reader.shortText(`record host ${i + 1}`, HOST_MAX_LENGTH)
      const port = yield* reader.u16(`record port ${i + 1}`)
      addresses.push({ host, port })
    }
    const sequence = yield* reader.u64("record sequence")
    const issuedAt = yield* reader.u64("record issuedAt")
    const expiresAt = yield* reader.u64("record expiresAt")
    const difficulty = yield* reader.u8("claim difficulty")
    if (difficulty > MAX_CLAIM_DIFFICULTY) return yield* Either.left(`claim difficulty ${difficulty} exceeds ${MAX_CLAIM_DIFFICULTY}`)
    const nonce = yield* reader.u64("claim nonce")
    // The bytes are exactly one record: more than a signature left means the relays section follows.
    const relays: Array<{ relayId: string; address: { host: string; port: number } }> = []
    if (reader.remaining > SIGNATURE_BYTES) {
      const relayCount = yield* reader.u8("record relay count")
      if (relayCount < 1 || relayCount > MAX_RECORD_RELAYS) {
        return yield* Either.left(`a record's relays section lists 1 to ${MAX_RECORD_RELAYS} relays, not ${relayCount}`)
      }
      for (let i = 0; i < relayCount; i++) {
        const relayId = yield* reader.hex(KEY_BYTES, `record relay ${i + 1} id`)
        const host = yield* reader.shortText(`record relay ${i + 1} host`, HOST_MAX_LENGTH)
        const port = yield* reader.u16(`record relay ${i + 1} port`)
        relays.push({ relayId, address: { host, port } })
      }
    }
    const signature = yield* reader.hex(SIGNATURE_BYTES, "record signature")
    return {
      username,
      signingKey,
      encryptionKey,
      nodeId,
      addresses,
      sequence,
      issuedAt,
      expiresAt,
      claim: { difficulty, nonce },
      ...(relays.length === 0 ? {} : { relays }),
      signature
    }
  })

/**
 * Reads `userRecordBytes` back into a record: the exact inverse. Strict and
 * bounded: 228 to 2,148 bytes, every field well-formed by the `UserRecord`
 * schema (name, 0 to 4 addresses and 0 to 3 relays, at least one, hosts up to 253 characters, safe
 * integers, a claim difficulty up to 64), no byte after the signature. So
 * re-encoding the result gives the same bytes. Whether the record is valid
 * (signature, node id, lifetime, claim work) is not checked here.
 */
export const parseUserRecordBytes = (bytes: Uint8Array): Either.Either<UserRecord, string> => {
  if (bytes.length < MIN_USER_RECORD_BYTES || bytes.length > MAX_USER_RECORD_BYTES) {
    return Either.left(`a record of ${bytes.length} bytes is outside ${MIN_USER_RECORD_BYTES}..${MAX_USER_RECORD_BYTES}`)
  }
  const reader = new ByteReader(bytes)
  return Either.flatMap(readRecordFields(reader), (fields) => {
    if (reader.remaining !== 0) return Either.left(`${reader.remaining} bytes follow the record's signature`)
    return Either.mapLeft(decodeUserRecord(fields), () => "the record's fields are not well-formed")
  })
}

// --- The message -------------------------------------------------------------

const chatMessageFields = {
  version: Schema.Literal(MESSAGE_FORMAT_VERSION),
  from: Username,
  to: Username,
  /** The sender's Ed25519 key; the recipient checks it against the carried record and its pin. */
  senderSigningKey: PublicKeyHex,
  /**
   * The sender's own signed user record (its name, keys, node id and
   * addresses), so the recipient can check the sender without a lookup and
   * knows where to send the receipt. Covered by the message signature, so it
   * cannot be swapped.
   */
  senderRecord: UserRecord,
  /** Per-conversation counter chosen by the sender; orders messages sent in the same millisecond. */
  sequence: Schema.NonNegativeInt,
  /** When the sender sent it, ms since the Unix epoch (by the sender's clock). */
  sentAt: Schema.NonNegativeInt,
  text: MessageText
}

/** The signed content of a message: everything the sender's signature covers. */
export const ChatMessage = Schema.Struct(chatMessageFields)
/** @see ChatMessage */
export type ChatMessage = typeof ChatMessage.Type

/** A message with the sender's Ed25519 signature over `chatMessageSigningBytes`. */
export const SignedChatMessage = Schema.Struct({ ...chatMessageFields, signature: SignatureHex })
/** @see SignedChatMessage */
export type SignedChatMessage = typeof SignedChatMessage.Type

/** Builds a version-2 message, checking the text (the other fields are already typed). */
export const makeChatMessage = (fields: {
  readonly from: Username
  readonly to: Username
  readonly senderSigningKey: PublicKeyHex
  readonly senderRecord: UserRecord
  readonly sequence: number
  readonly sentAt: number
  readonly text: string
}): Either.Either<ChatMessage, MessageTooLong | MessageTextMalformed> =>
  Either.map(parseMessageText(fields.text), (text) => ({
    version: MESSAGE_FORMAT_VERSION,
    from: fields.from,
    to: fields.to,
    senderSigningKey: fields.senderSigningKey,
    senderRecord: fields.senderRecord,
    sequence: fields.sequence,
    sentAt: fields.sentAt,
    text
  }))

/**
 * The canonical bytes a message signature covers; followed by the signature
 * they are also the plaintext that gets encrypted. Fixed order, fixed sizes
 * or length prefixes, all integers unsigned big-endian:
 *
 * ```
 * "peerchat/message/v2\n"  20 bytes, ASCII
 * from              u16 length ‖ UTF-8 bytes (3..32)
 * to                u16 length ‖ UTF-8 bytes (3..32)
 * senderSigningKey  32 raw bytes
 * senderRecord      u16 length ‖ userRecordBytes (228..1280):
 *                   userRecordSigningBytes ‖ the record's 64-byte signature
 * sequence          u64
 * sentAt            u64 (ms since the Unix epoch)
 * text              u32 length ‖ UTF-8 bytes (0..16384)
 * ```
 *
 * The sender's record is inside the signed bytes, so the signature binds it
 * to the message. A `signature` property, if present, is ignored. Throws a
 * RangeError for values the schema would have rejected (a programming error).
 */
export const chatMessageSigningBytes = (message: ChatMessage): Uint8Array => {
  const text = utf8(message.text)
  if (text.length > MAX_MESSAGE_TEXT_BYTES) {
    throw new RangeError(`message text must be at most ${MAX_MESSAGE_TEXT_BYTES} bytes, got ${text.length}`)
  }
  const record = userRecordBytes(message.senderRecord)
  return concatBytes(
    MESSAGE_PREFIX_BYTES,
    shortString(message.from, "from"),
    shortString(message.to, "to"),
    rawHex(message.senderSigningKey, KEY_BYTES, "senderSigningKey"),
    uint16(record.length, "senderRecord length"),
    record,
    uint64(message.sequence, "sequence"),
    uint64(message.sentAt, "sentAt"),
    uint32(text.length, "text length"),
    text
  )
}

/** The message's signed fields only, dropping `signature` (or any other extra property). */
export const unsignedChatMessage = (message: ChatMessage): ChatMessage => ({
  version: message.version,
  from: message.from,
  to: message.to,
  senderSigningKey: message.senderSigningKey,
  senderRecord: message.senderRecord,
  sequence: message.sequence,
  sentAt: message.sentAt,
  text: message.text
})

const signatureHex = (signature: Uint8Array): SignatureHex => {
  if (signature.length !== SIGNATURE_BYTES) {
    throw new RangeError(`an Ed25519 signature is ${SIGNATURE_BYTES} bytes, got ${signature.length}`)
  }
  // 64 bytes always encode to 128 lower-case hex characters, which is what SignatureHex checks.
  return toHex(signature) as SignatureHex
}

/** Signs a message with the sender's Ed25519 key (`sign` from the shell); throws if `sign` does not return 64 bytes. */
export const signChatMessage = (message: ChatMessage, sign: (bytes: Uint8Array) => Uint8Array): SignedChatMessage => ({
  ...unsignedChatMessage(message),
  signature: signatureHex(sign(chatMessageSigningBytes(message)))
})

/** The plaintext that is encrypted: `chatMessageSigningBytes(signed) ‖ signature` (64 raw bytes). */
export const sealedPayloadBytes = (signed: SignedChatMessage): Uint8Array =>
  concatBytes(chatMessageSigningBytes(signed), rawHex(signed.signature, SIGNATURE_BYTES, "signature"))

// --- Rejection ---------------------------------------------------------------

/** Why a decrypted message is not accepted. */
export class MessageRejected extends Schema.TaggedError<MessageRejected>()("MessageRejected", {
  reason: Schema.Literal(
    /** The decrypted payload does not follow the format (truncated, bad UTF-8, bad name, trailing bytes). */
    "Malformed",
    /** The text is longer than 16 KiB. */
    "TooLong",
    /** The signature does not verify under the sender's signing key. */
    "BadSignature",
    /** The carried record holds another signing key than the one the message was signed with. */
    "SenderKeyMismatch",
    /** The carried record belongs to another user than the message's `from`. */
    "SenderRecordMismatch",
    /** The carried record is not valid (signature, node id, lifetime at `sentAt`, claim work). */
    "SenderRecordInvalid",
    /** The message says it was sent later than the recipient's clock plus the allowed skew. */
    "SentInFuture",
    /** The message is addressed to someone else (or the envelope's recipient key does not match `to`). */
    "WrongRecipient"
  ),
  /** What exactly was wrong, for logs. */
  detail: Schema.String
}) {
  override get message(): string {
    const subject = "message rejected"
    switch (this.reason) {
      case "Malformed":
        return `${subject}: its decrypted content is malformed (${this.detail})`
      case "TooLong":
        return `${subject}: its text is longer than ${MAX_MESSAGE_TEXT_BYTES} bytes (${this.detail})`
      case "BadSignature":
        return `${subject}: its signature does not verify under the sender's signing key (${this.detail})`
      case "SenderKeyMismatch":
        return `${subject}: it is signed with another key than the one in the sender's record, possibly forged (${this.detail})`
      case "SenderRecordMismatch":
        return `${subject}: the user record it carries belongs to someone else (${this.detail})`
      case "SenderRecordInvalid":
        return `${subject}: the sender's user record it carries is not valid (${this.detail})`
      case "SentInFuture":
        return `${subject}: it is dated later than this node's clock allows (${this.detail})`
      case "WrongRecipient":
        return `${subject}: it is addressed to someone else (${this.detail})`
    }
  }
}

/** Why an envelope could not be decrypted: it was not sealed to this node's key, or it was altered on the way. */
export class DecryptFailed extends Schema.TaggedError<DecryptFailed>()("DecryptFailed", {
  reason: Schema.Literal(
    /** The ephemeral key is not a usable X25519 public key (a low-order point). */
    "BadEphemeralKey",
    /** The ciphertext, nonce or header fails authentication: altered, or sealed to another key. */
    "AuthenticationFailed"
  )
}) {
  override get message(): string {
    switch (this.reason) {
      case "BadEphemeralKey":
        return "cannot decrypt message: its ephemeral key is not a usable X25519 public key"
      case "AuthenticationFailed":
        return "cannot decrypt message: it was altered in transit or is not encrypted to this node's key"
    }
  }
}

/** Why a message cannot be sealed: the recipient's published encryption key is not a usable X25519 key. */
export class InvalidRecipientKey extends Schema.TaggedError<InvalidRecipientKey>()("InvalidRecipientKey", {
  recipient: Schema.String,
  encryptionKey: Schema.String
}) {
  override get message(): string {
    return `cannot encrypt to ${JSON.stringify(this.recipient)}: the encryption key in their user record ` +
      `(${this.encryptionKey}) is not a usable X25519 public key`
  }
}

// --- Parsing a decrypted payload ---------------------------------------------

/**
 * Reads a sealed payload (`sealedPayloadBytes`) back into a signed message.
 * The format is parsed exactly: every field must be well-formed (the carried
 * record by `parseUserRecordBytes`, within its own length) and no byte may
 * follow the signature, so re-encoding the result gives the same bytes.
 * Rejects with "TooLong" for text over the limit and "Malformed" otherwise.
 * Neither the signature nor the record's validity is checked here.
 */
export const parseSealedPayload = (bytes: Uint8Array): Either.Either<SignedChatMessage, MessageRejected> => {
  const malformed = (detail: string) => Either.left(new MessageRejected({ reason: "Malformed", detail }))
  if (bytes.length < MIN_SEALED_PAYLOAD_BYTES) return malformed(`payload of ${bytes.length} bytes is too short`)
  if (bytes.length > MAX_SEALED_PAYLOAD_BYTES) {
    return Either.left(
      new MessageRejected({ reason: "TooLong", detail: `payload of ${bytes.length} bytes exceeds ${MAX_SEALED_PAYLOAD_BYTES}` })
    )
  }
  for (let i = 0; i < MESSAGE_PREFIX_BYTES.length; i++) {
    if (bytes[i] !== MESSAGE_PREFIX_BYTES[i]) return malformed("missing the peerchat/message/v2 prefix")
  }
  const reader = new ByteReader(bytes)
  reader.offset = MESSAGE_PREFIX_BYTES.length

  const head = Either.gen(function*() {
    const from = yield* reader.name("from")
    const to = yield* reader.name("to")
    const senderSigningKey = yield* reader.hex(KEY_BYTES, "senderSigningKey")
    const recordLength = yield* reader.u16("senderRecord length")
    if (recordLength < MIN_USER_RECORD_BYTES || recordLength > MAX_USER_RECORD_BYTES || !reader.has(recordLength)) {
      return yield* Either.left(`senderRecord has a bad length ${recordLength}`)
    }
    const senderRecord = yield* Either.mapLeft(parseUserRecordBytes(reader.take(recordLength)), (why) => `senderRecord: ${why}`)
    const sequence = yield* reader.u64("sequence")
    const sentAt = yield* reader.u64("sentAt")
    const textLength = yield* reader.u32("text length")
    return { from, to, senderSigningKey, senderRecord, sequence, sentAt, textLength }
  })
  if (Either.isLeft(head)) return malformed(head.left)
  const { textLength, ...fields } = head.right
  if (textLength > MAX_MESSAGE_TEXT_BYTES) {
    return Either.left(new MessageRejected({ reason: "TooLong", detail: `text of ${textLength} bytes` }))
  }
  if (reader.remaining !== textLength + SIGNATURE_BYTES) {
    return malformed(`text length ${textLength} does not match the payload size ${bytes.length}`)
  }
  let text: string
  try {
    text = utf8Decoder.decode(reader.take(textLength))
  } catch {
    return malformed("text is not valid UTF-8")
  }
  return Either.right({
    version: MESSAGE_FORMAT_VERSION,
    from: fields.from,
    to: fields.to,
    // 32 bytes always encode to 64 lower-case hex characters, which is what PublicKeyHex checks.
    senderSigningKey: fields.senderSigningKey as PublicKeyHex,
    senderRecord: fields.senderRecord,
    sequence: fields.sequence,
    sentAt: fields.sentAt,
    // Strict UTF-8 decoding yields well-formed Unicode and the length was checked above.
    text: text as MessageText,
    signature: signatureHex(reader.take(SIGNATURE_BYTES))
  })
}

const verifyMessageSignature = (signed: SignedChatMessage, publicKeyHex: string, verify: VerifySignature): boolean => {
  const publicKey = fromHex(publicKeyHex)
  const signature = fromHex(signed.signature)
  if (publicKey === undefined || signature === undefined) return false
  return verifySafely(verify, publicKey, chatMessageSigningBytes(signed), signature)
}

/**
 * What the recipient's node does with a freshly decrypted payload before it
 * knows anything about the sender: parse it (`parseSealedPayload`), check
 * that the envelope's recipient key is the user key of the message's `to`
 * ("WrongRecipient"), and check the signature under the key the message
 * names ("BadSignature"). Whether the carried record is valid and that key
 * really the sender's is `checkOpenedMessage`'s job, then `senderTrust`'s.
 */
export const readSealedPayload = (args: {
  readonly envelope: EnvelopeHeader
  readonly plaintext: Uint8Array
  readonly verify: VerifySignature
  readonly hash?: HashFunction | undefined
}): Either.Either<SignedChatMessage, MessageRejected> =>
  Either.flatMap(parseSealedPayload(args.plaintext), (signed) => {
    if (userKey(signed.to, args.hash ?? sha256) !== args.envelope.recipientKey) {
      return Either.left(
        new MessageRejected({
          reason: "WrongRecipient",
          detail: `the envelope's recipient key is not the user key of ${JSON.stringify(signed.to)}`
        })
      )
    }
    if (!verifyMessageSignature(signed, signed.senderSigningKey, args.verify)) {
      return Either.left(
        new MessageRejected({ reason: "BadSignature", detail: `claimed sender ${JSON.stringify(signed.from)}` })
      )
    }
    return Either.right(signed)
  })

/**
 * Decides whether a decrypted message is self-consistent and its carried
 * record valid, without any lookup: what the recipient checks before it asks
 * who holds the name (`senderTrust`). The checks run cheapest first, and the
 * first failure is the reason reported:
 * 1. the text is at most 16 KiB (TooLong);
 * 2. `to` is `expectedRecipient` (WrongRecipient);
 * 3. the carried record is the record of `from` (SenderRecordMismatch);
 * 4. the message names the record's signing key (SenderKeyMismatch: a record
 *    stolen from someone else, or a forged sender);
 * 5. the signature verifies under that key (BadSignature); it covers the
 *    record, so a record swapped after signing fails here;
 * 6. `sentAt` is at most `receivedAt + maxClockSkewMs` (SentInFuture);
 * 7. the record is valid by the storers' rules (`acceptUserRecord`: claim
 *    difficulty, node id = hash of the key, record signature, lifetime,
 *    and last, as the most expensive check, the claim's proof of work under
 *    `claim`) at the time the message was sent, `sentAt`
 *    (SenderRecordInvalid, with the record's reason in the detail).
 *
 * Why at `sentAt` and not at `receivedAt`: a message is sealed once and may
 * then wait in the sender's outbox and in relays' mailboxes for up to the
 * mail lifetime (14 days), longer than a record lives (at most 7 days); a
 * record that was live when the message was sent must not make honest mail
 * undeliverable when it is finally opened (relays' copies of a refused
 * message are dropped). It costs nothing in security: a valid record only
 * proves that its key claimed the name and paid the claim's work, which any
 * key can do for itself at any time (the work is bound to name and key, not
 * to a record), so an expired record says no less than a fresh one. What
 * makes the sender believable is the recipient's pin and the network's
 * answer (`senderTrust`), both checked at receipt. Step 6 keeps `sentAt`
 * from reaching into the future to use a record issued there.
 */
export const checkOpenedMessage = (args: {
  readonly opened: SignedChatMessage
  readonly expectedRecipient: Username
  /** The recipient's clock, ms since the Unix epoch. */
  readonly receivedAt: number
  readonly verify: VerifySignature
  /** The claim rules this node applies to records it stores or believes. */
  readonly claim: ClaimRules
  readonly limits?: Partial<RecordLimits> | undefined
  readonly hash?: HashFunction | undefined
}): Either.Either<SignedChatMessage, MessageRejected> => {
  const { opened, expectedRecipient } = args
  const senderRecord = opened.senderRecord
  const limits: RecordLimits = { ...defaultRecordLimits, ...args.limits }
  const reject = (reason: MessageRejected["reason"], detail: string) =>
    Either.left(new MessageRejected({ reason, detail }))
  const bytes = utf8ByteLength(opened.text)
  if (bytes > MAX_MESSAGE_TEXT_BYTES) return reject("TooLong", `text of ${bytes} bytes`)
  if (opened.to !== expectedRecipient) {
    return reject("WrongRecipient", `addressed to ${JSON.stringify(opened.to)}, not ${JSON.stringify(expectedRecipient)}`)
  }
  if (senderRecord.username !== opened.from) {
    return reject(
      "SenderRecordMismatch",
      `the message is from ${JSON.stringify(opened.from)}, the record is for ${JSON.stringify(senderRecord.username)}`
    )
  }
  if (senderRecord.signingKey !== opened.senderSigningKey) {
    return reject(
      "SenderKeyMismatch",
      `the record of ${JSON.stringify(opened.from)} holds signing key ${senderRecord.signingKey}, the message names ${opened.senderSigningKey}`
    )
  }
  if (!verifyMessageSignature(opened, senderRecord.signingKey, args.verify)) {
    return reject("BadSignature", `from ${JSON.stringify(opened.from)}`)
  }
  if (opened.sentAt > args.receivedAt + limits.maxClockSkewMs) {
    return reject("SentInFuture", `sent at ${opened.sentAt}, received at ${args.receivedAt}`)
  }
  const record = acceptUserRecord({
    incoming: senderRecord,
    now: opened.sentAt,
    verify: args.verify,
    claim: args.claim,
    hash: args.hash,
    limits
  })
  if (Either.isLeft(record)) {
    return reject("SenderRecordInvalid", `${record.left.reason}: ${record.left.message}`)
  }
  return Either.right(opened)
}

// --- Believing the sender ----------------------------------------------------

/** What the network says about the sender's name, as far as the recipient could ask. */
export type SenderNameAnswer = NameAnswer | { readonly _tag: "NotConnected" }

/** What the recipient does with a message whose carried record `checkOpenedMessage` accepted. */
export type SenderTrust =
  /**
   * Accept the message. `basis` says why: the carried key is the pinned one
   * ("Pinned"), the network names it as the name's sole owner
   * ("NetworkOwner", then pin it on first use: `pinFirstUse`), or nothing
   * contradicts it ("Unconfirmed": the network did not answer, or answered
   * that nobody holds the name; accepted, never pinned). `networkRecord` is
   * the network's newest record of the carried key, when it named one.
   */
  | {
    readonly _tag: "Accept"
    readonly basis: "Pinned" | "NetworkOwner" | "Unconfirmed"
    readonly pinFirstUse: boolean
    readonly networkRecord: UserRecord | undefined
  }
  /** No pin for the name: ask the network who holds it, then decide again with its answer. */
  | { readonly _tag: "AskNetwork" }
  /** The name is pinned to another key: refuse (a hijacker, or a key change the user has not accepted). */
  | { readonly _tag: "KeyChanged"; readonly pinnedKey: PublicKeyHex }
  /** No pin, and the network names other keys only: refuse (a squatter or impostor). */
  | { readonly _tag: "Contradicted"; readonly claimantKeys: ReadonlyArray<PublicKeyHex> }
  /**
   * No pin, and several keys claim the name, the carried one among them:
   * hold the message (refuse for now; the sender or relay retries) until the
   * user picks a key (`trust NAME --key FINGERPRINT`) or the conflict ends.
   */
  | { readonly _tag: "Contested"; readonly claimantKeys: ReadonlyArray<PublicKeyHex> }

/**
 * The sender rule: whether to believe the key a message's carried record
 * names for its sender, given the recipient's pin for that name and (when
 * there is no pin) what the network answered. The record itself must already
 * have passed `checkOpenedMessage`.
 *
 * 1. Pinned: the carried key must be the pinned key ("Pinned"), else
 *    "KeyChanged". The network is not asked, so a pinned contact's messages
 *    get through however slow the network is, and nobody but the holder of
 *    the pinned key can ever send as that contact.
 * 2. Not pinned, the network names the carried key as the sole owner:
 *    accept and pin it on first use ("NetworkOwner"), as `send` would.
 * 3. Not pinned, the network names only other keys (an owner, or a
 *    conflict without the carried key): "Contradicted". A squatter never
 *    gets a message accepted, nor a pin, for a name whose owner the network
 *    knows.
 * 4. Not pinned, a conflict that includes the carried key: "Contested". A
 *    conflict is never settled by the network alone, on receipt as on send:
 *    accepting would let any squatter that made the conflict speak as the
 *    name to everyone who has not pinned it, and pinning would let whoever
 *    writes first decide it.
 * 5. Not pinned, and the network did not answer ("NotConnected") or
 *    answered that nobody holds the name ("Unclaimed"): accept without
 *    pinning ("Unconfirmed"). A slow, partitioned or still-converging network
 *    (a new network's first user whose record has not spread yet) must not
 *    make messages bounce; nothing contradicts the claim, and the carried
 *    record proves the claim's work was paid, so this costs an impostor as
 *    much as registering the name. Not pinning keeps that cheap window from
 *    locking anyone out: the first message that arrives while the network
 *    names the owner pins the owner's key, and from then on rule 1 refuses
 *    every other key.
 */
export const senderTrust = (args: {
  readonly carriedKey: PublicKeyHex
  readonly pin: Pick<ContactPin, "signingKey"> | undefined
  /** What the network answered for the name; undefined when not asked yet. */
  readonly answer: SenderNameAnswer | undefined
}): SenderTrust => {
  const { answer, carriedKey, pin } = args
  if (pin !== undefined) {
    return pin.signingKey === carriedKey
      ? { _tag: "Accept", basis: "Pinned", pinFirstUse: false, networkRecord: undefined }
      : { _tag: "KeyChanged", pinnedKey: pin.signingKey }
  }
  if (answer === undefined) return { _tag: "AskNetwork" }
  switch (answer._tag) {
    case "NotConnected":
    case "Unclaimed":
      return { _tag: "Accept", basis: "Unconfirmed", pinFirstUse: false, networkRecord: undefined }
    case "Owner":
    case "Conflict": {
      const claimantKeys = claimantsOf(answer).map((claimant) => claimant.record.signingKey)
      const networkRecord = claimantWithKey(answer, carriedKey)
      if (networkRecord === undefined) return { _tag: "Contradicted", claimantKeys }
      if (answer._tag === "Conflict") return { _tag: "Contested", claimantKeys }
      return { _tag: "Accept", basis: "NetworkOwner", pinFirstUse: true, networkRecord }
    }
  }
}

// --- The envelope ------------------------------------------------------------

/** A 12-byte ChaCha20-Poly1305 nonce as 24 lower-case hex characters. */
export const NonceHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{24}$/, { message: () => "expected 24 lower-case hex characters (a 12-byte nonce)" }),
  Schema.brand("peerchat/NonceHex")
)
/** @see NonceHex */
export type NonceHex = typeof NonceHex.Type

/** The encrypted payload and its tag, as canonical padded base64 of 392 to 17,886 bytes. */
export const CiphertextBase64 = Schema.String.pipe(
  Schema.maxLength(MAX_CIPHERTEXT_BASE64_LENGTH, {
    message: () => `expected at most ${MAX_CIPHERTEXT_BASE64_LENGTH} base64 characters (the largest message: 16 KiB of text and the largest sender record)`
  }),
  Schema.filter((text) => {
    const bytes = fromBase64(text)
    if (bytes === undefined) return "expected canonical base64 with padding"
    if (bytes.length < MIN_CIPHERTEXT_BYTES || bytes.length > MAX_CIPHERTEXT_BYTES) {
      return `expected a ciphertext of ${MIN_CIPHERTEXT_BYTES} to ${MAX_CIPHERTEXT_BYTES} bytes, got ${bytes.length}`
    }
    return true
  }),
  Schema.brand("peerchat/CiphertextBase64")
)
/** @see CiphertextBase64 */
export type CiphertextBase64 = typeof CiphertextBase64.Type

const envelopeHeaderFields = {
  version: Schema.Literal(MESSAGE_FORMAT_VERSION),
  /** The recipient's user key, `userKey(to)`: where relays file the message. */
  recipientKey: Key,
  /** The sender's one-time X25519 public key. */
  ephemeralKey: PublicKeyHex
}

/** The part of an envelope that is authenticated as associated data. */
export const EnvelopeHeader = Schema.Struct(envelopeHeaderFields)
/** @see EnvelopeHeader */
export type EnvelopeHeader = typeof EnvelopeHeader.Type

/** What travels and what relays store: all a relay learns is the recipient's user key and the size. */
export const Envelope = Schema.Struct({
  ...envelopeHeaderFields,
  nonce: NonceHex,
  ciphertext: CiphertextBase64
})
/** @see Envelope */
export type Envelope = typeof Envelope.Type

/**
 * The associated data of the encryption, 85 bytes:
 * `"peerchat/envelope/v2\n" ‖ recipientKey (32 raw) ‖ ephemeralKey (32 raw)`.
 * Binding the header means a relay cannot re-address a message or swap keys.
 */
export const envelopeAad = (header: EnvelopeHeader): Uint8Array =>
  concatBytes(
    ENVELOPE_PREFIX_BYTES,
    rawHex(header.recipientKey, KEY_BYTES, "recipientKey"),
    rawHex(header.ephemeralKey, KEY_BYTES, "ephemeralKey")
  )

/** The raw bytes of an envelope's ciphertext (tag included). */
export const ciphertextBytes = (envelope: Envelope): Uint8Array => {
  const bytes = fromBase64(envelope.ciphertext)
  if (bytes === undefined) throw new RangeError("ciphertext must be canonical base64 (decode envelopes before use)")
  return bytes
}

/** The text form of a ciphertext; throws a RangeError outside 392..17,886 bytes (a programming error). */
export const ciphertextFromBytes = (bytes: Uint8Array): CiphertextBase64 => {
  if (bytes.length < MIN_CIPHERTEXT_BYTES || bytes.length > MAX_CIPHERTEXT_BYTES) {
    throw new RangeError(`a ciphertext is ${MIN_CIPHERTEXT_BYTES} to ${MAX_CIPHERTEXT_BYTES} bytes, got ${bytes.length}`)
  }
  // Canonical base64 of a length inside the bounds is exactly what the schema admits.
  return toBase64(bytes) as CiphertextBase64
}

/**
 * The canonical bytes of an envelope, which its id hashes:
 *
 * ```
 * "peerchat/envelope/v2\n"  21 bytes, ASCII
 * recipientKey  32 raw bytes
 * ephemeralKey  32 raw bytes
 * nonce         12 raw bytes
 * ciphertext    u32 length ‖ raw bytes (tag included)
 * ```
 *
 * The first 85 bytes are `envelopeAad`.
 */
export const envelopeBytes = (envelope: Envelope): Uint8Array => {
  const ciphertext = ciphertextBytes(envelope)
  return concatBytes(
    envelopeAad(envelope),
    rawHex(envelope.nonce, NONCE_BYTES, "nonce"),
    uint32(ciphertext.length, "ciphertext length"),
    ciphertext
  )
}

/** A message id: SHA-256 of the envelope bytes, as 64 lower-case hex characters. */
export const MessageId = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "expected 64 lower-case hex characters (a message id)" }),
  Schema.brand("peerchat/MessageId")
)
/** @see MessageId */
export type MessageId = typeof MessageId.Type

/** The id of an envelope, `SHA-256(envelopeBytes(envelope))`: the same envelope always has the same id. */
export const envelopeId = (envelope: Envelope, hash: HashFunction = sha256): MessageId => {
  const digest = hash(envelopeBytes(envelope))
  if (digest.length !== 32) throw new RangeError(`a message id is 32 bytes, got ${digest.length}`)
  // 32 bytes always encode to 64 lower-case hex characters.
  return toHex(digest) as MessageId
}

// --- History order -----------------------------------------------------------

/** The fields of a history entry that its position depends on. */
export interface HistoryOrderKey {
  readonly sentAt: number
  readonly sequence: number
  readonly from: string
  readonly id: string
}

const compareStrings = (a: string, b: string): -1 | 0 | 1 => (a < b ? -1 : a > b ? 1 : 0)

/**
 * The order of a conversation's history: by `sentAt`, then `sequence`, then
 * sender name, then id. A total order on entries with distinct ids, so the
 * history comes out the same whatever order messages arrived in.
 */
export const compareHistoryOrder = (a: HistoryOrderKey, b: HistoryOrderKey): -1 | 0 | 1 => {
  if (a.sentAt !== b.sentAt) return a.sentAt < b.sentAt ? -1 : 1
  if (a.sequence !== b.sequence) return a.sequence < b.sequence ? -1 : 1
  const byName = compareStrings(a.from, b.from)
  return byName !== 0 ? byName : compareStrings(a.id, b.id)
}

// --- Receipts ----------------------------------------------------------------

const receiptFields = {
  version: Schema.Literal(RECEIPT_FORMAT_VERSION),
  /** The envelope id of the message received. */
  messageId: MessageId,
  /** Who received it; the receipt is signed with this user's key. */
  recipient: Username,
  /** When the recipient's node accepted it, ms since the Unix epoch. */
  receivedAt: Schema.NonNegativeInt
}

/** A delivery receipt before it is signed. */
export const Receipt = Schema.Struct(receiptFields)
/** @see Receipt */
export type Receipt = typeof Receipt.Type

/** A delivery receipt signed by the recipient. */
export const SignedReceipt = Schema.Struct({ ...receiptFields, signature: SignatureHex })
/** @see SignedReceipt */
export type SignedReceipt = typeof SignedReceipt.Type

/**
 * The canonical bytes a receipt signature covers (integers unsigned big-endian):
 *
 * ```
 * "peerchat/receipt/v1\n"  20 bytes, ASCII
 * messageId    32 raw bytes
 * recipient    u16 length ‖ UTF-8 bytes
 * receivedAt   u64 (ms since the Unix epoch)
 * ```
 */
export const receiptSigningBytes = (receipt: Receipt): Uint8Array =>
  concatBytes(
    RECEIPT_PREFIX_BYTES,
    rawHex(receipt.messageId, 32, "messageId"),
    shortString(receipt.recipient, "recipient"),
    uint64(receipt.receivedAt, "receivedAt")
  )

/** Signs a receipt with the recipient's Ed25519 key; throws if `sign` does not return 64 bytes. */
export const signReceipt = (receipt: Receipt, sign: (bytes: Uint8Array) => Uint8Array): SignedReceipt => ({
  version: receipt.version,
  messageId: receipt.messageId,
  recipient: receipt.recipient,
  receivedAt: receipt.receivedAt,
  signature: signatureHex(sign(receiptSigningBytes(receipt)))
})

/** Why a delivery receipt is not believed. */
export class ReceiptRejected extends Schema.TaggedError<ReceiptRejected>()("ReceiptRejected", {
  messageId: Schema.String,
  reason: Schema.Literal(
    /** The receipt names another recipient than the record it is checked against. */
    "WrongRecipient",
    /** The signature does not verify under the recipient's published signing key. */
    "BadSignature"
  )
}) {
  override get message(): string {
    switch (this.reason) {
      case "WrongRecipient":
        return `receipt for message ${this.messageId} rejected: it names another recipient than expected`
      case "BadSignature":
        return `receipt for message ${this.messageId} rejected: its signature does not verify under the recipient's published key`
    }
  }
}

/**
 * Checks a receipt against the recipient's published user record: it must
 * name that user (WrongRecipient) and be signed by the record's signing key
 * (BadSignature). Matching `messageId` to a sent message is the caller's job.
 */
export const checkReceipt = (args: {
  readonly receipt: SignedReceipt
  readonly recipientRecord: UserRecord
  readonly verify: VerifySignature
}): Either.Either<SignedReceipt, ReceiptRejected> => {
  const { receipt, recipientRecord } = args
  const reject = (reason: ReceiptRejected["reason"]) =>
    Either.left(new ReceiptRejected({ messageId: receipt.messageId, reason }))
  if (receipt.recipient !== recipientRecord.username) return reject("WrongRecipient")
  const publicKey = fromHex(recipientRecord.signingKey)
  const signature = fromHex(receipt.signature)
  if (publicKey === undefined || signature === undefined) return reject("BadSignature")
  if (!verifySafely(args.verify, publicKey, receiptSigningBytes(receipt), signature)) return reject("BadSignature")
  return Either.right(receipt)
}
