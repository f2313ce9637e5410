import { describe, expect, it } from "@effect/vitest"
import cliTruncate from "cli-truncate"
import { FastCheck as fc } from "effect"
import stringWidth from "string-width"
import wrapAnsi from "wrap-ansi"
import { printableText } from "../../src/cli/chat/PlainText.js"
import { displayWidth, fitWidth, fixWidth, graphemes, wrapClusters, wrapLine } from "../../src/cli/chat/Text.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const CHECK = "\u2705" // ✅
const THUMB = "\u{1f44d}\u{1f3fd}" // 👍🏽, a thumb with a skin tone
const FAMILY = "\u{1f468}\u200d\u{1f469}\u200d\u{1f467}" // 👨‍👩‍👧, three people joined by ZWJs
const FLAG = "\u{1f1eb}\u{1f1f7}" // 🇫🇷, two regional indicators
const KEYCAP = "1\ufe0f\u20e3" // 1️⃣
const EMOJI = [CHECK, THUMB, FAMILY, FLAG, KEYCAP]

const props = { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }

/** Text mixing ASCII, spaces, wide CJK, accents and emoji sequences. */
const arbText = fc
  .array(fc.constantFrom("a", "bc", "word", " ", " ", "宴", "e\u0301", ...EMOJI), { maxLength: 40 })
  .map((parts) => parts.join(""))

describe("terminal widths", () => {
  it("measure emoji as Ink does: two columns for each emoji sequence", () => {
    for (const emoji of EMOJI) {
      expect(displayWidth(emoji), emoji).toBe(2)
      expect(displayWidth(emoji), emoji).toBe(stringWidth(emoji))
    }
    expect(displayWidth(`ok ${CHECK} ${THUMB}${FAMILY}`)).toBe(3 + 2 + 1 + 4)
    expect(displayWidth("宴会")).toBe(4)
    expect(displayWidth("e\u0301")).toBe(1)
  })

  it("split text into grapheme clusters, never inside an emoji sequence", () => {
    expect(graphemes(`a${FAMILY}${THUMB}e\u0301`)).toEqual(["a", FAMILY, THUMB, "e\u0301"])
  })

  it("truncate and pad by whole clusters", () => {
    expect(fitWidth(`${FAMILY}${FAMILY}${FAMILY}`, 5)).toBe(`${FAMILY}${FAMILY}`)
    expect(fitWidth(`${THUMB}${THUMB}`, 3)).toBe(THUMB)
    expect(fitWidth(FAMILY, 1)).toBe("")
    expect(fixWidth(`${THUMB}${THUMB}${THUMB}`, 4)).toBe(`${THUMB}… `)
    expect(fixWidth(`${CHECK} done`, 8)).toBe(`${CHECK} done `)
    expect(fixWidth(`${FAMILY}${FAMILY}${FAMILY}`, 5)).toBe(`${FAMILY}${FAMILY}…`)
    expect(fixWidth("宴会宴会", 5)).toBe("宴会…")
  })

  it("wrap emoji by whole clusters, at spaces where possible", () => {
    expect(wrapLine(`${FAMILY}${FAMILY}${FAMILY}`, 5)).toEqual([`${FAMILY}${FAMILY}`, FAMILY])
    expect(wrapLine(`${THUMB}${THUMB}${THUMB}${THUMB}`, 3)).toEqual([THUMB, THUMB, THUMB, THUMB])
    expect(wrapLine(`ab ${FAMILY}${FAMILY}${FAMILY} cd`, 5)).toEqual(["ab", `${FAMILY}${FAMILY}`, `${FAMILY} cd`])
    expect(wrapLine(`${CHECK} ship it ${CHECK}`, 7)).toEqual([`${CHECK} ship`, `it ${CHECK}`])
    expect(wrapLine(FLAG, 1)).toEqual([FLAG])
  })

  it("keep the old behaviour on plain and wide text", () => {
    expect(wrapLine("the quick brown fox jumps", 10)).toEqual(["the quick", "brown fox", "jumps"])
    expect(wrapLine("abcdefghijkl", 5)).toEqual(["abcde", "fghij", "kl"])
    expect(wrapLine("宴会宴会", 3)).toEqual(["宴", "会", "宴", "会"])
    expect(wrapLine("a   b", 2)).toEqual(["a", "b"])
    expect(wrapLine("", 5)).toEqual([""])
  })

  it("wrap a 16 KiB line in one pass", () => {
    const paste = `${"word ".repeat(2000)}${FAMILY.repeat(1000)}`
    const lines = wrapLine(paste, 80)
    expect(lines.join("").replaceAll(" ", "")).toBe(paste.replaceAll(" ", ""))
    for (const line of lines) expect(displayWidth(line)).toBeLessThanOrEqual(80)
  })

  it.prop("wrapped lines fit, keep every cluster whole and lose nothing but spaces", [arbText, fc.integer({ min: 1, max: 12 })], ([text, width]) => {
    const lines = wrapLine(text, width)
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) {
      // A single cluster wider than the line is the one thing allowed to overrun it.
      if (graphemes(line).length > 1) expect(displayWidth(line)).toBeLessThanOrEqual(width)
    }
    const words = (value: string) => graphemes(value).filter((cluster) => cluster !== " ")
    expect(lines.flatMap(words)).toEqual(words(text))
  }, props)

  it.prop(
    "printable ASCII takes the short way (a column a character) to the same lines as the general one",
    [fc.string({ unit: fc.constantFrom("a", "b", "Z", "~", "!", " ", " "), maxLength: 60 }), fc.integer({ min: 1, max: 12 })],
    ([text, width]) => {
      const clusters = graphemes(text)
      expect(wrapLine(text, width)).toEqual(
        displayWidth(text) <= width ? [text] : wrapClusters(clusters, clusters.map((cluster) => stringWidth(cluster)), width)
      )
    },
    props
  )

  it.prop("fixWidth gives exactly the width asked, as Ink measures it", [arbText, fc.integer({ min: 1, max: 12 })], ([text, width]) => {
    const fixed = fixWidth(text, width)
    expect(stringWidth(fixed)).toBe(width)
    expect(text.startsWith(fixed.replace(/…? *$/u, ""))).toBe(true)
  }, props)

  // Why the chat does not use them (docs/decisions.md, "Terminal text widths"): if these start
  // to pass with a later release, the packages can take over wrapping and cutting.
  it("long text is segmented a piece at a time, into exactly the clusters the whole text has", () => {
    // Pieces of 512 units: runs of flags (regional indicators pair up from the run's start),
    // ZWJ families, accents and keycaps cross many piece boundaries at every offset.
    const whole = (text: string) => Array.from(new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text), (part) => part.segment)
    const mixed = `a${FAMILY}e\u0301${FLAG}${FLAG}${FLAG}${KEYCAP}${THUMB}b `.repeat(400)
    for (const offset of [0, 1, 3, 7]) {
      const text = mixed.slice(offset)
      expect(graphemes(text)).toEqual(whole(text))
    }
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...EMOJI, "x", " ", "e\u0301", "\u{1f1e9}"), { minLength: 200, maxLength: 900 }), (parts) => {
        const text = parts.join("")
        expect(graphemes(text)).toEqual(whole(text))
        expect(displayWidth(text)).toBe(stringWidth(text))
      }),
      { seed: PROPERTY_SEED, numRuns: 30 }
    )
  })

  it("a cluster longer than the reach is cut, never lost, and a long paste with an emoji is measured whole", () => {
    const monster = `e${"\u0301".repeat(2000)}x`
    expect(graphemes(monster).join("")).toBe(monster)
    // Walked whole, this string took 42 s in Node 20's Intl.Segmenter (the chat froze on such a paste).
    const paste = `${"y".repeat(65_535)}${THUMB}`
    expect(graphemes(paste)).toHaveLength(65_536)
    expect(displayWidth(paste)).toBe(65_537)
  })

  it("wrap-ansi splits emoji sequences and cli-truncate overruns wide characters", () => {
    const wrapped = wrapAnsi(`${THUMB}${THUMB}`, 3, { hard: true, trim: true }).split("\n")
    expect(wrapped.every((line) => graphemes(line).every((cluster) => cluster === THUMB))).toBe(false)
    expect(stringWidth(cliTruncate("宴会宴会", 4))).toBeGreaterThan(4)
  })
})

describe("printableText", () => {
  it("escapes control and bidirectional-override characters and keeps emoji", () => {
    expect(printableText(`a\u001b[31m${FAMILY}\u202eb\r\n`)).toBe(`a\\u001b[31m${FAMILY}\\u202eb\\r\\n`)
  })
})
