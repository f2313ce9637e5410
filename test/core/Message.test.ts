import { describe, expect, it } from "@effect/vitest"
import { Either, Encoding, FastCheck as fc, Schema } from "effect"
import { createHash } from "node:crypto"
import { toHex } from "../../src/core/Bytes.js"
import {
  type ChatMessage,
  checkOpenedMessage,
  checkReceipt,
  chatMessageSigningBytes,
  type CiphertextBase64,
  compareHistoryOrder,
  Envelope,
  envelopeAad,
  envelopeBytes,
  type EnvelopeHeader,
  envelopeId,
  fromBase64,
  type HistoryOrderKey,
  makeChatMessage,
  MAX_CIPHERTEXT_BASE64_LENGTH,
  MAX_CIPHERTEXT_BYTES,
  MAX_MESSAGE_TEXT_BYTES,
  MAX_SEALED_PAYLOAD_BYTES,
  MessageId,
  MessageRejected,
  MessageText,
  MessageTextMalformed,
  MessageTooLong,
  MIN_CIPHERTEXT_BYTES,
  MAX_USER_RECORD_BYTES,
  MESSAGE_FORMAT_VERSION,
  MIN_SEALED_PAYLOAD_BYTES,
  MIN_USER_RECORD_BYTES,
  parseMessageText,
  parseSealedPayload,
  parseUserRecordBytes,
  readSealedPayload,
  type Receipt,
  ReceiptRejected,
  receiptSigningBytes,
  sealedPayloadBytes,
  senderTrust,
  type SignedChatMessage,
  signChatMessage,
  signReceipt,
  toBase64,
  unsignedChatMessage,
  userRecordBytes,
  utf8ByteLength
} from "../../src/core/Message.js"
import {
  type ClaimRules,
  type PublicKeyHex,
  signUserRecord,
  type UnsignedUserRecord,
  type UserRecord,
  userRecordSigningBytes
} from "../../src/core/UserRecord.js"
import { type Username, userKey } from "../../src/core/Username.js"
import { type NodeId, nodeIdFromPublicKey } from "../../src/core/Id.js"
import { claimChallenge, leadingZeroBits } from "../../src/core/ClaimProof.js"
import type { NameAnswer } from "../../src/core/NameResolution.js"
import { sha256 } from "../../src/core/Sha256.js"
import { sign, signingKeyFromSeed, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

const props = { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }

// --- Deterministic users with real Ed25519 keys ---

interface User {
  readonly name: Username
  readonly signingKey: PublicKeyHex
  readonly sign: (bytes: Uint8Array) => Uint8Array
  readonly record: UserRecord
  /** A record of this user's key with other fields (re-signed by the user). */
  readonly recordWith: (fields: Partial<UnsignedUserRecord>) => UserRecord
}

const ISSUED_AT = 1_700_000_000_000
const EXPIRES_AT = 1_700_086_400_000
const SENT_AT = 1_700_000_123_456

const user = (name: string, seed: number): User => {
  const pair = signingKeyFromSeed(seededRandomBytes(seed)(32))
  const signingKey = toHex(pair.publicKey) as PublicKeyHex
  const signFn = (bytes: Uint8Array) => sign(pair.privateKey, bytes)
  const unsigned: UnsignedUserRecord = {
    username: name as Username,
    signingKey,
    encryptionKey: toHex(seededRandomBytes(seed + 1000)(32)) as PublicKeyHex,
    nodeId: nodeIdFromPublicKey(pair.publicKey),
    addresses: [{ host: "127.0.0.1", port: 4000 + seed }],
    sequence: 1,
    issuedAt: ISSUED_AT,
    expiresAt: EXPIRES_AT,
    claim: { difficulty: 0, nonce: 0 }
  }
  const recordWith = (fields: Partial<UnsignedUserRecord>) => signUserRecord({ ...unsigned, ...fields }, signFn)
  return { name: name as Username, signingKey, sign: signFn, record: recordWith({}), recordWith }
}

const alice = user("alice", 1)
const bob = user("bob", 2)
const mallory = user("mallory", 3)

/** Claim rules under which the test users' difficulty-0 claims are valid (any nonce solves difficulty 0). */
const easyClaims: ClaimRules = { minDifficulty: 0, hash: sha256 }

const message = (overrides: Partial<Omit<ChatMessage, "text">> & { readonly text?: string } = {}): ChatMessage =>
  Either.getOrThrow(makeChatMessage({
    from: overrides.from ?? alice.name,
    to: overrides.to ?? bob.name,
    senderSigningKey: overrides.senderSigningKey ?? alice.signingKey,
    senderRecord: overrides.senderRecord ?? alice.record,
    sequence: overrides.sequence ?? 7,
    sentAt: overrides.sentAt ?? SENT_AT,
    text: overrides.text ?? "hello, bob"
  }))

/** The largest record there is: a 32-character name, 4 addresses and 3 relays with 253-character hosts. */
const largestRecord = (owner: User, username: Username): UserRecord =>
  owner.recordWith({
    username,
    addresses: Array.from({ length: 4 }, (_, i) => ({ host: `${i}`.repeat(253), port: 65535 })),
    relays: Array.from({ length: 3 }, (_, i) => ({
      relayId: `${i}f`.repeat(32) as NodeId,
      address: { host: `r${i}`.repeat(126) + "r", port: 65535 }
    })),
    sequence: Number.MAX_SAFE_INTEGER,
    issuedAt: Number.MAX_SAFE_INTEGER,
    expiresAt: Number.MAX_SAFE_INTEGER,
    claim: { difficulty: 64, nonce: Number.MAX_SAFE_INTEGER }
  })

const hexOf = (text: string): string => Buffer.from(text, "utf8").toString("hex")
const bufferHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")
const nodeSha256 = (bytes: Uint8Array): Uint8Array => new Uint8Array(createHash("sha256").update(bytes).digest())

const rejectionOf = <A, E>(result: Either.Either<A, E>): E => {
  if (Either.isRight(result)) throw new Error("expected a rejection")
  return result.left
}

// --- Arbitraries ---

const arbUsername = fc.stringMatching(/^[a-z0-9_.-]{3,32}$/).map((name) => name as Username)
const arbText = fc.string({ unit: "binary", maxLength: 64 })
const arbHex = (bytes: number) => fc.uint8Array({ minLength: bytes, maxLength: bytes }).map(toHex)
const arbHost = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9.:_%-]{1,40}$/),
  fc.integer({ min: 1, max: 253 }).map((length) => "h".repeat(length))
)
/** Records with every field anywhere in its range (the signature is random bytes: only the format is at stake). */
const arbRecord: fc.Arbitrary<UserRecord> = fc.record({
  username: arbUsername,
  signingKey: arbHex(32).map((hex) => hex as PublicKeyHex),
  encryptionKey: arbHex(32).map((hex) => hex as PublicKeyHex),
  nodeId: arbHex(32).map((hex) => hex as NodeId),
  addresses: fc.array(fc.record({ host: arbHost, port: fc.integer({ min: 0, max: 65535 }) }), { minLength: 1, maxLength: 4 }),
  sequence: fc.maxSafeNat(),
  issuedAt: fc.maxSafeNat(),
  expiresAt: fc.maxSafeNat(),
  claim: fc.record({ difficulty: fc.integer({ min: 0, max: 64 }), nonce: fc.maxSafeNat() }),
  signature: arbHex(64).map((hex) => hex as UserRecord["signature"])
})
const arbMessage: fc.Arbitrary<ChatMessage> = fc
  .record({
    from: arbUsername,
    to: arbUsername,
    senderSigningKey: arbHex(32).map((hex) => hex as PublicKeyHex),
    senderRecord: arbRecord,
    sequence: fc.maxSafeNat(),
    sentAt: fc.maxSafeNat(),
    text: arbText
  })
  .map((fields) => Either.getOrThrow(makeChatMessage(fields)))

describe("message text", () => {
  it.prop(
    "utf8ByteLength counts what TextEncoder writes, lone surrogates included",
    [fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)), maxLength: 40 })],
    ([text]) => {
      expect(utf8ByteLength(text)).toBe(Buffer.byteLength(text, "utf8"))
    },
    props
  )

  it("accepts exactly 16384 UTF-8 bytes and refuses 16385, counting bytes not characters", () => {
    const euros = "€".repeat(5461) // 3 bytes each: 16383 bytes
    expect(Buffer.byteLength(`${euros}a`)).toBe(MAX_MESSAGE_TEXT_BYTES)
    expect(Either.isRight(parseMessageText(`${euros}a`))).toBe(true)
    expect(rejectionOf(parseMessageText(`${euros}ab`))).toEqual(new MessageTooLong({ bytes: 16_385, limit: 16_384 }))
    // A character that does not fit completely still pushes the text over.
    expect(rejectionOf(parseMessageText(`${euros}é`))).toEqual(new MessageTooLong({ bytes: 16_385, limit: 16_384 }))

    const faces = "😀".repeat(4096) // 4 bytes, 2 UTF-16 units each
    expect(Either.isRight(parseMessageText(faces))).toBe(true)
    expect(rejectionOf(parseMessageText(`${faces}x`))._tag).toBe("MessageTooLong")
    expect(Either.isRight(parseMessageText("a".repeat(16_384)))).toBe(true)
    expect(Either.isRight(parseMessageText(""))).toBe(true)

    const tooLong = rejectionOf(parseMessageText(`${euros}ab`))
    expect(tooLong.message).toContain("16385 bytes")
    expect(tooLong.message).toContain("16384")
  })

  it("the MessageText schema applies the same limit", () => {
    const decode = Schema.decodeUnknownEither(MessageText)
    expect(Either.isRight(decode("€".repeat(5461) + "a"))).toBe(true)
    expect(Either.isLeft(decode("€".repeat(5461) + "ab"))).toBe(true)
    expect(Either.isLeft(decode("ok\ud800"))).toBe(true)
  })

  it("refuses lone surrogates, which have no UTF-8 form", () => {
    expect(rejectionOf(parseMessageText("ab\udc00cd"))).toEqual(new MessageTextMalformed({ index: 2 }))
    expect(rejectionOf(parseMessageText("\ud83d"))._tag).toBe("MessageTextMalformed")
    expect(Either.isRight(parseMessageText("\ud83d\ude00"))).toBe(true)
  })

  it("makeChatMessage builds a version-2 message or reports the text problem", () => {
    expect(message()).toEqual({
      version: 2,
      from: "alice",
      to: "bob",
      senderSigningKey: alice.signingKey,
      senderRecord: alice.record,
      sequence: 7,
      sentAt: 1_700_000_123_456,
      text: "hello, bob"
    })
    const tooLong = makeChatMessage({ ...message(), text: "x".repeat(16_385) })
    expect(rejectionOf(tooLong)._tag).toBe("MessageTooLong")
  })
})

describe("the carried sender record", () => {
  it("is laid out as the record's signing bytes followed by its signature", () => {
    const bytes = userRecordBytes(alice.record)
    const expected = [
      hexOf("peerchat/user-record/v2\n"),
      "0005", hexOf("alice"),
      alice.signingKey,
      alice.record.encryptionKey,
      alice.record.nodeId,
      "01", "0009", hexOf("127.0.0.1"), "0fa1",
      "0000000000000001",
      "0000018bcfe56800", // issuedAt 1_700_000_000_000
      "0000018bd50bc400", // expiresAt 1_700_086_400_000
      "00", "0000000000000000",
      alice.record.signature
    ].join("")
    expect(bufferHex(bytes)).toBe(expected)
    expect(bytes.length).toBe(24 + 7 + 96 + 1 + 13 + 24 + 9 + 64)
  })

  it.prop("parses back to the same record, and re-encodes to the same bytes", [arbRecord], ([record]) => {
    const bytes = userRecordBytes(record)
    expect(bytes.length).toBeGreaterThanOrEqual(MIN_USER_RECORD_BYTES)
    expect(bytes.length).toBeLessThanOrEqual(MAX_USER_RECORD_BYTES)
    const parsed = parseUserRecordBytes(bytes)
    expect(parsed).toEqual(Either.right(record))
    if (Either.isRight(parsed)) expect(userRecordBytes(parsed.right)).toEqual(bytes)
  }, props)

  it("is bounded exactly: 228 bytes at the least, 2,148 at the most", () => {
    const smallest = mallory.recordWith({ username: "abc" as Username, addresses: [{ host: "h", port: 0 }] })
    expect(userRecordBytes(smallest).length).toBe(MIN_USER_RECORD_BYTES)
    expect(MIN_USER_RECORD_BYTES).toBe(228)
    const largest = largestRecord(alice, "a".repeat(32) as Username)
    expect(userRecordBytes(largest).length).toBe(MAX_USER_RECORD_BYTES)
    expect(MAX_USER_RECORD_BYTES).toBe(2148)
    expect(parseUserRecordBytes(userRecordBytes(largest))).toEqual(Either.right(largest))
    // Bigger than that cannot be encoded at all (a 254-character host is not an address).
    const oversized = { ...largest, addresses: [{ host: "h".repeat(254), port: 1 }, ...largest.addresses.slice(1)] }
    expect(() => userRecordBytes(oversized)).toThrow(RangeError)
  })

  it("carries the relays of a node behind a NAT, and refuses a relays section out of bounds", () => {
    const relay = { relayId: "ab".repeat(32) as NodeId, address: { host: "198.51.100.7", port: 4242 } }
    const relayedOnly = alice.recordWith({ addresses: [], relays: [relay] })
    const bytes = userRecordBytes(relayedOnly)
    const relayCountAt = bytes.length - 64 - (32 + 2 + relay.address.host.length + 2) - 1
    expect(parseUserRecordBytes(bytes)).toEqual(Either.right(relayedOnly))
    // No address and no relay: shorter than any record that says where to reach its owner.
    const nowhere = userRecordSigningBytes({ ...relayedOnly, relays: [relay] }).subarray(0, relayCountAt)
    const nowhereBytes = new Uint8Array(nowhere.length + 64)
    nowhereBytes.set(nowhere)
    expect(parseUserRecordBytes(nowhereBytes)).toEqual(Either.left("a record of 225 bytes is outside 228..2148"))
    // A record without relays keeps the bytes it had before relays existed: no trailing section.
    expect(userRecordBytes(alice.record).length).toBe(userRecordBytes(alice.recordWith({})).length)
    expect("relays" in alice.record).toBe(false)
    for (const count of [0, 4]) {
      const copy = bytes.slice()
      copy[relayCountAt] = count
      expect(parseUserRecordBytes(copy)).toEqual(
        Either.left(`a record's relays section lists 1 to 3 relays, not ${count}`)
      )
    }
    // Every truncation of the relays section is refused.
    for (let cut = 1; cut < 40; cut++) {
      const truncated = new Uint8Array(bytes.length - cut)
      truncated.set(bytes.subarray(0, relayCountAt + 39 - cut))
      truncated.set(bytes.subarray(bytes.length - 64), truncated.length - 64)
      expect(Either.isLeft(parseUserRecordBytes(truncated)), `cut ${cut}`).toBe(true)
    }
  })

  it("refuses every truncation, a trailing byte, a foreign prefix and out-of-range fields", () => {
    const bytes = userRecordBytes(alice.record)
    for (let length = 0; length < bytes.length; length++) {
      expect(Either.isLeft(parseUserRecordBytes(bytes.subarray(0, length))), `length ${length}`).toBe(true)
    }
    const extended = new Uint8Array(bytes.length + 1)
    extended.set(bytes)
    // A byte more reads as the start of a relays section that is not there.
    expect(Either.isLeft(parseUserRecordBytes(extended))).toBe(true)
    const withByte = (index: number, value: number) => {
      const copy = bytes.slice()
      copy[index] = value
      return copy
    }
    const prefix = 24
    expect(Either.isLeft(parseUserRecordBytes(withByte(prefix - 3, 0x31)))).toBe(true) // "v1"
    expect(Either.isLeft(parseUserRecordBytes(withByte(prefix + 2, 0x41)))).toBe(true) // "Alice"
    const countAt = prefix + 7 + 96
    // No address (the address bytes then misread as what follows).
    expect(Either.isLeft(parseUserRecordBytes(withByte(countAt, 0)))).toBe(true)
    expect(parseUserRecordBytes(withByte(countAt, 5))).toEqual(Either.left("a record lists 0 to 4 addresses, not 5"))
    // A host with a character no address has.
    expect(Either.isLeft(parseUserRecordBytes(withByte(countAt + 3, 0x20)))).toBe(true)
    const sequenceAt = countAt + 1 + 13
    expect(parseUserRecordBytes(withByte(sequenceAt + 1, 0x20))).toEqual(Either.left("record sequence exceeds 2^53 - 1"))
    const difficultyAt = sequenceAt + 24
    expect(parseUserRecordBytes(withByte(difficultyAt, 65))).toEqual(Either.left("claim difficulty 65 exceeds 64"))
  })
})

describe("signing bytes and the sealed payload", () => {
  it("lays out a message exactly as documented, the sender's record inside", () => {
    const bytes = chatMessageSigningBytes(message({
      senderSigningKey: "11".repeat(32) as PublicKeyHex,
      sequence: 258,
      sentAt: 1_700_000_000_000,
      text: "hé"
    }))
    const record = bufferHex(userRecordBytes(alice.record))
    const expected = [
      hexOf("peerchat/message/v2\n"),
      "0005", hexOf("alice"),
      "0003", hexOf("bob"),
      "11".repeat(32),
      (record.length / 2).toString(16).padStart(4, "0"), record,
      "0000000000000102",
      "0000018bcfe56800", // 1_700_000_000_000
      "00000003", "68c3a9"
    ].join("")
    expect(bufferHex(bytes)).toBe(expected)
  })

  it("ignores a signature property, and covers every field, the sender's record included", () => {
    const base = message()
    const signed = signChatMessage(base, alice.sign)
    expect(chatMessageSigningBytes(signed)).toEqual(chatMessageSigningBytes(base))
    expect(unsignedChatMessage(signed)).toEqual(base)
    const variants: ReadonlyArray<ChatMessage> = [
      message({ from: "alicf" as Username }),
      message({ to: "boc" as Username }),
      message({ senderSigningKey: bob.signingKey }),
      message({ senderRecord: alice.recordWith({ addresses: [{ host: "127.0.0.2", port: 4001 }] }) }),
      message({ senderRecord: { ...alice.record, signature: mallory.record.signature } }),
      message({ sequence: 8 }),
      message({ sentAt: 1_700_000_123_457 }),
      message({ text: "hello, boc" })
    ]
    for (const variant of variants) {
      expect(bufferHex(chatMessageSigningBytes(variant))).not.toBe(bufferHex(chatMessageSigningBytes(base)))
    }
  })

  it.prop("a sealed payload parses back to the same signed message", [arbMessage], ([generated]) => {
    const signed: SignedChatMessage = { ...generated, signature: toHex(new Uint8Array(64).fill(7)) as SignedChatMessage["signature"] }
    const payload = sealedPayloadBytes(signed)
    expect(payload.length).toBeGreaterThanOrEqual(MIN_SEALED_PAYLOAD_BYTES)
    expect(payload.length).toBeLessThanOrEqual(MAX_SEALED_PAYLOAD_BYTES)
    const parsed = parseSealedPayload(payload)
    expect(parsed).toEqual(Either.right(signed))
    // Canonical: re-encoding gives the very same bytes.
    if (Either.isRight(parsed)) expect(sealedPayloadBytes(parsed.right)).toEqual(payload)
  }, props)

  it("keeps a leading byte-order mark; the smallest and the largest payloads sit exactly at the bounds", () => {
    const withBom = signChatMessage(message({ text: "\ufeffhi" }), alice.sign)
    expect(parseSealedPayload(sealedPayloadBytes(withBom))).toEqual(Either.right(withBom))
    const longName = "a".repeat(32) as Username
    const largest = signChatMessage(
      message({
        from: longName,
        to: "b".repeat(32) as Username,
        senderRecord: largestRecord(alice, longName),
        text: "€".repeat(5461) + "a"
      }),
      alice.sign
    )
    const payload = sealedPayloadBytes(largest)
    expect(payload.length).toBe(MAX_SEALED_PAYLOAD_BYTES)
    expect(MAX_SEALED_PAYLOAD_BYTES).toBe(18_738)
    expect(parseSealedPayload(payload)).toEqual(Either.right(largest))
    const shortName = "abc" as Username
    const smallest = signChatMessage(
      message({
        from: shortName,
        to: "xyz" as Username,
        senderRecord: alice.recordWith({ username: shortName, addresses: [{ host: "h", port: 1 }] }),
        text: ""
      }),
      alice.sign
    )
    expect(sealedPayloadBytes(smallest).length).toBe(MIN_SEALED_PAYLOAD_BYTES)
    expect(MIN_SEALED_PAYLOAD_BYTES).toBe(376)
    expect(parseSealedPayload(sealedPayloadBytes(smallest))).toEqual(Either.right(smallest))
  })

  it("rejects every truncation, trailing bytes and a foreign prefix as malformed", () => {
    const payload = sealedPayloadBytes(signChatMessage(message(), alice.sign))
    for (let length = 0; length < payload.length; length++) {
      const result = parseSealedPayload(payload.subarray(0, length))
      expect(rejectionOf(result).reason).toBe("Malformed")
    }
    const extended = new Uint8Array(payload.length + 1)
    extended.set(payload)
    expect(rejectionOf(parseSealedPayload(extended)).reason).toBe("Malformed")
    const foreign = payload.slice()
    foreign[18] = 0x31 // "v1": old messages do not decode
    expect(rejectionOf(parseSealedPayload(foreign)).reason).toBe("Malformed")
  })

  it("rejects bad names, a bad record, bad UTF-8, unsafe integers and oversized text", () => {
    const payload = sealedPayloadBytes(signChatMessage(message({ text: "abc" }), alice.sign))
    const prefixLength = 20
    const fromStart = prefixLength + 2
    const withByte = (index: number, value: number) => {
      const copy = payload.slice()
      copy[index] = value
      return copy
    }
    // "alice" -> "Alice": not a normalized username.
    expect(rejectionOf(parseSealedPayload(withByte(fromStart, 0x41))).reason).toBe("Malformed")
    // a byte that is never valid UTF-8 inside the name
    expect(rejectionOf(parseSealedPayload(withByte(fromStart, 0xff))).reason).toBe("Malformed")
    const recordLengthStart = prefixLength + 2 + 5 + 2 + 3 + 32
    const recordLength = userRecordBytes(alice.record).length
    // A record length that is one byte off either way: the record does not parse exactly.
    expect(rejectionOf(parseSealedPayload(withByte(recordLengthStart + 1, recordLength + 1))).detail).toContain("senderRecord")
    expect(rejectionOf(parseSealedPayload(withByte(recordLengthStart + 1, recordLength - 1))).detail).toContain("senderRecord")
    expect(rejectionOf(parseSealedPayload(withByte(recordLengthStart, 0xff))).detail).toContain("senderRecord has a bad length")
    // The record's own username, made invalid.
    const recordNameStart = recordLengthStart + 2 + 24 + 2
    expect(rejectionOf(parseSealedPayload(withByte(recordNameStart, 0x41))).detail).toContain("record username")
    const sequenceStart = recordLengthStart + 2 + recordLength
    // sequence 2^53: out of the safe range
    expect(rejectionOf(parseSealedPayload(withByte(sequenceStart + 1, 0x20))).detail).toContain("sequence")
    const textLengthStart = sequenceStart + 16
    const textStart = textLengthStart + 4
    expect(rejectionOf(parseSealedPayload(withByte(textStart, 0xc3))).detail).toContain("UTF-8")
    // a text length over the limit is TooLong, whatever follows
    const huge = payload.slice()
    new DataView(huge.buffer).setUint32(textLengthStart, MAX_MESSAGE_TEXT_BYTES + 1)
    expect(rejectionOf(parseSealedPayload(huge)).reason).toBe("TooLong")
    // a text length that disagrees with the payload size
    expect(rejectionOf(parseSealedPayload(withByte(textLengthStart + 3, 2))).reason).toBe("Malformed")
    expect(rejectionOf(parseSealedPayload(new Uint8Array(MAX_SEALED_PAYLOAD_BYTES + 1))).reason).toBe("TooLong")
  })
})

describe("checks on a decrypted message", () => {
  const header = (to: Username): EnvelopeHeader => ({
    version: MESSAGE_FORMAT_VERSION,
    recipientKey: userKey(to),
    ephemeralKey: "22".repeat(32) as PublicKeyHex
  })
  const RECEIVED_AT = SENT_AT + 60_000

  const check = (
    opened: SignedChatMessage,
    options: { readonly to?: Username; readonly receivedAt?: number; readonly claim?: ClaimRules } = {}
  ) =>
    checkOpenedMessage({
      opened,
      expectedRecipient: options.to ?? bob.name,
      receivedAt: options.receivedAt ?? RECEIVED_AT,
      verify: verifyEd25519,
      claim: options.claim ?? easyClaims
    })

  it("readSealedPayload accepts a payload signed by the key it names and filed under its recipient", () => {
    const signed = signChatMessage(message(), alice.sign)
    const plaintext = sealedPayloadBytes(signed)
    expect(readSealedPayload({ envelope: header(bob.name), plaintext, verify: verifyEd25519 })).toEqual(Either.right(signed))
    const misfiled = readSealedPayload({ envelope: header(mallory.name), plaintext, verify: verifyEd25519 })
    expect(rejectionOf(misfiled).reason).toBe("WrongRecipient")
    const forged = { ...signed, signature: toHex(mallory.sign(chatMessageSigningBytes(signed))) as SignedChatMessage["signature"] }
    const bad = readSealedPayload({ envelope: header(bob.name), plaintext: sealedPayloadBytes(forged), verify: verifyEd25519 })
    expect(rejectionOf(bad).reason).toBe("BadSignature")
  })

  it("the signature binds the carried record: a record swapped after signing breaks the message", () => {
    const signed = signChatMessage(message(), alice.sign)
    // Another genuine record of alice's own key (a later address) put in after signing.
    const swapped = { ...signed, senderRecord: alice.recordWith({ sequence: 2, addresses: [{ host: "10.0.0.9", port: 1 }] }) }
    const plaintext = sealedPayloadBytes(swapped)
    expect(rejectionOf(readSealedPayload({ envelope: header(bob.name), plaintext, verify: verifyEd25519 })).reason)
      .toBe("BadSignature")
    expect(rejectionOf(check(swapped)).reason).toBe("BadSignature")
  })

  it("checkOpenedMessage accepts a genuine message without any lookup", () => {
    const signed = signChatMessage(message(), alice.sign)
    expect(check(signed)).toEqual(Either.right(signed))
  })

  it("names each failure, in order", () => {
    const signed = signChatMessage(message(), alice.sign)
    expect(rejectionOf(check(signed, { to: mallory.name })).reason).toBe("WrongRecipient")

    // Mallory's own valid record carried on a message "from alice": not alice's record.
    const wrongRecord = signChatMessage(message({ senderSigningKey: mallory.signingKey, senderRecord: mallory.record }), mallory.sign)
    expect(rejectionOf(check(wrongRecord)).reason).toBe("SenderRecordMismatch")

    // A stolen record: alice's genuine record, on a message mallory signs with her own key and names.
    const stolen = signChatMessage(message({ senderSigningKey: mallory.signingKey }), mallory.sign)
    const forged = rejectionOf(check(stolen))
    expect(forged.reason).toBe("SenderKeyMismatch")
    expect(forged.message).toContain("forged")

    // Mallory names alice's key (and carries her record) but cannot sign with it.
    const badSignature = signChatMessage(message(), mallory.sign)
    expect(rejectionOf(check(badSignature)).reason).toBe("BadSignature")
    // Any change of a signed field breaks the signature.
    expect(rejectionOf(check({ ...signed, sequence: 8 })).reason).toBe("BadSignature")

    // A text over the limit (only reachable by a cast) is refused before anything else.
    const oversized = { ...signed, text: "x".repeat(16_385) as SignedChatMessage["text"] }
    expect(rejectionOf(check(oversized, { to: mallory.name })).reason).toBe("TooLong")
  })

  it("the carried record must be valid when the message was sent", () => {
    const sentWith = (senderRecord: UserRecord, sentAt = SENT_AT) =>
      signChatMessage(message({ senderRecord, sentAt }), alice.sign)
    const reasonOf = (opened: SignedChatMessage, receivedAt = RECEIVED_AT) => {
      const rejected = rejectionOf(check(opened, { receivedAt }))
      return `${rejected.reason}/${rejected.detail.split(":")[0]}`
    }
    // Valid when sent, expired by the time it is opened (it waited in a mailbox): accepted.
    const longAfter = EXPIRES_AT + 10 * 24 * 60 * 60 * 1000
    expect(Either.isRight(check(sentWith(alice.record), { receivedAt: longAfter }))).toBe(true)
    // Expired when sent.
    expect(reasonOf(sentWith(alice.record, EXPIRES_AT), longAfter)).toBe("SenderRecordInvalid/Expired")
    // Issued after the message was sent (beyond the 5-minute skew).
    const later = alice.recordWith({ issuedAt: SENT_AT + 5 * 60 * 1000 + 1, expiresAt: SENT_AT + 24 * 60 * 60 * 1000 })
    expect(reasonOf(sentWith(later))).toBe("SenderRecordInvalid/IssuedInFuture")
    // A lifetime over 7 days.
    const endless = alice.recordWith({ expiresAt: ISSUED_AT + 8 * 24 * 60 * 60 * 1000 })
    expect(reasonOf(sentWith(endless))).toBe("SenderRecordInvalid/LifetimeTooLong")
    // A message dated in the recipient's future (to reach a record issued there) is refused as such.
    const future = sentWith(alice.record, RECEIVED_AT + 5 * 60 * 1000 + 1)
    expect(rejectionOf(check(future)).reason).toBe("SentInFuture")
  })

  it("the carried record must be self-certifying: its own signature, node id and claim work", () => {
    const sentWith = (senderRecord: UserRecord) => signChatMessage(message({ senderRecord }), alice.sign)
    const recordReason = (opened: SignedChatMessage, claim: ClaimRules = easyClaims) =>
      rejectionOf(check(opened, { claim })).detail.split(":")[0]
    // Tampered with after the owner signed it (another address), then signed into a message.
    const tampered = { ...alice.record, addresses: [{ host: "203.0.113.9", port: 4001 }] }
    expect(recordReason(sentWith(tampered))).toBe("BadSignature")
    // A record signed by alice's key but naming another node.
    const foreignNode = alice.recordWith({ nodeId: bob.record.nodeId })
    expect(recordReason(sentWith(foreignNode))).toBe("NodeIdMismatch")
    // Claim work: under rules that demand 8 bits, the difficulty-0 claim is too easy, and a claim that
    // says 8 bits without the work behind it is refused by the work check.
    const rules: ClaimRules = { minDifficulty: 8, hash: sha256 }
    expect(recordReason(sentWith(alice.record), rules)).toBe("ClaimTooEasy")
    const works = (nonce: number) => leadingZeroBits(sha256(claimChallenge("alice", alice.signingKey, nonce))) >= 8
    let unsolved = 0
    while (works(unsolved)) unsolved++
    const claimed = alice.recordWith({ claim: { difficulty: 8, nonce: unsolved } })
    expect(recordReason(sentWith(claimed), rules)).toBe("ClaimWorkInvalid")
    // With the work done, the same record passes.
    let solved = 0
    while (!works(solved)) solved++
    const paid = alice.recordWith({ claim: { difficulty: 8, nonce: solved } })
    expect(Either.isRight(check(sentWith(paid), { claim: rules }))).toBe(true)
  })

  it("a throwing verifier counts as a bad signature", () => {
    const signed = signChatMessage(message(), alice.sign)
    const result = checkOpenedMessage({
      opened: signed,
      expectedRecipient: bob.name,
      receivedAt: RECEIVED_AT,
      claim: easyClaims,
      verify: () => {
        throw new Error("not a curve point")
      }
    })
    expect(rejectionOf(result)).toBeInstanceOf(MessageRejected)
    expect(rejectionOf(result).reason).toBe("BadSignature")
  })
})

describe("the sender rule (senderTrust)", () => {
  const aliceKey = alice.signingKey
  const malloryKey = mallory.signingKey
  const owner = (record: UserRecord): NameAnswer => ({ _tag: "Owner", record, holders: 3 })
  const conflict = (...records: ReadonlyArray<UserRecord>): NameAnswer => ({
    _tag: "Conflict",
    claimants: records.map((record) => ({ record, holders: 2 }))
  })
  const squat = mallory.recordWith({ username: alice.name })
  const answers: ReadonlyArray<NameAnswer | { readonly _tag: "NotConnected" }> = [
    owner(alice.record),
    owner(squat),
    conflict(alice.record, squat),
    { _tag: "Unclaimed" },
    { _tag: "NotConnected" }
  ]

  it("a pinned name is decided by the pin alone, whatever the network says", () => {
    for (const answer of [undefined, ...answers]) {
      expect(senderTrust({ carriedKey: aliceKey, pin: { signingKey: aliceKey }, answer })).toMatchObject({
        _tag: "Accept",
        basis: "Pinned",
        pinFirstUse: false
      })
      // A hijacker never gets a message "from" a pinned contact accepted, even when the network names its key.
      expect(senderTrust({ carriedKey: malloryKey, pin: { signingKey: aliceKey }, answer })).toEqual({
        _tag: "KeyChanged",
        pinnedKey: aliceKey
      })
    }
  })

  it("an unpinned name asks the network first", () => {
    expect(senderTrust({ carriedKey: aliceKey, pin: undefined, answer: undefined })).toEqual({ _tag: "AskNetwork" })
  })

  it("the network's sole owner is accepted and pinned; another owner contradicts", () => {
    expect(senderTrust({ carriedKey: aliceKey, pin: undefined, answer: owner(alice.record) })).toEqual({
      _tag: "Accept",
      basis: "NetworkOwner",
      pinFirstUse: true,
      networkRecord: alice.record
    })
    // The squatter, where the network knows alice: refused, and never pinned.
    expect(senderTrust({ carriedKey: malloryKey, pin: undefined, answer: owner(alice.record) })).toEqual({
      _tag: "Contradicted",
      claimantKeys: [aliceKey]
    })
  })

  it("a conflict is never settled by a message: held when it includes the key, refused when it does not", () => {
    for (const carriedKey of [aliceKey, malloryKey]) {
      expect(senderTrust({ carriedKey, pin: undefined, answer: conflict(alice.record, squat) })).toEqual({
        _tag: "Contested",
        claimantKeys: [aliceKey, malloryKey]
      })
    }
    const third = user("carol", 9).recordWith({ username: alice.name })
    expect(senderTrust({ carriedKey: third.signingKey, pin: undefined, answer: conflict(alice.record, squat) }))
      .toMatchObject({ _tag: "Contradicted" })
  })

  it("a silent network (not connected, or nobody holds the name) accepts without pinning", () => {
    for (const answer of [{ _tag: "Unclaimed" } as const, { _tag: "NotConnected" } as const]) {
      expect(senderTrust({ carriedKey: malloryKey, pin: undefined, answer })).toEqual({
        _tag: "Accept",
        basis: "Unconfirmed",
        pinFirstUse: false,
        networkRecord: undefined
      })
    }
  })

  it.prop(
    "only the pinned key, or the network's sole owner, or a silent network is ever accepted; only the owner is pinned",
    [fc.constantFrom(aliceKey, malloryKey), fc.option(fc.constantFrom(aliceKey, malloryKey), { nil: undefined }), fc.constantFrom(...answers)],
    ([carriedKey, pinnedKey, answer]) => {
      const decision = senderTrust({ carriedKey, pin: pinnedKey === undefined ? undefined : { signingKey: pinnedKey }, answer })
      if (decision._tag !== "Accept") return
      if (pinnedKey !== undefined) expect(carriedKey).toBe(pinnedKey)
      else if (answer._tag === "Owner") expect(answer.record.signingKey).toBe(carriedKey)
      else expect(["Unclaimed", "NotConnected"]).toContain(answer._tag)
      if (decision.pinFirstUse) expect(pinnedKey === undefined && answer._tag === "Owner").toBe(true)
    },
    props
  )
})

describe("base64", () => {
  it.prop("matches Node's encoder and round-trips", [fc.uint8Array({ maxLength: 80 })], ([bytes]) => {
    const text = toBase64(bytes)
    expect(text).toBe(Buffer.from(bytes).toString("base64"))
    expect(fromBase64(text)).toEqual(bytes)
  }, props)

  it("refuses everything but canonical padded base64", () => {
    expect(fromBase64("QQ==")).toEqual(Uint8Array.of(0x41))
    // Effect's decoder alone takes "QR==", "QUJ=" (unused bits set) and the line breaks: the re-encoding check refuses them.
    const lax = ["QR==", "QUJ=", "QUJD\n", "QUJD\r\n", "\nQUJD", "QU\r\nJD", "QQ==\n"]
    for (const text of lax) expect(Either.isRight(Encoding.decodeBase64(text)), text).toBe(true)
    for (const bad of [...lax, "QQ", "QQ=", "Q===", "====", "=QQQ", "QQ==QQ==", "QU J", "QUJ-", "QUJ_", "QUJé", "QUJ"]) {
      expect(fromBase64(bad), bad).toBeUndefined()
    }
  })
})

describe("envelopes", () => {
  const ciphertextOf = (length: number) => toBase64(seededRandomBytes(length)(length)) as CiphertextBase64
  const sample: Envelope = {
    version: 2,
    recipientKey: userKey(bob.name),
    ephemeralKey: "ab".repeat(32) as PublicKeyHex,
    nonce: "0102030405060708090a0b0c" as Envelope["nonce"],
    ciphertext: ciphertextOf(500)
  }
  const decode = Schema.decodeUnknownEither(Envelope)

  it("decodes a well-formed envelope, at both size bounds", () => {
    expect(sample.ciphertext.endsWith("=")).toBe(true)
    expect(decode(sample)).toEqual(Either.right(sample))
    expect(Either.isRight(decode({ ...sample, ciphertext: ciphertextOf(MIN_CIPHERTEXT_BYTES) }))).toBe(true)
    expect(Either.isRight(decode({ ...sample, ciphertext: ciphertextOf(MAX_CIPHERTEXT_BYTES) }))).toBe(true)
    expect(MAX_CIPHERTEXT_BYTES).toBe(18_754)
    expect(MAX_CIPHERTEXT_BASE64_LENGTH).toBe(25_008)
  })

  it("rejects malformed fields", () => {
    const bad: ReadonlyArray<[string, unknown]> = [
      ["version 1", { ...sample, version: 1 }],
      ["upper-case ephemeral key", { ...sample, ephemeralKey: "AB".repeat(32) }],
      ["short ephemeral key", { ...sample, ephemeralKey: "ab".repeat(31) }],
      ["non-hex ephemeral key", { ...sample, ephemeralKey: "zz".repeat(32) }],
      ["bad recipient key", { ...sample, recipientKey: "0x" + "00".repeat(31) }],
      ["short nonce", { ...sample, nonce: "00".repeat(11) }],
      ["long nonce", { ...sample, nonce: "00".repeat(13) }],
      ["non-hex nonce", { ...sample, nonce: "0g".repeat(12) }],
      ["non-canonical base64", { ...sample, ciphertext: sample.ciphertext.slice(0, -4) + "QR==" }],
      ["unpadded base64", { ...sample, ciphertext: sample.ciphertext.replace(/=+$/, "") }],
      ["url-safe base64", { ...sample, ciphertext: "-_" + sample.ciphertext.slice(2) }],
      ["oversized ciphertext", { ...sample, ciphertext: ciphertextOf(MAX_CIPHERTEXT_BYTES + 1) }],
      ["far oversized ciphertext", { ...sample, ciphertext: "A".repeat(1_000_000) }],
      ["undersized ciphertext", { ...sample, ciphertext: ciphertextOf(MIN_CIPHERTEXT_BYTES - 1) }],
      ["missing nonce", { version: 2, recipientKey: sample.recipientKey, ephemeralKey: sample.ephemeralKey, ciphertext: sample.ciphertext }]
    ]
    for (const [what, input] of bad) expect(Either.isLeft(decode(input)), what).toBe(true)
  })

  it("lays out the envelope bytes as documented; the header prefix is the associated data", () => {
    const bytes = envelopeBytes(sample)
    const ciphertext = Buffer.from(sample.ciphertext, "base64")
    const expected = [
      hexOf("peerchat/envelope/v2\n"),
      sample.recipientKey,
      sample.ephemeralKey,
      sample.nonce,
      ciphertext.length.toString(16).padStart(8, "0"),
      ciphertext.toString("hex")
    ].join("")
    expect(bufferHex(bytes)).toBe(expected)
    const aad = envelopeAad(sample)
    expect(aad.length).toBe(85)
    expect(bufferHex(aad)).toBe(expected.slice(0, 170))
  })

  it("an envelope's id is SHA-256 of its bytes, stable, and changes with any field", () => {
    const id = envelopeId(sample)
    expect(id).toBe(bufferHex(nodeSha256(envelopeBytes(sample))))
    expect(envelopeId({ ...sample })).toBe(id)
    expect(envelopeId(sample, nodeSha256)).toBe(id)
    expect(Either.isRight(Schema.decodeUnknownEither(MessageId)(id))).toBe(true)
    const variants: ReadonlyArray<Envelope> = [
      { ...sample, recipientKey: userKey(alice.name) },
      { ...sample, ephemeralKey: "ac".repeat(32) as PublicKeyHex },
      { ...sample, nonce: "0102030405060708090a0b0d" as Envelope["nonce"] },
      { ...sample, ciphertext: ciphertextOf(501) }
    ]
    expect(new Set([id, ...variants.map((variant) => envelopeId(variant))]).size).toBe(variants.length + 1)
  })
})

describe("history order", () => {
  // Small ranges force ties on the leading fields.
  const arbEntry = fc.record({
    sentAt: fc.integer({ min: 0, max: 3 }),
    sequence: fc.integer({ min: 0, max: 3 }),
    from: fc.constantFrom("al", "alice", "bob", "zed")
  })
  const arbHistory = fc
    .array(arbEntry, { maxLength: 30 })
    .map((entries): ReadonlyArray<HistoryOrderKey> =>
      entries.map((entry, index) => ({ ...entry, id: toHex(nodeSha256(Uint8Array.of(index))) })))

  // Oracle: least-significant-key-first passes of a stable sort, each on one field.
  const modelSort = (entries: ReadonlyArray<HistoryOrderKey>): ReadonlyArray<HistoryOrderKey> => {
    const byField = <K extends keyof HistoryOrderKey>(field: K) => (a: HistoryOrderKey, b: HistoryOrderKey) =>
      a[field] < b[field] ? -1 : a[field] > b[field] ? 1 : 0
    return [...entries].sort(byField("id")).sort(byField("from")).sort(byField("sequence")).sort(byField("sentAt"))
  }

  it.prop("sorting agrees with a model sort and does not depend on arrival order", [arbHistory, fc.integer()], ([entries, seed]) => {
    const sorted = [...entries].sort(compareHistoryOrder)
    expect(sorted).toEqual(modelSort(entries))
    const shuffled = fc.sample(fc.shuffledSubarray([...entries], { minLength: entries.length }), { seed, numRuns: 1 })[0] ?? []
    expect([...shuffled].sort(compareHistoryOrder)).toEqual(sorted)
  }, props)

  it.prop("is a total order: reflexive, antisymmetric, transitive", [arbHistory], ([entries]) => {
    for (const a of entries) {
      expect(compareHistoryOrder(a, a)).toBe(0)
      for (const b of entries) {
        const ab = compareHistoryOrder(a, b)
        expect(ab).toBe(-compareHistoryOrder(b, a) || 0)
        if (a !== b) expect(ab).not.toBe(0)
        for (const c of entries) {
          if (ab <= 0 && compareHistoryOrder(b, c) <= 0) expect(compareHistoryOrder(a, c)).toBeLessThanOrEqual(0)
        }
      }
    }
  }, { fastCheck: { seed: PROPERTY_SEED, numRuns: 30 } })

  it("orders by sentAt, then sequence, then sender, then id", () => {
    const entry = (sentAt: number, sequence: number, from: string, id: string): HistoryOrderKey => ({ sentAt, sequence, from, id })
    expect(compareHistoryOrder(entry(1, 9, "zz", "ff"), entry(2, 0, "aa", "00"))).toBe(-1)
    expect(compareHistoryOrder(entry(2, 1, "zz", "ff"), entry(2, 2, "aa", "00"))).toBe(-1)
    expect(compareHistoryOrder(entry(2, 2, "al", "ff"), entry(2, 2, "alice", "00"))).toBe(-1)
    expect(compareHistoryOrder(entry(2, 2, "bob", "01"), entry(2, 2, "bob", "00"))).toBe(1)
  })
})

describe("receipts", () => {
  const messageId = envelopeId({
    version: 2,
    recipientKey: userKey(bob.name),
    ephemeralKey: "ab".repeat(32) as PublicKeyHex,
    nonce: "00".repeat(12) as Envelope["nonce"],
    ciphertext: toBase64(new Uint8Array(MIN_CIPHERTEXT_BYTES)) as CiphertextBase64
  })
  const receipt: Receipt = { version: 1, messageId, recipient: bob.name, receivedAt: 1_700_000_200_000 }

  it("lays out the signing bytes as documented", () => {
    expect(bufferHex(receiptSigningBytes(receipt))).toBe(
      [hexOf("peerchat/receipt/v1\n"), messageId, "0003", hexOf("bob"), "0000018bcfe87540"].join("")
    )
    expect(Number.parseInt("18bcfe87540", 16)).toBe(1_700_000_200_000)
  })

  it("a receipt signed by the recipient verifies against their record", () => {
    const signed = signReceipt(receipt, bob.sign)
    expect(checkReceipt({ receipt: signed, recipientRecord: bob.record, verify: verifyEd25519 })).toEqual(Either.right(signed))
  })

  it("a tampered or foreign receipt does not", () => {
    const signed = signReceipt(receipt, bob.sign)
    const check = (candidate: typeof signed, record: UserRecord = bob.record) =>
      checkReceipt({ receipt: candidate, recipientRecord: record, verify: verifyEd25519 })
    const otherId = toHex(nodeSha256(Uint8Array.of(1))) as MessageId
    expect(rejectionOf(check({ ...signed, receivedAt: signed.receivedAt + 1 })).reason).toBe("BadSignature")
    expect(rejectionOf(check({ ...signed, messageId: otherId })).reason).toBe("BadSignature")
    // Mallory cannot sign for Bob.
    expect(rejectionOf(check(signReceipt(receipt, mallory.sign))).reason).toBe("BadSignature")
    // Mallory's own genuine receipt is not Bob's.
    const mallorys = signReceipt({ ...receipt, recipient: mallory.name }, mallory.sign)
    const wrong = rejectionOf(check(mallorys))
    expect(wrong).toEqual(new ReceiptRejected({ messageId, reason: "WrongRecipient" }))
    expect(wrong.message).toContain(messageId)
  })
})
