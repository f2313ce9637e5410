/**
 * The text of the client commands that needs no node: who wrote a history
 * line, the progress line of `send --wait` on a terminal, and reading a
 * message from standard input (a real stream, fed as a pipe feeds it).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { PassThrough } from "node:stream"
import type { HistoryEntry, MessageId } from "../../src/chat/ChatStore.js"
import type { Username } from "../../src/core/Username.js"
import { describeHistoryEntry, historyJson, historyParties } from "../../src/cli/Commands.js"
import { printableLines } from "../../src/cli/chat/PlainText.js"
import { failureLine, reportOfError } from "../../src/cli/Failure.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { readMessageText, withoutTrailingBreak } from "../../src/cli/client/StdinText.js"
import {
  formatSeconds,
  PROGRESS_CLEAR,
  progressFrame,
  progressStyleFor,
  waitProgressText
} from "../../src/cli/client/WaitProgress.js"

const entry = (direction: "in" | "out", overrides: Partial<HistoryEntry> = {}): HistoryEntry => ({
  id: "a".repeat(64) as MessageId,
  conversation: "bob" as Username,
  direction,
  from: (direction === "out" ? "alice" : "bob") as Username,
  to: (direction === "out" ? "bob" : "alice") as Username,
  sequence: 1,
  sentAt: 1_700_000_000_000,
  text: "see you at 8",
  status: direction === "out" ? "delivered" : "received",
  read: true,
  ...overrides
})

describe("history lines", () => {
  it("name the author and the recipient from the user's side, never the user's own name", () => {
    expect(historyParties(entry("out"))).toBe("you → bob")
    expect(historyParties(entry("in"))).toBe("bob → you")
    const sent = describeHistoryEntry(entry("out"))
    expect(sent).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d you → bob \[delivered\] see you at 8$/)
    expect(sent).not.toContain("alice")
    expect(describeHistoryEntry(entry("in", { text: "line\nbreak" }))).toMatch(/ bob → you \[received\] line\\nbreak$/)
  })

  it("in JSON, say the direction and both parties explicitly", () => {
    expect(historyJson(entry("out"))).toEqual({
      id: "a".repeat(64),
      direction: "sent",
      from: "alice",
      to: "bob",
      text: "see you at 8",
      sentAt: 1_700_000_000_000,
      status: "delivered"
    })
    expect(historyJson(entry("in"))).toMatchObject({ direction: "received", from: "bob", to: "alice" })
  })
})

describe("the progress line of send --wait", () => {
  it("says whom it waits for, the state and the time", () => {
    expect(waitProgressText({ to: "bob", status: "queued", elapsedMs: 3_999, timeoutMs: 30_000 })).toBe(
      "waiting for bob to confirm delivery: queued, trying to reach them (3s of 30s)"
    )
    expect(waitProgressText({ to: "bob", status: "stored-offline", elapsedMs: 125_000, timeoutMs: 600_000 })).toBe(
      "waiting for bob to confirm delivery: bob is offline, relays hold the message (2m05s of 10m00s)"
    )
    expect(formatSeconds(-5)).toBe("0s")
    expect(formatSeconds(59_999)).toBe("59s")
    expect(formatSeconds(60_000)).toBe("1m00s")
  })

  it("redraws one line in place, dimmed only with colour, cut to the terminal's width", () => {
    expect(progressFrame("waiting", { color: false, columns: 80 })).toBe("\rwaiting\u001b[K")
    expect(progressFrame("waiting", { color: true, columns: 80 })).toBe("\r\u001b[2mwaiting\u001b[22m\u001b[K")
    // 20 columns: at most 19 characters, so the cursor never wraps to a new line.
    expect(progressFrame("x".repeat(30), { color: false, columns: 20 })).toBe(`\r${"x".repeat(18)}…\u001b[K`)
    expect(progressFrame("x".repeat(19), { color: false, columns: 20 })).toBe(`\r${"x".repeat(19)}\u001b[K`)
    expect(PROGRESS_CLEAR).toBe("\r\u001b[K")
  })

  it("is drawn only on a terminal that can redraw a line, without colour under NO_COLOR", () => {
    const terminal = { isTTY: true, columns: 120 }
    expect(progressStyleFor(terminal, {})).toEqual({ color: true, columns: 120 })
    expect(progressStyleFor(terminal, { NO_COLOR: "1" })).toEqual({ color: false, columns: 120 })
    expect(progressStyleFor(terminal, { TERM: "dumb" })).toBeUndefined()
    expect(progressStyleFor({ isTTY: false }, {})).toBeUndefined()
    expect(progressStyleFor({}, {})).toBeUndefined()
  })
})

/** Reads `chunks` as a pipe delivers them, ending the stream after the last. */
const readFrom = (chunks: ReadonlyArray<string | Buffer>, maxBytes?: number) => {
  const input = new PassThrough()
  const read = readMessageText(input, maxBytes)
  for (const chunk of chunks) input.write(chunk)
  input.end()
  return Effect.either(read)
}

describe("a message read from standard input", () => {
  it.effect("is the input without one trailing line break, however it arrives", () =>
    Effect.gen(function*() {
      expect(yield* readFrom(["hello\n"])).toEqual(Either.right("hello"))
      expect(yield* readFrom(["two\n", "lines\r\n"])).toEqual(Either.right("two\nlines"))
      expect(yield* readFrom(["kept\n\n"])).toEqual(Either.right("kept\n"))
      // A character split across chunks is decoded whole.
      const euro = Buffer.from("€", "utf8")
      expect(yield* readFrom([euro.subarray(0, 1), euro.subarray(1)])).toEqual(Either.right("€"))
      // Empty input is read as empty text: `send` refuses it as it refuses an empty argument.
      expect(yield* readFrom([])).toEqual(Either.right(""))
      expect(withoutTrailingBreak("a\r")).toBe("a\r")
    }))

  it.effect("is refused past the limit (with room for a line break), and when it is not UTF-8", () =>
    Effect.gen(function*() {
      expect(yield* readFrom(["12345678\r\n"], 8)).toEqual(Either.right("12345678"))
      const tooLong = yield* readFrom(["1234", "5678", "9\r\n"], 8)
      expect(Either.getLeft(tooLong).pipe((left) => left._tag === "Some" ? left.value : undefined)).toMatchObject({
        _tag: "StdinTextRejected",
        reason: "TooLong",
        limit: 8
      })
      const notText = yield* readFrom([Buffer.from([0x68, 0xff])])
      expect(Either.isLeft(notText) && notText.left._tag === "StdinTextRejected" && notText.left.reason).toBe("NotUtf8")
    }))

  it.effect("stops reading an endless input once it is too long", () =>
    Effect.gen(function*() {
      const input = new PassThrough()
      const read = Effect.either(readMessageText(input, 1024))
      // Never ended: the read fails as soon as the limit is passed.
      input.write("z".repeat(2048))
      const outcome = yield* read
      expect(Either.isLeft(outcome) && outcome.left.message).toMatch(/longer than 1024 bytes/)
    }))
})

describe("text from other nodes on the terminal", () => {
  it("ATTACK: a refusal's detail carrying escape sequences reaches the terminal as visible text", () => {
    // A hostile peer's RequestRefused detail, quoted by `status` (a join's last error) or by a failure.
    const detail = "\u001b]0;owned\u0007\u001b[2J"
    const line = failureLine(reportOfError(new RequestRefused({ reason: "NotAccepted", detail })), false)
    expect(line).not.toContain("\u001b")
    expect(line).toContain("\\u001b]0;owned\\u0007")
    expect(printableLines(`joining (attempt 1 failed: ${detail})\nnext line`)).toBe(
      "joining (attempt 1 failed: \\u001b]0;owned\\u0007\\u001b[2J)\nnext line"
    )
  })
})
