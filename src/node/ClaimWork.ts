/**
 * The work a node does to claim a username, and the difficulties it uses: the
 * proof of work of `src/core/ClaimProof.ts` solved in bounded chunks, so a
 * daemon keeps answering its peers while it spends a couple of seconds of one
 * core on a claim, and a storer's check of someone else's proof. The
 * memory-hard hash is the seam: scrypt from `node:crypto` in
 * `src/platform/ScryptClaimHash.ts`, a cheap hash in tests. Solving starts at
 * a nonce drawn from Effect's `Random` (seeded in simulations), reads time
 * from Effect's `Clock` for progress reports, and can be interrupted between
 * chunks.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Layer, Random, Scheduler } from "effect"
import { type ClaimProof, expectedAttempts, type MemoryHardHash, solveClaimStep } from "../core/ClaimProof.js"

/** The proof-of-work difficulties of one node; `NodeConfig` carries them. */
export interface ClaimWorkConfig {
  /** Leading zero bits this node solves for when it claims a name (the difficulty written in its proofs). */
  readonly claimDifficulty: number
  /** Least difficulty this node accepts in the proofs of records it stores for others. */
  readonly minClaimDifficulty: number
}

/**
 * Default difficulties, for the scrypt hash of `src/platform/ScryptClaimHash.ts`
 * (N = 2^10, r = 8, p = 1: 1 MiB of memory per evaluation).
 *
 * One evaluation costs about 1.7 ms of CPU on one core of the reference
 * machine (2-core Linux VM, Node 20; 1.63-1.75 ms over five runs of
 * `npx tsx bench/claimCost.ts`, wall time more when other processes share the
 * core), so 2^10 = 1024 expected evaluations make a claim cost about 1.8 s of
 * one core: a short wait once per name for a person, while one core now
 * claims about 2,000 names an hour instead of the 45-80 million that an
 * Ed25519 signature and a SHA-256 (45-77 µs) allowed, some 30,000 times fewer;
 * 10,000 names cost about 5 core-hours instead of under a second. Solving
 * time is geometric: half of all claims take under 0.7 × the mean (~1.2 s),
 * one in twenty more than 3 × (~5.5 s). A storer pays one evaluation (~1.8 ms)
 * per proof it checks. Difficulty 11 would double every cost (~3.6 s per
 * claim), 9 halve it; each bit costs the honest user as much as the attacker,
 * so the default stays at a wait of about two seconds.
 *
 * Storers accept exactly the difficulty nodes claim at: raising
 * `minClaimDifficulty` later first needs nodes that claim higher, since a
 * record's proof carries the difficulty it was solved at.
 */
export const defaultClaimWorkConfig: ClaimWorkConfig = {
  claimDifficulty: 10,
  minClaimDifficulty: 10
}

/**
 * Told how the work goes: hash evaluations tried so far and the mean number a
 * solve needs (2^difficulty). The count can exceed the expectation: solving is
 * a lottery, not a countdown.
 */
export type ClaimProgress = (tried: number, expected: number) => Effect.Effect<void>

/** Solving and checking name claims' proofs of work. */
export interface ClaimWorkService {
  /** The memory-hard hash proofs are solved and checked with (one evaluation checks a proof). */
  readonly hash: MemoryHardHash
  /**
   * Finds a proof at `difficulty` for `username` and `signingKey` (64 hex
   * characters), trying a bounded number of nonces per chunk and yielding to
   * the event loop between chunks, so the node keeps serving requests. Calls
   * `onProgress` at most once per progress interval (250 ms of Clock time by
   * default). Interruptible between chunks. Dies with a RangeError for a
   * difficulty outside 0..64 or a malformed key (programming errors).
   */
  readonly solve: (
    username: string,
    signingKey: string,
    difficulty: number,
    onProgress?: ClaimProgress
  ) => Effect.Effect<ClaimProof>
}

/** How `ClaimWork.make` paces its work. */
export interface ClaimWorkOptions {
  /**
   * Nonces tried per chunk between two yields. With scrypt at ~1.7 ms an
   * evaluation, 8 keep a chunk near 14 ms: a request arriving meanwhile waits
   * at most that long.
   */
  readonly attemptsPerChunk: number
  /** Least Clock time between two progress reports. */
  readonly progressInterval: Duration.DurationInput
  /**
   * Where the solving fiber resumes after a chunk: a scheduler whose tasks run
   * after the host's pending I/O. The default, a zero-delay timer, works on
   * any host but idles up to 1 ms per chunk (Node clamps timers to 1 ms); the
   * platform layer passes one over `setImmediate`, which does not.
   */
  readonly yieldScheduler: Scheduler.Scheduler
}

/** Default pacing: 8 attempts per chunk, progress at most every 250 ms, yields through a zero-delay timer. */
export const defaultClaimWorkOptions: ClaimWorkOptions = {
  attemptsPerChunk: 8,
  progressInterval: Duration.millis(250),
  yieldScheduler: Scheduler.timer(0)
}

/**
 * Start nonces are drawn below 2^48, so the 2^53 safe nonces leave room for
 * any solve without wrapping (wrapping would still be correct).
 */
const START_NONCE_BOUND = 2 ** 48

/** Solving and checking name claims' proofs of work; see `ClaimWorkService`. */
export class ClaimWork extends Context.Tag("peerchat/ClaimWork")<ClaimWork, ClaimWorkService>() {
  /** The claim work over `hash`, paced by `options` (defaults: `defaultClaimWorkOptions`). */
  static readonly make = (hash: MemoryHardHash, options: Partial<ClaimWorkOptions> = {}): ClaimWorkService => {
    const { attemptsPerChunk, progressInterval, yieldScheduler } = { ...defaultClaimWorkOptions, ...options }
    if (!Number.isSafeInteger(attemptsPerChunk) || attemptsPerChunk < 1) {
      throw new RangeError(`attemptsPerChunk must be a positive integer, got ${attemptsPerChunk}`)
    }
    const intervalMs = Duration.toMillis(progressInterval)
    // `Effect.yieldNow()` on the default scheduler lets other fibers run but
    // resumes in a microtask, reaching Node's event loop (sockets, timers) only
    // once every 2048 yields: the node would not answer anyone for the whole
    // solve. Yielding on a macrotask scheduler lets pending I/O in first.
    const yieldToEventLoop = Effect.withScheduler(Effect.yieldNow(), yieldScheduler)
    const solve: ClaimWorkService["solve"] = (username, signingKey, difficulty, onProgress) =>
      Effect.gen(function*() {
        const expected = expectedAttempts(difficulty)
        let nonce = yield* Random.nextIntBetween(0, START_NONCE_BOUND)
        let tried = 0
        let lastReport = yield* Clock.currentTimeMillis
        for (;;) {
          const step = solveClaimStep({ username, signingKey, difficulty, hash, fromNonce: nonce, attempts: attemptsPerChunk })
          tried += step.tried
          if (step._tag === "Solved") return step.proof
          nonce = step.nextNonce
          if (onProgress !== undefined) {
            const now = yield* Clock.currentTimeMillis
            if (now - lastReport >= intervalMs) {
              lastReport = now
              yield* onProgress(tried, expected)
            }
          }
          yield* yieldToEventLoop
        }
      })
    return { hash, solve }
  }

  /** A layer of `ClaimWork.make(hash, options)`. */
  static readonly layer = (hash: MemoryHardHash, options: Partial<ClaimWorkOptions> = {}): Layer.Layer<ClaimWork> =>
    Layer.succeed(ClaimWork, ClaimWork.make(hash, options))
}
