import { describe, expect, it } from "@effect/vitest"
import { solvedClaim, testClaimRules } from "../support/claims.js"
import { Either, FastCheck as fc, Schema } from "effect"
import { createPrivateKey, createPublicKey, type KeyObject, sign as cryptoSign, verify as cryptoVerify } from "node:crypto"
import { toHex } from "../../src/core/Bytes.js"
import type { Address } from "../../src/core/Contact.js"
import { type NodeId, nodeIdFromPublicKey } from "../../src/core/Id.js"
import { sha256 } from "../../src/core/Sha256.js"
import type { Username } from "../../src/core/Username.js"
import {
  acceptUserRecord,
  defaultRecordLimits,
  isRecordLive,
  type PublicKeyHex,
  RecordRejected,
  type SignatureHex,
  signUserRecord,
  type UnsignedUserRecord,
  UserRecord,
  userRecordSigningBytes,
  type VerifySignature,
  withoutSignature
} from "../../src/core/UserRecord.js"
import { PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

// --- Real Ed25519 from node:crypto, deterministic keys from fixed seeds (tests only). ---

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")

interface Identity {
  readonly privateKey: KeyObject
  readonly publicKey: Uint8Array
  readonly signingKey: PublicKeyHex
  readonly nodeId: NodeId
  readonly sign: (message: Uint8Array) => Uint8Array
}

const identity = (seed: number): Identity => {
  const secret = seededRandomBytes(seed)(32)
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, secret]),
    format: "der",
    type: "pkcs8"
  })
  const jwk = createPublicKey(privateKey).export({ format: "jwk" })
  const publicKey = new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"))
  return {
    privateKey,
    publicKey,
    signingKey: toHex(publicKey) as PublicKeyHex,
    nodeId: nodeIdFromPublicKey(publicKey),
    sign: (message) => new Uint8Array(cryptoSign(null, message, privateKey))
  }
}

const verify: VerifySignature = (publicKey, message, signature) =>
  cryptoVerify(
    null,
    message,
    createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
      format: "jwk"
    }),
    signature
  )

const alice = identity(1)
const mallory = identity(2)
const ENCRYPTION_KEY = toHex(seededRandomBytes(3)(32)) as PublicKeyHex
const NOW = 1_700_000_000_000
const HOUR = 60 * 60 * 1000

const unsignedFor = (who: Identity, overrides: Partial<UnsignedUserRecord> = {}): UnsignedUserRecord => ({
  username: "alice" as Username,
  signingKey: who.signingKey,
  encryptionKey: ENCRYPTION_KEY,
  nodeId: who.nodeId,
  addresses: [{ host: "192.0.2.1", port: 4001 }],
  sequence: 1,
  issuedAt: NOW - HOUR,
  expiresAt: NOW + 24 * HOUR,
  claim: solvedClaim("alice", who.signingKey),
  ...overrides
})

const signed = (who: Identity, overrides: Partial<UnsignedUserRecord> = {}): UserRecord =>
  signUserRecord(unsignedFor(who, overrides), who.sign)

const reasonOf = (result: Either.Either<unknown, RecordRejected>): string =>
  Either.isLeft(result) ? result.left.reason : `accepted: ${String(Either.getOrUndefined(result))}`

const accept = (incoming: UserRecord, stored?: UserRecord, now = NOW) =>
  acceptUserRecord({ incoming, stored, now, verify, claim: testClaimRules })

describe("UserRecord signing bytes", () => {
  it("follow the documented layout exactly", () => {
    const record = unsignedFor(alice, {
      addresses: [
        { host: "a.example", port: 1 },
        { host: "::1", port: 65535 }
      ],
      sequence: 2 ** 40 + 5,
      issuedAt: 7,
      expiresAt: 2 ** 53 - 1,
      claim: { difficulty: 11, nonce: 2 ** 33 + 1 }
    })
    const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff])
    const u64 = (n: number) => {
      const out = Buffer.alloc(8)
      out.writeBigUInt64BE(BigInt(n))
      return out
    }
    const expected = Buffer.concat([
      Buffer.from("peerchat/user-record/v2\n", "ascii"),
      u16(5),
      Buffer.from("alice"),
      Buffer.from(alice.signingKey, "hex"),
      Buffer.from(ENCRYPTION_KEY, "hex"),
      Buffer.from(alice.nodeId, "hex"),
      Buffer.from([2]),
      u16(9),
      Buffer.from("a.example"),
      u16(1),
      u16(3),
      Buffer.from("::1"),
      u16(65535),
      u64(2 ** 40 + 5),
      u64(7),
      u64(2 ** 53 - 1),
      Buffer.from([11]),
      u64(2 ** 33 + 1)
    ])
    expect(toHex(userRecordSigningBytes(record))).toBe(expected.toString("hex"))
    // The prefix is 24 bytes; the signature field of a signed record is not covered.
    expect(userRecordSigningBytes(signUserRecord(record, alice.sign))).toEqual(userRecordSigningBytes(record))
  })

  const arbHex32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(toHex)
  const arbAddress: fc.Arbitrary<Address> = fc.record({
    host: fc.stringMatching(/^[A-Za-z0-9.:_%-]{1,12}$/),
    port: fc.integer({ min: 0, max: 65535 })
  })
  const arbTime = fc.oneof(fc.nat(1000), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }))
  const arbUnsigned: fc.Arbitrary<UnsignedUserRecord> = fc.record({
    username: fc.stringMatching(/^[a-z0-9_.-]{3,8}$/).map((name) => name as Username),
    signingKey: arbHex32.map((hex) => hex as PublicKeyHex),
    encryptionKey: arbHex32.map((hex) => hex as PublicKeyHex),
    nodeId: arbHex32.map((hex) => hex as NodeId),
    addresses: fc.array(arbAddress, { minLength: 1, maxLength: 4 }),
    sequence: arbTime,
    claim: fc.record({ difficulty: fc.integer({ min: 0, max: 64 }), nonce: arbTime }),
    issuedAt: arbTime,
    expiresAt: arbTime
  })
  const FIELDS = [
    "username",
    "signingKey",
    "encryptionKey",
    "nodeId",
    "addresses",
    "sequence",
    "issuedAt",
    "expiresAt"
  ] as const

  // An independent parser of the documented format: if it recovers every record, the encoding is injective.
  const parseSigningBytes = (bytes: Uint8Array): UnsignedUserRecord => {
    const buffer = Buffer.from(bytes)
    let offset = 0
    const take = (n: number) => {
      const out = buffer.subarray(offset, offset + n)
      if (out.length !== n) throw new Error("truncated")
      offset += n
      return out
    }
    const u16 = () => take(2).readUInt16BE(0)
    const text = () => take(u16()).toString("utf8")
    const u64 = () => Number(take(8).readBigUInt64BE(0))
    expect(take(24).toString("ascii")).toBe("peerchat/user-record/v2\n")
    const username = text() as Username
    const signingKey = take(32).toString("hex") as PublicKeyHex
    const encryptionKey = take(32).toString("hex") as PublicKeyHex
    const nodeId = take(32).toString("hex") as NodeId
    const count = take(1).readUInt8(0)
    const addresses: Array<Address> = []
    for (let i = 0; i < count; i++) addresses.push({ host: text(), port: u16() })
    const sequence = u64()
    const issuedAt = u64()
    const expiresAt = u64()
    const claim = { difficulty: take(1).readUInt8(0), nonce: u64() }
    const record = { username, signingKey, encryptionKey, nodeId, addresses, sequence, issuedAt, expiresAt, claim }
    expect(offset).toBe(bytes.length)
    return record
  }

  it.prop(
    "can be parsed back to the record (so no two records share them)",
    [arbUnsigned],
    ([record]) => {
      expect(parseSigningBytes(userRecordSigningBytes(record))).toEqual(record)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it.prop(
    "differ whenever the records differ, including records that share most fields",
    [arbUnsigned, arbUnsigned, fc.array(fc.boolean(), { minLength: FIELDS.length, maxLength: FIELDS.length })],
    ([a, b, takeFromB]) => {
      const mixed: Record<string, unknown> = { ...a }
      FIELDS.forEach((field, i) => {
        if (takeFromB[i] === true) mixed[field] = b[field]
      })
      const c = mixed as unknown as UnsignedUserRecord
      const same = FIELDS.every((field) => JSON.stringify(a[field]) === JSON.stringify(c[field]))
      expect(toHex(userRecordSigningBytes(a)) === toHex(userRecordSigningBytes(c))).toBe(same)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )
})

describe("UserRecord schema", () => {
  const decode = Schema.decodeUnknownEither(UserRecord)
  const valid = signed(alice)

  it("accepts a well-formed record and round-trips it", () => {
    const decoded = decode(JSON.parse(JSON.stringify(valid)))
    expect(Either.isRight(decoded) && decoded.right).toEqual(valid)
  })

  const malformed: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
    ["short signing key", { signingKey: valid.signingKey.slice(2) }],
    ["long encryption key", { encryptionKey: `${valid.encryptionKey}00` }],
    ["upper-case hex", { signingKey: valid.signingKey.toUpperCase() }],
    ["short signature", { signature: valid.signature.slice(2) }],
    ["non-hex signature", { signature: `${valid.signature.slice(2)}zz` }],
    ["no addresses", { addresses: [] }],
    ["five addresses", { addresses: Array.from({ length: 5 }, (_, i) => ({ host: "h", port: i })) }],
    ["bad port", { addresses: [{ host: "h", port: 70000 }] }],
    ["negative sequence", { sequence: -1 }],
    ["fractional sequence", { sequence: 1.5 }],
    ["unsafe integer time", { expiresAt: 2 ** 53 }],
    ["negative issue time", { issuedAt: -5 }],
    ["bad username", { username: "Alice!" }],
    ["missing signature", { signature: undefined }]
  ]
  for (const [name, patch] of malformed) {
    it(`rejects ${name}`, () => {
      expect(Either.isLeft(decode({ ...valid, ...patch }))).toBe(true)
    })
  }
})

describe("signUserRecord", () => {
  it("produces a signature that verifies, and any single-field tamper breaks it", () => {
    const record = signed(alice, {
      addresses: [
        { host: "192.0.2.1", port: 4001 },
        { host: "2001:db8::1", port: 4001 }
      ]
    })
    const signatureBytes = Buffer.from(record.signature, "hex")
    expect(verify(alice.publicKey, userRecordSigningBytes(record), signatureBytes)).toBe(true)
    const other = toHex(seededRandomBytes(9)(32))
    const tampers: ReadonlyArray<readonly [string, Partial<UnsignedUserRecord>]> = [
      ["username", { username: "alicf" as Username }],
      ["signingKey", { signingKey: mallory.signingKey }],
      ["encryptionKey", { encryptionKey: other as PublicKeyHex }],
      ["nodeId", { nodeId: other as NodeId }],
      ["address host", { addresses: [{ host: "192.0.2.2", port: 4001 }, { host: "2001:db8::1", port: 4001 }] }],
      ["address port", { addresses: [{ host: "192.0.2.1", port: 4002 }, { host: "2001:db8::1", port: 4001 }] }],
      ["address order", { addresses: [{ host: "2001:db8::1", port: 4001 }, { host: "192.0.2.1", port: 4001 }] }],
      ["dropped address", { addresses: [{ host: "192.0.2.1", port: 4001 }] }],
      ["sequence", { sequence: 2 }],
      ["issuedAt", { issuedAt: record.issuedAt + 1 }],
      ["expiresAt", { expiresAt: record.expiresAt + 1 }]
    ]
    for (const [field, patch] of tampers) {
      const tampered: UserRecord = { ...record, ...patch }
      expect([field, verify(alice.publicKey, userRecordSigningBytes(tampered), signatureBytes)]).toEqual([field, false])
      expect([field, Either.isLeft(accept(tampered))]).toEqual([field, true])
    }
    // A flipped signature bit is caught too.
    const flipped = `${record.signature.slice(0, -1)}${record.signature.endsWith("0") ? "1" : "0"}` as SignatureHex
    expect(reasonOf(accept({ ...record, signature: flipped }))).toBe("BadSignature")
  })

  it("covers the relays of a node behind a NAT: a relay swapped, added or dropped breaks the signature", () => {
    const relay = (n: number, host: string) => ({ relayId: toHex(seededRandomBytes(20 + n)(32)) as NodeId, address: { host, port: 4242 } })
    const first = relay(1, "198.51.100.1")
    const second = relay(2, "198.51.100.2")
    const record = signed(alice, { addresses: [], relays: [first, second] })
    expect(Either.isRight(accept(record))).toBe(true)
    const signatureBytes = Buffer.from(record.signature, "hex")
    const tampers: ReadonlyArray<readonly [string, Partial<UnsignedUserRecord>]> = [
      // The attack that matters: pointing callers at a relay the attacker runs.
      ["relay swapped", { relays: [relay(3, "203.0.113.66"), second] }],
      ["relay id", { relays: [{ ...first, relayId: relay(4, "x").relayId }, second] }],
      ["relay port", { relays: [{ ...first, address: { host: "198.51.100.1", port: 4243 } }, second] }],
      ["relay added", { relays: [first, second, relay(5, "203.0.113.67")] }],
      ["relay dropped", { relays: [first] }],
      ["relays replaced by an address", { relays: undefined, addresses: [{ host: "203.0.113.66", port: 4242 }] }]
    ]
    for (const [field, patch] of tampers) {
      const tampered = { ...record, ...patch } as UserRecord
      expect([field, verify(alice.publicKey, userRecordSigningBytes(tampered), signatureBytes)]).toEqual([field, false])
    }
    // A record must say where to reach its owner.
    expect(() => userRecordSigningBytes({ ...unsignedFor(alice), addresses: [] })).toThrow(RangeError)
    expect(Either.isLeft(Schema.decodeUnknownEither(UserRecord)({ ...record, relays: undefined }))).toBe(true)
  })

  it("refuses a signer that does not return 64 bytes", () => {
    expect(() => signUserRecord(unsignedFor(alice), () => new Uint8Array(10))).toThrow(RangeError)
  })

  it("withoutSignature keeps exactly the signed fields", () => {
    const record = signed(alice)
    expect(Object.keys(withoutSignature(record)).sort()).toEqual(
      ["addresses", "claim", "encryptionKey", "expiresAt", "issuedAt", "nodeId", "sequence", "signingKey", "username"]
    )
  })
})

describe("acceptUserRecord", () => {
  it("a name claim must carry enough work, bound to its name and key, checked before the record is believed", () => {
    expect(reasonOf(accept(signed(alice)))).toBe("accepted: Stored")
    // Below the storer's minimum difficulty: refused before any hashing or signature check.
    const easy = signed(alice, { claim: solvedClaim("alice", alice.signingKey, testClaimRules.minDifficulty - 1) })
    let hashed = 0
    const counting = { ...testClaimRules, hash: (input: Uint8Array) => (hashed++, testClaimRules.hash(input)) }
    expect(reasonOf(acceptUserRecord({ incoming: easy, now: NOW, verify, claim: counting }))).toBe("ClaimTooEasy")
    expect(hashed).toBe(0)
    // A nonce that does not solve the challenge.
    const proof = solvedClaim("alice", alice.signingKey)
    expect(reasonOf(accept(signed(alice, { claim: { ...proof, nonce: proof.nonce + 1 } })))).not.toBe("accepted: Stored")
    // Work done for one name or one key is worth nothing for another (nor is a stolen claim).
    expect(reasonOf(accept(signed(alice, { claim: solvedClaim("bob", alice.signingKey) })))).toBe("ClaimWorkInvalid")
    expect(reasonOf(accept(signed(alice, { claim: solvedClaim("alice", mallory.signingKey) })))).toBe("ClaimWorkInvalid")
    // The claim is signed: changing it in transit breaks the signature.
    const record = signed(alice)
    expect(reasonOf(accept({ ...record, claim: { difficulty: 40, nonce: 1 } }))).toBe("BadSignature")
  })

  const { maxClockSkewMs, maxLifetimeMs } = defaultRecordLimits

  it("stores a valid record when nothing is stored", () => {
    expect(reasonOf(accept(signed(alice)))).toBe("accepted: Stored")
  })

  it("NodeIdMismatch: the node id is not the hash of the signing key", () => {
    const record = signed(alice, { nodeId: mallory.nodeId })
    expect(reasonOf(accept(record))).toBe("NodeIdMismatch")
    // It is checked first, before the signature.
    expect(reasonOf(accept({ ...record, sequence: 99 }))).toBe("NodeIdMismatch")
  })

  it("honours a custom hash for the node id", () => {
    const hash = (data: Uint8Array) => sha256(sha256(data))
    const record = signed(alice, { nodeId: nodeIdFromPublicKey(alice.publicKey, hash) })
    expect(reasonOf(acceptUserRecord({ incoming: record, now: NOW, verify, hash, claim: testClaimRules }))).toBe("accepted: Stored")
    expect(reasonOf(accept(record))).toBe("NodeIdMismatch")
  })

  it("BadSignature: signed by another key, or the verifier throws", () => {
    const forged = signUserRecord(unsignedFor(alice), mallory.sign)
    expect(reasonOf(accept(forged))).toBe("BadSignature")
    const throwing: VerifySignature = () => {
      throw new Error("not a curve point")
    }
    expect(reasonOf(acceptUserRecord({ incoming: signed(alice), now: NOW, verify: throwing, claim: testClaimRules }))).toBe("BadSignature")
  })

  it("BadSignature is reported before the time checks", () => {
    const forged = signUserRecord(unsignedFor(alice, { expiresAt: NOW - 1 }), mallory.sign)
    expect(reasonOf(accept(forged))).toBe("BadSignature")
  })

  it("Expired: expiresAt must be after now", () => {
    expect(reasonOf(accept(signed(alice, { expiresAt: NOW })))).toBe("Expired")
    expect(reasonOf(accept(signed(alice, { expiresAt: NOW + 1 })))).toBe("accepted: Stored")
    expect(isRecordLive(signed(alice, { expiresAt: NOW }), NOW)).toBe(false)
    expect(isRecordLive(signed(alice, { expiresAt: NOW + 1 }), NOW)).toBe(true)
  })

  it("IssuedInFuture: issuedAt may be at most the clock skew ahead", () => {
    const atLimit = signed(alice, { issuedAt: NOW + maxClockSkewMs, expiresAt: NOW + HOUR })
    expect(reasonOf(accept(atLimit))).toBe("accepted: Stored")
    const beyond = signed(alice, { issuedAt: NOW + maxClockSkewMs + 1, expiresAt: NOW + HOUR })
    expect(reasonOf(accept(beyond))).toBe("IssuedInFuture")
  })

  it("LifetimeTooLong: the lifetime must be positive and at most the maximum", () => {
    const atLimit = signed(alice, { issuedAt: NOW - HOUR, expiresAt: NOW - HOUR + maxLifetimeMs })
    expect(reasonOf(accept(atLimit))).toBe("accepted: Stored")
    const tooLong = signed(alice, { issuedAt: NOW - HOUR, expiresAt: NOW - HOUR + maxLifetimeMs + 1 })
    expect(reasonOf(accept(tooLong))).toBe("LifetimeTooLong")
    const backwards = signed(alice, { issuedAt: NOW + 60_000, expiresAt: NOW + 60_000 })
    expect(reasonOf(accept(backwards))).toBe("LifetimeTooLong")
  })

  it("applies custom limits", () => {
    const record = signed(alice, { issuedAt: NOW - HOUR, expiresAt: NOW + HOUR })
    const strict = acceptUserRecord({ incoming: record, now: NOW, verify, claim: testClaimRules, limits: { maxLifetimeMs: HOUR } })
    expect(reasonOf(strict)).toBe("LifetimeTooLong")
  })

  it("KeyConflict: a live name cannot be taken by another key, whatever its sequence", () => {
    const stored = signed(alice)
    const takeover = signed(mallory, { sequence: 1000 })
    expect(reasonOf(accept(takeover, stored))).toBe("KeyConflict")
  })

  it("an expired claim can be taken over by another key", () => {
    const stored = signed(alice, { issuedAt: NOW - 3 * HOUR, expiresAt: NOW - HOUR })
    const takeover = signed(mallory, { sequence: 0 })
    expect(reasonOf(accept(takeover, stored))).toBe("accepted: Stored")
  })

  it("Unchanged: the same record again", () => {
    const stored = signed(alice)
    expect(reasonOf(accept(stored, stored))).toBe("accepted: Unchanged")
    expect(reasonOf(accept({ ...stored }, stored))).toBe("accepted: Unchanged")
  })

  it("StaleSequence: a live stored record can only be replaced by a higher sequence", () => {
    const stored = signed(alice, { sequence: 5 })
    expect(reasonOf(accept(signed(alice, { sequence: 4 }), stored))).toBe("StaleSequence")
    // Same sequence, different content (equivocation) is refused too.
    const sameSequence = signed(alice, { sequence: 5, addresses: [{ host: "192.0.2.9", port: 1 }] })
    expect(reasonOf(accept(sameSequence, stored))).toBe("StaleSequence")
    expect(reasonOf(accept(signed(alice, { sequence: 6 }), stored))).toBe("accepted: Stored")
  })

  it("an expired stored record does not constrain the sequence", () => {
    const stored = signed(alice, { sequence: 5, issuedAt: NOW - 3 * HOUR, expiresAt: NOW - HOUR })
    expect(reasonOf(accept(signed(alice, { sequence: 1 }), stored))).toBe("accepted: Stored")
  })

  it("gives a readable message for every reason", () => {
    const reasons = [
      "BadSignature",
      "NodeIdMismatch",
      "Expired",
      "IssuedInFuture",
      "LifetimeTooLong",
      "StaleSequence",
      "KeyConflict"
    ] as const
    const messages = reasons.map((reason) => new RecordRejected({ username: "alice", reason }).message)
    for (const text of messages) expect(text).toMatch(/^user record for "alice" rejected: .{10,}/)
    expect(new Set(messages).size).toBe(reasons.length)
  })
})
