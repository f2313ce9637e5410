/**
 * A running DHT node: it answers the protocol (Ping, FindNode, FindValue,
 * Store) through the `Transport`, joins the network through its bootstrap
 * nodes and the peers it knew when it last ran (retrying with backoff,
 * loudly, until one answers), keeps its routing table fresh and its stored
 * records alive in a maintenance fiber, saves its routing table to
 * `KnownPeers` periodically and when it stops, and publishes user records at
 * the k nodes closest to their key. Every inbound request first observes its
 * authenticated caller into `Routing`. A `Store` is kept only by a node that
 * belongs among the key's k closest by its own routing table, with slack
 * (core `StoragePolicy`; else `RequestRefused` NotResponsible), decided
 * after the buckets that count reads are filled where the join left them
 * thin (once a bucket an hour, whoever asks), and the
 * hourly re-replication hands a record this node no longer belongs to hold
 * to the nodes now closest and then drops it. All fibers live in the layer's
 * scope, so closing the layer stops the node.
 *
 * @since 0.1.0
 */
import { judgeReachability, REACHABILITY_PEERS, type Reachability } from "../core/Reachability.js"
import { bucketAt } from "../core/RoutingTable.js"
import { dialBackSlotLimits, DialBackSlots } from "../core/DialBackSlots.js"
import { Cache, Chunk, Clock, Context, Deferred, Duration, Effect, Either, Fiber, Layer, Option, Queue, Random, Ref, Schedule, Schema, type Scope } from "effect"
import { type Address, addressEquals, type Contact, formatAddress } from "../core/Contact.js"
import { ClaimCheckBudget, claimRefusalDetail, type ClaimCheckStats } from "../core/ClaimCheckBudget.js"
import { compareDistance } from "../core/Distance.js"
import { ID_BITS, type Key, type NodeId } from "../core/Id.js"
import type { LookupResult } from "../core/Lookup.js"
import { shouldHandOver } from "../core/Handoff.js"
import { bucketsToRefreshAfterJoin, meetingCandidates } from "../core/JoinRefresh.js"
import { meetsIdPuzzle } from "../core/IdPuzzle.js"
import { type NameAnswer, resolveClaims } from "../core/NameResolution.js"
import {
  belongsHere,
  bucketStillUnfilled,
  bucketsToFillBeforeDeciding,
  describePlacementRefusal,
  FILL_LOOKUPS_PER_BUCKET,
  knownIn,
  type PlacementQuestion,
  type PlacementRefusal,
  placementQuestion,
  placementRefusal
} from "../core/StoragePolicy.js"
import { isRecordLive, RecordRejected, type UserRecord } from "../core/UserRecord.js"
import { NotConnected } from "./Control.js"
import { userKey } from "../core/Username.js"
import { Identity, Signatures } from "./Identity.js"
import { type KnownPeer, KnownPeers } from "./KnownPeers.js"
import { Lookups, validRecordAt } from "./Lookups.js"
import { backoffDelay, NodeConfig } from "./NodeConfig.js"
import { DialBack, FindNode, Ping, RequestRefused, Store } from "./Protocol.js"
import { type ClaimCheckGate, RecordStore } from "./RecordStore.js"
import { Routing } from "./Routing.js"
import { type DhtHandlers, failureCountsAgainstPeer, type PeerTarget, Transport, type TransportError } from "./Transport.js"

/**
 * Where the node stands with respect to the network (field names match
 * `Control.BootstrapState`, which carries a subset of this over the control API).
 */
export type BootstrapState =
  /** No bootstrap node configured: the first node of a new network, waiting to be found. */
  | { readonly _tag: "Standalone" }
  /** Trying to reach a bootstrap node; after a failed attempt, why and when the next one starts. */
  | {
    readonly _tag: "Joining"
    /** Failed attempts so far. */
    readonly attempts: number
    readonly lastError: string | undefined
    /** When the next attempt starts (ms), once an attempt has failed. */
    readonly nextAttemptAt: number | undefined
  }
  /** A bootstrap node or a peer known from the last run answered, and the node looked itself up. */
  | { readonly _tag: "Joined"; readonly joinedAt: number; readonly via: ReadonlyArray<Contact> }

/** A snapshot of the node for status displays. */
export interface NodeStatus {
  readonly nodeId: NodeId
  readonly address: Address
  readonly contactCount: number
  readonly storedRecords: number
  /**
   * The join state, except that the first node of a new network shows as
   * Joined once another node has joined it (`bootstrapState` stays Standalone).
   */
  readonly bootstrap: BootstrapState
  /** The bootstrap addresses this node joins through (empty for a new network's first node). */
  readonly bootstrapAddresses: ReadonlyArray<Address>
  /** Whether peers can reach this node, from their dial-back answers (core `Reachability`). */
  readonly reachability: Reachability
  /** Claim-hash evaluations peers caused, and those their budget refused (core `ClaimCheckBudget`). */
  readonly claimChecks: ClaimCheckStats
}

/** Where a published record was stored. */
export interface PublishResult {
  /** The nodes that accepted it (this node included when it is among the k closest). */
  readonly storedAt: ReadonlyArray<Contact>
  /** Nodes asked to store it. */
  readonly attempted: number
  /** Storers that refused it because a live record of another key holds the name. */
  readonly conflicts: number
}

/** No node accepted a published record. */
export class RecordNotStored extends Schema.TaggedError<RecordNotStored>()("RecordNotStored", {
  username: Schema.String,
  reason: Schema.Literal(
    /** A storer holds a live record for this name under another key: the name is taken. */
    "KeyConflict",
    /** The storers rejected the record for another reason (see `detail`). */
    "Rejected",
    /** No storer could be reached, or all of them refused to do the work. */
    "Unreachable"
  ),
  attempted: Schema.Int,
  detail: Schema.String
}) {
  override get message(): string {
    const subject = `could not publish the record of ${JSON.stringify(this.username)}`
    switch (this.reason) {
      case "KeyConflict":
        return `${subject}: the name is taken by another key (${this.detail})`
      case "Rejected":
        return `${subject}: the ${this.attempted} storing nodes rejected it (${this.detail})`
      case "Unreachable":
        return `${subject}: none of the ${this.attempted} storing nodes accepted it (${this.detail})`
    }
  }
}

/** What a name lookup found: the conflict rule's answer and how many of the k closest answered. */
export interface RecordResolution {
  readonly answer: NameAnswer
  /** Closest nodes that answered the lookup (at most k). */
  readonly asked: number
}

/** Newly met nodes waiting for the records they should hold; more are dropped. */
export const MAX_PENDING_HANDOFFS = 256

/**
 * The share of the call timeout a Store or StoreMail waits for the buckets
 * its placement count reads to fill (`storageRefusal`): a half, so that the
 * caller, who waits the whole call timeout, hears the answer.
 */
export const PLACEMENT_FILL_WAIT_SHARE = 0.5

/** How long a fill of a bucket that found nobody (or failed) stands before a Store may start another. */
export const FILL_RETRY_AFTER = Duration.minutes(1)

/** Records handed over at once (to one newly met node at a time). */
const HANDOFF_CONCURRENCY = 4

/**
 * Most `DialBack` requests probed at once (each for up to the call timeout):
 * with the routing table's `MAX_DIAL_BACKS`, the transport's 64 probes.
 */
export const MAX_REQUESTED_DIAL_BACKS = 32

/** Most peers remembered from the last run that a join attempt pings (the most recently seen ones). */
export const MAX_REMEMBERED_PINGS = 16

/** The `n` most recently seen of `peers`, one per node id, skipping `exclude`d ones. */
const mostRecent = (
  peers: ReadonlyArray<KnownPeer>,
  n: number,
  exclude: (peer: KnownPeer) => boolean
): Array<KnownPeer> => {
  const chosen: Array<KnownPeer> = []
  const ids = new Set<NodeId>()
  for (const peer of peers.slice().sort((a, b) => b.lastSeen - a.lastSeen)) {
    if (chosen.length >= n) break
    if (ids.has(peer.contact.nodeId) || exclude(peer)) continue
    ids.add(peer.contact.nodeId)
    chosen.push(peer)
  }
  return chosen
}

/**
 * `known` (most recent first, as `mostRecent` returns it) with `peer`, seen
 * just now, in front: no sort, since a contact enters the table at every
 * join's first meetings.
 */
const withNewest = (
  known: ReadonlyArray<KnownPeer>,
  peer: KnownPeer,
  n: number,
  exclude: (peer: KnownPeer) => boolean
): ReadonlyArray<KnownPeer> =>
  exclude(peer) ? known : [peer, ...known.filter((other) => other.contact.nodeId !== peer.contact.nodeId)].slice(0, n)

/** What a running node offers. */
export interface DhtNodeService {
  /** Id, address, table size, stored records and bootstrap state. */
  readonly status: Effect.Effect<NodeStatus>
  /** Where the join stands. */
  readonly bootstrapState: Effect.Effect<BootstrapState>
  /**
   * How many peers known from the last run this node asked as it started (the
   * most recently seen, at most `MAX_REMEMBERED_PINGS`, bootstrap addresses
   * left out): a node started without bootstrap addresses rejoins through
   * them, and starts a new network only when there are none.
   */
  readonly rememberedPeers: number
  /** Whether peers can dial this node (cheap: the last verdict, no table or store read). */
  readonly reachability: Effect.Effect<Reachability>
  /** Completes once the node has joined (at once for a standalone node). */
  readonly awaitJoined: Effect.Effect<void>
  /**
   * Completes once any peer has answered (or the node is joined): lookups work
   * from then on, before the self lookup and the far-bucket refreshes of the
   * join are done. Work that a returning user waits for (the mailbox pull, the
   * record publication) starts here rather than a few round trips later.
   */
  readonly awaitConnected: Effect.Effect<void>
  /**
   * Stores `record` at the k nodes closest to its user key (found by a
   * lookup; this node too when it is among them). Succeeds if any accepted.
   */
  readonly publish: (record: UserRecord) => Effect.Effect<PublishResult, RecordNotStored>
  /**
   * What the k closest nodes of `key` hold, found over disjoint paths, read
   * by the conflict rule (one owner, a conflict, or unclaimed). This node's
   * own copy counts only when it is among the k closest. Fails with
   * `NotConnected` when no peer answered (unless this node is alone in a
   * network it started, where an empty answer is the truth).
   */
  readonly resolveRecords: (
    key: Key,
    options?: {
      /**
       * Answer from this node's store when it is among the k closest and
       * holds a claim (no lookup): for relays' frequent mailbox-owner checks,
       * never for what a user is shown.
       */
      readonly localAnswer?: boolean
    }
  ) => Effect.Effect<RecordResolution, NotConnected>
  /** The owner's record under `key`: `resolveRecords` when it names one owner, none otherwise. */
  readonly findRecord: (key: Key, options?: { readonly localAnswer?: boolean }) => Effect.Effect<Option.Option<UserRecord>>
  /** The k closest nodes to `target` (a FindNode lookup). */
  readonly findNode: (target: Key) => Effect.Effect<LookupResult<never>>
  /**
   * The k closest nodes to `target` over disjoint paths, for work one liar on
   * the way must not steer (where offline mail is left).
   */
  readonly findNodeDisjoint: (target: Key) => Effect.Effect<ReadonlyArray<Contact>>
  /**
   * Calls `listener` (for the lifetime of the scope) with every record stored
   * here by the node it names: its user is online at that address right now.
   * Relays use it to hand over held mail at once. The listener must return
   * quickly (fork longer work): it runs inside the Store handler.
   */
  readonly onRecordFromOwner: (
    listener: (record: UserRecord) => Effect.Effect<void>
  ) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Calls `listener` (for the lifetime of the scope) with every record this
   * node accepted into its store (a `Store` it kept, as the name's record or
   * its rival claim, and its own publication when it is among the closest):
   * the record's name is held here from now on. Relays use it to give mail
   * that came before its recipient's record its full lifetime. Same rules as
   * `onRecordFromOwner`: return quickly.
   */
  readonly onRecordHeld: (
    listener: (record: UserRecord) => Effect.Effect<void>
  ) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Whether this node should store under `key`: fewer than k + storageSlack
   * contacts of its routing table are closer to `key`, and the key is near
   * its neighbourhood (core `StoragePolicy`).
   */
  readonly belongsHere: (key: Key) => Effect.Effect<boolean>
  /**
   * Why this node refuses to store under `key` that a peer asks it to store
   * (a record or mail), or undefined when it takes it: `belongsHere`, decided
   * after the buckets its count reads there are filled (core
   * `bucketsToFillBeforeDeciding`), each at most once per
   * `bucketRefreshInterval` whoever asks, waiting at most
   * `PLACEMENT_FILL_WAIT_SHARE` of the call timeout.
   */
  readonly storageRefusal: (key: Key) => Effect.Effect<PlacementRefusal | undefined>
  /** The live records this node holds for the name under `key` (its own slot's, then the rival claim). */
  readonly heldRecords: (key: Key) => Effect.Effect<ReadonlyArray<UserRecord>>
  /** The `n` contacts of this node's routing table closest to `key` (no lookup). */
  readonly closestKnown: (key: Key, n: number) => Effect.Effect<ReadonlyArray<Contact>>
  /**
   * Runs checks of claims that `peer` sent (a record, postage, a message's
   * sender record) within this node's claim-check budget: an evaluation of
   * the claim hash over the peer's budget or the node's fails the check with
   * `RequestRefused` Overloaded, and is counted in `status.claimChecks`.
   */
  readonly claimCheckGate: (peer: NodeId) => ClaimCheckGate
}

/** A DHT node. */
export class DhtNode extends Context.Tag("peerchat/DhtNode")<DhtNode, DhtNodeService>() {
  /**
   * Starts the node: loads the peers it knew, installs the handlers, then
   * joins, maintains and saves its routing table in background fibers of the
   * scope (and saves it once more when the scope closes).
   */
  static readonly make = Effect.gen(function*() {
    const config = yield* NodeConfig
    const identity = yield* Identity
    const { claimHash, claimPacing, verify } = yield* Signatures
    const claimRules = { minDifficulty: config.minClaimDifficulty, hash: claimHash }
    // Claims peers send cost this node a hash evaluation each and their sender nothing: they are
    // checked within a budget per peer and in total (core ClaimCheckBudget), and, on a real node,
    // a few per turn of the event loop, so that a burst the budget admits does not stop everything
    // else for as long as it runs.
    const claimBudget = new ClaimCheckBudget(yield* Clock.currentTimeMillis, config.claimCheckBudget)
    const claimCheckGate = (peer: NodeId): ClaimCheckGate => (claim, check) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        // Cheap steps and known claims decide at once; an evaluation over budget is refused at once.
        const step = claimBudget.prepare(peer, now, claim, check)
        const decided = step._tag !== "Admitted"
          ? Effect.succeed(step)
          : claimPacing === undefined
          ? Effect.sync(step.evaluate)
          : Effect.ensuring(claimPacing.pace(step.evaluate), Effect.sync(step.settle)) // settled if the caller gives up
        return Effect.flatMap(decided, (outcome) =>
          outcome._tag === "Checked"
            ? Effect.succeed(outcome.result)
            : Effect.fail(
              new RequestRefused({ reason: "Overloaded", detail: claimRefusalDetail(outcome.reason, outcome.retryAfterMillis) })
            ))
      })
    const transport = yield* Transport
    const routing = yield* Routing
    const lookups = yield* Lookups
    const store = yield* RecordStore
    const knownPeers = yield* KnownPeers
    const self = identity.nodeId
    const selfContact: Contact = { nodeId: self, address: transport.localAddress }
    const callOptions = { timeout: config.callTimeout }
    const nodeScope = yield* Effect.scope
    // Bound: one per service that listens (the relay).
    const ownerListeners = new Set<(record: UserRecord) => Effect.Effect<void>>()
    const heldListeners = new Set<(record: UserRecord) => Effect.Effect<void>>()
    const recordHeld = (record: UserRecord): Effect.Effect<void> =>
      Effect.forEach(heldListeners, (listener) => listener(record), { discard: true })

    /** The placement question for `key`, from this node's routing table as it is now. */
    const placementOf = (key: Key): Effect.Effect<PlacementQuestion> =>
      Effect.map(routing.snapshot, (table) => placementQuestion(table, key, config.k, config.storageSlack))

    /** Why this node is not among the k closest of `key` by its own table (with slack), if it is not. */
    const refusePlacement = (key: Key): Effect.Effect<PlacementRefusal | undefined> => Effect.map(placementOf(key), placementRefusal)

    /** Whether this node belongs among the k closest of `key` by its own table, with slack. */
    const belongs = (key: Key): Effect.Effect<boolean> => Effect.map(placementOf(key), belongsHere)

    /** Refreshes bucket `index` with a lookup of a random key inside it. */
    const refreshBucket = (index: number): Effect.Effect<LookupResult<never>> =>
      Effect.gen(function*() {
        const target = yield* routing.randomKeyInBucket(index)
        const found = yield* lookups.findNode(target)
        yield* routing.touchBucket(index)
        return found
      })

    /**
     * Puts one verified contact in empty bucket `index` (core `JoinRefresh`): asks the closest known
     * contact (a neighbour, who shares the bucket) for a random id there, then calls the nodes it names
     * there until one answers. A failed call counts against its peer as in a lookup.
     */
    const meetOneIn = (index: number): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        const target = yield* routing.randomKeyInBucket(index)
        const [neighbour] = yield* routing.closest(target, 1)
        if (neighbour === undefined) return false
        const answer = yield* Effect.either(transport.send(neighbour, new FindNode({ target }), callOptions))
        if (answer._tag === "Left") {
          yield* countFailure(neighbour, answer.left)
          return false
        }
        const named = answer.right.value.contacts
        for (const candidate of meetingCandidates({ self, index, target, named, idPuzzleBits: config.idPuzzleBits })) {
          const met = yield* Effect.either(transport.send(candidate, new Ping({}), callOptions))
          if (met._tag === "Right") {
            // The transport's peer, proven at that address: kept as it is, as a lookup keeps the peers it asked.
            yield* routing.observe(met.right.peer)
            return true
          }
          yield* countFailure(candidate, met.left)
        }
        return false
      })

    /** A failed call to `peer` counts against it when the failure says it is gone (not a refusal: it is alive). */
    const countFailure = (peer: Contact, error: TransportError | RequestRefused): Effect.Effect<void> =>
      failureCountsAgainstPeer(error) ? routing.recordFailure(peer.nodeId, peer.address) : Effect.void

    /** After the self lookup: a lookup into each far bucket of a small network, else one contact met in each empty one. */
    const refreshAfterJoin: Effect.Effect<void> = Effect.gen(function*() {
      const { lookups: looked, meetings } = bucketsToRefreshAfterJoin(yield* routing.snapshot, config.k)
      yield* Effect.forEach(looked, refreshBucket, { discard: true })
      for (const index of meetings) {
        // Peers calling in during the refresh may have filled it already.
        if (knownIn(bucketAt(yield* routing.snapshot, index)) > 0) continue
        // A neighbour that did not answer, or named nobody there who answered: a lookup does not hang on one peer.
        if (!(yield* meetOneIn(index))) yield* refreshBucket(index)
      }
    })

    /**
     * Fills bucket `index` for the storage count: lookups into it while one meets someone new (core
     * `bucketStillUnfilled`). True when a lookup found anyone: a fill whose every query failed (this node's
     * own link down, say) has counted nothing.
     */
    const fillBucket = (index: number): Effect.Effect<boolean> =>
      Effect.gen(function*() {
        let answered = false
        for (let lookup = 1; lookup <= FILL_LOOKUPS_PER_BUCKET; lookup++) {
          const before = yield* routing.snapshot
          answered = (yield* refreshBucket(index)).closest.length > 0 || answered
          if (!bucketStillUnfilled(before, yield* routing.snapshot, index, config.k, config.storageSlack)) break
        }
        return answered
      })

    // One fill per bucket per refresh interval, whoever asks and however often: a peer sending Stores for
    // many keys there costs this node at most FILL_LOOKUPS_PER_BUCKET lookups a bucket an interval. The fill
    // runs in the node's scope, so a Store that stops waiting for it does not cut it short for the next one.
    // A fill that found nobody or died is forgotten after FILL_RETRY_AFTER, so that the next Store fills again
    // rather than an hour of decisions resting on a count that never filled.
    const bucketFills: Cache.Cache<number, Fiber.RuntimeFiber<void>> = yield* Cache.make({
      capacity: ID_BITS,
      timeToLive: config.bucketRefreshInterval,
      lookup: (index: number) =>
        fillBucket(index).pipe(
          Effect.catchAllCause((cause) => Effect.as(Effect.logError(`filling bucket ${index} failed`, cause), false)),
          Effect.flatMap((answered) =>
            answered ? Effect.void : Effect.asVoid(Effect.forkIn(Effect.delay(bucketFills.invalidate(index), FILL_RETRY_AFTER), nodeScope))
          ),
          Effect.forkIn(nodeScope)
        )
    })
    const fillWait = Duration.times(config.callTimeout, PLACEMENT_FILL_WAIT_SHARE)

    const storageRefusal = (key: Key): Effect.Effect<PlacementRefusal | undefined> =>
      Effect.gen(function*() {
        const table = yield* routing.snapshot
        const refusal = placementRefusal(placementQuestion(table, key, config.k, config.storageSlack))
        const unfilled = bucketsToFillBeforeDeciding(table, key, config.k, config.storageSlack)
        if (refusal !== undefined || unfilled.length === 0) return refusal
        const fills = yield* Effect.forEach(unfilled, (index) => bucketFills.get(index))
        // Past the wait, the count decides on what the fill met so far (the fill goes on): the caller's own
        // call would time out otherwise, and a node that just joined decided that way before fills existed.
        yield* Effect.timeoutOption(Effect.forEach(fills, Fiber.await, { discard: true }), fillWait)
        return yield* refusePlacement(key)
      })

    /** What this node holds for the name under `key`: its own slot's record first, then the rival claim. */
    const heldClaims = (key: Key, now: number): Effect.Effect<ReadonlyArray<UserRecord>> =>
      Effect.map(
        Effect.all([store.get(key, now), store.getRival(key, now)]),
        ([held, rival]) => [...Option.toArray(held), ...Option.toArray(rival)]
      )

    /** Whether peers can dial this node (see "Reachability" below); Private puts it in client mode. */
    const reachability = yield* Ref.make<Reachability>("Unknown")

    /** `DialBack` requests probed at once: half the transport's probes, the other half is the routing table's. */
    const requestedDialBacks = new DialBackSlots(dialBackSlotLimits(MAX_REQUESTED_DIAL_BACKS))
    const cannotDialBack = new RequestRefused({ reason: "Overloaded", detail: "this node cannot dial back now; ask another" })

    const handlers: DhtHandlers = {
      Ping: (caller) => Effect.as(routing.observeCaller(caller), { observedHost: caller.observedHost ?? "" }),
      // Only the caller's own address (its connection's host and its listening port), with its node id.
      // A caller reached there is verified at that address, as a dial-back of `observeCaller` would:
      // offered to the routing table, so a node that became reachable after its first calls (a port
      // mapping granted late, a firewall opened) enters tables at its next reachability check rather
      // than after the dial-back window of the calls that failed.
      DialBack: (caller) => {
        if (caller.address.port === 0) return Effect.succeed({ reachable: false })
        // Requested probes have slots of their own, two per caller host and one per node id (core
        // DialBackSlots): callers naming ports that drop SYNs hold each slot for the call timeout, and
        // must not take the probes this node's routing table checks its callers with.
        const slot = requestedDialBacks.take(caller.nodeId, caller.address.host)
        if (slot._tag === "Refused") return Effect.fail(cannotDialBack)
        return transport.proveListening({ address: caller.address, nodeId: caller.nodeId }, { timeout: config.callTimeout }).pipe(
          Effect.matchEffect({
            onSuccess: (peer) => Effect.as(routing.observe(peer), { reachable: true }),
            // A probe this node could not even start (all its probes under way) says nothing of the
            // caller: refused, so the caller counts no vote, rather than a false "unreachable" one. Any
            // other failure (no answer, another service answering and closing) is the caller's "unreachable".
            onFailure: (error) => error.reason === "Overloaded" ? Effect.fail(cannotDialBack) : Effect.succeed({ reachable: false })
          }),
          Effect.ensuring(Effect.sync(() => requestedDialBacks.release(slot)))
        )
      },
      FindNode: (caller, request) =>
        Effect.zipRight(
          routing.observeCaller(caller),
          Effect.map(routing.closest(request.target, config.k, caller.nodeId), (contacts) => ({ contacts }))
        ),
      FindValue: (caller, request) =>
        Effect.gen(function*() {
          yield* routing.observeCaller(caller)
          const now = yield* Clock.currentTimeMillis
          const [record, rival] = yield* heldClaims(request.key, now)
          const contacts = yield* routing.closest(request.key, config.k, caller.nodeId)
          if (record === undefined) return { _tag: "Closer" as const, contacts }
          return rival === undefined
            ? { _tag: "Found" as const, record, contacts }
            : { _tag: "Found" as const, record, rival, contacts }
        }),
      Store: (caller, request) =>
        Effect.gen(function*() {
          yield* routing.observeCaller(caller)
          // Client mode: a node peers cannot dial is in nobody's routing table, so nobody looks there
          // for a record; one stored there (by a caller reached through a relay) would be lost work.
          if ((yield* Ref.get(reachability)) === "Private") {
            return yield* new RequestRefused({
              reason: "NotAccepted",
              detail: "this node cannot be reached by its peers (behind a NAT): it holds no records for others"
            })
          }
          const key = userKey(request.record.username)
          // Only the k closest speak for a name; a node far from it keeps nothing there (with slack
          // for a stale table: see core StoragePolicy).
          const refusal = yield* storageRefusal(key)
          if (refusal !== undefined) {
            return yield* new RequestRefused({ reason: "NotResponsible", detail: describePlacementRefusal(refusal, key) })
          }
          const now = yield* Clock.currentTimeMillis
          const gate = claimCheckGate(caller.nodeId)
          const outcome = yield* store.put(request.record, now, gate).pipe(
            Effect.tapError((refusal) =>
              // A valid claim of a live name by another key is kept as the name's rival, so readers
              // see the conflict; the publisher still hears KeyConflict.
              refusal._tag === "RecordRejected" && refusal.reason === "KeyConflict"
                ? Effect.ignore(Effect.zipRight(store.putRival(request.record, now, gate), recordHeld(request.record)))
                : Effect.void
            )
          )
          yield* recordHeld(request.record)
          if (caller.nodeId === request.record.nodeId) {
            for (const listener of ownerListeners) yield* listener(request.record)
          }
          return { outcome }
        })
    }
    yield* transport.serve(handlers)
    if (!meetsIdPuzzle(self, config.idPuzzleBits)) {
      // An identity made before ids had to solve the puzzle: this node can still look up, publish
      // and chat, but other nodes will not route through it or store records with it.
      yield* Effect.logWarning(
        `this node's id does not solve the network's id puzzle (${config.idPuzzleBits} bits): other nodes will not ` +
          "add it to their routing tables. It still works as a client; a new data directory gets an id that solves it"
      )
    }

    /**
     * Stores `record` at `targets`, and here too when `includeSelf`. Returns
     * the contacts that accepted it and every refusal.
     */
    const storeAt = (record: UserRecord, targets: ReadonlyArray<Contact>, includeSelf: boolean) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const local = includeSelf ? [yield* Effect.either(Effect.tap(store.put(record, now), () => recordHeld(record)))] : []
        // At most k stores, all at once: publishing should take one round trip.
        const remote = yield* Effect.forEach(
          targets,
          (target) => Effect.either(transport.send(target, new Store({ record }), callOptions)),
          { concurrency: "unbounded" }
        )
        const storedAt: Array<Contact> = []
        const refusals: Array<RecordRejected | RequestRefused | TransportError> = []
        local.forEach((outcome) => outcome._tag === "Right" ? storedAt.push(selfContact) : refusals.push(outcome.left))
        remote.forEach((outcome, index) => {
          const target = targets[index] as Contact // forEach returns one outcome per target, in order
          if (outcome._tag === "Right") storedAt.push(target)
          else refusals.push(outcome.left)
        })
        return { storedAt, refusals, attempted: local.length + targets.length }
      })

    /** Whether this node is among the k closest to `key`, given the k closest others a lookup found. */
    const amongClosest = (key: Key, others: ReadonlyArray<Contact>): boolean => {
      const farthest = others[config.k - 1]
      return farthest === undefined || compareDistance(key, self, farthest.nodeId) < 0
    }

    /** The other nodes that, with this node when it counts itself in, make up the k closest. */
    const closestOthers = (others: ReadonlyArray<Contact>, includeSelf: boolean): ReadonlyArray<Contact> =>
      includeSelf ? others.slice(0, config.k - 1) : others

    // The newest record this node published per user key (its own user's): the owner hands it to
    // newly met nodes among the key's k closest. Bound: one per name this node publishes (one).
    const published = new Map<Key, UserRecord>()

    const publish = (record: UserRecord): Effect.Effect<PublishResult, RecordNotStored> =>
      Effect.gen(function*() {
        const key = userKey(record.username)
        published.set(key, record)
        const lookup = yield* lookups.findNode(key)
        const includeSelf = amongClosest(key, lookup.closest)
        const { attempted, refusals, storedAt } = yield* storeAt(record, closestOthers(lookup.closest, includeSelf), includeSelf)
        const rejections = refusals.filter((refusal): refusal is RecordRejected => refusal instanceof RecordRejected)
        const conflicts = rejections.filter((rejection) => rejection.reason === "KeyConflict").length
        const acceptedElsewhere = storedAt.some((contact) => contact.nodeId !== self)
        // Kept only here while other storers refused the record itself (not unreachable, not a rival
        // claim): a claim below their difficulty, a clock far off. Saying "stored" would leave the
        // name unclaimed everywhere else.
        const refusedOnItsMerits = rejections.find((rejection) => rejection.reason !== "KeyConflict")
        if (acceptedElsewhere || (storedAt.length > 0 && refusedOnItsMerits === undefined)) {
          return { storedAt, attempted, conflicts }
        }
        const conflict = rejections.find((rejection) => rejection.reason === "KeyConflict")
        const failure = conflict !== undefined
          ? { reason: "KeyConflict" as const, detail: conflict.message }
          : rejections[0] !== undefined
          ? { reason: "Rejected" as const, detail: rejections[0].message }
          : {
            reason: "Unreachable" as const,
            detail: refusals[0]?.message ?? "no node is known to store it at"
          }
        return yield* new RecordNotStored({ username: record.username, attempted, ...failure })
      })

    // ------------------------------------------------------------------
    // Storage that follows the network

    /**
     * Hands the records this node stores (and its own published record) to
     * newly met nodes that belong among their k closest, so a record stored
     * while the network was small reaches the nodes that are its k closest
     * now (see core Handoff for who hands over). Newcomers met together are
     * served together: the store is read once, and each record's closest
     * known nodes are looked up once, for all of them.
     */
    const handOver = (batch: ReadonlyArray<Contact>): Effect.Effect<void> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const held = (yield* store.all).filter((record) => isRecordLive(record, now))
        const own = Array.from(published.values()).filter((record) => isRecordLive(record, now))
        const toSend = new Map<Contact, Array<UserRecord>>()
        for (const [records, redundancy] of [[held, config.handoffRedundancy], [own, config.k + 1]] as const) {
          for (const record of records) {
            const key = userKey(record.username)
            const known = (yield* routing.closest(key, config.k + 1)).map((contact) => contact.nodeId)
            for (const newcomer of batch) {
              if (!shouldHandOver({ key, self, newcomer: newcomer.nodeId, known, k: config.k, redundancy })) continue
              const records = toSend.get(newcomer) ?? []
              if (!records.includes(record)) records.push(record)
              toSend.set(newcomer, records)
            }
          }
        }
        yield* Effect.forEach(
          toSend,
          ([newcomer, records]) =>
            Effect.zipRight(
              Effect.forEach(
                records,
                (record) => Effect.ignore(transport.send(newcomer, new Store({ record }), callOptions)),
                { concurrency: HANDOFF_CONCURRENCY, discard: true }
              ),
              Effect.logDebug(`handed ${records.length} record(s) to ${formatAddress(newcomer.address)}, a new close node`)
            ),
          // One newcomer after another: at most HANDOFF_CONCURRENCY stores in flight, as for one.
          { discard: true }
        )
      })
    // Newly met nodes wait here for their hand-over; beyond the bound the newest are dropped (the
    // hourly replication still reaches them).
    const newcomers = yield* Queue.dropping<Contact>(MAX_PENDING_HANDOFFS)
    // A node that holds and publishes nothing has nothing to hand over: it wakes nobody (a join adds a few
    // dozen contacts to each of its peers' tables, most of which hold no record yet).
    yield* routing.onContactAdded((contact) =>
      Effect.flatMap(store.size, (held) => held === 0 && published.size === 0 ? Effect.void : Effect.asVoid(Queue.offer(newcomers, contact)))
    )
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.takeBetween(newcomers, 1, MAX_PENDING_HANDOFFS), (batch) =>
      handOver(Array.from(batch)).pipe(Effect.catchAllCause((cause) => Effect.logError("handing records over failed", cause))))))

    // ------------------------------------------------------------------
    // Joining

    const bootstrapAddresses = config.bootstrap.filter((address) => !addressEquals(address, transport.localAddress))
    const remembered = yield* knownPeers.load
    // A remembered peer at a bootstrap address is pinged as a bootstrap node already.
    const notToPing = ({ contact }: KnownPeer): boolean =>
      contact.nodeId === self ||
      addressEquals(contact.address, transport.localAddress) ||
      bootstrapAddresses.some((address) => addressEquals(address, contact.address))
    const rememberedToPing = mostRecent(remembered, MAX_REMEMBERED_PINGS, notToPing)
    /** The most recently seen contacts while the table was not empty: where to rejoin if it empties. */
    const lastKnown = yield* Ref.make<ReadonlyArray<KnownPeer>>(rememberedToPing)
    // Each contact as it enters the table too (registered before the join starts, so the first is not
    // missed): a node cut off before its first maintenance round would otherwise remember nobody.
    yield* routing.onContactAdded((contact, lastSeen) =>
      Ref.update(lastKnown, (known) => withNewest(known, { contact, lastSeen }, MAX_REMEMBERED_PINGS, notToPing))
    )
    /** Whether a bootstrap node or a remembered peer has answered during this run. */
    const reachedNetwork = yield* Ref.make(false)
    const state = yield* Ref.make<BootstrapState>(
      bootstrapAddresses.length === 0
        ? { _tag: "Standalone" }
        : { _tag: "Joining", attempts: 0, lastError: undefined, nextAttemptAt: undefined }
    )
    const joined = yield* Deferred.make<void>()
    const connected = yield* Deferred.make<void>()
    // A new network's first node is joined at once; a restarted one once it has asked its old peers
    // (whatever they answered), so that its first publication and mailbox pull find them.
    if (bootstrapAddresses.length === 0 && rememberedToPing.length === 0) yield* Deferred.succeed(joined, undefined)

    /**
     * One join attempt: ping every bootstrap node and remembered peer at once;
     * once any answered, look ourselves up and refresh far buckets. Fails with
     * why nobody answered.
     */
    const attemptJoin = (
      bootstrap: ReadonlyArray<Address>,
      peers: ReadonlyArray<KnownPeer> = rememberedToPing
    ): Effect.Effect<ReadonlyArray<Contact>, string> =>
      Effect.gen(function*() {
        const targets: ReadonlyArray<PeerTarget> = [
          ...bootstrap.map((address) => ({ address })),
          // A remembered peer must still prove the node id it had.
          ...peers.map(({ contact }) => ({ address: contact.address, nodeId: contact.nodeId }))
        ]
        // The join goes on as soon as one peer answers; the others answer into the routing table in
        // the background. Waiting for all of them let one peer gone since the last run hold the
        // join (and the mailbox pull behind it) for a whole call timeout.
        const outcomes = yield* Queue.bounded<{ readonly index: number; readonly answer: Either.Either<Contact, string> }>(
          Math.max(1, targets.length)
        )
        yield* Effect.forEach(
          targets,
          (target, index) =>
            transport.send(target, new Ping({}), callOptions).pipe(
              Effect.matchEffect({
                onFailure: (error) => Effect.succeed(Either.left(error.message)),
                onSuccess: ({ peer }) => {
                  const contact: Contact = { nodeId: peer.nodeId, address: peer.address }
                  return Effect.as(routing.observe(contact), Either.right(contact))
                }
              }),
              Effect.flatMap((answer) => Queue.offer(outcomes, { index, answer })),
              Effect.forkIn(nodeScope)
            ),
          { discard: true }
        )
        const via: Array<Contact> = []
        const failures = new Map<number, string>()
        while (via.length === 0 && failures.size < targets.length) {
          for (const { answer, index } of yield* Queue.takeBetween(outcomes, 1, targets.length)) {
            if (answer._tag === "Right") via.push(answer.right)
            else failures.set(index, answer.left)
          }
        }
        if (via.length === 0) {
          // Remembered peers are summed up: sixteen reasons would drown the bootstrap's.
          const errors = bootstrap.flatMap((_, index) => {
            const failure = failures.get(index)
            return failure === undefined ? [] : [failure]
          })
          if (peers.length > 0) errors.push(`none of the ${peers.length} peers known before answered`)
          return yield* Effect.fail(errors.join("; "))
        }
        yield* Ref.set(reachedNetwork, true)
        yield* Deferred.succeed(connected, undefined)
        yield* lookups.findNode(self)
        if (config.refreshBucketsOnJoin) {
          // In the background: the self lookup already found the neighbours that store and relay for
          // this node, so publishing and the mailbox pull need not wait for the far buckets.
          yield* Effect.forkIn(refreshAfterJoin, nodeScope)
        }
        return via
      })

    const join: Effect.Effect<void> = Effect.gen(function*() {
      const where = bootstrapAddresses.map(formatAddress).join(", ")
      const nobody = rememberedToPing.length === 0
        ? `no bootstrap node answered (${where})`
        : `neither a bootstrap node (${where}) nor a peer known from the last run answered`
      for (let attempts = 1;; attempts++) {
        const outcome = yield* Effect.either(attemptJoin(bootstrapAddresses))
        const now = yield* Clock.currentTimeMillis
        if (outcome._tag === "Right") {
          yield* Ref.set(state, { _tag: "Joined", joinedAt: now, via: outcome.right })
          yield* Deferred.succeed(joined, undefined)
          yield* Effect.logInfo(`joined the network through ${outcome.right.map((c) => formatAddress(c.address)).join(", ")}`)
          return
        }
        const delay = backoffDelay(config.bootstrapRetry, attempts, yield* Random.next)
        yield* Ref.set(state, {
          _tag: "Joining",
          attempts,
          lastError: outcome.left,
          nextAttemptAt: now + Duration.toMillis(delay)
        })
        yield* Effect.logWarning(
          `could not join the network: ${nobody}: ${outcome.left}; retrying in ${Duration.format(delay)}`
        )
        yield* Effect.sleep(delay)
      }
    })

    /**
     * The first node of a network is joined at once; restarted, it also asks
     * once whether the peers it knew are still there, so they meet again.
     */
    const reconnect: Effect.Effect<void> = Effect.matchEffect(attemptJoin([]), {
      onFailure: (reason) => Effect.logInfo(`no peer known from the last run is back yet: ${reason}`),
      onSuccess: (via) =>
        Effect.logInfo(`reconnected to ${via.length} peer${via.length === 1 ? "" : "s"} known from the last run`)
    })

    // ------------------------------------------------------------------
    // Reachability: once joined, and every `reachabilityInterval`, a few peers are asked to dial this
    // node back; the verdict (core `judgeReachability`) shows in `status`.


    const checkReachability: Effect.Effect<void> = Effect.gen(function*() {
      const contacts = yield* routing.contacts
      const asked = Chunk.toReadonlyArray(yield* Random.shuffle(contacts)).slice(0, REACHABILITY_PEERS)
      const answers = yield* Effect.forEach(
        asked,
        (contact) =>
          transport.send(contact, new DialBack({}), { timeout: Duration.sum(config.callTimeout, config.callTimeout) }).pipe(
            Effect.map(({ value }) => Option.some(value.reachable)),
            Effect.orElseSucceed(() => Option.none<boolean>())
          ),
        { concurrency: "unbounded" }
      )
      const verdict = judgeReachability(answers.flatMap((answer) => Option.toArray(answer)))
      const before = yield* Ref.getAndSet(reachability, verdict)
      if (verdict !== before) {
        yield* Effect.logInfo(
          verdict === "Private"
            ? "peers cannot reach this node at its address (behind a NAT or a firewall?): it can call out, but others cannot call in"
            : `reachability: ${verdict.toLowerCase()}`
        )
      }
    })

    // Checked at once, then every `reachabilityInterval`, or every 10 s while the answer is Unknown (a
    // node that joined first had nobody to ask; until it knows it is public it relays for nobody, and in
    // a young network it may be the only relay there is).
    const reachabilityLoop: Effect.Effect<never> = Effect.forever(Effect.gen(function*() {
      yield* Effect.catchAllCause(checkReachability, (cause) => Effect.logError("checking reachability failed", cause))
      const unknown = (yield* Ref.get(reachability)) === "Unknown"
      yield* Effect.sleep(unknown ? Duration.min(Duration.seconds(10), config.reachabilityInterval) : config.reachabilityInterval)
    }))
    yield* Effect.forkScoped(Effect.zipRight(Deferred.await(joined), reachabilityLoop))

    if (bootstrapAddresses.length > 0) yield* Effect.forkScoped(join)
    else if (rememberedToPing.length > 0) {
      yield* Effect.forkScoped(Effect.ensuring(reconnect, Deferred.succeed(joined, undefined)))
    }

    // ------------------------------------------------------------------
    // Maintenance

    /**
     * Stores every live record held here again at the k closest nodes to its
     * key. A record this node no longer belongs to hold (it knows k + slack
     * nodes closer, the lookup's answers included) goes to the k closest and,
     * once one of them holds it, is dropped here: it would only take room, and
     * copies outside the k closest never speak for a name.
     */
    const replicate = Effect.gen(function*() {
      for (const record of yield* store.all) {
        const now = yield* Clock.currentTimeMillis
        if (!isRecordLive(record, now)) continue
        const key = userKey(record.username)
        const lookup = yield* lookups.findNode(key)
        if (yield* belongs(key)) {
          // This node already holds the record; when it is one of the k closest, k - 1 others complete the set.
          yield* storeAt(record, closestOthers(lookup.closest, amongClosest(key, lookup.closest)), false)
          continue
        }
        const handed = yield* storeAt(record, lookup.closest.slice(0, config.k), false)
        // A closer node that refuses it for a newer record of the name (StaleSequence), or keeps it as
        // the name's rival claim (KeyConflict), holds what matters already.
        const held = handed.storedAt.length > 0 ||
          handed.refusals.some((refusal) =>
            refusal._tag === "RecordRejected" && (refusal.reason === "StaleSequence" || refusal.reason === "KeyConflict")
          )
        if (held && (yield* store.remove(record))) {
          yield* Effect.logDebug(`handed the record of ${record.username} to the nodes now closest to it, and dropped it here`)
        }
      }
    })

    const replicationMs = Duration.toMillis(config.recordReplicationInterval)
    const lastReplication = yield* Ref.make(yield* Clock.currentTimeMillis)

    /**
     * A node that lost every contact (it was offline long enough for all of
     * them to fail) would otherwise stay alone for good: it rejoins through
     * its bootstrap nodes and the peers it saw last, once per maintenance round.
     */
    const rejoinIfIsolated = Effect.gen(function*() {
      const table = yield* routing.snapshot
      const entries: Array<KnownPeer> = table.buckets.flatMap((bucket) =>
        bucket.entries.map((entry) => ({ contact: entry.contact, lastSeen: entry.lastSeen }))
      )
      if (entries.length > 0) {
        // With those seen before: a node that is itself cut off loses its contacts one failed call at a
        // time, and the last few left are no likelier to be up when it comes back than those that went first.
        const seen = [...entries, ...(yield* Ref.get(lastKnown))]
        yield* Ref.set(lastKnown, mostRecent(seen, MAX_REMEMBERED_PINGS, notToPing))
        return
      }
      if ((yield* Ref.get(state))._tag === "Joining") return // the join loop is at it already
      const peers = yield* Ref.get(lastKnown)
      if (bootstrapAddresses.length === 0 && peers.length === 0) return
      const outcome = yield* Effect.either(attemptJoin(bootstrapAddresses, peers))
      if (outcome._tag === "Right") {
        yield* Effect.logInfo(`lost every contact; rejoined through ${outcome.right.map((c) => formatAddress(c.address)).join(", ")}`)
      } else {
        yield* Effect.logWarning(`lost every contact and could not rejoin yet: ${outcome.left}`)
      }
    })

    const maintain = Effect.gen(function*() {
      yield* rejoinIfIsolated
      for (const index of yield* routing.staleBuckets) yield* refreshBucket(index)
      const now = yield* Clock.currentTimeMillis
      yield* store.expire(now)
      if (now - (yield* Ref.get(lastReplication)) >= replicationMs) {
        yield* Ref.set(lastReplication, now)
        yield* replicate
      }
    }).pipe(
      // A bug in one round must not stop maintenance for good: log it and go on.
      Effect.catchAllCause((cause) => Effect.logError("node maintenance failed", cause))
    )
    yield* Effect.forkScoped(Effect.schedule(maintain, Schedule.fixed(config.maintenanceInterval)))

    // ------------------------------------------------------------------
    // Routing-table snapshot

    /**
     * Saves the table's contacts with when each was last seen. Until the node
     * has reached the network, the peers it loaded are kept too (behind the
     * fresher table entries), so a run that never found them does not forget
     * them; an empty list is never saved over the previous one. Bound: the
     * ID_BITS * k most recently seen.
     */
    const saveKnownPeers = Effect.gen(function*() {
      const table = yield* routing.snapshot
      const current: Array<KnownPeer> = table.buckets.flatMap((bucket) =>
        bucket.entries.map((entry) => ({ contact: entry.contact, lastSeen: entry.lastSeen }))
      )
      const candidates = (yield* Ref.get(reachedNetwork)) ? current : [...current, ...remembered]
      const peers = mostRecent(candidates, ID_BITS * config.k, (peer) => peer.contact.nodeId === self)
      if (peers.length > 0) yield* knownPeers.save(peers)
    })
    if (knownPeers.remembers) {
      yield* Effect.addFinalizer(() => saveKnownPeers)
      yield* Effect.forkScoped(
        Effect.schedule(
          // KnownPeers logs its own storage failures; this only guards against a bug.
          Effect.catchAllCause(saveKnownPeers, (cause) => Effect.logError("saving the routing table failed", cause)),
          Schedule.spaced(config.routingSnapshotInterval)
        )
      )
    }

    // The first node of a new network stands alone only until another node joins it: from then on
    // its status says Joined (since that peer entered the table), so nobody reads "a new network"
    // while it has peers. Its join state stays Standalone, which lookups read as "alone by choice".
    const firstPeer = yield* Ref.make<Option.Option<{ readonly at: number; readonly contact: Contact }>>(Option.none())
    yield* routing.onContactAdded((contact, at) =>
      Ref.update(firstPeer, (first) => (Option.isSome(first) ? first : Option.some({ at, contact })))
    )

    const service: DhtNodeService = {
      status: Effect.gen(function*() {
        const joinState = yield* Ref.get(state)
        const first = yield* Ref.get(firstPeer)
        return {
          nodeId: self,
          address: transport.localAddress,
          contactCount: yield* routing.contactCount,
          storedRecords: yield* store.size,
          bootstrap: joinState._tag === "Standalone" && Option.isSome(first)
            ? { _tag: "Joined" as const, joinedAt: first.value.at, via: [first.value.contact] }
            : joinState,
          bootstrapAddresses,
          reachability: yield* Ref.get(reachability),
          claimChecks: claimBudget.stats()
        }
      }),
      bootstrapState: Ref.get(state),
      rememberedPeers: rememberedToPing.length,
      reachability: Ref.get(reachability),
      awaitJoined: Deferred.await(joined),
      // Joined without any answer: a standalone node, or a restarted one whose old peers are all gone.
      awaitConnected: Effect.raceFirst(Deferred.await(connected), Deferred.await(joined)),
      publish,
      resolveRecords: (key, options) =>
        Effect.gen(function*() {
          // Records in answers to this node's own lookups are checked outside the claim-check
          // budget: this node sets their pace (one lookup asks a bounded number of peers, each
          // answering with at most a record and a rival), the hash memo makes a claim met again
          // free, and drawing on the budget peers share would let a flood of Stores make this
          // node's own name lookups fail.
          const valid = validRecordAt(key, verify, claimRules)
          const heldHere = Effect.flatMap(Clock.currentTimeMillis, (now) =>
            Effect.map(heldClaims(key, now), (claims) => claims.filter((record) => valid(record, now))))
          // On request (relays checking a mailbox's owner many times a minute), a node that is itself
          // one of the k closest of the key (by its own table) and holds the name answers from its
          // store, as Kademlia's storers do. Never for what a user reads: a storer that missed the
          // owner's Store (offline, timed out) may hold only a squatter's claim, and its user would
          // pin that key.
          if (options?.localAnswer === true && amongClosest(key, yield* routing.closest(key, config.k))) {
            const local = yield* heldHere
            if (local.length > 0) return { answer: resolveClaims(local), asked: 0 }
          }
          const gathered = yield* lookups.gatherRecords(key, valid)
          // The k closest are those the lookup found, and this node when it is closer than the k-th:
          // then only k - 1 others speak for the name. This node's own copy counts only when it is
          // itself one of the k closest: a copy held anywhere else (stored before the network grew,
          // or planted) does not speak for the name.
          const selfAmongClosest = amongClosest(key, gathered.closest)
          const speakers = new Set(closestOthers(gathered.closest, selfAmongClosest).map((contact) => contact.nodeId))
          const records = gathered.records.filter((held) => speakers.has(held.nodeId)).map((held) => held.record)
          if (selfAmongClosest) records.push(...(yield* heldHere))
          if (gathered.stats.responses === 0 && records.length === 0) {
            const contacts = yield* routing.contactCount
            // A node alone in a network it started itself has asked everyone there is.
            if (contacts > 0 || (yield* Ref.get(state))._tag !== "Standalone") {
              return yield* new NotConnected({
                detail: contacts === 0
                  ? "this node knows no peer yet"
                  : `none of the ${contacts} known peers answered`
              })
            }
          }
          return { answer: resolveClaims(records), asked: gathered.closest.length }
        }),
      findRecord: (key, options) =>
        Effect.map(
          Effect.either(service.resolveRecords(key, options)),
          (outcome) =>
            outcome._tag === "Right" && outcome.right.answer._tag === "Owner"
              ? Option.some(outcome.right.answer.record)
              : Option.none()
        ),
      findNode: lookups.findNode,
      findNodeDisjoint: lookups.findNodeDisjoint,
      onRecordFromOwner: (listener) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            ownerListeners.add(listener)
          }),
          () => Effect.sync(() => ownerListeners.delete(listener))
        ),
      onRecordHeld: (listener) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            heldListeners.add(listener)
          }),
          () => Effect.sync(() => heldListeners.delete(listener))
        ),
      belongsHere: belongs,
      storageRefusal,
      claimCheckGate,
      heldRecords: (key) => Effect.flatMap(Clock.currentTimeMillis, (now) => heldClaims(key, now)),
      closestKnown: (key, n) => routing.closest(key, n)
    }
    return service
  })

  /**
   * The routing table, the lookups and the node, built one after another in
   * the caller's scope (released in the reverse order). One layer, not three
   * composed: each layer combinator costs a node start about half a
   * millisecond of Effect machinery (a memo map, scopes, fibers), and a
   * thousand nodes start in one benchmark (`docs/decisions.md`, "A join's
   * leftovers").
   */
  static readonly makeWithStores: Effect.Effect<
    Context.Context<DhtNode | Routing | Lookups>,
    never,
    Transport | Identity | Signatures | NodeConfig | RecordStore | KnownPeers | Scope.Scope
  > = Effect.gen(function*() {
    const routing = yield* Routing.make
    const lookups = yield* Effect.provideService(Lookups.make, Routing, routing)
    const node = yield* DhtNode.make.pipe(Effect.provideService(Routing, routing), Effect.provideService(Lookups, lookups))
    return Context.make(DhtNode, node).pipe(Context.add(Routing, routing), Context.add(Lookups, lookups))
  })

  /**
   * The node with its own routing table and lookups, over the given record
   * store and known peers (durable ones for a real node); exposes the routing
   * table and lookups too.
   */
  static readonly layerWithStores: Layer.Layer<
    DhtNode | Routing | Lookups,
    never,
    Transport | Identity | Signatures | NodeConfig | RecordStore | KnownPeers
  > = Layer.scopedContext(DhtNode.makeWithStores)

  /**
   * The node with its own routing table, lookups and in-memory record store,
   * remembering no peers across runs (no snapshot timer); exposes them too.
   */
  static readonly layerWithMemoryStore: Layer.Layer<
    DhtNode | Routing | Lookups | RecordStore,
    never,
    Transport | Identity | Signatures | NodeConfig
  > = Layer.scopedContext(Effect.gen(function*() {
    const store = yield* RecordStore.makeMemory
    const built = yield* DhtNode.makeWithStores.pipe(
      Effect.provideService(RecordStore, store),
      Effect.provideService(KnownPeers, KnownPeers.none)
    )
    return Context.add(built, RecordStore, store)
  }))
}
