/**
 * The transport's pooled random bytes: fresh copies, never the same bytes
 * twice, across refills of the pool.
 */
import { describe, expect, it } from "vitest"
import { pooledRandomBytes } from "../../src/platform/RandomPool.js"

describe("pooled random bytes", () => {
  it("hands out copies that never repeat, across many refills of the pool", () => {
    const seen = new Set<string>()
    let first: Uint8Array | undefined
    // 12-byte nonces over 30 refills of the 4 KiB pool: a byte handed out twice would repeat a value.
    for (let i = 0; i < 10_000; i++) {
      const nonce = pooledRandomBytes(12)
      expect(nonce.length).toBe(12)
      const hex = Buffer.from(nonce).toString("hex")
      expect(seen.has(hex)).toBe(false)
      seen.add(hex)
      first ??= nonce
    }
    // A copy of its own: refilling the pool did not change what was handed out first.
    expect(seen.has(Buffer.from(first ?? []).toString("hex"))).toBe(true)
    expect(Buffer.from(first ?? []).toString("hex")).toBe([...seen][0])
  })

  it("a value that does not fit what is left of the pool comes whole from a refill; more than the pool, or a length that is no count, is refused", () => {
    for (let i = 0; i < 100; i++) expect(pooledRandomBytes(1000).length).toBe(1000)
    expect(() => pooledRandomBytes(4097)).toThrow(RangeError)
    // A negative or fractional length would move the pool back over bytes already handed out.
    for (const length of [-12, 1.5, Number.NaN]) expect(() => pooledRandomBytes(length)).toThrow(RangeError)
  })
})
