/**
 * What `peerchat send --wait` shows on a terminal while it waits for the
 * delivery receipt: one line on stderr, redrawn in place, with the time
 * waited and the message's delivery state, cleared when the wait ends
 * (receipt, time up, or Ctrl-C) so only the outcome stays. Shown only when
 * stderr is a terminal that can redraw a line (not `TERM=dumb`) and without
 * `--json`; dimmed unless `NO_COLOR` is set. Elsewhere the command waits in
 * one long poll and prints nothing extra. It builds no schemas, so
 * `Commands.ts` imports it with the parser.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type { DeliveryAnswer } from "../../chat/ChatControl.js"
import type { MessageId, OutgoingStatus } from "../../chat/ChatStore.js"
import type { ControlClient } from "../../platform/ControlClient.js"

/** How the progress line is drawn: only on a terminal; dimmed when colour is allowed. */
export interface ProgressStyle {
  readonly color: boolean
  /** Columns of the terminal: a longer line would wrap, and a wrapped line cannot be redrawn in place. */
  readonly columns: number
}

/** The style for `stream` in `env`, or `undefined` when no progress line should be drawn there. */
export const progressStyleFor = (
  stream: { readonly isTTY?: boolean; readonly columns?: number },
  env: NodeJS.ProcessEnv
): ProgressStyle | undefined =>
  stream.isTTY === true && env["TERM"] !== "dumb"
    ? { color: (env["NO_COLOR"] ?? "") === "", columns: Math.max(20, stream.columns ?? 80) }
    : undefined

/** A duration the way the line counts: `7s`, `2m05s`. */
export const formatSeconds = (ms: number): string => {
  const seconds = Math.max(0, Math.floor(ms / 1000))
  return seconds < 60 ? `${seconds}s` : `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, "0")}s`
}

/** The delivery state in words, as the wait sees it. */
const describeState = (to: string, status: OutgoingStatus): string => {
  switch (status) {
    case "queued":
      return "queued, trying to reach them"
    case "stored-offline":
      return `${to} is offline, relays hold the message`
    case "delivered":
      return "delivered"
  }
}

/** The text of the progress line: who, the state, and the time waited out of the time allowed. */
export const waitProgressText = (progress: {
  readonly to: string
  readonly status: OutgoingStatus
  readonly elapsedMs: number
  readonly timeoutMs: number
}): string =>
  `waiting for ${progress.to} to confirm delivery: ${describeState(progress.to, progress.status)} ` +
  `(${formatSeconds(progress.elapsedMs)} of ${formatSeconds(progress.timeoutMs)})`

const CLEAR_TO_END = "\u001b[K"
const DIM = "\u001b[2m"
const RESET = "\u001b[22m"

/**
 * What to write to redraw the line as `text`: back to the line's start, the
 * text cut to fit the terminal (one column spare, so the cursor never wraps),
 * dimmed with colour, and the rest of the old line erased.
 */
export const progressFrame = (text: string, style: ProgressStyle): string => {
  const room = style.columns - 1
  const chars = Array.from(text)
  const fitted = chars.length <= room ? text : `${chars.slice(0, room - 1).join("")}…`
  return `\r${style.color ? `${DIM}${fitted}${RESET}` : fitted}${CLEAR_TO_END}`
}

/** What to write to erase the line: back to its start, then erase it. */
export const PROGRESS_CLEAR = `\r${CLEAR_TO_END}`

/** Time between two redraws of the line (the elapsed time counts in seconds). */
const REDRAW_EVERY = Duration.millis(250)

/** Longest single poll while the line is shown: the state on the line is at most this old. */
const STATE_POLL = Duration.seconds(1)

/**
 * Waits like `client.awaitDelivery(id, timeout)`, drawing the progress line
 * on `stream` meanwhile: the wait is made of polls of at most a second, so
 * the state shown stays current, and the line is erased however the wait ends.
 */
export const awaitDeliveryWithProgress = (
  client: ControlClient,
  sent: { readonly id: MessageId; readonly to: string; readonly status: OutgoingStatus },
  timeout: Duration.Duration,
  stream: NodeJS.WriteStream,
  style: ProgressStyle
) =>
  Effect.gen(function*() {
    const timeoutMs = Duration.toMillis(timeout)
    const startedAt = yield* Clock.currentTimeMillis
    const status = yield* Ref.make<OutgoingStatus>(sent.status)
    const draw = Effect.gen(function*() {
      const elapsedMs = (yield* Clock.currentTimeMillis) - startedAt
      const text = waitProgressText({ to: sent.to, status: yield* Ref.get(status), elapsedMs, timeoutMs })
      stream.write(progressFrame(text, style))
    })
    yield* Effect.forkScoped(Effect.repeat(draw, Schedule.spaced(REDRAW_EVERY)))
    for (;;) {
      const remainingMs = Math.max(0, timeoutMs - ((yield* Clock.currentTimeMillis) - startedAt))
      const pollMs = Math.min(remainingMs, Duration.toMillis(STATE_POLL))
      const answer: DeliveryAnswer = yield* client.awaitDelivery(sent.id, Duration.millis(pollMs))
      yield* Ref.set(status, answer.status)
      if (answer.status === "delivered" || pollMs >= remainingMs) return answer
    }
  }).pipe(
    Effect.scoped,
    Effect.ensuring(Effect.sync(() => stream.write(PROGRESS_CLEAR)))
  )
