/**
 * What a person may send: a blank text is refused with a typed error before
 * the message limits are checked, and a long text splits into messages that
 * each fit, at line breaks or spaces where it can, never inside a character,
 * losing nothing but the breaks it was cut at.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { MAX_MESSAGE_TEXT_BYTES, MessageTooLong, utf8ByteLength } from "../../src/core/Message.js"
import { isBlankText, MessageEmpty, parseOutgoingText, splitMessageText } from "../../src/core/MessageInput.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const failureOf = <A, E>(result: Either.Either<A, E>): E => {
  if (Either.isRight(result)) throw new Error("expected a failure")
  return result.left
}

describe("blank texts", () => {
  it("nothing to read is blank: empty, spaces, tabs, line breaks, no-break and zero-width spaces", () => {
    for (const text of ["", " ", "   \t  ", "\n\r\n", "\u00a0\u3000", "\u200b\u200d\ufeff", " \u2060 "]) {
      expect(isBlankText(text), JSON.stringify(text)).toBe(true)
    }
    for (const text of ["a", " . ", "\u200bx", "😀", "\u0007"]) expect(isBlankText(text), JSON.stringify(text)).toBe(false)
  })

  it("parseOutgoingText refuses a blank text as MessageEmpty, then applies the message limits", () => {
    expect(failureOf(parseOutgoingText(""))).toEqual(new MessageEmpty({ length: 0 }))
    const spaces = failureOf(parseOutgoingText("  \n "))
    expect(spaces).toEqual(new MessageEmpty({ length: 4 }))
    expect(spaces.message).toBe("the message is only white space: type some text to send")
    expect(failureOf(parseOutgoingText("x".repeat(MAX_MESSAGE_TEXT_BYTES + 1)))).toBeInstanceOf(MessageTooLong)
    expect(Either.getOrThrow(parseOutgoingText("  hi  "))).toBe("  hi  ")
  })
})

describe("splitMessageText", () => {
  it("leaves a text that fits alone, and drops a blank one", () => {
    expect(splitMessageText("hello")).toEqual(["hello"])
    expect(splitMessageText("x".repeat(MAX_MESSAGE_TEXT_BYTES))).toHaveLength(1)
    expect(splitMessageText("   ")).toEqual([])
  })

  it("cuts at the last line break, else the last space, else at the limit", () => {
    expect(splitMessageText("one two\nthree four", 12)).toEqual(["one two", "three four"])
    expect(splitMessageText("aaaa bbbb cccc", 10)).toEqual(["aaaa bbbb", "cccc"])
    expect(splitMessageText("abcdefghij", 4)).toEqual(["abcd", "efgh", "ij"])
    // A break in the first half would leave a stub: the cut goes to the limit instead.
    expect(splitMessageText("a bcdefghijk", 8)).toEqual(["a bcdefg", "hijk"])
  })

  it("never splits a character: a 4-byte emoji stays whole", () => {
    expect(splitMessageText("😀😀😀", 6)).toEqual(["😀", "😀", "😀"])
    expect(splitMessageText("é".repeat(5), 5)).toEqual(["éé", "éé", "é"])
  })

  it.prop(
    "every piece fits and has text, and the pieces are the text without the breaks they were cut at",
    [fc.array(fc.oneof(fc.constantFrom(" ", "\n", "é", "😀", "语"), fc.string({ minLength: 1, maxLength: 12 })), { maxLength: 80 }), fc.integer({ min: 4, max: 40 })],
    ([parts, limit]) => {
      const text = parts.join("")
      const pieces = splitMessageText(text, limit)
      for (const piece of pieces) {
        expect(utf8ByteLength(piece)).toBeLessThanOrEqual(limit)
        expect(isBlankText(piece)).toBe(false)
        // Well-formed: no lone surrogate at either end of a cut.
        expect(/\p{Cs}/u.test(piece)).toBe(false)
      }
      // Nothing but white space (the breaks cut at, and blank pieces) is lost, and the order is kept.
      const visible = (value: string) => value.replace(/[\p{White_Space}\u200b-\u200d\u2060\ufeff]/gu, "")
      expect(pieces.map(visible).join("")).toBe(visible(text))
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )
})
