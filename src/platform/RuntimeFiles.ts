/**
 * What a running node leaves in its data directory so that client commands
 * (`peerchat status`, `peers`, `register`, `whois`) can find and call it:
 * `api-token`, the secret that guards the local control API, created once
 * and readable by its owner only, and `node.json`, which says which process
 * runs the node and where its control API listens. `node.json` exists while
 * the node runs: it is written atomically once the node is ready and removed
 * when the node shuts down cleanly. A node that was killed leaves a stale
 * `node.json` behind; the client recognizes it when the API port refuses the
 * connection.
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import { Clock, Config, type Duration, Effect, Either, Option, ParseResult, Schedule, Schema, type Scope } from "effect"
import { randomBytes } from "node:crypto"
import { homedir } from "node:os"
import { type Address, formatAddress, parseAddress } from "../core/Contact.js"
import { NodeId } from "../core/Id.js"
import { readFileIfExists, writeFileAtomic } from "./AtomicFile.js"
import { describePlatformError, readPrivateFile } from "./PrivateFile.js"

/** Name of the API token file inside the data directory. */
export const API_TOKEN_FILE = "api-token"

/** Name of the runtime information file inside the data directory. */
export const RUNTIME_INFO_FILE = "node.json"

/** Mode of the API token file: anyone who can read it controls the node. */
export const API_TOKEN_MODE = 0o600

/** Mode of `node.json`; nothing in it is secret, but only its owner needs it. */
export const RUNTIME_INFO_MODE = 0o600

/** Mode of the data directory when it is created here. */
export const DATA_DIR_MODE = 0o700

/** Environment variable naming the data directory when `--data-dir` is not given. */
export const DATA_DIR_ENV = "PEERCHAT_DATA_DIR"

/** Data directory under the home directory when neither `--data-dir` nor the environment name one. */
export const DEFAULT_DATA_DIR_NAME = ".peerchat"

/** Number of random bytes in an API token. */
export const API_TOKEN_BYTES = 32

/** Largest `node.json` or `api-token` read; both are far smaller, a bigger file is damaged. */
const MAX_RUNTIME_FILE_BYTES = 64 * 1024

/** The secret of the control API: 32 random bytes as 64 lower-case hex characters. */
export const ApiToken = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/),
  // The token is secret: the decoder's default message would quote it.
  Schema.annotations({ message: () => ({ message: "expected 64 lower-case hex characters", override: true }) }),
  Schema.brand("peerchat/ApiToken")
)
/** @see ApiToken */
export type ApiToken = typeof ApiToken.Type

/** A `host:port` string as `formatAddress` writes it (IPv6 hosts in brackets). */
export const HostPort = Schema.String.pipe(
  Schema.filter((text) => Either.isRight(parseAddress(text)), {
    message: () => "expected host:port (IPv6 as [host]:port)"
  })
)

/** Schema of `node.json`, version 1. */
export const RuntimeInfo = Schema.Struct({
  version: Schema.Literal(1),
  /** Process id of the node. */
  pid: Schema.Int.pipe(Schema.positive()),
  nodeId: NodeId,
  /** Where peers reach the node, `host:port`. */
  listen: HostPort,
  /** Where the local control API listens, `host:port`. */
  api: HostPort,
  /** When the node became ready, ms since the epoch. */
  startedAt: Schema.NonNegativeInt
})
/** @see RuntimeInfo */
export type RuntimeInfo = typeof RuntimeInfo.Type

// The data directory is quoted in suggested commands only when a shell would split or expand it.
const shellQuote = (text: string): string =>
  /^[A-Za-z0-9_./:@%+=,-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`

/** No node runs for this data directory: there is no `node.json`, or its control API refused the connection. */
export class NodeNotRunning extends Schema.TaggedError<NodeNotRunning>()("NodeNotRunning", {
  dataDir: Schema.String,
  /** The control API named by a stale `node.json`, when that is how the node was found dead. */
  api: Schema.optional(Schema.String),
  /** The process a stale `node.json` names, when that process is found not running (a node that crashed or was killed). */
  pid: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    const stale = this.pid !== undefined
      ? `: node.json names process ${this.pid}, which is not a running process of yours, so that node has stopped`
      : this.api === undefined
      ? ""
      : `: node.json names the control API ${this.api}, which refused the connection, so that node has stopped`
    return `no node is running for data directory ${this.dataDir}${stale} ` +
      `(start one with "peerchat start --data-dir ${shellQuote(this.dataDir)}")`
  }
}

/** `api-token` or `node.json` cannot be used. */
export class RuntimeFileError extends Schema.TaggedError<RuntimeFileError>()("RuntimeFileError", {
  reason: Schema.Literal(
    /** The file does not exist where it must. */
    "Missing",
    /** The file or its directory exists but cannot be read. */
    "Unreadable",
    /** The file does not hold what it should. */
    "Corrupt",
    /** The file or the data directory cannot be written. */
    "Unwritable",
    /** The token file can be read by group or others. */
    "InsecurePermissions"
  ),
  /** The file or directory concerned. */
  path: Schema.String,
  /** What the operating system or the decoder said. */
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "Missing":
        return `${this.path} does not exist (${this.detail})`
      case "Unreadable":
        return `cannot read ${this.path} (${this.detail}); check that it and its directory belong to the user running peerchat`
      case "Corrupt":
        return `${this.path} is damaged (${this.detail}); delete it and restart the node, which writes it anew`
      case "Unwritable":
        return `cannot write ${this.path} (${this.detail})`
      case "InsecurePermissions":
        return `${this.path} can be read by other users (${this.detail}), and whoever reads it controls the node; ` +
          `run "chmod 600 ${shellQuote(this.path)}" and try again`
    }
  }
}


const formatParseError = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length === 0 ? "document" : issue.path.join(".")}: ${issue.message}`)
    .join("; ")

/**
 * The data directory, as an absolute path: `--data-dir` when given, else the
 * environment variable `PEERCHAT_DATA_DIR` (read through Effect's `Config`,
 * so tests can supply it), else `~/.peerchat`. A leading `~/` is expanded,
 * because `--data-dir=~/x` reaches the program unexpanded.
 */
export const resolveDataDir = (option: Option.Option<string>): Effect.Effect<string, never, Path.Path> =>
  Effect.gen(function*() {
    const paths = yield* Path.Path
    const fromEnv = yield* Config.option(Config.string(DATA_DIR_ENV)).pipe(Effect.orElseSucceed(() => Option.none()))
    const given = (dir: Option.Option<string>) => Option.filter(dir, (text) => text.trim() !== "")
    const chosen = Option.orElse(given(option), () => given(fromEnv))
    const home = homedir()
    if (Option.isNone(chosen)) return paths.join(home, DEFAULT_DATA_DIR_NAME)
    const dir = chosen.value
    const expanded = dir === "~" ? home : dir.startsWith("~/") ? paths.join(home, dir.slice(2)) : dir
    return paths.resolve(expanded)
  })

/** Reads the token at `filePath`, refusing a token other users can read. `None` when there is no file. */
const readTokenFile = (
  filePath: string
): Effect.Effect<Option.Option<ApiToken>, RuntimeFileError, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const existing = yield* readPrivateFile(filePath, MAX_RUNTIME_FILE_BYTES).pipe(
      Effect.mapError((problem) =>
        new RuntimeFileError({
          reason: problem.reason === "NotRegular" || problem.reason === "TooLarge" ? "Corrupt" : problem.reason,
          path: filePath,
          detail: problem.detail
        })
      )
    )
    if (Option.isNone(existing)) return Option.none()
    const bytes = existing.value
    const text = new TextDecoder().decode(bytes).trim()
    const token = Schema.decodeUnknownEither(ApiToken)(text)
    if (Either.isLeft(token)) {
      return yield* new RuntimeFileError({ reason: "Corrupt", path: filePath, detail: formatParseError(token.left) })
    }
    return Option.some(token.right)
  })

/**
 * A new API token for the node starting on `dataDir`, in `<dataDir>/api-token`
 * (with the data directory, mode 0700, if missing): 32 random bytes from
 * `node:crypto`, written atomically with mode 0600, replacing the last run's.
 * Fails when the file cannot be written.
 */
export const createApiToken = (
  dataDir: string
): Effect.Effect<ApiToken, RuntimeFileError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const filePath = paths.join(dataDir, API_TOKEN_FILE)
    yield* fs.makeDirectory(dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(
      Effect.mapError((error) => new RuntimeFileError({ reason: "Unwritable", path: dataDir, detail: describePlatformError(error) }))
    )
    // A new token at every start: a token that leaked (sent to whatever listened on the port of a stale
    // node.json, say) opens nothing once the node that made it has stopped.
    const token = randomBytes(API_TOKEN_BYTES).toString("hex") as ApiToken
    yield* writeFileAtomic(filePath, `${token}\n`, { mode: API_TOKEN_MODE }).pipe(
      Effect.mapError((error) => new RuntimeFileError({ reason: "Unwritable", path: filePath, detail: describePlatformError(error) }))
    )
    return token
  })

/** The API token a client presents, from `<dataDir>/api-token`; never creates one. */
export const readApiToken = (
  dataDir: string
): Effect.Effect<ApiToken, RuntimeFileError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const paths = yield* Path.Path
    const filePath = paths.join(dataDir, API_TOKEN_FILE)
    const token = yield* readTokenFile(filePath)
    if (Option.isNone(token)) {
      return yield* new RuntimeFileError({
        reason: "Missing",
        path: filePath,
        detail: "the node writes it on start; restart the node"
      })
    }
    return token.value
  })

const decodeRuntimeInfo = (bytes: Uint8Array): Either.Either<RuntimeInfo, string> => {
  if (bytes.length > MAX_RUNTIME_FILE_BYTES) return Either.left(`${bytes.length} bytes, too large`)
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))
  } catch {
    return Either.left("not valid UTF-8 JSON")
  }
  return Schema.decodeUnknownEither(RuntimeInfo)(parsed).pipe(Either.mapLeft(formatParseError))
}

/**
 * `<dataDir>/node.json`, decoded. Fails with `NodeNotRunning` when there is
 * no such file (or no data directory), with `RuntimeFileError` when it cannot
 * be read or is damaged.
 */
export const readRuntimeInfo = (
  dataDir: string
): Effect.Effect<RuntimeInfo, NodeNotRunning | RuntimeFileError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const paths = yield* Path.Path
    const filePath = paths.join(dataDir, RUNTIME_INFO_FILE)
    const bytes = yield* readFileIfExists(filePath).pipe(
      Effect.mapError((error) =>
        // Too large to be a runtime file is a damaged one.
        new RuntimeFileError({
          reason: error._tag === "BadArgument" ? "Corrupt" : "Unreadable",
          path: filePath,
          detail: describePlatformError(error)
        })
      )
    )
    if (Option.isNone(bytes)) return yield* new NodeNotRunning({ dataDir })
    const decoded = decodeRuntimeInfo(bytes.value)
    if (Either.isLeft(decoded)) {
      return yield* new RuntimeFileError({ reason: "Corrupt", path: filePath, detail: decoded.left })
    }
    return decoded.right
  })

/** What the node knows once it is ready; the rest of `node.json` is filled in by `writeRuntimeInfoScoped`. */
export interface RuntimeInfoInput {
  readonly nodeId: NodeId
  /** The peer-to-peer listen address. */
  readonly listen: Address
  /** The bound address of the control API. */
  readonly api: Address
}

/**
 * Writes `<dataDir>/node.json` atomically (mode 0600) with this process's id
 * and the current time, and removes it when the scope closes, unless another
 * process has replaced it meanwhile (then it is that process's file). Call it
 * once the node is ready to answer, so that a client never finds a file
 * naming a port that is not served yet.
 */
export const writeRuntimeInfoScoped = (
  dataDir: string,
  input: RuntimeInfoInput
): Effect.Effect<RuntimeInfo, RuntimeFileError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const filePath = paths.join(dataDir, RUNTIME_INFO_FILE)
    const info: RuntimeInfo = {
      version: 1,
      pid: process.pid,
      nodeId: input.nodeId,
      listen: formatAddress(input.listen),
      api: formatAddress(input.api),
      startedAt: yield* Clock.currentTimeMillis
    }
    // Encoding validates, so a malformed address never reaches the file.
    const encoded = yield* Schema.encode(RuntimeInfo)(info).pipe(
      Effect.mapError((error) => new RuntimeFileError({ reason: "Unwritable", path: filePath, detail: formatParseError(error) }))
    )
    const removeIfOurs = Effect.gen(function*() {
      const current = yield* readFileIfExists(filePath)
      if (Option.isNone(current)) return
      const decoded = decodeRuntimeInfo(current.value)
      if (Either.isRight(decoded) && decoded.right.pid === info.pid && decoded.right.startedAt === info.startedAt) {
        yield* fs.remove(filePath)
      }
    }).pipe(
      Effect.catchAll((error) => Effect.logWarning(`could not remove ${filePath}: ${describePlatformError(error)}`))
    )
    yield* Effect.acquireRelease(
      writeFileAtomic(filePath, `${JSON.stringify(encoded, null, 2)}\n`, { mode: RUNTIME_INFO_MODE }).pipe(
        Effect.mapError((error) => new RuntimeFileError({ reason: "Unwritable", path: filePath, detail: describePlatformError(error) }))
      ),
      () => removeIfOurs
    )
    return info
  })

/** Whether a process with this id exists (signal 0 only checks; EPERM: it exists but is someone else's). */
/**
 * Whether a process of this user runs as `pid`. Another user's process at
 * that pid (`EPERM`: after a crash or a reboot the number was given again)
 * is no node of this data directory, whose files only this user can write.
 */
export const isProcessAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Checks every `every` until process `pid` has exited: true once it has, false if it still runs after `within`. */
export const awaitProcessExit = (
  pid: number,
  every: Duration.DurationInput,
  within: Duration.DurationInput
): Effect.Effect<boolean> =>
  Effect.sync(() => isProcessAlive(pid)).pipe(
    Effect.repeat({ while: (alive) => alive, schedule: Schedule.spaced(every) }),
    Effect.timeout(within),
    Effect.match({ onFailure: () => false, onSuccess: () => true })
  )
