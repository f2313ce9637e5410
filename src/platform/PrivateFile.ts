/**
 * Reading files that hold secrets (the identity, the API token). Such a file
 * must be a regular file that only its owner can read; anything else is
 * reported with the reason, so each caller can tell the user what to do,
 * and the file is never silently replaced.
 *
 * @since 0.1.0
 */
import { FileSystem } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Effect, Option, Schema } from "effect"

/** Why a private file could not be read. */
export class PrivateFileProblem extends Schema.TaggedError<PrivateFileProblem>()("PrivateFileProblem", {
  reason: Schema.Literal(
    /** The operating system refused or failed the read. */
    "Unreadable",
    /** The path is a directory, a socket, … */
    "NotRegular",
    /** Group or others may read it. */
    "InsecurePermissions",
    /** Larger than anything the caller would write there. */
    "TooLarge"
  ),
  detail: Schema.String
}) {}

/** A platform error in one line: the errno reason and what failed. */
export const describePlatformError = (error: PlatformError): string =>
  error._tag === "SystemError" ? `${error.reason}: ${error.description ?? error.syscall ?? error.method}` : error.message

/** True for "no such file or directory". */
export const isNotFound = (error: PlatformError): boolean => error._tag === "SystemError" && error.reason === "NotFound"

// Windows has no Unix permission bits; its ACLs are out of reach of `stat`.
const checksPermissions = process.platform !== "win32"

/**
 * The content of the private file at `path`, or `None` when it does not
 * exist. Fails when it is not a regular file, is readable by group or others,
 * is larger than `maxBytes`, or cannot be read.
 */
export const readPrivateFile = (
  path: string,
  maxBytes: number
): Effect.Effect<Option.Option<Uint8Array>, PrivateFileProblem, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const unreadable = (error: PlatformError) =>
      new PrivateFileProblem({ reason: "Unreadable", detail: describePlatformError(error) })
    const info = yield* fs.stat(path).pipe(
      Effect.map(Option.some),
      Effect.catchIf(isNotFound, () => Effect.succeed(Option.none())),
      Effect.mapError(unreadable)
    )
    if (Option.isNone(info)) return Option.none()
    const stat = info.value
    if (stat.type !== "File") {
      return yield* new PrivateFileProblem({ reason: "NotRegular", detail: `a ${stat.type}, not a regular file` })
    }
    if (checksPermissions && (stat.mode & 0o077) !== 0) {
      return yield* new PrivateFileProblem({
        reason: "InsecurePermissions",
        detail: `mode ${(stat.mode & 0o777).toString(8).padStart(3, "0")}`
      })
    }
    if (Number(stat.size) > maxBytes) {
      return yield* new PrivateFileProblem({ reason: "TooLarge", detail: `${stat.size} bytes, larger than ${maxBytes}` })
    }
    return Option.some(yield* fs.readFile(path).pipe(Effect.mapError(unreadable)))
  })
