/**
 * Where storage belongs and how long mail lives: `belongsHere` at its
 * boundary, `closerKnown` against a brute-force bigint oracle over the table's
 * buckets and replacement caches, `amongClosestKnown`, and `mailLifetime`'s
 * bounds, as properties and as attacks.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { Key, NodeId } from "../../src/core/Id.js"
import * as RT from "../../src/core/RoutingTable.js"
import {
  amongClosestKnown,
  belongsHere,
  closerKnown,
  defaultStorageSlack,
  mailLifetime
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

const HOUR = 3_600_000
const DAY = 24 * HOUR

describe("StoragePolicy", () => {
  it("belongsHere accepts while fewer than k + slack known nodes are closer", () => {
    expect(belongsHere({ closerKnown: 0, k: 20, slack: 10 })).toBe(true)
    expect(belongsHere({ closerKnown: 29, k: 20, slack: 10 })).toBe(true)
    expect(belongsHere({ closerKnown: 30, k: 20, slack: 10 })).toBe(false)
    expect(belongsHere({ closerKnown: 3, k: 4, slack: 0 })).toBe(true)
    expect(belongsHere({ closerKnown: 4, k: 4, slack: 0 })).toBe(false)
  })

  it("the default slack is half of k, rounded up", () => {
    expect([defaultStorageSlack(20), defaultStorageSlack(4), defaultStorageSlack(3), defaultStorageSlack(1)]).toEqual([10, 2, 2, 1])
  })

  it.prop(
    "closerKnown counts exactly the known contacts (entries and replacement caches) closer to the key than self",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 120 }), arbKey, fc.integer({ min: 1, max: 8 })],
    ([self, ids, key, k]) => {
      let table = RT.makeRoutingTable(self, 0, { k, replacementCacheSize: 2 * k })
      for (const id of ids) if (id !== self) table = RT.observe(table, contactFor(id), 1).table
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
    expect(belongsHere({ closerKnown: closerKnown(withoutCache, key), k: 4, slack: 2 })).toBe(true)
    expect(closerKnown(withCache, key)).toBe(24)
    expect(belongsHere({ closerKnown: closerKnown(withCache, key), k: 4, slack: 2 })).toBe(false)
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
