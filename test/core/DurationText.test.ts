import { describe, expect, it } from "@effect/vitest"
import { Duration, FastCheck as fc, Option } from "effect"
import { parseDurationText } from "../../src/core/DurationText.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const millisOf = (text: string): number | undefined => Option.getOrUndefined(Option.map(parseDurationText(text), Duration.toMillis))

/** Each unit's names and its length in milliseconds. */
const UNITS: ReadonlyArray<readonly [ReadonlyArray<string>, number]> = [
  [["ms", "milli", "millis"], 1],
  [["s", "second", "seconds"], 1000],
  [["m", "min", "minute", "minutes"], 60_000],
  [["h", "hour", "hours"], 3_600_000],
  [["d", "day", "days"], 86_400_000]
]

const unitName = fc.constantFrom(...UNITS.flatMap(([names, millis]) => names.map((name) => ({ name, millis }))))

describe("durations written on a command line", () => {
  it.prop(
    "reads back what Duration.format writes, to the millisecond",
    [fc.integer({ min: 0, max: 400 * 86_400_000 })],
    ([millis]) => {
      expect(millisOf(Duration.format(Duration.millis(millis)))).toBe(millis)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 500 } }
  )

  it.prop(
    "a whole number with any unit's name, with or without blanks, is that many units",
    [fc.integer({ min: 0, max: 100_000 }), unitName, fc.constantFrom("", " ", "  "), fc.constantFrom("", " ")],
    ([amount, unit, gap, around]) => {
      expect(millisOf(`${around}${amount}${gap}${unit.name}${around}`)).toBe(amount * unit.millis)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )

  it.prop(
    "terms are summed in any order",
    [fc.array(fc.tuple(fc.integer({ min: 0, max: 1000 }), unitName), { minLength: 1, maxLength: 5 })],
    ([terms]) => {
      const expected = terms.reduce((sum, [amount, unit]) => sum + amount * unit.millis, 0)
      expect(millisOf(terms.map(([amount, unit]) => `${amount}${unit.name}`).join(" "))).toBe(expected)
      expect(millisOf(terms.map(([amount, unit]) => `${amount}${unit.name}`).join(""))).toBe(expected)
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }
  )

  it.prop(
    "a word that is no unit's name is refused",
    [fc.integer({ min: 0, max: 1000 }), fc.stringMatching(/^[a-z]{1,8}$/)],
    ([amount, word]) => {
      fc.pre(!UNITS.some(([names]) => names.includes(word)))
      expect(millisOf(`${amount}${word}`)).toBeUndefined()
      expect(millisOf(`1h ${amount}${word}`)).toBeUndefined()
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )

  it("reads a bare number as seconds and fractions to the nearest millisecond", () => {
    expect(millisOf("45")).toBe(45_000)
    expect(millisOf("2.5")).toBe(2500)
    expect(millisOf("0")).toBe(0)
    expect(millisOf("1.5h")).toBe(5_400_000)
    expect(millisOf("0.25 s")).toBe(250)
    expect(millisOf("1.0004s")).toBe(1000)
    expect(millisOf("1.0006s")).toBe(1001)
    expect(millisOf("90s")).toBe(90_000)
    expect(millisOf("30m")).toBe(1_800_000)
    expect(millisOf("1h 30m")).toBe(5_400_000)
  })

  it("refuses what is not a non-negative duration", () => {
    for (const text of ["", " ", "s", "-1s", "-5", "1e3", "1e3s", "1x", "1h 30", "30 1h", ".5s", "5.s", "1,5s", "Infinity", "NaN", "5 M", "1h-30m", "constructor", "1constructor"]) {
      expect(parseDurationText(text), JSON.stringify(text)).toEqual(Option.none())
    }
    expect(parseDurationText(`${"9".repeat(400)}d`)).toEqual(Option.none())
  })
})
