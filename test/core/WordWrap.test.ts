import { describe, expect, it } from "@effect/vitest"
import { wrapWords } from "../../src/core/WordWrap.js"

describe("wrapWords", () => {
  it("breaks between words before the width, indenting every line after the first", () => {
    expect(wrapWords("the quick brown fox jumps", 2, 10)).toBe("the quick\n  brown fox\n  jumps")
  })

  it("keeps a word longer than the width whole on its own line, and collapses runs of blanks", () => {
    expect(wrapWords("a  verylongword\tb", 0, 4)).toBe("a\nverylongword\nb")
    expect(wrapWords("   ", 0, 10)).toBe("")
  })
})
