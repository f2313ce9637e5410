/**
 * Message delivery for the local user: the paper's sender, acceptor and
 * mailbox fibers, as Effect fibers in one layer that provides `Messenger`.
 *
 * - **Send**: the message is sealed to the recipient's published key and
 *   committed to the history and the outbox in one transaction before
 *   `send` returns.
 * - **Sender**: a fiber takes due outbox entries (recipients in parallel,
 *   one recipient's messages in order), delivers each directly
 *   (`SendMessage`) and ends it only on a receipt that verifies under the
 *   recipient's key. When the recipient cannot be reached it leaves the
 *   envelope with the k nodes closest to the recipient's user key
 *   (`StoreMail`), and the message becomes "stored-offline". Anything else is
 *   retried later with exponential backoff and jitter, never in a tight loop.
 * - **Acceptor**: an inbound envelope (direct, pushed by a relay, or pulled
 *   from a mailbox) must be for this user, decrypt, and carry its sender's
 *   valid user record with a signature by that record's key
 *   (`checkOpenedMessage`, no lookup); that key must then be believable for
 *   the sender's name (`checkSender` of `Contacts.ts`: the pin, else the network).
 *   The message is committed to the history and only then answered with a
 *   signed receipt. Duplicates are answered with a receipt too and stored
 *   once. When the message did not come from its sender's node, the receipt
 *   is sent on to the sender, at the node and address of the carried record
 *   (directly, or as mail for the sender's mailbox).
 * - Every message sealed here carries this user's own record, as the network
 *   holds it (read at most every `senderRecordCacheTtl`).
 * - **Mailbox**: at start, every `mailboxFetchInterval`, and whenever the
 *   relays it is reached through change (behind a NAT: it lost one, or moved
 *   to another network), the user pulls its mail from the k closest nodes of
 *   its user key with signed `FetchMail` requests and acknowledges
 *   (`AckMail`) what it committed.
 *
 * The relay side (holding other users' mail) is `Relay.ts`.
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Duration, Effect, Either, Layer, Option, PubSub, Queue, Random, Ref, Schema, Stream } from "effect"
import type { Contact } from "../core/Contact.js"
import type { Key, NodeId } from "../core/Id.js"
import {
  Mail,
  MAX_MAIL_PER_FETCH,
  type MailboxOperation,
  mailId,
  signMailboxRequest,
  signPostage
} from "../core/Mail.js"
import {
  checkOpenedMessage,
  checkReceipt,
  Envelope,
  makeChatMessage,
  type MessageId as EnvelopeId,
  RECEIPT_FORMAT_VERSION,
  type SignedReceipt
} from "../core/Message.js"
import { parseOutgoingText } from "../core/MessageInput.js"
import { claimantWithKey, isNewerRecord } from "../core/NameResolution.js"
import { setNewest } from "../core/NewestFirst.js"
import { type ClaimRules, isRecordLive, type PublicKeyHex, type UserRecord } from "../core/UserRecord.js"
import { toHex } from "../core/Bytes.js"
import { parseUsername, type Username, userKey } from "../core/Username.js"
import { parseNameRef } from "../core/Pinning.js"
import { NotConnected } from "../node/Control.js"
import { Circuits } from "../node/Circuits.js"
import { DhtNode } from "../node/DhtNode.js"
import { Directory } from "../node/Directory.js"
import { Identity, Signatures } from "../node/Identity.js"
import { backoffDelay, NodeConfig } from "../node/NodeConfig.js"
import { RequestRefused } from "../node/Protocol.js"
import {
  AckMail,
  type ChatHandlers,
  DeliverReceipt,
  FetchMail,
  MessageRefused,
  SendMessage,
  StoreMail
} from "./ChatProtocol.js"
import { sendByRoutes, Transport } from "../node/Transport.js"
import { ChatConfig } from "./ChatConfig.js"
import { Contacts, makeContacts } from "./Contacts.js"
import { ChatStore, type HistoryEntry, type MessageId, type OutboxEntry, type OutgoingStatus } from "./ChatStore.js"
import { MessageCrypto } from "./MessageCrypto.js"
import {
  type ChatEvent,
  Messenger,
  NotRegistered,
  SelfMessage,
  type SendError,
  type SentMessageInfo,
  UnknownMessage
} from "./Messenger.js"


/**
 * A refusal that may become acceptance later: the sender's key is not the
 * pinned one, and the user, told to compare safety numbers, may accept it.
 * Its sender is told the refusal, but mail of it stays at the relays rather
 * than being acknowledged as junk, so accepting the key later loses nothing.
 */
class NotYetAccepted extends Data.TaggedError("NotYetAccepted")<{ readonly refusal: MessageRefused }> {}
/** How a delivery attempt of one outbox entry ended. */
type AttemptOutcome = "delivered" | "stored-offline" | "retry"

/** What one mailbox pull did. */
export interface MailboxPull {
  /** Relays asked. */
  readonly relays: number
  /** Messages committed (new or duplicate) and acknowledged. */
  readonly messages: number
  /** Receipts taken and acknowledged. */
  readonly receipts: number
}

/** Counters of the delivery fibers, for status displays, tests and the simulator. */
export interface DeliveryStats {
  readonly deliveredDirect: number
  readonly storedOffline: number
  readonly retries: number
  readonly received: number
  readonly receiptsForwarded: number
}

/** The delivery machinery itself, for tests and the simulator (users go through `Messenger`). */
export class Delivery extends Context.Tag("peerchat/Delivery")<Delivery, {
  /** One pass of the sender over the outbox entries due now. */
  readonly runSender: Effect.Effect<void>
  /** Pulls this user's mail from the k closest nodes of its user key (and from this node's own relay store). */
  readonly pullMailbox: Effect.Effect<MailboxPull>
  readonly stats: Effect.Effect<DeliveryStats>
}>() {}

const decodeEnvelopeJson = Schema.decodeUnknownEither(Schema.parseJson(Envelope))
const encodeEnvelopeJson = Schema.encodeSync(Schema.parseJson(Envelope))
const decodeMailJson = Schema.decodeUnknownEither(Schema.parseJson(Mail))

/** A receipt waiting to be carried back to the sender of a message that reached us through a relay. */
interface PendingReceipt {
  readonly receipt: SignedReceipt
  readonly sender: UserRecord
}

/** Most receipts waiting to be carried back to senders; beyond it new ones are dropped (and logged). */
const MAX_PENDING_RECEIPTS = 1000

/**
 * How long a message's receipt, once queued to be carried back, is not
 * queued again for another copy of the message: the copies of one pull
 * arrive within seconds; a copy that comes again a minute later (a relay's
 * push after this node restarted) carries it again.
 */
const RECEIPT_CARRY_WINDOW_MS = 60_000

/** Most rounds of fetch-and-acknowledge one pull makes at one relay (32 mails each). */
const MAX_FETCH_ROUNDS_PER_RELAY = 16

/** Attempts to carry one receipt back before giving up (the sender then still sees "stored-offline"). */
const RECEIPT_ATTEMPTS = 3

/** How many times the wait between direct retries of a message stored offline doubles. */
const MAX_RECHECK_DOUBLINGS = 3

/** Messages to one recipient the sender has in flight at once. */
const MESSAGES_IN_FLIGHT = 16

/** Most events buffered for a slow subscriber; older ones are dropped. */
const EVENT_BUFFER = 1024

const makeDelivery = Effect.gen(function*() {
  const store = yield* ChatStore
  const config = yield* ChatConfig
  const nodeConfig = yield* NodeConfig
  const dht = yield* DhtNode
  const directory = yield* Directory
  const identity = yield* Identity
  const { claimHash, verify } = yield* Signatures
  const transport = yield* Transport
  const crypto = yield* MessageCrypto
  const callOptions = { timeout: nodeConfig.callTimeout }
  /** The claim rules carried sender records are checked with: this node's, as for records it stores. */
  const claimRules: ClaimRules = { minDifficulty: nodeConfig.minClaimDifficulty, hash: claimHash }
  const ownKey = toHex(identity.signingPublicKey) as PublicKeyHex // 32 raw bytes in hex: a PublicKeyHex

  const events = yield* PubSub.sliding<ChatEvent>(EVENT_BUFFER)
  const wakeSender = yield* Queue.dropping<void>(1)
  const pendingReceipts = yield* Queue.dropping<PendingReceipt>(MAX_PENDING_RECEIPTS)
  /** Messages whose receipt was queued to be carried back, and when. Bound: `MAX_PENDING_RECEIPTS` (oldest out). */
  const carriedReceipts = new Map<MessageId, number>()
  const counters = yield* Ref.make<DeliveryStats>({
    deliveredDirect: 0,
    storedOffline: 0,
    retries: 0,
    received: 0,
    receiptsForwarded: 0
  })
  const count = (field: keyof DeliveryStats) => Ref.update(counters, (stats) => ({ ...stats, [field]: stats[field] + 1 }))

  const ownUsername: Effect.Effect<Option.Option<Username>> = directory.username.pipe(
    Effect.catchAll((error) => Effect.as(Effect.logWarning("cannot read this node's profile", error.message), Option.none()))
  )


  // ------------------------------------------------------------------
  // Records of the users we talk to: pin-checked, see Contacts

  const { checkSender, ...contacts } = yield* makeContacts
  const recordOf = contacts.recordOf

  // ------------------------------------------------------------------
  // This user's own record, which every sealed message carries

  /** The own record last read from the network, and when. */
  const ownRecordCache = yield* Ref.make<{ readonly record: UserRecord; readonly at: number } | undefined>(undefined)
  /** One re-publication at a time from here (the directory's own schedule may run one too). */
  const republishing = yield* Effect.makeSemaphore(1)

  /**
   * This user's newest live record as the network holds it: re-read at most
   * every `senderRecordCacheTtl`; while the network does not answer, the one
   * read last (still live) will do, its address at worst out of date. Only
   * when the network answers and holds no live record of this key at all (it
   * lost it) is the record published again, which is what the directory's
   * hourly re-publication would do. `NotConnected` when there is none to use.
   */
  const ownRecord = (username: Username): Effect.Effect<UserRecord, NotConnected> =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const kept = yield* Ref.get(ownRecordCache)
      const usable = kept !== undefined && kept.record.username === username && isRecordLive(kept.record, now)
        ? kept.record
        : undefined
      if (usable !== undefined && kept !== undefined && now - kept.at < Duration.toMillis(config.senderRecordCacheTtl)) {
        return usable
      }
      const answer = yield* Effect.either(directory.resolve(username))
      const found = Either.isRight(answer) ? claimantWithKey(answer.right, ownKey) : undefined
      const newest = found !== undefined && isRecordLive(found, now) && (usable === undefined || !isNewerRecord(usable, found))
        ? found
        : usable
      if (newest !== undefined) {
        yield* Ref.set(ownRecordCache, { record: newest, at: now })
        return newest
      }
      if (Either.isLeft(answer)) return yield* answer.left
      yield* Effect.logWarning(`the network holds no live record of ${username} for this node's key; publishing it again`)
      const published = yield* republishing.withPermits(1)(Effect.either(directory.republish))
      if (Either.isRight(published) && Option.isSome(published.right) && published.right.value.username === username) {
        yield* Ref.set(ownRecordCache, { record: published.right.value, at: now })
        return published.right.value
      }
      return yield* new NotConnected({
        detail: `this node's own record of ${username} is not in the network and could not be published again` +
          (Either.isLeft(published) ? `: ${published.left.message}` : "")
      })
    })

  const publish = (event: ChatEvent) => PubSub.publish(events, event)

  // ------------------------------------------------------------------
  // Relays

  /**
   * Postage for `mail`: this user's own record as the network holds it, and
   * its signature over the mail, its mailbox and when it expires (relays
   * keep only mail with valid postage, and count it against this user's
   * share). A message or a receipt sent from here is always this user's.
   */
  const postageFor = (mail: Mail) =>
    Effect.gen(function*() {
      const own = yield* ownUsername
      if (Option.isNone(own)) return Either.left("this node has no registered user to pay the postage")
      const record = yield* Effect.either(ownRecord(own.value))
      if (Either.isLeft(record)) return Either.left(`no postage: ${record.left.message}`)
      const expiresAt = (yield* Clock.currentTimeMillis) + Duration.toMillis(config.mailTtl)
      return Either.right(signPostage({ mail, sender: record.right, expiresAt, sign: identity.sign }))
    })

  /** Leaves `mail` with `relays`, all at once, with this user's postage; returns how many accepted it. */
  const storeAt = (mail: Mail, relays: ReadonlyArray<Contact>) =>
    Effect.gen(function*() {
      const postage = yield* postageFor(mail)
      if (Either.isLeft(postage)) return { accepted: 0, attempted: 0, refusals: [postage.left] }
      const request = new StoreMail({ mail, postage: postage.right })
      const outcomes = yield* Effect.forEach(
        relays,
        (relay) => Effect.either(transport.send(relay, request, callOptions)),
        { concurrency: "unbounded" }
      )
      const refusals = outcomes.flatMap((outcome) => (outcome._tag === "Left" ? [outcome.left.message] : []))
      return { accepted: outcomes.length - refusals.length, attempted: relays.length, refusals }
    })

  /**
   * Leaves `mail` with the k nodes closest to `key` (other than this node,
   * which is about to be the one that is missing). Returns how many accepted it.
   */
  const storeAtRelays = (mail: Mail, key: Key) =>
    Effect.flatMap(dht.findNode(key), (lookup) => storeAt(mail, lookup.closest.slice(0, nodeConfig.k)))

  // ------------------------------------------------------------------
  // Receipts

  /** Applies a receipt for one of our messages: "Accepted" if it verified and matched, else "Unknown". */
  const takeReceipt = (receipt: SignedReceipt): Effect.Effect<"Accepted" | "Unknown", RequestRefused> =>
    Effect.gen(function*() {
      const entry = yield* store.message(receipt.messageId).pipe(Effect.catchAll(refuseStorage))
      if (Option.isNone(entry) || entry.value.direction !== "out" || entry.value.to !== receipt.recipient) {
        return "Unknown" as const
      }
      if (entry.value.status === "delivered") return "Accepted" as const
      const record = yield* recordOf(receipt.recipient, false)
      if (Option.isNone(record)) {
        return yield* new RequestRefused({
          reason: "NotAccepted",
          detail: `cannot check the receipt yet: no record of ${JSON.stringify(receipt.recipient)} was found`
        })
      }
      const checked = checkReceipt({ receipt, recipientRecord: record.value, verify })
      if (Either.isLeft(checked)) {
        yield* Effect.logWarning("ignored a delivery receipt", checked.left.message)
        return "Unknown" as const
      }
      yield* store.complete(entry.value.id, "delivered").pipe(Effect.catchAll(refuseStorage))
      yield* publish({ _tag: "StatusChanged", id: entry.value.id, conversation: entry.value.conversation, status: "delivered" })
      return "Accepted" as const
    })

  /** Carries a receipt back to the sender: directly, else into the sender's mailbox. */
  const carryReceipt = ({ receipt, sender }: PendingReceipt) =>
    Effect.gen(function*() {
      for (let attempt = 1; attempt <= RECEIPT_ATTEMPTS; attempt++) {
        // Directly, or through the relays of a sender behind a NAT.
        const direct = yield* Effect.either(sendByRoutes(transport, sender, new DeliverReceipt({ receipt }), callOptions))
        if (Either.isRight(direct)) return yield* count("receiptsForwarded")
        const stored = yield* storeAtRelays({ _tag: "Receipt", recipientKey: userKey(sender.username), receipt }, userKey(sender.username))
        if (stored.accepted > 0) return yield* count("receiptsForwarded")
        yield* Effect.sleep(backoffDelay(config.sendRetry, attempt, yield* Random.next))
      }
      yield* Effect.logWarning(
        `could not carry the receipt of message ${receipt.messageId.slice(0, 16)}… back to ${sender.username}; ` +
          "the sender will keep seeing it as stored offline"
      )
    })

  // ------------------------------------------------------------------
  // Acceptor

  const refuseStorage = (error: { readonly message: string }) =>
    Effect.zipRight(
      Effect.logError("chat store failure", error.message),
      Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "the recipient's storage failed; try again later" }))
    )

  /**
   * Checks, commits and acknowledges an envelope for this user. `via` is the
   * node that handed it over; when that is not the sender's node, the
   * receipt is also carried back to the sender. A refusal that may turn
   * into acceptance later (a sender key the user may still accept) comes as
   * `NotYetAccepted`: its sender learns the refusal, but mail of it is kept.
   */
  const acceptEnvelope = (
    envelope: Envelope,
    via: NodeId | undefined
  ): Effect.Effect<SignedReceipt, MessageRefused | RequestRefused | NotYetAccepted> =>
    Effect.gen(function*() {
      // Whom this node serves: a profile it cannot read now says nothing about the envelope (refused
      // for now, so mail of it is kept, never dropped as someone else's).
      const own = yield* directory.username.pipe(
        Effect.mapError(() => new RequestRefused({ reason: "Overloaded", detail: "the recipient cannot read its profile now; try again later" }))
      )
      if (Option.isNone(own) || envelope.recipientKey !== userKey(own.value)) {
        return yield* new MessageRefused({ reason: "WrongRecipient", detail: "this node does not serve the envelope's recipient" })
      }
      const opened = yield* crypto.open(envelope).pipe(
        Effect.mapError((error) => new MessageRefused({ reason: "Invalid", detail: error.message.slice(0, 500) }))
      )
      const now = yield* Clock.currentTimeMillis
      // The carried record first, without any lookup: for `from`, valid when the message was sent,
      // holding the key that signed it (and, by that signature, not swapped). Its claim is checked
      // within the claim-check budget of the node that handed the message over (this node's own for
      // mail it holds itself); over it, the message is refused Overloaded and comes again later.
      const consistent = yield* dht.claimCheckGate(via ?? identity.nodeId)(claimRules, (claim) =>
        checkOpenedMessage({
          opened,
          expectedRecipient: own.value,
          receivedAt: now,
          verify,
          claim,
          limits: nodeConfig.recordLimits
        })
      )
      if (Either.isLeft(consistent)) {
        const detail = consistent.left.message.slice(0, 500)
        // Dated in this node's future (the sender's clock runs ahead): good once that time has come, so
        // held like a message whose sender cannot be checked yet, never dropped.
        if (consistent.left._tag === "MessageRejected" && consistent.left.reason === "SentInFuture") {
          return yield* new MessageRefused({ reason: "SenderUnknown", detail })
        }
        return yield* new MessageRefused({ reason: "Invalid", detail })
      }
      // Then whether that key may speak for the name: the pin, else the network (see senderTrust).
      const believed = yield* checkSender(opened.senderRecord)
      if (believed._tag === "Refused") {
        const refusal = new MessageRefused({ reason: "Invalid", detail: believed.detail.slice(0, 500) })
        return yield* (believed.final ? Effect.fail(refusal) : Effect.fail(new NotYetAccepted({ refusal })))
      }
      // Held: the message is kept by its sender or relays and tried again (SenderUnknown is what they retry).
      if (believed._tag === "Held") {
        return yield* new MessageRefused({ reason: "SenderUnknown", detail: believed.detail.slice(0, 500) })
      }
      const sender = believed.record
      const id: MessageId = mailId({ _tag: "Message", envelope })
      const stored = yield* store.recordReceived({
        id,
        from: opened.from,
        to: opened.to,
        sequence: opened.sequence,
        sentAt: opened.sentAt,
        text: opened.text,
        receivedAt: now
      }).pipe(Effect.catchAll(refuseStorage))
      // The conversation holds its most unread messages: refused for now, with no receipt, so the sender
      // (or its relays) keeps the message and brings it again once the user has read some.
      if (stored === "full") {
        return yield* new RequestRefused({
          reason: "QuotaExceeded",
          detail: `the recipient holds too many unread messages from ${opened.from}; it takes more once they are read`
        })
      }
      if (stored === "new") {
        yield* count("received")
        const entry: HistoryEntry = {
          id,
          conversation: opened.from,
          direction: "in",
          from: opened.from,
          to: opened.to,
          sequence: opened.sequence,
          sentAt: opened.sentAt,
          text: opened.text,
          status: "received",
          receivedAt: now,
          read: false
        }
        yield* publish({ _tag: "Received", entry })
      }
      const receipt = yield* crypto.signReceipt({
        version: RECEIPT_FORMAT_VERSION,
        messageId: id as EnvelopeId, // `mailId` of a message is its envelope id
        recipient: own.value,
        receivedAt: now
      })
      // Not from the sender's own node (a relay's push, a mailbox): the receipt goes back to the node
      // and address of the sender's record, which the message carried, so no lookup is needed. Once
      // per message for a while: the copies of its other relays, taken in the same pull, are answered
      // but not carried again (k carries a message would crowd other senders' receipts out of the
      // queue). A duplicate is carried too when its message was not carried lately: this node may have
      // stored it and died before any receipt left, and its sender still waits for one.
      const carriedAt = carriedReceipts.get(id)
      if (via !== sender.nodeId && (carriedAt === undefined || now - carriedAt >= RECEIPT_CARRY_WINDOW_MS)) {
        setNewest(carriedReceipts, id, now, MAX_PENDING_RECEIPTS)
        const queued = yield* Queue.offer(pendingReceipts, { receipt, sender })
        if (!queued) yield* Effect.logWarning("too many receipts waiting to be carried back; one was dropped")
      }
      return receipt
    })

  // ------------------------------------------------------------------
  // Sender

  const nextAttemptAt = (attempts: number) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      return now + Duration.toMillis(backoffDelay(config.sendRetry, attempts, yield* Random.next))
    })

  const settle = (entry: OutboxEntry, status: Exclude<OutgoingStatus, "queued">, via?: "direct" | "relay") =>
    Effect.gen(function*() {
      yield* store.complete(entry.id, status)
      yield* publish({ _tag: "StatusChanged", id: entry.id, conversation: entry.recipient, status, ...(via === undefined ? {} : { via }) })
      yield* count(status === "delivered" ? "deliveredDirect" : "storedOffline")
    })

  /**
   * Relays hold `entry`: it shows as "stored-offline", and stays in the outbox
   * to be tried again directly every `storedOfflineRecheck` until its receipt
   * arrives; once the mail lifetime is over, only a receipt can still end it.
   */
  const keepStoredOffline = (entry: OutboxEntry) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      if (now - entry.enqueuedAt >= Duration.toMillis(config.mailTtl)) {
        yield* settle(entry, "stored-offline")
        return
      }
      const before = yield* store.message(entry.id)
      // 10 min, 20, 40, then every 80 min: a friend away for two weeks costs a few hundred tries, not thousands.
      const recheck = Duration.toMillis(config.storedOfflineRecheck) * 2 ** Math.min(entry.attempts, MAX_RECHECK_DOUBLINGS)
      yield* store.keepAsStoredOffline(entry.id, now + recheck, entry.attempts + 1)
      if (Option.isSome(before) && before.value.status === "queued") {
        yield* publish({ _tag: "StatusChanged", id: entry.id, conversation: entry.recipient, status: "stored-offline" })
        yield* count("storedOffline")
      }
    })

  /**
   * One delivery attempt of `entry`, given the recipient's record if it was
   * found, and a way to leave mail with the recipient's relays.
   */
  const attempt = (
    entry: OutboxEntry,
    record: Option.Option<UserRecord>,
    toRelays: (mail: Mail) => Effect.Effect<{ readonly accepted: number; readonly attempted: number; readonly refusals: ReadonlyArray<string> }>
  ) =>
    Effect.gen(function*() {
      const envelope = decodeEnvelopeJson(entry.envelopeJson)
      if (Either.isLeft(envelope)) {
        yield* Effect.logError(`outbox entry ${entry.id} does not hold a valid envelope; it stays queued`, envelope.left.message)
        return "retry" as AttemptOutcome
      }
      if (Option.isSome(record)) {
        // Directly, or through the relays of a recipient behind a NAT.
        const direct = yield* Effect.either(
          sendByRoutes(transport, record.value, new SendMessage({ envelope: envelope.right }), callOptions)
        )
        if (Either.isRight(direct)) {
          const receipt = direct.right.value.receipt
          const checked = checkReceipt({ receipt, recipientRecord: record.value, verify })
          if (Either.isRight(checked) && receipt.messageId === entry.id) {
            // Through a relay when the recipient is behind a NAT (its record lists relays, no address).
            yield* settle(entry, "delivered", direct.right.peer.relayedBy === undefined ? "direct" : "relay")
            return "delivered" as AttemptOutcome
          }
          yield* Effect.logWarning(`the recipient ${entry.recipient} answered message ${entry.id.slice(0, 16)}… with an invalid receipt`)
          return "retry" as AttemptOutcome
        }
        if (direct.left._tag !== "TransportError") {
          // The recipient is online but refused (it cannot see our record yet, or is overloaded): retry later.
          yield* Effect.logWarning(`${entry.recipient} did not accept message ${entry.id.slice(0, 16)}…: ${direct.left.message}`)
          return "retry" as AttemptOutcome
        }
      }
      const relayed = yield* toRelays({ _tag: "Message", envelope: envelope.right })
      // One relay that says "stored" and drops the mail must not end delivery: enough of the
      // recipient's closest (all of them when fewer are known) must hold it.
      const required = Math.min(config.minRelayConfirmations, relayed.attempted)
      if (relayed.accepted > 0 && relayed.accepted >= required) {
        yield* keepStoredOffline(entry)
        return "stored-offline" as AttemptOutcome
      }
      if (relayed.accepted > 0) {
        yield* Effect.logWarning(
          `only ${relayed.accepted} of the ${required} relays needed confirmed message ${entry.id.slice(0, 16)}… ` +
            `for ${entry.recipient}; it stays queued`
        )
        return "retry" as AttemptOutcome
      }
      yield* Effect.logWarning(
        `${entry.recipient} is offline and no relay took message ${entry.id.slice(0, 16)}… ` +
          `(${relayed.attempted} asked${relayed.refusals[0] === undefined ? "" : `: ${relayed.refusals[0]}`}); it stays queued`
      )
      return "retry" as AttemptOutcome
    })

  /**
   * Delivers one recipient's due entries, up to `MESSAGES_IN_FLIGHT` at once
   * (the history orders messages by their sender's time and sequence, not by
   * arrival); the entries that fail wait for their next attempt.
   */
  const deliverTo = (recipient: Username, entries: ReadonlyArray<OutboxEntry>) =>
    Effect.gen(function*() {
      const record = yield* recordOf(recipient, true)
      // One relay lookup serves every message of this pass that needs it.
      // The recipient's own node is not a relay for its mail: it could not be reached as the recipient.
      const recipientNode = Option.map(record, (found) => found.nodeId)
      const relays = yield* Effect.cached(Effect.map(dht.findNodeDisjoint(userKey(recipient)), (closest) =>
        closest
          .filter((contact) => Option.isNone(recipientNode) || contact.nodeId !== recipientNode.value)
          .slice(0, nodeConfig.k)))
      const toRelays = (mail: Mail) => Effect.flatMap(relays, (targets) => storeAt(mail, targets))
      yield* Effect.forEach(entries, (entry) =>
        Effect.gen(function*() {
          const outcome = yield* attempt(entry, record, toRelays)
          if (outcome !== "retry") return
          yield* store.reschedule(entry.id, yield* nextAttemptAt(entry.attempts + 1), entry.attempts + 1)
          yield* count("retries")
        }), { concurrency: MESSAGES_IN_FLIGHT, discard: true })
    }).pipe(Effect.catchAllCause((cause) => Effect.logError(`delivery to ${recipient} failed`, cause)))

  /** One pass over the due entries; returns how many it took (a full batch means more may be due). */
  const senderPass: Effect.Effect<number> = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const due = yield* store.due(now, config.senderBatch)
    const byRecipient = new Map<Username, Array<OutboxEntry>>()
    for (const entry of due) {
      const entries = byRecipient.get(entry.recipient)
      if (entries === undefined) byRecipient.set(entry.recipient, [entry])
      else entries.push(entry)
    }
    yield* Effect.forEach(byRecipient, ([recipient, entries]) => deliverTo(recipient, entries), {
      concurrency: config.senderConcurrency,
      discard: true
    })
    return due.length
  }).pipe(
    Effect.catchAllCause((cause) => Effect.as(Effect.logError("the sender's pass failed", cause), 0))
  )

  const runSender = Effect.asVoid(senderPass)

  // ------------------------------------------------------------------
  // Mailbox

  const authorization = (operation: MailboxOperation, key: Key, relay: NodeId, ids: ReadonlyArray<EnvelopeId>) =>
    Effect.map(Clock.currentTimeMillis, (now) =>
      signMailboxRequest(
        { operation, recipientKey: key, relay, requestedAt: now, ids },
        identity.sign
      ))

  /** Takes one mail for this user; true when it may be acknowledged (committed, or junk that never will be). */
  const takeMail = (mail: Mail, via: NodeId | undefined) =>
    Effect.gen(function*() {
      if (mail._tag === "Receipt") {
        const taken = yield* Effect.either(takeReceipt(mail.receipt))
        return Either.isRight(taken) ? "receipt" as const : "keep" as const
      }
      const accepted = yield* Effect.either(acceptEnvelope(mail.envelope, via))
      if (Either.isRight(accepted)) return "message" as const
      const refusal = accepted.left
      // Refused for now only (a sender key the user may still accept): the mail stays for a later pull.
      if (refusal._tag === "NotYetAccepted") return "keep" as const
      if (refusal._tag === "MessageRefused" && refusal.reason !== "SenderUnknown") {
        yield* Effect.logWarning("dropped mail that does not check out", refusal.message)
        return "junk" as const
      }
      return "keep" as const
    })

  const pullFrom = (relay: Contact, key: Key) =>
    Effect.gen(function*() {
      let messages = 0
      let receipts = 0
      for (let round = 0; round < MAX_FETCH_ROUNDS_PER_RELAY; round++) {
        const fetched = yield* Effect.either(
          transport.send(
            relay,
            new FetchMail({ recipientKey: key, authorization: yield* authorization("FetchMail", key, relay.nodeId, []) }),
            callOptions
          )
        )
        if (Either.isLeft(fetched)) {
          yield* Effect.logDebug("mailbox fetch failed", fetched.left.message)
          break
        }
        const done: Array<EnvelopeId> = []
        for (const mail of fetched.right.value.mail) {
          const taken = yield* takeMail(mail, relay.nodeId)
          if (taken === "keep") continue
          if (taken === "message") messages++
          if (taken === "receipt") receipts++
          done.push(mailId(mail))
        }
        let acknowledged = true
        if (done.length > 0) {
          const acked = yield* Effect.either(
            transport.send(
              relay,
              new AckMail({ recipientKey: key, ids: done, authorization: yield* authorization("AckMail", key, relay.nodeId, done) }),
              callOptions
            )
          )
          // A relay that did not delete what was taken (it refuses while the name is contested, or
          // failed) would answer the same mail again: fetching more now would loop on it.
          acknowledged = Either.isRight(acked) && acked.right.value.removed >= done.length
        }
        if (!fetched.right.value.more || done.length === 0 || !acknowledged) break
      }
      return { messages, receipts }
    })

  /** Mail this node holds for its own user as one of the k closest to its key. */
  const pullLocal = (key: Key) =>
    Effect.gen(function*() {
      const held = yield* store.mailFor(key, MAX_MAIL_PER_FETCH * MAX_FETCH_ROUNDS_PER_RELAY)
      let messages = 0
      let receipts = 0
      const done: Array<MessageId> = []
      for (const item of held) {
        const mail = decodeMailJson(item.envelopeJson)
        if (Either.isLeft(mail)) {
          done.push(item.id)
          continue
        }
        const taken = yield* takeMail(mail.right, undefined)
        if (taken === "keep") continue
        if (taken === "message") messages++
        if (taken === "receipt") receipts++
        done.push(item.id)
      }
      if (done.length > 0) yield* store.removeMail(key, done)
      return { messages, receipts }
    }).pipe(
      Effect.catchAll((error) => Effect.as(Effect.logError("reading this node's own mailbox failed", error.message), { messages: 0, receipts: 0 }))
    )

  const pullMailbox: Effect.Effect<MailboxPull> = Effect.gen(function*() {
    const own = yield* ownUsername
    if (Option.isNone(own)) return { relays: 0, messages: 0, receipts: 0 }
    const key = userKey(own.value)
    const local = yield* pullLocal(key)
    const lookup = yield* dht.findNode(key)
    const relays = lookup.closest.slice(0, nodeConfig.k)
    // All relays at once (at most k): a relay that vanished costs one call timeout, not a turn in a queue.
    const pulled = yield* Effect.forEach(relays, (relay) => pullFrom(relay, key), { concurrency: "unbounded" })
    const total = pulled.reduce(
      (sum, one) => ({ messages: sum.messages + one.messages, receipts: sum.receipts + one.receipts }),
      local
    )
    if (total.messages + total.receipts > 0) {
      yield* Effect.logInfo(`mailbox: took ${total.messages} messages and ${total.receipts} receipts from ${relays.length} relays`)
    }
    return { relays: relays.length, ...total }
  })

  // ------------------------------------------------------------------
  // Handlers and fibers

  yield* transport.serve({
    SendMessage: (caller, request) =>
      acceptEnvelope(request.envelope, caller.nodeId).pipe(
        Effect.map((receipt) => ({ receipt })),
        // The sender learns the refusal; it keeps the message, and its later tries are checked afresh.
        Effect.catchTag("NotYetAccepted", ({ refusal }) => Effect.fail(refusal))
      ),
    DeliverReceipt: (_caller, request) => Effect.map(takeReceipt(request.receipt), (outcome) => ({ outcome }))
  } satisfies Pick<ChatHandlers, "SendMessage" | "DeliverReceipt">)

  // The sender: a pass whenever a message is sent, when the earliest retry is due, at least every
  // poll interval, and straight away again after a full batch (more may be due).
  // Between passes it sleeps until the earliest retry is due (at most the poll interval).
  const untilNextDue = Effect.gen(function*() {
    const pollMs = Duration.toMillis(config.senderPollInterval)
    const next = yield* store.nextDueAt.pipe(Effect.orElseSucceed(() => Option.none<number>()))
    if (Option.isNone(next)) return Duration.millis(pollMs)
    const now = yield* Clock.currentTimeMillis
    return Duration.millis(Math.min(pollMs, Math.max(0, next.value - now)))
  })
  yield* Effect.forkScoped(Effect.forever(Effect.flatMap(
    senderPass,
    (taken) =>
      taken >= config.senderBatch
        ? Effect.void
        : Effect.flatMap(untilNextDue, (wait) => Effect.race(Queue.take(wakeSender), Effect.sleep(wait)))
  )))
  // Receipts travel back to senders two at a time.
  const carryNext = Effect.flatMap(Queue.take(pendingReceipts), (pending) =>
    carryReceipt(pending).pipe(Effect.catchAllCause((cause) => Effect.logError("carrying a receipt failed", cause))))
  yield* Effect.forkScoped(Effect.forever(carryNext))
  yield* Effect.forkScoped(Effect.forever(carryNext))
  // The mailbox: once connected (any peer answered), then periodically, and at once after the node's
  // relays changed (a node behind a NAT that lost its connections or moved: mail may have gone to its
  // mailbox meanwhile). A pull that found no relay (the node knows nobody yet) is tried again soon: 1 s, 2 s, 4 s …
  const circuits = yield* Effect.serviceOption(Circuits)
  const relaysChanged: Effect.Effect<void> = Option.match(circuits, {
    onNone: () => Effect.never,
    // The stream starts with the relays held now: the next element is a change.
    onSome: (service) => Stream.runDrain(Stream.take(Stream.drop(service.relayChanges, 1), 1))
  })
  yield* Effect.forkScoped(Effect.gen(function*() {
    yield* dht.awaitConnected
    let empty = 0
    for (;;) {
      const pulled = yield* pullMailbox.pipe(
        Effect.catchAllCause((cause) => Effect.as(Effect.logError("mailbox pull failed", cause), undefined))
      )
      empty = pulled !== undefined && pulled.relays === 0 ? empty + 1 : 0
      const interval = Duration.toMillis(config.mailboxFetchInterval)
      yield* Effect.raceFirst(
        Effect.sleep(Duration.millis(empty === 0 ? interval : Math.min(interval, 1000 * 2 ** (empty - 1)))),
        relaysChanged
      )
    }
  }))

  // ------------------------------------------------------------------
  // The user's side

  const parse = (input: string) => Either.match(parseUsername(input), { onLeft: Effect.fail, onRight: Effect.succeed })

  const send = (to: string, text: string): Effect.Effect<SentMessageInfo, SendError> =>
    Effect.gen(function*() {
      const ref = yield* Either.match(parseNameRef(to), { onLeft: Effect.fail, onRight: Effect.succeed })
      const recipient = ref.username
      const own = yield* ownUsername
      if (Option.isNone(own)) return yield* new NotRegistered()
      if (own.value === recipient) return yield* new SelfMessage({ username: recipient })
      const sentAt = yield* Clock.currentTimeMillis
      // Check the text before the lookup, so a blank or too-long message fails at once.
      const checkedText = parseOutgoingText(text)
      if (Either.isLeft(checkedText)) return yield* checkedText.left
      // The encryption key is all sealing needs, and it does not change with the address: a cached
      // (pin-checked) record will do, unless the user named one key on purpose.
      const cached = ref.fingerprint === undefined ? yield* contacts.cached(recipient) : undefined
      const record = cached ?? (yield* contacts.resolve(ref))
      // The message carries this user's own record, so the recipient can check it without a lookup.
      const senderRecord = yield* ownRecord(own.value)
      const sent = yield* store.send(
        { from: own.value, to: recipient, sentAt, text },
        (sequence) =>
          Effect.gen(function*() {
            const message = makeChatMessage({
              from: own.value,
              to: recipient,
              senderSigningKey: ownKey,
              senderRecord,
              sequence,
              sentAt,
              text
            })
            if (Either.isLeft(message)) return yield* message.left
            const sealed = yield* crypto.seal(message.right, record.encryptionKey)
            return { id: sealed.id as MessageId, envelope: encodeEnvelopeJson(sealed.envelope) }
          }),
        sentAt
      ).pipe(Effect.catchTag("DuplicateMessage", (error) => Effect.die(error)))
      yield* Queue.offer(wakeSender, undefined)
      return { id: sent.id, from: own.value, to: recipient, sequence: sent.sequence, sentAt, status: "queued" as const }
    })

  const statusOf = (id: MessageId) =>
    Effect.flatMap(store.message(id), (entry) =>
      Option.isSome(entry) && entry.value.direction === "out"
        ? Effect.succeed(entry.value.status as OutgoingStatus)
        : Effect.fail(new UnknownMessage({ id })))

  const awaitDelivery = (id: MessageId, timeout: Duration.DurationInput) =>
    Effect.scoped(Effect.gen(function*() {
      // Subscribe before reading the status, so a receipt arriving in between is not missed.
      const subscription = yield* PubSub.subscribe(events)
      const current = yield* statusOf(id)
      if (current === "delivered") return current
      const delivered = Queue.take(subscription).pipe(
        Effect.repeat({ until: (event) => event._tag === "StatusChanged" && event.id === id && event.status === "delivered" }),
        Effect.as("delivered" as const)
      )
      const outcome = yield* Effect.timeout(delivered, timeout).pipe(Effect.option)
      return Option.isSome(outcome) ? outcome.value : yield* statusOf(id)
    }))

  const messenger: Messenger["Type"] = {
    send,
    awaitDelivery,
    history: (name, options) =>
      Effect.flatMap(parse(name), (conversation) =>
        store.history(conversation, {
          limit: options?.limit ?? 100,
          ...(options?.before === undefined ? {} : { before: options.before })
        })),
    inbox: store.conversations(),
    markRead: (name) => Effect.flatMap(parse(name), store.markRead),
    events: Stream.fromPubSub(events)
  }
  const delivery: Delivery["Type"] = { runSender, pullMailbox, stats: Ref.get(counters) }
  return Context.make(Messenger, messenger).pipe(Context.add(Delivery, delivery), Context.add(Contacts, contacts))
})

/** The delivery layer: provides `Messenger` (and `Delivery`, `Contacts`), serves SendMessage and DeliverReceipt. */
export const layer: Layer.Layer<
  Messenger | Delivery | Contacts,
  never,
  ChatStore | ChatConfig | NodeConfig | DhtNode | Directory | Identity | Signatures | Transport | MessageCrypto
> = Layer.scopedContext(makeDelivery)
