import { describe, expect, it } from "@effect/vitest"
import { DEFAULT_FRAME_DEADLINE, largestHolder, unfinishedFrameDeadlineMs } from "../../src/core/UnreadInput.js"

describe("UnreadInput", () => {
  it("gives an unfinished frame its base time plus its size at the slowest rate", () => {
    expect(unfinishedFrameDeadlineMs(undefined, DEFAULT_FRAME_DEADLINE)).toBe(10_000)
    expect(unfinishedFrameDeadlineMs(0, DEFAULT_FRAME_DEADLINE)).toBe(10_000)
    expect(unfinishedFrameDeadlineMs(1024 * 1024, DEFAULT_FRAME_DEADLINE)).toBe(74_000)
    // Rounded up: a frame never gets less than its bytes need at the rate.
    expect(unfinishedFrameDeadlineMs(1, { baseMs: 0, minBytesPerSecond: 3 })).toBe(334)
  })

  it("closes the connection holding the most, the first of equals, and none of none", () => {
    const held = new Map([["a", 10], ["b", 30], ["c", 30], ["d", 0]])
    expect(largestHolder(held.keys(), (name) => held.get(name) ?? 0)).toBe("b")
    expect(largestHolder([], () => 1)).toBeUndefined()
    expect(largestHolder(["only"], () => 0)).toBe("only")
  })
})
