/**
 * What the local user does with chat: send a message to a username, read a
 * conversation's history, list conversations with unread counts, and wait
 * for a message's delivery receipt. The implementation (`Delivery.ts`) puts
 * every message durably in the outbox before `send` returns and delivers it
 * in the background; this module is only the contract, which the control
 * API, the CLI and the terminal client program against.
 *
 * @since 0.1.0
 */
import { Context, type Duration, type Effect, Schema, type Stream } from "effect"
import type { InvalidRecipientKey, MessageTextMalformed, MessageTooLong } from "../core/Message.js"
import type { MessageEmpty } from "../core/MessageInput.js"
import { type InvalidUsername, Username } from "../core/Username.js"
import type { FingerprintMismatch, InvalidFingerprint, KeyChanged } from "../core/Pinning.js"
import type { NameConflict, NotConnected, UserNotFound } from "../node/Control.js"
import type {
  ConversationSummary,
  HistoryCursor,
  HistoryEntry,
  MessageId,
  OutboxFull,
  OutgoingStatus,
  StorageError
} from "./ChatStore.js"

/** Sending needs a registered username: messages are signed and answered under it. */
export class NotRegistered extends Schema.TaggedError<NotRegistered>()("NotRegistered", {}) {
  override get message(): string {
    return "this node has no username yet: register one first (peerchat register NAME)"
  }
}

/** A user cannot send a message to themself (there is nobody to deliver it to). */
export class SelfMessage extends Schema.TaggedError<SelfMessage>()("SelfMessage", {
  username: Username
}) {
  override get message(): string {
    return `"${this.username}" is you: pick another recipient`
  }
}

/** `awaitDelivery` named a message that is not an outgoing message of this node. */
export class UnknownMessage extends Schema.TaggedError<UnknownMessage>()("UnknownMessage", {
  id: Schema.String
}) {
  override get message(): string {
    return `no outgoing message with id ${this.id}`
  }
}

/** What `send` reports once the message is safely in the outbox. */
export interface SentMessageInfo {
  readonly id: MessageId
  readonly from: Username
  readonly to: Username
  readonly sequence: number
  readonly sentAt: number
  readonly status: OutgoingStatus
}

/** Something that happened to the local user's conversations (for live views). */
export type ChatEvent =
  /** A message arrived and was committed to the history. */
  | { readonly _tag: "Received"; readonly entry: HistoryEntry }
  /** An outgoing message moved forward (stored offline, delivered). */
  | {
    readonly _tag: "StatusChanged"
    readonly id: MessageId
    readonly conversation: Username
    readonly status: OutgoingStatus
    /** For a message this node delivered itself: straight to the recipient's node, or through a relay. */
    readonly via?: "direct" | "relay" | undefined
  }

/** Every failure `send` reports. */
export type SendError =
  | InvalidUsername
  | InvalidFingerprint
  | NotRegistered
  | SelfMessage
  | UserNotFound
  | NotConnected
  | NameConflict
  | KeyChanged
  | FingerprintMismatch
  | MessageTooLong
  | MessageTextMalformed
  | MessageEmpty
  | InvalidRecipientKey
  | OutboxFull
  | StorageError

/** The local user's chat. */
export class Messenger extends Context.Tag("peerchat/Messenger")<Messenger, {
  /**
   * Looks the recipient up, seals the message to them and commits it to the
   * history and the outbox (status "queued"); delivery continues in the
   * background. Returns once the message is durable.
   */
  readonly send: (to: string, text: string) => Effect.Effect<SentMessageInfo, SendError>
  /**
   * Waits until the message is delivered (a verified receipt arrived) or
   * `timeout` passes, and returns its status then ("queued" or
   * "stored-offline" after a timeout).
   */
  readonly awaitDelivery: (
    id: MessageId,
    timeout: Duration.DurationInput
  ) => Effect.Effect<OutgoingStatus, UnknownMessage | StorageError>
  /** The latest `limit` messages of the conversation with `name` before `before`, oldest first. */
  readonly history: (
    name: string,
    options?: { readonly limit?: number; readonly before?: HistoryCursor }
  ) => Effect.Effect<ReadonlyArray<HistoryEntry>, InvalidUsername | StorageError>
  /** Conversations, latest activity first, with their unread counts. */
  readonly inbox: Effect.Effect<ReadonlyArray<ConversationSummary>, StorageError>
  /** Marks a conversation read; returns how many messages were unread. */
  readonly markRead: (name: string) => Effect.Effect<number, InvalidUsername | StorageError>
  /** Events from now on (received messages, status changes); each subscriber has a bounded buffer and drops its oldest events when slow. */
  readonly events: Stream.Stream<ChatEvent>
}>() {}
