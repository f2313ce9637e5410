import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Either, Exit, Layer, Schema } from "effect"
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync
} from "node:crypto"
import { fromHex, toHex, utf8 } from "../../src/core/Bytes.js"
import {
  type ChatMessage,
  checkOpenedMessage,
  type CiphertextBase64,
  ciphertextBytes,
  ciphertextFromBytes,
  Envelope,
  envelopeId,
  makeChatMessage,
  MAX_CIPHERTEXT_BYTES,
  type Receipt,
  sealedPayloadBytes,
  senderTrust,
  type SignedChatMessage,
  toBase64
} from "../../src/core/Message.js"
import type { NodeId } from "../../src/core/Id.js"
import { sha256 } from "../../src/core/Sha256.js"
import {
  type ClaimRules,
  type PublicKeyHex,
  signUserRecord,
  type UnsignedUserRecord,
  type UserRecord
} from "../../src/core/UserRecord.js"
import { type Username, userKey } from "../../src/core/Username.js"
import { KeyAgreement, MessageCrypto, type MessageCryptoService } from "../../src/chat/MessageCrypto.js"
import { Identity, type IdentityService } from "../../src/node/Identity.js"
import * as IdentityStore from "../../src/platform/IdentityStore.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { scopedTempDir } from "../support/tempDir.js"

interface Party {
  readonly name: Username
  readonly identity: IdentityService
  readonly signingSeed: Uint8Array
  readonly encryptionSeed: Uint8Array
  readonly crypto: MessageCryptoService
  readonly record: UserRecord
  /** A record of this party's key with other fields, signed by it. */
  readonly recordWith: (fields: Partial<UnsignedUserRecord>) => UserRecord
  readonly signingKey: PublicKeyHex
  readonly encryptionKey: PublicKeyHex
}

const party = (name: string, seed: number): Party => {
  const signingSeed = seededRandomBytes(seed)(32)
  const encryptionSeed = seededRandomBytes(seed + 100)(32)
  const identity = IdentityStore.identityFromSeeds(signingSeed, encryptionSeed)
  const signingKey = toHex(identity.signingPublicKey) as PublicKeyHex
  const encryptionKey = toHex(identity.encryptionPublicKey) as PublicKeyHex
  const unsigned: UnsignedUserRecord = {
    username: name as Username,
    signingKey,
    encryptionKey,
    nodeId: identity.nodeId,
    addresses: [{ host: "127.0.0.1", port: 4000 + seed }],
    sequence: 1,
    issuedAt: 1_700_000_000_000,
    expiresAt: 1_700_086_400_000,
    claim: { difficulty: 0, nonce: 0 }
  }
  const recordWith = (fields: Partial<UnsignedUserRecord>) => signUserRecord({ ...unsigned, ...fields }, identity.sign)
  const record = recordWith({})
  // A seeded source of ephemeral keys and nonces keeps every envelope in this file reproducible.
  const crypto = NodeMessageCrypto.make({
    identity,
    keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(encryptionSeed),
    randomBytes: seededRandomBytes(seed + 200)
  })
  return { name: name as Username, identity, signingSeed, encryptionSeed, crypto, record, recordWith, signingKey, encryptionKey }
}

const alice = party("alice", 1)
const bob = party("bob", 2)
const carol = party("carol", 3)
const mallory = party("mallory", 4)

const TEXT = "meet me at the usual place at nine"

const SENT_AT = 1_700_000_123_456
/** The test parties' claims are solved at difficulty 0, which any nonce meets. */
const claimRules: ClaimRules = { minDifficulty: 0, hash: sha256 }

const messageFrom = (sender: Party, to: Username, text = TEXT, sequence = 1, senderRecord = sender.record): ChatMessage =>
  Either.getOrThrow(makeChatMessage({
    from: sender.name,
    to,
    senderSigningKey: sender.signingKey,
    senderRecord,
    sequence,
    sentAt: SENT_AT,
    text
  }))

/** What bob's node checks once it has opened a message, with no lookup (a minute after it was sent). */
const checkedByBob = (opened: SignedChatMessage) =>
  checkOpenedMessage({ opened, expectedRecipient: bob.name, receivedAt: SENT_AT + 60_000, verify: verifyEd25519, claim: claimRules })

const raw = (hex: string) => Buffer.from(hex, "hex")
const u16 = (value: number) => raw(value.toString(16).padStart(4, "0"))
const u64 = (value: number) => raw(value.toString(16).padStart(16, "0"))

/** A record's canonical bytes, written by hand from the documented layout (independent of the encoder). */
const recordBytesByHand = (record: UserRecord): Buffer =>
  Buffer.concat([
    Buffer.from("peerchat/user-record/v2\n"),
    u16(record.username.length), Buffer.from(record.username),
    raw(record.signingKey), raw(record.encryptionKey), raw(record.nodeId),
    Buffer.of(record.addresses.length),
    ...record.addresses.flatMap((address) => [u16(address.host.length), Buffer.from(address.host), u16(address.port)]),
    u64(record.sequence), u64(record.issuedAt), u64(record.expiresAt),
    Buffer.of(record.claim.difficulty), u64(record.claim.nonce),
    raw(record.signature)
  ])

/**
 * Encrypts any plaintext to `recipient` exactly as the documented scheme does, with an independent
 * implementation: for payloads the sealer would never produce (a record swapped after signing).
 */
const encryptByHand = (plaintext: Uint8Array, recipient: Party): Envelope => {
  const ephemeralPrivate = createPrivateKey({
    key: Buffer.concat([raw("302e020100300506032b656e04220420"), Buffer.from(seededRandomBytes(76)(32))]),
    format: "der",
    type: "pkcs8"
  })
  const ephemeralPublic = createPublicKey(ephemeralPrivate).export({ format: "der", type: "spki" }).subarray(12)
  const recipientPublic = createPublicKey({
    key: Buffer.concat([raw("302a300506032b656e032100"), raw(recipient.encryptionKey)]),
    format: "der",
    type: "spki"
  })
  const shared = diffieHellman({ privateKey: ephemeralPrivate, publicKey: recipientPublic })
  const salt = Buffer.concat([ephemeralPublic, raw(recipient.encryptionKey)])
  const key = Buffer.from(hkdfSync("sha256", shared, salt, "peerchat/message/v2", 32))
  const nonce = Buffer.from(seededRandomBytes(77)(12))
  const recipientKey = userKey(recipient.name)
  const aad = Buffer.concat([Buffer.from("peerchat/envelope/v2\n"), raw(recipientKey), ephemeralPublic])
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: 16 })
  cipher.setAAD(aad, { plaintextLength: plaintext.length })
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
  return {
    version: 2,
    recipientKey,
    ephemeralKey: ephemeralPublic.toString("hex") as PublicKeyHex,
    nonce: nonce.toString("hex") as Envelope["nonce"],
    ciphertext: ciphertextFromBytes(new Uint8Array(body))
  }
}

const run = <A, E>(effect: Effect.Effect<A, E>): Either.Either<A, E> => Effect.runSync(Effect.either(effect))

const succeeded = <A, E>(effect: Effect.Effect<A, E>): A => Either.getOrThrowWith(run(effect), (error) => error)

const failure = <A, E>(effect: Effect.Effect<A, E>): E => {
  const result = run(effect)
  if (Either.isRight(result)) throw new Error("expected a failure")
  return result.left
}

const sealed = succeeded(alice.crypto.seal(messageFrom(alice, bob.name), bob.encryptionKey))

/** `hex` with byte `index` XOR-ed with `mask`. */
const flipHexByte = (hex: string, index: number, mask = 0x01): string => {
  const bytes = fromHex(hex) ?? new Uint8Array(0)
  bytes[index] = (bytes[index] ?? 0) ^ mask
  return toHex(bytes)
}

describe("sealing and opening", () => {
  it("a message sealed by alice for bob opens to the signed message and passes bob's checks", () => {
    const opened = succeeded(bob.crypto.open(sealed.envelope))
    expect(opened).toEqual(sealed.signed)
    expect(opened.text).toBe(TEXT)
    expect(sealed.id).toBe(envelopeId(sealed.envelope))
    // The sender's record travels inside: bob checks alice without any lookup.
    expect(opened.senderRecord).toEqual(alice.record)
    expect(checkedByBob(opened)).toEqual(Either.right(sealed.signed))
  })

  it("an independent implementation of the documented scheme decrypts it to the documented payload", () => {
    const envelope = sealed.envelope
    const bobPrivate = createPrivateKey({
      key: Buffer.concat([raw("302e020100300506032b656e04220420"), Buffer.from(bob.encryptionSeed)]),
      format: "der",
      type: "pkcs8"
    })
    const ephemeral = createPublicKey({
      key: Buffer.concat([raw("302a300506032b656e032100"), raw(envelope.ephemeralKey)]),
      format: "der",
      type: "spki"
    })
    const shared = diffieHellman({ privateKey: bobPrivate, publicKey: ephemeral })
    const salt = Buffer.concat([raw(envelope.ephemeralKey), raw(bob.encryptionKey)])
    const key = Buffer.from(hkdfSync("sha256", shared, salt, "peerchat/message/v2", 32))
    const body = Buffer.from(envelope.ciphertext, "base64")
    const decipher = createDecipheriv("chacha20-poly1305", key, raw(envelope.nonce), { authTagLength: 16 })
    decipher.setAuthTag(body.subarray(body.length - 16))
    const aad = Buffer.concat([Buffer.from("peerchat/envelope/v2\n"), raw(envelope.recipientKey), raw(envelope.ephemeralKey)])
    decipher.setAAD(aad, { plaintextLength: body.length - 16 })
    const plaintext = Buffer.concat([decipher.update(body.subarray(0, body.length - 16)), decipher.final()])
    const text = Buffer.from(TEXT)
    const record = recordBytesByHand(alice.record)
    const expected = Buffer.concat([
      Buffer.from("peerchat/message/v2\n"),
      raw("0005"), Buffer.from("alice"),
      raw("0003"), Buffer.from("bob"),
      raw(alice.signingKey),
      u16(record.length), record,
      raw("0000000000000001"),
      raw((1_700_000_123_456).toString(16).padStart(16, "0")),
      raw(text.length.toString(16).padStart(8, "0")), text,
      raw(sealed.signed.signature)
    ])
    expect(plaintext.toString("hex")).toBe(expected.toString("hex"))
  })

  it("the envelope survives JSON and schema decoding, and keeps its id", () => {
    const json = JSON.stringify(sealed.envelope)
    const decoded = Schema.decodeUnknownSync(Envelope)(JSON.parse(json))
    expect(envelopeId(decoded)).toBe(sealed.id)
    expect(succeeded(bob.crypto.open(decoded))).toEqual(sealed.signed)
  })

  it("a relay sees only the recipient's user key, the size and an opaque blob", () => {
    const json = JSON.stringify(sealed.envelope)
    expect(Object.keys(JSON.parse(json)).sort()).toEqual(["ciphertext", "ephemeralKey", "nonce", "recipientKey", "version"])
    expect(sealed.envelope.recipientKey).toBe(userKey(bob.name))
    for (const secret of [
      "alice",
      alice.signingKey,
      alice.encryptionKey,
      alice.identity.nodeId,
      bob.encryptionKey,
      sealed.signed.signature,
      alice.record.signature,
      "127.0.0.1",
      "4001",
      TEXT,
      "meet me",
      toBase64(utf8(TEXT)).slice(0, 12)
    ]) {
      expect(json, secret).not.toContain(secret)
    }
    const body = Buffer.from(ciphertextBytes(sealed.envelope))
    expect(body.indexOf(Buffer.from(TEXT))).toBe(-1)
    expect(body.indexOf(Buffer.from("alice"))).toBe(-1)
    expect(body.indexOf(Buffer.from(alice.signingKey, "hex"))).toBe(-1)
    // The carried record is sealed too: nothing of it shows, its size is all a relay learns.
    expect(body.indexOf(Buffer.from(alice.identity.nodeId, "hex"))).toBe(-1)
    expect(body.indexOf(Buffer.from("127.0.0.1"))).toBe(-1)
    expect(body.indexOf(Buffer.from("peerchat/user-record"))).toBe(-1)
  })

  it("nobody but the recipient can open it", () => {
    expect(failure(carol.crypto.open(sealed.envelope))).toMatchObject({ _tag: "DecryptFailed", reason: "AuthenticationFailed" })
    expect(failure(alice.crypto.open(sealed.envelope))._tag).toBe("DecryptFailed")
  })

  it("altering any byte of the ciphertext, nonce, ephemeral key or recipient key fails decryption", () => {
    const envelope = sealed.envelope
    const tampered: Array<Envelope> = []
    const body = ciphertextBytes(envelope)
    for (let i = 0; i < body.length; i++) {
      const copy = body.slice()
      copy[i] = (copy[i] ?? 0) ^ (i % 2 === 0 ? 0x01 : 0x80)
      tampered.push({ ...envelope, ciphertext: toBase64(copy) as CiphertextBase64 })
    }
    for (let i = 0; i < 12; i++) {
      tampered.push({ ...envelope, nonce: flipHexByte(envelope.nonce, i) as Envelope["nonce"] })
    }
    for (let i = 0; i < 32; i++) {
      tampered.push({ ...envelope, ephemeralKey: flipHexByte(envelope.ephemeralKey, i) as PublicKeyHex })
      tampered.push({ ...envelope, recipientKey: flipHexByte(envelope.recipientKey, i) as Envelope["recipientKey"] })
    }
    // X25519 ignores the top bit of a public key: only the header binding catches this one.
    tampered.push({ ...envelope, ephemeralKey: flipHexByte(envelope.ephemeralKey, 31, 0x80) as PublicKeyHex })
    // Re-addressed to another user.
    tampered.push({ ...envelope, recipientKey: userKey(carol.name) })
    // Truncated: the tag no longer lines up.
    tampered.push({ ...envelope, ciphertext: toBase64(body.subarray(0, body.length - 1)) as CiphertextBase64 })

    for (const candidate of tampered) {
      expect(Either.isRight(Schema.decodeUnknownEither(Envelope)(candidate))).toBe(true)
      expect(failure(bob.crypto.open(candidate))._tag).toBe("DecryptFailed")
    }
    expect(tampered.length).toBe(body.length + 12 + 64 + 3)
  })

  it("an unusable ephemeral key is reported as such", () => {
    const envelope = { ...sealed.envelope, ephemeralKey: "00".repeat(32) as PublicKeyHex }
    expect(failure(bob.crypto.open(envelope))).toMatchObject({ _tag: "DecryptFailed", reason: "BadEphemeralKey" })
  })
})

describe("authenticity", () => {
  it("a message that names alice's key but is signed by mallory is rejected on opening", () => {
    // Mallory's node claims alice's public key, but can only sign with her own private key.
    const impostor = NodeMessageCrypto.make({
      identity: { ...mallory.identity, signingPublicKey: alice.identity.signingPublicKey },
      keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(mallory.encryptionSeed)
    })
    const forged = succeeded(impostor.seal(messageFrom(alice, bob.name), bob.encryptionKey))
    expect(failure(bob.crypto.open(forged.envelope))).toMatchObject({ _tag: "MessageRejected", reason: "BadSignature" })
  })

  it("a message 'from alice' signed with mallory's own key: her record does not fit, alice's stolen one neither", () => {
    const reasonOf = (message: ChatMessage) => {
      const opened = succeeded(bob.crypto.open(succeeded(mallory.crypto.seal(message, bob.encryptionKey)).envelope))
      const verdict = checkedByBob(opened)
      return Either.isLeft(verdict) ? verdict.left.reason : "accepted"
    }
    // Her own record is mallory's, not alice's.
    expect(reasonOf({ ...messageFrom(mallory, bob.name), from: alice.name })).toBe("SenderRecordMismatch")
    // Alice's genuine record, stolen from the directory, names alice's key, not the one that signed.
    expect(reasonOf({ ...messageFrom(mallory, bob.name, TEXT, 1, alice.record), from: alice.name })).toBe("SenderKeyMismatch")
    // A record for the name "alice" that mallory signed herself is self-consistent (anyone can claim a
    // name for their own key): the pin decides, and bob pinned alice.
    const squat = mallory.recordWith({ username: alice.name })
    const selfMade = { ...messageFrom(mallory, bob.name, TEXT, 1, squat), from: alice.name }
    expect(reasonOf(selfMade)).toBe("accepted")
    expect(senderTrust({ carriedKey: squat.signingKey, pin: { signingKey: alice.signingKey }, answer: undefined }))
      .toEqual({ _tag: "KeyChanged", pinnedKey: alice.signingKey })
  })

  it("a carried record that was tampered with is refused, though the message signature is alice's", () => {
    // Alice's record with another address and the old signature: the record no longer verifies.
    const tampered = { ...alice.record, addresses: [{ host: "203.0.113.7", port: 4001 }] }
    const opened = succeeded(bob.crypto.open(succeeded(alice.crypto.seal(messageFrom(alice, bob.name, TEXT, 1, tampered), bob.encryptionKey)).envelope))
    const verdict = checkedByBob(opened)
    expect(Either.isLeft(verdict) && verdict.left).toMatchObject({ reason: "SenderRecordInvalid" })
    expect(Either.isLeft(verdict) && verdict.left.detail).toMatch(/^BadSignature/)
  })

  it("a record swapped into a sealed message after signing breaks the message signature", () => {
    // Whoever could re-encrypt alice's plaintext with another record (alice's own later one) still cannot re-sign it.
    const later = alice.recordWith({ sequence: 2, addresses: [{ host: "198.51.100.1", port: 9 }] })
    const plaintext = sealedPayloadBytes({ ...sealed.signed, senderRecord: later })
    const envelope = encryptByHand(plaintext, bob)
    expect(Either.isRight(Schema.decodeUnknownEither(Envelope)(envelope))).toBe(true)
    expect(failure(bob.crypto.open(envelope))).toMatchObject({ _tag: "MessageRejected", reason: "BadSignature" })
    // The same hand-made encryption of the genuine plaintext opens fine: only the swap broke it.
    expect(succeeded(bob.crypto.open(encryptByHand(sealedPayloadBytes(sealed.signed), bob)))).toEqual(sealed.signed)
  })

  it("a message addressed to someone else is rejected, even when encrypted to the right key", () => {
    const misdirected = succeeded(alice.crypto.seal(messageFrom(alice, carol.name), bob.encryptionKey))
    expect(misdirected.envelope.recipientKey).toBe(userKey(carol.name))
    const opened = succeeded(bob.crypto.open(misdirected.envelope))
    const verdict = checkedByBob(opened)
    expect(Either.isLeft(verdict) && verdict.left.reason).toBe("WrongRecipient")
  })

  it("refuses to seal a message that names another sender key, and to encrypt to an unusable key", () => {
    const exit = Effect.runSyncExit(alice.crypto.seal(messageFrom(bob, carol.name), carol.encryptionKey))
    expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    const lowOrder = "00".repeat(32) as PublicKeyHex
    expect(failure(alice.crypto.seal(messageFrom(alice, bob.name), lowOrder))).toMatchObject({
      _tag: "InvalidRecipientKey",
      recipient: "bob"
    })
  })
})

describe("size limit", () => {
  it("16384 bytes of multibyte text and the largest record seal and open; the envelope is at its documented maximum", () => {
    const longName = "a".repeat(32) as Username
    const sender = party(longName, 5)
    const recipient = party("b".repeat(32), 6)
    const text = "€".repeat(5461) + "a"
    expect(Buffer.byteLength(text)).toBe(16_384)
    // 4 addresses and 3 relays, every host at its longest.
    const largestRecord = sender.recordWith({
      addresses: Array.from({ length: 4 }, (_, i) => ({ host: `h${i}`.padEnd(253, "x"), port: 65535 })),
      relays: Array.from({ length: 3 }, (_, i) => ({
        relayId: `${i}e`.repeat(32) as NodeId,
        address: { host: `r${i}`.padEnd(253, "x"), port: 65535 }
      }))
    })
    const message = Either.getOrThrow(makeChatMessage({
      from: sender.name,
      to: recipient.name,
      senderSigningKey: sender.signingKey,
      senderRecord: largestRecord,
      sequence: Number.MAX_SAFE_INTEGER,
      sentAt: Number.MAX_SAFE_INTEGER,
      text
    }))
    const big = succeeded(sender.crypto.seal(message, recipient.encryptionKey))
    expect(ciphertextBytes(big.envelope).length).toBe(MAX_CIPHERTEXT_BYTES)
    expect(Either.isRight(Schema.decodeUnknownEither(Envelope)(JSON.parse(JSON.stringify(big.envelope))))).toBe(true)
    const opened = succeeded(recipient.crypto.open(big.envelope))
    expect(opened.text).toBe(text)
    expect(opened.senderRecord).toEqual(largestRecord)
  })

  it("16385 bytes are refused with MessageTooLong before anything is sealed", () => {
    const result = makeChatMessage({
      from: alice.name,
      to: bob.name,
      senderSigningKey: alice.signingKey,
      senderRecord: alice.record,
      sequence: 1,
      sentAt: 1,
      text: "😀".repeat(4096) + "!"
    })
    expect(Either.isLeft(result) && result.left).toMatchObject({ _tag: "MessageTooLong", bytes: 16_385, limit: 16_384 })
    // A text smuggled past the type by a cast is a defect, not a sealed message.
    const smuggled = { ...messageFrom(alice, bob.name), text: "x".repeat(16_385) as ChatMessage["text"] }
    const exit = Effect.runSyncExit(alice.crypto.seal(smuggled, bob.encryptionKey))
    expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
  })
})

describe("message ids", () => {
  it("the same envelope always has the same id; a re-encryption gets a new one", () => {
    const unseeded = NodeMessageCrypto.make({
      identity: alice.identity,
      keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(alice.encryptionSeed)
    })
    const fresh = succeeded(unseeded.seal(messageFrom(alice, bob.name), bob.encryptionKey))
    expect(fresh.id).not.toBe(sealed.id)
    expect(succeeded(bob.crypto.open(fresh.envelope))).toEqual(sealed.signed)
    expect(envelopeId(sealed.envelope)).toBe(sealed.id)
    expect(envelopeId({ ...sealed.envelope })).toBe(sealed.id)
    const again = succeeded(alice.crypto.seal(messageFrom(alice, bob.name), bob.encryptionKey))
    expect(again.signed).toEqual(sealed.signed) // Ed25519 is deterministic
    expect(again.envelope.ephemeralKey).not.toBe(sealed.envelope.ephemeralKey)
    expect(again.envelope.ciphertext).not.toBe(sealed.envelope.ciphertext)
    expect(again.id).not.toBe(sealed.id)
  })

  it("an injected random source makes sealing reproducible (simulation)", () => {
    const seeded = (seed: number) =>
      NodeMessageCrypto.make({
        identity: alice.identity,
        keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(alice.encryptionSeed),
        randomBytes: seededRandomBytes(seed)
      })
    const first = succeeded(seeded(9).seal(messageFrom(alice, bob.name), bob.encryptionKey))
    const second = succeeded(seeded(9).seal(messageFrom(alice, bob.name), bob.encryptionKey))
    expect(second).toEqual(first)
    expect(succeeded(bob.crypto.open(first.envelope))).toEqual(first.signed)
  })
})

describe("receipts", () => {
  const receipt: Receipt = { version: 1, messageId: sealed.id, recipient: bob.name, receivedAt: 1_700_000_200_000 }

  it("bob's signed receipt verifies against bob's record", () => {
    const signed = succeeded(bob.crypto.signReceipt(receipt))
    expect(succeeded(alice.crypto.verifyReceipt(signed, bob.record))).toEqual(signed)
  })

  it("a tampered or foreign receipt does not", () => {
    const signed = succeeded(bob.crypto.signReceipt(receipt))
    const reasonOf = (candidate: typeof signed, record = bob.record) =>
      failure(alice.crypto.verifyReceipt(candidate, record)).reason
    expect(reasonOf({ ...signed, receivedAt: signed.receivedAt + 1 })).toBe("BadSignature")
    const otherId = succeeded(alice.crypto.seal(messageFrom(alice, bob.name), bob.encryptionKey)).id
    expect(reasonOf({ ...signed, messageId: otherId })).toBe("BadSignature")
    expect(reasonOf(succeeded(mallory.crypto.signReceipt(receipt)))).toBe("BadSignature")
    expect(reasonOf(succeeded(mallory.crypto.signReceipt({ ...receipt, recipient: mallory.name })))).toBe("WrongRecipient")
    expect(reasonOf(signed, mallory.record)).toBe("WrongRecipient")
  })
})

describe("layers", () => {
  it("refuses a key agreement for another key than the identity's", () => {
    expect(() =>
      NodeMessageCrypto.make({ identity: alice.identity, keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(bob.encryptionSeed) })
    ).toThrow(RangeError)
  })

  it.effect("layerFromSeeds and layer (Identity + KeyAgreement) build working services", () =>
    Effect.gen(function*() {
      const fromSeeds = yield* MessageCrypto.pipe(
        Effect.provide(NodeMessageCrypto.layerFromSeeds(bob.signingSeed, bob.encryptionSeed))
      )
      expect(yield* fromSeeds.open(sealed.envelope)).toEqual(sealed.signed)

      const composed = NodeMessageCrypto.layer.pipe(
        Layer.provide(IdentityStore.layerFromSeeds(bob.signingSeed, bob.encryptionSeed)),
        Layer.provide(NodeMessageCrypto.keyAgreementLayerFromSeed(bob.encryptionSeed))
      )
      const live = yield* MessageCrypto.pipe(Effect.provide(composed))
      expect(yield* live.open(sealed.envelope)).toEqual(sealed.signed)

      const mismatched = NodeMessageCrypto.layer.pipe(
        Layer.provide(IdentityStore.layerFromSeeds(bob.signingSeed, bob.encryptionSeed)),
        Layer.provide(NodeMessageCrypto.keyAgreementLayerFromSeed(carol.encryptionSeed))
      )
      const exit = yield* Effect.exit(MessageCrypto.pipe(Effect.provide(mismatched)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))
})

describe("keys from a data directory", () => {
  it.scoped("give an identity and a key agreement for the same X25519 key, stable across restarts, that open sealed mail", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("keys")
      const load = Effect.gen(function*() {
        const identity = yield* Identity
        const keyAgreement = yield* KeyAgreement
        return { identity, keyAgreement }
      }).pipe(Effect.provide(NodeMessageCrypto.keysLayerFromDataDir(dir)), Effect.provide(NodeContext.layer))
      const first = yield* load
      const again = yield* load
      expect(toHex(first.keyAgreement.encryptionPublicKey)).toBe(toHex(first.identity.encryptionPublicKey))
      expect(again.identity.nodeId).toBe(first.identity.nodeId)
      expect(toHex(again.keyAgreement.encryptionPublicKey)).toBe(toHex(first.keyAgreement.encryptionPublicKey))

      // Mail sealed to this node's published key opens with the key agreement loaded from disk.
      const dave = NodeMessageCrypto.make({ identity: again.identity, keyAgreement: again.keyAgreement })
      const daveName = "dave" as Username
      const envelope = succeeded(alice.crypto.seal(messageFrom(alice, daveName), toHex(first.identity.encryptionPublicKey) as PublicKeyHex)).envelope
      const opened = yield* dave.open(envelope)
      expect(opened.text).toBe(TEXT)
      expect(opened.from).toBe(alice.name)
    }))
})
