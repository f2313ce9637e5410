/**
 * The relay side of offline delivery. When a recipient cannot be reached, its
 * sender leaves the sealed envelope (or a delivery receipt) with the k nodes
 * closest to the recipient's user key (`StoreMail`); every node is such a
 * relay for the users whose keys fall near its id. A relay keeps the mail in
 * the bounded mailboxes of the `ChatStore` (per-recipient and total quotas,
 * refusing loudly with `QuotaExceeded` when full, except that a full mailbox
 * makes room for a sender holding less than its largest holder; dropped
 * after `mailTtl`),
 * pushes it to the recipient once it finds the recipient's node online (at
 * once when that node stores its record here on coming back, else every push
 * round with a back-off),
 * lets the recipient read and clear its own mailbox with requests signed by
 * the key it publishes (`FetchMail`, `AckMail`), and once an hour copies it to
 * the recipient key's current k closest nodes, so mail survives relays
 * leaving. The recipient's user record, which the relay needs to tell who owns
 * a mailbox and where to push, lives under the same key, so a relay of a
 * mailbox normally holds its owner's record too.
 *
 * Duplicate storms. The 2014 prototype passed mail on to other relays on
 * every failed push, so each undeliverable message multiplied on every pass.
 * Here:
 *
 * - a relay never passes mail on because a push failed: it keeps it, and
 *   backs that recipient off (exponentially, capped at 10 minutes), so an
 *   offline recipient costs neither copies nor a DHT lookup every round;
 * - mail is copied relay-to-relay only by re-replication, at most once per
 *   `mailReplicationInterval` per relay, and a relay that was itself handed a
 *   copy within the interval (a `StoreMail` answered "Stored" or
 *   "Duplicate") skips it: Kademlia's republish optimisation, so in steady
 *   state about one relay per interval re-replicates a mail (k - 1 calls per
 *   interval, not k·(k - 1));
 * - storing mail marks its id seen, and the seen ids outlive the mail
 *   (`2 × mailTtl`), so a relay refuses ("Duplicate") mail it held before:
 *   mail that was delivered and acknowledged is not resurrected by a lagging
 *   relay's re-replication, and two relays cannot keep renewing each other's
 *   expired copies.
 *
 * Storage anyone could fill (issue 12). A relay keeps mail only
 *
 * - for mailboxes it belongs to: it is among the k closest of the mailbox's
 *   key by its own routing table, with slack (else `NotResponsible`);
 * - with postage (core `Mail.checkPostage`): the sender's valid record and
 *   its signature over the mail, checked cheapest first after the quotas;
 * - within fair shares (core `StorageQuota`): one sender key, and one source
 *   address, hold at most a share of a mailbox and of the total, so a flood
 *   from one key or one address leaves room for everyone else's mail. Copies
 *   from a fellow relay of the mailbox (re-replication) are not counted
 *   against the relay's address, only against their sender key;
 * - for a few hours only (`junkMailTtl`) when it holds no record of the
 *   mailbox's name, until such a record arrives (core `StoragePolicy.mailLifetime`).
 *
 * Re-replication re-checks this before it copies: junk and mail without
 * postage are not spread, and mail for a mailbox this relay no longer
 * belongs to is handed to the k closest and then dropped here.
 *
 * Bounds: the mailboxes are bounded by the store's quotas; the in-memory
 * replication marks and push back-off entries by `mailboxMaxMessagesTotal`
 * (and pruned to the mail and recipients actually held every round); a push
 * round serves at most `PUSH_CONCURRENCY` recipients at once and at most one
 * store page (`maxPageSize`) of mail per recipient; a replication round does
 * one lookup per recipient key with due mail.
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Duration, Effect, Either, Layer, Option, Random, Schema } from "effect"
import { addressGroupOf } from "../core/AddressGroup.js"
import { compareDistance } from "../core/Distance.js"
import type { Key } from "../core/Id.js"
import type { Contact } from "../core/Contact.js"
import {
  checkMailboxRequest,
  checkPostage,
  Mail,
  MAILBOX_REQUEST_MAX_SKEW_MS,
  MailboxAccessDenied,
  type MailboxAuthorization,
  mailId,
  mailRecipientKey,
  MAX_MAIL_PER_FETCH,
  Postage
} from "../core/Mail.js"
import { checkReceipt, type MessageId, utf8ByteLength } from "../core/Message.js"
import type { NameAnswer } from "../core/NameResolution.js"
import { trimOldest } from "../core/NewestFirst.js"
import { makeTokenBucket, take, TokenBuckets } from "../core/TokenBucket.js"
import { routesOf } from "../core/PeerAddress.js"
import { amongClosestKnown, describePlacementRefusal, mailLifetime } from "../core/StoragePolicy.js"
import type { ClaimRules, UserRecord } from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { DhtNode } from "../node/DhtNode.js"
import { Identity, Signatures } from "../node/Identity.js"
import { backoffDelay, type BackoffPolicy, NodeConfig } from "../node/NodeConfig.js"
import { type AuthenticatedPeer, RequestRefused } from "../node/Protocol.js"
import { DeliverReceipt, SendMessage, StoreMail } from "./ChatProtocol.js"
import { type PeerTarget, relayedTarget, Transport } from "../node/Transport.js"
import type { ChatHandlers } from "./ChatProtocol.js"
import { ChatConfig } from "./ChatConfig.js"
import { ChatStore, ChatStoreConfig, type MailItem, type NewMail, type StorageError } from "./ChatStore.js"

/** Recipients a push round serves at once. */
export const PUSH_CONCURRENCY = 4

/** Longest a relay waits before pushing to a recipient it could not reach again. */
export const MAX_PUSH_BACKOFF = Duration.minutes(10)

/** Checks for due re-replication per `mailReplicationInterval` (so a mail is copied within 7/6 of an interval). */
export const REPLICATION_CHECKS_PER_INTERVAL = 6

/** Seen ids are kept this many mail lifetimes, so an expired copy cannot be renewed by a relay holding a younger one. */
export const SEEN_RETENTION_TTLS = 2

/** Longest `RequestRefused` detail (the schema's limit). */
const MAX_DETAIL_LENGTH = 500

/**
 * The source a relay counts a caller's mail under for the per-address
 * shares: the network (core `addressGroupOf`: the /24 of an IPv4 address,
 * the /48 of an IPv6 one) of the host its connection came from, as the
 * transport observed it, so an attacker holding a block of addresses counts
 * once. Without an observed host (a transport that does not say), the
 * caller's node id, which at least cannot be spoofed: an advertised host
 * could name someone else's address and use up its share.
 */
export const mailSource = (caller: AuthenticatedPeer): string =>
  caller.observedHost !== undefined && caller.observedHost !== ""
    ? `net:${addressGroupOf(caller.observedHost)}`
    : `node:${caller.nodeId}`

/** What a relay has done since it started (mail held is read from the store). */
export interface RelayStats {
  /** Mails held now, and their bytes as counted against the quotas. */
  readonly held: number
  readonly heldBytes: number
  /** Inbound StoreMail calls answered "Stored". */
  readonly stored: number
  /** Inbound StoreMail calls answered "Duplicate" (held now or seen before). */
  readonly duplicates: number
  /** Inbound StoreMail calls refused (not responsible, quota, postage, storage failure, expired). */
  readonly refused: number
  /** Mails of mailboxes this relay no longer belongs to, handed to the k closest and dropped here. */
  readonly handedOff: number
  /** Mails handed to their recipient by a push (and removed). */
  readonly pushed: number
  /** StoreMail calls this relay sent to re-replicate mail. */
  readonly replicated: number
  /** Mails served by FetchMail. */
  readonly fetched: number
  /** Mails removed by AckMail. */
  readonly acknowledged: number
  /** Mails dropped at the end of their lifetime. */
  readonly expired: number
}

/** What one push round did. */
export interface PushRoundSummary {
  /** Recipients with held mail that were tried. */
  readonly recipients: number
  /** Recipients skipped because they are backed off. */
  readonly backedOff: number
  /** Mails delivered (and removed). */
  readonly pushed: number
  /** Mails dropped at the end of their lifetime. */
  readonly expired: number
}

/** What one replication round did. */
export interface ReplicationRoundSummary {
  /** Recipient keys looked up (those with due mail). */
  readonly recipients: number
  /** Mails copied. */
  readonly mails: number
  /** StoreMail calls sent. */
  readonly copies: number
  /** Mails not copied: junk (no record of the recipient's name here) or without postage. */
  readonly skipped: number
  /** Mails handed to the k closest and dropped here (this relay no longer belongs to their mailbox). */
  readonly handedOff: number
}

/** A running relay. */
export interface RelayService {
  /** Counters since start, and the mail held now. */
  readonly stats: Effect.Effect<RelayStats, StorageError>
  /**
   * Runs one push round now: drops expired mail and old seen ids, then tries
   * every recipient with held mail that is not backed off. Rounds never overlap.
   */
  readonly pushRound: Effect.Effect<PushRoundSummary, StorageError>
  /** Runs one re-replication round now for every mail not stored, refreshed or copied here within the interval. */
  readonly replicationRound: Effect.Effect<ReplicationRoundSummary, StorageError>
}

/** How a push of one mail ended. */
type PushOutcome = "delivered" | "kept" | "unreachable"

/** A recipient the relay could not reach: how often in a row, and when to try again. */
interface Backoff {
  readonly attempts: number
  readonly until: number
}

const MailJson = Schema.parseJson(Mail)
const encodeMailJson = Schema.encodeSync(MailJson)
const decodeMailJson = Schema.decodeUnknownEither(MailJson)
const PostageJson = Schema.parseJson(Postage)
const encodePostageJson = Schema.encodeSync(PostageJson)
const decodePostageJson = Schema.decodeUnknownEither(PostageJson)

const truncate = (text: string): string =>
  text.length <= MAX_DETAIL_LENGTH ? text : `${text.slice(0, MAX_DETAIL_LENGTH - 1)}…`

/** Mailboxes whose owner (as the network answered) a relay remembers. */
const OWNER_CACHE_SIZE = 1024

/** How long a relay trusts the network's answer about a mailbox's owner: one minute. */
const OWNER_CACHE_MS = 60_000

/**
 * Reads of a mailbox's owner over the network (a lookup over disjoint
 * paths, dozens of calls) that one caller's `FetchMail`/`AckMail` may set off:
 * 4 at once, then one per 5 s. They run before the request's signature can
 * be checked (the owner's record names the key that signs), and answers are
 * remembered for a minute, so an owner pulling its one mailbox every few
 * minutes needs one now and then; a caller asking about many keys with
 * forged signatures would otherwise make the relay look each one up.
 */
export const OWNER_READS_PER_CALLER = { ratePerSecond: 0.2, capacity: 4, maxKeys: 4096 } as const

/** The same over all callers (many node ids are cheap): 2 a second, 20 at once. */
export const OWNER_READS_TOTAL = { ratePerSecond: 2, capacity: 20 } as const


/** Relays: the StoreMail, FetchMail and AckMail handlers and the push and re-replication loops. */
export class Relay extends Context.Tag("peerchat/Relay")<Relay, RelayService>() {
  /** Installs the handlers and forks the loops into the current scope. */
  static readonly make = Effect.gen(function*() {
    const store = yield* ChatStore
    const storeConfig = yield* ChatStoreConfig
    const chatConfig = yield* ChatConfig
    const nodeConfig = yield* NodeConfig
    const dht = yield* DhtNode
    const transport = yield* Transport
    const identity = yield* Identity
    const { claimHash, verify } = yield* Signatures
    const claimRules: ClaimRules = { minDifficulty: nodeConfig.minClaimDifficulty, hash: claimHash }
    const self = identity.nodeId
    const callOptions = { timeout: nodeConfig.callTimeout }
    const ttlMs = Duration.toMillis(chatConfig.mailTtl)
    const junkTtlMs = Duration.toMillis(chatConfig.junkMailTtl)
    const responsible = nodeConfig.k + nodeConfig.storageSlack
    const replicationMs = Duration.toMillis(chatConfig.mailReplicationInterval)
    const maxTracked = storeConfig.mailboxMaxMessagesTotal
    const pushBackoff: BackoffPolicy = {
      initial: chatConfig.relayPushInterval,
      factor: chatConfig.sendRetry.factor,
      max: MAX_PUSH_BACKOFF,
      jitter: chatConfig.sendRetry.jitter
    }

    const counters = {
      stored: 0,
      duplicates: 0,
      refused: 0,
      handedOff: 0,
      pushed: 0,
      replicated: 0,
      fetched: 0,
      acknowledged: 0,
      expired: 0
    }
    // Mail id → when it was last stored, refreshed or copied here (ms). Map order is refresh order.
    // Bound: maxTracked; pruned to the mail held at every replication round; lost on restart (which
    // costs one extra copy of each mail).
    const replicatedAt = new Map<string, number>()
    // Recipient key → back-off after failed pushes. Bound: maxTracked; pruned to the recipients with
    // held mail at every push round.
    const backoffs = new Map<Key, Backoff>()
    const pushLock = yield* Effect.makeSemaphore(1)
    const replicationLock = yield* Effect.makeSemaphore(1)

    const markReplicated = (id: string, now: number): void => {
      replicatedAt.delete(id)
      replicatedAt.set(id, now)
      trimOldest(replicatedAt, maxTracked)
    }

    const refused = (reason: RequestRefused["reason"], detail: string) => {
      counters.refused++
      return new RequestRefused({ reason, detail: truncate(detail) })
    }

    const overloaded = (operation: string) => (error: StorageError) =>
      Effect.zipRight(
        Effect.logError(`relay: ${operation} failed`, error),
        Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "the relay's storage failed" }))
      )

    /** How a store's refusal of mail reaches the caller. */
    const storeRefusals = {
      MailboxFull: (full: { readonly message: string }) => Effect.fail(refused("QuotaExceeded", full.message)),
      StorageError: (error: StorageError) => {
        counters.refused++
        return overloaded("storing mail")(error)
      }
    }

    /** A mail held now or before: a copy that arrives, new or not, means someone re-replicated it just now. */
    const answerDuplicate = (id: string, now: number) => {
      markReplicated(id, now)
      counters.duplicates++
      return { outcome: "Duplicate" as const }
    }

    /**
     * Whom a StoreMail is counted for besides its sender key: the caller's
     * address, unless the caller is itself among the k + slack closest of the
     * mailbox this relay knows (a fellow relay re-replicating: its copies
     * carry many senders' mail, and counting them against its address would
     * refuse honest mail); "" is counted for nobody.
     */
    const sourceOf = (caller: AuthenticatedPeer, recipientKey: Key) =>
      Effect.map(dht.closestKnown(recipientKey, responsible), (known) =>
        amongClosestKnown(recipientKey, caller.nodeId, [self, ...known.map((contact) => contact.nodeId)], responsible)
          ? ""
          : mailSource(caller))

    /** Decodes a held mail; a row that does not decode is logged and removed (it can never be delivered). */
    const decodeHeld = (item: MailItem): Effect.Effect<Option.Option<Mail>> => {
      const decoded = decodeMailJson(item.envelopeJson)
      if (Either.isRight(decoded)) return Effect.succeed(Option.some(decoded.right))
      return Effect.logError(`relay: dropping held mail ${item.id} that does not decode`, decoded.left.message).pipe(
        Effect.zipRight(store.removeMail(item.recipientKey, [item.id])),
        Effect.catchAll((error) => Effect.logError(`relay: could not drop mail ${item.id}`, error)),
        Effect.as(Option.none())
      )
    }

    /** Every recipient key and mail id held, paging through the store by id. Bound: the total mailbox quota. */
    const heldMail = Effect.gen(function*() {
      const recipients = new Set<Key>()
      const ids: Array<{ readonly id: string; readonly recipientKey: Key }> = []
      let after: MessageId | undefined
      for (;;) {
        const page = yield* store.allMail(storeConfig.maxPageSize, after)
        const last = page[page.length - 1]
        if (last === undefined) break
        for (const item of page) {
          recipients.add(item.recipientKey)
          ids.push({ id: item.id, recipientKey: item.recipientKey })
        }
        after = last.id
      }
      return { recipients, ids }
    })

    // ------------------------------------------------------------------
    // Handlers

    /**
     * Whose key signs for a mailbox: the name's sole owner. While several keys
     * claim the name, the claimant whose node is calling may read (the mail is
     * sealed to one key, so only its owner can open it) but nobody may
     * delete: a rival claimant acknowledging mail would make it vanish.
     */
    const mailboxOwner = (operation: "FetchMail" | "AckMail", caller: AuthenticatedPeer, recipientKey: Key) =>
      Effect.map(resolvedOwner(caller, recipientKey), (answer): UserRecord | undefined => {
        if (answer === undefined) return undefined
        if (answer._tag === "Owner") return answer.record
        if (answer._tag === "Unclaimed" || operation === "AckMail") return undefined
        return answer.claimants.find(({ record }) => record.nodeId === caller.nodeId)?.record
      })

    // Who the network says owns a mailbox, remembered for a minute: an owner pulls each relay
    // every few minutes and acknowledges right after fetching, so one resolution serves a pull.
    // Bound: OWNER_CACHE_SIZE mailboxes (oldest first out).
    const owners = new Map<Key, { readonly answer: NameAnswer | undefined; readonly at: number }>()
    const relayScope = yield* Effect.scope
    // Reads under way, one per mailbox: requests that come meanwhile wait for its answer rather than
    // start another. Bound: one per mailbox being read (its name held here, so at most the record
    // store's names, or within the budgets below).
    const ownerReads = new Map<Key, Deferred.Deferred<NameAnswer | undefined>>()
    const ownerReadsByCaller = new TokenBuckets(OWNER_READS_PER_CALLER)
    let ownerReadsTotal = makeTokenBucket(OWNER_READS_TOTAL.capacity, yield* Clock.currentTimeMillis)
    const resolvedOwner = (caller: AuthenticatedPeer, recipientKey: Key): Effect.Effect<NameAnswer | undefined, RequestRefused> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const cached = owners.get(recipientKey)
        if (cached !== undefined && now - cached.at < OWNER_CACHE_MS) return cached.answer
        const underWay = ownerReads.get(recipientKey)
        if (underWay !== undefined) return yield* Deferred.await(underWay)
        // A new read. One this relay answers from its own store (it holds a claim of the name, as the k
        // closest of an owner's mailbox do) costs nothing; one over the network is within the caller's
        // allowance, then everyone's, so forged requests for mailboxes of junk cannot spend the relay's
        // lookups, nor the allowance owners' pulls would need.
        if ((yield* dht.heldRecords(recipientKey)).length === 0) {
          if (!ownerReadsByCaller.take(caller.nodeId, now).allowed) {
            return yield* refused("Overloaded", "too many mailboxes asked about lately; ask again later")
          }
          const total = take(ownerReadsTotal, { ...OWNER_READS_TOTAL, now })
          ownerReadsTotal = total.bucket
          if (!total.allowed) return yield* refused("Overloaded", "the relay is checking many mailboxes' owners; ask again later")
        }
        // The read runs on the relay's own scope, registered and started with no interruption between:
        // a caller that hangs up does not end it under the others waiting, and whatever ends it (a
        // defect too) completes it for them and takes its entry out.
        const read = yield* Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const started = yield* Deferred.make<NameAnswer | undefined>()
            ownerReads.set(recipientKey, started)
            const reading = Effect.map(Effect.either(dht.resolveRecords(recipientKey, { localAnswer: true })), (outcome) => {
              const answer = outcome._tag === "Right" ? outcome.right.answer : undefined
              owners.delete(recipientKey)
              owners.set(recipientKey, { answer, at: now })
              trimOldest(owners, OWNER_CACHE_SIZE)
              return answer
            })
            yield* Effect.forkIn(
              restore(reading).pipe(
                Effect.exit,
                Effect.flatMap((outcome) => Deferred.done(started, outcome)),
                Effect.ensuring(Effect.sync(() => ownerReads.delete(recipientKey)))
              ),
              relayScope
            )
            return started
          })
        )
        return yield* Deferred.await(read)
      })

    const checkMailbox = (
      operation: "FetchMail" | "AckMail",
      caller: AuthenticatedPeer,
      recipientKey: Key,
      authorization: MailboxAuthorization,
      ids: ReadonlyArray<MessageId>
    ) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        // A stale request is refused before anything else (the handlers answer an empty mailbox
        // before calling this, so neither costs a lookup).
        if (Math.abs(now - authorization.requestedAt) > MAILBOX_REQUEST_MAX_SKEW_MS) {
          return yield* new MailboxAccessDenied({
            reason: "Stale",
            detail: `made at ${authorization.requestedAt}, the relay's clock says ${now}`
          })
        }
        const owner = yield* mailboxOwner(operation, caller, recipientKey)
        const checked = checkMailboxRequest({
          request: { operation, recipientKey, relay: self, requestedAt: authorization.requestedAt, ids },
          signature: authorization.signature,
          owner,
          caller: caller.nodeId,
          now,
          verify
        })
        if (Either.isLeft(checked)) return yield* checked.left
      })

    const handlers: Pick<ChatHandlers, "StoreMail" | "FetchMail" | "AckMail"> = {
      StoreMail: (caller, { mail, postage }) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const recipientKey = mailRecipientKey(mail)
          const receivedAt = mail._tag === "Receipt" ? mail.receipt.receivedAt : undefined
          const lifetime = (recipientKnown: boolean) =>
            mailLifetime({ now, signedExpiresAt: postage.expiresAt, mailTtlMs: ttlMs, receivedAt, recipientKnown, junkTtlMs })
          // Cheapest first. Expiry: copies never outlive the expiry the sender signed, nor a
          // receipt its own lifetime, nor this relay's.
          const full = lifetime(true).fullExpiresAt
          if (full <= now) return yield* refused("NotAccepted", "the mail is older than the relay's mail lifetime")
          // Client mode: a node its peers cannot dial holds no mail for others (nobody would fetch it there).
          if ((yield* dht.reachability) === "Private") {
            return yield* refused("NotAccepted", "this node cannot be reached by its peers (behind a NAT): it holds no mail")
          }
          // Placement: only the k closest of the mailbox's key (with slack) keep its mail.
          const placement = yield* dht.storageRefusal(recipientKey)
          if (placement !== undefined) return yield* refused("NotResponsible", describePlacementRefusal(placement, recipientKey))
          // Quotas, by the postage's key and the caller's address, before any signature is checked.
          const id = mailId(mail)
          const envelopeJson = encodeMailJson(mail)
          const postageJson = encodePostageJson(postage)
          const item: NewMail = {
            id,
            recipientKey,
            envelopeJson,
            size: utf8ByteLength(envelopeJson) + utf8ByteLength(postageJson),
            storedAt: now,
            expiresAt: full,
            fullExpiresAt: full,
            senderKey: postage.sender.signingKey,
            source: yield* sourceOf(caller, recipientKey),
            postageJson
          }
          const admitted = yield* store.checkMail(item).pipe(Effect.catchTags(storeRefusals))
          if (admitted === "duplicate") return answerDuplicate(id, now)
          // The postage: its signature, then the record's own validity (its claim's work last, within
          // the caller's claim-check budget: over it, the mail is refused Overloaded before any hash).
          const checked = yield* dht.claimCheckGate(caller.nodeId)(claimRules, (claim) =>
            checkPostage({ mail, postage, now, mailTtlMs: ttlMs, verify, claim, limits: nodeConfig.recordLimits })
          ).pipe(Effect.tapError(() => Effect.sync(() => counters.refused++)))
          if (Either.isLeft(checked)) return yield* refused("NotAccepted", checked.left.message)
          // Junk for a name nobody holds here lives hours, not weeks (until a record for it arrives).
          const known = (yield* dht.heldRecords(recipientKey)).length > 0
          const { expiresAt, fullExpiresAt } = lifetime(known)
          const outcome = yield* store.storeMail({ ...item, expiresAt, fullExpiresAt }).pipe(Effect.catchTags(storeRefusals))
          if (outcome === "duplicate") return answerDuplicate(id, now)
          // A copy that arrives means someone re-replicated it just now.
          markReplicated(id, now)
          counters.stored++
          return { outcome: "Stored" as const }
        }),

      FetchMail: (caller, { authorization, recipientKey }) =>
        Effect.gen(function*() {
          const items = yield* store.mailFor(recipientKey, MAX_MAIL_PER_FETCH + 1).pipe(
            Effect.catchAll(overloaded("reading a mailbox"))
          )
          // An empty mailbox has nothing to protect: answered without checking who asks, so a
          // FetchMail for a random key costs one store read, not a DHT resolution (before, 1,445 such
          // requests/s made honest p95 128x worse). Mail held here is read only by its owner.
          if (items.length === 0) return { mail: [], more: false }
          yield* checkMailbox("FetchMail", caller, recipientKey, authorization, [])
          const mail: Array<Mail> = []
          for (const item of items.slice(0, MAX_MAIL_PER_FETCH)) {
            const decoded = yield* decodeHeld(item)
            if (Option.isSome(decoded)) mail.push(decoded.value)
          }
          counters.fetched += mail.length
          return { mail, more: items.length > MAX_MAIL_PER_FETCH }
        }),

      AckMail: (caller, { authorization, ids, recipientKey }) =>
        Effect.gen(function*() {
          // Likewise: nothing held, nothing to remove and nobody to ask.
          const held = yield* store.mailFor(recipientKey, 1).pipe(Effect.catchAll(overloaded("reading a mailbox")))
          if (held.length === 0) return { removed: 0 }
          yield* checkMailbox("AckMail", caller, recipientKey, authorization, ids)
          const removed = yield* store.removeMail(recipientKey, ids).pipe(
            Effect.catchAll(overloaded("clearing a mailbox"))
          )
          for (const id of ids) replicatedAt.delete(id)
          counters.acknowledged += removed
          return { removed }
        })
    }
    yield* transport.serve(handlers)

    // ------------------------------------------------------------------
    // Push

    const backOff = (recipientKey: Key, why: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const attempts = (backoffs.get(recipientKey)?.attempts ?? 0) + 1
        const delay = backoffDelay(pushBackoff, attempts, yield* Random.next)
        backoffs.delete(recipientKey)
        backoffs.set(recipientKey, { attempts, until: now + Duration.toMillis(delay) })
        trimOldest(backoffs, maxTracked)
        yield* Effect.logDebug(
          `relay: cannot push to ${recipientKey.slice(0, 16)}… (${why}); next try in ${Duration.format(delay)}`
        )
      })

    /** Hands one mail to its recipient's node. */
    const pushOne = (target: PeerTarget, record: UserRecord, id: string, mail: Mail): Effect.Effect<PushOutcome> => {
      if (mail._tag === "Receipt") {
        // Any answer ends it: "Unknown" is final for the sender, so holding the receipt would not help.
        return transport.send(target, new DeliverReceipt({ receipt: mail.receipt }), callOptions).pipe(
          Effect.as("delivered" as const),
          Effect.catchAll(() => Effect.succeed("unreachable" as const))
        )
      }
      return transport.send(target, new SendMessage({ envelope: mail.envelope }), callOptions).pipe(
        Effect.flatMap(({ value }) => {
          const checked = checkReceipt({ receipt: value.receipt, recipientRecord: record, verify })
          if (Either.isRight(checked) && checked.right.messageId === id) return Effect.succeed("delivered" as const)
          const why = Either.isLeft(checked) ? checked.left.message : `the receipt names message ${value.receipt.messageId}`
          return Effect.as(
            Effect.logWarning(`relay: keeping mail ${id}: the recipient's node answered a receipt that does not check out: ${why}`),
            "kept" as const
          )
        }),
        Effect.catchTags({
          MessageRefused: (refusal) =>
            Effect.as(Effect.logWarning(`relay: keeping mail ${id}: ${refusal.message}`), "kept" as const),
          RequestRefused: () => Effect.succeed("unreachable" as const),
          TransportError: () => Effect.succeed("unreachable" as const)
        })
      )
    }

    // Recipient keys with a push running, so the push round and a push on the owner's return never
    // hand the same mail over twice at once. Bound: the recipients with held mail.
    const pushing = new Set<Key>()

    /** Pushes a recipient's mail, oldest first, until it is all delivered or the recipient stops answering. */
    const pushTo = (recipientKey: Key): Effect.Effect<number, StorageError> =>
      Effect.suspend(() => {
        if (pushing.has(recipientKey)) return Effect.succeed(0)
        pushing.add(recipientKey)
        return pushHeld(recipientKey).pipe(Effect.ensuring(Effect.sync(() => pushing.delete(recipientKey))))
      })

    const pushHeld = (recipientKey: Key): Effect.Effect<number, StorageError> =>
      Effect.gen(function*() {
        const found = yield* dht.findRecord(recipientKey, { localAnswer: true })
        const record = Option.getOrUndefined(found)
        if (record === undefined) {
          yield* backOff(recipientKey, "no live user record")
          return 0
        }
        // The record's first route: its own address, or (an owner behind a NAT) a circuit through the
        // first relay it lists, so mail reaches it while it is online, not only when it pulls at start.
        const route = routesOf(record)[0]
        if (route === undefined) {
          yield* backOff(recipientKey, "its record lists no route")
          return 0
        }
        // Mail for this node's own user is taken locally by its delivery, not pushed over the network.
        if (record.nodeId === self) return 0
        const target: PeerTarget = route._tag === "Direct"
          ? { address: route.address, nodeId: record.nodeId }
          : relayedTarget(record.nodeId, route.relay)
        let delivered = 0
        let kept = 0
        for (const item of yield* store.mailFor(recipientKey, storeConfig.maxPageSize)) {
          const mail = yield* decodeHeld(item)
          if (Option.isNone(mail)) continue
          const outcome = yield* pushOne(target, record, item.id, mail.value)
          if (outcome === "unreachable") {
            yield* backOff(recipientKey, "its node did not answer")
            return delivered
          }
          if (outcome === "kept") {
            kept++
            continue
          }
          yield* store.removeMail(recipientKey, [item.id])
          replicatedAt.delete(item.id)
          counters.pushed++
          delivered++
        }
        // A node that answers but accepts nothing is not worth asking every round either.
        if (delivered === 0 && kept > 0) yield* backOff(recipientKey, "its node accepted none of the mail")
        else backoffs.delete(recipientKey)
        return delivered
      })

    const pushRound: Effect.Effect<PushRoundSummary, StorageError> = pushLock.withPermits(1)(
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const expired = yield* store.expireMail(now)
        counters.expired += expired
        yield* store.pruneSeen(now - SEEN_RETENTION_TTLS * ttlMs)
        const { recipients } = yield* heldMail
        for (const key of backoffs.keys()) if (!recipients.has(key)) backoffs.delete(key)
        const due = Array.from(recipients).filter((key) => (backoffs.get(key)?.until ?? 0) <= now)
        const pushed = yield* Effect.forEach(
          due,
          (key) =>
            pushTo(key).pipe(
              // One recipient's storage failure must not stop the others.
              Effect.catchAll((error) => Effect.as(Effect.logError("relay: pushing mail failed", error), 0))
            ),
          { concurrency: PUSH_CONCURRENCY }
        )
        return {
          recipients: due.length,
          backedOff: recipients.size - due.length,
          pushed: pushed.reduce((sum, count) => sum + count, 0),
          expired
        }
      })
    )

    // ------------------------------------------------------------------
    // Re-replication

    const isDue = (id: string, now: number): boolean => {
      const last = replicatedAt.get(id)
      return last === undefined || now - last >= replicationMs
    }

    /** The current k closest to `key` other than this node (k - 1 of them when this node is one of the k). */
    const replicaTargets = (key: Key, others: ReadonlyArray<Contact>): ReadonlyArray<Contact> => {
      const farthest = others[nodeConfig.k - 1]
      const selfAmong = farthest === undefined || compareDistance(key, self, farthest.nodeId) < 0
      return others.slice(0, selfAmong ? nodeConfig.k - 1 : nodeConfig.k)
    }

    /**
     * Copies due mail of one mailbox to its current k closest. Re-checks
     * first: mail without postage (held before postage existed) and junk (no
     * record of the name here) are not spread; when this relay no longer
     * belongs to the mailbox, its mail (junk too: the k closest may hold the
     * record) goes to all k and, once one of them holds it, is dropped here.
     * The postage is passed on as it arrived: it was checked then, and its
     * verdict does not change with time (the target checks it again).
     */
    const replicateFor = (recipientKey: Key) =>
      Effect.gen(function*() {
        const lookup = yield* dht.findNode(recipientKey)
        const others = lookup.closest.filter((contact) => contact.nodeId !== self)
        const stays = yield* dht.belongsHere(recipientKey)
        const targets = stays ? replicaTargets(recipientKey, others) : others.slice(0, nodeConfig.k)
        const known = (yield* dht.heldRecords(recipientKey)).length > 0
        let mails = 0
        let copies = 0
        let skipped = 0
        let handedOff = 0
        for (const item of yield* store.mailFor(recipientKey, storeConfig.maxPageSize)) {
          const now = yield* Clock.currentTimeMillis
          // Another relay may have refreshed it while this round looked the key up.
          if (!isDue(item.id, now)) continue
          const mail = yield* decodeHeld(item)
          if (Option.isNone(mail)) continue
          const postage = decodePostageJson(item.postageJson)
          // Junk (no record of the name here) dies here within hours instead of spreading, unless this
          // relay is leaving the mailbox: then the k closest decide (they may hold the record). Mail
          // without postage stays until delivered or expired: nobody would take it.
          if ((stays && !known) || Either.isLeft(postage) || item.expiresAt <= now) {
            markReplicated(item.id, now)
            skipped++
            continue
          }
          const request = new StoreMail({ mail: mail.value, postage: postage.right })
          // At most k calls at once: each mail goes to all its replicas in one round trip.
          const answers = yield* Effect.forEach(
            targets,
            (target) =>
              transport.send(target, request, callOptions).pipe(
                Effect.as(true),
                Effect.catchAll((error) =>
                  Effect.as(
                    Effect.logDebug(`relay: replica ${target.nodeId.slice(0, 16)}… did not take mail ${item.id}: ${error.message}`),
                    false
                  )
                )
              ),
            { concurrency: "unbounded" }
          )
          markReplicated(item.id, now)
          mails++
          copies += targets.length
          counters.replicated += targets.length
          if (!stays && answers.some((held) => held)) {
            yield* store.removeMail(recipientKey, [item.id])
            replicatedAt.delete(item.id)
            counters.handedOff++
            handedOff++
          }
        }
        return { mails, copies, skipped, handedOff }
      })

    const replicationRound: Effect.Effect<ReplicationRoundSummary, StorageError> = replicationLock.withPermits(1)(
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const { ids } = yield* heldMail
        const held = new Set(ids.map((entry) => entry.id))
        for (const id of replicatedAt.keys()) if (!held.has(id)) replicatedAt.delete(id)
        const dueKeys = new Set<Key>()
        for (const entry of ids) if (isDue(entry.id, now)) dueKeys.add(entry.recipientKey)
        const total = { mails: 0, copies: 0, skipped: 0, handedOff: 0 }
        for (const key of dueKeys) {
          const done = yield* replicateFor(key).pipe(
            Effect.catchAll((error) =>
              Effect.as(Effect.logError("relay: re-replicating mail failed", error), { mails: 0, copies: 0, skipped: 0, handedOff: 0 })
            )
          )
          total.mails += done.mails
          total.copies += done.copies
          total.skipped += done.skipped
          total.handedOff += done.handedOff
        }
        return { recipients: dueKeys.size, ...total }
      })
    )

    // ------------------------------------------------------------------
    // Loops: a failing round is logged and the loop goes on.

    const pushLoop = Effect.sleep(chatConfig.relayPushInterval).pipe(
      Effect.zipRight(pushRound),
      Effect.catchAllCause((cause) => Effect.logError("relay push round failed", cause)),
      Effect.forever
    )
    yield* Effect.forkScoped(pushLoop)

    const checkMs = Math.max(1, Math.floor(replicationMs / REPLICATION_CHECKS_PER_INTERVAL))
    const replicationLoop = Effect.gen(function*() {
      // A random phase, so relays that started together do not all check at the same moment.
      yield* Effect.sleep(Duration.millis(Math.floor(checkMs * (yield* Random.next))))
      yield* Effect.forever(
        replicationRound.pipe(
          Effect.catchAllCause((cause) => Effect.logError("relay replication round failed", cause)),
          Effect.zipRight(Effect.sleep(Duration.millis(checkMs)))
        )
      )
    })
    yield* Effect.forkScoped(replicationLoop)

    // A user's node stores its record at the k closest nodes of its user key when it comes online:
    // the relays of its mailbox. Its mail is handed over at once, whatever the back-off said, instead
    // of at the next push round (up to 10 minutes away for a user who was offline for long).
    yield* dht.onRecordFromOwner((record) => {
      const recipientKey = userKey(record.username)
      if (pushing.has(recipientKey) || record.nodeId === self) return Effect.void
      return Effect.gen(function*() {
        const waiting = yield* store.mailFor(recipientKey, 1)
        if (waiting.length === 0) return
        backoffs.delete(recipientKey)
        const pushed = yield* pushTo(recipientKey)
        if (pushed > 0) yield* Effect.logDebug(`relay: handed ${pushed} mails to ${record.username}, who just came online`)
      }).pipe(
        Effect.catchAll((error) => Effect.logError("relay: pushing mail to a returning user failed", error)),
        Effect.forkIn(relayScope),
        Effect.asVoid
      )
    })

    // Mail that came before its recipient's record was kept as junk (hours); once this node holds a
    // record of the name, it gets its full lifetime back.
    yield* dht.onRecordHeld((record) =>
      store.extendMail(userKey(record.username)).pipe(
        Effect.catchAll((error) => Effect.logError("relay: extending mail for a known recipient failed", error)),
        Effect.asVoid
      )
    )

    const service: RelayService = {
      stats: Effect.map(store.stats, (held) => ({ ...counters, held: held.mail, heldBytes: held.mailBytes })),
      pushRound,
      replicationRound
    }
    return service
  })

  /** The relay of a running node; its loops stop when the layer's scope closes. */
  static readonly layer: Layer.Layer<
    Relay,
    never,
    ChatStore | ChatStoreConfig | ChatConfig | NodeConfig | DhtNode | Transport | Identity | Signatures
  > = Layer.scoped(Relay, Relay.make)
}
