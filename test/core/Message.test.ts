import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
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
  MIN_SEALED_PAYLOAD_BYTES,
  parseMessageText,
  parseSealedPayload,
  readSealedPayload,
  type Receipt,
  ReceiptRejected,
  receiptSigningBytes,
  sealedPayloadBytes,
  type SignedChatMessage,
  signChatMessage,
  signReceipt,
  toBase64,
  unsignedChatMessage,
  utf8ByteLength
} from "../../src/core/Message.js"
import { type PublicKeyHex, signUserRecord, type UserRecord } from "../../src/core/UserRecord.js"
import { type Username, userKey } from "../../src/core/Username.js"
import { nodeIdFromPublicKey } from "../../src/core/Id.js"
import { sign, signingKeyFromSeed, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

const props = { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }

// --- Deterministic users with real Ed25519 keys ---

interface User {
  readonly name: Username
  readonly signingKey: PublicKeyHex
  readonly sign: (bytes: Uint8Array) => Uint8Array
  readonly record: UserRecord
}

const user = (name: string, seed: number): User => {
  const pair = signingKeyFromSeed(seededRandomBytes(seed)(32))
  const signingKey = toHex(pair.publicKey) as PublicKeyHex
  const signFn = (bytes: Uint8Array) => sign(pair.privateKey, bytes)
  const record = signUserRecord({
    username: name as Username,
    signingKey,
    encryptionKey: toHex(seededRandomBytes(seed + 1000)(32)) as PublicKeyHex,
    nodeId: nodeIdFromPublicKey(pair.publicKey),
    addresses: [{ host: "127.0.0.1", port: 4000 + seed }],
    sequence: 1,
    issuedAt: 1_700_000_000_000,
    expiresAt: 1_700_086_400_000
  }, signFn)
  return { name: name as Username, signingKey, sign: signFn, record }
}

const alice = user("alice", 1)
const bob = user("bob", 2)
const mallory = user("mallory", 3)

const message = (overrides: Partial<Omit<ChatMessage, "text">> & { readonly text?: string } = {}): ChatMessage =>
  Either.getOrThrow(makeChatMessage({
    from: overrides.from ?? alice.name,
    to: overrides.to ?? bob.name,
    senderSigningKey: overrides.senderSigningKey ?? alice.signingKey,
    sequence: overrides.sequence ?? 7,
    sentAt: overrides.sentAt ?? 1_700_000_123_456,
    text: overrides.text ?? "hello, bob"
  }))

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
const arbMessage: fc.Arbitrary<ChatMessage> = fc
  .record({
    from: arbUsername,
    to: arbUsername,
    senderSigningKey: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((bytes) => toHex(bytes) as PublicKeyHex),
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

  it("makeChatMessage builds a version-1 message or reports the text problem", () => {
    expect(message()).toEqual({
      version: 1,
      from: "alice",
      to: "bob",
      senderSigningKey: alice.signingKey,
      sequence: 7,
      sentAt: 1_700_000_123_456,
      text: "hello, bob"
    })
    const tooLong = makeChatMessage({ ...message(), text: "x".repeat(16_385) })
    expect(rejectionOf(tooLong)._tag).toBe("MessageTooLong")
  })
})

describe("signing bytes and the sealed payload", () => {
  it("lays out a message exactly as documented", () => {
    const bytes = chatMessageSigningBytes(message({
      senderSigningKey: "11".repeat(32) as PublicKeyHex,
      sequence: 258,
      sentAt: 1_700_000_000_000,
      text: "hé"
    }))
    const expected = [
      hexOf("peerchat/message/v1\n"),
      "0005", hexOf("alice"),
      "0003", hexOf("bob"),
      "11".repeat(32),
      "0000000000000102",
      "0000018bcfe56800", // 1_700_000_000_000
      "00000003", "68c3a9"
    ].join("")
    expect(bufferHex(bytes)).toBe(expected)
  })

  it("ignores a signature property, and covers every field", () => {
    const base = message()
    const signed = signChatMessage(base, alice.sign)
    expect(chatMessageSigningBytes(signed)).toEqual(chatMessageSigningBytes(base))
    expect(unsignedChatMessage(signed)).toEqual(base)
    const variants: ReadonlyArray<ChatMessage> = [
      message({ from: "alicf" as Username }),
      message({ to: "boc" as Username }),
      message({ senderSigningKey: bob.signingKey }),
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

  it("keeps a leading byte-order mark and the largest text", () => {
    const withBom = signChatMessage(message({ text: "\ufeffhi" }), alice.sign)
    expect(parseSealedPayload(sealedPayloadBytes(withBom))).toEqual(Either.right(withBom))
    const largest = signChatMessage(
      message({ from: "a".repeat(32) as Username, to: "b".repeat(32) as Username, text: "€".repeat(5461) + "a" }),
      alice.sign
    )
    const payload = sealedPayloadBytes(largest)
    expect(payload.length).toBe(MAX_SEALED_PAYLOAD_BYTES)
    expect(MAX_SEALED_PAYLOAD_BYTES).toBe(16_588)
    expect(parseSealedPayload(payload)).toEqual(Either.right(largest))
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
    foreign[18] = 0x32 // "v2"
    expect(rejectionOf(parseSealedPayload(foreign)).reason).toBe("Malformed")
  })

  it("rejects bad names, bad UTF-8, unsafe integers and oversized text", () => {
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
    const sequenceStart = prefixLength + 2 + 5 + 2 + 3 + 32
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
  const header = (to: Username) => ({ version: 1 as const, recipientKey: userKey(to), ephemeralKey: "22".repeat(32) as PublicKeyHex })

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

  it("checkOpenedMessage accepts a genuine message and names each failure", () => {
    const signed = signChatMessage(message(), alice.sign)
    const check = (opened: SignedChatMessage, expectedRecipient: Username, senderRecord: UserRecord) =>
      checkOpenedMessage({ opened, expectedRecipient, senderRecord, verify: verifyEd25519 })
    expect(check(signed, bob.name, alice.record)).toEqual(Either.right(signed))
    expect(rejectionOf(check(signed, mallory.name, alice.record)).reason).toBe("WrongRecipient")
    expect(rejectionOf(check(signed, bob.name, mallory.record)).reason).toBe("SenderRecordMismatch")

    // Mallory signs "from alice" with her own key and names it: the published record disagrees.
    const forgedSender = signChatMessage(message({ senderSigningKey: mallory.signingKey }), mallory.sign)
    const forged = rejectionOf(check(forgedSender, bob.name, alice.record))
    expect(forged.reason).toBe("SenderKeyMismatch")
    expect(forged.message).toContain("forged")

    // Mallory names Alice's key but cannot sign with it.
    const badSignature = signChatMessage(message(), mallory.sign)
    expect(rejectionOf(check(badSignature, bob.name, alice.record)).reason).toBe("BadSignature")
    // Any change of a signed field breaks the signature.
    expect(rejectionOf(check({ ...signed, sequence: 8 }, bob.name, alice.record)).reason).toBe("BadSignature")

    // A text over the limit (only reachable by a cast) is refused before anything else.
    const oversized = { ...signed, text: "x".repeat(16_385) as SignedChatMessage["text"] }
    expect(rejectionOf(check(oversized, mallory.name, alice.record)).reason).toBe("TooLong")
  })

  it("a throwing verifier counts as a bad signature", () => {
    const signed = signChatMessage(message(), alice.sign)
    const result = checkOpenedMessage({
      opened: signed,
      expectedRecipient: bob.name,
      senderRecord: alice.record,
      verify: () => {
        throw new Error("not a curve point")
      }
    })
    expect(rejectionOf(result)).toBeInstanceOf(MessageRejected)
    expect(rejectionOf(result).reason).toBe("BadSignature")
  })
})

describe("base64", () => {
  it.prop("matches Node's encoder and round-trips", [fc.uint8Array({ maxLength: 80 })], ([bytes]) => {
    const text = toBase64(bytes)
    expect(text).toBe(Buffer.from(bytes).toString("base64"))
    expect(fromBase64(text)).toEqual(bytes)
  }, props)

  it("refuses everything but canonical padded base64", () => {
    expect(fromBase64("QQ==")).toEqual(Uint8Array.of(0x41))
    for (const bad of ["QR==", "QUJ=", "QQ", "QQ=", "Q===", "====", "QQ==QQ==", "QU J", "QUJD\n", "QUJ-", "QUJ_", "QUJé"]) {
      expect(fromBase64(bad), bad).toBeUndefined()
    }
  })
})

describe("envelopes", () => {
  const ciphertextOf = (length: number) => toBase64(seededRandomBytes(length)(length)) as CiphertextBase64
  const sample: Envelope = {
    version: 1,
    recipientKey: userKey(bob.name),
    ephemeralKey: "ab".repeat(32) as PublicKeyHex,
    nonce: "0102030405060708090a0b0c" as Envelope["nonce"],
    ciphertext: ciphertextOf(200)
  }
  const decode = Schema.decodeUnknownEither(Envelope)

  it("decodes a well-formed envelope, at both size bounds", () => {
    expect(sample.ciphertext.endsWith("=")).toBe(true)
    expect(decode(sample)).toEqual(Either.right(sample))
    expect(Either.isRight(decode({ ...sample, ciphertext: ciphertextOf(MIN_CIPHERTEXT_BYTES) }))).toBe(true)
    expect(Either.isRight(decode({ ...sample, ciphertext: ciphertextOf(MAX_CIPHERTEXT_BYTES) }))).toBe(true)
    expect(MAX_CIPHERTEXT_BYTES).toBe(16_604)
    expect(MAX_CIPHERTEXT_BASE64_LENGTH).toBe(22_140)
  })

  it("rejects malformed fields", () => {
    const bad: ReadonlyArray<[string, unknown]> = [
      ["version 2", { ...sample, version: 2 }],
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
      ["missing nonce", { version: 1, recipientKey: sample.recipientKey, ephemeralKey: sample.ephemeralKey, ciphertext: sample.ciphertext }]
    ]
    for (const [what, input] of bad) expect(Either.isLeft(decode(input)), what).toBe(true)
  })

  it("lays out the envelope bytes as documented; the header prefix is the associated data", () => {
    const bytes = envelopeBytes(sample)
    const ciphertext = Buffer.from(sample.ciphertext, "base64")
    const expected = [
      hexOf("peerchat/envelope/v1\n"),
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
      { ...sample, ciphertext: ciphertextOf(201) }
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
    version: 1,
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
