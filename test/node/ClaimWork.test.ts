import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Either, Exit, Fiber, Random } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import { checkClaimProof, type MemoryHardHash } from "../../src/core/ClaimProof.js"
import { sha256 } from "../../src/core/Sha256.js"
import { ClaimWork, defaultClaimWorkConfig } from "../../src/node/ClaimWork.js"
import { seededRandomBytes } from "../support/arbitraries.js"

const KEY = toHex(seededRandomBytes(11)(32))

/** The nonce a challenge ends with (its last 8 bytes, a u64 below 2^53). */
const nonceOf = (challenge: Uint8Array): number => {
  const view = new DataView(challenge.buffer, challenge.byteOffset + challenge.length - 8, 8)
  return view.getUint32(0) * 0x1_0000_0000 + view.getUint32(4)
}

const ALL_ONES = new Uint8Array(32).fill(0xff)
const ALL_ZEROS = new Uint8Array(32)

/** A clock whose time moves only when the test says so (here: from inside the hash). */
const manualClock = () => {
  let now = 0
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    currentTimeMillis: Effect.sync(() => now),
    unsafeCurrentTimeNanos: () => BigInt(now) * 1_000_000n,
    currentTimeNanos: Effect.sync(() => BigInt(now) * 1_000_000n),
    sleep: () => Effect.void
  }
  return { clock, advance: (ms: number) => (now += ms) }
}

describe("ClaimWork", () => {
  it.effect("solves a proof that checks, through the layer", () =>
    Effect.gen(function*() {
      const work = yield* ClaimWork
      const proof = yield* work.solve("alice", KEY, 6)
      expect(proof.difficulty).toBe(6)
      const result = checkClaimProof({ username: "alice", signingKey: KEY, proof, minDifficulty: 6, hash: work.hash })
      expect(Either.isRight(result)).toBe(true)
    }).pipe(Effect.provide(ClaimWork.layer(sha256)), Effect.withRandom(Random.make(1))))

  it.effect("starts from a random nonce, replayed by the seed", () =>
    Effect.gen(function*() {
      const starts: Array<number> = []
      const recording: MemoryHardHash = (input) => {
        starts.push(nonceOf(input))
        return ALL_ZEROS
      }
      const work = ClaimWork.make(recording)
      const first = yield* work.solve("alice", KEY, 4).pipe(Effect.withRandom(Random.make(7)))
      const again = yield* work.solve("alice", KEY, 4).pipe(Effect.withRandom(Random.make(7)))
      const other = yield* work.solve("alice", KEY, 4).pipe(Effect.withRandom(Random.make(8)))
      expect(again).toEqual(first)
      expect(other.nonce).not.toBe(first.nonce)
      expect(starts).toEqual([first.nonce, again.nonce, other.nonce])
      for (const start of starts) {
        expect(start).toBeGreaterThanOrEqual(0)
        expect(start).toBeLessThan(2 ** 48)
      }
    }))

  it.effect("works in chunks of bounded size", () =>
    Effect.gen(function*() {
      // Succeeds on the 30th nonce tried; with 8 per chunk that is the 4th chunk.
      let calls = 0
      const chunkEnds: Array<number> = []
      const hash: MemoryHardHash = () => (++calls === 30 ? ALL_ZEROS : ALL_ONES)
      const work = ClaimWork.make(hash, { attemptsPerChunk: 8, progressInterval: 0 })
      const proof = yield* work.solve("alice", KEY, 12, (tried) => Effect.sync(() => chunkEnds.push(tried)))
      expect(calls).toBe(30)
      expect(chunkEnds).toEqual([8, 16, 24])
      expect(proof.difficulty).toBe(12)
    }).pipe(Effect.withRandom(Random.make(2))))

  it.live("yields to the event loop between chunks, so the node keeps serving", () =>
    Effect.gen(function*() {
      // A hash that never solves: the solve runs until interrupted.
      let calls = 0
      const never: MemoryHardHash = () => {
        calls++
        return ALL_ONES
      }
      const work = ClaimWork.make(never, { attemptsPerChunk: 4 })
      const solving = yield* Effect.fork(work.solve("alice", KEY, 1))
      // A timer task stands for a request arriving on a socket: it must run after a chunk or two,
      // not after the 2048 microtask turns that the default scheduler allows itself.
      const callsWhenServed = yield* Effect.promise(() => new Promise<number>((resolve) => setTimeout(() => resolve(calls), 0)))
      const exit = yield* Fiber.interrupt(solving)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(callsWhenServed).toBeLessThanOrEqual(3 * 4)
      const callsAfterInterrupt = calls
      yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 5)))
      expect(calls).toBe(callsAfterInterrupt)
    }).pipe(Effect.withRandom(Random.make(3))))

  it.effect("reports progress at most once per interval of Clock time", () => {
    // Every evaluation takes 10 ms of Clock time; the 201st nonce tried solves.
    const { clock, advance } = manualClock()
    return Effect.gen(function*() {
      let calls = 0
      const hash: MemoryHardHash = () => {
        advance(10)
        return ++calls === 201 ? ALL_ZEROS : ALL_ONES
      }
      const reports: Array<{ readonly tried: number; readonly expected: number; readonly at: number }> = []
      const work = ClaimWork.make(hash, { attemptsPerChunk: 5 })
      yield* work.solve(
        "alice",
        KEY,
        9,
        (tried, expected) => Effect.map(Clock.currentTimeMillis, (at) => void reports.push({ tried, expected, at }))
      )
      // 50 ms per chunk: a report every fifth chunk, none after the solving one.
      expect(reports.map((report) => report.tried)).toEqual([25, 50, 75, 100, 125, 150, 175, 200])
      expect(reports.map((report) => report.at)).toEqual([250, 500, 750, 1000, 1250, 1500, 1750, 2000])
      expect(reports.every((report) => report.expected === 512)).toBe(true)
    }).pipe(Effect.withRandom(Random.make(4)), Effect.withClock(clock))
  })

  it.effect("dies on a difficulty outside 0..64", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(ClaimWork.make(sha256).solve("alice", KEY, 65))
      expect(Exit.isFailure(exit) && !Exit.isInterrupted(exit)).toBe(true)
    }))

  it("refuses a chunk of no attempts", () => {
    expect(() => ClaimWork.make(sha256, { attemptsPerChunk: 0 })).toThrow(RangeError)
  })

  it("claims at the difficulty it accepts by default", () => {
    expect(defaultClaimWorkConfig.minClaimDifficulty).toBe(defaultClaimWorkConfig.claimDifficulty)
    expect(defaultClaimWorkConfig.claimDifficulty).toBeGreaterThan(0)
  })
})
