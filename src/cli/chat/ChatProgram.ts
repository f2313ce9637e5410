/**
 * `peerchat chat` (and `peerchat` alone): the terminal chat on the node of a
 * data directory. It talks to the node only through the control API, and
 * never hosts it in its own process: when a node already runs on the data
 * directory (`peerchat start` in another terminal, or another chat window)
 * it uses it; otherwise it starts one as a process of its own, `peerchat
 * start` of this very program, detached from the terminal, logging to the
 * rotating `<dataDir>/logs/node.log` (see `NodeProgram.ts`), joining the
 * network remembered in `network.json` or, at the first run, the one the
 * user chooses. Every window attaches to the node while it runs
 * (`ChatWindows`): a node a chat started stops when its last window has
 * gone (quit or crashed), so a second window keeps it running after the
 * first quits, and a node the user started is never stopped by the chat.
 * The last line printed says which happened (`Farewell.ts`). During the
 * first-run setup the chat may restart the node it started with another
 * address (the user's choice after the join timed out); an address is
 * written to `network.json` only once the node reached the network through it.
 */
import { FileSystem, HttpClient, Path } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Console, Context, Duration, Effect, Either, Exit, Layer, Option, Schedule, Schema, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, statSync, truncateSync } from "node:fs"
import { networkInterfaces } from "node:os"
import { delimiter, join, resolve } from "node:path"
import { type Address, formatAddress } from "../../core/Contact.js"
import { type ControlClient, makeControlClient, type WindowAttachment } from "../../platform/ControlClient.js"
import { NODE_PROCESS_ENVIRONMENT } from "../../platform/ProcessMemory.js"
import { awaitProcessExit, DATA_DIR_MODE, readRuntimeInfo } from "../../platform/RuntimeFiles.js"
import { LOG_DIR, withoutLogging } from "../Logging.js"
import { CHAT_NODE_ENV } from "../NodeProgram.js"
import type { ChatHost } from "./ChatDriver.js"
import { makeChatDriver } from "./ChatDriver.js"
import { ChatFailure, type ChatIO, fromControlClient } from "./ChatIO.js"
import { type Alert, type Cmd, initialState, type Phase } from "./ChatState.js"
import { renderChat, screenSize } from "./ChatUi.js"
import { type Farewell, farewellOfDetach, farewellText } from "./Farewell.js"
import { bootstrapOf, DEFAULT_PREFERENCES, readPreferences, readSettings, writePreferences, writeSettings } from "./Settings.js"

/** What `peerchat chat` was asked for. */
export interface ChatOptions {
  readonly dataDir: string
  /** A conversation to open once the chat is ready. */
  readonly name: string | null
  /** Where a node started by the chat listens, advertises and serves its control API. */
  readonly listen: Address
  readonly advertise: Address | undefined
  readonly api: Address
  /** Nodes to join through, overriding (and replacing) the remembered ones. */
  readonly bootstrap: ReadonlyArray<Address>
  /** Name-claim proof-of-work difficulty of a node the chat starts (see `peerchat start --claim-difficulty`). */
  readonly claimDifficulty: number
  /** How long the first run waits for the network before offering a choice (`--join-timeout`). */
  readonly joinTimeoutMs: number
}

/**
 * What a node the chat started wrote on stderr (in `logs/`): nothing while
 * it runs (it logs to `node.log`), its failure when it could not start, a
 * crash report. Kept short: cut when it grows past `MAX_STDERR_FILE_BYTES`.
 */
export const NODE_STDERR_FILE = "node-stderr.log"

const MAX_STDERR_FILE_BYTES = 256 * 1024

/** Longest wait for a node the chat started to answer. */
const NODE_START_TIMEOUT = Duration.seconds(60)

/** Longest wait for a node to exit once it stops (the routing table saved, connections and database closed). */
const NODE_STOP_TIMEOUT = Duration.seconds(30)

/** The chat needs a terminal on both ends. */
export class NotATerminal extends Schema.TaggedError<NotATerminal>()("NotATerminal", {}) {
  override get message(): string {
    return "peerchat chat needs an interactive terminal; for scripts use peerchat send, history and inbox"
  }
}

/** A node the chat started could not start; `message` is its own one-line reason. */
export class NodeStartFailed extends Schema.TaggedError<NodeStartFailed>()("NodeStartFailed", { message: Schema.String }) {}

/** The error line `peerchat start --json` prints when it fails. */
const StartFailureLine = Schema.parseJson(Schema.Struct({ error: Schema.Struct({ tag: Schema.String, message: Schema.String }) }))

/** The one line that says why the node exited, from what it wrote on stderr (its JSON failure line, else its last line). */
export const startFailureOf = (stderr: string, exit: string): string => {
  const lines = stderr.split("\n").map((line) => line.trim()).filter((line) => line !== "")
  for (const line of [...lines].reverse()) {
    const decoded = Schema.decodeUnknownEither(StartFailureLine)(line)
    if (Either.isRight(decoded)) {
      const { message, tag } = decoded.right.error
      return tag === "TransportStartError" ? `${message} (peerchat chat --listen HOST:PORT picks another)` : message
    }
  }
  const last = lines.at(-1)
  return last === undefined ? `your node exited (${exit}) before it was ready` : `your node exited (${exit}): ${last}`
}

/** Whether `peerchat start` would advertise `advertise` by itself for `listen` (its default: this machine's first external IPv4). */
const isDefaultAdvertise = (listen: Address, advertise: Address): boolean => {
  if (listen.host !== "0.0.0.0" && listen.host !== "::") return false
  const external = Object.values(networkInterfaces()).flatMap((entries) => entries ?? [])
    .find((entry) => entry.family === "IPv4" && !entry.internal)
  return advertise.port === listen.port && advertise.host === (external?.address ?? "127.0.0.1")
}

/**
 * The command line of `peerchat start` for the chat's node: this program
 * again (`process.argv[1]`, with the runtime's own flags, so it works from
 * the built command and from the sources under tsx alike).
 */
const startArguments = (options: ChatOptions, bootstrap: ReadonlyArray<Address>): ReadonlyArray<string> => [
  ...process.execArgv,
  resolve(process.argv[1] ?? ""),
  "start",
  "--json",
  "--data-dir",
  options.dataDir,
  "--listen",
  formatAddress(options.listen),
  // An address given by hand turns the router's port mapping off: only one the user chose is passed on.
  ...(options.advertise === undefined || isDefaultAdvertise(options.listen, options.advertise)
    ? []
    : ["--advertise", formatAddress(options.advertise)]),
  "--api",
  formatAddress(options.api),
  "--claim-difficulty",
  String(options.claimDifficulty),
  ...bootstrap.flatMap((address) => ["--bootstrap", formatAddress(address)])
]

/** A node process this window started. */
interface SpawnedNode {
  readonly child: ChildProcess
  /** Completes when the process has exited, with how. */
  readonly exited: Effect.Effect<string>
}

/** Starts `peerchat start` for the chat, detached from the terminal, its stderr appended to `logs/NODE_STDERR_FILE`. */
const spawnNode = (options: ChatOptions, bootstrap: ReadonlyArray<Address>) =>
  Effect.try({
    try: () => {
      const logs = join(options.dataDir, LOG_DIR)
      mkdirSync(logs, { recursive: true, mode: DATA_DIR_MODE })
      const stderrPath = join(logs, NODE_STDERR_FILE)
      const size = (() => {
        try {
          return statSync(stderrPath).size
        } catch {
          return 0
        }
      })()
      if (size > MAX_STDERR_FILE_BYTES) truncateSync(stderrPath, 0)
      const offset = size > MAX_STDERR_FILE_BYTES ? 0 : size
      const fd = openSync(stderrPath, "a", 0o600)
      let child: ChildProcess
      try {
        child = spawn(process.execPath, startArguments(options, bootstrap), {
          // Its own session: the terminal's Ctrl-C and hang-up do not reach it, and it outlives this window.
          detached: true,
          stdio: ["ignore", "ignore", fd],
          env: { ...NODE_PROCESS_ENVIRONMENT, ...process.env, [CHAT_NODE_ENV]: "1" }
        })
      } finally {
        closeSync(fd)
      }
      child.unref()
      let exit: string | null = null
      const waiting = new Set<(how: string) => void>()
      child.once("exit", (code, signal) => {
        exit = signal === null ? `code ${code ?? "?"}` : `signal ${signal}`
        for (const resume of waiting) resume(exit)
      })
      child.once("error", (error) => {
        exit = error.message
        for (const resume of waiting) resume(exit)
      })
      const exited = Effect.async<string>((resume) => {
        if (exit !== null) return resume(Effect.succeed(exit))
        const done = (how: string) => resume(Effect.succeed(how))
        waiting.add(done)
        return Effect.sync(() => waiting.delete(done))
      })
      const spawned: SpawnedNode = { child, exited }
      const stderrSince = () => {
        try {
          return readFileSync(stderrPath).subarray(offset).toString("utf8")
        } catch {
          return ""
        }
      }
      return { spawned, stderrSince }
    },
    catch: (error) => new NodeStartFailed({ message: `cannot start your node: ${error instanceof Error ? error.message : String(error)}` })
  })

/** Stops a node this window started (during setup, to start it again with another address). */
const stopSpawned = (node: SpawnedNode): Effect.Effect<void> =>
  Effect.gen(function*() {
    node.child.kill("SIGTERM")
    const exited = yield* node.exited.pipe(Effect.timeout(NODE_STOP_TIMEOUT), Effect.option)
    if (Option.isNone(exited)) {
      node.child.kill("SIGKILL")
      yield* node.exited
    }
  })

/** The desktop notifier the chat uses when it is installed. */
const NOTIFIER = "notify-send"

/** Whether an executable `name` is on the PATH. */
const onPath = (name: string): boolean =>
  (process.env["PATH"] ?? "").split(delimiter).filter((dir) => dir !== "").some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK)
      return true
    } catch {
      return false
    }
  })

/**
 * Announces a message: BEL written to the terminal directly (not through
 * Ink's frame, where it would be a character to draw), and `notify-send`
 * when asked for; whatever goes wrong (no notifier, a closed terminal) is
 * ignored. The notification names the sender, never the text, which would
 * show on a locked screen.
 */
const announce = (alert: Alert): Effect.Effect<void> =>
  Effect.sync(() => {
    if (alert.bell) process.stdout.write("\u0007")
    if (alert.desktop) {
      try {
        const child = spawn(NOTIFIER, ["--app-name=Peerchat", "Peerchat", `New message from ${alert.from}`], { stdio: "ignore" })
        child.on("error", () => undefined)
        child.unref()
      } catch {
        // No notifier after all: the bell (if on) still rang.
      }
    }
  })

/** The node this window is attached to. */
interface Attached {
  readonly client: ControlClient
  readonly attachment: WindowAttachment | null
  /** Holds the attachment open; closing it detaches (when `detach` did not already). */
  readonly scope: Scope.CloseableScope
}

/** The chat session (driver and screen) in the current scope; returns what becomes of the node as it leaves. */
const session = (options: ChatOptions) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    // The chat's own HTTP client (node:http, its agent destroyed with the session). Not undici's:
    // its module would be loaded, and kept in memory, by every chat process.
    const http = Context.get(yield* Layer.build(NodeHttpClient.layer), HttpClient.HttpClient)
    const provided = <A, E>(effect: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | HttpClient.HttpClient>) =>
      effect.pipe(
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.provideService(Path.Path, path),
        Effect.provideService(HttpClient.HttpClient, http)
      )

    const current: {
      attached: Attached | null
      /** The node this window started, which it may restart with another address during setup. */
      spawned: SpawnedNode | null
    } = { attached: null, spawned: null }

    /**
     * Attaches this window to the node of `client` (detaching from the
     * previous one); a node that does not count windows is used all the same.
     * False when the node refused because it is stopping (its last window
     * just left): this window is then not attached.
     */
    const attachTo = (client: ControlClient) =>
      Effect.gen(function*() {
        yield* detachQuietly
        const scope = yield* Scope.make()
        const outcome = yield* Effect.either(Scope.extend(client.attachWindow, scope))
        if (Either.isLeft(outcome) && outcome.left._tag === "ControlRequestFailed" && outcome.left.reason === "Stopping") {
          yield* Scope.close(scope, Exit.void)
          return false
        }
        current.attached = { client, attachment: Either.getOrNull(outcome), scope }
        return true
      })

    /**
     * Waits until the node of `client`, which said it is stopping, has
     * exited (its control API no longer answers), for at most
     * `NODE_STOP_TIMEOUT`; this window then starts a node of its own.
     */
    const awaitExit = (client: ControlClient) =>
      Effect.match(client.status, { onFailure: (error) => error._tag === "NodeNotRunning", onSuccess: () => false }).pipe(
        Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (gone) => gone }),
        Effect.timeoutFail({
          duration: NODE_STOP_TIMEOUT,
          onTimeout: () =>
            new ChatFailure({
              kind: "Other",
              message: `your node said it was stopping but still runs after ${Duration.format(NODE_STOP_TIMEOUT)}; try again`
            })
        }),
        Effect.asVoid
      )

    const detachQuietly = Effect.suspend(() => {
      const previous = current.attached
      current.attached = null
      return previous === null ? Effect.void : Scope.close(previous.scope, Exit.void)
    })

    // A node that already runs here is used as it is; one that does not answer is not running, nor
    // is one on its way out (another window just quit it): this window waits for it to exit.
    const found = yield* provided(makeControlClient(options.dataDir)).pipe(
      Effect.flatMap((client) => Effect.as(client.status, client)),
      Effect.option
    )
    const running = Option.isSome(found) && !(yield* attachTo(found.value))
      ? yield* Effect.as(awaitExit(found.value), Option.none<ControlClient>())
      : found
    const settings = yield* readSettings(options.dataDir).pipe(Effect.either)
    const preferences = yield* readPreferences(options.dataDir).pipe(Effect.either)

    const failure = <A, R>(effect: Effect.Effect<A, { readonly message: string }, R>) =>
      effect.pipe(
        Effect.mapError((error) => new ChatFailure({ kind: "Other", message: error.message.split("\n")[0] ?? error.message })),
        Effect.catchAllDefect((defect) => Effect.fail(new ChatFailure({ kind: "Other", message: `unexpected error: ${String(defect)}` })))
      )

    /** Waits until the node just spawned answers on its control API (or exits, which is its failure). */
    const awaitReady = (node: SpawnedNode, stderrSince: () => string) =>
      Effect.gen(function*() {
        const pid = node.child.pid
        const answering = provided(
          Effect.gen(function*() {
            const info = yield* readRuntimeInfo(options.dataDir)
            if (info.pid !== pid) return yield* Effect.fail(new NodeStartFailed({ message: "not yet" }))
            const client = yield* makeControlClient(options.dataDir)
            yield* client.status
            return client
          })
        ).pipe(Effect.retry(Schedule.spaced("100 millis")))
        const exited = Effect.flatMap(node.exited, (how) => Effect.fail(new NodeStartFailed({ message: startFailureOf(stderrSince(), how) })))
        return yield* Effect.raceFirst(answering, exited).pipe(
          Effect.timeoutFail({
            duration: NODE_START_TIMEOUT,
            onTimeout: () => new NodeStartFailed({ message: `your node did not answer within ${Duration.format(NODE_START_TIMEOUT)}` })
          })
        )
      })

    const host: ChatHost = {
      // The settings are not written here: the reducer asks for `saveNetwork` once the node has
      // reached the network, so a mistyped address is not what the next start tries again.
      startNode: (bootstrap) =>
        failure(Effect.gen(function*() {
          yield* detachQuietly
          if (current.spawned !== null) {
            const previous = current.spawned
            current.spawned = null
            yield* stopSpawned(previous)
          }
          const { spawned: node, stderrSince } = yield* spawnNode(options, bootstrap)
          current.spawned = node
          const client = yield* awaitReady(node, stderrSince).pipe(
            // A node that never answered is not left behind.
            Effect.tapError(() =>
              Effect.zipRight(
                stopSpawned(node),
                Effect.sync(() => {
                  current.spawned = null
                })
              )
            )
          )
          yield* attachTo(client)
          return fromControlClient(client)
        })),
      saveNetwork: (bootstrap) => failure(provided(writeSettings(options.dataDir, bootstrap))),
      savePreferences: (preferences) => failure(provided(writePreferences(options.dataDir, { version: 1, ...preferences }))),
      alert: announce
    }

    const io: ChatIO | null = Option.match(running, { onNone: () => null, onSome: fromControlClient })
    let phase: Phase
    let initialCommands: ReadonlyArray<Cmd> = []
    // What the chat starts its node with (null: it starts none), and whether that still needs saving.
    let bootstrap: ReadonlyArray<Address> | null = null
    let unsavedNetwork = false
    if (io !== null) {
      phase = { _tag: "Starting", message: "Connecting to your node…" }
    } else if (Either.isLeft(settings)) {
      phase = { _tag: "Fatal", message: settings.left.message }
    } else if (options.bootstrap.length > 0 || Option.isSome(settings.right)) {
      // Addresses given on the command line replace the remembered ones once they work.
      unsavedNetwork = options.bootstrap.length > 0
      const chosen = options.bootstrap.length > 0 ? options.bootstrap : Option.match(settings.right, {
        onNone: () => [],
        onSome: bootstrapOf
      })
      bootstrap = chosen
      phase = { _tag: "Starting", message: "Starting your node…" }
      initialCommands = [{ _tag: "StartNode", bootstrap: chosen }]
    } else {
      phase = { _tag: "ChooseNetwork" }
    }

    const store = yield* makeChatDriver({
      initial: initialState({
        size: screenSize(process.stdout),
        phase,
        openOnStart: options.name,
        bootstrap,
        joinTimeoutMs: options.joinTimeoutMs,
        unsavedNetwork,
        alerts: { ...Either.getOrElse(preferences, () => DEFAULT_PREFERENCES), desktopAvailable: onPath(NOTIFIER) },
        // A damaged preferences file leaves the announcements off, and says so; /bell and /notify write a new one.
        notice: Either.isLeft(preferences) ? { text: preferences.left.message, tone: "warning" } : null
      }),
      io,
      host,
      initialCommands
    })
    const ink = renderChat(store)
    // The screen is left clean.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        ink.clear()
        ink.unmount()
      })
    )
    yield* store.done

    // Leaving: the node says whether it stops with this window; a node this window started and never attached to is stopped here.
    const leaving = current.attached
    const unattachedPid = current.spawned?.child.pid
    const farewell: Farewell = leaving === null
      ? unattachedPid === undefined ? { _tag: "NoNode" } : { _tag: "Stopping", pid: unattachedPid }
      : leaving.attachment === null
      ? yield* Effect.match(leaving.client.status, { onFailure: (): Farewell => ({ _tag: "NotRunning" }), onSuccess: (): Farewell => ({ _tag: "KeepsRunning" }) })
      : yield* Effect.match(leaving.client.detachWindow(leaving.attachment.attached.window), {
        onFailure: (): Farewell => ({ _tag: "NotRunning" }),
        onSuccess: (answer) => farewellOfDetach(answer, leaving.attachment?.attached.stopsWithLastWindow === true, leaving.client.info.pid)
      })
    if (leaving === null) yield* Effect.sync(() => current.spawned?.child.kill("SIGTERM"))
    yield* detachQuietly
    return farewell
  })

/** Runs the terminal chat until the user quits, then says what became of the node. */
export const runChat = (options: ChatOptions) =>
  Effect.gen(function*() {
    if (process.stdin.isTTY !== true || process.stdout.isTTY !== true) return yield* new NotATerminal()
    const fs = yield* FileSystem.FileSystem
    yield* fs.makeDirectory(options.dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(Effect.ignore)
    // The chat process logs nothing: the screen is the chat's, and its node logs in its own process.
    const farewell = yield* Effect.scoped(session(options)).pipe(withoutLogging)
    let stopped = false
    if (farewell._tag === "Stopping") {
      yield* Console.log("Stopping your node…")
      stopped = yield* awaitProcessExit(farewell.pid, "100 millis", NODE_STOP_TIMEOUT)
    }
    yield* Console.log(farewellText(farewell, stopped))
  })
