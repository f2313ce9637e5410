/**
 * How a running node reports what it does: log lines go to stderr, so stdout
 * carries only the ready line (and, with `--json`, only JSON). Human output is
 * `HH:MM:SS LEVEL message`; `--json` writes one JSON object per line. A node
 * running under the terminal chat logs to a file instead, since the screen
 * belongs to the chat.
 */
import { Cause, Effect, FiberRef, HashSet, Logger } from "effect"
import { closeSync, openSync, writeSync } from "node:fs"

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

/** Most bytes one run writes to a log file; later lines are dropped, so a long session cannot fill the disk. */
export const MAX_LOG_FILE_BYTES = 4 * 1024 * 1024

/** Opens (truncating) the log file at `path`; null when it cannot be opened, which means no log, not a failed chat. */
const openLogFile = (path: string): number | null => {
  try {
    return openSync(path, "w", 0o600)
  } catch {
    return null
  }
}

/** A logger appending human-readable lines to the file `fd`, at most `MAX_LOG_FILE_BYTES` of them. */
const fileLogger = (fd: number) => {
  let written = 0
  return Logger.make((options) => {
    if (written >= MAX_LOG_FILE_BYTES) return
    const line = `${options.date.toISOString()} ${humanLogger.log(options)}\n`
    written += Buffer.byteLength(line)
    try {
      writeSync(fd, line)
    } catch {
      // A full disk or a closed file ends the log, not the chat.
      written = MAX_LOG_FILE_BYTES
    }
  })
}

/** Runs `self` with the file at `path` (truncated first) as its only logger, and closes the file after. */
export const withFileLogger = (path: string) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => openLogFile(path)),
    (fd) => Effect.locally(self, FiberRef.currentLoggers, fd === null ? HashSet.empty() : HashSet.make(fileLogger(fd))),
    (fd) => Effect.sync(() => fd !== null && closeSync(fd))
  )
