/**
 * The terminal chat's one seam to its node: the calls it makes (status,
 * peers, whois, register, send, history, inbox, mark read, id, verify) and
 * the event stream it follows, each failing only with a `ChatFailure` that
 * carries a one-line message fit to show a person, the kind of failure the
 * chat explains in its own words (a user not found, a node without peers, a
 * name several keys claim, a contact whose key changed), and for the last
 * ones the details to choose or check with. `fromControlClient` implements
 * it over the loopback control API; tests implement it in memory.
 */
import { Effect, Schema, type Scope, Stream } from "effect"
import type { IdentityAnswer, VerifyAnswer } from "../../chat/ChatControl.js"
import type { ConversationSummary, HistoryCursor, HistoryEntry } from "../../chat/ChatStore.js"
import type { ChatEvent, SentMessageInfo } from "../../chat/Messenger.js"
import { FingerprintMismatch, formatFingerprint, KeyChanged } from "../../core/Pinning.js"
import { NameConflict, type NodeStatus, type PeerEntry, type WhoisAnswer } from "../../node/Control.js"
import type { ControlClient } from "../../platform/ControlClient.js"

/**
 * What went wrong, as far as the chat explains it differently:
 * `UserNotFound` (the network has no live record of the name),
 * `NotConnected` (no peer answered, so nobody can be looked up),
 * `NameConflict` (several keys claim the name), `KeyChanged` (the name now
 * resolves to another key than the pinned one), `FingerprintMismatch` (the
 * name resolves to another key than the `name@fingerprint` typed), `Other`.
 */
export const FailureKind = Schema.Literal("UserNotFound", "NotConnected", "NameConflict", "KeyChanged", "FingerprintMismatch", "Other")
/** @see FailureKind */
export type FailureKind = typeof FailureKind.Type

/** One key that claims a name in a conflict: how to name it, where it is, how many of the name's nodes hold it. */
export const ConflictChoice = Schema.Struct({
  /** `name@fingerprint`, what to type to mean exactly this key. */
  ref: Schema.String,
  address: Schema.String,
  holders: Schema.Number
})
/** @see ConflictChoice */
export type ConflictChoice = typeof ConflictChoice.Type

/** The details the chat shows for a conflict, a changed key or a fingerprint mismatch (fingerprints grouped). */
export const FailureDetail = Schema.Union(
  Schema.TaggedStruct("NameConflict", { username: Schema.String, choices: Schema.Array(ConflictChoice) }),
  Schema.TaggedStruct("KeyChanged", { username: Schema.String, pinned: Schema.String, found: Schema.String }),
  Schema.TaggedStruct("FingerprintMismatch", { username: Schema.String, requested: Schema.String, actual: Schema.String })
)
/** @see FailureDetail */
export type FailureDetail = typeof FailureDetail.Type

/** A call to the node failed; `message` says why in one line. */
export class ChatFailure extends Schema.TaggedError<ChatFailure>()("ChatFailure", {
  kind: FailureKind,
  message: Schema.String,
  detail: Schema.optional(FailureDetail)
}) {}

/** What the chat asks of its node. */
export interface ChatIO {
  readonly status: Effect.Effect<NodeStatus, ChatFailure>
  readonly peers: Effect.Effect<ReadonlyArray<PeerEntry>, ChatFailure>
  /** `name` or `name@fingerprint`. */
  readonly whois: (name: string) => Effect.Effect<WhoisAnswer, ChatFailure>
  readonly register: (name: string) => Effect.Effect<WhoisAnswer, ChatFailure>
  /** To `name` or `name@fingerprint`. */
  readonly send: (to: string, text: string) => Effect.Effect<SentMessageInfo, ChatFailure>
  readonly history: (
    name: string,
    options: { readonly limit: number; readonly before: HistoryCursor | null }
  ) => Effect.Effect<ReadonlyArray<HistoryEntry>, ChatFailure>
  readonly inbox: Effect.Effect<ReadonlyArray<ConversationSummary>, ChatFailure>
  readonly markRead: (name: string) => Effect.Effect<number, ChatFailure>
  /** Opens the event stream; succeeds once the node accepted it (see `ControlClient.events`). */
  readonly events: Effect.Effect<Stream.Stream<ChatEvent, ChatFailure>, ChatFailure, Scope.Scope>
  /** This user's name and fingerprint. */
  readonly id: Effect.Effect<IdentityAnswer, ChatFailure>
  /** The safety number with `name` (or `name@fingerprint`); with `confirm`, records that it matched. */
  readonly verify: (name: string, confirm: boolean) => Effect.Effect<VerifyAnswer, ChatFailure>
}

const KINDS: ReadonlySet<string> = new Set(FailureKind.literals)

const isKind = (tag: string): tag is FailureKind => KINDS.has(tag)

/** The details of the errors that have some. */
const detailOf = (error: unknown): FailureDetail | undefined => {
  if (error instanceof NameConflict) {
    return {
      _tag: "NameConflict",
      username: error.username,
      choices: error.claimants.map((claimant) => ({
        ref: `${error.username}@${claimant.fingerprint}`,
        address: claimant.address,
        holders: claimant.holders
      }))
    }
  }
  if (error instanceof KeyChanged) {
    return {
      _tag: "KeyChanged",
      username: error.username,
      pinned: formatFingerprint(error.pinnedFingerprint),
      found: formatFingerprint(error.newFingerprint)
    }
  }
  if (error instanceof FingerprintMismatch) {
    return {
      _tag: "FingerprintMismatch",
      username: error.username,
      requested: formatFingerprint(error.requested),
      actual: formatFingerprint(error.actual)
    }
  }
  return undefined
}

/** The one line a person sees for any error the control client reports, with its kind and details. */
export const failureOf = (error: { readonly _tag: string; readonly message: string }): ChatFailure => {
  const detail = detailOf(error)
  return new ChatFailure({
    kind: isKind(error._tag) ? error._tag : "Other",
    // Messages are single lines already; a multi-line one is cut so it cannot flood the notice line.
    message: error._tag === "NodeNotRunning"
      ? "your node is not running any more (it was stopped?): restart peerchat"
      : error.message.split("\n")[0] ?? error._tag,
    ...(detail === undefined ? {} : { detail })
  })
}

const friendly = <A, E extends { readonly _tag: string; readonly message: string }, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, ChatFailure, R> => Effect.mapError(effect, failureOf)

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
  events: Effect.map(friendly(client.events), (stream) => Stream.mapError(stream, failureOf)),
  id: friendly(client.id),
  verify: (name, confirm) => friendly(client.verify(name, confirm))
})
