/**
 * What a join refreshes (core `JoinRefresh`): one contact met in each empty
 * bucket shallower than the neighbourhood, a full lookup of every far
 * bucket only in a network smaller than k, and whom to call to meet one.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { bucketIndex, compareDistance } from "../../src/core/Distance.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import { meetsIdPuzzle } from "../../src/core/IdPuzzle.js"
import { bucketsToRefreshAfterJoin, MEETING_ATTEMPTS, meetingCandidates } from "../../src/core/JoinRefresh.js"
import * as RT from "../../src/core/RoutingTable.js"
import { neighbourhoodDepth } from "../../src/core/StoragePolicy.js"
import { arbNodeId, contactFor, PROPERTY_SEED } from "../support/arbitraries.js"

const tableFrom = (self: NodeId, ids: ReadonlyArray<NodeId>, k: number): RT.RoutingTable => {
  let table = RT.makeRoutingTable(self, 0, { k, replacementCacheSize: 2 * k })
  for (const id of ids) if (id !== self) table = RT.observe(table, contactFor(id), 1).table
  return table
}
/** A node id sharing exactly `depth` leading bits with the all-zero id, told apart by `n`. */
const idAtDepth = (depth: number, n: number): NodeId =>
  ((1n << BigInt(255 - depth)) | BigInt(n)).toString(16).padStart(64, "0") as NodeId
const zero = "0".repeat(64) as NodeId
/** The all-zero id's table (k, a cache of 2k) after meeting one contact at each of `depths`. */
const tableOf = (k: number, depths: ReadonlyArray<number>) => tableFrom(zero, depths.map(idAtDepth), k)

describe("JoinRefresh", () => {
  it("after a join, one contact is met in each empty bucket shallower than the neighbourhood; none is looked up", () => {
    // k = 4: one contact at depth 9 (the nearest), four at 8 (the neighbourhood: depth 8), four at 7, one at 6, one at 3, two at 0.
    const table = tableOf(4, [9, 8, 8, 8, 8, 7, 7, 7, 7, 6, 3, 0, 0])
    expect(neighbourhoodDepth(table, 4)).toBe(8)
    // 1, 2, 4 and 5 are empty; 0, 3, 6 and 7 route already, however few they know (the storage count fills on demand).
    expect(bucketsToRefreshAfterJoin(table, 4)).toEqual({ lookups: [], meetings: [1, 2, 4, 5] })
  })

  it("after a join in a network smaller than k, every bucket farther than the nearest neighbour is looked up, as the paper does", () => {
    const table = tableOf(20, [5, 3, 3, 0])
    expect(neighbourhoodDepth(table, 20)).toBeUndefined()
    expect(bucketsToRefreshAfterJoin(table, 20)).toEqual({ lookups: [0, 1, 2, 3, 4], meetings: [] })
    expect(bucketsToRefreshAfterJoin(tableOf(20, []), 20)).toEqual({ lookups: [], meetings: [] })
  })

  it.prop(
    "after a join, only buckets shallower than the nearest neighbour (and the neighbourhood) are refreshed, and met ones only when empty",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 120 }), fc.integer({ min: 1, max: 8 })],
    ([self, ids, k]) => {
      const table = tableFrom(self, ids, k)
      const { lookups, meetings } = bucketsToRefreshAfterJoin(table, k)
      const depth = neighbourhoodDepth(table, k)
      const nearest = Math.max(-1, ...table.buckets.filter((bucket) => bucket.entries.length > 0).map((bucket) => bucket.index))
      for (const index of [...lookups, ...meetings]) expect(index).toBeLessThan(nearest)
      if (depth === undefined) expect(meetings).toEqual([])
      else expect(lookups).toEqual([])
      for (const index of meetings) {
        expect(index).toBeLessThan(depth as number)
        const bucket = RT.bucketAt(table, index)
        expect(bucket.entries.length + bucket.replacements.length).toBe(0)
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )

  it("the contacts called to meet one in a bucket are the neighbour's answers in its range, closest to the target first", () => {
    const target = idAtDepth(3, 0x0f) as string as Key
    const named = [idAtDepth(3, 0xff), idAtDepth(5, 1), idAtDepth(3, 0x0e), idAtDepth(2, 7), idAtDepth(3, 0x1f)].map(contactFor)
    const chosen = meetingCandidates({ self: zero, index: 3, target, named, idPuzzleBits: 0 })
    // Depths 5 and 2 lie in other buckets; of the three at depth 3, the two closest to the target.
    expect(chosen.map((contact) => contact.nodeId)).toEqual([idAtDepth(3, 0x0e), idAtDepth(3, 0x1f)])
    expect(MEETING_ATTEMPTS).toBe(2)
    expect(meetingCandidates({ self: zero, index: 4, target, named, idPuzzleBits: 0 })).toEqual([])
  })

  it.prop(
    "ATTACK: a neighbour naming ids that skip the id puzzle, or lie outside the range, cannot get the newcomer to call them",
    [fc.array(arbNodeId, { minLength: 1, maxLength: 40 }), arbNodeId, fc.integer({ min: 0, max: 1 })],
    ([ids, self, index]) => {
      const target = self as string as Key
      const named = ids.map(contactFor)
      // One bit: about half of random ids solve it, so most runs have ids of both kinds in the range.
      const chosen = meetingCandidates({ self, index, target, named, idPuzzleBits: 1 })
      const eligible = new Set(ids.filter((id) => bucketIndex(self, id) === index && meetsIdPuzzle(id, 1)))
      expect(chosen.length).toBe(Math.min(MEETING_ATTEMPTS, eligible.size))
      for (const contact of chosen) expect(eligible.has(contact.nodeId)).toBe(true)
      for (let i = 1; i < chosen.length; i++) {
        const [before, after] = [chosen[i - 1], chosen[i]] as [typeof chosen[number], typeof chosen[number]]
        expect(compareDistance(target, before.nodeId, after.nodeId)).toBeLessThan(0)
      }
      // The closest eligible ones, none skipped.
      const closest = [...eligible].sort((a, b) => compareDistance(target, a, b)).slice(0, MEETING_ATTEMPTS)
      expect(chosen.map((contact) => contact.nodeId)).toEqual(closest)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }
  )
})
