/**
 * What a name claim costs, before and after the proof of work, on this
 * machine and one core. Measures, in one run: one evaluation of the scrypt
 * claim hash (also what a storer pays to check a proof); the claim as it was
 * (sign the user record with Ed25519, hash the user key with SHA-256); and
 * whole solves at the default difficulty through the `ClaimWork` service, with
 * its chunking and yields, until `--solves` are done or `--budget` seconds
 * have passed (a solve under way is finished, so the whole run takes about a
 * minute). Prints wall and CPU times, and names per core-hour (CPU time, so
 * other load on the machine counts less) before and after, with their ratio.
 * Solve times are geometric, so the mean of a few dozen solves is only good to
 * about ±20 %; the "expected" rows (2^difficulty × one evaluation) are the
 * steadier figures.
 *
 *   npx tsx bench/claimCost.ts [--evals 500] [--solves 40] [--budget 45] [--difficulty 10] [--seed 1]
 */
import { cpuUsage } from "node:process"
import { parseArgs } from "node:util"
import { Effect, Random } from "effect"
import { toHex } from "../src/core/Bytes.js"
import { checkClaimProof, claimChallenge, expectedAttempts, type MemoryHardHash } from "../src/core/ClaimProof.js"
import { nodeIdFromPublicKey } from "../src/core/Id.js"
import { type PublicKeyHex, signUserRecord, type UnsignedUserRecord } from "../src/core/UserRecord.js"
import { type Username, userKey } from "../src/core/Username.js"
import { ClaimWork, defaultClaimWorkConfig } from "../src/node/ClaimWork.js"
import { sign, signingKeyFromSeed } from "../src/platform/NodeCrypto.js"
import {
  immediateScheduler,
  scryptClaimHash,
  scryptClaimMemoryBytes,
  scryptClaimParameters
} from "../src/platform/ScryptClaimHash.js"
import { percentile, seededBytes } from "./support.js"

const { values: args } = parseArgs({
  options: {
    evals: { type: "string", default: "500" },
    solves: { type: "string", default: "40" },
    budget: { type: "string", default: "45" },
    difficulty: { type: "string", default: String(defaultClaimWorkConfig.claimDifficulty) },
    seed: { type: "string", default: "1" }
  }
})
const evals = Number(args.evals)
const maxSolves = Number(args.solves)
const budgetMs = Number(args.budget) * 1000
const difficulty = Number(args.difficulty)
const seed = Number(args.seed)

const HOUR_MS = 3_600_000
const random = seededBytes(seed)
const keyPair = signingKeyFromSeed(random(32))
const signingKey = toHex(keyPair.publicKey) as PublicKeyHex

/** Wall and CPU milliseconds of `run`. */
const timed = <A>(run: () => A): { readonly result: A; readonly wallMs: number; readonly cpuMs: number } => {
  const cpuStart = cpuUsage()
  const wallStart = performance.now()
  const result = run()
  const wallMs = performance.now() - wallStart
  const cpu = cpuUsage(cpuStart)
  return { result, wallMs, cpuMs: (cpu.user + cpu.system) / 1000 }
}

// -- 1. One scrypt evaluation -----------------------------------------------------

const evaluate = (hash: MemoryHardHash, count: number): void => {
  for (let i = 0; i < count; i++) hash(claimChallenge("bench-eval", signingKey, i))
}
evaluate(scryptClaimHash, 20) // warm-up
const evalRun = timed(() => evaluate(scryptClaimHash, evals))
const evalMs = evalRun.wallMs / evals
const checkRun = timed(() => {
  for (let i = 0; i < 100; i++) {
    checkClaimProof({
      username: "bench-check",
      signingKey,
      proof: { difficulty, nonce: i },
      minDifficulty: difficulty,
      hash: scryptClaimHash
    })
  }
})
const checkMs = checkRun.wallMs / 100

// -- 2. The claim as it was: sign the record, hash the user key ----------------------

const unsignedRecord = (username: string): UnsignedUserRecord => ({
  username: username as Username,
  signingKey,
  encryptionKey: toHex(random(32)) as PublicKeyHex,
  nodeId: nodeIdFromPublicKey(keyPair.publicKey),
  addresses: [{ host: "192.0.2.1", port: 4001 }],
  sequence: 1,
  issuedAt: 1_700_000_000_000,
  expiresAt: 1_700_000_000_000 + 7 * 24 * HOUR_MS,
  // The old claim carried no work; the field is filled so the record has today's shape.
  claim: { difficulty: 0, nonce: 0 }
})
const claimBefore = (i: number): void => {
  const username = `bench-${i}`
  signUserRecord(unsignedRecord(username), (message) => sign(keyPair.privateKey, message))
  userKey(username as Username)
}
for (let i = 0; i < 200; i++) claimBefore(i) // warm-up
let beforeCount = 0
const beforeRun = timed(() => {
  const start = performance.now()
  while (performance.now() - start < 2000) claimBefore(beforeCount++)
})
const beforeMs = beforeRun.wallMs / beforeCount

// -- 3. Whole solves at the difficulty, through ClaimWork ---------------------------

interface Solve {
  readonly wallMs: number
  readonly cpuMs: number
  readonly tried: number
}

const solves: Array<Solve> = []
let tried = 0
// As the platform layer builds it, with a hash that counts its evaluations.
const work = ClaimWork.make((input) => {
  tried++
  return scryptClaimHash(input)
}, { yieldScheduler: immediateScheduler })
console.error(`solving at difficulty ${difficulty} until ${maxSolves} solves or ${args.budget} s ...`)
const solvesStart = performance.now()
await Effect.runPromise(
  Effect.gen(function*() {
    while (solves.length < maxSolves && performance.now() - solvesStart < budgetMs) {
      tried = 0
      const cpuStart = cpuUsage()
      const wallStart = performance.now()
      yield* work.solve(`bench-user-${solves.length}`, signingKey, difficulty)
      const cpu = cpuUsage(cpuStart)
      solves.push({ wallMs: performance.now() - wallStart, cpuMs: (cpu.user + cpu.system) / 1000, tried })
    }
  }).pipe(Effect.withRandom(Random.make(seed)))
)
const solvesTotalMs = performance.now() - solvesStart

// -- Report -------------------------------------------------------------------------

const mean = (values: ReadonlyArray<number>): number => values.reduce((sum, value) => sum + value, 0) / values.length
const wall = solves.map((solve) => solve.wallMs)
const meanSolveMs = mean(wall)
const meanSolveCpuMs = mean(solves.map((solve) => solve.cpuMs))
const meanTried = mean(solves.map((solve) => solve.tried))
const evalCpuMs = evalRun.cpuMs / evals
const beforeCpuMs = beforeRun.cpuMs / beforeCount
const expected = expectedAttempts(difficulty)
const perHour = (cpuMs: number) => Math.round(HOUR_MS / cpuMs)
const ms = (value: number) => value.toFixed(value < 10 ? 2 : 0)
const count = (value: number) => value.toLocaleString("en-US")

const { N, r, p } = scryptClaimParameters
console.log(
  `\nName-claim cost on one core: scrypt N=${N} r=${r} p=${p} (${scryptClaimMemoryBytes / 1024} KiB), ` +
    `difficulty ${difficulty} (${count(expected)} expected evaluations), seed ${seed}.\n`
)
console.log("| measure | wall | CPU |")
console.log("|---|---|---|")
console.log(`| one scrypt evaluation (mean of ${evals}) | ${ms(evalMs)} ms | ${ms(evalCpuMs)} ms |`)
console.log(`| checking a proof: one evaluation (mean of 100) | ${ms(checkMs)} ms | ${ms(checkRun.cpuMs / 100)} ms |`)
console.log(
  `| claim before: Ed25519 sign + SHA-256 (mean of ${count(beforeCount)}) | ${(beforeMs * 1000).toFixed(1)} µs | ` +
    `${(beforeCpuMs * 1000).toFixed(1)} µs |`
)
console.log(
  `| solve, mean of ${solves.length} (${(solvesTotalMs / 1000).toFixed(1)} s in all) | ${ms(meanSolveMs)} ms | ` +
    `${ms(meanSolveCpuMs)} ms |`
)
console.log(`| solve p50 / p95 / max | ${ms(percentile(wall, 50))} / ${ms(percentile(wall, 95))} / ${ms(Math.max(...wall))} ms | |`)
console.log(
  `| per evaluation within solves (chunks, yields) | ${ms(meanSolveMs / meanTried)} ms | ` +
    `${ms(meanSolveCpuMs / meanTried)} ms |`
)
console.log(`| solve, expected: ${count(expected)} × one evaluation | ${ms(expected * evalMs)} ms | ${ms(expected * evalCpuMs)} ms |`)
console.log(
  `| solve, expected: ${count(expected)} × one evaluation within solves | ${ms(expected * meanSolveMs / meanTried)} ms | ` +
    `${ms(expected * meanSolveCpuMs / meanTried)} ms |`
)
console.log(`\nEvaluations per solve: mean ${meanTried.toFixed(0)} (expected ${count(expected)}); each: ${solves.map((solve) => solve.tried).join(" ")}`)

const before = perHour(beforeCpuMs)
const afterMeasured = perHour(meanSolveCpuMs + beforeCpuMs)
const afterExpected = perHour(expected * meanSolveCpuMs / meanTried + beforeCpuMs)
console.log("\n| names per core-hour (CPU time) | names | ratio to before |")
console.log("|---|---|---|")
console.log(`| before: sign + hash | ${count(before)} | 1 |`)
console.log(`| after, measured mean solve | ${count(afterMeasured)} | 1 / ${count(Math.round(before / afterMeasured))} |`)
console.log(`| after, expected solve (2^d × in-solve evaluation) | ${count(afterExpected)} | 1 / ${count(Math.round(before / afterExpected))} |`)
console.log(
  `\nA storer checks ${count(perHour(checkRun.cpuMs / 100))} proofs per core-hour; 10,000 names cost ` +
    `${(10_000 / afterExpected).toFixed(1)} core-hours instead of ` +
    `${(10_000 * beforeCpuMs / 1000).toFixed(1)} core-seconds.`
)
