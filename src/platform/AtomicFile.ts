/**
 * Crash-safe file replacement. `FileSystem.writeFile` truncates and writes in
 * place, so a crash or a full disk mid-write leaves a torn file; for the
 * identity and other state a torn file is worse than an old one. Here the new
 * content goes to a temporary file in the same directory (so the rename never
 * crosses file systems), is flushed to disk, and is renamed over the target;
 * then the directory is flushed so the rename itself survives a power loss.
 * Readers see either the old content or the new, never a mix.
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import { BadArgument, type PlatformError } from "@effect/platform/Error"
import { Effect, Exit, Option } from "effect"
import { randomBytes } from "node:crypto"
import { utf8 } from "../core/Bytes.js"

/** Options for `writeFileAtomic`. */
export interface AtomicWriteOptions {
  /**
   * Permission bits of the new file, applied exactly (not masked by the
   * umask). Without it the file gets the default `0o666 & ~umask`; the old
   * file's mode is not carried over.
   */
  readonly mode?: number | undefined
}

/** errno codes with which a platform says "a directory cannot be opened or flushed", which only costs durability. */
const UNSUPPORTED_DIRECTORY_SYNC: ReadonlySet<string> = new Set([
  "EISDIR", "EINVAL", "ENOTSUP", "EOPNOTSUPP", "EPERM", "EACCES", "EBADF"
])

const errnoCode = (error: PlatformError): string | undefined => {
  if (error._tag !== "SystemError") return undefined
  const cause: unknown = error.cause
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") {
    return cause.code
  }
  return undefined
}

const isUnsupportedDirectorySync = (error: PlatformError): boolean => {
  const code = errnoCode(error)
  return code !== undefined && UNSUPPORTED_DIRECTORY_SYNC.has(code)
}

/**
 * Flushes a directory entry table to disk. Windows cannot open directories
 * and some file systems refuse to fsync them; there the rename is still
 * atomic, only its durability across a power loss is weaker.
 */
const syncDirectory = (fs: FileSystem.FileSystem, directory: string): Effect.Effect<void, PlatformError> =>
  Effect.scoped(Effect.flatMap(fs.open(directory, { flag: "r" }), (handle) => handle.sync)).pipe(
    Effect.catchIf(isUnsupportedDirectorySync, () => Effect.void)
  )

/**
 * Replaces the file at `path` with `data` atomically: temp file in the same
 * directory, write, fsync, close, chmod, rename, fsync the directory. On any
 * failure before the rename the temp file is removed and the target is
 * untouched. A failure of the final directory sync is reported although the
 * new content is already in place.
 */
export const writeFileAtomic = (
  path: string,
  data: Uint8Array | string,
  options?: AtomicWriteOptions
): Effect.Effect<void, PlatformError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const directory = paths.dirname(path)
    const tempPath = paths.join(directory, `.${paths.basename(path)}.tmp-${randomBytes(8).toString("hex")}`)
    const bytes = typeof data === "string" ? utf8(data) : data
    const mode = options?.mode

    // Set once the temp file is ours ("wx" refuses to reuse a path) and cleared once
    // it has become the target, so cleanup removes exactly what this call created.
    let tempExists = false
    const replace = Effect.gen(function*() {
      yield* Effect.scoped(
        Effect.gen(function*() {
          // Created with the final mode (or stricter, under the umask), so the
          // content is never more exposed than the caller asked for.
          const handle = yield* fs.open(tempPath, { flag: "wx", mode: mode ?? 0o666 })
          tempExists = true
          // writeAll reports a zero-length write as WriteZero, so an empty file skips it.
          if (bytes.length > 0) yield* handle.writeAll(bytes)
          yield* handle.sync
        })
      )
      if (mode !== undefined) yield* fs.chmod(tempPath, mode)
      yield* fs.rename(tempPath, path)
      tempExists = false
    })
    yield* replace.pipe(
      Effect.onExit((exit) =>
        Exit.isSuccess(exit) || !tempExists ? Effect.void : Effect.ignore(fs.remove(tempPath))
      )
    )
    yield* syncDirectory(fs, directory)
  })

/** Largest small state file read whole (profile, settings, runtime files): 64 KiB, far above what they hold. */
export const MAX_STATE_FILE_BYTES = 64 * 1024

/**
 * The content of the file at `path`, or `None` when there is no such file;
 * other failures are errors, and so is a file over `maxBytes` (checked before
 * reading, so a damaged or hostile file cannot make the node hold megabytes
 * or print them back in an error).
 */
export const readFileIfExists = (
  path: string,
  maxBytes: number = MAX_STATE_FILE_BYTES
): Effect.Effect<Option.Option<Uint8Array>, PlatformError, FileSystem.FileSystem> =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    Effect.flatMap(fs.stat(path), (info) =>
      Number(info.size) > maxBytes
        ? Effect.fail(
          new BadArgument({
            module: "FileSystem",
            method: "readFile",
            description: `${path} is ${info.size} bytes, larger than the ${maxBytes} such a file may hold`
          })
        )
        : fs.readFile(path))).pipe(
      Effect.map(Option.some),
      Effect.catchIf(
        (error) => error._tag === "SystemError" && error.reason === "NotFound",
        () => Effect.succeed(Option.none())
      )
    )
