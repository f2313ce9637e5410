import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { hasSeen, makeSeenSet, markSeen, type SeenSet, seenSetSize } from "../../src/core/SeenSet.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const DAY = 24 * 60 * 60 * 1000
const T0 = 1_700_000_000_000

const markAll = (set: SeenSet, ids: ReadonlyArray<string>, now: number): SeenSet =>
  ids.reduce((acc, id) => markSeen(acc, id, now).set, set)

describe("SeenSet", () => {
  it("reports the second sighting of an id as a duplicate", () => {
    const empty = makeSeenSet(T0)
    const first = markSeen(empty, "m1", T0)
    expect(first.duplicate).toBe(false)
    const second = markSeen(first.set, "m1", T0 + 1000)
    expect(second.duplicate).toBe(true)
    expect(seenSetSize(second.set)).toBe(1)
    expect(hasSeen(first.set, "m1", T0)).toBe(true)
    expect(hasSeen(first.set, "m2", T0)).toBe(false)
    // The input is never modified.
    expect(seenSetSize(empty)).toBe(0)
    expect(hasSeen(empty, "m1", T0)).toBe(false)
  })

  it("uses 100,000 ids and 14 days by default", () => {
    const set = makeSeenSet(T0)
    expect(set.config).toEqual({ capacity: 100_000, windowMs: 14 * DAY })
  })

  it("rotates by time: remembered for windowMs/2, forgotten by windowMs", () => {
    const windowMs = 14 * DAY
    const set = markSeen(makeSeenSet(T0), "m1", T0).set
    expect(hasSeen(set, "m1", T0 + windowMs / 2 - 1)).toBe(true)
    // After one rotation the id lives in the previous generation.
    const rotated = markSeen(set, "other", T0 + windowMs / 2).set
    expect(hasSeen(rotated, "m1", T0 + windowMs / 2)).toBe(true)
    expect(hasSeen(rotated, "m1", T0 + windowMs - 1)).toBe(true)
    expect(hasSeen(rotated, "m1", T0 + windowMs)).toBe(false)
    expect(markSeen(rotated, "m1", T0 + windowMs).duplicate).toBe(false)
    // Idle for a long time: both generations are dropped at once.
    expect(hasSeen(set, "m1", T0 + 10 * windowMs)).toBe(false)
    const idle = markSeen(set, "m2", T0 + 10 * windowMs).set
    expect(seenSetSize(idle)).toBe(1)
  })

  it("forgets an id by windowMs even when a rotation came late", () => {
    const windowMs = 1000
    const set = markSeen(makeSeenSet(T0, { windowMs }), "m1", T0).set
    // The first operation after a long idle spell rotates late; m1 moves to the previous generation.
    const late = markSeen(set, "other", T0 + windowMs - 1).set
    expect(hasSeen(late, "m1", T0 + windowMs - 1)).toBe(true)
    expect(hasSeen(late, "m1", T0 + windowMs)).toBe(false)
    expect(hasSeen(late, "other", T0 + windowMs)).toBe(true)
  })

  it("rotates by size and never holds more than capacity ids", () => {
    let set = makeSeenSet(T0, { capacity: 100 })
    for (let i = 0; i < 1000; i++) {
      const result = markSeen(set, `m${i}`, T0 + i)
      expect(result.duplicate).toBe(false)
      set = result.set
      expect(seenSetSize(set)).toBeLessThanOrEqual(100)
      // The last 50 insertions are always remembered.
      expect(hasSeen(set, `m${Math.max(0, i - 50)}`, T0 + i)).toBe(true)
    }
    expect(seenSetSize(set)).toBeGreaterThan(50)
    expect(hasSeen(set, "m0", T0 + 1000)).toBe(false)
  })

  it("an odd capacity keeps the bound", () => {
    let set = makeSeenSet(T0, { capacity: 5 })
    for (let i = 0; i < 50; i++) {
      set = markSeen(set, `m${i}`, T0).set
      expect(seenSetSize(set)).toBeLessThanOrEqual(4)
    }
  })

  it("rejects nonsensical limits", () => {
    expect(() => makeSeenSet(T0, { capacity: 1 })).toThrow(RangeError)
    expect(() => makeSeenSet(T0, { windowMs: 0 })).toThrow(RangeError)
  })

  it.prop(
    "within the guarantee window, duplicate is reported exactly when the id appeared before",
    [fc.array(fc.integer({ min: 0, max: 60 }), { maxLength: 300 }), fc.array(fc.nat(1000), { maxLength: 300 })],
    ([idNumbers, steps]) => {
      // 61 possible ids and capacity 122 keep every id within capacity/2 insertions;
      // total elapsed time stays below windowMs/2.
      const windowMs = 2 * 300 * 1001
      let set = makeSeenSet(T0, { capacity: 122, windowMs })
      const model = new Set<string>()
      let now = T0
      idNumbers.forEach((n, index) => {
        now += steps[index] ?? 0
        const id = `msg-${n}`
        expect(hasSeen(set, id, now)).toBe(model.has(id))
        const result = markSeen(set, id, now)
        expect(result.duplicate).toBe(model.has(id))
        model.add(id)
        set = result.set
        expect(seenSetSize(set)).toBe(model.size)
      })
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it.prop(
    "honours the documented guarantees under rotation by size and time",
    [
      fc.array(
        fc.tuple(
          fc.integer({ min: 0, max: 30 }),
          // Mostly short steps (rotation by size), sometimes long idle gaps (rotation by time).
          fc.oneof({ weight: 6, arbitrary: fc.nat(30) }, { weight: 1, arbitrary: fc.nat(450) })
        ),
        { maxLength: 400 }
      ),
      fc.integer({ min: 2, max: 70 })
    ],
    ([events, capacity]) => {
      const windowMs = 200
      const half = Math.floor(capacity / 2)
      let set = makeSeenSet(T0, { capacity, windowMs })
      // For each id: when and at which insertion count it was last newly inserted.
      const inserted = new Map<string, { readonly at: number; readonly insertion: number }>()
      let insertions = 0
      let now = T0
      for (const [n, step] of events) {
        now += step
        const id = `m${n}`
        const record = inserted.get(id)
        const result = markSeen(set, id, now)
        expect(hasSeen(set, id, now)).toBe(result.duplicate)
        if (record === undefined || now - record.at >= windowMs) {
          expect(result.duplicate).toBe(false)
        } else if (now - record.at < windowMs / 2 && insertions - record.insertion <= half) {
          expect(result.duplicate).toBe(true)
        }
        if (!result.duplicate) {
          insertions += 1
          inserted.set(id, { at: now, insertion: insertions })
        }
        set = result.set
        expect(seenSetSize(set)).toBeLessThanOrEqual(2 * half)
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it("does not refresh an id on a duplicate sighting", () => {
    let set = makeSeenSet(T0, { capacity: 4, windowMs: DAY })
    set = markAll(set, ["a", "b"], T0)
    // "a" is seen again, but stays in the generation it was first inserted into.
    expect(markSeen(set, "a", T0).duplicate).toBe(true)
    set = markAll(set, ["c", "d", "e"], T0)
    expect(hasSeen(set, "a", T0)).toBe(false)
    expect(hasSeen(set, "c", T0)).toBe(true)
  })
})
