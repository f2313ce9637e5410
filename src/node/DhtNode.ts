/**
 * A running DHT node: it answers the protocol (Ping, FindNode, FindValue,
 * Store) through the `Transport`, joins the network through its bootstrap
 * nodes (retrying with backoff, loudly, until one answers), keeps its routing
 * table fresh and its stored records alive in a maintenance fiber, and
 * publishes user records at the k nodes closest to their key. Every inbound
 * request first observes its authenticated caller into `Routing`. All fibers
 * live in the layer's scope, so closing the layer stops the node.
 *
 * @since 0.1.0
 */
import { Clock, Context, Deferred, Duration, Effect, Layer, Option, Random, Ref, Schedule, Schema } from "effect"
import { type Address, addressEquals, type Contact, formatAddress } from "../core/Contact.js"
import { bucketIndex, compareDistance } from "../core/Distance.js"
import type { Key, NodeId } from "../core/Id.js"
import type { LookupResult } from "../core/Lookup.js"
import { isRecordLive, RecordRejected, type UserRecord } from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { Identity, Signatures } from "./Identity.js"
import { Lookups, validRecordAt } from "./Lookups.js"
import { backoffDelay, NodeConfig } from "./NodeConfig.js"
import { Ping, type RequestRefused, Store } from "./Protocol.js"
import { RecordStore } from "./RecordStore.js"
import { Routing } from "./Routing.js"
import { type DhtHandlers, Transport, type TransportError } from "./Transport.js"

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
  /** A bootstrap node answered and the node looked itself up. */
  | { readonly _tag: "Joined"; readonly joinedAt: number; readonly via: ReadonlyArray<Contact> }

/** A snapshot of the node for status displays. */
export interface NodeStatus {
  readonly nodeId: NodeId
  readonly address: Address
  readonly contactCount: number
  readonly storedRecords: number
  readonly bootstrap: BootstrapState
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

/** What a running node offers. */
export interface DhtNodeService {
  /** Id, address, table size, stored records and bootstrap state. */
  readonly status: Effect.Effect<NodeStatus>
  /** Where the join stands. */
  readonly bootstrapState: Effect.Effect<BootstrapState>
  /** Completes once the node has joined (at once for a standalone node). */
  readonly awaitJoined: Effect.Effect<void>
  /**
   * Stores `record` at the k nodes closest to its user key (found by a
   * lookup; this node too when it is among them). Succeeds if any accepted.
   */
  readonly publish: (record: UserRecord) => Effect.Effect<PublishResult, RecordNotStored>
  /**
   * The valid live record under `key`: from this node's store, else from a
   * FindValue lookup, after which the closest node asked that lacked it is
   * asked to cache it.
   */
  readonly findRecord: (key: Key) => Effect.Effect<Option.Option<UserRecord>>
  /** The k closest nodes to `target` (a FindNode lookup). */
  readonly findNode: (target: Key) => Effect.Effect<LookupResult<never>>
}

/** A DHT node. */
export class DhtNode extends Context.Tag("peerchat/DhtNode")<DhtNode, DhtNodeService>() {
  /** Starts the node: installs the handlers, then joins and maintains in background fibers of the scope. */
  static readonly make = Effect.gen(function*() {
    const config = yield* NodeConfig
    const identity = yield* Identity
    const { verify } = yield* Signatures
    const transport = yield* Transport
    const routing = yield* Routing
    const lookups = yield* Lookups
    const store = yield* RecordStore
    const self = identity.nodeId
    const selfContact: Contact = { nodeId: self, address: transport.localAddress }
    const callOptions = { timeout: config.callTimeout }
    const nodeScope = yield* Effect.scope

    const handlers: DhtHandlers = {
      Ping: (caller, _request, observedHost) => Effect.as(routing.observe(caller), { observedHost }),
      FindNode: (caller, request) =>
        Effect.zipRight(
          routing.observe(caller),
          Effect.map(routing.closest(request.target, config.k, caller.nodeId), (contacts) => ({ contacts }))
        ),
      FindValue: (caller, request) =>
        Effect.gen(function*() {
          yield* routing.observe(caller)
          const now = yield* Clock.currentTimeMillis
          const held = yield* store.get(request.key, now)
          const contacts = yield* routing.closest(request.key, config.k, caller.nodeId)
          return Option.isSome(held)
            ? { _tag: "Found" as const, record: held.value, contacts }
            : { _tag: "Closer" as const, contacts }
        }),
      Store: (caller, request) =>
        Effect.gen(function*() {
          yield* routing.observe(caller)
          const now = yield* Clock.currentTimeMillis
          const outcome = yield* store.put(request.record, now)
          return { outcome }
        })
    }
    yield* transport.serve(handlers)

    /** Refreshes bucket `index` with a lookup of a random key inside it. */
    const refreshBucket = (index: number): Effect.Effect<void> =>
      Effect.gen(function*() {
        const target = yield* routing.randomKeyInBucket(index)
        yield* lookups.findNode(target)
        yield* routing.touchBucket(index)
      })

    /**
     * Stores `record` at `targets`, and here too when `includeSelf`. Returns
     * the contacts that accepted it and every refusal.
     */
    const storeAt = (record: UserRecord, targets: ReadonlyArray<Contact>, includeSelf: boolean) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const local = includeSelf ? [yield* Effect.either(store.put(record, now))] : []
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

    const publish = (record: UserRecord): Effect.Effect<PublishResult, RecordNotStored> =>
      Effect.gen(function*() {
        const key = userKey(record.username)
        const lookup = yield* lookups.findNode(key)
        const includeSelf = amongClosest(key, lookup.closest)
        const { attempted, refusals, storedAt } = yield* storeAt(record, closestOthers(lookup.closest, includeSelf), includeSelf)
        const rejections = refusals.filter((refusal): refusal is RecordRejected => refusal instanceof RecordRejected)
        const conflicts = rejections.filter((rejection) => rejection.reason === "KeyConflict").length
        if (storedAt.length > 0) return { storedAt, attempted, conflicts }
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
    // Joining

    const bootstrapAddresses = config.bootstrap.filter((address) => !addressEquals(address, transport.localAddress))
    const state = yield* Ref.make<BootstrapState>(
      bootstrapAddresses.length === 0
        ? { _tag: "Standalone" }
        : { _tag: "Joining", attempts: 0, lastError: undefined, nextAttemptAt: undefined }
    )
    const joined = yield* Deferred.make<void>()
    if (bootstrapAddresses.length === 0) yield* Deferred.succeed(joined, undefined)

    /** One join attempt: ping every bootstrap node, then look ourselves up and refresh far buckets. */
    const attemptJoin: Effect.Effect<ReadonlyArray<Contact>, string> = Effect.gen(function*() {
      const answers = yield* Effect.forEach(
        bootstrapAddresses,
        (address) => Effect.either(transport.send({ address }, new Ping({}), callOptions)),
        { concurrency: "unbounded" }
      )
      const via: Array<Contact> = []
      const errors: Array<string> = []
      for (const answer of answers) {
        if (answer._tag === "Left") {
          errors.push(answer.left.message)
          continue
        }
        const peer: Contact = { nodeId: answer.right.peer.nodeId, address: answer.right.peer.address }
        via.push(peer)
        yield* routing.observe(peer)
      }
      if (via.length === 0) return yield* Effect.fail(errors.join("; "))
      yield* lookups.findNode(self)
      if (config.refreshBucketsOnJoin) {
        const [nearest] = yield* routing.closest(self, 1)
        const farther = nearest === undefined ? 0 : bucketIndex(self, nearest.nodeId)
        for (let index = 0; index < farther; index++) yield* refreshBucket(index)
      }
      return via
    })

    const join: Effect.Effect<void> = Effect.gen(function*() {
      const where = bootstrapAddresses.map(formatAddress).join(", ")
      for (let attempts = 1;; attempts++) {
        const outcome = yield* Effect.either(attemptJoin)
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
          `could not join the network: no bootstrap node answered (${where}): ${outcome.left}; ` +
            `retrying in ${Duration.format(delay)}`
        )
        yield* Effect.sleep(delay)
      }
    })
    if (bootstrapAddresses.length > 0) yield* Effect.forkScoped(join)

    // ------------------------------------------------------------------
    // Maintenance

    /** Stores every live record held here again at the k closest nodes to its key. */
    const replicate = Effect.gen(function*() {
      for (const record of yield* store.all) {
        const now = yield* Clock.currentTimeMillis
        if (!isRecordLive(record, now)) continue
        const key = userKey(record.username)
        const lookup = yield* lookups.findNode(key)
        // This node already holds the record; when it is one of the k closest, k - 1 others complete the set.
        yield* storeAt(record, closestOthers(lookup.closest, amongClosest(key, lookup.closest)), false)
      }
    })

    const replicationMs = Duration.toMillis(config.recordReplicationInterval)
    const lastReplication = yield* Ref.make(yield* Clock.currentTimeMillis)
    const maintain = Effect.gen(function*() {
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

    const service: DhtNodeService = {
      status: Effect.gen(function*() {
        return {
          nodeId: self,
          address: transport.localAddress,
          contactCount: yield* routing.contactCount,
          storedRecords: yield* store.size,
          bootstrap: yield* Ref.get(state)
        }
      }),
      bootstrapState: Ref.get(state),
      awaitJoined: Deferred.await(joined),
      publish,
      findRecord: (key) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const held = yield* store.get(key, now)
          if (Option.isSome(held)) return held
          const result = yield* lookups.findValue(key, validRecordAt(key, verify))
          if (result.value !== undefined && result.cacheAt !== undefined) {
            // As in Kademlia, the closest node on the path that lacked the record caches it, so
            // later lookups for a popular name end sooner. In the background: the answer is ready.
            yield* transport.send(result.cacheAt, new Store({ record: result.value }), callOptions).pipe(
              Effect.ignore,
              Effect.forkIn(nodeScope)
            )
          }
          return Option.fromNullable(result.value)
        }),
      findNode: lookups.findNode
    }
    return service
  })

  /** The node over the given routing, lookups and store. */
  static readonly layer: Layer.Layer<
    DhtNode,
    never,
    Transport | Identity | Signatures | NodeConfig | RecordStore | Routing | Lookups
  > = Layer.scoped(DhtNode, DhtNode.make)

  /** The node with its own routing table, lookups and in-memory record store; exposes them too. */
  static readonly layerWithMemoryStore: Layer.Layer<
    DhtNode | Routing | Lookups | RecordStore,
    never,
    Transport | Identity | Signatures | NodeConfig
  > = DhtNode.layer.pipe(
    Layer.provideMerge(Lookups.layer),
    Layer.provideMerge(Routing.layer),
    Layer.provideMerge(RecordStore.layerMemory)
  )
}
