import { describe, expect, it } from "@effect/vitest"
import { Duration, Either } from "effect"
import { parseJoinTimeout, parseWaitTimeout } from "../../src/cli/Commands.js"

const millisOf = (input: string) => Either.map(parseWaitTimeout(input), Duration.toMillis)

describe("send --timeout", () => {
  it("reads seconds and durations with the shared duration reader", () => {
    expect(millisOf("45")).toEqual(Either.right(45_000))
    expect(millisOf("2.5")).toEqual(Either.right(2500))
    expect(millisOf("500ms")).toEqual(Either.right(500))
    expect(millisOf(" 2 min ")).toEqual(Either.right(120_000))
    expect(millisOf("1m 30s")).toEqual(Either.right(90_000))
    expect(millisOf("10m")).toEqual(Either.right(600_000))
  })

  it("refuses what is not a duration and what exceeds the node's bound, naming the option", () => {
    expect(parseWaitTimeout("soon")).toEqual(Either.left(`--timeout: expected seconds or a duration like 500ms, 45s or 2m, got "soon"`))
    expect(parseWaitTimeout("-5")).toEqual(Either.left(`--timeout: expected seconds or a duration like 500ms, 45s or 2m, got "-5"`))
    expect(parseWaitTimeout("11m")).toEqual(Either.left("--timeout must be at most 10m, got 11m"))
    expect(parseWaitTimeout("1h")).toEqual(Either.left("--timeout must be at most 10m, got 1h"))
  })
})

describe("chat --join-timeout", () => {
  it("reads a duration from 1 s to 10 minutes, naming the option when it refuses one", () => {
    expect(Either.map(parseJoinTimeout("3s"), Duration.toMillis)).toEqual(Either.right(3000))
    expect(Either.map(parseJoinTimeout("90"), Duration.toMillis)).toEqual(Either.right(90_000))
    expect(parseJoinTimeout("500ms")).toEqual(Either.left("--join-timeout must be at least 1s, got 500ms"))
    expect(parseJoinTimeout("0")).toEqual(Either.left("--join-timeout must be at least 1s, got 0"))
    expect(parseJoinTimeout("11m")).toEqual(Either.left("--join-timeout must be at most 10m, got 11m"))
    expect(parseJoinTimeout("later")).toEqual(
      Either.left(`--join-timeout: expected seconds or a duration like 500ms, 45s or 2m, got "later"`)
    )
  })
})
