/**
 * IP diversity: `withinDiversity` against a count over the existing hosts,
 * and `limitPerGroup` against its defining properties (at most the cap per
 * network, a subsequence of its input, nothing dropped that fit) and against
 * admitting the items one by one with `withinDiversity`.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { addressGroupOf } from "../../src/core/AddressGroup.js"
import { DEFAULT_MAX_PER_GROUP, limitPerGroup, withinDiversity } from "../../src/core/IpDiversity.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

describe("withinDiversity", () => {
  it("admits a host while its network holds fewer than the cap", () => {
    expect(DEFAULT_MAX_PER_GROUP).toBe(2)
    expect(withinDiversity([], "10.0.0.1")).toBe(true)
    expect(withinDiversity(["10.0.0.1"], "10.0.0.2")).toBe(true)
    expect(withinDiversity(["10.0.0.1", "10.0.0.2"], "10.0.0.3")).toBe(false)
    expect(withinDiversity(["10.0.0.1", "10.0.0.2"], "10.0.1.3")).toBe(true)
    // The same address on another port, or IPv4-mapped, is the same network.
    expect(withinDiversity(["10.0.0.1", "::ffff:10.0.0.1"], "10.0.0.1")).toBe(false)
    expect(withinDiversity(["2001:db8:1::1", "2001:db8:1:ffff::1"], "2001:db8:1:1::9")).toBe(false)
    expect(withinDiversity(["2001:db8:1::1", "2001:db8:1:ffff::1"], "2001:db8:2::1")).toBe(true)
    // Loopback networks count like any other: 127.0.x.0/24 are distinct networks.
    expect(withinDiversity(["127.0.0.1", "127.0.0.2"], "127.0.1.1")).toBe(true)
    expect(withinDiversity(["127.0.0.1", "127.0.0.2"], "127.0.0.3")).toBe(false)
  })

  it("takes the cap as given: 0 admits nothing, Infinity everything, anything else is a programming error", () => {
    expect(withinDiversity([], "10.0.0.1", 0)).toBe(false)
    expect(withinDiversity(["10.0.0.1", "10.0.0.2", "10.0.0.3"], "10.0.0.4", Infinity)).toBe(true)
    expect(withinDiversity(["10.0.0.1", "10.0.0.2"], "10.0.0.4", 3)).toBe(true)
    expect(() => withinDiversity([], "10.0.0.1", -1)).toThrow(RangeError)
    expect(() => withinDiversity([], "10.0.0.1", 1.5)).toThrow(RangeError)
    expect(() => withinDiversity([], "10.0.0.1", Number.NaN)).toThrow(RangeError)
  })

  it("reads existing hosts from any iterable, only as far as it must", () => {
    let read = 0
    function* hosts(): Generator<string> {
      for (let i = 0; i < 1000; i++) {
        read++
        yield `10.0.0.${i % 256}`
      }
    }
    expect(withinDiversity(hosts(), "10.0.0.1")).toBe(false)
    expect(read).toBe(2)
    expect(withinDiversity(new Set(["a.example", "b.example"]), "c.example", 1)).toBe(true)
  })
})

describe("limitPerGroup", () => {
  it("keeps the first items of each network, in order", () => {
    const contacts = [
      { id: "a", host: "10.0.0.1" },
      { id: "b", host: "10.0.0.2" },
      { id: "c", host: "2001:db8::1" },
      { id: "d", host: "10.0.0.3" },
      { id: "e", host: "10.0.1.1" },
      { id: "f", host: "::ffff:10.0.0.4" },
      { id: "g", host: "2001:db8:0:1::1" },
      { id: "h", host: "2001:db8:0:2::1" }
    ]
    const ids = (cap?: number) => limitPerGroup(contacts, (c) => c.host, cap).map((c) => c.id)
    expect(ids()).toEqual(["a", "b", "c", "e", "g"])
    expect(ids(1)).toEqual(["a", "c", "e"])
    expect(ids(0)).toEqual([])
    expect(ids(Infinity)).toEqual(["a", "b", "c", "d", "e", "f", "g", "h"])
    expect(limitPerGroup([], (x: string) => x)).toEqual([])
  })

  // Few networks, so caps bite: addresses in four IPv4 /24s and two IPv6 /48s, plus names.
  const arbHost = fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 })).map(([net, h]) => `10.0.${net}.${h}`),
    fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 })).map(([net, h]) => `::ffff:10.0.${net}.${h}`),
    fc.tuple(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 0, max: 0xffff })).map(([net, h]) => `2001:db8:${net}:${h.toString(16)}::1`),
    fc.constantFrom("a.example", "B.example", "b.example.")
  )
  const arbItems = fc.array(fc.tuple(fc.nat(), arbHost), { maxLength: 60 })
  const arbCap = fc.oneof(fc.integer({ min: 0, max: 4 }), fc.constant(DEFAULT_MAX_PER_GROUP))

  it.prop(
    "keeps at most the cap per network, as a subsequence of its input, dropping only what did not fit",
    [arbItems, arbCap],
    ([items, cap]) => {
      const frozen = Object.freeze(items.map((item) => Object.freeze(item)))
      const kept = limitPerGroup(frozen, ([, host]) => host, cap)
      // Plain checks, one expect at the end: expect is slow in loops.
      const violations: Array<string> = []
      // Subsequence: walking the input finds every kept item, in order, as the same object.
      let position = 0
      for (const item of kept) {
        while (position < frozen.length && frozen[position] !== item) position++
        if (position >= frozen.length) violations.push(`${item[1]} kept out of order or not from the input`)
        position++
      }
      const counts = new Map<string, number>()
      for (const [, host] of kept) counts.set(addressGroupOf(host), (counts.get(addressGroupOf(host)) ?? 0) + 1)
      for (const [group, count] of counts) if (count > cap) violations.push(`${group} kept ${count} > ${cap}`)
      // Maximal: an item was dropped only because its network already had `cap` items kept before it.
      const keptSet = new Set(kept)
      const seen = new Map<string, number>()
      for (const item of frozen) {
        const group = addressGroupOf(item[1])
        const before = seen.get(group) ?? 0
        if (keptSet.has(item) !== before < cap) violations.push(`${item[1]} kept: ${keptSet.has(item)} after ${before} of ${group}`)
        if (keptSet.has(item)) seen.set(group, before + 1)
      }
      expect(violations).toEqual([])
    },
    propOptions(500)
  )

  it.prop(
    "equals admitting the items one by one with withinDiversity",
    [arbItems, arbCap],
    ([items, cap]) => {
      const admitted: Array<readonly [number, string]> = []
      for (const item of items) {
        if (withinDiversity(admitted.map(([, host]) => host), item[1], cap)) admitted.push(item)
      }
      expect(limitPerGroup(items, ([, host]) => host, cap)).toEqual(admitted)
    },
    propOptions(500)
  )

  it.prop(
    "withinDiversity is a count of the candidate's network among the existing hosts",
    [fc.array(arbHost, { maxLength: 20 }), arbHost, arbCap],
    ([existing, candidate, cap]) => {
      const sameNetwork = existing.filter((host) => addressGroupOf(host) === addressGroupOf(candidate)).length
      expect(withinDiversity(existing, candidate, cap)).toBe(sameNetwork < cap)
    },
    propOptions(500)
  )
})
