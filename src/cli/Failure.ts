/**
 * How a failed command ends: one line on stderr, `peerchat: <message>`, or
 * with `--json` the document `{"error":{"tag":…,"message":…}}`, and an exit
 * code that says what kind of failure it was, so a script can branch on it
 * without reading messages. The kinds, their codes and the tags in each are
 * the table of docs/user-guide.md ("Exit codes and errors"). Errors are told
 * apart by their `_tag`, so this module imports none of their classes (a
 * client command loads only what it uses).
 */
import { printableLines } from "./chat/PlainText.js"

/** The exit code of each kind of outcome. */
export const ExitCode = {
  /** The command did what it was asked. */
  Success: 0,
  /** Anything not listed below: storage, files, a request the node refused, a bug. */
  Failure: 1,
  /**
   * Time ran out: the node did not answer in time, `send --wait` ended before the delivery receipt, or
   * `stop` gave up waiting for the node's process to exit.
   */
  Timeout: 2,
  /** The command line or an argument is malformed: unknown option, bad value, invalid name or message. */
  Usage: 3,
  /** No node is running for the data directory (client commands), or it stopped answering connections. */
  NodeNotRunning: 4,
  /** The user or message asked for does not exist. */
  NotFound: 5,
  /** The request contradicts what exists: a name taken, a key that differs from the pinned one, a node already running. */
  Conflict: 6,
  /** The node is not connected to the network (no peers answered), so the request cannot be served now. */
  Offline: 7
} as const

/** A kind of outcome: a key of `ExitCode`. */
export type FailureKind = keyof typeof ExitCode

/** The tag of a command-line error (unknown option, missing argument, bad value). */
export const USAGE_ERROR_TAG = "UsageError"

/** The tag of a defect: a bug, reported with its first line. */
export const INTERNAL_ERROR_TAG = "InternalError"

/** The kind of each error tag that is not a plain `Failure`. */
const KIND_OF_TAG: { readonly [tag: string]: FailureKind } = {
  [USAGE_ERROR_TAG]: "Usage",
  InvalidUsername: "Usage",
  InvalidFingerprint: "Usage",
  SelfMessage: "Usage",
  MessageTooLong: "Usage",
  MessageTextMalformed: "Usage",
  MessageEmpty: "Usage",
  NotATerminal: "Usage",
  StdinTextRejected: "Usage",
  NodeNotRunning: "NodeNotRunning",
  UserNotFound: "NotFound",
  UnknownMessage: "NotFound",
  NameTaken: "Conflict",
  AlreadyRegistered: "Conflict",
  NameConflict: "Conflict",
  FingerprintMismatch: "Conflict",
  KeyChanged: "Conflict",
  NotRegistered: "Conflict",
  NodeAlreadyRunning: "Conflict",
  NotConnected: "Offline",
  PublishFailed: "Offline",
  DeliveryPending: "Timeout",
  NodeStillRunning: "Timeout"
}

/** What a failure prints and how the process exits. */
export interface FailureReport {
  readonly tag: string
  readonly message: string
  readonly exitCode: number
  /** False when the command already said everything on stdout (`send --wait` not delivered in time). */
  readonly printed: boolean
}

const hasTag = (error: unknown): error is { readonly _tag: string } =>
  typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"

const messageOf = (error: unknown): string => {
  if (error instanceof Error && error.message !== "") return error.message
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
    return error.message
  }
  return String(error)
}

/** The first line of a message, without trailing blanks: failures are one line. */
const firstLine = (text: string): string => (text.split("\n").find((line) => line.trim() !== "") ?? text).trimEnd()

/**
 * The report of a command's typed error. A `ControlRequestFailed` is a
 * timeout when its reason is `Timeout`; `DeliveryPending` prints nothing more
 * (the command printed the message's status already).
 */
export const reportOfError = (error: unknown): FailureReport => {
  const tag = hasTag(error) ? error._tag : INTERNAL_ERROR_TAG
  const timedOut = hasTag(error) && tag === "ControlRequestFailed" && "reason" in error && error.reason === "Timeout"
  const kind: FailureKind = timedOut ? "Timeout" : KIND_OF_TAG[tag] ?? "Failure"
  return { tag, message: firstLine(messageOf(error)), exitCode: ExitCode[kind], printed: tag !== "DeliveryPending" }
}

/** The report of a malformed command line, with a pointer to the help of the command it was for. */
export const reportOfUsage = (message: string, helpCommand: string): FailureReport => ({
  tag: USAGE_ERROR_TAG,
  message: `${firstLine(message)} (see ${helpCommand} --help)`,
  exitCode: ExitCode.Usage,
  printed: true
})

/** The report of a defect (a bug), which still ends in one line. */
export const reportOfDefect = (defect: unknown): FailureReport => ({
  tag: INTERNAL_ERROR_TAG,
  message: `internal error: ${firstLine(messageOf(defect))}`,
  exitCode: ExitCode.Failure,
  printed: true
})

/** The line printed on stderr for a report: JSON with `--json`, else `peerchat: <message>`. */
export const failureLine = (report: FailureReport, asJson: boolean): string =>
  asJson
    ? JSON.stringify({ error: { tag: report.tag, message: report.message } })
    // The message may quote another node (a refusal's detail): printable, never an escape sequence.
    : `peerchat: ${printableLines(report.message)}`
