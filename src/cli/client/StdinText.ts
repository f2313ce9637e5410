/**
 * The text of `peerchat send NAME -`: the message read from standard input,
 * so another program's output can be sent (`date | peerchat send bob -`).
 * Reading is bounded: past one message's limit (16 KiB of UTF-8, and room
 * for the line break most programs end with) it stops and refuses the input
 * rather than read a stream that may never end. One trailing line break is
 * dropped, as a shell's `$(…)` drops it; everything else is sent as read,
 * and `send` checks it like a typed text (an empty or blank one is refused).
 * `Commands.ts` imports this module when `send -` runs.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { MAX_MESSAGE_TEXT_BYTES } from "../../core/Message.js"

/** Bytes read beyond the limit of one message: a trailing `\r\n`, which is not part of the text. */
const TRAILING_BREAK_BYTES = 2

/** Standard input is more than one message, or not UTF-8 text: nothing was sent. */
export class StdinTextRejected extends Schema.TaggedError<StdinTextRejected>()("StdinTextRejected", {
  reason: Schema.Literal("TooLong", "NotUtf8"),
  /** The most bytes of UTF-8 one message holds. */
  limit: Schema.Number
}) {
  override get message(): string {
    return this.reason === "TooLong"
      ? `the text on standard input is longer than ${this.limit} bytes of UTF-8 (16 KiB), the most one message holds; ` +
        "nothing was sent: split it into several messages"
      : "the text on standard input is not valid UTF-8; nothing was sent"
  }
}

/** Standard input could not be read (closed, or a read error). */
export class StdinReadFailed extends Schema.TaggedError<StdinReadFailed>()("StdinReadFailed", {
  detail: Schema.String
}) {
  override get message(): string {
    return `could not read the message from standard input: ${this.detail}`
  }
}

/** `text` without one trailing line break (`\n` or `\r\n`). */
export const withoutTrailingBreak = (text: string): string =>
  text.endsWith("\r\n") ? text.slice(0, -2) : text.endsWith("\n") ? text.slice(0, -1) : text

/**
 * Reads `input` to its end, at most `maxBytes` (plus a trailing line break),
 * and decodes it as UTF-8 without its trailing line break. Stops reading and
 * fails as soon as the input is longer.
 */
export const readMessageText = (
  input: NodeJS.ReadableStream,
  maxBytes: number = MAX_MESSAGE_TEXT_BYTES
): Effect.Effect<string, StdinTextRejected | StdinReadFailed> =>
  Effect.async<Buffer, StdinTextRejected | StdinReadFailed>((resume) => {
    const chunks: Array<Buffer> = []
    let bytes = 0
    const stop = () => {
      input.off("data", onData)
      input.off("end", onEnd)
      input.off("error", onError)
      input.pause()
    }
    const onData = (chunk: Buffer | string) => {
      const buffer = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk
      bytes += buffer.length
      if (bytes > maxBytes + TRAILING_BREAK_BYTES) {
        stop()
        resume(Effect.fail(new StdinTextRejected({ reason: "TooLong", limit: maxBytes })))
      } else {
        chunks.push(buffer)
      }
    }
    const onEnd = () => {
      stop()
      resume(Effect.succeed(Buffer.concat(chunks)))
    }
    const onError = (error: Error) => {
      stop()
      resume(Effect.fail(new StdinReadFailed({ detail: error.message })))
    }
    input.on("data", onData)
    input.once("end", onEnd)
    input.once("error", onError)
    input.resume()
    return Effect.sync(stop)
  }).pipe(
    Effect.flatMap((buffer) =>
      Effect.try({
        try: () => withoutTrailingBreak(new TextDecoder("utf-8", { fatal: true }).decode(buffer)),
        catch: () => new StdinTextRejected({ reason: "NotUtf8", limit: maxBytes })
      })
    )
  )
