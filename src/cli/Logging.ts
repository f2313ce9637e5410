/**
 * How a running node reports what it does. `peerchat start` in a terminal
 * logs to stderr, so stdout carries only the ready line (and, with `--json`,
 * only JSON): human output is `HH:MM:SS LEVEL message`, `--json` one JSON
 * object per line. A node started by the terminal chat has no terminal of
 * its own: it logs to `<dataDir>/logs/node.log`, appended to across runs and
 * rotated by size by `rotating-file-stream` (the current file and
 * `LOG_FILES_KEPT` older ones, `node.log.1` the newest of those), each line
 * with one timestamp, the full date and time in UTC.
 */
import { Cause, Effect, FiberRef, HashSet, Logger, LogLevel } from "effect"
import { mkdirSync } from "node:fs"
import type { Writable } from "node:stream"
import { join } from "node:path"
import { createStream, type RotatingFileStream } from "rotating-file-stream"
import { printableText } from "./chat/PlainText.js"

const describeMessage = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts.map((part) => (typeof part === "string" ? part : JSON.stringify(part))).join(" ")
}

/** `LEVEL message (first line of the failure)`: what every human-readable line says after its time. */
const lineBody = ({ cause, logLevel, message }: Logger.Logger.Options<unknown>): string => {
  const failure = Cause.isEmpty(cause) ? "" : ` (${Cause.pretty(cause).split("\n")[0] ?? ""})`
  return `${logLevel.label.padEnd(5)} ${describeMessage(message)}${failure}`
}

/**
 * A terminal line: the time of day is enough beside a running terminal. Made
 * printable, since log lines quote what peers and routers sent.
 */
const humanLogger = Logger.make((options) => printableText(`${options.date.toISOString().slice(11, 19)} ${lineBody(options)}`))

/** A log file line: one timestamp, with the date, since a file is read days later (`2026-12-05T15:38:52.123Z INFO  …`). */
export const fileLine = (options: Logger.Logger.Options<unknown>): string => `${options.date.toISOString()} ${lineBody(options)}\n`

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

/** The directory of a data directory's logs. */
export const LOG_DIR = "logs"

/** The current log file of a node started by the chat, in `LOG_DIR`. */
export const NODE_LOG_FILE = "node.log"

/** Size at which the current log file is rotated. */
export const LOG_FILE_SIZE = "1M"

/** Rotated log files kept beside the current one (`node.log.1` … `node.log.5`); older ones are deleted. */
export const LOG_FILES_KEPT = 5

/** When the log rotates and how many rotated files are kept (defaults: `LOG_FILE_SIZE`, `LOG_FILES_KEPT`); tests make them small. */
export interface LogRotation {
  /** A size as `rotating-file-stream` reads it: `300B`, `10K`, `1M`. */
  readonly size?: `${number}${"B" | "K" | "M"}` | undefined
  readonly kept?: number | undefined
}

/**
 * Opens the rotating log of `dataDir` (creating `logs/`, owner-only); null
 * when it cannot be opened, which means no log, not a node that fails.
 */
const openRotatingLog = (dataDir: string, rotation: LogRotation): RotatingFileStream | null => {
  try {
    const path = join(dataDir, LOG_DIR)
    mkdirSync(path, { recursive: true, mode: 0o700 })
    // With `rotate`, the rotated files are named as logrotate does: `node.log.1` (the newest) to `node.log.N`.
    const stream = createStream(NODE_LOG_FILE, {
      path,
      size: rotation.size ?? LOG_FILE_SIZE,
      rotate: rotation.kept ?? LOG_FILES_KEPT,
      mode: 0o600
    })
    // A full disk or a removed directory ends the log, not the node: after an error the stream is closed.
    stream.on("error", () => undefined)
    stream.on("warning", () => undefined)
    return stream
  } catch {
    return null
  }
}

/**
 * Most bytes of log lines waiting for the disk. A log write never blocks the
 * node, so a disk that stalls (a full or slow one, a hung network mount)
 * would otherwise keep every line in memory; past this, lines are dropped
 * and counted, and the count is logged once the disk has caught up.
 */
export const LOG_BUFFER_LIMIT = 1 << 20

/**
 * Writes log lines to `stream` with at most `limit` bytes waiting (see
 * `LOG_BUFFER_LIMIT`): a line that would pass it is dropped, and the next
 * line that fits is preceded by a warning saying how many were.
 */
export const boundedLogWriter = (stream: Writable, limit: number = LOG_BUFFER_LIMIT) => {
  let dropped = 0
  return (options: Logger.Logger.Options<unknown>): void => {
    if (!stream.writable) return
    const line = fileLine(options)
    if (stream.writableLength + line.length > limit) {
      dropped++
      return
    }
    if (dropped > 0) {
      stream.write(fileLine({
        ...options,
        logLevel: LogLevel.Warning,
        message: `${dropped} log line${dropped === 1 ? "" : "s"} dropped: the disk did not keep up`,
        cause: Cause.empty
      }))
      dropped = 0
    }
    stream.write(line)
  }
}

/** Ends `stream` once every line written so far is in the file. */
const closeLog = (stream: RotatingFileStream): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    if (stream.destroyed || stream.writableFinished) return resume(Effect.void)
    stream.once("finish", () => resume(Effect.void))
    stream.once("error", () => resume(Effect.void))
    stream.end()
  })

/**
 * Runs `self` with the rotating log of `dataDir` (`logs/node.log`, see the
 * module comment) as its only logger, and closes the file after, once every
 * line is written.
 */
export const withRotatingFileLogger = (dataDir: string, rotation: LogRotation = {}) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.sync(() => openRotatingLog(dataDir, rotation)),
    (stream) =>
      Effect.locally(
        self,
        FiberRef.currentLoggers,
        stream === null ? HashSet.empty() : HashSet.make(Logger.make(boundedLogWriter(stream)))
      ),
    (stream) => (stream === null ? Effect.void : closeLog(stream))
  )

/** Runs `self` with no logger at all: the terminal chat owns the screen, and its node logs in a process of its own. */
export const withoutLogging = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(self, FiberRef.currentLoggers, HashSet.empty())
