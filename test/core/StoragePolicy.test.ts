/**
 * Where storage belongs and how long mail lives: `belongsHere` at its
 * boundary, `closerKnown` against a brute-force bigint oracle over the table's
 * buckets and replacement caches, `amongClosestKnown`, and `mailLifetime`'s
 * bounds, as properties and as attacks.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { commonPrefixLength } from "../../src/core/Distance.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import * as RT from "../../src/core/RoutingTable.js"
import {
  amongClosestKnown,
  belongsHere,
  bucketStillUnfilled,
  bucketsToFillBeforeDeciding,
  closerKnown,
  defaultStorageSlack,
  FILL_LOOKUPS_PER_BUCKET,
  mailLifetime,
  neighbourhoodDepth,
  placementQuestion,
  placementRefusal,
  RESPONSIBILITY_MARGIN_BITS
} from "../../src/core/StoragePolicy.js"
import { arbKey, arbNodeId, contactFor, PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

const toBig = (key: string): bigint => BigInt(`0x${key}`)

/** How many of `ids` are strictly closer to `key` than `self`, by bigint XOR (independent of Distance.ts). */
const oracleCloser = (self: NodeId, key: Key, ids: Iterable<NodeId>): number => {
  const mine = toBig(self) ^ toBig(key)
  const distinct = new Set(ids)
  distinct.delete(self)
  let count = 0
  for (const id of distinct) if ((toBig(id) ^ toBig(key)) < mine) count++
  return count
}

/** Every node id a table knows: bucket entries and replacement caches. */
const knownIds = (table: RT.RoutingTable): Array<NodeId> =>
  table.buckets.flatMap((bucket) => [...bucket.entries, ...bucket.replacements].map((entry) => entry.contact.nodeId))

/** A table of `self` (k, a cache of 2k) that met `ids` in order. */
const tableFrom = (self: NodeId, ids: ReadonlyArray<NodeId>, k: number): RT.RoutingTable => {
  let table = RT.makeRoutingTable(self, 0, { k, replacementCacheSize: 2 * k })
  for (const id of ids) if (id !== self) table = RT.observe(table, contactFor(id), 1).table
  return table
}

const HOUR = 3_600_000
const DAY = 24 * HOUR

describe("StoragePolicy", () => {
  it("belongsHere accepts while fewer than k + slack known nodes are closer", () => {
    const near = { keyDepth: 5, neighbourhoodDepth: 5 }
    expect(belongsHere({ closerKnown: 0, k: 20, slack: 10, ...near })).toBe(true)
    expect(belongsHere({ closerKnown: 29, k: 20, slack: 10, ...near })).toBe(true)
    expect(belongsHere({ closerKnown: 30, k: 20, slack: 10, ...near })).toBe(false)
    expect(belongsHere({ closerKnown: 3, k: 4, slack: 0, ...near })).toBe(true)
    expect(belongsHere({ closerKnown: 4, k: 4, slack: 0, ...near })).toBe(false)
    expect(placementRefusal({ closerKnown: 4, k: 4, slack: 0, ...near })).toEqual({ _tag: "KnowsCloser", closerKnown: 4 })
  })

  it("belongsHere refuses a key more than RESPONSIBILITY_MARGIN_BITS shallower than the neighbourhood, whatever the count", () => {
    expect(RESPONSIBILITY_MARGIN_BITS).toBe(2)
    const question = { closerKnown: 0, k: 20, slack: 10, neighbourhoodDepth: 9 }
    expect(belongsHere({ ...question, keyDepth: 9 })).toBe(true)
    expect(belongsHere({ ...question, keyDepth: 7 })).toBe(true)
    expect(belongsHere({ ...question, keyDepth: 6 })).toBe(false)
    expect(placementRefusal({ ...question, keyDepth: 0 })).toEqual({ _tag: "OutsideNeighbourhood", keyDepth: 0, neighbourhoodDepth: 9 })
    // A node that knows fewer than k others goes by the count alone.
    expect(belongsHere({ ...question, keyDepth: 0, neighbourhoodDepth: undefined })).toBe(true)
  })

  it.prop(
    "neighbourhoodDepth is the common-prefix length with the k-th closest known contact (entries and caches)",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 120 }), fc.integer({ min: 1, max: 8 })],
    ([self, ids, k]) => {
      const table = tableFrom(self, ids, k)
      const depths = knownIds(table).map((id) => commonPrefixLength(self, id)).sort((a, b) => b - a)
      expect(neighbourhoodDepth(table, k)).toBe(depths.length < k ? undefined : depths[k - 1])
    },
    propOptions(300)
  )

  it("ATTACK: a newcomer that knows its neighbourhood and one far contact refuses a record for a key across the id space", () => {
    // The newcomer's self lookup met k = 4 nodes sharing 8 or more leading bits with it, and one node of the far half.
    const self = "0".repeat(64) as NodeId
    let table = RT.makeRoutingTable(self, 0, { k: 4, replacementCacheSize: 8 })
    const neighbours = ["00f", "00e", "00d", "00c"].map((prefix) => (prefix + "1".repeat(61)) as NodeId)
    for (const id of [...neighbours, ("8" + "0".repeat(63)) as NodeId]) table = RT.observe(table, contactFor(id), 1).table
    // A hostile node stores a record for a key in the far half, where the newcomer knows one node closer.
    const farKey = ("f" + "0".repeat(63)) as Key
    const question = placementQuestion(table, farKey, 4, 2)
    expect(question).toMatchObject({ closerKnown: 1, keyDepth: 0, neighbourhoodDepth: 8 })
    // The count alone would take it (1 < k + slack); the neighbourhood refuses it.
    expect(question.closerKnown < 4 + 2).toBe(true)
    expect(placementRefusal(question)).toEqual({ _tag: "OutsideNeighbourhood", keyDepth: 0, neighbourhoodDepth: 8 })
    // Keys in the neighbourhood and up to two bits shallower (6 leading bits shared) are taken; 5 is refused.
    const depthOf = (hex: string) => placementQuestion(table, (hex + "0".repeat(64 - hex.length)) as Key, 4, 2)
    expect([depthOf("001").keyDepth, depthOf("020").keyDepth, depthOf("040").keyDepth]).toEqual([11, 6, 5])
    expect(belongsHere(depthOf("001"))).toBe(true)
    expect(belongsHere(depthOf("020"))).toBe(true)
    expect(belongsHere(depthOf("040"))).toBe(false)
  })

  it("the default slack is half of k, rounded up", () => {
    expect([defaultStorageSlack(20), defaultStorageSlack(4), defaultStorageSlack(3), defaultStorageSlack(1)]).toEqual([10, 2, 2, 1])
  })

  it.prop(
    "closerKnown counts exactly the known contacts (entries and replacement caches) closer to the key than self",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 120 }), arbKey, fc.integer({ min: 1, max: 8 })],
    ([self, ids, key, k]) => {
      const table = tableFrom(self, ids, k)
      expect(closerKnown(table, key)).toBe(oracleCloser(self, key, knownIds(table)))
    },
    propOptions(300)
  )

  it.prop(
    "keys next to self have nobody closer; the own id has nobody closer",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 60 })],
    ([self, ids]) => {
      let table = RT.makeRoutingTable(self, 0, { k: 4, replacementCacheSize: 8 })
      for (const id of ids) if (id !== self) table = RT.observe(table, contactFor(id), 1).table
      expect(closerKnown(table, self)).toBe(0)
    },
    propOptions(100)
  )

  it("a full bucket alone never reaches k + slack: the replacement cache is what tells a far node it does not belong", () => {
    const self = "0".repeat(64) as NodeId
    // The key is in the far half; 30 nodes of that half are met, all closer to it than self.
    const key = ("f" + "0".repeat(63)) as Key
    const far = Array.from({ length: 30 }, (_, i) => (((8 + (i % 8)).toString(16)) + i.toString(16).padStart(63, "0")) as NodeId)
    let withCache = RT.makeRoutingTable(self, 0, { k: 4, replacementCacheSize: 20 })
    let withoutCache = RT.makeRoutingTable(self, 0, { k: 4, replacementCacheSize: 0 })
    for (const id of far) {
      withCache = RT.observe(withCache, contactFor(id), 1).table
      withoutCache = RT.observe(withoutCache, contactFor(id), 1).table
    }
    expect(closerKnown(withoutCache, key)).toBe(4)
    expect(placementRefusal({ ...placementQuestion(withoutCache, key, 4, 2), neighbourhoodDepth: undefined })).toBeUndefined()
    expect(closerKnown(withCache, key)).toBe(24)
    expect(placementRefusal(placementQuestion(withCache, key, 4, 2))).toEqual({ _tag: "KnowsCloser", closerKnown: 24 })
  })

  /** A node id sharing exactly `depth` leading bits with the all-zero id, told apart by `n`. */
  const idAtDepth = (depth: number, n: number): NodeId =>
    ((1n << BigInt(255 - depth)) | BigInt(n)).toString(16).padStart(64, "0") as NodeId
  const zero = "0".repeat(64) as NodeId
  /** The all-zero id's table (k, a cache of 2k) after meeting one contact at each of `depths`. */
  const tableOf = (k: number, depths: ReadonlyArray<number>) => tableFrom(zero, depths.map(idAtDepth), k)

  it("before deciding on a key near the neighbourhood, the buckets its count reads are filled while they know fewer than k + slack", () => {
    // k = 4, slack 2: the neighbourhood lies at depth 8; bucket 7 knows four, bucket 6 one.
    const table = tableOf(4, [9, 8, 8, 8, 8, 7, 7, 7, 7, 6, 3, 0, 0])
    const keyAt = (depth: number) => idAtDepth(depth, 0xabcdef) as string as Key
    // A key in bucket 6 counts nodes of buckets 6, 7 and 8 (the neighbourhood's, of which the self lookup met only
    // its k closest): all three fill, each knowing fewer than six.
    expect(bucketsToFillBeforeDeciding(table, keyAt(6), 4, 2)).toEqual([6, 7, 8])
    // A key in bucket 7 reads buckets 7 and 8; one in the neighbourhood's bucket reads that bucket.
    expect(bucketsToFillBeforeDeciding(table, keyAt(7), 4, 2)).toEqual([7, 8])
    expect(bucketsToFillBeforeDeciding(table, keyAt(8), 4, 2)).toEqual([8])
    // Deeper than the neighbourhood: met by the self lookup. Farther than the margin: refused by the neighbourhood rule.
    expect(bucketsToFillBeforeDeciding(table, keyAt(9), 4, 2)).toEqual([])
    expect(bucketsToFillBeforeDeciding(table, keyAt(12), 4, 2)).toEqual([])
    expect(placementRefusal(placementQuestion(table, keyAt(3), 4, 2))?._tag).toBe("OutsideNeighbourhood")
    expect(bucketsToFillBeforeDeciding(table, keyAt(3), 4, 2)).toEqual([])
    // Once bucket 7 knows six (a full bucket and two waiting in its cache), it needs no fill.
    const withCache = tableOf(4, [9, 8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 6, 3, 0, 0])
    expect(withCache.buckets.find((bucket) => bucket.index === 7)?.replacements.length).toBe(2)
    expect(bucketsToFillBeforeDeciding(withCache, keyAt(6), 4, 2)).toEqual([6, 8])
    // No neighbourhood yet (fewer than k known): its join refreshed every bucket, and the count alone decides.
    expect(bucketsToFillBeforeDeciding(tableOf(20, [5, 3, 3, 0]), keyAt(1), 20, 10)).toEqual([])
  })

  it("a bucket is filled again only while a lookup there met someone new and it still knows fewer than k + slack", () => {
    const before = tableOf(4, [9, 8, 8, 8, 8, 7, 6, 3, 0, 0])
    // The lookup met two more nodes in bucket 7 (still fewer than six), one in bucket 1, none in 6.
    const after = tableOf(4, [9, 8, 8, 8, 8, 7, 6, 3, 0, 0, 7, 7, 1])
    expect(bucketStillUnfilled(before, after, 7, 4, 2)).toBe(true)
    expect(bucketStillUnfilled(before, after, 6, 4, 2)).toBe(false)
    // Once bucket 7 knows six (four and two in its cache), it is done.
    const full = tableOf(4, [9, 8, 8, 8, 8, 7, 6, 3, 0, 0, 7, 7, 1, 7, 7, 7])
    expect(bucketStillUnfilled(after, full, 7, 4, 2)).toBe(false)
    expect(FILL_LOOKUPS_PER_BUCKET).toBe(3)
  })

  it.prop(
    "amongClosestKnown agrees with a brute-force rank among the known nodes",
    [arbKey, arbNodeId, fc.array(arbNodeId, { maxLength: 40 }), fc.integer({ min: 1, max: 12 })],
    ([key, candidate, known, n]) => {
      expect(amongClosestKnown(key, candidate, known, n)).toBe(oracleCloser(candidate, key, known) < n)
    },
    propOptions(300)
  )

  describe("mailLifetime", () => {
    const base = { now: 10 * DAY, mailTtlMs: 14 * DAY, junkTtlMs: 6 * HOUR }

    it("mail for a known recipient keeps the expiry its sender signed", () => {
      expect(mailLifetime({ ...base, signedExpiresAt: 20 * DAY, recipientKnown: true })).toEqual({
        fullExpiresAt: 20 * DAY,
        expiresAt: 20 * DAY
      })
    })

    it("mail for a name nobody holds here lives the junk lifetime, and keeps its full expiry for later", () => {
      expect(mailLifetime({ ...base, signedExpiresAt: 20 * DAY, recipientKnown: false })).toEqual({
        fullExpiresAt: 20 * DAY,
        expiresAt: 10 * DAY + 6 * HOUR
      })
      // Mail that dies sooner anyway is not lengthened.
      expect(mailLifetime({ ...base, signedExpiresAt: 10 * DAY + HOUR, recipientKnown: false }).expiresAt).toBe(10 * DAY + HOUR)
    })

    it("ATTACK: an expiry signed far into the future gets at most the relay's own lifetime", () => {
      expect(mailLifetime({ ...base, signedExpiresAt: Number.MAX_SAFE_INTEGER, recipientKnown: true }).fullExpiresAt).toBe(24 * DAY)
    })

    it("ATTACK: a receipt never outlives its own issue time plus the lifetime, whatever its postage says", () => {
      const old = mailLifetime({ ...base, signedExpiresAt: 24 * DAY, receivedAt: 0, recipientKnown: true })
      expect(old.fullExpiresAt).toBe(14 * DAY)
      // Issued "in the future": bounded by the relay's clock instead.
      const future = mailLifetime({ ...base, signedExpiresAt: 100 * DAY, receivedAt: 50 * DAY, recipientKnown: true })
      expect(future.fullExpiresAt).toBe(24 * DAY)
    })

    it.prop(
      "expiresAt <= fullExpiresAt <= min(signed, now + ttl); unknown recipients never beyond now + junkTtl",
      [
        fc.integer({ min: 0, max: 100 * DAY }),
        fc.integer({ min: 0, max: 200 * DAY }),
        fc.integer({ min: 1, max: 30 * DAY }),
        fc.integer({ min: 1, max: DAY }),
        fc.option(fc.integer({ min: 0, max: 200 * DAY }), { nil: undefined }),
        fc.boolean()
      ],
      ([now, signedExpiresAt, mailTtlMs, junkTtlMs, receivedAt, recipientKnown]) => {
        const life = mailLifetime({ now, signedExpiresAt, mailTtlMs, junkTtlMs, receivedAt, recipientKnown })
        expect(life.expiresAt).toBeLessThanOrEqual(life.fullExpiresAt)
        expect(life.fullExpiresAt).toBeLessThanOrEqual(Math.min(signedExpiresAt, now + mailTtlMs))
        if (!recipientKnown) expect(life.expiresAt).toBeLessThanOrEqual(now + junkTtlMs)
        else expect(life.expiresAt).toBe(life.fullExpiresAt)
      },
      propOptions(300)
    )
  })
})
