/**
 * The claim-check budget: one peer sending claims with garbage nonces is held
 * to its burst, then its rate; many peers together to the node's; a claim
 * already known valid costs neither an evaluation nor a token; a refused
 * check's answer never escapes, whatever the check said.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import {
  ClaimCheckBudget,
  type ClaimCheckOutcome,
  type ClaimCheckBudgetConfig,
  claimRefusalDetail,
  defaultClaimCheckBudget
} from "../../src/core/ClaimCheckBudget.js"
import { checkClaimProof, type ClaimProof, type MemoryHardHash } from "../../src/core/ClaimProof.js"
import { sha256 } from "../../src/core/Sha256.js"
import type { ClaimRules } from "../../src/core/UserRecord.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { solvedClaim } from "../support/claims.js"

const MIN_DIFFICULTY = 10
const KEY = toHex(seededRandomBytes(7)(32))

/** Claim rules over sha256 that count their evaluations: the cost a check puts on the node. */
const countingRules = (): { readonly rules: ClaimRules; readonly evaluations: () => number } => {
  let evaluations = 0
  const hash: MemoryHardHash = (input) => {
    evaluations++
    return sha256(input)
  }
  return { rules: { minDifficulty: MIN_DIFFICULTY, hash }, evaluations: () => evaluations }
}

/** A claim of `username` at the minimum difficulty whose nonce is junk (not a solution, with overwhelming odds). */
const garbageClaim = (n: number): ClaimProof => ({ difficulty: MIN_DIFFICULTY, nonce: 1_000_000_007 * (n + 1) })

/** Checks `proof` for `username` as a storer does, through `budget` on behalf of `peer` at `now`. */
const checkVia = (
  budget: ClaimCheckBudget,
  peer: string,
  now: number,
  rules: ClaimRules,
  username: string,
  proof: ClaimProof
): ClaimCheckOutcome<boolean> =>
  budget.check(peer, now, rules, (claim) =>
    Either.isRight(
      checkClaimProof({ username, signingKey: KEY, proof, minDifficulty: claim.minDifficulty, hash: claim.hash })
    ))

/** How many of `count` garbage claims from `peer` at `now` were evaluated (not refused). */
const flood = (budget: ClaimCheckBudget, peer: string, count: number, now: number, rules: ClaimRules): number => {
  let checked = 0
  for (let n = 0; n < count; n++) {
    if (checkVia(budget, peer, now, rules, `junk${n}`, garbageClaim(n))._tag === "Checked") checked++
  }
  return checked
}

describe("ClaimCheckBudget", () => {
  it("cuts one peer flooding garbage claims to its burst, then its rate, and counts the refusals", () => {
    const budget = new ClaimCheckBudget(0)
    const { evaluations, rules } = countingRules()
    expect(flood(budget, "flooder", 1000, 0, rules)).toBe(defaultClaimCheckBudget.perPeerBurst)
    expect(evaluations()).toBe(20)
    // Two seconds later it has earned two seconds' worth: 10 more, however hard it floods.
    expect(flood(budget, "flooder", 1000, 2000, rules)).toBe(2 * defaultClaimCheckBudget.perPeerRate)
    expect(evaluations()).toBe(30)
    // A minute's silence earns no more than one burst.
    expect(flood(budget, "flooder", 1000, 62_000, rules)).toBe(defaultClaimCheckBudget.perPeerBurst)
    expect(budget.stats()).toEqual({
      evaluations: 50,
      known: 0,
      refused: { ClaimPeerRate: 3000 - 50, ClaimGlobalRate: 0 }
    })
    // Another peer has its own budget, untouched.
    expect(flood(budget, "honest", 5, 62_000, rules)).toBe(5)
  })

  it("a refused check says which budget refused and when a token is due", () => {
    const budget = new ClaimCheckBudget(0, { perPeerBurst: 1, perPeerRate: 5 })
    const { rules } = countingRules()
    expect(checkVia(budget, "p", 0, rules, "a", garbageClaim(0))).toEqual({ _tag: "Checked", result: false })
    expect(checkVia(budget, "p", 0, rules, "b", garbageClaim(1)))
      .toEqual({ _tag: "Refused", reason: "ClaimPeerRate", retryAfterMillis: 200 })
    expect(claimRefusalDetail("ClaimPeerRate", 200)).toBe("claim check budget (ClaimPeerRate); retry in 200 ms")
    expect(claimRefusalDetail("ClaimGlobalRate", Infinity)).toBe("claim check budget (ClaimGlobalRate); retry in 60000 ms")
  })

  it("caps the node's total over many peers that each stay within their own budget", () => {
    const budget = new ClaimCheckBudget(0)
    const { evaluations, rules } = countingRules()
    let checked = 0
    for (let peer = 0; peer < 100; peer++) checked += flood(budget, `sybil-${peer}`, 20, 0, rules)
    expect(checked).toBe(defaultClaimCheckBudget.globalBurst)
    expect(evaluations()).toBe(200)
    expect(budget.stats().refused.ClaimGlobalRate).toBe(2000 - 200)
    // One second on, the node has earned its rate, not the sybils' combined 100 × 5.
    checked = 0
    for (let peer = 0; peer < 100; peer++) checked += flood(budget, `sybil-${peer}`, 5, 1000, rules)
    expect(checked).toBe(defaultClaimCheckBudget.globalRate)
  })

  it("20 ids flooding at their own rates take the node's budget, but not the reserve an honest peer's claim needs", () => {
    // Each sybil asks 10 times a second (twice its own rate); together at their rates they ask for
    // the node's whole rate. An honest peer (a new one each second) sends one claim a second.
    const honestRefusals = (config: Partial<ClaimCheckBudgetConfig>) => {
      const budget = new ClaimCheckBudget(0, config)
      const { rules } = countingRules()
      let refused = 0
      let sybilChecks = 0
      for (let now = 0; now <= 60_000; now += 100) {
        for (let sybil = 0; sybil < 20; sybil++) sybilChecks += flood(budget, `sybil-${sybil}`, 1, now, rules)
        if (now % 1000 === 0 && now > 0) {
          if (checkVia(budget, `honest-${now}`, now, rules, "olive", garbageClaim(now))._tag === "Refused") refused++
        }
      }
      return { refused, sybilChecks }
    }
    // Before the reserve: the sybils hold the node's bucket at zero and most honest claims are refused.
    const before = honestRefusals({ reserve: 0 })
    expect(before.refused).toBeGreaterThanOrEqual(50)
    // With it: every honest claim of the minute is checked, and the sybils still get their rates' worth.
    const after = honestRefusals({})
    expect(after.refused).toBe(0)
    expect(after.sybilChecks).toBeGreaterThan(0.9 * before.sybilChecks)
  })

  it("the reserve goes only to a peer holding a quiet token, which comes back a minute later", () => {
    const budget = new ClaimCheckBudget(0, {
      globalBurst: 3,
      globalRate: 1,
      reserve: 2,
      quietBurst: 1,
      quietRatePerMinute: 1,
      perPeerBurst: 10
    })
    expect(budget.admit("p", 0)._tag).toBe("Evaluate") // above the reserve
    expect(budget.admit("p", 0)._tag).toBe("Evaluate") // the reserve, with p's one quiet token
    // Refused until the node's bucket is above the reserve again (2 tokens at 1 a second), sooner than p's quiet token.
    expect(budget.admit("p", 0)).toEqual({ _tag: "Refuse", reason: "ClaimGlobalRate", retryAfterMillis: 2000 })
    expect(budget.admit("q", 0)._tag).toBe("Evaluate") // another peer's quiet token
    expect(budget.admit("r", 59_000)._tag).toBe("Evaluate") // the bucket refilled: one token above the reserve
    expect(budget.admit("p", 59_000)._tag).toBe("Refuse") // the reserve, but p's quiet token is not back yet
    expect(budget.admit("r", 60_000)._tag).toBe("Evaluate")
    expect(budget.admit("p", 60_000)._tag).toBe("Evaluate") // the reserve: p's quiet token is back after 60 s
    expect(budget.stats().refused).toEqual({ ClaimPeerRate: 0, ClaimGlobalRate: 2 })
  })

  it("a valid claim is evaluated once: checked again it costs no evaluation and no token, even over budget", () => {
    const budget = new ClaimCheckBudget(0, { perPeerBurst: 1 })
    const { evaluations, rules } = countingRules()
    const proof = solvedClaim("olive", KEY, MIN_DIFFICULTY)
    expect(checkVia(budget, "peer", 0, rules, "olive", proof)).toEqual({ _tag: "Checked", result: true })
    expect(evaluations()).toBe(1)
    // The peer's one token is spent; the same claim (with every message, every republication) still checks.
    for (let i = 0; i < 100; i++) {
      expect(checkVia(budget, "peer", 0, rules, "olive", proof)).toEqual({ _tag: "Checked", result: true })
      expect(checkVia(budget, "other", 0, rules, "olive", proof)).toEqual({ _tag: "Checked", result: true })
    }
    expect(evaluations()).toBe(1)
    expect(budget.stats()).toMatchObject({ evaluations: 1, known: 200 })
    // A garbage claim is not remembered: sending it again costs a token again, and is refused now.
    expect(checkVia(budget, "other", 0, rules, "x", garbageClaim(1))._tag).toBe("Checked")
    expect(checkVia(budget, "other", 0, rules, "x", garbageClaim(1))._tag).toBe("Refused")
    expect(evaluations()).toBe(2)
  })

  it("a refused check is Refused even when the check would have passed without the hash (difficulty 0)", () => {
    const budget = new ClaimCheckBudget(0, { perPeerBurst: 1 })
    let evaluations = 0
    const rules: ClaimRules = { minDifficulty: 0, hash: (input) => (evaluations++, sha256(input)) }
    const free: ClaimProof = { difficulty: 0, nonce: 1 }
    expect(checkVia(budget, "p", 0, rules, "a", free)).toEqual({ _tag: "Checked", result: true })
    expect(checkVia(budget, "p", 0, rules, "b", free)._tag).toBe("Refused")
    expect(evaluations).toBe(1)
  })

  it("a check that never asks for the hash (a claim refused on a cheap ground) takes no token", () => {
    const budget = new ClaimCheckBudget(0, { perPeerBurst: 1 })
    const { evaluations, rules } = countingRules()
    const tooEasy: ClaimProof = { difficulty: MIN_DIFFICULTY - 1, nonce: 3 }
    for (let i = 0; i < 50; i++) expect(checkVia(budget, "p", 0, rules, "a", tooEasy)).toEqual({ _tag: "Checked", result: false })
    expect(evaluations()).toBe(0)
    expect(checkVia(budget, "p", 0, rules, "b", garbageClaim(0))._tag).toBe("Checked")
  })

  it("remembers at most maxTrackedPeers peers, forgetting the least recently active", () => {
    const budget = new ClaimCheckBudget(0, { maxTrackedPeers: 3, perPeerBurst: 1, globalBurst: 10_000 })
    for (let peer = 0; peer < 1000; peer++) budget.admit(`peer-${peer}`, 0)
    expect(budget.trackedPeers).toBe(3)
    // The three most recent are still held to their spent bucket; a forgotten one starts again.
    expect(budget.admit("peer-999", 0)._tag).toBe("Refuse")
    expect(budget.admit("peer-0", 0)._tag).toBe("Evaluate")
  })

  it("a clock stepped back refills nothing", () => {
    const budget = new ClaimCheckBudget(10_000, { perPeerBurst: 2, perPeerRate: 1 })
    expect(budget.admit("p", 10_000)._tag).toBe("Evaluate")
    expect(budget.admit("p", 10_000)._tag).toBe("Evaluate")
    expect(budget.admit("p", 0)._tag).toBe("Refuse")
    expect(budget.admit("p", 10_500)._tag).toBe("Refuse")
    expect(budget.admit("p", 11_000)._tag).toBe("Evaluate")
  })

  it("refuses limits that cannot work", () => {
    expect(() => new ClaimCheckBudget(0, { perPeerRate: 0 })).toThrow(RangeError)
    expect(() => new ClaimCheckBudget(0, { globalBurst: 0.5 })).toThrow(RangeError)
    expect(() => new ClaimCheckBudget(0, { maxTrackedPeers: 0 })).toThrow(RangeError)
    expect(() => new ClaimCheckBudget(0, { knownClaims: Number.NaN })).toThrow(RangeError)
    expect(() => new ClaimCheckBudget(0, { reserve: 200 })).toThrow(RangeError)
    expect(() => new ClaimCheckBudget(0, { quietRatePerMinute: 0 })).toThrow(RangeError)
  })

  describe("prepare: only checks that need an evaluation take a token, and they take it before they wait", () => {
    /** A claim check as a storer runs it, for `prepare`. */
    const claimCheck = (username: string, proof: ClaimProof) => (claim: ClaimRules): boolean =>
      Either.isRight(checkClaimProof({ username, signingKey: KEY, proof, minDifficulty: claim.minDifficulty, hash: claim.hash }))

    it("a check that ends before the hash, or needs only a known claim, is decided at once and takes no token", () => {
      const budget = new ClaimCheckBudget(0, { perPeerBurst: 1, perPeerRate: 0.001 })
      const { evaluations, rules } = countingRules()
      // A claim below the minimum difficulty fails before any hash.
      const tooEasy = budget.prepare("p", 0, rules, claimCheck("alice", { difficulty: 1, nonce: 0 }))
      expect(tooEasy).toEqual({ _tag: "Checked", result: false })
      const solved = solvedClaim("alice", KEY, MIN_DIFFICULTY)
      const first = budget.prepare("p", 0, rules, claimCheck("alice", solved))
      expect(first._tag).toBe("Admitted")
      expect(evaluations()).toBe(0) // nothing evaluated until it is run
      expect(first._tag === "Admitted" && first.evaluate()).toEqual({ _tag: "Checked", result: true })
      expect(evaluations()).toBe(1)
      // Known now: decided at once, no token (the peer's only token is spent), no evaluation.
      expect(budget.prepare("p", 0, rules, claimCheck("alice", solved))).toEqual({ _tag: "Checked", result: true })
      expect(evaluations()).toBe(1)
      expect(budget.stats()).toEqual({ evaluations: 1, known: 1, refused: { ClaimPeerRate: 0, ClaimGlobalRate: 0 } })
    })

    it("ATTACK: a flood is refused when it asks, not after waiting: admitted checks never outnumber the tokens", () => {
      const budget = new ClaimCheckBudget(0)
      const { evaluations, rules } = countingRules()
      // 1,000 junk claims asked for at once, none evaluated yet (as if all waited for their turn).
      const steps = Array.from({ length: 1000 }, (_, n) => budget.prepare("flooder", 0, rules, claimCheck(`junk${n}`, garbageClaim(n))))
      const admitted = steps.filter((step) => step._tag === "Admitted")
      expect(admitted).toHaveLength(defaultClaimCheckBudget.perPeerBurst)
      expect(steps.filter((step) => step._tag === "Refused")).toHaveLength(1000 - defaultClaimCheckBudget.perPeerBurst)
      // Run later (as after waiting for their turns): only the admitted ones evaluate, once each.
      for (const step of admitted) if (step._tag === "Admitted") expect(step.evaluate()).toEqual({ _tag: "Checked", result: false })
      expect(evaluations()).toBe(defaultClaimCheckBudget.perPeerBurst)
      expect(budget.stats().evaluations).toBe(defaultClaimCheckBudget.perPeerBurst)
    })

    it("a copy of a claim whose evaluation is in flight takes no token; when it runs the claim is known", () => {
      const budget = new ClaimCheckBudget(0, { perPeerBurst: 1, perPeerRate: 0.001 })
      const { evaluations, rules } = countingRules()
      const solved = solvedClaim("olive", KEY, MIN_DIFFICULTY)
      // The same record twice while the first waits (before, the copy took a token and, at a burst of 1, was refused).
      const first = budget.prepare("p", 0, rules, claimCheck("olive", solved))
      const copy = budget.prepare("p", 0, rules, claimCheck("olive", solved))
      expect([first._tag, copy._tag]).toEqual(["Admitted", "Admitted"])
      if (first._tag !== "Admitted" || copy._tag !== "Admitted") return
      expect(first.evaluate()).toEqual({ _tag: "Checked", result: true })
      expect(first.evaluate()).toEqual({ _tag: "Checked", result: true }) // once: the same outcome, no second run
      expect(copy.evaluate()).toEqual({ _tag: "Checked", result: true })
      expect(evaluations()).toBe(1)
      expect(budget.stats()).toMatchObject({ evaluations: 1, refused: { ClaimPeerRate: 0 } })
    })

    it("ATTACK: copies of a junk claim get no free evaluation, and a check given up frees its claim's flight", () => {
      const budget = new ClaimCheckBudget(0, { perPeerBurst: 2, perPeerRate: 0.001 })
      const { evaluations, rules } = countingRules()
      const junk = claimCheck("junk", garbageClaim(1))
      const first = budget.prepare("p", 0, rules, junk)
      const copy = budget.prepare("p", 0, rules, junk)
      if (first._tag !== "Admitted" || copy._tag !== "Admitted") throw new Error("both should be admitted")
      expect(first.evaluate()).toEqual({ _tag: "Checked", result: false })
      // Junk is not remembered, so the copy asks the budget when it runs: it takes the second token.
      expect(copy.evaluate()).toEqual({ _tag: "Checked", result: false })
      expect(evaluations()).toBe(2)
      // A third copy: the peer's tokens are spent, refused at once.
      expect(budget.prepare("p", 0, rules, junk)._tag).toBe("Refused")
      // A check given up before it ran leaves no flight behind: the next copy is judged on its own.
      const other = new ClaimCheckBudget(0, { perPeerBurst: 1, perPeerRate: 0.001 })
      const abandoned = other.prepare("q", 0, rules, junk)
      if (abandoned._tag !== "Admitted") throw new Error("should be admitted")
      abandoned.settle()
      expect(other.prepare("q", 0, rules, junk)._tag).toBe("Refused")
    })
  })
})
