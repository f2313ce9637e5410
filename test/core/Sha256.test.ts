import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { createHash } from "node:crypto"
import { toHex, utf8 } from "../../src/core/Bytes.js"
import { sha256 } from "../../src/core/Sha256.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

describe("sha256", () => {
  it("matches the FIPS 180-4 test vectors", () => {
    expect(toHex(sha256(utf8("")))).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    expect(toHex(sha256(utf8("abc")))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    expect(toHex(sha256(utf8("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")))).toBe(
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    )
    expect(toHex(sha256(utf8(
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"
    )))).toBe("cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
    expect(toHex(sha256(utf8("a".repeat(1_000_000))))).toBe("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
  })

  it("gives a fresh 32-byte Uint8Array and leaves its input alone", () => {
    const input = Uint8Array.of(1, 2, 3)
    const first = sha256(input)
    const second = sha256(input)
    expect(first).toBeInstanceOf(Uint8Array)
    expect(first.length).toBe(32)
    expect(first).not.toBe(second)
    expect(first).toEqual(second)
    expect(input).toEqual(Uint8Array.of(1, 2, 3))
  })

  it.prop(
    "agrees with node:crypto on any input, across block boundaries",
    [fc.uint8Array({ minLength: 0, maxLength: 300 })],
    ([data]) => {
      expect(toHex(sha256(data))).toBe(createHash("sha256").update(data).digest("hex"))
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )
})
