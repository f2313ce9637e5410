import { describe, expect, it } from "@effect/vitest"
import { countDown, countOf, countUp } from "../../src/core/KeyCounts.js"

describe("KeyCounts", () => {
  it("counts up and down, and holds only keys counted now", () => {
    const counts = new Map<string, number>()
    countUp(counts, "a")
    countUp(counts, "a")
    countUp(counts, "b")
    expect([countOf(counts, "a"), countOf(counts, "b"), countOf(counts, "c")]).toEqual([2, 1, 0])
    countDown(counts, "a")
    countDown(counts, "b")
    expect([...counts]).toEqual([["a", 1]])
    countDown(counts, "a")
    // A key not counted stays absent: counting down never goes below zero nor adds it.
    countDown(counts, "a")
    countDown(counts, "never")
    expect(counts.size).toBe(0)
  })
})
