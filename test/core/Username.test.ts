import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { createHash } from "node:crypto"
import { parseUsername, type Username, userKey } from "../../src/core/Username.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const reasonOf = (input: string): string =>
  Either.match(parseUsername(input), { onLeft: (error) => error.reason, onRight: () => "valid" })

describe("usernames", () => {
  it("normalizes with NFKC and lower case", () => {
    expect(parseUsername("Alice")).toEqual(Either.right("alice"))
    // Full-width letters fold to ASCII under NFKC.
    expect(parseUsername("ＡＬＩＣＥ")).toEqual(Either.right("alice"))
    expect(parseUsername("bob_the.builder-2")).toEqual(Either.right("bob_the.builder-2"))
  })

  it("refuses names that are too short, too long or use other characters, with the reason", () => {
    expect(reasonOf("ab")).toBe("TooShort")
    expect(reasonOf("")).toBe("TooShort")
    expect(reasonOf("a".repeat(33))).toBe("TooLong")
    expect(reasonOf("a".repeat(32))).toBe("valid")
    expect(reasonOf("abc")).toBe("valid")
    expect(reasonOf("al ice")).toBe("InvalidCharacter")
    expect(reasonOf("alice@home")).toBe("InvalidCharacter")
    expect(reasonOf("éclair")).toBe("InvalidCharacter")
    expect(reasonOf("日本語の名前")).toBe("InvalidCharacter")
  })

  it("explains a refusal in its message", () => {
    const error = Either.getLeft(parseUsername("x")).pipe((option) => option._tag === "Some" ? option.value : undefined)
    expect(error?.message).toContain("shorter than 3")
  })

  it.prop(
    "every accepted name is already normalized (parsing is idempotent)",
    [fc.string({ maxLength: 40 })],
    ([input]) => {
      const parsed = parseUsername(input)
      if (Either.isRight(parsed)) {
        expect(parseUsername(parsed.right)).toEqual(parsed)
        expect(parsed.right).toMatch(/^[a-z0-9_.-]{3,32}$/)
      }
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 500 } }
  )

  it("the user key is SHA-256 of the domain prefix and the normalized name", () => {
    const name = Either.getOrThrow(parseUsername("Alice"))
    const expected = createHash("sha256").update("peerchat/user/alice").digest("hex")
    expect(userKey(name)).toBe(expected)
    expect(userKey(Either.getOrThrow(parseUsername("ALICE")))).toBe(expected)
    expect(userKey("bob" as Username)).not.toBe(expected)
  })
})
