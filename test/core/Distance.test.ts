import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  bucketIndex,
  commonPrefixLength,
  compareDistance,
  isCloser,
  sortByDistance,
  xorDistance
} from "../../src/core/Distance.js"
import { ID_BITS, type Key } from "../../src/core/Id.js"
import { arbKey, PROPERTY_SEED } from "../support/arbitraries.js"

// An independent oracle: the distance as a bigint, computed from the byte values.
const oracleDistance = (a: Key, b: Key): bigint => {
  let value = 0n
  for (let i = 0; i < 64; i += 2) {
    const x = Number.parseInt(a.slice(i, i + 2), 16) ^ Number.parseInt(b.slice(i, i + 2), 16)
    value = (value << 8n) | BigInt(x)
  }
  return value
}

const oracleCommonPrefix = (a: Key, b: Key): number => {
  const distance = oracleDistance(a, b)
  return distance === 0n ? ID_BITS : ID_BITS - distance.toString(2).length
}

/** A key that shares exactly `prefix` leading bits with `key` (prefix < 256). */
const arbKeyWithPrefix = fc.tuple(arbKey, fc.integer({ min: 0, max: ID_BITS - 1 }), arbKey).map(([key, prefix, noise]) => {
  const bits = BigInt(`0x${key}`)
  const flip = 1n << BigInt(ID_BITS - 1 - prefix)
  const lowMask = flip - 1n
  const other = ((bits ^ flip) & ~lowMask) | (BigInt(`0x${noise}`) & lowMask)
  return { key, prefix, other: other.toString(16).padStart(64, "0") as Key }
})

const options = { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }

describe("XOR distance", () => {
  it.prop("xorDistance equals the byte-wise oracle", [arbKey, arbKey], ([a, b]) => {
    expect(xorDistance(a, b)).toBe(oracleDistance(a, b))
  }, options)

  it.prop("is a metric: zero only to itself, symmetric, triangle inequality", [arbKey, arbKey, arbKey], ([a, b, c]) => {
    expect(xorDistance(a, a)).toBe(0n)
    expect(xorDistance(a, b) === 0n).toBe(a === b)
    expect(xorDistance(a, b)).toBe(xorDistance(b, a))
    expect(xorDistance(a, c) <= xorDistance(a, b) + xorDistance(b, c)).toBe(true)
  }, options)

  it.prop("compareDistance orders exactly like the bigint distances", [arbKey, arbKey, arbKey], ([target, a, b]) => {
    const expected = Math.sign(Number(oracleDistance(target, a) - oracleDistance(target, b)))
    expect(Math.sign(compareDistance(target, a, b))).toBe(expected)
    expect(isCloser(target, a, b)).toBe(expected < 0)
  }, options)

  it.prop("compareDistance tells apart keys that differ only in the last bit", [arbKey], ([key]) => {
    const last = Number.parseInt(key.slice(63), 16)
    const neighbour = (key.slice(0, 63) + (last ^ 1).toString(16)) as Key
    expect(compareDistance(key, key, neighbour)).toBeLessThan(0)
    expect(compareDistance(key, neighbour, key)).toBeGreaterThan(0)
    expect(commonPrefixLength(key, neighbour)).toBe(ID_BITS - 1)
  }, options)

  it.prop("commonPrefixLength equals the oracle on random pairs", [arbKey, arbKey], ([a, b]) => {
    expect(commonPrefixLength(a, b)).toBe(oracleCommonPrefix(a, b))
  }, options)

  it.prop("bucketIndex is the common-prefix length for every prefix length", [arbKeyWithPrefix], ([{ key, other, prefix }]) => {
    expect(bucketIndex(key, other)).toBe(prefix)
    expect(oracleCommonPrefix(key, other)).toBe(prefix)
  }, options)

  it("bucketIndex of a key with itself is ID_BITS (no bucket)", () => {
    const key = "ab".repeat(32) as Key
    expect(bucketIndex(key, key)).toBe(ID_BITS)
  })

  it.prop("sortByDistance sorts like the oracle", [arbKey, fc.array(arbKey, { maxLength: 40 })], ([target, keys]) => {
    const sorted = sortByDistance(target, keys, (key) => key)
    const expected = [...keys].sort((x, y) => {
      const dx = oracleDistance(target, x)
      const dy = oracleDistance(target, y)
      return dx < dy ? -1 : dx > dy ? 1 : 0
    })
    expect(sorted).toEqual(expected)
  }, options)
})
