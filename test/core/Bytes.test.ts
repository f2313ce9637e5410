import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { Buffer } from "node:buffer"
import { fromHex, hexDigitAt, toHex } from "../../src/core/Bytes.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const props = { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }

describe("hex", () => {
  it.prop("encodes lower case as Node does and round-trips", [fc.uint8Array({ maxLength: 80 })], ([bytes]) => {
    const text = toHex(bytes)
    expect(text).toBe(Buffer.from(bytes).toString("hex"))
    expect(fromHex(text)).toEqual(bytes)
    expect(fromHex(text.toUpperCase())).toEqual(bytes)
  }, props)

  it("refuses odd lengths and anything but hex digits", () => {
    expect(fromHex("")).toEqual(new Uint8Array(0))
    expect(fromHex("00ff7A")).toEqual(Uint8Array.of(0x00, 0xff, 0x7a))
    // "é0" is three UTF-8 bytes and "éé" four: neither may pass as hex.
    for (const bad of ["0", "abc", "0g", "g0", " 0", "0x00", "-1", "é0", "éé", "0\n", "٣٣"]) {
      expect(fromHex(bad), bad).toBeUndefined()
    }
  })

  it.prop("hexDigitAt reads each digit of either case", [fc.uint8Array({ minLength: 1, maxLength: 32 })], ([bytes]) => {
    const text = toHex(bytes)
    for (const form of [text, text.toUpperCase()]) {
      const digits = Array.from(form, (_, index) => hexDigitAt(form, index))
      expect(digits.map((digit) => digit.toString(16)).join("")).toBe(text)
    }
  }, props)
})
