import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import { defaultHolePunchLimits, HolePunchBook, PUNCH_PORT_MAX, PUNCH_PORT_MIN, punchPort } from "../../src/core/HolePunch.js"
import type { NodeId } from "../../src/core/Id.js"

const id = (n: number) => n.toString(16).padStart(64, "0") as NodeId
const T0 = 1_700_000_000_000

describe("punchPort", () => {
  it("picks a port above the kernel's ephemeral range, over the whole range", () => {
    fc.assert(fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (random) => {
      const port = punchPort(random)
      return Number.isInteger(port) && port >= PUNCH_PORT_MIN && port <= PUNCH_PORT_MAX
    }))
    expect(punchPort(0)).toBe(PUNCH_PORT_MIN)
    expect(punchPort(0.999_999_999)).toBe(PUNCH_PORT_MAX)
  })
})

describe("HolePunchBook as the one who asks", () => {
  it("tries a peer once at a time, and after a failure not again until the back-off passed", () => {
    const book = new HolePunchBook()
    expect(book.initiate(id(1), T0)).toEqual({ _tag: "Go" })
    expect(book.initiate(id(1), T0)).toEqual({ _tag: "Refused", reason: "InProgress" })
    book.initiated(id(1), false, T0)
    expect(book.initiate(id(1), T0 + defaultHolePunchLimits.retryAfterFailureMs - 1)).toEqual({
      _tag: "Refused",
      reason: "FailedLately"
    })
    expect(book.initiate(id(1), T0 + defaultHolePunchLimits.retryAfterFailureMs)).toEqual({ _tag: "Go" })
    book.initiated(id(1), true, T0 + defaultHolePunchLimits.retryAfterFailureMs)
    expect(book.counts()).toMatchObject({ initiating: 0, succeeded: 1, failed: 1 })
  })

  it("starts at most maxInitiating at once", () => {
    const book = new HolePunchBook({ maxInitiating: 2 })
    expect(book.initiate(id(1), T0)._tag).toBe("Go")
    expect(book.initiate(id(2), T0)._tag).toBe("Go")
    expect(book.initiate(id(3), T0)).toEqual({ _tag: "Refused", reason: "Busy" })
    book.initiated(id(1), true, T0)
    expect(book.initiate(id(3), T0)._tag).toBe("Go")
  })
})

describe("HolePunchBook as the one asked (what a stranger can make this node dial)", () => {
  it("ATTACK: a caller asking again and again is answered once per interval, one at a time", () => {
    const book = new HolePunchBook()
    expect(book.answer(id(9), T0)._tag).toBe("Go")
    expect(book.answer(id(9), T0 + 1)).toEqual({ _tag: "Refused", reason: "InProgress" })
    book.answered(id(9))
    expect(book.answer(id(9), T0 + defaultHolePunchLimits.answerIntervalMs - 1)).toEqual({ _tag: "Refused", reason: "TooSoon" })
    expect(book.answer(id(9), T0 + defaultHolePunchLimits.answerIntervalMs)._tag).toBe("Go")
    expect(book.counts()).toMatchObject({ answered: 2, refused: 2, answering: 1 })
  })

  it("ATTACK: many callers at once get at most maxAnswering punches under way", () => {
    const book = new HolePunchBook()
    const decisions = Array.from({ length: 50 }, (_, i) => book.answer(id(100 + i), T0)._tag)
    expect(decisions.filter((tag) => tag === "Go")).toHaveLength(defaultHolePunchLimits.maxAnswering)
    expect(book.counts().answering).toBe(defaultHolePunchLimits.maxAnswering)
  })

  it("remembers a bounded number of callers (the oldest are forgotten first)", () => {
    const book = new HolePunchBook({ maxRemembered: 3, maxAnswering: 100 })
    for (let i = 0; i < 10; i++) {
      expect(book.answer(id(i), T0)._tag).toBe("Go")
      book.answered(id(i))
    }
    // Forgotten: answered again at once; remembered: too soon.
    expect(book.answer(id(0), T0)._tag).toBe("Go")
    expect(book.answer(id(9), T0)).toEqual({ _tag: "Refused", reason: "TooSoon" })
  })
})
