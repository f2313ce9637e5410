/**
 * Tests of the hand-over rule (Kademlia §2.5 with a bounded number of
 * transferring holders), against an independent oracle that ranks ids by
 * brute-force bigint XOR distance over the set of nodes the holder knows.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { shouldHandOver } from "../../src/core/Handoff.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import { arbKey, arbNodeId, PROPERTY_SEED } from "../support/arbitraries.js"

// ---------------------------------------------------------------------------
// Independent oracle and helpers

const distance = (a: Key, b: Key): bigint => BigInt(`0x${a}`) ^ BigInt(`0x${b}`)

/** How many distinct ids of `among` (other than `id`) are strictly closer to `key` than `id`. */
const rank = (key: Key, id: NodeId, among: Iterable<NodeId>): number => {
  const d = distance(key, id)
  let closer = 0
  for (const other of new Set(among)) if (other !== id && distance(key, other) < d) closer++
  return closer
}

/**
 * The rule as the module doc states it, over node sets: the newcomer is
 * among the k closest of every node the holder knows (itself and the
 * newcomer included), and the holder is among the `redundancy` closest of
 * those nodes other than the newcomer; never to oneself.
 */
const oracle = (q: {
  key: Key
  self: NodeId
  newcomer: NodeId
  known: ReadonlyArray<NodeId>
  k: number
  redundancy: number
}): boolean => {
  if (q.newcomer === q.self) return false
  const all = new Set<NodeId>([...q.known, q.self, q.newcomer])
  const withoutNewcomer = [...all].filter((id) => id !== q.newcomer)
  return rank(q.key, q.newcomer, all) < q.k && rank(q.key, q.self, withoutNewcomer) < q.redundancy
}

/** Node id whose distance to ZERO is `n`, so hand-made scenarios read in plain numbers. */
const nid = (n: number): NodeId => n.toString(16).padStart(64, "0") as NodeId
const ZERO = nid(0) as Key

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

// ---------------------------------------------------------------------------

describe("shouldHandOver: hand-made cases", () => {
  const base = { key: ZERO, k: 3, redundancy: 1 }

  it("never hands over to itself, whatever else holds", () => {
    for (const redundancy of [0, 1, 5, 100]) {
      for (const known of [[], [nid(5)], [nid(1), nid(7)], [nid(2)]]) {
        expect(shouldHandOver({ ...base, redundancy, self: nid(2), newcomer: nid(2), known })).toBe(false)
      }
    }
    // Even when the id is the key itself (distance 0, the closest possible).
    expect(shouldHandOver({ ...base, self: nid(0), newcomer: nid(0), known: [nid(1)] })).toBe(false)
  })

  it("the paper's rule (redundancy 1): only the closest known holder hands over, to a newcomer among the k closest", () => {
    // Known: 4, 6, 8; self 5 is the second closest holder, 4 the closest.
    const known = [nid(4), nid(6), nid(8)]
    expect(shouldHandOver({ ...base, self: nid(5), newcomer: nid(1), known })).toBe(false)
    expect(shouldHandOver({ ...base, self: nid(5), newcomer: nid(1), known, redundancy: 2 })).toBe(true)
    // Self 3 is the closest holder.
    expect(shouldHandOver({ ...base, self: nid(3), newcomer: nid(1), known })).toBe(true)
  })

  it("the newcomer must be among the k closest of all known nodes, self included", () => {
    const known = [nid(1), nid(2)]
    // Ranks of newcomer 9 among {1, 2, 3, 9}: 3 closer, so only with k >= 4.
    expect(shouldHandOver({ ...base, self: nid(3), newcomer: nid(9), known, redundancy: 5, k: 3 })).toBe(false)
    expect(shouldHandOver({ ...base, self: nid(3), newcomer: nid(9), known, redundancy: 5, k: 4 })).toBe(true)
    // Self counts: with known = {1} and self = 2, newcomer 3 is third, so k = 2 is not enough.
    expect(shouldHandOver({ ...base, self: nid(2), newcomer: nid(3), known: [nid(1)], redundancy: 5, k: 2 }))
      .toBe(false)
  })

  it("a newcomer that is already listed as known is counted once, not as a rival of itself", () => {
    const known = [nid(1), nid(4), nid(6)]
    // Newcomer 4 is third among {1, 2, 4, 6} (two nodes closer); self 2 is second among {1, 2, 6}.
    expect(shouldHandOver({ key: ZERO, k: 3, redundancy: 2, self: nid(2), newcomer: nid(4), known })).toBe(true)
    expect(shouldHandOver({ key: ZERO, k: 3, redundancy: 1, self: nid(2), newcomer: nid(4), known })).toBe(false)
    expect(shouldHandOver({ key: ZERO, k: 2, redundancy: 2, self: nid(2), newcomer: nid(4), known })).toBe(false)
  })

  it("self listed among the known nodes changes nothing", () => {
    const known = [nid(1), nid(6)]
    for (const k of [1, 2, 3, 4]) {
      for (const redundancy of [0, 1, 2, 3]) {
        const q = { key: ZERO, k, redundancy, self: nid(3), newcomer: nid(2) }
        expect(shouldHandOver({ ...q, known: [...known, nid(3)] })).toBe(shouldHandOver({ ...q, known }))
      }
    }
  })

  it("a node listed twice in `known` counts once, ahead of self or of the newcomer", () => {
    // Self 2 is second among holders {1, 2}: with redundancy 2 it hands over, however often 1 is listed.
    expect(shouldHandOver({ key: ZERO, k: 4, redundancy: 2, self: nid(2), newcomer: nid(9), known: [nid(1), nid(1)] }))
      .toBe(true)
    // Newcomer 2 is second among {1, 2, 3}: within k = 2, however often 1 is listed.
    expect(shouldHandOver({ key: ZERO, k: 2, redundancy: 2, self: nid(3), newcomer: nid(2), known: [nid(1), nid(1)] }))
      .toBe(true)
  })

  it("with nobody else known, hands over iff the newcomer fits in k", () => {
    expect(shouldHandOver({ key: ZERO, k: 1, redundancy: 1, self: nid(5), newcomer: nid(2), known: [] })).toBe(true)
    expect(shouldHandOver({ key: ZERO, k: 1, redundancy: 1, self: nid(2), newcomer: nid(5), known: [] })).toBe(false)
    expect(shouldHandOver({ key: ZERO, k: 2, redundancy: 1, self: nid(2), newcomer: nid(5), known: [] })).toBe(true)
  })

  it("a newcomer whose id is the key is always among the k closest", () => {
    const known = [nid(1), nid(2), nid(3), nid(4)]
    expect(shouldHandOver({ key: ZERO, k: 1, redundancy: 1, self: nid(1), newcomer: nid(0), known })).toBe(true)
  })

  it("k = 0 or redundancy = 0 never hands over", () => {
    const q = { key: ZERO, self: nid(1), newcomer: nid(2), known: [nid(3)] }
    expect(shouldHandOver({ ...q, k: 0, redundancy: 5 })).toBe(false)
    expect(shouldHandOver({ ...q, k: 5, redundancy: 0 })).toBe(false)
    expect(shouldHandOver({ ...q, k: 5, redundancy: 5 })).toBe(true)
  })

  it("measures XOR distance, not numeric closeness", () => {
    // Key 8 (0b1000): 9 is at distance 1, 7 (0b0111) at distance 15.
    const key = nid(8) as Key
    expect(shouldHandOver({ key, k: 1, redundancy: 1, self: nid(7), newcomer: nid(9), known: [] })).toBe(true)
    expect(shouldHandOver({ key, k: 1, redundancy: 1, self: nid(9), newcomer: nid(7), known: [] })).toBe(false)
  })

  it("does not mutate the known list", () => {
    const known = Object.freeze([nid(4), nid(1), nid(6)])
    expect(() => shouldHandOver({ key: ZERO, k: 3, redundancy: 2, self: nid(2), newcomer: nid(3), known }))
      .not.toThrow()
    expect(known).toEqual([nid(4), nid(1), nid(6)])
  })
})

// ---------------------------------------------------------------------------

const arbQuestion = fc
  .record({
    key: arbKey,
    others: fc.uniqueArray(arbNodeId, { maxLength: 40 }),
    self: arbNodeId,
    newcomerChoice: fc.oneof(
      fc.constant<"fresh">("fresh"),
      fc.constant<"self">("self"),
      fc.constant<"known">("known"),
      fc.constant<"key">("key")
    ),
    freshNewcomer: arbNodeId,
    pick: fc.nat(),
    includeSelf: fc.boolean(),
    includeNewcomer: fc.boolean(),
    k: fc.integer({ min: 1, max: 25 }),
    redundancy: fc.integer({ min: 0, max: 6 })
  })
  .map((s) => {
    const newcomer: NodeId = s.newcomerChoice === "self"
      ? s.self
      : s.newcomerChoice === "known" && s.others.length > 0
      ? (s.others[s.pick % s.others.length] as NodeId)
      : s.newcomerChoice === "key"
      ? (s.key as NodeId)
      : s.freshNewcomer
    const known = s.others.filter((id) => id !== newcomer && id !== s.self)
    if (s.includeSelf) known.splice(s.pick % (known.length + 1), 0, s.self)
    if (s.includeNewcomer && newcomer !== s.self) known.splice((s.pick >>> 3) % (known.length + 1), 0, newcomer)
    return { key: s.key, self: s.self, newcomer, known, k: s.k, redundancy: s.redundancy }
  })

describe("shouldHandOver: properties", () => {
  it.prop("agrees with the brute-force oracle over random ids", [arbQuestion], ([q]) => {
    expect(shouldHandOver(q)).toBe(oracle(q))
  }, propOptions(2000))

  it.prop(
    "does not depend on the order of the known nodes",
    [arbQuestion, fc.nat()],
    ([q, rotation]) => {
      const n = q.known.length
      const rotated = n === 0 ? q.known : [...q.known.slice(rotation % n), ...q.known.slice(0, rotation % n)]
      expect(shouldHandOver({ ...q, known: rotated })).toBe(shouldHandOver(q))
      expect(shouldHandOver({ ...q, known: [...q.known].reverse() })).toBe(shouldHandOver(q))
    },
    propOptions(500)
  )

  it.prop(
    "is monotonic: a larger k or redundancy never withdraws a hand-over",
    [arbQuestion],
    ([q]) => {
      if (shouldHandOver(q)) {
        expect(shouldHandOver({ ...q, k: q.k + 1 })).toBe(true)
        expect(shouldHandOver({ ...q, redundancy: q.redundancy + 1 })).toBe(true)
      }
    },
    propOptions(500)
  )

  it.prop(
    "with a shared view, exactly min(redundancy, holders) holders hand over to a newcomer among the k closest, none otherwise",
    [arbKey, fc.uniqueArray(arbNodeId, { minLength: 2, maxLength: 30 }), fc.nat(), fc.integer({ min: 1, max: 12 }), fc
      .integer({ min: 0, max: 5 })],
    ([key, ids, pick, k, redundancy]) => {
      const newcomer = ids[pick % ids.length] as NodeId
      // Every node knows every node: each holder asks the same question about the same set.
      const transferring = ids.filter((self) => shouldHandOver({ key, self, newcomer, known: ids, k, redundancy }))
      const holders = ids.filter((id) => id !== newcomer)
      const newcomerFits = rank(key, newcomer, ids) < k
      expect(transferring.length).toBe(newcomerFits ? Math.min(redundancy, holders.length) : 0)
      // And those are the closest holders.
      const byDistance = holders.slice().sort((a, b) => {
        const da = distance(key, a)
        const db = distance(key, b)
        return da < db ? -1 : da > db ? 1 : 0
      })
      if (newcomerFits) expect(new Set(transferring)).toEqual(new Set(byDistance.slice(0, redundancy)))
      expect(transferring).not.toContain(newcomer)
    },
    propOptions(500)
  )

  it.prop(
    "a node listed twice in `known` is still one node (a duplicate must not push the newcomer or self down the ranking)",
    [arbQuestion, fc.nat()],
    ([q, pick]) => {
      if (q.known.length === 0) return
      const duplicated = [...q.known, q.known[pick % q.known.length] as NodeId]
      expect(shouldHandOver({ ...q, known: duplicated })).toBe(oracle(q))
    },
    propOptions(1000)
  )
})
