/**
 * Runs the terminal chat's state machine: holds the current `ChatState`,
 * feeds it every message (`dispatch`, called by the UI for key presses and
 * by the commands for their outcomes), and performs the commands `update`
 * returns through a `ChatIO`, each in its own fiber of the driver's scope.
 * Once the node answers it also follows the node's event stream
 * (reconnecting after 1 s, then 2 s, … up to 10 s, when it breaks) and asks
 * for a refresh every 5 s (every second during the first-run setup), which
 * repairs whatever a dropped event or a missed race left stale. It is the
 * reducer's clock: connections, refreshes and events carry the `Clock`'s
 * time. A node the chat restarts (another address, during setup) replaces
 * the I/O; the event stream reconnects to the new one. The UI subscribes to
 * state changes; `done` completes when the user quits.
 */
import { Cause, Clock, Deferred, Duration, Effect, FiberSet, Option, Ref, type Scope, Stream } from "effect"
import type { Address } from "../../core/Contact.js"
import { ChatFailure, type ChatIO } from "./ChatIO.js"
import { type Alert, type ChatState, type Cmd, type Failure, type Msg, update } from "./ChatState.js"

/** Where the chat gets its node from when none was running, and where it remembers how it joined. */
export interface ChatHost {
  /** Starts a node joining through `bootstrap` (stopping the one started before, if any); the I/O of the new one. */
  readonly startNode: (bootstrap: ReadonlyArray<Address>) => Effect.Effect<ChatIO, ChatFailure>
  /** Remembers `bootstrap` as how this data directory joins its network (network.json). */
  readonly saveNetwork: (bootstrap: ReadonlyArray<Address>) => Effect.Effect<void, ChatFailure>
  /** Remembers how new messages are announced (chat-settings.json). */
  readonly savePreferences: (preferences: { readonly bell: boolean; readonly desktop: boolean }) => Effect.Effect<void, ChatFailure>
  /** Announces a message that arrived: the terminal bell, a desktop notification. Never fails. */
  readonly alert: (alert: Alert) => Effect.Effect<void>
}

/** The running chat, as the UI sees it. */
export interface ChatStore {
  readonly getState: () => ChatState
  /** Calls `listener` after every change of state; returns the unsubscribe function. */
  readonly subscribe: (listener: () => void) => () => void
  readonly dispatch: (msg: Msg) => void
  /** Completes when the user quits. */
  readonly done: Effect.Effect<void>
}

/** Options of `makeChatDriver`. */
export interface ChatDriverOptions {
  readonly initial: ChatState
  /** The node's I/O when a node was already running; without it the first `StartNode` command provides it. */
  readonly io: ChatIO | null
  readonly host: ChatHost
  /** Commands to run at once (e.g. connecting to a running node, or starting the remembered one). */
  readonly initialCommands?: ReadonlyArray<Cmd> | undefined
  /** Time between refreshes while chatting (default 5 s). */
  readonly refreshInterval?: Duration.DurationInput | undefined
  /** Time between refreshes during setup (default 1 s). */
  readonly setupRefreshInterval?: Duration.DurationInput | undefined
}

/** What the reducer is told about a failed call: the message, and the kind and details it explains in its own words. */
const failureOf = (error: ChatFailure): Failure => ({
  message: error.message,
  kind: error.kind,
  ...(error.detail === undefined ? {} : { detail: error.detail })
})

/** Longest wait before reconnecting the event stream. */
const MAX_RECONNECT_DELAY = Duration.seconds(10)

/** The first line of a failure that is not a `ChatFailure` (a defect): never a stack trace. */
const describeCause = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const value = failure.value
    return typeof value === "object" && value !== null && "message" in value && typeof value.message === "string"
      ? value.message
      : String(value)
  }
  return `unexpected error: ${Cause.pretty(cause).split("\n")[0] ?? "unknown"}`
}

/**
 * Starts the chat in the current scope: the state, the command runner, and
 * (once connected) the event follower and the refresh timer. Closing the
 * scope stops all of them.
 */
export const makeChatDriver = (options: ChatDriverOptions): Effect.Effect<ChatStore, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runFork = yield* FiberSet.makeRuntime<never>()
    const quit = yield* Deferred.make<void>()
    // Messages go to the node one at a time, so they keep the order they were typed in.
    const sending = yield* Effect.makeSemaphore(1)
    const ioRef = yield* Ref.make<ChatIO | null>(options.io)
    const refreshMs = Duration.toMillis(options.refreshInterval ?? Duration.seconds(5))
    const setupRefreshMs = Duration.toMillis(options.setupRefreshInterval ?? Duration.seconds(1))
    let state = options.initial
    let followers = false
    const listeners = new Set<() => void>()

    const dispatch = (msg: Msg): void => {
      const [next, cmds] = update(state, msg)
      if (next !== state) {
        state = next
        for (const listener of listeners) listener()
      }
      for (const cmd of cmds) runFork(perform(cmd))
    }
    const send = (msg: Msg) => Effect.sync(() => dispatch(msg))

    /** Runs `use` with the node's I/O; a command before the node answers has nothing to do. */
    const withIo = (use: (io: ChatIO) => Effect.Effect<void, ChatFailure>): Effect.Effect<void, ChatFailure> =>
      Effect.flatMap(Ref.get(ioRef), (io) => (io === null ? Effect.void : use(io)))

    /** Follows the event stream (of the current node) for as long as the chat runs, reconnecting with backoff. */
    const followEvents = Effect.gen(function*() {
      let delay = Duration.seconds(1)
      for (;;) {
        const outcome = yield* Effect.scoped(
          Effect.gen(function*() {
            const io = yield* Ref.get(ioRef)
            // Followers start once a node answered, so there is one; the check only satisfies the types.
            if (io === null) return yield* new ChatFailure({ kind: "Other", message: "no node yet" })
            const events = yield* io.events
            delay = Duration.seconds(1)
            yield* send({ _tag: "EventsConnected" })
            yield* Stream.runForEach(
              events,
              (event) => Effect.flatMap(Clock.currentTimeMillis, (at) => send({ _tag: "Event", event, at }))
            )
          })
        ).pipe(Effect.either)
        yield* send({
          _tag: "EventsLost",
          message: outcome._tag === "Left" ? outcome.left.message : "the node closed the event stream"
        })
        yield* Effect.sleep(delay)
        delay = Duration.min(Duration.times(delay, 2), MAX_RECONNECT_DELAY)
      }
    })

    const refreshLoop = Effect.gen(function*() {
      for (;;) {
        yield* Effect.sleep(Duration.millis(state.phase._tag === "Chat" ? refreshMs : setupRefreshMs))
        yield* send({ _tag: "Refresh", now: yield* Clock.currentTimeMillis })
      }
    })

    /** The node answers: report it, and start following it (once). */
    const connect = (io: ChatIO) =>
      Effect.gen(function*() {
        yield* Ref.set(ioRef, io)
        const status = yield* io.status
        yield* send({ _tag: "Connected", status, now: yield* Clock.currentTimeMillis })
        if (!followers) {
          followers = true
          runFork(followEvents)
          runFork(refreshLoop)
        }
      })

    const perform = (cmd: Cmd): Effect.Effect<void> => {
      const run = (): Effect.Effect<void, ChatFailure> => {
        switch (cmd._tag) {
          case "StartNode":
            return Effect.flatMap(options.host.startNode(cmd.bootstrap), connect).pipe(
              Effect.catchAll((error) => send({ _tag: "StartFailed", message: error.message }))
            )
          case "SaveNetwork":
            return options.host.saveNetwork(cmd.bootstrap).pipe(
              Effect.catchAll((error) => send({ _tag: "Failed", action: "other", message: error.message }))
            )
          case "LoadStatus":
            return Effect.flatMap(Ref.get(ioRef), (io) =>
              io === null
                ? Effect.void
                : io.status.pipe(
                  Effect.matchEffect({
                    onFailure: (error) =>
                      send(cmd.show ? { _tag: "Failed", action: "status", message: error.message } : { _tag: "StatusFailed", message: error.message }),
                    onSuccess: (status) => send({ _tag: "StatusLoaded", status, show: cmd.show })
                  })
                ))
          case "LoadInbox":
            // A failed background read shows up as the node being unreachable in the status bar.
            return withIo((io) => Effect.flatMap(io.inbox, (conversations) => send({ _tag: "InboxLoaded", conversations }))).pipe(
              Effect.ignore
            )
          case "LoadHistory":
            return withIo((io) =>
              Effect.flatMap(
                io.history(cmd.name, { limit: cmd.limit, before: cmd.before }),
                (entries) => send({ _tag: "HistoryLoaded", name: cmd.name, entries, older: cmd.before !== null, limit: cmd.limit })
              )
            ).pipe(Effect.catchAll((error) => send({ _tag: "Failed", action: "history", message: error.message })))
          case "MarkRead":
            return withIo((io) => Effect.asVoid(io.markRead(cmd.name))).pipe(Effect.ignore)
          case "Send":
            return withIo((io) =>
              io.send(cmd.to, cmd.text).pipe(
                Effect.matchEffect({
                  onFailure: (error) => send({ _tag: "SendFailed", localId: cmd.localId, text: cmd.text, ...failureOf(error) }),
                  onSuccess: (message) => send({ _tag: "Sent", localId: cmd.localId, message })
                }),
                sending.withPermits(1)
              )
            )
          case "CheckName":
            return withIo((io) =>
              Effect.gen(function*() {
                const status = yield* io.status
                const free = yield* io.whois(cmd.name).pipe(
                  // A record of this very node is ours: claiming it again only renews it.
                  Effect.map((answer) => answer.nodeId === status.nodeId),
                  Effect.catchIf((error) => error.kind === "UserNotFound", () => Effect.succeed(true)),
                  // Several keys claim it already: it is nobody's to take.
                  Effect.catchIf((error) => error.kind === "NameConflict", () => Effect.succeed(false))
                )
                yield* send({ _tag: "NameChecked", name: cmd.name, free })
              })
            ).pipe(Effect.catchAll((error) => send({ _tag: "Failed", action: "check", ...failureOf(error) })))
          case "Register":
            return withIo((io) => Effect.flatMap(io.register(cmd.name), (answer) => send({ _tag: "Registered", answer }))).pipe(
              Effect.catchAll((error) => send({ _tag: "Failed", action: "register", ...failureOf(error) }))
            )
          case "Whois":
            return withIo((io) =>
              Effect.flatMap(
                io.whois(cmd.name),
                // Only a name with a fingerprint has an `@`: the look-up named exactly one key.
                (answer) => send({ _tag: "WhoisAnswered", answer, open: cmd.open, exact: cmd.name.includes("@") })
              )
            ).pipe(Effect.catchAll((error) => send({ _tag: "Failed", action: "whois", ...failureOf(error) })))
          case "LoadPeers":
            return withIo((io) => Effect.flatMap(io.peers, (peers) => send({ _tag: "PeersLoaded", peers }))).pipe(
              Effect.catchAll((error) => send({ _tag: "Failed", action: "peers", ...failureOf(error) }))
            )
          case "LoadId":
            return withIo((io) => Effect.flatMap(io.id, (id) => send({ _tag: "IdLoaded", id }))).pipe(
              Effect.catchAll((error) => send({ _tag: "Failed", action: "id", ...failureOf(error) }))
            )
          case "Verify":
            return withIo((io) =>
              Effect.flatMap(io.verify(cmd.name, cmd.confirm), (answer) => send({ _tag: "Verified", answer }))
            ).pipe(Effect.catchAll((error) => send({ _tag: "Failed", action: "verify", ...failureOf(error) })))
          case "Quit":
            return Deferred.succeed(quit, undefined)
          case "Alert":
            return options.host.alert(cmd)
          case "SavePreferences":
            return options.host.savePreferences({ bell: cmd.bell, desktop: cmd.desktop }).pipe(
              Effect.catchAll((error) => send({ _tag: "Failed", action: "other", message: error.message }))
            )
        }
      }
      // Whatever goes wrong ends up as one line on screen, never as a stack trace.
      return Effect.suspend(run).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause) ? Effect.void : send({ _tag: "Failed", action: "other", message: describeCause(cause) })
        )
      )
    }

    const store: ChatStore = {
      getState: () => state,
      subscribe: (listener) => {
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
      dispatch,
      done: Deferred.await(quit)
    }
    const io = options.io
    if (io !== null) runFork(connect(io).pipe(Effect.catchAll((error) => send({ _tag: "StartFailed", message: error.message }))))
    for (const cmd of options.initialCommands ?? []) runFork(perform(cmd))
    return store
  })
