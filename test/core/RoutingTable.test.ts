/**
 * Routing table: invariants over arbitrary operation sequences, `closest`
 * against a brute-force bigint XOR oracle, and examples for each rule
 * (move-to-tail, ping of the head, replacement, failure counting, staleness).
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { Contact } from "../../src/core/Contact.js"
import { ID_BITS, type Key, keyToBytes, type NodeId, randomKeyInBucket } from "../../src/core/Id.js"
import * as RT from "../../src/core/RoutingTable.js"
import { arbKey, arbNodeId, contactFor, PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

// ---------------------------------------------------------------------------
// Helpers (independent of the code under test)

const toBig = (key: Key): bigint => BigInt(`0x${key}`)

/** Common-prefix length computed from the bigint XOR, independently of Distance.ts. */
const oracleCpl = (a: Key, b: Key): number => {
  const x = toBig(a) ^ toBig(b)
  return x === 0n ? ID_BITS : ID_BITS - x.toString(2).length
}

const oracleClosest = (
  contacts: ReadonlyArray<Contact>,
  target: Key,
  n: number,
  exclude?: (id: NodeId) => boolean
): Array<NodeId> => {
  const t = toBig(target)
  return contacts
    .filter((c) => exclude === undefined || !exclude(c.nodeId))
    .map((c) => ({ id: c.nodeId, d: toBig(c.nodeId) ^ t }))
    .sort((a, b) => (a.d < b.d ? -1 : a.d > b.d ? 1 : 0))
    .slice(0, n)
    .map((x) => x.id)
}

const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

/** `count` distinct ids whose cpl with `self` is `bucket`. */
const idsInBucket = (self: Key, bucket: number, count: number, seed: number): Array<NodeId> => {
  const random = seededRandomBytes(seed)
  const ids = new Set<NodeId>()
  let attempts = 0
  while (ids.size < count && attempts++ < count * 10) ids.add(randomKeyInBucket(self, bucket, random) as NodeId)
  return [...ids]
}

const SELF = randomKeyInBucket(
  "0000000000000000000000000000000000000000000000000000000000000000" as Key,
  0,
  seededRandomBytes(7)
) as NodeId

const observeAll = (table: RT.RoutingTable, ids: ReadonlyArray<NodeId>, now: number): RT.RoutingTable =>
  ids.reduce((t, id) => RT.observe(t, contactFor(id), now).table, table)

const entryIds = (bucket: RT.Bucket): Array<NodeId> => bucket.entries.map((e) => e.contact.nodeId)
const replacementIds = (bucket: RT.Bucket): Array<NodeId> => bucket.replacements.map((e) => e.contact.nodeId)

/**
 * Structural invariants every reachable table must satisfy, as a list of
 * violations (plain checks, one `expect` per table: expect is slow in loops).
 */
const invariantViolations = (table: RT.RoutingTable): Array<string> => {
  const { k, replacementCacheSize, maxConsecutiveFailures } = table.config
  const violations: Array<string> = []
  const check = (ok: boolean, what: string): void => {
    if (!ok) violations.push(what)
  }
  let total = 0
  let previousIndex = -1
  for (const bucket of table.buckets) {
    const at = `bucket ${bucket.index}`
    check(bucket.index > previousIndex, `${at}: buckets out of order`)
    previousIndex = bucket.index
    check(bucket.entries.length <= k, `${at}: more than k entries`)
    check(bucket.replacements.length <= replacementCacheSize, `${at}: replacement cache over its bound`)
    check(bucket.entries.length === k || bucket.replacements.length === 0, `${at}: replacements wait while there is room`)
    const ids = entryIds(bucket)
    const cached = replacementIds(bucket)
    check(new Set(ids).size === ids.length, `${at}: duplicate entries`)
    check(new Set(cached).size === cached.length, `${at}: duplicate replacements`)
    check(cached.every((id) => !ids.includes(id)), `${at}: a replacement is also an entry`)
    for (const entry of [...bucket.entries, ...bucket.replacements]) {
      check(entry.contact.nodeId !== table.self, `${at}: contains self`)
      check(oracleCpl(table.self, entry.contact.nodeId) === bucket.index, `${at}: ${entry.contact.nodeId} has another cpl`)
    }
    check(bucket.entries.every((e) => e.failures < maxConsecutiveFailures), `${at}: an entry reached the failure limit`)
    for (let i = 1; i < bucket.entries.length; i++) {
      const ordered = (bucket.entries[i] as RT.Entry).lastSeen >= (bucket.entries[i - 1] as RT.Entry).lastSeen
      check(ordered, `${at}: entries not least-recently-seen first`)
    }
    total += bucket.entries.length
  }
  check(RT.contactCount(table) === total, "contactCount disagrees with the buckets")
  check(RT.allContacts(table).length === total, "allContacts disagrees with the buckets")
  return violations
}

const checkInvariants = (table: RT.RoutingTable): void => {
  expect(invariantViolations(table)).toEqual([])
}

// ---------------------------------------------------------------------------
// Properties

type Op =
  | { readonly kind: "observe"; readonly id: number }
  | { readonly kind: "fail"; readonly id: number }
  | { readonly kind: "remove"; readonly id: number }
  | { readonly kind: "touch"; readonly bucket: number }
  | { readonly kind: "advance"; readonly ms: number }

// Few buckets with many ids each, so buckets fill, caches overflow and pings fire.
const POOL: ReadonlyArray<NodeId> = [
  SELF,
  ...[0, 1, 2, 3, 40].flatMap((bucket) => idsInBucket(SELF, bucket, 7, 100 + bucket))
]
const SMALL_CONFIG = { k: 3, replacementCacheSize: 2, maxConsecutiveFailures: 2, pingTimeoutMs: 100, headFreshnessMs: 60 }

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.nat(POOL.length - 1).map((id): Op => ({ kind: "observe", id })), weight: 5 },
  { arbitrary: fc.nat(POOL.length - 1).map((id): Op => ({ kind: "fail", id })), weight: 3 },
  { arbitrary: fc.nat(POOL.length - 1).map((id): Op => ({ kind: "remove", id })), weight: 1 },
  { arbitrary: fc.nat(45).map((bucket): Op => ({ kind: "touch", bucket })), weight: 1 },
  { arbitrary: fc.integer({ min: 1, max: 150 }).map((ms): Op => ({ kind: "advance", ms })), weight: 2 }
)

/** A table with up to `ids.length` contacts spread over all depths (so deep buckets are exercised). */
const arbPopulated: fc.Arbitrary<{ self: NodeId; contacts: ReadonlyArray<NodeId>; k: number }> = fc.record({
  self: arbNodeId,
  placements: fc.array(fc.tuple(fc.oneof(fc.nat(8), fc.nat(ID_BITS - 1)), arbKey), { maxLength: 120, size: "max" }),
  k: fc.integer({ min: 1, max: 20 })
}).map(({ self, placements, k }) => ({
  self,
  k,
  contacts: placements.map(([bucket, bytesKey]) => randomKeyInBucket(self, bucket, () => keyToBytes(bytesKey)) as NodeId)
}))

describe("RoutingTable properties", () => {
  it.prop(
    "invariants hold over arbitrary observe/fail/remove/touch sequences, and inputs are never mutated",
    [fc.array(arbOp, { minLength: 20, maxLength: 150, size: "max" })],
    ([ops]) => {
      let table = deepFreeze(RT.makeRoutingTable(SELF, 0, SMALL_CONFIG))
      let now = 0
      for (const op of ops) {
        const before = table
        switch (op.kind) {
          case "observe": {
            const id = POOL[op.id] as NodeId
            const wasFull = RT.bucketAt(before, Math.min(oracleCpl(SELF, id), 255)).entries.length >= SMALL_CONFIG.k
            const known = RT.findContact(before, id) !== undefined
            const result = RT.observe(before, deepFreeze(contactFor(id)), now)
            table = result.table
            if (id === SELF) {
              expect(table).toBe(before)
              expect(result.command).toBeUndefined()
              break
            }
            const bucket = RT.bucketAt(table, oracleCpl(SELF, id))
            expect(bucket.lastTouched).toBe(now)
            if (known || !wasFull) {
              expect(entryIds(bucket).at(-1)).toBe(id)
              expect(RT.findContact(table, id)).toEqual({ contact: contactFor(id), lastSeen: now, failures: 0 })
              expect(result.command).toBeUndefined()
            } else {
              expect(RT.findContact(table, id)).toBeUndefined()
              expect(replacementIds(bucket).at(-1)).toBe(id)
              if (result.command !== undefined) {
                const head = RT.bucketAt(before, bucket.index).entries[0]
                expect(result.command).toEqual({ _tag: "PingContact", contact: head?.contact, bucket: bucket.index })
                expect(bucket.pendingPing).toEqual({ nodeId: head?.contact.nodeId, since: now })
              } else {
                const previous = RT.bucketAt(before, bucket.index)
                const headFresh = now - (previous.entries[0]?.lastSeen ?? 0) < SMALL_CONFIG.headFreshnessMs
                const pending = previous.pendingPing
                const pingOutstanding = pending !== undefined && now - pending.since < SMALL_CONFIG.pingTimeoutMs
                expect(headFresh || pingOutstanding).toBe(true)
              }
            }
            break
          }
          case "fail": {
            const id = POOL[op.id] as NodeId
            const entry = RT.findContact(before, id)
            table = RT.recordFailure(before, id, now)
            if (entry === undefined) {
              expect(RT.findContact(table, id)).toBeUndefined()
            } else {
              const wasPinged = RT.bucketAt(before, oracleCpl(SELF, id)).pendingPing?.nodeId === id
              if (wasPinged || entry.failures + 1 >= SMALL_CONFIG.maxConsecutiveFailures) {
                expect(RT.findContact(table, id)).toBeUndefined()
              } else {
                expect(RT.findContact(table, id)?.failures).toBe(entry.failures + 1)
              }
            }
            if (id !== SELF) expect(replacementIds(RT.bucketAt(table, oracleCpl(SELF, id)))).not.toContain(id)
            break
          }
          case "remove": {
            const id = POOL[op.id] as NodeId
            table = RT.removeContact(before, id)
            expect(RT.findContact(table, id)).toBeUndefined()
            if (id !== SELF) expect(replacementIds(RT.bucketAt(table, oracleCpl(SELF, id)))).not.toContain(id)
            break
          }
          case "touch":
            table = RT.touchBucket(before, op.bucket, now)
            expect(RT.bucketAt(table, op.bucket).lastTouched).toBe(now)
            break
          case "advance":
            now += op.ms
            break
        }
        checkInvariants(table)
        deepFreeze(table)
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it.prop(
    "closest equals the brute-force XOR oracle for any target, n and exclusion",
    [
      arbPopulated,
      fc.oneof(arbKey, fc.constant("self" as const), fc.nat(ID_BITS - 1)),
      fc.nat(60),
      fc.boolean()
    ],
    ([{ self, contacts, k }, targetChoice, n, useExclude]) => {
      const table = deepFreeze(observeAll(RT.makeRoutingTable(self, 0, { k }), contacts, 1))
      checkInvariants(table)
      const target: Key =
        targetChoice === "self"
          ? self
          : typeof targetChoice === "number"
          ? randomKeyInBucket(self, targetChoice, seededRandomBytes(targetChoice + 1))
          : targetChoice
      const exclude = useExclude ? (id: NodeId) => id.endsWith("0") || id.endsWith("7") : undefined
      const actual = RT.closest(table, target, n, exclude).map((c) => c.nodeId)
      expect(actual).toEqual(oracleClosest(RT.allContacts(table), target, n, exclude))
      // Targets that are contacts themselves come first.
      if (contacts.length > 0 && n > 0 && exclude === undefined) {
        const own = RT.allContacts(table)[0] as Contact
        expect(RT.closest(table, own.nodeId, n)[0]).toEqual(own)
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }
  )

  it.prop(
    "with room for everyone, allContacts is exactly the distinct observed ids other than self",
    [arbNodeId, fc.array(arbNodeId, { maxLength: 60, size: "max" })],
    ([self, ids]) => {
      const table = observeAll(RT.makeRoutingTable(self, 0, { k: 256 }), [...ids, self, ...ids.slice(0, 5)], 3)
      const expected = new Set(ids.filter((id) => id !== self))
      const actual = RT.allContacts(table).map((c) => c.nodeId)
      expect(new Set(actual)).toEqual(expected)
      expect(actual).toHaveLength(expected.size)
      for (const id of expected) expect(RT.findContact(table, id)?.contact.nodeId).toBe(id)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )
})

// ---------------------------------------------------------------------------
// Examples

describe("makeRoutingTable", () => {
  it("uses the defaults and validates the configuration", () => {
    const table = RT.makeRoutingTable(SELF, 5)
    expect(table.config).toEqual({
      k: 20,
      replacementCacheSize: 20,
      maxConsecutiveFailures: 3,
      pingTimeoutMs: 5000,
      headFreshnessMs: 900_000,
      maxPerGroup: Number.POSITIVE_INFINITY
    })
    expect(RT.defaultRoutingTableConfig).toEqual(table.config)
    expect(RT.contactCount(table)).toBe(0)
    expect(RT.allContacts(table)).toEqual([])
    expect(RT.makeRoutingTable(SELF, 0, { k: 8 }).config.k).toBe(8)
    expect(RT.makeRoutingTable(SELF, 0, { replacementCacheSize: 0 }).config.replacementCacheSize).toBe(0)
    for (const bad of [
      { k: 0 },
      { k: 1.5 },
      { k: Number.NaN },
      { replacementCacheSize: -1 },
      { maxConsecutiveFailures: 0 },
      { pingTimeoutMs: -1 },
      { pingTimeoutMs: Number.POSITIVE_INFINITY },
      { headFreshnessMs: -1 },
      { headFreshnessMs: Number.NaN }
    ]) {
      expect(() => RT.makeRoutingTable(SELF, 0, bad)).toThrow(RangeError)
    }
  })
})

describe("observe", () => {
  it("never inserts self", () => {
    const table = RT.makeRoutingTable(SELF, 0)
    const result = RT.observe(table, contactFor(SELF), 1)
    expect(result.table).toBe(table)
    expect(result.command).toBeUndefined()
    expect(RT.findContact(result.table, SELF)).toBeUndefined()
  })

  it("moves a known contact to the tail with its new address, no failures and a fresh lastSeen", () => {
    const [a, b, c] = idsInBucket(SELF, 2, 3, 1) as [NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0), [a, b, c], 10)
    table = RT.recordFailure(table, a, 11)
    expect(RT.findContact(table, a)?.failures).toBe(1)
    const moved: Contact = { nodeId: a, address: { host: "10.0.0.9", port: 4000 } }
    table = RT.observe(table, moved, 20).table
    expect(entryIds(RT.bucketAt(table, 2))).toEqual([b, c, a])
    expect(RT.findContact(table, a)).toEqual({ contact: moved, lastSeen: 20, failures: 0 })
    expect(RT.bucketAt(table, 2).lastTouched).toBe(20)
    expect(RT.contactCount(table)).toBe(3)
  })

  it("asks to ping the head of a full bucket once while pending, and again after the timeout", () => {
    const [a, b, c, d, e] = idsInBucket(SELF, 0, 5, 2) as [NodeId, NodeId, NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2, pingTimeoutMs: 1000, headFreshnessMs: 0 }), [a, b], 1)

    let result = RT.observe(table, contactFor(c), 3)
    expect(result.command).toEqual({ _tag: "PingContact", contact: contactFor(a), bucket: 0 })
    table = result.table
    expect(RT.bucketAt(table, 0).pendingPing).toEqual({ nodeId: a, since: 3 })
    expect(entryIds(RT.bucketAt(table, 0))).toEqual([a, b])
    expect(RT.contactCount(table)).toBe(2)

    result = RT.observe(table, contactFor(d), 500)
    expect(result.command).toBeUndefined()
    table = result.table
    result = RT.observe(table, contactFor(c), 1002)
    expect(result.command).toBeUndefined()
    table = result.table
    expect(replacementIds(RT.bucketAt(table, 0))).toEqual([d, c])

    result = RT.observe(table, contactFor(d), 1003)
    expect(result.command).toEqual({ _tag: "PingContact", contact: contactFor(a), bucket: 0 })
    table = result.table
    expect(RT.bucketAt(table, 0).pendingPing).toEqual({ nodeId: a, since: 1003 })

    // The head answers: it becomes the freshest, the ping is settled, and the next overflow pings the new head.
    table = RT.observe(table, contactFor(a), 1004).table
    expect(RT.bucketAt(table, 0).pendingPing).toBeUndefined()
    expect(entryIds(RT.bucketAt(table, 0))).toEqual([b, a])
    result = RT.observe(table, contactFor(e), 1005)
    expect(result.command).toEqual({ _tag: "PingContact", contact: contactFor(b), bucket: 0 })
  })

  it("does not ping a head seen within headFreshnessMs: the newcomer only waits in the cache", () => {
    const [a, b, c, d] = idsInBucket(SELF, 0, 4, 7) as [NodeId, NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2, headFreshnessMs: 10_000 }), [a, b], 100)

    let result = RT.observe(table, contactFor(c), 10_099)
    expect(result.command).toBeUndefined()
    table = result.table
    expect(RT.bucketAt(table, 0).pendingPing).toBeUndefined()
    expect(replacementIds(RT.bucketAt(table, 0))).toEqual([c])

    // Once the head has gone unseen for the whole window it is worth a ping.
    result = RT.observe(table, contactFor(d), 10_100)
    expect(result.command).toEqual({ _tag: "PingContact", contact: contactFor(a), bucket: 0 })
    expect(replacementIds(RT.bucketAt(result.table, 0))).toEqual([c, d])
  })

  it("admits a newcomer only where it is of use: a free slot, room in the cache, a stale head or a failing entry", () => {
    const [a, b, c, d, e] = idsInBucket(SELF, 0, 5, 11) as [NodeId, NodeId, NodeId, NodeId, NodeId]
    const empty = RT.makeRoutingTable(SELF, 0, { k: 2, headFreshnessMs: 10_000, replacementCacheSize: 1 })
    expect(RT.admitsNewcomer(empty, contactFor(c), 100)).toBe(true)
    expect(RT.admitsNewcomer(empty, contactFor(SELF), 100)).toBe(false)
    // Full of fresh contacts but with room in the replacement cache (which placement decisions count).
    const withRoom = observeAll(empty, [a, b], 100)
    expect(RT.admitsNewcomer(withRoom, contactFor(c), 10_099)).toBe(true)
    let full = observeAll(withRoom, [e], 100)
    // Full of contacts seen within headFreshnessMs and a full cache: a newcomer would be dropped.
    expect(RT.admitsNewcomer(full, contactFor(c), 10_099)).toBe(false)
    // A head unseen for the whole window would be pinged, and may make room.
    expect(RT.admitsNewcomer(full, contactFor(c), 10_100)).toBe(true)
    // So does an entry that has failed.
    full = RT.recordFailure(full, b, 200)
    expect(RT.admitsNewcomer(full, contactFor(c), 300)).toBe(true)
    // A network at its cap is never admitted, room or not.
    const capped = observeAll(RT.makeRoutingTable(SELF, 0, { k: 3, maxPerGroup: 1 }), [a], 100)
    expect(RT.admitsNewcomer(capped, { nodeId: d, address: contactFor(a).address }, 100)).toBe(false)
  })

  it("finds a contact in its bucket or its replacement cache", () => {
    const [a, b, c] = idsInBucket(SELF, 0, 3, 12) as [NodeId, NodeId, NodeId]
    const table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2 }), [a, b, c], 100)
    expect(RT.findContact(table, c)).toBeUndefined()
    expect(RT.findKnown(table, c)?.contact).toEqual(contactFor(c))
    expect(RT.findKnown(table, a)?.contact).toEqual(contactFor(a))
    expect(RT.findKnown(table, SELF)).toBeUndefined()
  })

  it("keeps the replacement cache bounded, deduplicated and freshest last", () => {
    const [a, ...waiting] = idsInBucket(SELF, 1, 6, 3) as [NodeId, ...Array<NodeId>]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 1, replacementCacheSize: 3 }), [a], 1)
    waiting.forEach((id, i) => {
      table = RT.observe(table, contactFor(id), 2 + i).table
    })
    const [, , r3, r4, r5] = waiting as [NodeId, NodeId, NodeId, NodeId, NodeId]
    expect(replacementIds(RT.bucketAt(table, 1))).toEqual([r3, r4, r5])
    table = RT.observe(table, contactFor(r3), 10).table
    expect(replacementIds(RT.bucketAt(table, 1))).toEqual([r4, r5, r3])
    expect(RT.bucketAt(table, 1).replacements.at(-1)?.lastSeen).toBe(10)
    expect(entryIds(RT.bucketAt(table, 1))).toEqual([a])
    expect(RT.findContact(table, r3)).toBeUndefined()
    expect(RT.closest(table, r3, 5).map((c) => c.nodeId)).toEqual([a])
  })

  it("copies only the changed bucket and stores buckets sparsely", () => {
    const [deep] = idsInBucket(SELF, 200, 1, 4) as [NodeId]
    const [far, far2] = idsInBucket(SELF, 0, 2, 5) as [NodeId, NodeId]
    const table = observeAll(RT.makeRoutingTable(SELF, 0), [deep, far], 1)
    expect(table.buckets.map((b) => b.index)).toEqual([0, 200])
    const next = RT.observe(table, contactFor(far2), 2).table
    expect(next.buckets[1]).toBe(table.buckets[1])
    expect(next.buckets[0]?.entries[0]).toBe(table.buckets[0]?.entries[0])
  })
})

describe("network diversity (maxPerGroup)", () => {
  const on = (id: NodeId, host: string): Contact => ({ nodeId: id, address: { host, port: 4000 } })

  it("keeps at most maxPerGroup contacts of one /24 in a bucket, cache included, whatever their ids", () => {
    const ids = idsInBucket(SELF, 0, 8, 7)
    let table = RT.makeRoutingTable(SELF, 0, { k: 4, replacementCacheSize: 4, headFreshnessMs: 0, maxPerGroup: 2 })
    // A hostile network with ids ground into bucket 0: only two of its six get anywhere.
    ids.slice(0, 6).forEach((id, i) => {
      table = RT.observe(table, on(id, `203.0.113.${i + 1}`), i + 1).table
    })
    expect(RT.bucketAt(table, 0).entries.map((entry) => entry.contact.address.host)).toEqual(["203.0.113.1", "203.0.113.2"])
    expect(RT.bucketAt(table, 0).replacements).toEqual([])
    // Honest contacts of other networks still enter.
    table = RT.observe(table, on(ids[6] as NodeId, "198.51.100.7"), 10).table
    table = RT.observe(table, on(ids[7] as NodeId, "100.64.3.9"), 11).table
    expect(RT.contactCount(table)).toBe(4)
  })

  it("a known contact cannot move into a network at its cap, and evictions refill only within the cap", () => {
    const [a, b, c, d] = idsInBucket(SELF, 1, 4, 3) as [NodeId, NodeId, NodeId, NodeId]
    let table = RT.makeRoutingTable(SELF, 0, { k: 3, replacementCacheSize: 2, headFreshnessMs: 10_000, maxPerGroup: 2 })
    table = RT.observe(table, on(a, "203.0.113.1"), 1).table
    table = RT.observe(table, on(b, "203.0.113.2"), 2).table
    table = RT.observe(table, on(c, "198.51.100.3"), 3).table
    // c tries to move into 203.0.113.0/24, which already holds two: it keeps its old address.
    table = RT.observe(table, on(c, "203.0.113.3"), 4).table
    expect(RT.findContact(table, c)?.contact.address.host).toBe("198.51.100.3")
    // d waits in the cache (full bucket, fresh head); when c goes, d takes its place.
    table = RT.observe(table, on(d, "100.64.0.4"), 5).table
    table = RT.removeContact(table, c)
    expect(RT.findContact(table, d)?.contact.address.host).toBe("100.64.0.4")
  })

  it("is off by default in the bare table (the node turns it on)", () => {
    const ids = idsInBucket(SELF, 0, 5, 9)
    const table = ids.reduce((t, id, i) => RT.observe(t, on(id, `203.0.113.${i + 1}`), i + 1).table, RT.makeRoutingTable(SELF, 0))
    expect(RT.contactCount(table)).toBe(5)
    expect(() => RT.makeRoutingTable(SELF, 0, { maxPerGroup: 0 })).toThrow(RangeError)
  })
})

describe("recordFailure", () => {
  it("replaces an unresponsive pinged head with the freshest replacement", () => {
    const [a, b, c, d] = idsInBucket(SELF, 0, 4, 6) as [NodeId, NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2, headFreshnessMs: 0 }), [a, b], 1)
    table = RT.observe(table, contactFor(c), 2).table
    table = RT.observe(table, contactFor(d), 3).table
    expect(RT.bucketAt(table, 0).pendingPing?.nodeId).toBe(a)
    table = RT.recordFailure(table, a, 4)
    const bucket = RT.bucketAt(table, 0)
    expect(entryIds(bucket)).toEqual([b, d])
    expect(replacementIds(bucket)).toEqual([c])
    expect(bucket.pendingPing).toBeUndefined()
    expect(RT.findContact(table, d)).toEqual({ contact: contactFor(d), lastSeen: 3, failures: 0 })
    expect(RT.contactCount(table)).toBe(2)
  })

  it("keeps an outstanding ping when another entry fails", () => {
    const [a, b, c] = idsInBucket(SELF, 0, 3, 8) as [NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2, maxConsecutiveFailures: 1, headFreshnessMs: 0 }), [a, b, c], 1)
    expect(RT.bucketAt(table, 0).pendingPing?.nodeId).toBe(a)
    table = RT.recordFailure(table, b, 2)
    expect(entryIds(RT.bucketAt(table, 0))).toEqual([a, c])
    expect(RT.bucketAt(table, 0).pendingPing?.nodeId).toBe(a)
  })

  it("inserts a promoted replacement by lastSeen, so the head stays the least recently seen", () => {
    const [a, b, c] = idsInBucket(SELF, 0, 3, 9) as [NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2 }), [a, b], 1)
    table = RT.observe(table, contactFor(c), 2).table // cached, pings a
    table = RT.observe(table, contactFor(b), 5).table // [a, b]
    table = RT.removeContact(table, a)
    // c was last seen at 2, before b (5), so it becomes the head rather than the tail.
    expect(entryIds(RT.bucketAt(table, 0))).toEqual([c, b])
    expect(RT.bucketAt(table, 0).entries.map((e) => e.lastSeen)).toEqual([2, 5])
  })

  it("drops a contact after N consecutive failures; a success in between resets the count", () => {
    const [a] = idsInBucket(SELF, 5, 1, 10) as [NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { maxConsecutiveFailures: 3 }), [a], 1)
    table = RT.recordFailure(RT.recordFailure(table, a, 2), a, 3)
    expect(RT.findContact(table, a)?.failures).toBe(2)
    table = RT.observe(table, contactFor(a), 4).table
    expect(RT.findContact(table, a)?.failures).toBe(0)
    table = RT.recordFailure(RT.recordFailure(table, a, 5), a, 6)
    expect(RT.findContact(table, a)?.failures).toBe(2)
    table = RT.recordFailure(table, a, 7)
    expect(RT.findContact(table, a)).toBeUndefined()
    expect(RT.contactCount(table)).toBe(0)
    expect(RT.bucketAt(table, 5).entries).toEqual([])
  })

  it("removes a cached contact from the replacement cache and ignores unknown ids", () => {
    const [a, r1, r2] = idsInBucket(SELF, 3, 3, 11) as [NodeId, NodeId, NodeId]
    const [stranger] = idsInBucket(SELF, 9, 1, 12) as [NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 1 }), [a, r1, r2], 1)
    expect(replacementIds(RT.bucketAt(table, 3))).toEqual([r1, r2])
    table = RT.recordFailure(table, r1, 2)
    expect(replacementIds(RT.bucketAt(table, 3))).toEqual([r2])
    expect(RT.recordFailure(table, stranger, 3)).toBe(table)
    expect(RT.recordFailure(table, r1, 3)).toBe(table)
    expect(RT.recordFailure(table, SELF, 3)).toBe(table)
  })
})

describe("removeContact", () => {
  it("removes a contact, promotes a replacement, and ignores unknown ids", () => {
    const [a, b, c] = idsInBucket(SELF, 4, 3, 13) as [NodeId, NodeId, NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 2, headFreshnessMs: 0 }), [a, b, c], 1)
    expect(RT.removeContact(table, SELF)).toBe(table)
    table = RT.removeContact(table, b)
    expect(entryIds(RT.bucketAt(table, 4))).toEqual([a, c])
    expect(RT.bucketAt(table, 4).pendingPing?.nodeId).toBe(a)
    expect(RT.removeContact(table, b)).toBe(table)
    table = RT.removeContact(table, a)
    expect(entryIds(RT.bucketAt(table, 4))).toEqual([c])
    expect(RT.bucketAt(table, 4).pendingPing).toBeUndefined()
    expect(RT.contactCount(table)).toBe(1)
  })

  it("does not mutate its input", () => {
    const ids = idsInBucket(SELF, 0, 5, 14)
    const table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 3 }), ids, 1)
    const snapshot = structuredClone(table)
    RT.removeContact(table, ids[0] as NodeId)
    RT.recordFailure(table, ids[1] as NodeId, 2)
    RT.observe(table, contactFor(ids[2] as NodeId), 3)
    RT.observe(table, contactFor(ids[4] as NodeId), 3)
    RT.touchBucket(table, 0, 4)
    expect(table).toEqual(snapshot)
  })
})

describe("bucketAt, touchBucket and staleBuckets", () => {
  it("returns empty buckets for untouched indices and rejects invalid ones", () => {
    const table = RT.makeRoutingTable(SELF, 42)
    expect(RT.bucketAt(table, 17)).toEqual({
      index: 17,
      entries: [],
      replacements: [],
      lastTouched: 42,
      pendingPing: undefined
    })
    for (const bad of [-1, 256, 1.5]) {
      expect(() => RT.bucketAt(table, bad)).toThrow(RangeError)
      expect(() => RT.touchBucket(table, bad, 0)).toThrow(RangeError)
    }
  })

  it("reports buckets up to one past the deepest non-empty one that were not touched recently", () => {
    let table = RT.makeRoutingTable(SELF, 0)
    expect(RT.staleBuckets(table, 1000, 1000)).toEqual([])
    expect(RT.staleBuckets(table, 1001, 1000)).toEqual([0])
    table = observeAll(table, idsInBucket(SELF, 3, 1, 15), 800)
    expect(RT.staleBuckets(table, 1600, 1000)).toEqual([0, 1, 2, 4])
    table = RT.touchBucket(table, 2, 1500)
    table = RT.touchBucket(table, 100, 1500)
    expect(RT.staleBuckets(table, 1600, 1000)).toEqual([0, 1, 4])
    expect(RT.staleBuckets(table, 2600, 1000)).toEqual([0, 1, 2, 3, 4])
    expect(RT.bucketAt(table, 100).lastTouched).toBe(1500)
    expect(() => RT.staleBuckets(table, 0, -1)).toThrow(RangeError)
  })

  it("considers all 256 buckets when the deepest one is occupied", () => {
    const [neighbour] = idsInBucket(SELF, 255, 1, 16) as [NodeId]
    let table = observeAll(RT.makeRoutingTable(SELF, 0), [neighbour], 95)
    table = RT.touchBucket(table, 7, 95)
    const stale = RT.staleBuckets(table, 100, 10)
    expect(stale).toHaveLength(254)
    expect(stale).not.toContain(7)
    expect(stale).not.toContain(255)
    expect(stale.at(-1)).toBe(254)
  })
})

describe("closest", () => {
  it("handles empty tables, n = 0 and invalid n", () => {
    const empty = RT.makeRoutingTable(SELF, 0)
    expect(RT.closest(empty, SELF, 5)).toEqual([])
    const table = observeAll(empty, idsInBucket(SELF, 0, 3, 17), 1)
    expect(RT.closest(table, SELF, 0)).toEqual([])
    expect(RT.closest(table, SELF, 10)).toHaveLength(3)
    expect(() => RT.closest(table, SELF, -1)).toThrow(RangeError)
    expect(() => RT.closest(table, SELF, 1.5)).toThrow(RangeError)
  })

  it("walks bucket groups in distance order for a target inside the table's range", () => {
    const ids = [0, 1, 2, 3, 4, 6, 9].flatMap((bucket) => idsInBucket(SELF, bucket, 4, 200 + bucket))
    const table = observeAll(RT.makeRoutingTable(SELF, 0, { k: 4 }), ids, 1)
    const target = randomKeyInBucket(SELF, 3, seededRandomBytes(99))
    for (const n of [1, 4, 5, 9, 13, 28, 40]) {
      expect(RT.closest(table, target, n).map((c) => c.nodeId)).toEqual(oracleClosest(RT.allContacts(table), target, n))
    }
  })
})
