/**
 * Tests of key pinning: fingerprints, name references and safety numbers
 * checked against an independent implementation over node:crypto (and fixed
 * vectors, so the formats cannot drift), and every rule of `pinDecision`,
 * one by one and as properties over arbitrary pins, keys and requests.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { createHash } from "node:crypto"
import { toHex } from "../../src/core/Bytes.js"
import {
  ContactPin,
  type Fingerprint,
  FingerprintMismatch,
  fingerprintOf,
  formatFingerprint,
  formatNameRef,
  formatSafetyNumber,
  isContactPin,
  KeyChanged,
  makePin,
  type NameRef,
  parseFingerprint,
  parseNameRef,
  pinDecision,
  SAFETY_NUMBER_ITERATIONS,
  SafetyNumber,
  safetyNumber,
  type SafetyNumberParty
} from "../../src/core/Pinning.js"
import type { HashFunction } from "../../src/core/Sha256.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

// --- Inputs ---

/** The public keys of RFC 8032's first two Ed25519 test vectors. */
const KEY_1 = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a" as PublicKeyHex
const KEY_2 = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c" as PublicKeyHex

const user = (name: string) => name as Username
const alice = user("alice")

const arbPublicKey: fc.Arbitrary<PublicKeyHex> = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => toHex(bytes) as PublicKeyHex)
const arbUsername: fc.Arbitrary<Username> = fc.stringMatching(/^[a-z0-9_.-]{3,32}$/).map(user)
const arbFingerprint: fc.Arbitrary<Fingerprint> = fc
  .uint8Array({ minLength: 16, maxLength: 16 })
  .map((bytes) => toHex(bytes) as Fingerprint)
const arbParty: fc.Arbitrary<SafetyNumberParty> = fc.record({ username: arbUsername, signingKey: arbPublicKey })

const properties = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

// --- An independent implementation over node:crypto, written from the module doc ---

const nodeSha256: HashFunction = (data) => new Uint8Array(createHash("sha256").update(data).digest())

const oracleFingerprint = (key: string): string =>
  createHash("sha256").update("peerchat/fingerprint/v1\n").update(Buffer.from(key, "hex")).digest("hex").slice(0, 32)

const oracleHalf = (party: SafetyNumberParty): string => {
  const key = Buffer.from(party.signingKey, "hex")
  const name = Buffer.from(party.username, "utf8")
  const length = Buffer.alloc(2)
  length.writeUInt16BE(name.length)
  let digest = createHash("sha256").update("peerchat/safety-number/v1\n").update(length).update(name).update(key).digest()
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) digest = createHash("sha256").update(digest).update(key).digest()
  let digits = ""
  for (let chunk = 0; chunk < 6; chunk++) digits += String(digest.readUIntBE(5 * chunk, 5) % 100000).padStart(5, "0")
  return digits
}

const oracleSafetyNumber = (a: SafetyNumberParty, b: SafetyNumberParty): string => {
  const [x, y] = [oracleHalf(a), oracleHalf(b)].sort()
  return `${x}${y}`
}

const left = <A, E>(either: Either.Either<A, E>): E =>
  Either.match(either, { onLeft: (error) => error, onRight: () => expect.unreachable("expected Left") })

// ---------------------------------------------------------------------------

describe("fingerprints", () => {
  it("are the first 16 bytes of SHA-256 over the domain and the raw key, in lower-case hex", () => {
    expect(fingerprintOf(KEY_1)).toBe("8665f4c8476412f3125d95031434e8cf")
    expect(fingerprintOf(KEY_2)).toBe("8175be4d9054a068339f5e2d2cd6675e")
    expect(fingerprintOf(KEY_1, nodeSha256)).toBe(fingerprintOf(KEY_1))
  })

  it.prop(
    "agree with node:crypto for any key",
    [arbPublicKey],
    ([key]) => {
      expect(fingerprintOf(key)).toBe(oracleFingerprint(key))
    },
    properties(200)
  )

  it("display as 8 groups of 4 joined by dashes", () => {
    expect(formatFingerprint(fingerprintOf(KEY_1))).toBe("8665-f4c8-4764-12f3-125d-9503-1434-e8cf")
  })

  it("parse from the compact or grouped form, in any case, ignoring spaces and dashes", () => {
    const expected = fingerprintOf(KEY_1)
    for (
      const input of [
        "8665f4c8476412f3125d95031434e8cf",
        "8665-f4c8-4764-12f3-125d-9503-1434-e8cf",
        "8665 F4C8 4764 12F3 125D 9503 1434 E8CF",
        "  8665f4c8-4764 12f3125d-95031434e8cf\n",
        "８６６５ｆ４ｃ８４７６４１２ｆ３１２５ｄ９５０３１４３４ｅ８ｃｆ" // full-width, as some keyboards type
      ]
    ) {
      expect(parseFingerprint(input)).toEqual(Either.right(expected))
    }
  })

  it("refuse other characters and other lengths, saying which", () => {
    expect(left(parseFingerprint("8665f4c8476412f3125d95031434e8cg")).reason).toBe("InvalidCharacter")
    expect(left(parseFingerprint("8665:f4c8:4764:12f3:125d:9503:1434:e8cf")).reason).toBe("InvalidCharacter")
    expect(left(parseFingerprint("")).reason).toBe("WrongLength")
    expect(left(parseFingerprint("8665-f4c8-4764-12f3-125d-9503-1434")).reason).toBe("WrongLength")
    // A whole signing key is not its fingerprint.
    const refused = left(parseFingerprint(KEY_1))
    expect(refused).toBeInstanceOf(Error)
    expect(refused).toMatchObject({ _tag: "InvalidFingerprint", input: KEY_1, reason: "WrongLength" })
    expect(refused.message).toContain("32 hex digits")
  })

  it.prop(
    "parsing the display form, upper-cased or compact, gives the fingerprint back",
    [arbFingerprint],
    ([fingerprint]) => {
      const shown = formatFingerprint(fingerprint)
      expect(shown).toMatch(/^([0-9a-f]{4}-){7}[0-9a-f]{4}$/)
      expect(parseFingerprint(shown)).toEqual(Either.right(fingerprint))
      expect(parseFingerprint(shown.toUpperCase())).toEqual(Either.right(fingerprint))
      expect(parseFingerprint(shown.replaceAll("-", " "))).toEqual(Either.right(fingerprint))
    },
    properties(200)
  )
})

describe("name references", () => {
  it("read a bare name, normalized", () => {
    expect(parseNameRef("Alice")).toEqual(Either.right({ username: "alice", fingerprint: undefined }))
  })

  it("read name@fingerprint in the grouped or compact form", () => {
    const fingerprint = fingerprintOf(KEY_1)
    const expected: NameRef = { username: alice, fingerprint }
    expect(parseNameRef("alice@8665-f4c8-4764-12f3-125d-9503-1434-e8cf")).toEqual(Either.right(expected))
    expect(parseNameRef("ALICE@8665F4C8476412F3125D95031434E8CF")).toEqual(Either.right(expected))
    expect(parseNameRef("alice＠8665f4c8476412f3125d95031434e8cf")).toEqual(Either.right(expected))
  })

  it("refuse a bad name or a bad fingerprint with the error of the part that is wrong", () => {
    expect(left(parseNameRef("al"))).toMatchObject({ _tag: "InvalidUsername", reason: "TooShort" })
    expect(left(parseNameRef("al@8665f4c8476412f3125d95031434e8cf"))).toMatchObject({ _tag: "InvalidUsername" })
    expect(left(parseNameRef("alice@"))).toMatchObject({ _tag: "InvalidFingerprint", reason: "WrongLength" })
    expect(left(parseNameRef("alice@8665"))).toMatchObject({ _tag: "InvalidFingerprint", reason: "WrongLength" })
    expect(left(parseNameRef("alice@bob@8665f4c8476412f3125d95031434e8cf")))
      .toMatchObject({ _tag: "InvalidFingerprint", reason: "InvalidCharacter" })
    expect(left(parseNameRef("@8665f4c8476412f3125d95031434e8cf"))).toMatchObject({ _tag: "InvalidUsername" })
  })

  it("format as name or name@grouped-fingerprint", () => {
    expect(formatNameRef({ username: alice, fingerprint: undefined })).toBe("alice")
    expect(formatNameRef({ username: alice, fingerprint: fingerprintOf(KEY_1) }))
      .toBe("alice@8665-f4c8-4764-12f3-125d-9503-1434-e8cf")
  })

  it.prop(
    "parse what they format",
    [arbUsername, fc.option(arbFingerprint, { nil: undefined })],
    ([username, fingerprint]) => {
      const ref: NameRef = { username, fingerprint }
      expect(parseNameRef(formatNameRef(ref))).toEqual(Either.right(ref))
    },
    properties(300)
  )
})

describe("safety numbers", () => {
  const a: SafetyNumberParty = { username: alice, signingKey: KEY_1 }
  const b: SafetyNumberParty = { username: user("bob"), signingKey: KEY_2 }

  it("follow the documented construction (a fixed vector, and node:crypto)", () => {
    const number = safetyNumber(a, b)
    expect(number).toBe("229506511804359777697401733426258223264575219723866999870076")
    expect(number).toBe(oracleSafetyNumber(a, b))
    expect(Schema.is(SafetyNumber)(number)).toBe(true)
  })

  it("are the same for both sides", () => {
    expect(safetyNumber(b, a)).toBe(safetyNumber(a, b))
    expect(safetyNumber(b, a, nodeSha256)).toBe(safetyNumber(a, b))
  })

  it("display as 12 groups of 5 digits", () => {
    expect(formatSafetyNumber(safetyNumber(a, b)))
      .toBe("22950 65118 04359 77769 74017 33426 25822 32645 75219 72386 69998 70076")
  })

  it("cover the username as well as the key", () => {
    const renamed = { ...a, username: user("alice2") }
    expect(safetyNumber(renamed, b)).not.toBe(safetyNumber(a, b))
    // Bob's half is unchanged: only Alice's 30 digits move.
    expect(safetyNumber(renamed, b)).toContain(safetyNumber(b, b).slice(0, 30))
  })

  // node:crypto's SHA-256 is faster than the core's in a loop of thousands of rounds; both are SHA-256.
  it.prop(
    "are symmetric and made of each side's own 30 digits, smaller first",
    [arbParty, arbParty],
    ([x, y]) => {
      const number = safetyNumber(x, y, nodeSha256)
      expect(number).toMatch(/^[0-9]{60}$/)
      expect(safetyNumber(y, x, nodeSha256)).toBe(number)
      const halves = [safetyNumber(x, x, nodeSha256).slice(0, 30), safetyNumber(y, y, nodeSha256).slice(0, 30)].sort()
      expect(number).toBe(halves.join(""))
    },
    properties(15)
  )

  it.prop(
    "change when one side's key changes",
    [arbParty, arbParty, arbPublicKey],
    ([x, y, other]) => {
      fc.pre(other !== y.signingKey)
      expect(safetyNumber(x, { ...y, signingKey: other }, nodeSha256)).not.toBe(safetyNumber(x, y, nodeSha256))
    },
    properties(15)
  )
})

describe("pins", () => {
  const pinned = makePin({ username: alice, signingKey: KEY_1, pinnedAt: 1000, source: "first-use" })

  it("carry their key's fingerprint, and a pin whose fingerprint is another key's does not decode", () => {
    expect(pinned).toEqual({
      username: "alice",
      signingKey: KEY_1,
      fingerprint: "8665f4c8476412f3125d95031434e8cf",
      pinnedAt: 1000,
      source: "first-use"
    })
    expect(isContactPin(pinned)).toBe(true)
    expect(Schema.decodeUnknownEither(ContactPin)(pinned)).toEqual(Either.right(pinned))
    const forged = { ...pinned, fingerprint: fingerprintOf(KEY_2) }
    expect(isContactPin(forged)).toBe(false)
    expect(Either.isLeft(Schema.decodeUnknownEither(ContactPin)(forged))).toBe(true)
    expect(isContactPin({ ...pinned, source: "maybe" })).toBe(false)
    expect(isContactPin({ ...pinned, pinnedAt: -1 })).toBe(false)
  })

  describe("pinDecision", () => {
    const oldFingerprint = fingerprintOf(KEY_1)
    const newFingerprint = fingerprintOf(KEY_2)

    it("no pin and nothing asked for: first use", () => {
      expect(pinDecision({ pin: undefined, signingKey: KEY_1 })).toEqual({ _tag: "FirstUse", fingerprint: oldFingerprint })
    })

    it("the pinned key: matches, whatever the pin's source", () => {
      expect(pinDecision({ pin: pinned, signingKey: KEY_1 })).toEqual({ _tag: "Matches", pin: pinned })
      const verified = { ...pinned, source: "verified" as const }
      expect(pinDecision({ pin: verified, signingKey: KEY_1, requested: oldFingerprint }))
        .toEqual({ _tag: "Matches", pin: verified })
    })

    it("another key than the pinned one: key changed, never used silently", () => {
      expect(pinDecision({ pin: pinned, signingKey: KEY_2 })).toEqual({ _tag: "KeyChanged", pin: pinned, newFingerprint })
      const trusted = { ...pinned, source: "trusted" as const }
      expect(pinDecision({ pin: trusted, signingKey: KEY_2 })._tag).toBe("KeyChanged")
    })

    it("name@fingerprint naming the resolved key: repin, replacing another key's pin or making the first", () => {
      expect(pinDecision({ pin: pinned, signingKey: KEY_2, requested: newFingerprint }))
        .toEqual({ _tag: "Repin", previous: pinned, fingerprint: newFingerprint })
      expect(pinDecision({ pin: undefined, signingKey: KEY_2, requested: newFingerprint }))
        .toEqual({ _tag: "Repin", previous: undefined, fingerprint: newFingerprint })
    })

    it("name@fingerprint naming another key than the resolved one: mismatch, even when the resolved key is pinned", () => {
      const mismatch = { _tag: "FingerprintMismatch", requested: newFingerprint, actual: oldFingerprint }
      expect(pinDecision({ pin: undefined, signingKey: KEY_1, requested: newFingerprint })).toEqual(mismatch)
      expect(pinDecision({ pin: pinned, signingKey: KEY_1, requested: newFingerprint })).toEqual(mismatch)
      // The user asked for the pinned key, and the name now resolves to another: still the request decides.
      expect(pinDecision({ pin: pinned, signingKey: KEY_2, requested: oldFingerprint }))
        .toEqual({ _tag: "FingerprintMismatch", requested: oldFingerprint, actual: newFingerprint })
    })

    it("uses the hash it is given", () => {
      expect(pinDecision({ pin: undefined, signingKey: KEY_1, hash: nodeSha256 }))
        .toEqual({ _tag: "FirstUse", fingerprint: oldFingerprint })
    })

    // Keys from a small pool, so pinned and resolved keys often coincide; requests name the resolved key, the pinned one or another.
    const arbCase = fc
      .record({
        pinKey: fc.option(fc.constantFrom(KEY_1, KEY_2), { nil: undefined }),
        source: fc.constantFrom("first-use" as const, "verified" as const, "trusted" as const),
        resolved: fc.oneof(fc.constantFrom(KEY_1, KEY_2), arbPublicKey),
        request: fc.constantFrom("none", "resolved", "pinned", "other")
      })
      .chain((generated) => fc.tuple(fc.constant(generated), arbFingerprint))
      .map(([{ pinKey, request, resolved, source }, other]) => {
        const pin = pinKey === undefined ? undefined : makePin({ username: alice, signingKey: pinKey, pinnedAt: 5, source })
        const requested = request === "none"
          ? undefined
          : request === "resolved"
          ? fingerprintOf(resolved)
          : request === "pinned" && pinKey !== undefined
          ? fingerprintOf(pinKey)
          : other
        return { pin, resolved, requested }
      })

    it.prop(
      "a key is usable only if it is the pinned one, the first one, or the one asked for by fingerprint",
      [arbCase],
      ([{ pin, requested, resolved }]) => {
        const decision = pinDecision({ pin, signingKey: resolved, requested })
        const actual = oracleFingerprint(resolved)
        switch (decision._tag) {
          case "Matches":
            expect(pin?.signingKey).toBe(resolved)
            expect(requested === undefined || requested === actual).toBe(true)
            break
          case "FirstUse":
            expect([pin, requested]).toEqual([undefined, undefined])
            expect(decision.fingerprint).toBe(actual)
            break
          case "Repin":
            expect(requested).toBe(actual)
            expect(decision.previous).toBe(pin)
            expect(pin?.signingKey).not.toBe(resolved)
            break
          case "KeyChanged":
            expect(requested).toBeUndefined()
            expect(pin).toBeDefined()
            expect(pin?.signingKey).not.toBe(resolved)
            expect(decision.newFingerprint).toBe(actual)
            break
          case "FingerprintMismatch":
            expect(requested).toBeDefined()
            expect(requested).not.toBe(actual)
            expect(decision.actual).toBe(actual)
            break
        }
        // The other direction: what must be refused is refused.
        if (requested !== undefined && requested !== actual) expect(decision._tag).toBe("FingerprintMismatch")
        if (requested === undefined && pin !== undefined && pin.signingKey !== resolved) expect(decision._tag).toBe("KeyChanged")
      },
      properties(500)
    )
  })
})

describe("errors", () => {
  const oldFingerprint = fingerprintOf(KEY_1)
  const newFingerprint = fingerprintOf(KEY_2)

  it("KeyChanged names both keys and says how to compare safety numbers and accept the new key on purpose", () => {
    const error = new KeyChanged({ username: alice, pinnedFingerprint: oldFingerprint, newFingerprint })
    expect(error._tag).toBe("KeyChanged")
    expect(error.message).toContain("8665-f4c8-4764-12f3-125d-9503-1434-e8cf")
    expect(error.message).toContain("peerchat verify alice")
    expect(error.message).toContain("peerchat trust alice --key 8175-be4d-9054-a068-339f-5e2d-2cd6-675e")
    // What it says to type reads back as the new key's fingerprint.
    const typed = error.message.split("--key ")[1] ?? ""
    expect(parseFingerprint(typed)).toEqual(Either.right(newFingerprint))
  })

  it("FingerprintMismatch names the key asked for and the key found, and says how to check", () => {
    const error = new FingerprintMismatch({ username: alice, requested: newFingerprint, actual: oldFingerprint })
    expect(error._tag).toBe("FingerprintMismatch")
    expect(error.message).toContain("alice@8175-be4d-9054-a068-339f-5e2d-2cd6-675e")
    expect(error.message).toContain("8665-f4c8-4764-12f3-125d-9503-1434-e8cf")
    expect(error.message).toContain("peerchat verify alice")
  })

  it("round-trip through their schemas, as they do over the control API", () => {
    const error = new KeyChanged({ username: alice, pinnedFingerprint: oldFingerprint, newFingerprint })
    const decoded = Schema.decodeUnknownSync(KeyChanged)(Schema.encodeSync(KeyChanged)(error))
    expect(decoded).toBeInstanceOf(KeyChanged)
    expect(decoded.message).toBe(error.message)
  })
})
