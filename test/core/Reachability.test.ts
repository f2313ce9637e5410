/**
 * The reachability verdict from dial-back answers: a quorum decides, so one
 * lying peer cannot flip it either way.
 */
import { describe, expect, it } from "@effect/vitest"
import { judgeReachability } from "../../src/core/Reachability.js"

describe("judgeReachability", () => {
  it("two peers that reached this node make it Public; two that could not, and none that could, Private", () => {
    expect(judgeReachability([true, true, false])).toBe("Public")
    expect(judgeReachability([false, false, false])).toBe("Private")
    expect(judgeReachability([false, false])).toBe("Private")
  })

  it("one lying peer among three cannot flip the verdict", () => {
    // An honest majority says unreachable; one liar says reachable: not Public, and not confidently Private.
    expect(judgeReachability([true, false, false])).toBe("Unknown")
    // An honest majority says reachable; one liar says not: still Public.
    expect(judgeReachability([true, true, false])).toBe("Public")
  })

  it("no answer is Unknown; a lone peer is believed (it is the node's only witness)", () => {
    expect(judgeReachability([])).toBe("Unknown")
    expect(judgeReachability([true])).toBe("Public")
    expect(judgeReachability([false])).toBe("Private")
  })
})
