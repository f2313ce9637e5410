/**
 * The durable state of the chat layer behind one storage seam: the message
 * history per conversation, the outbox of messages still to deliver, the
 * relay mailboxes this node holds for offline users, the seen-id memory used
 * for deduplication, the DHT records this node stores, a snapshot of the
 * routing table and the signing keys pinned for contacts (trust on first
 * use, `src/core/Pinning.ts`). Every write that belongs together happens in one
 * transaction (sending a message allocates its sequence, lets the caller seal
 * the envelope with it, then writes the history entry and the outbox row at
 * once), every collection is bounded by `ChatStoreConfig` and refuses loudly
 * with a typed error instead of dropping data, and every method returns an
 * Effect failing only with a member of `ChatStoreError`. Time is always an
 * argument (`now`, ms since the epoch), so the store never reads a clock.
 * This module holds the Tag, the value schemas, the errors and the in-memory
 * layer used by simulations; the SQLite layer for real nodes lives in
 * `src/platform/SqliteChatStore.ts`, and both pass the same contract suite
 * (`test/chat/ChatStoreContract.ts`).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import { Key, NodeId } from "../core/Id.js"
import { MessageId } from "../core/Message.js"
import { OutboxFull } from "../core/Outbox.js"
import { Port } from "../core/Contact.js"
import { type ContactPin, isContactPin } from "../core/Pinning.js"
import {
  describeMailQuota,
  largestHolder,
  MAX_EVICTIONS_PER_MAIL,
  type MailboxHolder,
  type MailboxLimits,
  mailboxPlaceFor,
  type MailHeld,
  mailboxQuotaBroken,
  type MailUsage
} from "../core/StorageQuota.js"
import { Username } from "../core/Username.js"
import { countDown } from "../core/KeyCounts.js"

export { OutboxFull }

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/** Milliseconds since the epoch, an integer (what `Clock.currentTimeMillis` gives). */
export const Timestamp = Schema.Int
/** @see Timestamp */
export type Timestamp = typeof Timestamp.Type

/** Length of a message id in characters: the hex SHA-256 of its envelope (`MessageId`). */
export const MESSAGE_ID_MAX_LENGTH = 64

/**
 * A message id: the hex SHA-256 of its sealed envelope (`envelopeId`), or
 * of a receipt mail (`mailId` in `src/core/Mail.ts`), so the store holds
 * the same branded 64-hex id the protocol does; an outgoing id is only
 * known once `send`'s builder has sealed the envelope.
 */
export { MessageId }

/** Whether a history entry was received ("in") or sent by the local user ("out"). */
export const Direction = Schema.Literal("in", "out")
/** @see Direction */
export type Direction = typeof Direction.Type

/**
 * Where an outgoing message is: "queued" (in the outbox), "stored-offline"
 * (handed to relays for an offline recipient), "delivered" (the recipient
 * has it). Statuses only move forward in that order.
 */
export const OutgoingStatus = Schema.Literal("queued", "stored-offline", "delivered")
/** @see OutgoingStatus */
export type OutgoingStatus = typeof OutgoingStatus.Type

/** The status of a history entry: an outgoing status, or "received" for every incoming message. */
export const MessageStatus = Schema.Literal("queued", "stored-offline", "delivered", "received")
/** @see MessageStatus */
export type MessageStatus = typeof MessageStatus.Type

/** A status that ends delivery attempts (see `complete`). */
export type CompletedStatus = Exclude<OutgoingStatus, "queued">

/**
 * One message of the history. `conversation` is the other user's username
 * (`from` for incoming, `to` for outgoing); `sequence` is the sender's
 * per-conversation counter; `receivedAt` is set on incoming messages only;
 * outgoing messages are always `read`.
 */
export const HistoryEntry = Schema.Struct({
  id: MessageId,
  conversation: Username,
  direction: Direction,
  from: Username,
  to: Username,
  sequence: Schema.NonNegativeInt,
  sentAt: Timestamp,
  text: Schema.String,
  status: MessageStatus,
  receivedAt: Schema.optional(Timestamp),
  read: Schema.Boolean
})
/** @see HistoryEntry */
export type HistoryEntry = typeof HistoryEntry.Type

/** A message received from another user, as `recordReceived` takes it (its conversation is `from`). */
export interface IncomingMessage {
  readonly id: MessageId
  readonly from: Username
  readonly to: Username
  readonly sequence: number
  readonly sentAt: Timestamp
  readonly text: string
  readonly receivedAt: Timestamp
}

/**
 * A message the local user sends, as `send` takes it: everything but the
 * sequence, which `send` allocates, and the id, which the builder derives
 * from the envelope sealed with that sequence. Its conversation is `to`.
 */
export interface OutgoingDraft {
  readonly from: Username
  readonly to: Username
  readonly sentAt: Timestamp
  readonly text: string
}

/** What `send`'s builder returns for the sequence it was given: the envelope JSON to deliver and the id it names. */
export interface SealedEnvelope<Id extends MessageId = MessageId> {
  readonly id: Id
  readonly envelope: string
}

/** What `send` stored: the builder's id and the sequence allocated to the message. */
export interface SentMessage<Id extends MessageId = MessageId> {
  readonly id: Id
  readonly sequence: number
}

/**
 * A position in a conversation's history, which is ordered by
 * (sentAt, sequence, id). Any `HistoryEntry` is a cursor.
 */
export interface HistoryCursor {
  readonly sentAt: Timestamp
  readonly sequence: number
  readonly id: MessageId
}

/** A page request for `history`: at most `limit` entries (clamped to `maxPageSize`), strictly before `before`. */
export interface HistoryPage {
  readonly limit: number
  readonly before?: HistoryCursor
}

/** One line of the conversation list. `lastAt` is the local time of the latest activity (see `conversations`). */
export const ConversationSummary = Schema.Struct({
  conversation: Username,
  lastAt: Timestamp,
  unread: Schema.NonNegativeInt
})
/** @see ConversationSummary */
export type ConversationSummary = typeof ConversationSummary.Type

/** A message waiting in the outbox: the envelope to send, and when and how often it was tried. */
export const OutboxEntry = Schema.Struct({
  id: MessageId,
  recipient: Username,
  sequence: Schema.NonNegativeInt,
  envelopeJson: Schema.String,
  enqueuedAt: Timestamp,
  nextAttemptAt: Timestamp,
  attempts: Schema.NonNegativeInt
})
/** @see OutboxEntry */
export type OutboxEntry = typeof OutboxEntry.Type

/** A message this node holds as a relay for an offline recipient, identified by the recipient's user key. */
export const MailItem = Schema.Struct({
  id: MessageId,
  recipientKey: Key,
  envelopeJson: Schema.String,
  /** Size in bytes as counted against the mailbox quotas (the caller measures the envelope). */
  size: Schema.NonNegativeInt,
  storedAt: Timestamp,
  /** When the relay drops it (at most `fullExpiresAt`; shorter while nobody holds the recipient's name). */
  expiresAt: Timestamp,
  /** Set once by `markForwarded`; a relay never forwards the same mail twice. */
  forwarded: Schema.Boolean,
  /** Who is counted for it in the per-sender quotas (the postage's signing key); "" for nobody. */
  senderKey: Schema.String,
  /** Where it came from for the per-source quotas (the caller's address); "" when not counted per source. */
  source: Schema.String,
  /** The postage it arrived with, as JSON (passed on by re-replication); "" when it had none. */
  postageJson: Schema.String,
  /** The expiry `extendMail` gives it back once its recipient is known (at least `expiresAt`). */
  fullExpiresAt: Timestamp
})
/** @see MailItem */
export type MailItem = typeof MailItem.Type

/**
 * Mail as `storeMail` takes it (not yet forwarded). Without a sender key or
 * a source it is counted in neither's share; without `fullExpiresAt` its
 * full expiry is `expiresAt`.
 */
export type NewMail =
  & Omit<MailItem, "forwarded" | "senderKey" | "source" | "postageJson" | "fullExpiresAt">
  & Partial<Pick<MailItem, "senderKey" | "source" | "postageJson" | "fullExpiresAt">>

/** A new mail with its optional fields filled in, as the stores hold it. */
export const heldMail = (mail: NewMail): MailItem => ({
  id: mail.id,
  recipientKey: mail.recipientKey,
  envelopeJson: mail.envelopeJson,
  size: mail.size,
  storedAt: mail.storedAt,
  expiresAt: mail.expiresAt,
  forwarded: false,
  senderKey: mail.senderKey ?? "",
  source: mail.source ?? "",
  postageJson: mail.postageJson ?? "",
  fullExpiresAt: Math.max(mail.expiresAt, mail.fullExpiresAt ?? mail.expiresAt)
})

/** A DHT record held for the network: its key, its JSON and when it stops being served. */
export const StoredRecord = Schema.Struct({
  key: Key,
  recordJson: Schema.String,
  expiresAt: Timestamp
})
/** @see StoredRecord */
export type StoredRecord = typeof StoredRecord.Type

/** One contact of the routing-table snapshot, restored at start-up to rejoin without bootstrap. */
export const SnapshotContact = Schema.Struct({
  nodeId: NodeId,
  host: Schema.String,
  port: Port,
  lastSeen: Timestamp
})
/** @see SnapshotContact */
export type SnapshotContact = typeof SnapshotContact.Type

/** How many things the store holds, for status output and tests. */
export interface ChatStoreStats {
  readonly messages: number
  readonly conversations: number
  readonly outbox: number
  readonly mail: number
  readonly mailBytes: number
  readonly seen: number
  readonly records: number
  readonly snapshotContacts: number
  readonly pins: number
}

/** Whether a write stored something new or found it already there (and changed nothing). */
export type Stored = "new" | "duplicate"

/** What `recordReceived` did: as `Stored`, or nothing because the conversation holds its most unread messages. */
export type Received = Stored | "full"

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** The storage itself failed: it could not be opened or migrated, a query failed, or a stored row does not decode. */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  operation: Schema.String,
  reason: Schema.Literal(
    /** The database could not be opened or configured. */
    "Unavailable",
    /** The schema migrations failed. */
    "MigrationFailed",
    /** A statement failed (disk full, I/O error, constraint). */
    "QueryFailed",
    /** A stored row does not decode: the file was damaged or edited. */
    "CorruptRow"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    return `chat store ${this.operation}: ${this.reason}: ${this.detail}`
  }
}

/** The id names nothing of the kind the operation needs. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  kind: Schema.Literal("OutgoingMessage", "OutboxEntry", "Mail"),
  id: Schema.String
}) {
  override get message(): string {
    switch (this.kind) {
      case "OutgoingMessage":
        return `no outgoing message with id ${JSON.stringify(this.id)}`
      case "OutboxEntry":
        return `no message with id ${JSON.stringify(this.id)} is waiting in the outbox`
      case "Mail":
        return `no mail with id ${JSON.stringify(this.id)} is held here`
    }
  }
}

/** `send`'s builder named the message with an id the history already holds. */
export class DuplicateMessage extends Schema.TaggedError<DuplicateMessage>()("DuplicateMessage", {
  id: Schema.String
}) {
  override get message(): string {
    return `a message with id ${JSON.stringify(this.id)} is already stored`
  }
}

/** A relay mailbox quota refused new mail; nothing was stored. */
export class MailboxFull extends Schema.TaggedError<MailboxFull>()("MailboxFull", {
  recipientKey: Schema.String,
  /**
   * Which quota (core `StorageQuota`): the recipient's own mailbox, all
   * mailboxes together, or the share one sender key ("sender",
   * "senderTotal") or one source address ("source", "sourceTotal") may hold
   * of the mailbox or of the total.
   */
  scope: Schema.Literal("recipient", "total", "sender", "source", "senderTotal", "sourceTotal"),
  /** Which quota: the number of messages or their bytes. */
  measure: Schema.Literal("messages", "bytes"),
  limit: Schema.Number
}) {
  override get message(): string {
    return `mailbox refused mail for ${this.recipientKey.slice(0, 16)}…: ${describeMailQuota(this)}`
  }
}

/** The DHT record store is full; a new key was refused (existing keys can still be updated). */
export class RecordsFull extends Schema.TaggedError<RecordsFull>()("RecordsFull", {
  limit: Schema.Number
}) {
  override get message(): string {
    return `record store refused a new key: it already holds ${this.limit} records`
  }
}

/** The pin store is full; a key for a new contact was not pinned (existing pins can still be replaced). */
export class PinsFull extends Schema.TaggedError<PinsFull>()("PinsFull", {
  username: Username,
  limit: Schema.Number
}) {
  override get message(): string {
    return `could not pin the key of ${this.username}: ${this.limit} contacts' keys are pinned already, the most this store keeps`
  }
}

/** Every failure a chat store reports; each method names the members it can fail with. */
export const ChatStoreError = Schema.Union(
  StorageError,
  NotFound,
  DuplicateMessage,
  OutboxFull,
  MailboxFull,
  RecordsFull,
  PinsFull
)
/** @see ChatStoreError */
export type ChatStoreError = typeof ChatStoreError.Type

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/** The bounds of a chat store (the mailbox ones are core `MailboxLimits`); see `ChatStoreConfig.defaults` for the values. */
export interface ChatStoreConfigShape extends MailboxLimits {
  /** Most outbox entries pending for one recipient. */
  readonly outboxMaxPerRecipient: number
  /** Most outbox entries pending in total. */
  readonly outboxMaxTotal: number
  /** Most seen ids remembered; beyond it the earliest-marked ids are forgotten. */
  readonly seenCapacity: number
  /** Most DHT records held. */
  readonly maxRecords: number
  /** Most routing-table contacts kept in the snapshot (the most recently seen ones). */
  readonly maxSnapshotContacts: number
  /** Most contacts with a pinned key. */
  readonly maxPins: number
  /** Most rows any one read returns (`history`, `conversations`, `due`, `mailFor`, `allMail`). */
  readonly maxPageSize: number
  /**
   * Most incoming messages of one conversation not yet read: beyond it a
   * sender's next message is refused for now (it keeps it and tries again),
   * so no sender can fill the recipient's disk while the user is away.
   */
  readonly maxUnreadPerConversation: number
}

const MiB = 1024 * 1024

/** The bounds of the chat store. */
export class ChatStoreConfig extends Context.Tag("peerchat/ChatStoreConfig")<ChatStoreConfig, ChatStoreConfigShape>() {
  /**
   * Outbox 1,000 per recipient / 10,000 in total; mailboxes 1,000 messages and
   * 4 MiB per recipient, 10,000 messages and 64 MiB in total, of which one
   * sender key or one source address holds at most 1/8 of a mailbox (125
   * messages, 512 KiB; never less than 16 messages and 64 KiB) and 1/16 of
   * the total (625 messages, 4 MiB); 100,000 seen
   * ids; 10,000 records; 5,120 snapshot contacts (256 buckets of k = 20);
   * 10,000 pinned contacts; pages of at most 1,000 rows; 5,000 unread
   * messages per conversation (80 MiB of the longest texts).
   */
  static readonly defaults: ChatStoreConfigShape = {
    outboxMaxPerRecipient: 1000,
    outboxMaxTotal: 10_000,
    mailboxMaxMessagesPerRecipient: 1000,
    mailboxMaxBytesPerRecipient: 4 * MiB,
    mailboxMaxMessagesTotal: 10_000,
    mailboxMaxBytesTotal: 64 * MiB,
    mailboxSenderShare: 8,
    mailboxTotalSenderShare: 16,
    mailboxMinSenderMessages: 16,
    mailboxMinSenderBytes: 64 * 1024,
    seenCapacity: 100_000,
    maxRecords: 10_000,
    maxSnapshotContacts: 256 * 20,
    maxPins: 10_000,
    maxPageSize: 1000,
    maxUnreadPerConversation: 5000
  }

  /** The defaults with `overrides` applied; dies on a bound that is not a positive integer (a configuration bug). */
  static readonly make = (overrides: Partial<ChatStoreConfigShape> = {}): ChatStoreConfigShape => {
    const config: ChatStoreConfigShape = { ...ChatStoreConfig.defaults, ...overrides }
    for (const [name, value] of Object.entries(config)) {
      if (!Number.isSafeInteger(value) || value < 1) {
        throw new RangeError(`ChatStoreConfig.${name} must be a positive integer, got ${value}`)
      }
    }
    return config
  }

  /** A layer with the defaults and `overrides` (see `make`). */
  static readonly layer = (overrides: Partial<ChatStoreConfigShape> = {}): Layer.Layer<ChatStoreConfig> =>
    Layer.sync(ChatStoreConfig, () => ChatStoreConfig.make(overrides))
}

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/**
 * What a chat store offers. Reads are bounded by `maxPageSize`; a `limit`
 * beyond it (or below 0) is clamped. Comparisons of ids and keys are by code
 * point (as SQLite compares UTF-8 text).
 */
export interface ChatStoreService {
  // --- history ---

  /**
   * Stores an incoming message (status "received", unread) unless the history
   * already holds its id, and marks the id seen at `receivedAt`, in one
   * transaction. A duplicate changes nothing (not even the seen set); nor
   * does a new message of a conversation holding `maxUnreadPerConversation`
   * unread ones ("full"). Ids are unique across both directions.
   */
  readonly recordReceived: (message: IncomingMessage) => Effect.Effect<Received, StorageError>
  /**
   * The `limit` latest entries of a conversation strictly before `before`
   * (or the latest overall), in ascending (sentAt, sequence, id) order;
   * page backwards by passing the first entry of a page as the next `before`.
   */
  readonly history: (conversation: Username, page: HistoryPage) => Effect.Effect<ReadonlyArray<HistoryEntry>, StorageError>
  /**
   * Conversations by latest activity first (then by name): `lastAt` is the
   * latest `sentAt` of an outgoing and `receivedAt` of an incoming message
   * (local clock, so a peer's skewed clock cannot pin a conversation on top);
   * `unread` counts incoming messages not yet read. At most `limit`
   * (default `maxPageSize`).
   */
  readonly conversations: (options?: { readonly limit?: number }) => Effect.Effect<ReadonlyArray<ConversationSummary>, StorageError>
  /** The history entry with this id, in either direction. */
  readonly message: (id: MessageId) => Effect.Effect<Option.Option<HistoryEntry>, StorageError>
  /** Marks every incoming message of the conversation read; returns how many were unread. */
  readonly markRead: (conversation: Username) => Effect.Effect<number, StorageError>
  /**
   * Moves an outgoing message's status forward (queued → stored-offline →
   * delivered); a status that is not ahead of the stored one changes nothing
   * ("unchanged"). Does not touch the outbox: use `complete` to end delivery.
   */
  readonly setStatus: (
    id: MessageId,
    status: OutgoingStatus
  ) => Effect.Effect<"advanced" | "unchanged", NotFound | StorageError>

  // --- outbox ---

  /**
   * Sends a message, in one transaction: refuses a full outbox
   * (`OutboxFull`, per recipient first, then in total) without calling
   * `build`; allocates the conversation's next sequence (1 + the highest
   * outgoing sequence in the history, so 1 first); calls `build(sequence)`,
   * which seals the envelope with that sequence and returns its JSON and the
   * id derived from it; refuses an id the history already holds, in either
   * direction (`DuplicateMessage`); then stores the history entry (status
   * "queued") and the outbox row due at `nextAttemptAt`. Returns the id and
   * the sequence. If `build` fails, dies or is interrupted, or the id is
   * refused, nothing is stored and the sequence is not consumed. `build`
   * runs while the store is locked: keep it short (sign, encrypt, hash) and
   * never call the store from it (that deadlocks).
   */
  readonly send: <E, R, Id extends MessageId = MessageId>(
    draft: OutgoingDraft,
    build: (sequence: number) => Effect.Effect<SealedEnvelope<Id>, E, R>,
    nextAttemptAt: Timestamp
  ) => Effect.Effect<SentMessage<Id>, E | DuplicateMessage | OutboxFull | StorageError, R>
  /** When the earliest outbox entry is next due (none when the outbox is empty). */
  readonly nextDueAt: Effect.Effect<Option.Option<Timestamp>, StorageError>
  /** Outbox entries with `nextAttemptAt <= now`, at most `limit`, in the order they were sent (FIFO per recipient). */
  readonly due: (now: Timestamp, limit: number) => Effect.Effect<ReadonlyArray<OutboxEntry>, StorageError>
  /** Records a failed attempt: the entry is next due at `nextAttemptAt` after `attempts` attempts; it keeps its place in the FIFO order. */
  readonly reschedule: (
    id: MessageId,
    nextAttemptAt: Timestamp,
    attempts: number
  ) => Effect.Effect<void, NotFound | StorageError>
  /**
   * Records that relays hold an outgoing message while its recipient is
   * offline, in one transaction: its history status moves forward to
   * "stored-offline" and its outbox entry stays, next due at `nextAttemptAt`
   * after `attempts` attempts, so the sender keeps trying to deliver it
   * directly (and re-checks the relays) until a receipt ends it.
   */
  readonly keepAsStoredOffline: (
    id: MessageId,
    nextAttemptAt: Timestamp,
    attempts: number
  ) => Effect.Effect<void, NotFound | StorageError>
  /**
   * Ends delivery of an outgoing message in one transaction: removes its
   * outbox entry and moves its history status forward to `status`.
   * "not-pending" when it had already left the outbox (the status still
   * moves forward), so a repeated acknowledgement is harmless.
   */
  readonly complete: (
    id: MessageId,
    status: CompletedStatus
  ) => Effect.Effect<"completed" | "not-pending", NotFound | StorageError>

  // --- relay mailboxes ---

  /**
   * Holds mail for an offline recipient and marks its id seen, in one
   * transaction. "duplicate" (nothing changes) when the id is held or was
   * already seen here in any role, so mail that was delivered and removed is
   * not accepted again from a re-replicating relay. Refuses with
   * `MailboxFull` (recipient quotas before total ones, messages before bytes)
   * after first dropping mail expired at `storedAt` and, in a full mailbox,
   * the oldest mail of its largest holder when that holder holds at least 2
   * more than the new mail's sender key or source (core `mailboxPlaceFor`;
   * an evicted id is no longer seen, so it may be stored again; all undone if
   * the mail is refused after all).
   */
  readonly storeMail: (mail: NewMail) => Effect.Effect<Stored, MailboxFull | StorageError>
  /**
   * What `storeMail` would answer now, storing nothing: "duplicate" when the
   * id is held or seen, "new" when the mail fits every quota (expired mail
   * may be dropped to make room, as `storeMail` would), `MailboxFull`
   * otherwise. Lets a relay refuse before it checks signatures and proofs of
   * work; `storeMail` decides again.
   */
  readonly checkMail: (mail: NewMail) => Effect.Effect<Stored, MailboxFull | StorageError>
  /**
   * Gives every mail held for `recipientKey` its full expiry
   * (`fullExpiresAt`), once a record for that key is known: mail that came
   * before its recipient's record is kept as long as any other. Returns how
   * many mails changed.
   */
  readonly extendMail: (recipientKey: Key) => Effect.Effect<number, StorageError>
  /** Mail held for one recipient, oldest first (storedAt, then id), at most `limit`. */
  readonly mailFor: (recipientKey: Key, limit: number) => Effect.Effect<ReadonlyArray<MailItem>, StorageError>
  /** Removes the listed mails of that recipient (ids of other recipients are ignored); returns how many were removed. */
  readonly removeMail: (recipientKey: Key, ids: ReadonlyArray<MessageId>) => Effect.Effect<number, StorageError>
  /** Removes mail with `expiresAt <= now`; returns how many. */
  readonly expireMail: (now: Timestamp) => Effect.Effect<number, StorageError>
  /** Sets the forwarded flag; true if this call set it (forward now), false if it was already set (never forward twice). */
  readonly markForwarded: (id: MessageId) => Effect.Effect<boolean, NotFound | StorageError>
  /** All held mail by id, at most `limit`, starting after the id `after` (for paging through re-replication). */
  readonly allMail: (limit: number, after?: MessageId) => Effect.Effect<ReadonlyArray<MailItem>, StorageError>

  // --- seen ids ---

  /**
   * Remembers `id` as seen at `now`; true if it was already seen (a
   * duplicate, which does not refresh it). Beyond `seenCapacity` ids the
   * earliest-marked ones are forgotten.
   */
  readonly markSeen: (id: string, now: Timestamp) => Effect.Effect<boolean, StorageError>
  /** Whether `id` is remembered as seen, without marking it. */
  readonly isSeen: (id: string) => Effect.Effect<boolean, StorageError>
  /** Forgets ids marked before `olderThan`; returns how many. */
  readonly pruneSeen: (olderThan: Timestamp) => Effect.Effect<number, StorageError>

  // --- DHT records ---

  /**
   * Stores or replaces the record under `key`, signed by `signingKey` (kept
   * for `countRecordsOf`); a new key beyond `maxRecords` is refused with `RecordsFull`.
   */
  readonly putRecord: (
    key: Key,
    recordJson: string,
    expiresAt: Timestamp,
    signingKey: string
  ) => Effect.Effect<void, RecordsFull | StorageError>
  /** How many records live at `now` were stored with `signingKey`, the one under `except` left out. */
  readonly countRecordsOf: (signingKey: string, now: Timestamp, except: Key) => Effect.Effect<number, StorageError>
  /** Removes the record under `key`; true if there was one. */
  readonly removeRecord: (key: Key) => Effect.Effect<boolean, StorageError>
  /** The record under `key` if it is live at `now` (`expiresAt > now`). */
  readonly getRecord: (key: Key, now: Timestamp) => Effect.Effect<Option.Option<StoredRecord>, StorageError>
  /** Removes records with `expiresAt <= now`; returns how many. */
  readonly expireRecords: (now: Timestamp) => Effect.Effect<number, StorageError>
  /** Every record held, by key (at most `maxRecords`; expired ones until the next `expireRecords`). */
  readonly allRecords: Effect.Effect<ReadonlyArray<StoredRecord>, StorageError>

  // --- routing-table snapshot ---

  /**
   * Replaces the snapshot atomically. A node id listed twice keeps its most
   * recent entry; beyond `maxSnapshotContacts` only the most recently seen are kept.
   */
  readonly saveRoutingSnapshot: (contacts: ReadonlyArray<SnapshotContact>) => Effect.Effect<void, StorageError>
  /** The snapshot, most recently seen first (then by node id). */
  readonly loadRoutingSnapshot: Effect.Effect<ReadonlyArray<SnapshotContact>, StorageError>

  // --- pinned keys ---

  /** The key pinned for `username`, if any. */
  readonly pinOf: (username: Username) => Effect.Effect<Option.Option<ContactPin>, StorageError>
  /**
   * Pins a key for `pin.username`, replacing any pin that name had (the
   * caller decides when that is allowed: `pinDecision` in
   * `src/core/Pinning.ts`). A new name beyond `maxPins` is refused with
   * `PinsFull`; replacing a pin always succeeds. Dies on a value that is not
   * a valid `ContactPin` (a fingerprint that is not its key's is a
   * programming error: build pins with `makePin`).
   */
  readonly pin: (pin: ContactPin) => Effect.Effect<void, PinsFull | StorageError>
  /** Every pin, by username (at most `maxPins`). */
  readonly pins: Effect.Effect<ReadonlyArray<ContactPin>, StorageError>

  /** How much the store holds. */
  readonly stats: Effect.Effect<ChatStoreStats, StorageError>
}

/** The chat layer's durable state; see `ChatStoreService`. */
export class ChatStore extends Context.Tag("peerchat/ChatStore")<ChatStore, ChatStoreService>() {
  /** A store held in memory, for simulations and tests; bounded as `config` says. */
  static readonly makeMemory = (config: ChatStoreConfigShape): Effect.Effect<ChatStoreService> => makeMemory(config)

  /** The in-memory store as a layer. */
  static readonly layerMemory: Layer.Layer<ChatStore, never, ChatStoreConfig> = Layer.effect(
    ChatStore,
    // An arrow, because `makeMemory` is defined further down and the static initializer runs first.
    Effect.flatMap(ChatStoreConfig, (config) => makeMemory(config))
  )
}

// ---------------------------------------------------------------------------
// Rules shared by the implementations
// ---------------------------------------------------------------------------

/** The rank of an outgoing status; a status may only be replaced by one of higher rank. */
export const outgoingStatusRank: { readonly [S in OutgoingStatus]: number } = {
  queued: 0,
  "stored-offline": 1,
  delivered: 2
}

/** A read's `limit` as the number of rows to return: an integer in [0, maxPageSize]. */
export const clampLimit = (limit: number, maxPageSize: number): number =>
  Number.isNaN(limit) ? 0 : Math.max(0, Math.min(Math.floor(limit), maxPageSize))

/**
 * Orders strings by code point, which is how SQLite orders UTF-8 text; plain
 * `<` orders UTF-16 code units, which differs once astral characters meet
 * U+E000–U+FFFF.
 */
export const compareText = (a: string, b: string): number => {
  const length = Math.min(a.length, b.length)
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) {
      // Surrogates (D800–DFFF) encode code points above FFFF: move them above E000–FFFF.
      const fix = (c: number) => (c >= 0xe000 ? c - 0x800 : c >= 0xd800 ? c + 0x2000 : c)
      return fix(x) - fix(y)
    }
  }
  return a.length - b.length
}

/** History order: (sentAt, sequence, id) ascending. */
export const compareHistory = (a: HistoryCursor, b: HistoryCursor): number =>
  a.sentAt - b.sentAt || a.sequence - b.sequence || compareText(a.id, b.id)

/**
 * Checks a pin before a store writes it: a value that is not a valid
 * `ContactPin` (a fingerprint that is not its key's, a cast string) is a
 * programming error and dies, so no store ever holds a pin it cannot read back.
 */
export const checkPin = (pin: ContactPin): Effect.Effect<void> => {
  const { username } = pin
  return isContactPin(pin)
    ? Effect.void
    : Effect.dieMessage(`not a valid contact pin for ${JSON.stringify(username)} (build pins with makePin)`)
}

/** Snapshot order: most recently seen first, then by node id. */
export const compareSnapshot = (a: SnapshotContact, b: SnapshotContact): number =>
  b.lastSeen - a.lastSeen || compareText(a.nodeId, b.nodeId)

/** The contacts a snapshot keeps: one per node id (the latest seen; later on ties), at most `max`, in snapshot order. */
export const snapshotToKeep = (contacts: ReadonlyArray<SnapshotContact>, max: number): Array<SnapshotContact> => {
  const byId = new Map<string, SnapshotContact>()
  for (const contact of contacts) {
    const known = byId.get(contact.nodeId)
    if (known === undefined || contact.lastSeen >= known.lastSeen) byId.set(contact.nodeId, contact)
  }
  return Array.from(byId.values()).sort(compareSnapshot).slice(0, max)
}

/**
 * The first mailbox quota that holding `mail` would break, given what is
 * held (core `mailboxQuotaBroken`), as the store's refusal.
 */
export const mailQuotaRefusal = (
  config: ChatStoreConfigShape,
  mail: NewMail,
  held: MailHeld
): Option.Option<MailboxFull> =>
  Option.map(
    mailboxQuotaBroken(config, held, mail.size),
    (broken) => new MailboxFull({ recipientKey: mail.recipientKey, ...broken })
  )

/** The outbox quota that one more message for `recipient` would break, if any. */
export const outboxQuotaBroken = (
  config: ChatStoreConfigShape,
  recipient: Username,
  held: { readonly recipientCount: number; readonly totalCount: number }
): Option.Option<OutboxFull> => {
  if (held.recipientCount >= config.outboxMaxPerRecipient) {
    return Option.some(new OutboxFull({ recipient, reason: "RecipientQuota", limit: config.outboxMaxPerRecipient }))
  }
  if (held.totalCount >= config.outboxMaxTotal) {
    return Option.some(new OutboxFull({ recipient, reason: "TotalQuota", limit: config.outboxMaxTotal }))
  }
  return Option.none()
}

// ---------------------------------------------------------------------------
// The in-memory store
// ---------------------------------------------------------------------------

/** One conversation in memory: its entries kept sorted in history order, and its summary. */
interface MemoryConversation {
  readonly entries: Array<HistoryEntry>
  lastAt: number
  unread: number
  maxOutgoingSequence: number
}

/** One recipient's mailbox in memory. */
interface MemoryMailbox {
  readonly items: Map<string, MailItem>
  bytes: number
  /** Mails and bytes per sender key and per source in this mailbox ("" is never counted). */
  readonly bySender: Map<string, MutableUsage>
  readonly bySource: Map<string, MutableUsage>
}

/** Mails and bytes, counted in place. */
interface MutableUsage {
  count: number
  bytes: number
}

/** Adds `sign` × one mail of `size` bytes to `name`'s usage in `usages`; "" is not counted. */
const countUsage = (usages: Map<string, MutableUsage>, name: string, size: number, sign: 1 | -1): void => {
  if (name === "") return
  let usage = usages.get(name)
  if (usage === undefined) {
    usage = { count: 0, bytes: 0 }
    usages.set(name, usage)
  }
  usage.count += sign
  usage.bytes += sign * size
  if (usage.count <= 0) usages.delete(name)
}

const NO_USAGE: MailUsage = { count: 0, bytes: 0 }

/** Index of the first entry not before `cursor` (binary search; `entries` is sorted). */
const lowerBound = (entries: ReadonlyArray<HistoryEntry>, cursor: HistoryCursor): number => {
  let low = 0
  let high = entries.length
  while (low < high) {
    const middle = (low + high) >>> 1
    // The index is in range: middle < high <= entries.length.
    if (compareHistory(entries[middle] as HistoryEntry, cursor) < 0) low = middle + 1
    else high = middle
  }
  return low
}

const makeMemory = (config: ChatStoreConfigShape): Effect.Effect<ChatStoreService> =>
  Effect.gen(function*() {
    // `send` runs the caller's builder between reading and writing, so sends are serialized;
    // every other operation is one synchronous step and cannot interleave.
    const sendLock = yield* Effect.makeSemaphore(1)

    const history = new Map<string, HistoryEntry>()
    const conversations = new Map<Username, MemoryConversation>()
    // Map iteration follows insertion order, which is the enqueue order; updating a key keeps its place.
    const outbox = new Map<string, OutboxEntry>()
    const outboxPerRecipient = new Map<Username, number>()
    const mail = new Map<string, MailItem>()
    const mailboxes = new Map<Key, MemoryMailbox>()
    let mailBytes = 0
    // Mails and bytes per sender key and per source over all mailboxes. Bound: one entry per mail held.
    const senderTotals = new Map<string, MutableUsage>()
    const sourceTotals = new Map<string, MutableUsage>()
    // Insertion order is marking order: the first key is the earliest-marked id.
    const seen = new Map<string, number>()
    const records = new Map<Key, StoredRecord>()
    // The signing key each record was stored with, for the names-per-key quota. Bound: one per record.
    const recordSigners = new Map<Key, string>()
    let snapshot: ReadonlyArray<SnapshotContact> = []
    const pins = new Map<Username, ContactPin>()

    const conversationOf = (name: Username): MemoryConversation => {
      let conversation = conversations.get(name)
      if (conversation === undefined) {
        conversation = { entries: [], lastAt: Number.NEGATIVE_INFINITY, unread: 0, maxOutgoingSequence: 0 }
        conversations.set(name, conversation)
      }
      return conversation
    }

    const insertEntry = (entry: HistoryEntry, activityAt: number): void => {
      const conversation = conversationOf(entry.conversation)
      conversation.entries.splice(lowerBound(conversation.entries, entry), 0, entry)
      conversation.lastAt = Math.max(conversation.lastAt, activityAt)
      if (entry.direction === "in" && !entry.read) conversation.unread++
      if (entry.direction === "out") {
        conversation.maxOutgoingSequence = Math.max(conversation.maxOutgoingSequence, entry.sequence)
      }
      history.set(entry.id, entry)
    }

    const replaceEntry = (entry: HistoryEntry): void => {
      history.set(entry.id, entry)
      const conversation = conversations.get(entry.conversation)
      if (conversation === undefined) return
      const index = lowerBound(conversation.entries, entry)
      if (conversation.entries[index]?.id === entry.id) conversation.entries[index] = entry
    }

    const advanceStatus = (entry: HistoryEntry, status: OutgoingStatus): boolean => {
      if (entry.status === "received" || outgoingStatusRank[status] <= outgoingStatusRank[entry.status]) return false
      replaceEntry({ ...entry, status })
      return true
    }

    const outgoingEntry = (id: MessageId): HistoryEntry | undefined => {
      const entry = history.get(id)
      return entry !== undefined && entry.direction === "out" ? entry : undefined
    }

    const markSeenNow = (id: string, now: number): boolean => {
      if (seen.has(id)) return true
      seen.set(id, now)
      while (seen.size > config.seenCapacity) {
        const oldest = seen.keys().next()
        if (oldest.done === true) break
        seen.delete(oldest.value)
      }
      return false
    }

    const removeMailItem = (item: MailItem): void => {
      mail.delete(item.id)
      const mailbox = mailboxes.get(item.recipientKey)
      if (mailbox === undefined) return
      mailbox.items.delete(item.id)
      mailbox.bytes -= item.size
      mailBytes -= item.size
      countUsage(mailbox.bySender, item.senderKey, item.size, -1)
      countUsage(mailbox.bySource, item.source, item.size, -1)
      countUsage(senderTotals, item.senderKey, item.size, -1)
      countUsage(sourceTotals, item.source, item.size, -1)
      if (mailbox.items.size === 0) mailboxes.delete(item.recipientKey)
    }

    const addMailItem = (item: MailItem): void => {
      mail.set(item.id, item)
      let mailbox = mailboxes.get(item.recipientKey)
      if (mailbox === undefined) {
        mailbox = { items: new Map(), bytes: 0, bySender: new Map(), bySource: new Map() }
        mailboxes.set(item.recipientKey, mailbox)
      }
      mailbox.items.set(item.id, item)
      mailbox.bytes += item.size
      mailBytes += item.size
      countUsage(mailbox.bySender, item.senderKey, item.size, 1)
      countUsage(mailbox.bySource, item.source, item.size, 1)
      countUsage(senderTotals, item.senderKey, item.size, 1)
      countUsage(sourceTotals, item.source, item.size, 1)
    }

    const expireMail = (now: number): number => {
      let removed = 0
      for (const item of mail.values()) {
        if (item.expiresAt <= now) {
          removeMailItem(item)
          removed++
        }
      }
      return removed
    }

    /** What is held that `item` would add to. */
    const mailHeldFor = (item: MailItem): MailHeld => {
      const mailbox = mailboxes.get(item.recipientKey)
      return {
        recipient: { count: mailbox?.items.size ?? 0, bytes: mailbox?.bytes ?? 0 },
        total: { count: mail.size, bytes: mailBytes },
        sender: item.senderKey === "" ? undefined : {
          inMailbox: mailbox?.bySender.get(item.senderKey) ?? NO_USAGE,
          total: senderTotals.get(item.senderKey) ?? NO_USAGE
        },
        source: item.source === "" ? undefined : {
          inMailbox: mailbox?.bySource.get(item.source) ?? NO_USAGE,
          total: sourceTotals.get(item.source) ?? NO_USAGE
        }
      }
    }

    /** The sender keys and sources holding mail in `recipientKey`'s mailbox, and how many each. */
    function* holdersIn(recipientKey: MailItem["recipientKey"]): Generator<MailboxHolder> {
      const mailbox = mailboxes.get(recipientKey)
      if (mailbox === undefined) return
      for (const [key, usage] of mailbox.bySender) if (key !== "") yield { by: "sender", key, count: usage.count }
      for (const [key, usage] of mailbox.bySource) if (key !== "") yield { by: "source", key, count: usage.count }
    }

    /** The oldest mail (storedAt, then id) that `holder` holds in `recipientKey`'s mailbox. */
    const oldestOf = (recipientKey: MailItem["recipientKey"], holder: MailboxHolder): MailItem | undefined => {
      let oldest: MailItem | undefined = undefined
      for (const item of mailboxes.get(recipientKey)?.items.values() ?? []) {
        if ((holder.by === "sender" ? item.senderKey : item.source) !== holder.key) continue
        if (oldest === undefined || item.storedAt < oldest.storedAt || (item.storedAt === oldest.storedAt && item.id < oldest.id)) oldest = item
      }
      return oldest
    }

    /**
     * What `storeMail` would answer for `item` now: dropping expired mail when a quota would
     * refuse, then, in a full mailbox, making room from its largest holder (core
     * `mailboxPlaceFor`); only when `evict`, else one place is enough to answer "new".
     */
    const admitMail = (item: MailItem, evict: boolean): Effect.Effect<Stored, MailboxFull> => {
      if (mail.has(item.id) || seen.has(item.id)) return Effect.succeed("duplicate")
      let held = mailHeldFor(item)
      let broken = mailQuotaRefusal(config, item, held)
      if (Option.isSome(broken) && expireMail(item.storedAt) > 0) {
        held = mailHeldFor(item)
        broken = mailQuotaRefusal(config, item, held)
      }
      const evicted: Array<{ readonly item: MailItem; readonly seenAt: number | undefined }> = []
      while (Option.isSome(broken) && evicted.length < MAX_EVICTIONS_PER_MAIL) {
        const place = mailboxPlaceFor(broken.value, held, largestHolder(holdersIn(item.recipientKey)))
        const oldest = place === undefined ? undefined : oldestOf(item.recipientKey, place)
        if (oldest === undefined) break
        if (!evict) return Effect.succeed("new")
        removeMailItem(oldest)
        // Forgotten as seen too: its sender, still holding it in its outbox, may store it again.
        evicted.push({ item: oldest, seenAt: seen.get(oldest.id) })
        seen.delete(oldest.id)
        held = mailHeldFor(item)
        broken = mailQuotaRefusal(config, item, held)
      }
      if (Option.isNone(broken)) return Effect.succeed("new")
      // Refused after all: what was evicted for it comes back, as the SQL store's rolled-back transaction does.
      for (const { item, seenAt } of evicted) {
        addMailItem(item)
        if (seenAt !== undefined) seen.set(item.id, seenAt)
      }
      return Effect.fail(broken.value)
    }

    const outboxQuota = (recipient: Username) =>
      outboxQuotaBroken(config, recipient, {
        recipientCount: outboxPerRecipient.get(recipient) ?? 0,
        totalCount: outbox.size
      })

    // Methods, not arrow-valued properties: run through tsx (esbuild's keepNames), every
    // arrow property gets its name defined at run time, which gives each instance's function
    // a property dictionary of its own (about 250 bytes); a simulator holds one store per node.
    const service: ChatStoreService = {
      recordReceived(message) {
        return Effect.sync((): Received => {
          if (history.has(message.id)) return "duplicate"
          if ((conversations.get(message.from)?.unread ?? 0) >= config.maxUnreadPerConversation) return "full"
          insertEntry({
            id: message.id,
            conversation: message.from,
            direction: "in",
            from: message.from,
            to: message.to,
            sequence: message.sequence,
            sentAt: message.sentAt,
            text: message.text,
            status: "received",
            receivedAt: message.receivedAt,
            read: false
          }, message.receivedAt)
          markSeenNow(message.id, message.receivedAt)
          return "new"
        })
      },

      history(conversation, page) {
        return Effect.sync(() => {
          const entries = conversations.get(conversation)?.entries ?? []
          const end = page.before === undefined ? entries.length : lowerBound(entries, page.before)
          const limit = clampLimit(page.limit, config.maxPageSize)
          return entries.slice(Math.max(0, end - limit), end)
        })
      },

      conversations(options) {
        return Effect.sync(() =>
          Array.from(conversations, ([conversation, state]) => ({
            conversation,
            lastAt: state.lastAt,
            unread: state.unread
          }))
            .sort((a, b) => b.lastAt - a.lastAt || compareText(a.conversation, b.conversation))
            .slice(0, clampLimit(options?.limit ?? config.maxPageSize, config.maxPageSize))
        )
      },

      markRead(name) {
        return Effect.sync(() => {
          const conversation = conversations.get(name)
          if (conversation === undefined || conversation.unread === 0) return 0
          let marked = 0
          conversation.entries.forEach((entry, index) => {
            if (entry.direction === "in" && !entry.read) {
              const read = { ...entry, read: true }
              conversation.entries[index] = read
              history.set(entry.id, read)
              marked++
            }
          })
          conversation.unread = 0
          return marked
        })
      },

      message(id) {
        return Effect.sync(() => Option.fromNullable(history.get(id)))
      },

      nextDueAt: Effect.sync(() => {
        let earliest: number | undefined
        for (const entry of outbox.values()) {
          if (earliest === undefined || entry.nextAttemptAt < earliest) earliest = entry.nextAttemptAt
        }
        return Option.fromNullable(earliest)
      }),

      setStatus(id, status) {
        return Effect.suspend(() => {
          const entry = outgoingEntry(id)
          if (entry === undefined) return Effect.fail(new NotFound({ kind: "OutgoingMessage", id }))
          return Effect.succeed(advanceStatus(entry, status) ? "advanced" as const : "unchanged" as const)
        })
      },

      send<E, R, Id extends MessageId = MessageId>(
        draft: OutgoingDraft,
        build: (sequence: number) => Effect.Effect<SealedEnvelope<Id>, E, R>,
        nextAttemptAt: number
      ) {
        return sendLock.withPermits(1)(
          Effect.gen(function*() {
            const refused = outboxQuota(draft.to)
            if (Option.isSome(refused)) return yield* refused.value
            // Only sends add outgoing entries or outbox rows, and they hold the lock: the sequence and the
            // quota still hold when `build` returns. Nothing is written before then, so a failing,
            // dying or interrupted builder leaves nothing behind.
            const sequence = (conversations.get(draft.to)?.maxOutgoingSequence ?? 0) + 1
            const { id, envelope } = yield* build(sequence)
            if (history.has(id)) return yield* new DuplicateMessage({ id })
            insertEntry({
              id,
              conversation: draft.to,
              direction: "out",
              from: draft.from,
              to: draft.to,
              sequence,
              sentAt: draft.sentAt,
              text: draft.text,
              status: "queued",
              read: true
            }, draft.sentAt)
            outbox.set(id, {
              id,
              recipient: draft.to,
              sequence,
              envelopeJson: envelope,
              enqueuedAt: draft.sentAt,
              nextAttemptAt,
              attempts: 0
            })
            outboxPerRecipient.set(draft.to, (outboxPerRecipient.get(draft.to) ?? 0) + 1)
            const sent: SentMessage<Id> = { id, sequence }
            return sent
          })
        )
      },

      due(now, limit) {
        return Effect.sync(() => {
          const count = clampLimit(limit, config.maxPageSize)
          const found: Array<OutboxEntry> = []
          if (count === 0) return found
          for (const entry of outbox.values()) {
            if (entry.nextAttemptAt <= now) {
              found.push(entry)
              if (found.length >= count) break
            }
          }
          return found
        })
      },

      reschedule(id, nextAttemptAt, attempts) {
        return Effect.suspend(() => {
          const entry = outbox.get(id)
          if (entry === undefined) return Effect.fail(new NotFound({ kind: "OutboxEntry", id }))
          outbox.set(id, { ...entry, nextAttemptAt, attempts })
          return Effect.void
        })
      },

      keepAsStoredOffline(id, nextAttemptAt, attempts) {
        return Effect.suspend(() => {
          const entry = outgoingEntry(id)
          const pending = outbox.get(id)
          if (entry === undefined || pending === undefined) return Effect.fail(new NotFound({ kind: "OutboxEntry", id }))
          outbox.set(id, { ...pending, nextAttemptAt, attempts })
          advanceStatus(entry, "stored-offline")
          return Effect.void
        })
      },

      complete(id, status) {
        return Effect.suspend(() => {
          const entry = outgoingEntry(id)
          if (entry === undefined) return Effect.fail(new NotFound({ kind: "OutgoingMessage", id }))
          const pending = outbox.get(id)
          if (pending !== undefined) {
            outbox.delete(id)
            countDown(outboxPerRecipient, pending.recipient)
          }
          advanceStatus(entry, status)
          return Effect.succeed(pending === undefined ? "not-pending" as const : "completed" as const)
        })
      },

      storeMail(item) {
        return Effect.suspend((): Effect.Effect<Stored, MailboxFull> => {
          const stored = heldMail(item)
          return Effect.map(admitMail(stored, true), (outcome) => {
            if (outcome === "new") {
              addMailItem(stored)
              markSeenNow(item.id, item.storedAt)
            }
            return outcome
          })
        })
      },

      checkMail(item) {
        return Effect.suspend(() => admitMail(heldMail(item), false))
      },

      extendMail(recipientKey) {
        return Effect.sync(() => {
          const mailbox = mailboxes.get(recipientKey)
          if (mailbox === undefined) return 0
          let extended = 0
          for (const item of mailbox.items.values()) {
            if (item.expiresAt >= item.fullExpiresAt) continue
            const longer: MailItem = { ...item, expiresAt: item.fullExpiresAt }
            mailbox.items.set(item.id, longer)
            mail.set(item.id, longer)
            extended++
          }
          return extended
        })
      },

      mailFor(recipientKey, limit) {
        return Effect.sync(() =>
          Array.from(mailboxes.get(recipientKey)?.items.values() ?? [])
            .sort((a, b) => a.storedAt - b.storedAt || compareText(a.id, b.id))
            .slice(0, clampLimit(limit, config.maxPageSize))
        )
      },

      removeMail(recipientKey, ids) {
        return Effect.sync(() => {
          const mailbox = mailboxes.get(recipientKey)
          if (mailbox === undefined) return 0
          let removed = 0
          for (const id of ids) {
            const item = mailbox.items.get(id)
            if (item !== undefined) {
              removeMailItem(item)
              removed++
            }
          }
          return removed
        })
      },

      expireMail(now) {
        return Effect.sync(() => expireMail(now))
      },

      markForwarded(id) {
        return Effect.suspend(() => {
          const item = mail.get(id)
          if (item === undefined) return Effect.fail(new NotFound({ kind: "Mail", id }))
          if (item.forwarded) return Effect.succeed(false)
          const forwarded = { ...item, forwarded: true }
          mail.set(id, forwarded)
          mailboxes.get(item.recipientKey)?.items.set(id, forwarded)
          return Effect.succeed(true)
        })
      },

      allMail(limit, after) {
        return Effect.sync(() => {
          const count = clampLimit(limit, config.maxPageSize)
          if (count === 0) return []
          const ids = Array.from(mail.keys()).filter((id) => after === undefined || compareText(id, after) > 0)
          return ids.sort(compareText).slice(0, count).flatMap((id) => {
            const item = mail.get(id)
            return item === undefined ? [] : [item]
          })
        })
      },

      markSeen(id, now) {
        return Effect.sync(() => markSeenNow(id, now))
      },

      isSeen(id) {
        return Effect.sync(() => seen.has(id))
      },

      pruneSeen(olderThan) {
        return Effect.sync(() => {
          let removed = 0
          for (const [id, seenAt] of seen) {
            if (seenAt < olderThan) {
              seen.delete(id)
              removed++
            }
          }
          return removed
        })
      },

      putRecord(key, recordJson, expiresAt, signingKey) {
        return Effect.suspend(() => {
          if (!records.has(key) && records.size >= config.maxRecords) {
            return Effect.fail(new RecordsFull({ limit: config.maxRecords }))
          }
          records.set(key, { key, recordJson, expiresAt })
          recordSigners.set(key, signingKey)
          return Effect.void
        })
      },

      countRecordsOf(signingKey, now, except) {
        return Effect.sync(() => {
          let count = 0
          for (const [key, record] of records) {
            if (key !== except && record.expiresAt > now && recordSigners.get(key) === signingKey) count++
          }
          return count
        })
      },

      removeRecord(key) {
        return Effect.sync(() => {
          recordSigners.delete(key)
          return records.delete(key)
        })
      },

      getRecord(key, now) {
        return Effect.sync(() => Option.filter(Option.fromNullable(records.get(key)), (record) => record.expiresAt > now))
      },

      expireRecords(now) {
        return Effect.sync(() => {
          let removed = 0
          for (const [key, record] of records) {
            if (record.expiresAt <= now) {
              records.delete(key)
              recordSigners.delete(key)
              removed++
            }
          }
          return removed
        })
      },

      allRecords: Effect.sync(() => Array.from(records.values()).sort((a, b) => compareText(a.key, b.key))),

      saveRoutingSnapshot(contacts) {
        return Effect.sync(() => {
          snapshot = snapshotToKeep(contacts, config.maxSnapshotContacts)
        })
      },

      loadRoutingSnapshot: Effect.sync(() => snapshot),

      pinOf(username) {
        return Effect.sync(() => Option.fromNullable(pins.get(username)))
      },

      pin(pin) {
        return Effect.zipRight(
          checkPin(pin),
          Effect.suspend(() => {
            if (!pins.has(pin.username) && pins.size >= config.maxPins) {
              return Effect.fail(new PinsFull({ username: pin.username, limit: config.maxPins }))
            }
            pins.set(pin.username, pin)
            return Effect.void
          })
        )
      },

      pins: Effect.sync(() => Array.from(pins.values()).sort((a, b) => compareText(a.username, b.username))),

      stats: Effect.sync(() => ({
        messages: history.size,
        conversations: conversations.size,
        outbox: outbox.size,
        mail: mail.size,
        mailBytes,
        seen: seen.size,
        records: records.size,
        snapshotContacts: snapshot.length,
        pins: pins.size
      }))
    }
    return service
  })
