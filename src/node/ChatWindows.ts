/**
 * The terminal chat windows attached to a node, so a node the chat started
 * for itself runs exactly as long as some window uses it. Each window holds
 * an attachment (`GET /v1/windows`, a stream the window keeps open) for as
 * long as it runs, and says goodbye with `POST /v1/windows/:id/detach`,
 * whose answer tells it the truth to print: how many windows remain and
 * whether the node stops now. A window that crashes drops its connection,
 * which detaches it all the same. A node started by the chat stops once its
 * last window has gone (or when no window attached within
 * `FIRST_WINDOW_WITHIN` of its start: the chat that started it died first);
 * a node started by `peerchat start` only counts its windows and never stops
 * for them. The rule is `stopsNow`, a pure function; `ChatWindows.layer` keeps
 * the count. Once the node has decided to stop, it takes no new window
 * (`NodeStopping`): a window opened just as the last one quit would
 * otherwise attach to a node on its way out, and be told a moment later
 * that its node is gone; refused, it waits for that node to exit and starts
 * its own.
 *
 * @since 0.4.0
 */
import { Context, Deferred, Duration, Effect, Layer, Ref, Schema, type Scope } from "effect"

/** One line of the `GET /v1/windows` stream: first `Attached`, then a heartbeat now and then. */
export const WindowLine = Schema.Union(
  Schema.TaggedStruct("Attached", {
    /** This window's id, for its detach request. */
    window: Schema.NonNegativeInt,
    /** Windows attached now, this one included. */
    windows: Schema.NonNegativeInt,
    /** The node was started by a chat and stops when its last window has gone. */
    stopsWithLastWindow: Schema.Boolean
  }),
  Schema.TaggedStruct("Heartbeat", {})
)
/** @see WindowLine */
export type WindowLine = typeof WindowLine.Type

/** The answer to `POST /v1/windows/:id/detach`. */
export const DetachAnswer = Schema.Struct({
  /** Windows still attached. */
  windows: Schema.NonNegativeInt,
  /** The node stops now (it was started by a chat and this was its last window). */
  stopping: Schema.Boolean
})
/** @see DetachAnswer */
export type DetachAnswer = typeof DetachAnswer.Type

/** The node has decided to stop (its last window left) and takes no new window. */
export class NodeStopping extends Schema.TaggedError<NodeStopping>()("NodeStopping", {}) {
  override get message(): string {
    return "the node is stopping: its last chat window has gone"
  }
}

/** How long a node started by a chat waits for its first window before it stops. */
export const FIRST_WINDOW_WITHIN: Duration.Duration = Duration.seconds(30)

/**
 * Whether the node stops now: only one that stops with its last window,
 * once no window is attached, after one was (or after the first one was
 * awaited for too long).
 */
export const stopsNow = (state: {
  readonly stopsWithLastWindow: boolean
  readonly attached: number
  readonly everAttached: boolean
  readonly firstWindowOverdue: boolean
}): boolean => state.stopsWithLastWindow && state.attached === 0 && (state.everAttached || state.firstWindowOverdue)

/** An attached window. */
export interface Attachment {
  readonly window: number
  /** Windows attached now, this one included. */
  readonly windows: number
}

/** What `ChatWindows.layer` keeps. */
interface WindowsState {
  readonly attached: ReadonlySet<number>
  readonly nextId: number
  readonly everAttached: boolean
  readonly firstWindowOverdue: boolean
  /** `stopsNow` held once: the node is on its way out, for good. */
  readonly stopping: boolean
}

/** The windows attached to this node. */
export class ChatWindows extends Context.Tag("peerchat/ChatWindows")<ChatWindows, {
  readonly stopsWithLastWindow: boolean
  /**
   * Attaches a window for as long as the scope is open (closing it detaches,
   * unless `detach` did already); refused once the node is stopping.
   */
  readonly attach: Effect.Effect<Attachment, NodeStopping, Scope.Scope>
  /** Whether the node has decided to stop (see `NodeStopping`). */
  readonly stopping: Effect.Effect<boolean>
  /** Detaches `window` now: how many remain and whether the node stops. An unknown id changes nothing. */
  readonly detach: (window: number) => Effect.Effect<DetachAnswer>
  /** Completes when the node should stop (never for a node that does not stop with its last window). */
  readonly lastWindowGone: Effect.Effect<void>
}>() {
  /**
   * The window count of a node; with `stopsWithLastWindow` (a node the chat
   * started), `lastWindowGone` completes by `stopsNow`'s rule.
   */
  static layer = (options: {
    readonly stopsWithLastWindow: boolean
    readonly firstWindowWithin?: Duration.DurationInput | undefined
  }): Layer.Layer<ChatWindows> =>
    Layer.scoped(
      ChatWindows,
      Effect.gen(function*() {
        const { stopsWithLastWindow } = options
        const state = yield* Ref.make<WindowsState>({
          attached: new Set(),
          nextId: 1,
          everAttached: false,
          firstWindowOverdue: false,
          stopping: false
        })
        const gone = yield* Deferred.make<void>()
        /**
         * Applies `change` and, if the node stops now, marks it stopping in the
         * same update (so no attach slips in between) and completes `gone`;
         * returns the count and whether the node is stopping.
         */
        const changeState = (change: (current: WindowsState) => WindowsState) =>
          Effect.flatMap(
            Ref.updateAndGet(state, (current) => {
              const changed = change(current)
              const stopsHere = stopsNow({
                stopsWithLastWindow,
                attached: changed.attached.size,
                everAttached: changed.everAttached,
                firstWindowOverdue: changed.firstWindowOverdue
              })
              return stopsHere && !changed.stopping ? { ...changed, stopping: true } : changed
            }),
            (next) => Effect.as(next.stopping ? Deferred.succeed(gone, undefined) : Effect.void, { next, stopping: next.stopping })
          )
        const remove = (window: number) =>
          changeState((current) => {
            if (!current.attached.has(window)) return current
            const attached = new Set(current.attached)
            attached.delete(window)
            return { ...current, attached }
          })
        if (stopsWithLastWindow) {
          yield* Effect.forkScoped(
            Effect.sleep(options.firstWindowWithin ?? FIRST_WINDOW_WITHIN).pipe(
              Effect.zipRight(changeState((current) => ({ ...current, firstWindowOverdue: true })))
            )
          )
        }
        return {
          stopsWithLastWindow,
          attach: Effect.acquireRelease(
            Effect.flatten(Ref.modify(state, (current): readonly [Effect.Effect<Attachment, NodeStopping>, WindowsState] => {
              if (current.stopping) return [Effect.fail(new NodeStopping()), current]
              const window = current.nextId
              const attached = new Set(current.attached).add(window)
              return [Effect.succeed({ window, windows: attached.size }), { ...current, attached, nextId: window + 1, everAttached: true }]
            })),
            ({ window }) => remove(window)
          ),
          stopping: Effect.map(Ref.get(state), (current) => current.stopping),
          detach: (window) => Effect.map(remove(window), ({ next, stopping }) => ({ windows: next.attached.size, stopping })),
          lastWindowGone: Deferred.await(gone)
        }
      })
    )
}
