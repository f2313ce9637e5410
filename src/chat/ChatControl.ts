/**
 * The chat part of the loopback control API: the JSON documents of
 * `peerchat send`, `history` and `inbox` (request bodies, query strings,
 * answers) and the errors the chat routes answer with. Like
 * `src/node/Control.ts` it is shared by the server (`ControlServer.ts`) and
 * the client (`ControlClient.ts`), so the client decodes exactly what the
 * server encodes, and a `Messenger` error crosses the API as the same typed
 * error. The bounds here (body text left to the `Messenger`, history pages of
 * at most 1,000, delivery waits of at most 10 minutes) are the API's own.
 *
 * @since 0.1.0
 */
import { Duration, Schema } from "effect"
import { InvalidRecipientKey, MessageTextMalformed, MessageTooLong } from "../core/Message.js"
import { InvalidUsername, Username } from "../core/Username.js"
import { UserNotFound } from "../node/Control.js"
import { ConversationSummary, HistoryEntry, MessageId, OutboxFull, OutgoingStatus, StorageError, Timestamp } from "./ChatStore.js"
import { NotRegistered, SelfMessage, UnknownMessage } from "./Messenger.js"

/** Longest recipient name accepted in a request, in UTF-16 units (as `RegisterRequest`); longer input is no username. */
export const MAX_RECIPIENT_INPUT = 256

/** Messages a history page holds when the request names no limit. */
export const DEFAULT_HISTORY_LIMIT = 100

/** Most messages one history request returns (the chat store's page bound). */
export const MAX_HISTORY_LIMIT = 1000

/** Longest a single delivery wait may last; a longer wait is a malformed request. */
export const MAX_DELIVERY_WAIT: Duration.Duration = Duration.minutes(10)

/** Request body of `POST /v1/messages`. The text is checked by the `Messenger`, so its limits come back as typed errors. */
export const SendRequest = Schema.Struct({
  to: Schema.String.pipe(Schema.maxLength(MAX_RECIPIENT_INPUT)),
  text: Schema.String
})
/** @see SendRequest */
export type SendRequest = typeof SendRequest.Type

/** Answer of `POST /v1/messages`: the message is in the outbox (see `SentMessageInfo` in `Messenger.ts`). */
export const SentMessageAnswer = Schema.Struct({
  id: MessageId,
  from: Username,
  to: Username,
  sequence: Schema.NonNegativeInt,
  sentAt: Timestamp,
  status: OutgoingStatus
})
/** @see SentMessageAnswer */
export type SentMessageAnswer = typeof SentMessageAnswer.Type

/** A non-negative decimal integer in a query string, within [min, max]: digits only, no sign, exponent or spaces. */
const QueryInt = (min: number, max: number) =>
  Schema.compose(Schema.String.pipe(Schema.pattern(/^[0-9]{1,10}$/)), Schema.NumberFromString).pipe(
    Schema.int(),
    Schema.between(min, max)
  )

/** Query of `GET /v1/messages/:id/delivery`: how long to wait, in ms (default: the node's `deliveryWaitTimeout`). */
export const DeliveryQuery = Schema.Struct({
  timeoutMs: Schema.optional(QueryInt(0, Duration.toMillis(MAX_DELIVERY_WAIT)))
})
/** @see DeliveryQuery */
export type DeliveryQuery = typeof DeliveryQuery.Type

/** Answer of `GET /v1/messages/:id/delivery`: the message's status when it was delivered or the wait ended. */
export const DeliveryAnswer = Schema.Struct({ id: MessageId, status: OutgoingStatus })
/** @see DeliveryAnswer */
export type DeliveryAnswer = typeof DeliveryAnswer.Type

/** Query of `GET /v1/conversations/:name/messages`: the latest `limit` messages (default 100, at most 1,000). */
export const HistoryQuery = Schema.Struct({
  limit: Schema.optional(QueryInt(1, MAX_HISTORY_LIMIT))
})
/** @see HistoryQuery */
export type HistoryQuery = typeof HistoryQuery.Type

/** Answer of `GET /v1/conversations/:name/messages`: the entries, oldest first. */
export const HistoryAnswer = Schema.Array(HistoryEntry)

/** Answer of `GET /v1/conversations`: conversations, latest activity first, with unread counts. */
export const InboxAnswer = Schema.Array(ConversationSummary)

/** Answer of `POST /v1/conversations/:name/read`: how many messages were unread before. */
export const MarkReadAnswer = Schema.Struct({ unread: Schema.NonNegativeInt })
/** @see MarkReadAnswer */
export type MarkReadAnswer = typeof MarkReadAnswer.Type

/** The node runs without the chat layer, so the chat routes have nothing to answer with. */
export class ChatUnavailable extends Schema.TaggedError<ChatUnavailable>()("ChatUnavailable", {}) {
  override get message(): string {
    return "chat is not running on this node"
  }
}

/** Errors of `POST /v1/messages` (everything `Messenger.send` reports, or no chat). */
export const SendErrors = Schema.Union(
  InvalidUsername,
  NotRegistered,
  SelfMessage,
  UserNotFound,
  MessageTooLong,
  MessageTextMalformed,
  InvalidRecipientKey,
  OutboxFull,
  StorageError,
  ChatUnavailable
)
/** @see SendErrors */
export type SendErrors = typeof SendErrors.Type

/** Every error a chat route can answer with. */
export const ChatControlError = Schema.Union(...SendErrors.members, UnknownMessage)
/** @see ChatControlError */
export type ChatControlError = typeof ChatControlError.Type

/** Errors of `GET /v1/messages/:id/delivery`. */
export const DeliveryErrors = Schema.Union(UnknownMessage, StorageError, ChatUnavailable)
/** @see DeliveryErrors */
export type DeliveryErrors = typeof DeliveryErrors.Type

/** Errors of the routes that name a conversation (history, mark read). */
export const ConversationErrors = Schema.Union(InvalidUsername, StorageError, ChatUnavailable)
/** @see ConversationErrors */
export type ConversationErrors = typeof ConversationErrors.Type

/** Errors of `GET /v1/conversations`. */
export const InboxErrors = Schema.Union(StorageError, ChatUnavailable)
/** @see InboxErrors */
export type InboxErrors = typeof InboxErrors.Type
