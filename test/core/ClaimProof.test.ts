import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { concatBytes, toHex, utf8 } from "../../src/core/Bytes.js"
import {
  CLAIM_CHALLENGE_PREFIX,
  claimChallenge,
  ClaimProof,
  ClaimRejected,
  checkClaimProof,
  expectedAttempts,
  leadingZeroBits,
  type MemoryHardHash,
  solveClaimStep
} from "../../src/core/ClaimProof.js"
import { sha256 } from "../../src/core/Sha256.js"
import { PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

const ALICE_KEY = toHex(seededRandomBytes(1)(32))
const MALLORY_KEY = toHex(seededRandomBytes(2)(32))

/** sha256 with a call counter: cheap enough for unit tests, and says how often it ran. */
const countingHash = (): { readonly hash: MemoryHardHash; readonly calls: () => number } => {
  let calls = 0
  return {
    hash: (input) => {
      calls++
      return sha256(input)
    },
    calls: () => calls
  }
}

/** Solves in one step large enough that a low difficulty cannot fail. */
const solve = (username: string, signingKey: string, difficulty: number, fromNonce = 0): ClaimProof => {
  const step = solveClaimStep({ username, signingKey, difficulty, hash: sha256, fromNonce, attempts: 1 << 20 })
  if (step._tag !== "Solved") throw new Error(`no proof at difficulty ${difficulty} within 2^20 attempts`)
  return step.proof
}

const rejection = (result: Either.Either<void, ClaimRejected>): ClaimRejected["reason"] | "Accepted" =>
  Either.match(result, { onLeft: (error) => error.reason, onRight: () => "Accepted" as const })

/** Reference leading-zero count over the bit string. */
const referenceLeadingZeros = (bytes: Uint8Array): number => {
  const bits = [...bytes].map((byte) => byte.toString(2).padStart(8, "0")).join("")
  const first = bits.indexOf("1")
  return first === -1 ? bits.length : first
}

const arbUsername = fc.stringMatching(/^[a-z0-9_.-]{3,32}$/)
const arbKeyHex = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(toHex)
const arbNonce = fc.nat({ max: Number.MAX_SAFE_INTEGER })

describe("ClaimProof schema", () => {
  it("accepts difficulties 0..64 and non-negative safe-integer nonces", () => {
    const decode = Schema.decodeUnknownEither(ClaimProof)
    expect(Either.isRight(decode({ difficulty: 0, nonce: 0 }))).toBe(true)
    expect(Either.isRight(decode({ difficulty: 64, nonce: Number.MAX_SAFE_INTEGER }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: 65, nonce: 0 }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: -1, nonce: 0 }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: 1.5, nonce: 0 }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: 10, nonce: -1 }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: 10, nonce: Number.MAX_SAFE_INTEGER + 1 }))).toBe(true)
    expect(Either.isLeft(decode({ difficulty: 10 }))).toBe(true)
  })
})

describe("claimChallenge", () => {
  it("is prefix ‖ u16 length ‖ username ‖ 32 key bytes ‖ u64 nonce", () => {
    const key = "ab".repeat(32)
    const bytes = claimChallenge("alice", key, 0x0102_0304_0506)
    expect(CLAIM_CHALLENGE_PREFIX.length).toBe(23)
    expect(toHex(bytes)).toBe(
      toHex(utf8("peerchat/name-claim/v1\n")) +
        "0005" + toHex(utf8("alice")) +
        key +
        "0000010203040506"
    )
  })

  it("rejects a key that is not 32 bytes of hex and a nonce that is not a safe integer", () => {
    expect(() => claimChallenge("alice", "ab".repeat(31), 0)).toThrow(RangeError)
    expect(() => claimChallenge("alice", "zz".repeat(32), 0)).toThrow(RangeError)
    expect(() => claimChallenge("alice", ALICE_KEY, -1)).toThrow(RangeError)
    expect(() => claimChallenge("alice", ALICE_KEY, 0.5)).toThrow(RangeError)
  })

  it.prop(
    "two challenges are equal exactly when name, key and nonce are",
    [arbUsername, arbKeyHex, arbNonce, arbUsername, arbKeyHex, arbNonce],
    ([name1, key1, nonce1, name2, key2, nonce2]) => {
      const same = name1 === name2 && key1 === key2 && nonce1 === nonce2
      expect(toHex(claimChallenge(name1, key1, nonce1)) === toHex(claimChallenge(name2, key2, nonce2))).toBe(same)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )
})

describe("leadingZeroBits", () => {
  it("counts from the most significant bit of the first byte", () => {
    expect(leadingZeroBits(Uint8Array.of(0x80, 0))).toBe(0)
    expect(leadingZeroBits(Uint8Array.of(0x01, 0xff))).toBe(7)
    expect(leadingZeroBits(Uint8Array.of(0x00, 0x10))).toBe(11)
    expect(leadingZeroBits(new Uint8Array(32))).toBe(256)
    expect(leadingZeroBits(new Uint8Array(0))).toBe(0)
  })

  it.prop(
    "agrees with a bit-string reference",
    [fc.uint8Array({ minLength: 0, maxLength: 40 })],
    ([bytes]) => {
      expect(leadingZeroBits(bytes)).toBe(referenceLeadingZeros(bytes))
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 500 } }
  )

  it.prop(
    "counts exactly the zero bits placed in front",
    [fc.integer({ min: 0, max: 64 }), fc.uint8Array({ minLength: 32, maxLength: 32 })],
    ([zeros, random]) => {
      // Force exactly `zeros` leading zero bits: clear them, then set the next one.
      const bytes = Uint8Array.from(random)
      for (let bit = 0; bit <= zeros; bit++) {
        const mask = 0x80 >>> (bit % 8)
        const index = Math.floor(bit / 8)
        bytes[index] = bit < zeros ? (bytes[index] as number) & ~mask : (bytes[index] as number) | mask
      }
      expect(leadingZeroBits(bytes)).toBe(zeros)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )
})

describe("expectedAttempts", () => {
  it("is 2^difficulty", () => {
    expect(expectedAttempts(0)).toBe(1)
    expect(expectedAttempts(10)).toBe(1024)
    expect(expectedAttempts(64)).toBe(2 ** 64)
  })
})

describe("solve, then check", () => {
  it("a solved proof checks, and its hash has the required zero bits", () => {
    const proof = solve("alice", ALICE_KEY, 8)
    expect(proof.difficulty).toBe(8)
    expect(leadingZeroBits(sha256(claimChallenge("alice", ALICE_KEY, proof.nonce)))).toBeGreaterThanOrEqual(8)
    const result = checkClaimProof({ username: "alice", signingKey: ALICE_KEY, proof, minDifficulty: 8, hash: sha256 })
    expect(rejection(result)).toBe("Accepted")
  })

  it("a proof that solves the claim is the first solving nonce from the start", () => {
    const proof = solve("alice", ALICE_KEY, 6, 1000)
    expect(proof.nonce).toBeGreaterThanOrEqual(1000)
    for (let nonce = 1000; nonce < proof.nonce; nonce++) {
      expect(leadingZeroBits(sha256(claimChallenge("alice", ALICE_KEY, nonce)))).toBeLessThan(6)
    }
  })

  it("fails with WrongWork for a tampered nonce, another username or another key", () => {
    const proof = solve("alice", ALICE_KEY, 10)
    const check = (username: string, signingKey: string, nonce: number) =>
      rejection(checkClaimProof({
        username,
        signingKey,
        proof: { difficulty: 10, nonce },
        minDifficulty: 10,
        hash: sha256
      }))
    expect(check("alice", ALICE_KEY, proof.nonce)).toBe("Accepted")
    // Each of these hashes to ≥ 10 zero bits only with probability 2^-10; the fixed inputs below do not.
    expect(check("alice", ALICE_KEY, proof.nonce + 1)).toBe("WrongWork")
    expect(check("alicf", ALICE_KEY, proof.nonce)).toBe("WrongWork")
    expect(check("alice", MALLORY_KEY, proof.nonce)).toBe("WrongWork")
  })

  it("fails with WrongWork when the proof claims more zero bits than its hash has", () => {
    const proof = solve("alice", ALICE_KEY, 4)
    const zeros = leadingZeroBits(sha256(claimChallenge("alice", ALICE_KEY, proof.nonce)))
    const overclaimed = { difficulty: zeros + 1, nonce: proof.nonce }
    const result = checkClaimProof({
      username: "alice",
      signingKey: ALICE_KEY,
      proof: overclaimed,
      minDifficulty: 4,
      hash: sha256
    })
    expect(rejection(result)).toBe("WrongWork")
  })

  it("decides TooEasy before any hashing", () => {
    const counting = countingHash()
    const result = checkClaimProof({
      username: "alice",
      signingKey: ALICE_KEY,
      proof: { difficulty: 9, nonce: 0 },
      minDifficulty: 10,
      hash: counting.hash
    })
    expect(rejection(result)).toBe("TooEasy")
    expect(counting.calls()).toBe(0)
  })

  it("verifies with exactly one hash evaluation", () => {
    const proof = solve("alice", ALICE_KEY, 8)
    const counting = countingHash()
    checkClaimProof({ username: "alice", signingKey: ALICE_KEY, proof, minDifficulty: 8, hash: counting.hash })
    checkClaimProof({
      username: "alice",
      signingKey: ALICE_KEY,
      proof: { difficulty: 8, nonce: proof.nonce + 1 },
      minDifficulty: 8,
      hash: counting.hash
    })
    expect(counting.calls()).toBe(2)
  })

  it("reports the difficulties in a ClaimRejected with a clear message", () => {
    const result = checkClaimProof({
      username: "alice",
      signingKey: ALICE_KEY,
      proof: { difficulty: 3, nonce: 0 },
      minDifficulty: 10,
      hash: sha256
    })
    const error = Either.getLeft(result)
    expect(error._tag).toBe("Some")
    if (error._tag !== "Some") return
    expect(error.value).toBeInstanceOf(ClaimRejected)
    expect(error.value.message).toBe(
      "name claim for \"alice\" rejected: its proof of work has difficulty 3, below the minimum of 10 this node accepts"
    )
    const wrong = new ClaimRejected({ username: "alice", reason: "WrongWork", difficulty: 10, minDifficulty: 10 })
    expect(wrong.message).toContain("does not hash to 10 leading zero bits")
  })

  it("rejects a hash that does not return 32 bytes", () => {
    const short: MemoryHardHash = (input) => sha256(input).subarray(0, 16)
    expect(() =>
      checkClaimProof({
        username: "alice",
        signingKey: ALICE_KEY,
        proof: { difficulty: 0, nonce: 0 },
        minDifficulty: 0,
        hash: short
      })
    ).toThrow(RangeError)
  })

  it.prop(
    "any solved proof checks at its difficulty and is TooEasy one above",
    [arbUsername, arbKeyHex, fc.integer({ min: 0, max: 6 }), fc.nat({ max: 2 ** 40 })],
    ([username, signingKey, difficulty, fromNonce]) => {
      const proof = solve(username, signingKey, difficulty, fromNonce)
      expect(rejection(checkClaimProof({ username, signingKey, proof, minDifficulty: difficulty, hash: sha256 })))
        .toBe("Accepted")
      expect(rejection(checkClaimProof({ username, signingKey, proof, minDifficulty: 0, hash: sha256 })))
        .toBe("Accepted")
      expect(rejection(checkClaimProof({ username, signingKey, proof, minDifficulty: difficulty + 1, hash: sha256 })))
        .toBe("TooEasy")
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )
})

describe("solveClaimStep", () => {
  it("does bounded work and says where to go on", () => {
    const counting = countingHash()
    // A hash that never has a zero bit: no step can succeed.
    const never: MemoryHardHash = (input) => {
      counting.hash(input)
      return new Uint8Array(32).fill(0xff)
    }
    const step = solveClaimStep({
      username: "alice",
      signingKey: ALICE_KEY,
      difficulty: 1,
      hash: never,
      fromNonce: 40,
      attempts: 25
    })
    expect(step).toEqual({ _tag: "NotYet", nextNonce: 65, tried: 25 })
    expect(counting.calls()).toBe(25)
  })

  it("solves difficulty 0 with the first nonce tried", () => {
    const step = solveClaimStep({
      username: "alice",
      signingKey: ALICE_KEY,
      difficulty: 0,
      hash: sha256,
      fromNonce: 7,
      attempts: 1
    })
    expect(step).toEqual({ _tag: "Solved", proof: { difficulty: 0, nonce: 7 }, tried: 1 })
  })

  it("wraps from the largest safe integer to 0", () => {
    const seen: Array<string> = []
    const never: MemoryHardHash = (input) => {
      seen.push(toHex(input.subarray(input.length - 8)))
      return new Uint8Array(32).fill(0xff)
    }
    const step = solveClaimStep({
      username: "alice",
      signingKey: ALICE_KEY,
      difficulty: 1,
      hash: never,
      fromNonce: Number.MAX_SAFE_INTEGER - 1,
      attempts: 3
    })
    expect(step).toEqual({ _tag: "NotYet", nextNonce: 1, tried: 3 })
    expect(seen).toEqual(["001ffffffffffffe", "001fffffffffffff", "0000000000000000"])
  })

  it("rejects invalid difficulties and attempt counts", () => {
    const base = { username: "alice", signingKey: ALICE_KEY, hash: sha256, fromNonce: 0 }
    expect(() => solveClaimStep({ ...base, difficulty: 65, attempts: 1 })).toThrow(RangeError)
    expect(() => solveClaimStep({ ...base, difficulty: -1, attempts: 1 })).toThrow(RangeError)
    expect(() => solveClaimStep({ ...base, difficulty: 2.5, attempts: 1 })).toThrow(RangeError)
    expect(() => solveClaimStep({ ...base, difficulty: 4, attempts: 0 })).toThrow(RangeError)
  })

  it.prop(
    "steps of any sizes find the same nonce as one big step",
    [
      arbUsername,
      arbKeyHex,
      fc.integer({ min: 0, max: 7 }),
      fc.nat({ max: 2 ** 40 }),
      fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 })
    ],
    ([username, signingKey, difficulty, fromNonce, chunks]) => {
      // Steps of any sizes, one after the other, find the same nonce as one big step and count the same work.
      const whole = solveClaimStep({ username, signingKey, difficulty, hash: sha256, fromNonce, attempts: 1 << 20 })
      let nonce = fromNonce
      let tried = 0
      for (let i = 0; ; i++) {
        const attempts = chunks[i % chunks.length] as number
        const step = solveClaimStep({ username, signingKey, difficulty, hash: sha256, fromNonce: nonce, attempts })
        tried += step.tried
        if (step._tag === "Solved") {
          expect(step.proof).toEqual(whole._tag === "Solved" ? whole.proof : undefined)
          expect(tried).toBe(whole.tried)
          return
        }
        expect(step.tried).toBe(attempts)
        nonce = step.nextNonce
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it("hashes the same bytes as claimChallenge", () => {
    const inputs: Array<string> = []
    const recording: MemoryHardHash = (input) => {
      inputs.push(toHex(input))
      return new Uint8Array(32).fill(0xff)
    }
    solveClaimStep({ username: "bob", signingKey: ALICE_KEY, difficulty: 3, hash: recording, fromNonce: 5, attempts: 2 })
    expect(inputs).toEqual([toHex(claimChallenge("bob", ALICE_KEY, 5)), toHex(claimChallenge("bob", ALICE_KEY, 6))])
    expect(inputs[0]?.startsWith(toHex(concatBytes(utf8(CLAIM_CHALLENGE_PREFIX), Uint8Array.of(0, 3))))).toBe(true)
  })
})
