/**
 * The chat part of the loopback control API: the JSON documents of
 * `peerchat send`, `history` and `inbox` (request bodies, query strings,
 * answers), of `id`, `contacts`, `verify` and `trust` (the user's own
 * fingerprint and the keys pinned for contacts), the lines of the event
 * stream the terminal chat follows, and the errors the chat routes answer
 * with. Like
 * `src/node/Control.ts` it is shared by the server (`ControlServer.ts`) and
 * the client (`ControlClient.ts`), so the client decodes exactly what the
 * server encodes, and a `Messenger` error crosses the API as the same typed
 * error. The bounds here (body text left to the `Messenger`, history pages of
 * at most 1,000, delivery waits of at most 10 minutes, at most 8 event streams)
 * are the API's own.
 *
 * @since 0.1.0
 */
import { Duration, ParseResult, Schema } from "effect"
import { InvalidRecipientKey, MessageTextMalformed, MessageTooLong } from "../core/Message.js"
import { MessageEmpty } from "../core/MessageInput.js"
import { InvalidUsername, Username } from "../core/Username.js"
import {
  type ContactPin,
  FingerprintMismatch,
  formatFingerprint,
  InvalidFingerprint,
  KeyChanged,
  PinSource
} from "../core/Pinning.js"
import { PublicKeyHex } from "../core/UserRecord.js"
import { NameConflict, NotConnected, UserNotFound } from "../node/Control.js"
import {
  ConversationSummary,
  type HistoryCursor,
  HistoryEntry,
  MESSAGE_ID_MAX_LENGTH,
  MessageId,
  OutboxFull,
  OutgoingStatus,
  PinsFull,
  StorageError,
  Timestamp
} from "./ChatStore.js"
import { NotRegistered, SelfMessage, UnknownMessage } from "./Messenger.js"
import { DEFAULT_EVENT_HEARTBEAT, MAX_DELIVERY_WAIT, MAX_HISTORY_LIMIT } from "./ControlLimits.js"

/** Longest recipient name accepted in a request, in UTF-16 units (as `RegisterRequest`); longer input is no username. */
export const MAX_RECIPIENT_INPUT = 256

/** Messages a history page holds when the request names no limit. */
export const DEFAULT_HISTORY_LIMIT = 100

// The bounds the command line checks before any call live apart (`ControlLimits.ts`), so it reads them without these schemas.
export { DEFAULT_EVENT_HEARTBEAT, MAX_DELIVERY_WAIT, MAX_HISTORY_LIMIT }

/**
 * Request body of `POST /v1/messages`. The text is checked by the `Messenger`
 * (core `parseOutgoingText`), so a blank text (`MessageEmpty`) and the limits
 * come back as typed errors rather than as a malformed request.
 */
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

/** A history cursor as one query parameter: `sentAt-sequence-id` (see `formatHistoryCursor`). */
const HISTORY_CURSOR_PATTERN = new RegExp(`^([0-9]{1,15})-([0-9]{1,15})-(.{1,${MESSAGE_ID_MAX_LENGTH}})$`, "s")

/** Writes the position of `entry` (or any cursor) as the `before` query parameter of the history route. */
export const formatHistoryCursor = (cursor: Omit<HistoryCursor, "id"> & { readonly id: string }): string => `${cursor.sentAt}-${cursor.sequence}-${cursor.id}`

/** The `before` query parameter: `sentAt-sequence-id`, decimal integers and a message id. */
export const HistoryCursorParam = Schema.transformOrFail(
  Schema.String.pipe(Schema.pattern(HISTORY_CURSOR_PATTERN, {
    message: () => "expected sentAt-sequence-id, as formatHistoryCursor writes it"
  })),
  Schema.Struct({ sentAt: Timestamp, sequence: Schema.NonNegativeInt, id: MessageId }),
  {
    strict: true,
    decode: (text, _options, ast) => {
      const match = HISTORY_CURSOR_PATTERN.exec(text)
      const [, sentAt = "", sequence = "", id = ""] = match ?? []
      return match === null
        ? ParseResult.fail(new ParseResult.Type(ast, text, "expected sentAt-sequence-id"))
        : ParseResult.succeed({ sentAt: Number(sentAt), sequence: Number(sequence), id })
    },
    encode: (cursor) => ParseResult.succeed(formatHistoryCursor(cursor))
  }
)

/**
 * Query of `GET /v1/conversations/:name/messages`: the latest `limit` messages
 * (default 100, at most 1,000), or with `before`, the latest ones strictly
 * older than that cursor, for paging back through a long conversation.
 */
export const HistoryQuery = Schema.Struct({
  limit: Schema.optional(QueryInt(1, MAX_HISTORY_LIMIT)),
  before: Schema.optional(HistoryCursorParam)
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

/**
 * One line of `GET /v1/events` (newline-delimited JSON): a `ChatEvent` of the
 * `Messenger` (a message arrived, an outgoing message moved forward), or a
 * `Heartbeat` the server writes while nothing happens, so the client can tell
 * a quiet node from a dead connection.
 */
export const ChatEventLine = Schema.Union(
  Schema.TaggedStruct("Received", { entry: HistoryEntry }),
  Schema.TaggedStruct("StatusChanged", {
    id: MessageId,
    conversation: Username,
    status: OutgoingStatus,
    /** For a message delivered by this node's call: straight to the recipient's node, or through a relay (a NAT'd recipient). */
    via: Schema.optional(Schema.Literal("direct", "relay"))
  }),
  Schema.TaggedStruct("Heartbeat", {})
)
/** @see ChatEventLine */
export type ChatEventLine = typeof ChatEventLine.Type

/** Most `GET /v1/events` streams open at once; one more is refused (503) rather than queued. */
export const MAX_EVENT_STREAMS = 8

/** The node runs without the chat layer, so the chat routes have nothing to answer with. */
export class ChatUnavailable extends Schema.TaggedError<ChatUnavailable>()("ChatUnavailable", {}) {
  override get message(): string {
    return "chat is not running on this node"
  }
}

/** Errors of `POST /v1/messages` (everything `Messenger.send` reports, or no chat). */
export const SendErrors = Schema.Union(
  InvalidUsername,
  InvalidFingerprint,
  NotRegistered,
  SelfMessage,
  UserNotFound,
  NotConnected,
  NameConflict,
  KeyChanged,
  FingerprintMismatch,
  MessageTooLong,
  MessageTextMalformed,
  MessageEmpty,
  InvalidRecipientKey,
  OutboxFull,
  StorageError,
  ChatUnavailable
)
/** @see SendErrors */
export type SendErrors = typeof SendErrors.Type

/** Every error a chat route can answer with. */
export const ChatControlError = Schema.Union(...SendErrors.members, UnknownMessage, PinsFull)
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

// ---------------------------------------------------------------------------
// Identity and contacts: `peerchat id`, `contacts`, `verify`, `trust`
// ---------------------------------------------------------------------------

/** A key fingerprint as people read and type it: 8 groups of 4 lower-case hex digits joined by dashes. */
export const DisplayFingerprint = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{4}(-[0-9a-f]{4}){7}$/, { message: () => "expected a fingerprint as 8 groups of 4 hex digits" })
)

/** A safety number as people compare it: 60 digits in 12 groups of 5, separated by spaces. */
export const DisplaySafetyNumber = Schema.String.pipe(
  Schema.pattern(/^[0-9]{5}( [0-9]{5}){11}$/, { message: () => "expected a safety number as 12 groups of 5 digits" })
)

/** Answer of `GET /v1/id`: how others name this user exactly. */
export const IdentityAnswer = Schema.Struct({
  /** The registered name; null before `register`. */
  username: Schema.NullOr(Username),
  /** The fingerprint of this user's signing key. */
  fingerprint: DisplayFingerprint,
  /** `name@fingerprint`, what others type to name exactly this user; null before `register`. */
  nameRef: Schema.NullOr(Schema.String)
})
/** @see IdentityAnswer */
export type IdentityAnswer = typeof IdentityAnswer.Type

/** One contact's pinned key, as the control API shows it (the fingerprint grouped, as people type it). */
export const PinnedContact = Schema.Struct({
  username: Username,
  fingerprint: DisplayFingerprint,
  signingKey: PublicKeyHex,
  /** When the key was pinned, ms since the Unix epoch (this node's clock). */
  pinnedAt: Schema.NonNegativeInt,
  /** "first-use" (pinned at the first exchange), "verified" (safety numbers compared), "trusted" (chosen on purpose). */
  source: PinSource
})
/** @see PinnedContact */
export type PinnedContact = typeof PinnedContact.Type

/** The control API's form of a stored pin. */
export const pinnedContactOf = (pin: ContactPin): PinnedContact => ({
  username: pin.username,
  fingerprint: formatFingerprint(pin.fingerprint),
  signingKey: pin.signingKey,
  pinnedAt: pin.pinnedAt,
  source: pin.source
})

/** Answer of `GET /v1/contacts`: every pinned contact, by name. */
export const ContactsAnswer = Schema.Array(PinnedContact)

/** Request body of `POST /v1/contacts/verify`: `name` or `name@fingerprint`; `confirm` records that the numbers matched. */
export const VerifyRequest = Schema.Struct({
  name: Schema.String.pipe(Schema.maxLength(MAX_RECIPIENT_INPUT)),
  confirm: Schema.Boolean
})
/** @see VerifyRequest */
export type VerifyRequest = typeof VerifyRequest.Type

/** One side of a safety number. */
export const VerifyParty = Schema.Struct({ username: Username, fingerprint: DisplayFingerprint })
/** @see VerifyParty */
export type VerifyParty = typeof VerifyParty.Type

/**
 * Answer of `POST /v1/contacts/verify`: both parties, and the safety number
 * they compare over another channel (the same on both sides when neither
 * sees an impostor's key).
 */
export const VerifyAnswer = Schema.Struct({
  /** This user. */
  you: VerifyParty,
  /** The contact: their pinned key, or the one named or found now when none is pinned. */
  contact: VerifyParty,
  safetyNumber: DisplaySafetyNumber,
  /** The contact's pin after the request (null: no key is pinned for them yet). */
  pin: Schema.NullOr(PinnedContact),
  /** The request recorded the key as verified. */
  confirmed: Schema.Boolean
})
/** @see VerifyAnswer */
export type VerifyAnswer = typeof VerifyAnswer.Type

/** Request body of `POST /v1/contacts/trust`: accept the key with `fingerprint` for `name`, on purpose. */
export const TrustRequest = Schema.Struct({
  name: Schema.String.pipe(Schema.maxLength(MAX_RECIPIENT_INPUT)),
  fingerprint: Schema.String.pipe(Schema.maxLength(MAX_RECIPIENT_INPUT))
})
/** @see TrustRequest */
export type TrustRequest = typeof TrustRequest.Type

/** Answer of `POST /v1/contacts/trust`: the new pin, and the one it replaced. */
export const TrustAnswer = Schema.Struct({
  pin: PinnedContact,
  /** The pin before (null: no key was pinned for the name). */
  previous: Schema.NullOr(PinnedContact)
})
/** @see TrustAnswer */
export type TrustAnswer = typeof TrustAnswer.Type

/** Errors of `GET /v1/id`. */
export const IdErrors = Schema.Union(ChatUnavailable)
/** @see IdErrors */
export type IdErrors = typeof IdErrors.Type

/** Errors of `GET /v1/contacts`. */
export const ContactsErrors = Schema.Union(StorageError, ChatUnavailable)
/** @see ContactsErrors */
export type ContactsErrors = typeof ContactsErrors.Type

/** Errors of `POST /v1/contacts/trust` (everything `Contacts.trust` reports, or no chat). */
export const TrustErrors = Schema.Union(
  InvalidUsername,
  InvalidFingerprint,
  UserNotFound,
  NameConflict,
  NotConnected,
  KeyChanged,
  FingerprintMismatch,
  StorageError,
  PinsFull,
  ChatUnavailable
)
/** @see TrustErrors */
export type TrustErrors = typeof TrustErrors.Type

/** Errors of `POST /v1/contacts/verify` (everything `Contacts.verify` reports, or no chat). */
export const VerifyErrors = Schema.Union(...TrustErrors.members, NotRegistered)
/** @see VerifyErrors */
export type VerifyErrors = typeof VerifyErrors.Type
