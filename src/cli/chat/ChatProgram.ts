/**
 * `peerchat chat` (and `peerchat` alone): the terminal chat on the node of a
 * data directory. It talks to the node only through the control API. When a
 * node already runs on the data directory (`peerchat start` in another
 * terminal) it connects to it; otherwise it starts one in this process,
 * exactly as `peerchat start` would (same layers, `node.json`, so the other
 * commands work against it), joining the network remembered in
 * `network.json`, or, at the first run, the one the user chooses; that node
 * stops when the chat ends. During the first-run setup the chat may restart
 * its node with another address (the user's choice after the join timed
 * out); an address is written to `network.json` only once the node reached
 * the network through it. The node's log goes to `<dataDir>/node.log` while
 * the chat owns the screen.
 */
import { FileSystem, HttpClient, Path } from "@effect/platform"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { Console, Context, Effect, Either, ExecutionStrategy, Exit, Layer, Option, Schema, Scope } from "effect"
import { join } from "node:path"
import type { Address } from "../../core/Contact.js"
import { NodeConfig } from "../../node/NodeConfig.js"
import { makeControlClient } from "../../platform/ControlClient.js"
import { DATA_DIR_MODE } from "../../platform/RuntimeFiles.js"
import { withFileLogger } from "../Logging.js"
import { startNode } from "../NodeProgram.js"
import type { ChatHost } from "./ChatDriver.js"
import { makeChatDriver } from "./ChatDriver.js"
import { ChatFailure, type ChatIO, fromControlClient } from "./ChatIO.js"
import { type Cmd, initialState, type Phase } from "./ChatState.js"
import { renderChat, screenSize } from "./ChatUi.js"
import { bootstrapOf, readSettings, writeSettings } from "./Settings.js"

/** What `peerchat chat` was asked for. */
export interface ChatOptions {
  readonly dataDir: string
  /** A conversation to open once the chat is ready. */
  readonly name: string | null
  /** Where an in-process node listens, advertises and serves its control API. */
  readonly listen: Address
  readonly advertise: Address | undefined
  readonly api: Address
  /** Nodes to join through, overriding (and replacing) the remembered ones. */
  readonly bootstrap: ReadonlyArray<Address>
  /** Name-claim proof-of-work difficulty of an in-process node (see `peerchat start --claim-difficulty`). */
  readonly claimDifficulty: number
}

/** Name of the log file of a node started by the chat. */
export const CHAT_NODE_LOG = "node.log"

/** The chat needs a terminal on both ends. */
export class NotATerminal extends Schema.TaggedError<NotATerminal>()("NotATerminal", {}) {
  override get message(): string {
    return "peerchat chat needs an interactive terminal; for scripts use peerchat send, history and inbox"
  }
}

const describe = (error: unknown): string => {
  const message = typeof error === "object" && error !== null && "message" in error && typeof error.message === "string"
    ? error.message
    : String(error)
  const first = message.split("\n")[0] ?? message
  return typeof error === "object" && error !== null && "_tag" in error && error._tag === "TransportStartError"
    ? `${first} (peerchat chat --listen HOST:PORT picks another)`
    : first
}

/**
 * The chat session (driver and screen) in the current scope; a node it
 * starts lives in `nodeScope`, which the caller closes after this scope, so
 * the screen and every request of the chat are gone before the node stops.
 * Returns whether it started a node.
 */
const session = (options: ChatOptions, nodeScope: Scope.Scope) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    // The chat's own HTTP client (node:http, its agent destroyed with the session): its idle
    // connections must not hold up the shutdown of a node started here, which closes after this
    // scope. Not undici's: its module would be loaded, and kept in memory, by every node process.
    const http = Context.get(yield* Layer.build(NodeHttpClient.layer), HttpClient.HttpClient)
    const provided = <A, E>(effect: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | HttpClient.HttpClient>) =>
      effect.pipe(
        Effect.provideService(FileSystem.FileSystem, fs),
        Effect.provideService(Path.Path, path),
        Effect.provideService(HttpClient.HttpClient, http)
      )

    // A node that already runs here is used as it is; one that does not answer is not running.
    const running = yield* provided(makeControlClient(options.dataDir)).pipe(
      Effect.flatMap((client) => Effect.as(client.status, client)),
      Effect.option
    )
    const settings = yield* readSettings(options.dataDir).pipe(Effect.either)
    let startedHere = false
    // The node started here, in a scope of its own inside `nodeScope`, so another address can replace it.
    let current: Scope.CloseableScope | null = null

    const failure = <A, R>(effect: Effect.Effect<A, { readonly message: string }, R>) =>
      effect.pipe(
        Effect.mapError((error) => new ChatFailure({ kind: "Other", message: describe(error) })),
        Effect.catchAllDefect((defect) => Effect.fail(new ChatFailure({ kind: "Other", message: `unexpected error: ${describe(defect)}` })))
      )

    const host: ChatHost = {
      // The settings are not written here: the reducer asks for `saveNetwork` once the node has
      // reached the network, so a mistyped address is not what the next start tries again.
      startNode: (bootstrap) =>
        failure(provided(Effect.gen(function*() {
          if (current !== null) {
            const previous = current
            current = null
            yield* Scope.close(previous, Exit.void)
          }
          const scope = yield* Scope.fork(nodeScope, ExecutionStrategy.sequential)
          current = scope
          yield* startNode({
            dataDir: options.dataDir,
            listen: options.listen,
            advertise: options.advertise,
            bootstrap,
            api: options.api,
            // The node defaults, as `peerchat start` without options.
            k: NodeConfig.defaults.k,
            alpha: NodeConfig.defaults.alpha,
            callTimeout: NodeConfig.defaults.callTimeout,
            claimDifficulty: options.claimDifficulty
          }).pipe(Scope.extend(scope))
          startedHere = true
          return fromControlClient(yield* makeControlClient(options.dataDir))
        }))),
      saveNetwork: (bootstrap) => failure(provided(writeSettings(options.dataDir, bootstrap)))
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
      initial: initialState({ size: screenSize(process.stdout), phase, openOnStart: options.name, bootstrap, unsavedNetwork }),
      io,
      host,
      initialCommands
    })
    const ink = renderChat(store)
    // The screen is left clean; a node started here shuts down after this scope (see `runChat`).
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        ink.clear()
        ink.unmount()
      })
    )
    yield* store.done
    return startedHere
  })

/** Runs the terminal chat until the user quits. */
export const runChat = (options: ChatOptions) =>
  Effect.gen(function*() {
    if (process.stdin.isTTY !== true || process.stdout.isTTY !== true) return yield* new NotATerminal()
    const fs = yield* FileSystem.FileSystem
    yield* fs.makeDirectory(options.dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(Effect.ignore)
    const startedHere = yield* Effect.scoped(
      Effect.gen(function*() {
        const nodeScope = yield* Effect.scope
        const started = yield* Effect.scoped(session(options, nodeScope))
        if (started) yield* Console.log("Stopping your node…")
        return started
      })
    ).pipe(withFileLogger(join(options.dataDir, CHAT_NODE_LOG)))
    yield* Console.log(startedHere ? "Bye! Your node has stopped; run peerchat again to come back." : "Bye! Your node keeps running.")
  })
