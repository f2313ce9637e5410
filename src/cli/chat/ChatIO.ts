/**
 * The terminal chat's one seam to its node: the calls it makes (status,
 * peers, whois, register, send, history, inbox, mark read) and the event
 * stream it follows, each failing only with a `ChatFailure` that carries a
 * one-line message fit to show a person. `fromControlClient` implements it
 * over the loopback control API; tests implement it in memory.
 */
import { Effect, Schema, type Scope, Stream } from "effect"
import type { ConversationSummary, HistoryCursor, HistoryEntry } from "../../chat/ChatStore.js"
import type { ChatEvent, SentMessageInfo } from "../../chat/Messenger.js"
import type { NodeStatus, PeerEntry, WhoisAnswer } from "../../node/Control.js"
import type { ControlClient } from "../../platform/ControlClient.js"

/** A call to the node failed; `message` says why in one line. */
export class ChatFailure extends Schema.TaggedError<ChatFailure>()("ChatFailure", {
  /** `UserNotFound` when the network has no live record of the user asked about. */
  kind: Schema.Literal("UserNotFound", "Other"),
  message: Schema.String
}) {}

/** What the chat asks of its node. */
export interface ChatIO {
  readonly status: Effect.Effect<NodeStatus, ChatFailure>
  readonly peers: Effect.Effect<ReadonlyArray<PeerEntry>, ChatFailure>
  readonly whois: (name: string) => Effect.Effect<WhoisAnswer, ChatFailure>
  readonly register: (name: string) => Effect.Effect<WhoisAnswer, ChatFailure>
  readonly send: (to: string, text: string) => Effect.Effect<SentMessageInfo, ChatFailure>
  readonly history: (
    name: string,
    options: { readonly limit: number; readonly before: HistoryCursor | null }
  ) => Effect.Effect<ReadonlyArray<HistoryEntry>, ChatFailure>
  readonly inbox: Effect.Effect<ReadonlyArray<ConversationSummary>, ChatFailure>
  readonly markRead: (name: string) => Effect.Effect<number, ChatFailure>
  /** Opens the event stream; succeeds once the node accepted it (see `ControlClient.events`). */
  readonly events: Effect.Effect<Stream.Stream<ChatEvent, ChatFailure>, ChatFailure, Scope.Scope>
}

/** The one line a person sees for any error the control client reports. */
const failure = (error: { readonly _tag: string; readonly message: string }): ChatFailure =>
  new ChatFailure({
    kind: error._tag === "UserNotFound" ? "UserNotFound" : "Other",
    // Messages are single lines already; a multi-line one is cut so it cannot flood the notice line.
    message: error._tag === "NodeNotRunning"
      ? "your node is not running any more (it was stopped?): restart peerchat"
      : error.message.split("\n")[0] ?? error._tag
  })

const friendly = <A, E extends { readonly _tag: string; readonly message: string }, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, ChatFailure, R> => Effect.mapError(effect, failure)

/** The chat's I/O over a control client of the node. */
export const fromControlClient = (client: ControlClient): ChatIO => ({
  status: friendly(client.status),
  peers: friendly(client.peers),
  whois: (name) => friendly(client.whois(name)),
  register: (name) => friendly(client.register(name)),
  send: (to, text) => friendly(client.send(to, text)),
  history: (name, options) =>
    friendly(client.history(name, { limit: options.limit, ...(options.before === null ? {} : { before: options.before }) })),
  inbox: friendly(client.inbox),
  markRead: (name) => friendly(client.markRead(name)),
  events: Effect.map(friendly(client.events), (stream) => Stream.mapError(stream, failure))
})
