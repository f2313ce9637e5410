/**
 * Tests of the directory's conflict rule and contact rule, read as a
 * security reviewer would: records are real Ed25519-signed user records
 * (node:crypto keys from fixed seeds), expectations come from an
 * independent oracle written from the module doc (grouping by key, newest
 * by sequence, issue time, then signature as a number; fingerprints and the
 * rival slot recomputed with node:crypto), and the attacks are spelled out:
 * a rival key with sequence 2^53 - 1, a rival held by more nodes, shuffled
 * inputs, and fingerprints of keys that claim nothing.
 */
import { solvedClaim, testClaimRules } from "../support/claims.js"
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { createHash, createPrivateKey, createPublicKey, sign as cryptoSign, verify as cryptoVerify } from "node:crypto"
import { toHex } from "../../src/core/Bytes.js"
import type { Address } from "../../src/core/Contact.js"
import { type Key, type NodeId, nodeIdFromPublicKey } from "../../src/core/Id.js"
import {
  type Claimant,
  claimantsOf,
  claimantWithKey,
  chooseContact,
  type ContactChoice,
  isNewerRecord,
  type NameAnswer,
  resolveClaims,
  rivalSlotKey
} from "../../src/core/NameResolution.js"
import { type ContactPin, type Fingerprint, makePin, type PinSource } from "../../src/core/Pinning.js"
import type { HashFunction } from "../../src/core/Sha256.js"
import {
  acceptUserRecord,
  type PublicKeyHex,
  signUserRecord,
  type UserRecord,
  type VerifySignature
} from "../../src/core/UserRecord.js"
import { type Username, userKey } from "../../src/core/Username.js"
import { arbKey, PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

// ---------------------------------------------------------------------------
// Real Ed25519 identities from fixed seeds (node:crypto, tests only)

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")

interface TestIdentity {
  readonly name: string
  readonly signingKey: PublicKeyHex
  readonly nodeId: NodeId
  readonly sign: (message: Uint8Array) => Uint8Array
}

const identity = (name: string, seed: number): TestIdentity => {
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seededRandomBytes(seed)(32)]),
    format: "der",
    type: "pkcs8"
  })
  const jwk = createPublicKey(privateKey).export({ format: "jwk" })
  const publicKey = new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"))
  return {
    name,
    signingKey: toHex(publicKey) as PublicKeyHex,
    nodeId: nodeIdFromPublicKey(publicKey),
    sign: (message) => new Uint8Array(cryptoSign(null, message, privateKey))
  }
}

const verify: VerifySignature = (publicKey, message, signature) =>
  cryptoVerify(
    null,
    message,
    createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") }, format: "jwk" }),
    signature
  )

const alice = identity("alice", 101)
const mallory = identity("mallory", 202)
const eve = identity("eve", 303)
const trent = identity("trent", 404)
/** Claims nothing anywhere: a key that is pinned or typed but absent from every answer. */
const bob = identity("bob", 505)
const IDENTITIES = [alice, mallory, eve, trent, bob] as const

const NAME = "alice" as Username
const NOW = 1_700_000_000_000
const HOUR = 3_600_000
const ENCRYPTION_KEY = toHex(seededRandomBytes(9)(32)) as PublicKeyHex

/** A record for the name "alice" signed by `who`. */
const record = (
  who: TestIdentity,
  fields: { readonly sequence?: number; readonly issuedAt?: number; readonly port?: number } = {}
): UserRecord =>
  signUserRecord(
    {
      username: NAME,
      signingKey: who.signingKey,
      encryptionKey: ENCRYPTION_KEY,
      nodeId: who.nodeId,
      addresses: [{ host: "192.0.2.7", port: fields.port ?? 4001 } satisfies Address],
      sequence: fields.sequence ?? 1,
      issuedAt: fields.issuedAt ?? NOW - HOUR,
      expiresAt: (fields.issuedAt ?? NOW - HOUR) + 24 * HOUR,
      claim: solvedClaim(NAME, who.signingKey)
    },
    who.sign
  )

// ---------------------------------------------------------------------------
// Independent oracles

const oracleFingerprint = (key: string): Fingerprint =>
  createHash("sha256").update("peerchat/fingerprint/v1\n").update(Buffer.from(key, "hex")).digest("hex").slice(
    0,
    32
  ) as Fingerprint

const oracleRivalSlot = (key: string): string =>
  createHash("sha256").update("peerchat/rival-claim/v1\n").update(Buffer.from(key, "hex")).digest("hex")

const nodeSha256: HashFunction = (data) => new Uint8Array(createHash("sha256").update(data).digest())

/** Newer by the doc: higher sequence, then later issue, then the larger signature read as a number. */
const oracleNewer = (a: UserRecord, b: UserRecord): boolean => {
  if (a.sequence !== b.sequence) return a.sequence > b.sequence
  if (a.issuedAt !== b.issuedAt) return a.issuedAt > b.issuedAt
  return BigInt(`0x${a.signature}`) > BigInt(`0x${b.signature}`)
}

const hexOrder = (a: string, b: string): number => {
  const x = BigInt(`0x${a}`)
  const y = BigInt(`0x${b}`)
  return x < y ? -1 : x > y ? 1 : 0
}

/** The conflict rule, from the module doc, by brute force. */
const oracleResolve = (records: ReadonlyArray<UserRecord>): NameAnswer => {
  const keys = Array.from(new Set(records.map((r) => r.signingKey)))
  const claimants: Array<Claimant> = keys.map((key) => {
    const mine = records.filter((r) => r.signingKey === key)
    let newest = mine[0] as UserRecord
    for (const r of mine) if (oracleNewer(r, newest)) newest = r
    return { record: newest, holders: mine.length }
  })
  if (claimants.length === 0) return { _tag: "Unclaimed" }
  if (claimants.length === 1) {
    const only = claimants[0] as Claimant
    return { _tag: "Owner", record: only.record, holders: only.holders }
  }
  claimants.sort((a, b) => b.holders - a.holders || hexOrder(a.record.signingKey, b.record.signingKey))
  return { _tag: "Conflict", claimants }
}

const pinOf = (who: TestIdentity, source: PinSource = "first-use"): ContactPin =>
  makePin({ username: NAME, signingKey: who.signingKey, pinnedAt: NOW - 10 * HOUR, source })

const use = (choice: ContactChoice): Extract<ContactChoice, { _tag: "Use" }> => {
  if (choice._tag !== "Use") throw new Error(`expected Use, got ${choice._tag}`)
  return choice
}

/** Deterministic Fisher-Yates with a seeded byte stream. */
const shuffle = <A>(items: ReadonlyArray<A>, seed: number): Array<A> => {
  const bytes = seededRandomBytes(seed)
  const out = items.slice()
  for (let i = out.length - 1; i > 0; i--) {
    const b = bytes(4)
    const j = (((b[0] as number) << 24) | ((b[1] as number) << 16) | ((b[2] as number) << 8) | (b[3] as number)) >>>
      0
    const at = j % (i + 1)
    ;[out[i], out[at]] = [out[at] as A, out[i] as A]
  }
  return out
}

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

// ---------------------------------------------------------------------------
// Fixtures

const alice1 = record(alice, { sequence: 1 })
const alice2 = record(alice, { sequence: 2 })
const alice3 = record(alice, { sequence: 3 })
const HOSTILE_MAX = record(mallory, { sequence: Number.MAX_SAFE_INTEGER, issuedAt: NOW })
const eve1 = record(eve, { sequence: 1 })

/**
 * A pool for properties: per identity, several sequences, issue times, and
 * two records with one sequence and issue time (different addresses, so
 * different signatures) to exercise every tie-break.
 */
const POOL: ReadonlyArray<UserRecord> = [alice, mallory, eve, trent].flatMap((who) => [
  record(who, { sequence: 1 }),
  record(who, { sequence: 2 }),
  record(who, { sequence: 2, issuedAt: NOW - HOUR / 2 }),
  record(who, { sequence: 5, issuedAt: NOW - 2 * HOUR, port: 5001 }),
  record(who, { sequence: 5, issuedAt: NOW - 2 * HOUR, port: 5002 }),
  record(who, { sequence: 5, issuedAt: NOW - 2 * HOUR, port: 5003 }),
  ...(who === mallory ? [record(who, { sequence: Number.MAX_SAFE_INTEGER, issuedAt: NOW })] : [])
])

const arbRecords = fc.array(fc.nat({ max: POOL.length - 1 }), { maxLength: 14 }).map((indices) =>
  indices.map((i) => POOL[i] as UserRecord)
)
const arbIdentity = fc.constantFrom(...IDENTITIES)
const arbPin: fc.Arbitrary<ContactPin | undefined> = fc.option(
  fc.tuple(arbIdentity, fc.constantFrom<PinSource>("first-use", "verified", "trusted")).map(([who, source]) =>
    pinOf(who, source)
  ),
  { nil: undefined }
)
const arbRequested: fc.Arbitrary<Fingerprint | undefined> = fc.option(
  fc.oneof(
    arbIdentity.map((who) => oracleFingerprint(who.signingKey)),
    fc.uint8Array({ minLength: 16, maxLength: 16 }).map((bytes) => toHex(bytes) as Fingerprint)
  ),
  { nil: undefined }
)

// ---------------------------------------------------------------------------

describe("fixtures", () => {
  it("are real, valid, distinct signed records", () => {
    const all = [...POOL, alice1, alice2, alice3, HOSTILE_MAX, eve1]
    for (const r of all) {
      expect(acceptUserRecord({ incoming: r, now: NOW, verify, claim: testClaimRules })).toEqual(Either.right("Stored"))
    }
    expect(new Set(POOL.map((r) => r.signature)).size).toBe(POOL.length)
    expect(new Set(IDENTITIES.map((who) => who.signingKey)).size).toBe(IDENTITIES.length)
  })
})

describe("isNewerRecord", () => {
  it("prefers the higher sequence, then the later issue time, then the larger signature", () => {
    expect(isNewerRecord(alice2, alice1)).toBe(true)
    expect(isNewerRecord(alice1, alice2)).toBe(false)
    const early = record(alice, { sequence: 4, issuedAt: NOW - 2 * HOUR })
    const late = record(alice, { sequence: 4, issuedAt: NOW - HOUR })
    expect(isNewerRecord(late, early)).toBe(true)
    expect(isNewerRecord(early, late)).toBe(false)
    // A higher sequence wins even when issued earlier.
    expect(isNewerRecord(record(alice, { sequence: 5, issuedAt: NOW - 3 * HOUR }), late)).toBe(true)
    const a = record(alice, { sequence: 4, issuedAt: NOW, port: 1 })
    const b = record(alice, { sequence: 4, issuedAt: NOW, port: 2 })
    const [small, large] = BigInt(`0x${a.signature}`) < BigInt(`0x${b.signature}`) ? [a, b] : [b, a]
    expect(isNewerRecord(large, small)).toBe(true)
    expect(isNewerRecord(small, large)).toBe(false)
  })

  it("is irreflexive: a record is not newer than itself", () => {
    for (const r of POOL) expect(isNewerRecord(r, r)).toBe(false)
  })

  it.prop(
    "is a strict total order on distinct records, equal to the oracle",
    [fc.nat({ max: POOL.length - 1 }), fc.nat({ max: POOL.length - 1 }), fc.nat({ max: POOL.length - 1 })],
    ([i, j, l]) => {
      const [a, b, c] = [POOL[i] as UserRecord, POOL[j] as UserRecord, POOL[l] as UserRecord]
      expect(isNewerRecord(a, b)).toBe(oracleNewer(a, b))
      if (i !== j) expect(isNewerRecord(a, b) !== isNewerRecord(b, a)).toBe(true)
      if (isNewerRecord(a, b) && isNewerRecord(b, c)) expect(isNewerRecord(a, c)).toBe(true)
    },
    propOptions(500)
  )
})

describe("resolveClaims", () => {
  it("no record: the name is unclaimed", () => {
    expect(resolveClaims([])).toEqual({ _tag: "Unclaimed" })
  })

  it("one record: its key owns the name, held by one node", () => {
    expect(resolveClaims([alice1])).toEqual({ _tag: "Owner", record: alice1, holders: 1 })
  })

  it("one key: the owner with its newest record, counting every node that holds any of its records", () => {
    const answer = resolveClaims([alice1, alice3, alice2, alice1, alice3])
    expect(answer).toEqual({ _tag: "Owner", record: alice3, holders: 5 })
  })

  it("the newest record of one key wins in every input order", () => {
    const records = [alice1, alice2, alice3, alice2, alice1]
    for (let seed = 1; seed <= 30; seed++) {
      expect(resolveClaims(shuffle(records, seed))).toEqual({ _tag: "Owner", record: alice3, holders: 5 })
    }
  })

  it("breaks a tie of sequence and issue time by the signature, the same way in any order", () => {
    const a = record(alice, { sequence: 7, issuedAt: NOW, port: 1111 })
    const b = record(alice, { sequence: 7, issuedAt: NOW, port: 2222 })
    const larger = BigInt(`0x${a.signature}`) > BigInt(`0x${b.signature}`) ? a : b
    expect(resolveClaims([a, b])).toEqual({ _tag: "Owner", record: larger, holders: 2 })
    expect(resolveClaims([b, a])).toEqual({ _tag: "Owner", record: larger, holders: 2 })
  })

  it("ATTACK: a rival key's record with sequence 2^53 - 1 never becomes the owner; it makes a conflict", () => {
    expect(HOSTILE_MAX.sequence).toBe(Number.MAX_SAFE_INTEGER)
    for (const records of [
      [alice1, HOSTILE_MAX],
      [HOSTILE_MAX, alice1],
      [alice1, alice2, alice3, HOSTILE_MAX],
      [HOSTILE_MAX, alice3, alice3, alice3]
    ]) {
      const answer = resolveClaims(records)
      expect(answer._tag).toBe("Conflict")
      // The rival does not displace the owner's own newest record either.
      expect(claimantWithKey(answer, alice.signingKey)).toEqual(records.filter((r) => r.signingKey === alice.signingKey)
        .reduce((x, y) => (oracleNewer(y, x) ? y : x)))
      expect(claimantWithKey(answer, mallory.signingKey)).toEqual(HOSTILE_MAX)
    }
  })

  it("ATTACK: a rival held by more nodes is listed first but is still only a claimant", () => {
    const answer = resolveClaims([alice3, HOSTILE_MAX, HOSTILE_MAX, HOSTILE_MAX, alice3])
    expect(answer).toEqual({
      _tag: "Conflict",
      claimants: [{ record: HOSTILE_MAX, holders: 3 }, { record: alice3, holders: 2 }]
    })
  })

  it("lists claimants most-held first, then by signing key", () => {
    const answer = resolveClaims([eve1, alice1, HOSTILE_MAX, record(trent), alice2, eve1])
    expect(answer._tag).toBe("Conflict")
    const claimants = claimantsOf(answer)
    expect(claimants.map((c) => c.holders)).toEqual([2, 2, 1, 1])
    const firstTwo = [alice.signingKey, eve.signingKey].sort(hexOrder)
    const lastTwo = [mallory.signingKey, trent.signingKey].sort(hexOrder)
    expect(claimants.map((c) => c.record.signingKey)).toEqual([...firstTwo, ...lastTwo])
    expect(claimantWithKey(answer, alice.signingKey)).toEqual(alice2)
  })

  it("does not mutate its input", () => {
    const input = Object.freeze([alice1, HOSTILE_MAX, alice2].map((r) => Object.freeze({ ...r })))
    expect(() => resolveClaims(input)).not.toThrow()
    expect(input.map((r) => r.sequence)).toEqual([1, Number.MAX_SAFE_INTEGER, 2])
  })

  it.prop("agrees with the brute-force oracle", [arbRecords], ([records]) => {
    expect(resolveClaims(records)).toEqual(oracleResolve(records))
  }, propOptions(800))

  it.prop(
    "ATTACK: the order of the input never changes the answer",
    [arbRecords, fc.integer({ min: 1, max: 1_000_000 })],
    ([records, seed]) => {
      const answer = resolveClaims(records)
      expect(resolveClaims(shuffle(records, seed))).toEqual(answer)
      expect(resolveClaims(records.slice().reverse())).toEqual(answer)
    },
    propOptions(800)
  )

  it.prop(
    "ATTACK: records of two or more keys are always a conflict, whatever their sequences and holder counts",
    [arbRecords],
    ([records]) => {
      const keys = new Set(records.map((r) => r.signingKey))
      const answer = resolveClaims(records)
      expect(answer._tag).toBe(keys.size === 0 ? "Unclaimed" : keys.size === 1 ? "Owner" : "Conflict")
      expect(claimantsOf(answer).length).toBe(keys.size)
      expect(claimantsOf(answer).reduce((n, c) => n + c.holders, 0)).toBe(records.length)
    },
    propOptions(500)
  )

  it.prop(
    "ATTACK: adding another key's records never changes which record a key is represented by",
    [arbRecords, arbRecords],
    ([ours, theirs]) => {
      const key = ours[0]?.signingKey
      if (key === undefined) return
      const mine = ours.filter((r) => r.signingKey === key)
      const rivals = theirs.filter((r) => r.signingKey !== key)
      const alone = resolveClaims(mine)
      const mixed = resolveClaims([...rivals, ...mine])
      expect(claimantWithKey(mixed, key)).toEqual(claimantWithKey(alone, key))
      expect(claimantsOf(mixed).find((c) => c.record.signingKey === key)?.holders).toBe(mine.length)
    },
    propOptions(500)
  )
})

describe("claimantsOf and claimantWithKey", () => {
  it("list none, the owner, or every claimant, and find a claimant only by its exact key", () => {
    const unclaimed = resolveClaims([])
    const owner = resolveClaims([alice1, alice2])
    const conflict = resolveClaims([alice2, HOSTILE_MAX, eve1])
    expect(claimantsOf(unclaimed)).toEqual([])
    expect(claimantsOf(owner)).toEqual([{ record: alice2, holders: 2 }])
    expect(claimantsOf(conflict)).toHaveLength(3)
    expect(claimantWithKey(unclaimed, alice.signingKey)).toBeUndefined()
    expect(claimantWithKey(owner, alice.signingKey)).toEqual(alice2)
    expect(claimantWithKey(owner, mallory.signingKey)).toBeUndefined()
    expect(claimantWithKey(conflict, mallory.signingKey)).toEqual(HOSTILE_MAX)
    expect(claimantWithKey(conflict, eve.signingKey)).toEqual(eve1)
    expect(claimantWithKey(conflict, bob.signingKey)).toBeUndefined()
    // Neither a fingerprint, a node id nor a prefix of a key names a claimant.
    expect(claimantWithKey(owner, oracleFingerprint(alice.signingKey))).toBeUndefined()
    expect(claimantWithKey(owner, alice.nodeId)).toBeUndefined()
    expect(claimantWithKey(owner, alice.signingKey.slice(0, 32))).toBeUndefined()
    expect(claimantWithKey(owner, alice.signingKey.toUpperCase())).toBeUndefined()
  })
})

describe("chooseContact: the rules one by one", () => {
  const owner = resolveClaims([alice1, alice3])
  const conflict = resolveClaims([alice3, HOSTILE_MAX, HOSTILE_MAX, eve1])
  const fp = (who: TestIdentity) => oracleFingerprint(who.signingKey)

  it("nobody claims the name: Unclaimed, whatever is pinned or typed", () => {
    const unclaimed = resolveClaims([])
    for (const pin of [undefined, pinOf(alice)]) {
      for (const requested of [undefined, fp(alice)]) {
        expect(chooseContact({ answer: unclaimed, pin, requested })).toEqual({ _tag: "Unclaimed" })
      }
    }
  })

  it("a sole owner without pin or fingerprint is used and pinned on first use", () => {
    expect(chooseContact({ answer: owner, pin: undefined, requested: undefined })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: "first-use",
      contested: false
    })
  })

  it("a sole owner with its key pinned is used and nothing is re-pinned", () => {
    for (const source of ["first-use", "verified", "trusted"] as const) {
      expect(chooseContact({ answer: owner, pin: pinOf(alice, source), requested: undefined })).toEqual({
        _tag: "Use",
        record: alice3,
        pinAs: undefined,
        contested: false
      })
    }
  })

  it("ATTACK: the pinned key is absent and another key is the sole owner: KeyChanged, never a silent switch", () => {
    const taken = resolveClaims([HOSTILE_MAX, HOSTILE_MAX])
    const pin = pinOf(alice, "verified")
    expect(chooseContact({ answer: taken, pin, requested: undefined })).toEqual({
      _tag: "KeyChanged",
      pin,
      newFingerprint: fp(mallory)
    })
  })

  it("a typed fingerprint of the sole owner is used and pinned as trusted unless already pinned", () => {
    expect(chooseContact({ answer: owner, pin: undefined, requested: fp(alice) })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: "trusted",
      contested: false
    })
    expect(chooseContact({ answer: owner, pin: pinOf(alice), requested: fp(alice) })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: undefined,
      contested: false
    })
    // The user names the new key on purpose: it wins over the pin and is pinned as trusted.
    expect(chooseContact({ answer: owner, pin: pinOf(bob, "verified"), requested: fp(alice) })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: "trusted",
      contested: false
    })
  })

  it("a typed fingerprint the sole owner does not have: FingerprintMismatch, even if the owner is pinned", () => {
    for (const pin of [undefined, pinOf(alice), pinOf(bob)]) {
      expect(chooseContact({ answer: owner, pin, requested: fp(bob) })).toEqual({
        _tag: "FingerprintMismatch",
        requested: fp(bob),
        actual: fp(alice)
      })
    }
  })

  it("in a conflict, a typed fingerprint picks its claimant, contested, whatever the holder counts", () => {
    // Alice is held by one node, Mallory by two: the user's explicit choice still wins.
    expect(chooseContact({ answer: conflict, pin: undefined, requested: fp(alice) })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: "trusted",
      contested: true
    })
    expect(chooseContact({ answer: conflict, pin: pinOf(alice), requested: fp(eve) })).toEqual({
      _tag: "Use",
      record: eve1,
      pinAs: "trusted",
      contested: true
    })
    expect(chooseContact({ answer: conflict, pin: pinOf(eve), requested: fp(eve) })).toEqual({
      _tag: "Use",
      record: eve1,
      pinAs: undefined,
      contested: true
    })
  })

  it("ATTACK: in a conflict, a typed fingerprint of a key that claims nothing never returns another record", () => {
    for (const pin of [undefined, pinOf(alice), pinOf(mallory), pinOf(bob)]) {
      const choice = chooseContact({ answer: conflict, pin, requested: fp(bob) })
      expect(choice).toEqual({ _tag: "Conflict", claimants: claimantsOf(conflict) })
    }
  })

  it("in a conflict, a pinned key picks its claimant even when a rival is held by more nodes", () => {
    expect(chooseContact({ answer: conflict, pin: pinOf(alice), requested: undefined })).toEqual({
      _tag: "Use",
      record: alice3,
      pinAs: undefined,
      contested: true
    })
  })

  it("ATTACK: in a conflict without pin or fingerprint, nothing is picked, not even the most-held claimant", () => {
    expect(chooseContact({ answer: conflict, pin: undefined, requested: undefined })).toEqual({
      _tag: "Conflict",
      claimants: claimantsOf(conflict)
    })
  })

  it("in a conflict where the pinned key claims nothing: Conflict (not KeyChanged towards one rival)", () => {
    expect(chooseContact({ answer: conflict, pin: pinOf(bob), requested: undefined })).toEqual({
      _tag: "Conflict",
      claimants: claimantsOf(conflict)
    })
  })

  it("ATTACK: a hostile 2^53 - 1 record next to the pinned owner's changes nothing for the pinned user", () => {
    const answer = resolveClaims([alice1, alice2, HOSTILE_MAX])
    expect(chooseContact({ answer, pin: pinOf(alice), requested: undefined })).toEqual({
      _tag: "Use",
      record: alice2,
      pinAs: undefined,
      contested: true
    })
    // And a newcomer without a pin is not handed the hostile record.
    expect(chooseContact({ answer, pin: undefined, requested: undefined })._tag).toBe("Conflict")
  })

  it("computes fingerprints with the hash it is given", () => {
    let calls = 0
    const counting: HashFunction = (data) => {
      calls++
      return nodeSha256(data)
    }
    expect(chooseContact({ answer: owner, pin: undefined, requested: fp(alice), hash: counting })._tag).toBe("Use")
    expect(calls).toBeGreaterThan(0)
    // A different hash gives different fingerprints: the one typed no longer matches.
    const other: HashFunction = (data) => nodeSha256(new Uint8Array([...data, 0]))
    expect(chooseContact({ answer: owner, pin: undefined, requested: fp(alice), hash: other })._tag).toBe(
      "FingerprintMismatch"
    )
  })
})

describe("chooseContact: properties", () => {
  it.prop(
    "never uses a key other than the typed one or, without one, the pinned one; and uses them whenever they claim",
    [arbRecords, arbPin, arbRequested],
    ([records, pin, requested]) => {
      const answer = resolveClaims(records)
      const claimants = claimantsOf(answer)
      const choice = chooseContact({ answer, pin, requested })
      const byFingerprint = claimants.find((c) => oracleFingerprint(c.record.signingKey) === requested)
      const byPin = claimants.find((c) => c.record.signingKey === pin?.signingKey)

      if (choice._tag === "Use") {
        // The record used is the newest record of a claimant, as resolved.
        expect(claimants.map((c) => c.record)).toContainEqual(choice.record)
        expect(choice.contested).toBe(claimants.length > 1)
        if (requested !== undefined) expect(oracleFingerprint(choice.record.signingKey)).toBe(requested)
        else if (pin !== undefined) expect(choice.record.signingKey).toBe(pin.signingKey)
        else {
          expect(answer._tag).toBe("Owner")
          expect(choice.pinAs).toBe("first-use")
        }
        if (requested !== undefined) {
          expect(choice.pinAs).toBe(pin?.signingKey === choice.record.signingKey ? undefined : "trusted")
        } else if (pin !== undefined) expect(choice.pinAs).toBeUndefined()
      }

      // Completeness, and the expected refusal otherwise.
      if (claimants.length === 0) expect(choice).toEqual({ _tag: "Unclaimed" })
      else if (requested !== undefined) {
        if (byFingerprint !== undefined) expect(use(choice).record).toEqual(byFingerprint.record)
        else if (answer._tag === "Owner") {
          expect(choice).toEqual({
            _tag: "FingerprintMismatch",
            requested,
            actual: oracleFingerprint(answer.record.signingKey)
          })
        } else expect(choice).toEqual({ _tag: "Conflict", claimants })
      } else if (pin !== undefined) {
        if (byPin !== undefined) expect(use(choice).record).toEqual(byPin.record)
        else if (answer._tag === "Owner") {
          expect(choice).toEqual({ _tag: "KeyChanged", pin, newFingerprint: oracleFingerprint(answer.record.signingKey) })
        } else expect(choice).toEqual({ _tag: "Conflict", claimants })
      } else if (answer._tag === "Owner") {
        expect(choice).toEqual({ _tag: "Use", record: answer.record, pinAs: "first-use", contested: false })
      } else expect(choice).toEqual({ _tag: "Conflict", claimants })
    },
    propOptions(1500)
  )

  it.prop(
    "ATTACK: the choice does not depend on the order in which records arrived",
    [arbRecords, arbPin, arbRequested, fc.integer({ min: 1, max: 1_000_000 })],
    ([records, pin, requested, seed]) => {
      const a = chooseContact({ answer: resolveClaims(records), pin, requested })
      const b = chooseContact({ answer: resolveClaims(shuffle(records, seed)), pin, requested })
      expect(b).toEqual(a)
    },
    propOptions(500)
  )

  it.prop(
    "ATTACK: a hostile record of another key never turns a Use of the pinned key into a Use of another key",
    [arbRecords, fc.integer({ min: 1, max: 1_000_000 })],
    ([records, seed]) => {
      const mine = records.filter((r) => r.signingKey === alice.signingKey)
      if (mine.length === 0) return
      const pin = pinOf(alice)
      const before = use(chooseContact({ answer: resolveClaims(mine), pin, requested: undefined }))
      const withHostile = shuffle([...records, HOSTILE_MAX], seed)
      const after = use(chooseContact({ answer: resolveClaims(withHostile), pin, requested: undefined }))
      expect(after.record).toEqual(before.record)
      expect(after.pinAs).toBeUndefined()
      expect(after.contested).toBe(true)
    },
    propOptions(300)
  )
})

describe("rivalSlotKey", () => {
  it.prop(
    "is SHA-256 of the domain prefix and the raw key, and differs from the key itself",
    [arbKey],
    ([key]) => {
      const slot = rivalSlotKey(key)
      expect(slot).toBe(oracleRivalSlot(key))
      expect(slot).toMatch(/^[0-9a-f]{64}$/)
      expect(slot).not.toBe(key)
      // Domain-separated: not the bare hash of the key.
      expect(slot).not.toBe(createHash("sha256").update(Buffer.from(key, "hex")).digest("hex"))
      expect(rivalSlotKey(key, nodeSha256)).toBe(slot)
    },
    propOptions(200)
  )

  it("is deterministic and distinct for distinct names, and never another name's own slot", () => {
    const names = ["alice", "bob", "carol", "mallory"].map((n) => userKey(n as Username))
    const slots = names.map((key) => rivalSlotKey(key))
    expect(slots).toEqual(names.map((key) => rivalSlotKey(key)))
    expect(new Set(slots).size).toBe(slots.length)
    for (const slot of slots) expect(names).not.toContain(slot)
    const fixed = "0".repeat(64) as Key
    expect(rivalSlotKey(fixed)).toBe(oracleRivalSlot(fixed))
  })
})
