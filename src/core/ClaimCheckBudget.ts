/**
 * How many name-claim checks other peers may make this node run. Checking a
 * claim costs the checker one evaluation of the memory-hard hash (scrypt,
 * about 1.7 ms of CPU) and costs whoever sends it nothing: a record or postage
 * whose claim carries a garbage nonce is signed in microseconds. So the
 * evaluations that peers cause get a budget of their own: a token bucket per
 * peer and one for the whole node, checked right before an evaluation, after
 * every cheaper check has passed. An evaluation over budget does not run; the
 * caller refuses the request that brought the claim (`RequestRefused`
 * Overloaded) and the peer may try again later.
 *
 * The node's budget keeps a reserve for quiet peers. Without it a handful of
 * node ids, each flooding at its own rate (20 at 5 a second), would take the
 * whole node's budget and every honest claim with it. The last `reserve`
 * tokens of the node's bucket go only to a peer that still holds a token in
 * a second, much slower bucket of its own (`quietBurst`, refilled at
 * `quietRatePerMinute`): an honest peer sends a new claim a few times an
 * hour and always holds one, a flooding id spends its few within seconds
 * and then gets one a minute. Emptying the reserve for good then takes
 * thousands of ids instead of twenty.
 *
 * A claim already checked costs nothing and takes no token: the budget
 * remembers the digests of recent claims whose work is at least the minimum
 * difficulty (valid claims, which a flooder cannot forge), so an honest
 * sender's record arriving again with every message or republication is
 * never refused. Mutable, like `TokenBuckets`; time is an argument.
 *
 * @since 0.4.0
 */
import { leadingZeroBits, toHex } from "./Bytes.js"
import { CLAIM_HASH_BYTES, type MemoryHardHash } from "./ClaimProof.js"
import { makeTokenBucket, take, type TokenBucket, TokenBuckets } from "./TokenBucket.js"
import type { ClaimRules } from "./UserRecord.js"
import { countDown } from "./KeyCounts.js"

/** Rates and bursts of the claim-check budget, in hash evaluations. */
export interface ClaimCheckBudgetConfig {
  /** Evaluations per second one peer may cause, sustained. */
  readonly perPeerRate: number
  /** Evaluations one peer may cause in a burst. */
  readonly perPeerBurst: number
  /** Evaluations per second all peers together may cause, sustained. */
  readonly globalRate: number
  /** Evaluations all peers together may cause in a burst. */
  readonly globalBurst: number
  /** Tokens of the node's bucket kept for quiet peers: below it only a peer holding a quiet token is admitted. */
  readonly reserve: number
  /** Quiet tokens a peer holds at most: how many reserve evaluations it may cause in a row. */
  readonly quietBurst: number
  /** Quiet tokens a peer regains per minute. */
  readonly quietRatePerMinute: number
  /** Peers whose buckets are remembered; beyond it the least recently active is forgotten. */
  readonly maxTrackedPeers: number
  /** Valid claims remembered, so that checking one again is free; the least recently used is forgotten. */
  readonly knownClaims: number
}

/**
 * Defaults. An honest peer sends a claim this node has not seen a few times
 * an hour (its own record when it republishes, one per record when it hands
 * records over after a join): 5 a second with bursts of 20 is the pace the
 * transport's request limits already allow for `Store` and `StoreMail`.
 * In total 100 evaluations a second (bursts of 200), about 17 % of one core
 * with scrypt at 1.7 ms, however many peers ask; the last 50 of the node's
 * tokens for peers holding a quiet token (5 at most, one more a minute).
 */
export const defaultClaimCheckBudget: ClaimCheckBudgetConfig = Object.freeze({
  perPeerRate: 5,
  perPeerBurst: 20,
  globalRate: 100,
  globalBurst: 200,
  reserve: 50,
  quietBurst: 5,
  quietRatePerMinute: 1,
  maxTrackedPeers: 4096,
  knownClaims: 4096
})

/** Which budget refused an evaluation: the peer's own, or the node's. */
export type ClaimCheckRefusal = "ClaimPeerRate" | "ClaimGlobalRate"

/** Whether one evaluation may run now. */
export type ClaimCheckAdmission =
  | { readonly _tag: "Evaluate" }
  | {
    readonly _tag: "Refuse"
    readonly reason: ClaimCheckRefusal
    /** Least ms until the same evaluation would be admitted if nothing else is taken meanwhile (`Infinity`: never). */
    readonly retryAfterMillis: number
  }

/** What `ClaimCheckBudget.check` did with a check. */
export type ClaimCheckOutcome<A> =
  /** The check ran in full (its hash evaluation admitted, or the claim already known): `result` is its answer. */
  | { readonly _tag: "Checked"; readonly result: A }
  /** The check needed an evaluation over budget: its answer is meaningless and must be dropped. */
  | { readonly _tag: "Refused"; readonly reason: ClaimCheckRefusal; readonly retryAfterMillis: number }

/** What `ClaimCheckBudget.prepare` decided. */
export type ClaimCheckStep<A> =
  | ClaimCheckOutcome<A>
  /**
   * The check needs an evaluation, and a token was taken for it (or its claim is in flight):
   * `evaluate` runs it (once; later calls give the same outcome); `settle` must follow when it
   * will not run (the caller gave up), and may follow in any case.
   */
  | { readonly _tag: "Admitted"; readonly evaluate: () => ClaimCheckOutcome<A>; readonly settle: () => void }

/** What the budget admitted and refused since it was made. */
export interface ClaimCheckStats {
  /** Hash evaluations run (an admitted one whose caller gave up, or whose claim became known meanwhile, is not one). */
  readonly evaluations: number
  /** Claims answered from the known claims, without an evaluation. */
  readonly known: number
  /** Evaluations refused, by the budget that refused them. */
  readonly refused: Readonly<Record<ClaimCheckRefusal, number>>
}

const EVALUATE: ClaimCheckAdmission = Object.freeze({ _tag: "Evaluate" })

/**
 * What the gated hash returns in place of an evaluation it refused: no
 * leading zero bit, so any claim of difficulty 1 or more fails on it. `check`
 * reports such a run as Refused whatever the check answered.
 */
const NOT_EVALUATED: Uint8Array = new Uint8Array(CLAIM_HASH_BYTES).fill(0xff)

const requirePositive = (name: string, value: number): void => {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a finite number > 0, got ${value}`)
}

const requireCount = (name: string, value: number): void => {
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`)
}

/** The claim-check budgets of one node: per peer, global, and the claims it already knows to be valid. */
export class ClaimCheckBudget {
  readonly config: ClaimCheckBudgetConfig
  private readonly peers: TokenBuckets
  private readonly quiet: TokenBuckets
  private global: TokenBucket
  /** Challenge (hex) → digest of valid claims, least recently used first. Bound: `knownClaims`. */
  private readonly knownDigests = new Map<string, Uint8Array>()
  private evaluations = 0
  private knownHits = 0
  private readonly refused: Record<ClaimCheckRefusal, number> = { ClaimPeerRate: 0, ClaimGlobalRate: 0 }

  /** Full buckets at `now`; throws a RangeError for limits that cannot work. */
  constructor(now: number, config: Partial<ClaimCheckBudgetConfig> = {}) {
    this.config = { ...defaultClaimCheckBudget, ...config }
    const { globalBurst, globalRate, knownClaims, maxTrackedPeers, perPeerBurst, perPeerRate, quietBurst, quietRatePerMinute, reserve } =
      this.config
    requirePositive("perPeerRate", perPeerRate)
    requirePositive("globalRate", globalRate)
    requirePositive("quietRatePerMinute", quietRatePerMinute)
    requireCount("perPeerBurst", perPeerBurst)
    requireCount("globalBurst", globalBurst)
    requireCount("quietBurst", quietBurst)
    requireCount("maxTrackedPeers", maxTrackedPeers)
    requireCount("knownClaims", knownClaims)
    if (!Number.isSafeInteger(reserve) || reserve < 0 || reserve >= globalBurst) {
      throw new RangeError(`reserve must be an integer >= 0 and below globalBurst (${globalBurst}), got ${reserve}`)
    }
    this.peers = new TokenBuckets({ ratePerSecond: perPeerRate, capacity: perPeerBurst, maxKeys: maxTrackedPeers })
    this.quiet = new TokenBuckets({ ratePerSecond: quietRatePerMinute / 60, capacity: quietBurst, maxKeys: maxTrackedPeers })
    this.global = makeTokenBucket(globalBurst, now)
  }

  /**
   * Whether one evaluation on behalf of `peer` may run at `now`, taking a
   * token from the peer's bucket, then from the node's. The narrower bucket
   * comes first, so a flooding peer empties its own budget and leaves the
   * node's to everyone else. The node's last `reserve` tokens also cost the
   * peer a quiet token. A refusal is counted.
   */
  admit(peer: string, now: number): ClaimCheckAdmission {
    const byPeer = this.peers.take(peer, now)
    if (!byPeer.allowed) return this.refuse("ClaimPeerRate", byPeer.retryAfterMillis)
    const { globalBurst: capacity, globalRate: ratePerSecond, reserve } = this.config
    // A take of nothing refills the node's bucket to `now`, to see whether this token is one of the reserve.
    this.global = take(this.global, { ratePerSecond, capacity, now, cost: 0 }).bucket
    // A quiet token is spent only on an evaluation that runs: the node's bucket must hold a token.
    if (this.global.tokens >= 1 && this.global.tokens - 1 < reserve) {
      const quietly = this.quiet.take(peer, now)
      if (!quietly.allowed) {
        // When the node's bucket is back above the reserve, or the peer's next quiet token is due, whichever is first.
        const aboveReserve = Math.ceil(((reserve + 1 - this.global.tokens) * 1000) / ratePerSecond)
        return this.refuse("ClaimGlobalRate", Math.min(aboveReserve, quietly.retryAfterMillis))
      }
    }
    const globally = take(this.global, { ratePerSecond, capacity, now })
    this.global = globally.bucket
    if (!globally.allowed) return this.refuse("ClaimGlobalRate", globally.retryAfterMillis)
    return EVALUATE
  }

  /**
   * Runs `run` (a pure check such as `acceptUserRecord` or `checkPostage`,
   * given the claim rules to use) with `rules.hash` gated by this budget on
   * behalf of `peer` at `now`, all at once: `prepare`, then the admitted
   * evaluation right away.
   */
  check<A>(peer: string, now: number, rules: ClaimRules, run: (claim: ClaimRules) => A): ClaimCheckOutcome<A> {
    const step = this.prepare(peer, now, rules, run)
    return step._tag === "Admitted" ? step.evaluate() : step
  }

  /**
   * Decides a check without evaluating anything yet. `run` first goes as far
   * as it can with the claims known to be valid: its cheaper steps run as they
   * always do, and a check that ends before the hash, or needs only known
   * claims, is Checked at once, with no token. A check that needs an
   * evaluation takes a token from the budget (or is Refused at once), and is
   * Admitted: `evaluate` runs `run` again with the real hash (the cheap steps
   * a second time), the first evaluation on the token taken (a further one
   * asks the budget again). So a node can make admitted evaluations wait
   * their turn (see `ClaimPacing`) while nothing else waits, and the waiting
   * ones are never more than the budget admitted.
   *
   * A claim whose admitted evaluation has not run yet is *in flight*: a copy
   * of it (the same record sent again meanwhile) takes no token and is
   * Admitted at once; when it runs the claim is usually known by then, and
   * only if not (junk, or the first check gave up) does it ask the budget.
   * Every Admitted step must end with `settle`, run or not.
   */
  prepare<A>(peer: string, now: number, rules: ClaimRules, run: (claim: ClaimRules) => A): ClaimCheckStep<A> {
    let unknown: string | undefined
    let inFlightOnly = false
    const knownUsed: Array<string> = []
    const probe: MemoryHardHash = (input) => {
      const key = toHex(input)
      if (this.knownDigests.has(key)) knownUsed.push(key)
      else if (this.inFlight.has(key)) inFlightOnly = true
      else unknown ??= key
      return this.knownDigests.get(key)?.slice() ?? NOT_EVALUATED.slice()
    }
    const probed = run({ minDifficulty: rules.minDifficulty, hash: probe })
    if (unknown === undefined && !inFlightOnly) {
      for (const key of knownUsed) this.touchKnown(key)
      return { _tag: "Checked", result: probed }
    }
    if (unknown === undefined) return this.admitted(peer, now, rules, run, undefined)
    const admission = this.admit(peer, now)
    if (admission._tag === "Refuse") return { _tag: "Refused", reason: admission.reason, retryAfterMillis: admission.retryAfterMillis }
    this.inFlight.set(unknown, (this.inFlight.get(unknown) ?? 0) + 1)
    return this.admitted(peer, now, rules, run, unknown)
  }

  /** Claims with an admitted evaluation not run yet, and how many: at most what the budget admitted. */
  private readonly inFlight = new Map<string, number>()

  /**
   * An Admitted step: `evaluate` runs once; `settle` ends the claim's flight, evaluated or not.
   * `flying` is the claim a token was taken for (and put in flight); undefined for a copy of a
   * claim already in flight, which took none.
   */
  private admitted<A>(
    peer: string,
    now: number,
    rules: ClaimRules,
    run: (claim: ClaimRules) => A,
    flying: string | undefined
  ): ClaimCheckStep<A> {
    let settled = false
    let outcome: ClaimCheckOutcome<A> | undefined
    const settle = () => {
      if (settled || flying === undefined) return
      settled = true
      countDown(this.inFlight, flying)
    }
    return {
      _tag: "Admitted",
      evaluate: () => {
        outcome ??= this.evaluate(peer, now, rules, run, flying !== undefined)
        settle()
        return outcome
      },
      settle
    }
  }

  /** `run` with the real hash, its first evaluation on a token already taken when `withToken`; a refused one makes it Refused. */
  private evaluate<A>(peer: string, now: number, rules: ClaimRules, run: (claim: ClaimRules) => A, withToken: boolean): ClaimCheckOutcome<A> {
    let admitted = withToken
    let refusal: ClaimCheckAdmission | undefined
    const gated: MemoryHardHash = (input) => {
      const key = toHex(input)
      if (this.knownDigests.has(key)) return this.touchKnown(key)
      if (refusal !== undefined) return NOT_EVALUATED.slice()
      if (!admitted) {
        const admission = this.admit(peer, now)
        if (admission._tag === "Refuse") {
          refusal = admission
          return NOT_EVALUATED.slice()
        }
      }
      admitted = false
      this.evaluations++
      const digest = rules.hash(input)
      // Only valid work is remembered: garbage nonces (which cost the sender nothing) cannot push
      // honest claims out, while one valid claim costs its maker 2^difficulty evaluations.
      if (digest.length === CLAIM_HASH_BYTES && leadingZeroBits(digest) >= rules.minDifficulty) this.remember(key, digest)
      return digest
    }
    const result = run({ minDifficulty: rules.minDifficulty, hash: gated })
    return refusal === undefined || refusal._tag === "Evaluate"
      ? { _tag: "Checked", result }
      : { _tag: "Refused", reason: refusal.reason, retryAfterMillis: refusal.retryAfterMillis }
  }

  /** A known claim's digest, counted as used and made the most recently used. */
  private touchKnown(key: string): Uint8Array {
    const known = this.knownDigests.get(key) as Uint8Array // callers checked
    this.knownDigests.delete(key)
    this.knownDigests.set(key, known)
    this.knownHits++
    return known.slice()
  }

  /** Peers whose buckets are remembered: at most `maxTrackedPeers`. */
  get trackedPeers(): number {
    return this.peers.size
  }

  /** Evaluations admitted, claims answered from memory, and refusals so far. */
  stats(): ClaimCheckStats {
    return { evaluations: this.evaluations, known: this.knownHits, refused: { ...this.refused } }
  }

  private remember(key: string, digest: Uint8Array): void {
    this.knownDigests.set(key, digest.slice())
    if (this.knownDigests.size > this.config.knownClaims) {
      const oldest = this.knownDigests.keys().next()
      if (oldest.done !== true) this.knownDigests.delete(oldest.value)
    }
  }

  private refuse(reason: ClaimCheckRefusal, retryAfterMillis: number): ClaimCheckAdmission {
    this.refused[reason] += 1
    return { _tag: "Refuse", reason, retryAfterMillis }
  }
}

/** Longest wait a refusal suggests: a minute (a hint beyond that says nothing useful). */
const MAX_RETRY_HINT_MILLIS = 60_000

/**
 * What the peer whose claim was not checked is told, in the `detail` of its
 * `RequestRefused` (Overloaded): the budget that refused it and when a token
 * is due (whole ms, at most a minute), worded like the request limits' refusals.
 */
export const claimRefusalDetail = (reason: ClaimCheckRefusal, retryAfterMillis: number): string =>
  `claim check budget (${reason}); retry in ${Math.min(Math.ceil(retryAfterMillis), MAX_RETRY_HINT_MILLIS)} ms`
