import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Fiber, Random } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import {
  checkClaimProof,
  claimChallenge,
  leadingZeroBits,
  type MemoryHardHash,
  solveClaimStep
} from "../../src/core/ClaimProof.js"
import { ClaimWork } from "../../src/node/ClaimWork.js"
import {
  memoizedClaimHash,
  nodeClaimHash,
  immediateScheduler,
  layer,
  scryptClaimHash,
  scryptClaimMemoryBytes,
  scryptClaimParameters
} from "../../src/platform/ScryptClaimHash.js"
import { seededRandomBytes } from "../support/arbitraries.js"

const KEY = toHex(seededRandomBytes(5)(32))

describe("scryptClaimHash", () => {
  it("uses N = 2^10, r = 8, p = 1: 1 MiB per evaluation", () => {
    expect(scryptClaimParameters).toMatchObject({ N: 1024, r: 8, p: 1, keyLength: 32 })
    expect(scryptClaimMemoryBytes).toBe(1024 * 1024)
  })

  it("is deterministic and returns 32 bytes", () => {
    const input = claimChallenge("alice", KEY, 42)
    const first = scryptClaimHash(input)
    expect(first.length).toBe(32)
    expect(toHex(scryptClaimHash(input))).toBe(toHex(first))
    expect(toHex(scryptClaimHash(claimChallenge("alice", KEY, 43)))).not.toBe(toHex(first))
  })

  it("matches a known value", () => {
    // Computed independently with Python's hashlib.scrypt over hand-built challenge bytes:
    // "peerchat/name-claim/v1\n" ‖ 0005 ‖ "alice" ‖ 32 zero bytes ‖ u64 0, salt "peerchat/name-claim/scrypt/v1".
    expect(toHex(scryptClaimHash(claimChallenge("alice", "00".repeat(32), 0)))).toBe(
      "b465288fec5c6d9094631a0a05d2ab6ec6065152e61748f875b95ce89e9e0deb"
    )
    expect(toHex(scryptClaimHash(new Uint8Array(0)))).toBe(
      "16ef75d3555bc08e00038de41487162eba8bb50d6ec2e0195723acc3446b992c"
    )
  })

  it("solves and checks a claim at difficulty 4", () => {
    const step = solveClaimStep({
      username: "alice",
      signingKey: KEY,
      difficulty: 4,
      hash: scryptClaimHash,
      fromNonce: 0,
      attempts: 1000
    })
    expect(step._tag).toBe("Solved")
    if (step._tag !== "Solved") return
    const check = (username: string, nonce: number) =>
      checkClaimProof({
        username,
        signingKey: KEY,
        proof: { difficulty: 4, nonce },
        minDifficulty: 4,
        hash: scryptClaimHash
      })
    expect(Either.isRight(check("alice", step.proof.nonce))).toBe(true)
    // Under another name the same nonce passes only by chance (1 in 16 at difficulty 4).
    let accepted = 0
    for (let i = 0; i < 32; i++) {
      const other = `alice${i}`
      const passes = Either.isRight(check(other, step.proof.nonce))
      expect(passes).toBe(leadingZeroBits(scryptClaimHash(claimChallenge(other, KEY, step.proof.nonce))) >= 4)
      if (passes) accepted++
    }
    expect(accepted).toBeLessThanOrEqual(8)
  })

  it.live("yields to the event loop between chunks of scrypt work, with setImmediate", () =>
    Effect.gen(function*() {
      let calls = 0
      const counted: MemoryHardHash = (input) => {
        calls++
        return scryptClaimHash(input)
      }
      const work = ClaimWork.make(counted, { yieldScheduler: immediateScheduler, attemptsPerChunk: 8 })
      // Difficulty 64 is never solved here: the solve runs until interrupted.
      const solving = yield* Effect.fork(work.solve("carol", KEY, 64))
      // A chunk (8 evaluations, ~15 ms) outlasts a zero-delay timer, so the timer runs after the first one.
      const callsWhenServed = yield* Effect.promise(() => new Promise<number>((resolve) => setTimeout(() => resolve(calls), 0)))
      yield* Fiber.interrupt(solving)
      expect(callsWhenServed).toBeLessThanOrEqual(2 * 8)
    }).pipe(Effect.withRandom(Random.make(10))))

  it.effect("serves ClaimWork through its layer", () =>
    Effect.gen(function*() {
      const work = yield* ClaimWork
      expect(work.hash).toBe(nodeClaimHash)
      const proof = yield* work.solve("bob", KEY, 4)
      const result = checkClaimProof({ username: "bob", signingKey: KEY, proof, minDifficulty: 4, hash: scryptClaimHash })
      expect(Either.isRight(result)).toBe(true)
    }).pipe(Effect.provide(layer()), Effect.withRandom(Random.make(9))))

  it("the memoized hash answers like scrypt, computes each input once, and forgets the least recently used", () => {
    let computed = 0
    const memo = memoizedClaimHash((input) => {
      computed++
      return scryptClaimHash(input)
    }, 2)
    const [a, b, c] = [Uint8Array.of(1), Uint8Array.of(2), Uint8Array.of(3)]
    expect(memo(a)).toEqual(scryptClaimHash(a))
    expect(memo(a)).toEqual(scryptClaimHash(a))
    expect(computed).toBe(1)
    // A caller changing the answer it got does not change what the memo returns next.
    const answer = memo(b)
    answer.fill(0)
    expect(memo(b)).toEqual(scryptClaimHash(b))
    expect(computed).toBe(2)
    memo(a) // a is now the most recently used
    memo(c) // evicts b
    expect(computed).toBe(3)
    memo(a)
    expect(computed).toBe(3)
    memo(b)
    expect(computed).toBe(4)
  })
})
