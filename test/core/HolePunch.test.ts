import { describe, expect, it } from "@effect/vitest"
import fc from "fast-check"
import {
  defaultHolePunchLimits,
  HolePunchBook,
  hostScope,
  PUNCH_PORT_MAX,
  PUNCH_PORT_MIN,
  punchHostAllowed,
  punchPort
} from "../../src/core/HolePunch.js"
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
    expect(book.initiate(id(1), `198.51.1.1`, T0)).toEqual({ _tag: "Go" })
    expect(book.initiate(id(1), `198.51.1.1`, T0)).toEqual({ _tag: "Refused", reason: "InProgress" })
    book.initiated(id(1), false, T0)
    expect(book.initiate(id(1), `198.51.1.1`, T0 + defaultHolePunchLimits.retryAfterFailureMs - 1)).toEqual({
      _tag: "Refused",
      reason: "FailedLately"
    })
    expect(book.initiate(id(1), `198.51.1.1`, T0 + defaultHolePunchLimits.retryAfterFailureMs)).toEqual({ _tag: "Go" })
    book.initiated(id(1), true, T0 + defaultHolePunchLimits.retryAfterFailureMs)
    expect(book.counts()).toMatchObject({ initiating: 0, succeeded: 1, failed: 1 })
  })

  it("starts at most maxInitiating at once", () => {
    const book = new HolePunchBook({ maxInitiating: 2 })
    expect(book.initiate(id(1), `198.51.1.1`, T0)._tag).toBe("Go")
    expect(book.initiate(id(2), `198.51.2.1`, T0)._tag).toBe("Go")
    expect(book.initiate(id(3), `198.51.3.1`, T0)).toEqual({ _tag: "Refused", reason: "Busy" })
    book.initiated(id(1), true, T0)
    expect(book.initiate(id(3), `198.51.3.1`, T0)._tag).toBe("Go")
  })
})

describe("HolePunchBook as the one asked (what a stranger can make this node dial)", () => {
  it("ATTACK: a caller asking again and again is answered once per interval, one at a time", () => {
    const book = new HolePunchBook()
    expect(book.answer(id(9), `203.0.9.1`, T0)._tag).toBe("Go")
    expect(book.answer(id(9), `203.0.9.1`, T0 + 1)).toEqual({ _tag: "Refused", reason: "InProgress" })
    book.answered(id(9))
    expect(book.answer(id(9), `203.0.9.1`, T0 + defaultHolePunchLimits.answerIntervalMs - 1)).toEqual({ _tag: "Refused", reason: "TooSoon" })
    expect(book.answer(id(9), `203.0.9.1`, T0 + defaultHolePunchLimits.answerIntervalMs)._tag).toBe("Go")
    expect(book.counts()).toMatchObject({ answered: 2, refused: 2, answering: 1 })
  })

  it("ATTACK: many callers at once get at most maxAnswering punches under way", () => {
    const book = new HolePunchBook()
    const decisions = Array.from({ length: 50 }, (_, i) => book.answer(id(100 + i), `203.0.${i}.1`, T0)._tag)
    expect(decisions.filter((tag) => tag === "Go")).toHaveLength(defaultHolePunchLimits.maxAnswering)
    expect(book.counts().answering).toBe(defaultHolePunchLimits.maxAnswering)
  })

  it("remembers a bounded number of callers (the oldest are forgotten first)", () => {
    const book = new HolePunchBook({ maxRemembered: 3, maxAnswering: 100 })
    for (let i = 0; i < 10; i++) {
      expect(book.answer(id(i), `203.0.${i}.1`, T0)._tag).toBe("Go")
      book.answered(id(i))
    }
    // Forgotten: answered again at once; remembered: too soon.
    expect(book.answer(id(0), `203.0.0.1`, T0)._tag).toBe("Go")
    expect(book.answer(id(9), `203.0.9.1`, T0)).toEqual({ _tag: "Refused", reason: "TooSoon" })
  })
})

describe("HolePunchBook: limits per network and per minute", () => {
  it("ATTACK: one punch at a time into one network, however many peers point there", () => {
    const book = new HolePunchBook()
    expect(book.initiate(id(1), "198.51.100.7", T0)._tag).toBe("Go")
    expect(book.initiate(id(2), "198.51.100.8", T0)).toEqual({ _tag: "Refused", reason: "Busy" })
    expect(book.initiate(id(3), "203.0.113.8", T0)._tag).toBe("Go")
    expect(book.answer(id(4), "192.0.2.1", T0)._tag).toBe("Go")
    expect(book.answer(id(5), "192.0.2.2", T0)).toEqual({ _tag: "Refused", reason: "Busy" })
  })

  it("ATTACK: cheap caller ids get at most maxAnswersPerMinute answers in any minute", () => {
    const book = new HolePunchBook({ maxAnswering: 1_000 })
    const answered = Array.from({ length: 100 }, (_, i) => {
      const decision = book.answer(id(1_000 + i), `198.${i % 200}.${i}.1`, T0 + i * 100)
      if (decision._tag === "Go") book.answered(id(1_000 + i))
      return decision._tag
    }).filter((tag) => tag === "Go")
    expect(answered).toHaveLength(defaultHolePunchLimits.maxAnswersPerMinute)
    // A minute after the first answers, there is room again.
    expect(book.answer(id(5_000), "203.0.113.50", T0 + 60_000)._tag).toBe("Go")
  })
})

describe("punch hosts: only an address in the relay's own scope", () => {
  it("classifies loopback, private, link-local, global and unusable addresses", () => {
    expect(["127.0.0.1", "::1"].map(hostScope)).toEqual(["loopback", "loopback"])
    expect(["10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.1.2", "fd00::1"].map(hostScope)).toEqual(
      Array(6).fill("private")
    )
    expect(["169.254.169.254", "fe80::1"].map(hostScope)).toEqual(["link-local", "link-local"])
    expect(["203.0.113.7", "8.8.8.8", "172.32.0.1", "2001:db8::7", "::ffff:198.51.100.1"].map(hostScope)).toEqual(
      Array(5).fill("global")
    )
    expect(["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1", "bad.de", "fab.be", "1.2", ""].map(hostScope)).toEqual(
      Array(9).fill("unusable")
    )
  })

  it("ATTACK: a relay on the internet cannot aim a punch at the dialler's loopback, LAN or a cloud metadata address", () => {
    for (const target of ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "224.0.0.1", "bad.de"]) {
      expect(punchHostAllowed(target, "198.51.100.7"), target).toBe(false)
    }
    expect(punchHostAllowed("203.0.113.9", "198.51.100.7")).toBe(true)
    // On one machine (the tests) and on a LAN, the relay's own scope.
    expect(punchHostAllowed("127.0.0.5", "127.0.0.2")).toBe(true)
    expect(punchHostAllowed("192.168.1.5", "192.168.1.1")).toBe(true)
    expect(punchHostAllowed("203.0.113.9", "127.0.0.2")).toBe(false)
  })
})
