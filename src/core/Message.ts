/**
 * The end-to-end message format of the chat layer. A `ChatMessage` (sender,
 * recipient, the sender's signing key, a per-conversation sequence number,
 * the sender's timestamp and the text) is signed by the sender, serialized
 * into a canonical binary payload and encrypted to the recipient's X25519
 * key. What travels, and what relays store, is an `Envelope`: the
 * recipient's user key, an ephemeral public key, a nonce and an opaque
 * ciphertext, so a relay learns only whom a message is for and how big it
 * is; the sender, the signature and the text are inside the ciphertext.
 * A message is named by the hash of its envelope (`MessageId`), which is what
 * duplicates are dropped by and what a signed delivery `Receipt` refers to.
 * This module holds the schemas, the exact byte layouts and the pure checks;
 * the cryptography is passed in (`sign`, `verify`, `hash`) or lives behind
 * the `MessageCrypto` seam in `src/chat`, so the core stays pure.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "./Bytes.js"
import { rawHex, shortString, uint32, uint64 } from "./Encoding.js"
import { Key } from "./Id.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import { PublicKeyHex, SignatureHex, type UserRecord, type VerifySignature, verifySafely } from "./UserRecord.js"
import { USERNAME_MAX_LENGTH, Username, userKey } from "./Username.js"

// --- Limits ------------------------------------------------------------------

/** Longest message text, in UTF-8 bytes (16 KiB). */
export const MAX_MESSAGE_TEXT_BYTES = 16_384

/** Version of the message, envelope and receipt formats defined here. */
export const MESSAGE_FORMAT_VERSION = 1

/** Length of a raw Ed25519 or X25519 public key. */
const KEY_BYTES = 32
/** Length of a raw Ed25519 signature. */
const SIGNATURE_BYTES = 64
/** Length of a ChaCha20-Poly1305 nonce. */
export const NONCE_BYTES = 12
/** Length of the Poly1305 tag at the end of every ciphertext. */
export const AUTH_TAG_BYTES = 16

/** Domain-separation prefix of a message's signing bytes (and of the sealed payload). */
export const MESSAGE_SIGNING_PREFIX = "peerchat/message/v1\n"
/** Domain-separation prefix of a receipt's signing bytes. */
export const RECEIPT_SIGNING_PREFIX = "peerchat/receipt/v1\n"
/** Prefix of the canonical envelope bytes (and of the associated data). */
export const ENVELOPE_PREFIX = "peerchat/envelope/v1\n"

const MESSAGE_PREFIX_BYTES = utf8(MESSAGE_SIGNING_PREFIX)
const RECEIPT_PREFIX_BYTES = utf8(RECEIPT_SIGNING_PREFIX)
const ENVELOPE_PREFIX_BYTES = utf8(ENVELOPE_PREFIX)

/** Usernames are ASCII, so their UTF-8 length is their character count. */
const USERNAME_MIN_BYTES = 3

/** Bytes of a sealed payload besides the text: prefix, two names, key, two u64, the u32 text length, signature. */
const payloadOverhead = (nameBytes: number): number =>
  MESSAGE_PREFIX_BYTES.length + 2 * (2 + nameBytes) + KEY_BYTES + 8 + 8 + 4 + SIGNATURE_BYTES

/** Smallest sealed payload (3-character names, empty text). */
export const MIN_SEALED_PAYLOAD_BYTES = payloadOverhead(USERNAME_MIN_BYTES)
/** Largest sealed payload (32-character names, 16 KiB of text): 16,588 bytes. */
export const MAX_SEALED_PAYLOAD_BYTES = payloadOverhead(USERNAME_MAX_LENGTH) + MAX_MESSAGE_TEXT_BYTES
/** Smallest ciphertext an envelope may carry (payload plus tag). */
export const MIN_CIPHERTEXT_BYTES = MIN_SEALED_PAYLOAD_BYTES + AUTH_TAG_BYTES
/** Largest ciphertext an envelope may carry (payload plus tag): 16,604 bytes. */
export const MAX_CIPHERTEXT_BYTES = MAX_SEALED_PAYLOAD_BYTES + AUTH_TAG_BYTES
/** Length of the base64 form of the largest ciphertext: 22,140 characters. */
export const MAX_CIPHERTEXT_BASE64_LENGTH = 4 * Math.ceil(MAX_CIPHERTEXT_BYTES / 3)

// --- Byte encoders -----------------------------------------------------------


// --- Base64 ------------------------------------------------------------------

const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
const BASE64_VALUES: ReadonlyArray<number> = Array.from({ length: 128 }, (_, code) =>
  BASE64_ALPHABET.indexOf(String.fromCharCode(code)))

const base64Char = (sextet: number): string => BASE64_ALPHABET.charAt(sextet & 0x3f)

/** Standard base64 with padding (RFC 4648 §4) of `bytes`. */
export const toBase64 = (bytes: Uint8Array): string => {
  const parts: Array<string> = []
  let i = 0
  for (; i + 2 < bytes.length; i += 3) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number)
    parts.push(base64Char(n >>> 18) + base64Char(n >>> 12) + base64Char(n >>> 6) + base64Char(n))
  }
  const rest = bytes.length - i
  if (rest === 1) {
    const n = (bytes[i] as number) << 16
    parts.push(`${base64Char(n >>> 18)}${base64Char(n >>> 12)}==`)
  } else if (rest === 2) {
    const n = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8)
    parts.push(`${base64Char(n >>> 18)}${base64Char(n >>> 12)}${base64Char(n >>> 6)}=`)
  }
  return parts.join("")
}

const base64Value = (text: string, index: number): number => {
  const code = text.charCodeAt(index)
  return code < 128 ? (BASE64_VALUES[code] ?? -1) : -1
}

/**
 * Decodes canonical standard base64 with padding; `undefined` for anything
 * else (wrong length, foreign characters, misplaced padding, non-zero unused
 * bits). Being strict makes the text form of a ciphertext unique, so two
 * different strings never carry the same bytes.
 */
export const fromBase64 = (text: string): Uint8Array | undefined => {
  if (text.length % 4 !== 0) return undefined
  const padding = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0
  const out = new Uint8Array((text.length / 4) * 3 - padding)
  let o = 0
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length
    const a = base64Value(text, i)
    const b = base64Value(text, i + 1)
    const c = last && padding === 2 ? 0 : base64Value(text, i + 2)
    const d = last && padding >= 1 ? 0 : base64Value(text, i + 3)
    if (a < 0 || b < 0 || c < 0 || d < 0) return undefined
    const n = (a << 18) | (b << 12) | (c << 6) | d
    out[o++] = n >>> 16
    if (last && padding === 2) {
      if ((n & 0xffff) !== 0) return undefined
    } else {
      out[o++] = (n >>> 8) & 0xff
      if (last && padding === 1) {
        if ((n & 0xff) !== 0) return undefined
      } else {
        out[o++] = n & 0xff
      }
    }
  }
  return out
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

// --- The message -------------------------------------------------------------

const chatMessageFields = {
  version: Schema.Literal(MESSAGE_FORMAT_VERSION),
  from: Username,
  to: Username,
  /** The sender's Ed25519 key; the recipient checks it against the sender's user record. */
  senderSigningKey: PublicKeyHex,
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

/** Builds a version-1 message, checking the text (the other fields are already typed). */
export const makeChatMessage = (fields: {
  readonly from: Username
  readonly to: Username
  readonly senderSigningKey: PublicKeyHex
  readonly sequence: number
  readonly sentAt: number
  readonly text: string
}): Either.Either<ChatMessage, MessageTooLong | MessageTextMalformed> =>
  Either.map(parseMessageText(fields.text), (text) => ({
    version: MESSAGE_FORMAT_VERSION,
    from: fields.from,
    to: fields.to,
    senderSigningKey: fields.senderSigningKey,
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
 * "peerchat/message/v1\n"  20 bytes, ASCII
 * from              u16 length ‖ UTF-8 bytes (3..32)
 * to                u16 length ‖ UTF-8 bytes (3..32)
 * senderSigningKey  32 raw bytes
 * sequence          u64
 * sentAt            u64 (ms since the Unix epoch)
 * text              u32 length ‖ UTF-8 bytes (0..16384)
 * ```
 *
 * A `signature` property, if present, is ignored. Throws a RangeError for
 * values the schema would have rejected (a programming error).
 */
export const chatMessageSigningBytes = (message: ChatMessage): Uint8Array => {
  const text = utf8(message.text)
  if (text.length > MAX_MESSAGE_TEXT_BYTES) {
    throw new RangeError(`message text must be at most ${MAX_MESSAGE_TEXT_BYTES} bytes, got ${text.length}`)
  }
  return concatBytes(
    MESSAGE_PREFIX_BYTES,
    shortString(message.from, "from"),
    shortString(message.to, "to"),
    rawHex(message.senderSigningKey, KEY_BYTES, "senderSigningKey"),
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
    /** The sender's published record holds another signing key than the one the message was signed with. */
    "SenderKeyMismatch",
    /** The record supplied for the sender belongs to another user. */
    "SenderRecordMismatch",
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
        return `${subject}: it is signed with a key the sender has not published, possibly forged (${this.detail})`
      case "SenderRecordMismatch":
        return `${subject}: the user record checked against it belongs to someone else (${this.detail})`
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

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const decodeUsername = Schema.decodeUnknownEither(Username)

/**
 * Reads a sealed payload (`sealedPayloadBytes`) back into a signed message.
 * The format is parsed exactly: every field must be well-formed and no byte
 * may follow the signature, so re-encoding the result gives the same bytes.
 * Rejects with "TooLong" for text over the limit and "Malformed" otherwise.
 * The signature is not checked here.
 */
export const parseSealedPayload = (bytes: Uint8Array): Either.Either<SignedChatMessage, MessageRejected> => {
  const malformed = (detail: string) => Either.left(new MessageRejected({ reason: "Malformed", detail }))
  if (bytes.length < MIN_SEALED_PAYLOAD_BYTES) return malformed(`payload of ${bytes.length} bytes is too short`)
  if (bytes.length > MAX_SEALED_PAYLOAD_BYTES) {
    return Either.left(
      new MessageRejected({ reason: "TooLong", detail: `payload of ${bytes.length} bytes exceeds ${MAX_SEALED_PAYLOAD_BYTES}` })
    )
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let offset = 0
  const has = (length: number): boolean => offset + length <= bytes.length
  const take = (length: number): Uint8Array => {
    const part = bytes.subarray(offset, offset + length)
    offset += length
    return part
  }

  for (let i = 0; i < MESSAGE_PREFIX_BYTES.length; i++) {
    if (bytes[i] !== MESSAGE_PREFIX_BYTES[i]) return malformed("missing the peerchat/message/v1 prefix")
  }
  offset = MESSAGE_PREFIX_BYTES.length

  const readName = (what: string): Either.Either<Username, string> => {
    if (!has(2)) return Either.left(`truncated before ${what}`)
    const length = view.getUint16(offset)
    offset += 2
    if (length > USERNAME_MAX_LENGTH || !has(length)) return Either.left(`${what} has a bad length ${length}`)
    const raw = take(length)
    let text: string
    try {
      text = utf8Decoder.decode(raw)
    } catch {
      return Either.left(`${what} is not valid UTF-8`)
    }
    return Either.mapLeft(decodeUsername(text), () => `${what} is not a valid username`)
  }
  const readU64 = (what: string): Either.Either<number, string> => {
    if (!has(8)) return Either.left(`truncated before ${what}`)
    const value = view.getUint32(offset) * 0x1_0000_0000 + view.getUint32(offset + 4)
    offset += 8
    return Number.isSafeInteger(value) ? Either.right(value) : Either.left(`${what} exceeds 2^53 - 1`)
  }

  const from = readName("from")
  if (Either.isLeft(from)) return malformed(from.left)
  const to = readName("to")
  if (Either.isLeft(to)) return malformed(to.left)
  if (!has(KEY_BYTES)) return malformed("truncated before senderSigningKey")
  // 32 bytes always encode to 64 lower-case hex characters, which is what PublicKeyHex checks.
  const senderSigningKey = toHex(take(KEY_BYTES)) as PublicKeyHex
  const sequence = readU64("sequence")
  if (Either.isLeft(sequence)) return malformed(sequence.left)
  const sentAt = readU64("sentAt")
  if (Either.isLeft(sentAt)) return malformed(sentAt.left)
  if (!has(4)) return malformed("truncated before text")
  const textLength = view.getUint32(offset)
  offset += 4
  if (textLength > MAX_MESSAGE_TEXT_BYTES) {
    return Either.left(new MessageRejected({ reason: "TooLong", detail: `text of ${textLength} bytes` }))
  }
  if (offset + textLength + SIGNATURE_BYTES !== bytes.length) {
    return malformed(`text length ${textLength} does not match the payload size ${bytes.length}`)
  }
  let text: string
  try {
    text = utf8Decoder.decode(take(textLength))
  } catch {
    return malformed("text is not valid UTF-8")
  }
  return Either.right({
    version: MESSAGE_FORMAT_VERSION,
    from: from.right,
    to: to.right,
    senderSigningKey,
    sequence: sequence.right,
    sentAt: sentAt.right,
    // Strict UTF-8 decoding yields well-formed Unicode and the length was checked above.
    text: text as MessageText,
    signature: signatureHex(take(SIGNATURE_BYTES))
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
 * names ("BadSignature"). Whether that key is really the sender's is
 * `checkOpenedMessage`'s job, once the sender's record has been looked up.
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
 * Decides whether a decrypted message is accepted, given the user it should
 * be for and the sender's published user record (the caller looks it up
 * with a whois on `opened.from`). The checks run in this order and the first
 * failure is the reason reported:
 * 1. the text is at most 16 KiB (TooLong);
 * 2. `to` is `expectedRecipient` (WrongRecipient);
 * 3. `senderRecord` is the record of `from` (SenderRecordMismatch);
 * 4. the message names the record's signing key (SenderKeyMismatch: a forged sender);
 * 5. the signature verifies under that key (BadSignature).
 */
export const checkOpenedMessage = (args: {
  readonly opened: SignedChatMessage
  readonly expectedRecipient: Username
  readonly senderRecord: UserRecord
  readonly verify: VerifySignature
}): Either.Either<SignedChatMessage, MessageRejected> => {
  const { opened, expectedRecipient, senderRecord } = args
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
    return reject("SenderKeyMismatch", `${JSON.stringify(opened.from)} publishes signing key ${senderRecord.signingKey}`)
  }
  if (!verifyMessageSignature(opened, senderRecord.signingKey, args.verify)) {
    return reject("BadSignature", `from ${JSON.stringify(opened.from)}`)
  }
  return Either.right(opened)
}

// --- The envelope ------------------------------------------------------------

/** A 12-byte ChaCha20-Poly1305 nonce as 24 lower-case hex characters. */
export const NonceHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{24}$/, { message: () => "expected 24 lower-case hex characters (a 12-byte nonce)" }),
  Schema.brand("peerchat/NonceHex")
)
/** @see NonceHex */
export type NonceHex = typeof NonceHex.Type

/** The encrypted payload and its tag, as canonical padded base64 of 162 to 16,604 bytes. */
export const CiphertextBase64 = Schema.String.pipe(
  Schema.maxLength(MAX_CIPHERTEXT_BASE64_LENGTH, {
    message: () => `expected at most ${MAX_CIPHERTEXT_BASE64_LENGTH} base64 characters (a ciphertext of 16 KiB of text)`
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
 * `"peerchat/envelope/v1\n" ‖ recipientKey (32 raw) ‖ ephemeralKey (32 raw)`.
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

/** The text form of a ciphertext; throws a RangeError outside 162..16,604 bytes (a programming error). */
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
 * "peerchat/envelope/v1\n"  21 bytes, ASCII
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
  version: Schema.Literal(MESSAGE_FORMAT_VERSION),
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
