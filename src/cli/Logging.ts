/**
 * How a running node reports what it does: log lines go to stderr, so stdout
 * carries only the ready line (and, with `--json`, only JSON). Human output is
 * `HH:MM:SS LEVEL message`; `--json` writes one JSON object per line.
 */
import { Cause, Effect, FiberRef, HashSet, Logger } from "effect"

const describeMessage = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join(" ")
}

const humanLogger = Logger.make(({ cause, date, logLevel, message }) => {
  const time = date.toISOString().slice(11, 19)
  const failure = Cause.isEmpty(cause) ? "" : ` (${Cause.pretty(cause).split("\n")[0] ?? ""})`
  return `${time} ${logLevel.label.padEnd(5)} ${describeMessage(message)}${failure}`
})

/**
 * Runs `self` with the logger of `peerchat start` (human-readable or JSON
 * lines, on stderr) as its only logger, replacing whatever the runtime
 * installed (NodeRuntime's pretty logger writes to stdout).
 */
export const withNodeLogger = (json: boolean) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.locally(
    self,
    FiberRef.currentLoggers,
    HashSet.make(Logger.withConsoleError(json ? Logger.jsonLogger : humanLogger))
  )
