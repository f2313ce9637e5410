import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { rawHex, shortString, uint16, uint32, uint64 } from "../../src/core/Encoding.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const bigEndian = (bytes: Uint8Array): bigint => bytes.reduce((acc, byte) => (acc << 8n) | BigInt(byte), 0n)

describe("canonical encoding", () => {
  it.prop(
    "integers are big-endian and exact at every width",
    [fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff_ffff }), fc.maxSafeNat()],
    ([small, medium, large]) => {
      expect(bigEndian(uint16(small, "x"))).toBe(BigInt(small))
      expect(bigEndian(uint32(medium, "x"))).toBe(BigInt(medium))
      expect(bigEndian(uint64(large, "x"))).toBe(BigInt(large))
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )

  it("refuses values that do not fit, naming the field", () => {
    expect(() => uint16(0x1_0000, "port")).toThrow("port must fit in 16 bits")
    expect(() => uint32(-1, "length")).toThrow(RangeError)
    expect(() => uint64(Number.MAX_SAFE_INTEGER + 1, "sequence")).toThrow("sequence")
    expect(() => uint16(1.5, "x")).toThrow(RangeError)
    expect(() => rawHex("abcd", 3, "key")).toThrow("key must be 3 bytes")
    expect(() => rawHex("zz", 1, "key")).toThrow(RangeError)
  })

  it("strings carry their UTF-8 byte length, not their character count", () => {
    expect(Array.from(shortString("é€", "name"))).toEqual([0, 5, 0xc3, 0xa9, 0xe2, 0x82, 0xac])
    expect(() => shortString("a".repeat(0x1_0000), "name")).toThrow("name length")
  })
})
