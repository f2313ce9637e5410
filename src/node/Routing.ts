/**
 * The node's routing table as a service. It owns the core `RoutingTable`
 * value in a `Ref`, stamps every update with the `Clock`, and performs the
 * one kind of I/O the table asks for: when a full bucket's head must prove it
 * is alive, it pings it through the `Transport` in a background fiber and
 * feeds the outcome back. Only peers proven by the authenticated transport
 * are observed here; contacts heard of second-hand never enter the table.
 *
 * Addresses are verified before they enter: a peer that answered a call we
 * made is at the address we dialled (`observe`); a peer that called us is at
 * the host its connection came from and the port it says it listens on,
 * which only counts once we have dialled that address and the same node id
 * answered (`observeCaller`). So no contact in a table, and none handed out
 * in a `FindNode` answer, carries an address nobody checked, and a node can
 * never get others to dial a third party.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, FiberSet, Layer, Random, Ref, type Scope } from "effect"
import { addressEquals, type Address, type Contact, formatAddress } from "../core/Contact.js"
import { ID_BYTES, type Key, type NodeId, type RandomBytes, randomKeyInBucket } from "../core/Id.js"
import { meetsIdPuzzle } from "../core/IdPuzzle.js"
import * as Table from "../core/RoutingTable.js"
import { hasSeen, makeSeenSet, markSeen } from "../core/SeenSet.js"
import { type DialBackSlot, dialBackSlotLimits, DialBackSlots } from "../core/DialBackSlots.js"
import { Identity } from "./Identity.js"
import { NodeConfig } from "./NodeConfig.js"
import { Ping } from "./Protocol.js"
import { failureCountsAgainstPeer, Transport } from "./Transport.js"

/**
 * `length` bytes drawn from Effect's `Random`, served to the core as a
 * `RandomBytes` function. Drawing up front keeps the core synchronous while a
 * seeded `Random` (or `TestRandom`) still replays a run exactly. The function
 * dies with a RangeError if asked for more bytes than were drawn.
 */
export const drawRandomBytes = (length: number): Effect.Effect<RandomBytes> =>
  Effect.gen(function*() {
    const pool = new Uint8Array(length)
    for (let i = 0; i < length; i++) pool[i] = yield* Random.nextIntBetween(0, 256)
    let used = 0
    return (wanted: number) => {
      if (used + wanted > length) throw new RangeError(`drew ${length} random bytes, asked for ${used + wanted}`)
      const out = pool.slice(used, used + wanted)
      used += wanted
      return out
    }
  })

/** Most dial-backs of callers in progress at once; beyond it callers are not verified (they still get answers). */
export const MAX_DIAL_BACKS = 32

/**
 * Longest a dial-back waits (or the call timeout, if shorter). A caller behind
 * a NAT never answers one, so each holds a slot this long: 1 s keeps 32 slots
 * good for 32 such callers a second while any reachable node answers in time.
 */
export const DIAL_BACK_TIMEOUT_MS = 1000

/** How long a dial-back of one node id at one address is not repeated (10 minutes). */
export const DIAL_BACK_WINDOW_MS = 10 * 60_000

/** The key under which a dial-back of `peer` at its address is remembered for `DIAL_BACK_WINDOW_MS`. */
const dialBackKey = (peer: Contact): string => `${peer.nodeId}@${formatAddress(peer.address)}`

/** What the routing service offers. */
export interface RoutingService {
  /** Our own node id (the table's `self`). */
  readonly self: NodeId
  /**
   * Records that `peer` proved itself alive now (it answered us or sent us an
   * authenticated request). When its bucket is full, the bucket's head is
   * pinged in the background and kept or replaced by the outcome.
   */
  readonly observe: (peer: Contact) => Effect.Effect<void>
  /**
   * Records that `peer` called us (an authenticated inbound request). Its
   * address is what the transport saw, not yet verified: a contact already in
   * the table at that address (or waiting in a replacement cache there) is
   * refreshed; otherwise, when its bucket has a use for it (core
   * `admitsNewcomer`), the address is dialled back in the background (at most `MAX_DIAL_BACKS` at once, two per
   * caller host and one per node id, each for at most `DIAL_BACK_TIMEOUT_MS`; once per node id and address every
   * 10 minutes, unless the probe could not even start) and the peer enters only if the same node id answers there.
   */
  readonly observeCaller: (peer: Contact) => Effect.Effect<void>
  /**
   * Records that a request to `nodeId` failed. With `address`, the failure
   * only counts if the table knows `nodeId` at that address, so a contact
   * that some peer advertised at a wrong address cannot get a good entry evicted.
   */
  readonly recordFailure: (nodeId: NodeId, address?: Address) => Effect.Effect<void>
  /** Removes `nodeId` from the table at once. */
  readonly remove: (nodeId: NodeId) => Effect.Effect<void>
  /** The `n` known contacts closest to `target`, closest first, skipping `exclude`. */
  readonly closest: (target: Key, n: number, exclude?: NodeId) => Effect.Effect<ReadonlyArray<Contact>>
  /** Every contact in the buckets. */
  readonly contacts: Effect.Effect<ReadonlyArray<Contact>>
  /** Number of contacts in the buckets. */
  readonly contactCount: Effect.Effect<number>
  /** Buckets untouched for longer than `bucketRefreshInterval`. */
  readonly staleBuckets: Effect.Effect<ReadonlyArray<number>>
  /** Marks bucket `index` as refreshed now. */
  readonly touchBucket: (index: number) => Effect.Effect<void>
  /** A random key inside bucket `index` of our table, to refresh it with a lookup. */
  readonly randomKeyInBucket: (index: number) => Effect.Effect<Key>
  /** The current table, for status pages and persistence. */
  readonly snapshot: Effect.Effect<Table.RoutingTable>
  /**
   * Calls `listener` (for the lifetime of the scope) with every contact that
   * enters a bucket (not one that only waits in a replacement cache), and
   * the time it entered (ms since the epoch). It runs inside `observe`, so
   * it must return at once (queue longer work).
   */
  readonly onContactAdded: (
    listener: (contact: Contact, at: number) => Effect.Effect<void>
  ) => Effect.Effect<void, never, Scope.Scope>
}

/** The node's routing table. */
export class Routing extends Context.Tag("peerchat/Routing")<Routing, RoutingService>() {
  /**
   * Builds the service; the scope bounds the ping fibers (at most one per
   * bucket is outstanding, so at most 256 run at once).
   */
  static readonly make: Effect.Effect<RoutingService, never, Identity | NodeConfig | Transport | Scope.Scope> = Effect.gen(function*() {
    const identity = yield* Identity
    const config = yield* NodeConfig
    const transport = yield* Transport
    const self = identity.nodeId
    const pings = yield* FiberSet.make<void>()
    const start = yield* Clock.currentTimeMillis
    const table = yield* Ref.make(Table.makeRoutingTable(self, start, {
      k: config.k,
      replacementCacheSize: config.replacementCacheSize,
      maxConsecutiveFailures: config.maxConsecutiveFailures,
      // A ping still unanswered after the call timeout has failed; allow one more timeout of slack.
      pingTimeoutMs: 2 * Duration.toMillis(config.callTimeout),
      headFreshnessMs: Duration.toMillis(config.headFreshness),
      maxPerGroup: config.maxPerNetwork
    }))
    const now = Clock.currentTimeMillis
    const refreshMs = Duration.toMillis(config.bucketRefreshInterval)

    const recordFailure = (nodeId: NodeId, address?: Address): Effect.Effect<void> =>
      Effect.flatMap(now, (time) =>
        Ref.update(table, (current) => {
          if (address !== undefined) {
            const known = Table.findContact(current, nodeId)
            if (known === undefined || !addressEquals(known.contact.address, address)) return current
          }
          return Table.recordFailure(current, nodeId, time)
        }))

    const ping = (contact: Contact): Effect.Effect<void> =>
      transport.send({ address: contact.address, nodeId: contact.nodeId }, new Ping({}), {
        timeout: config.callTimeout
      }).pipe(
        Effect.matchEffect({
          // The transport's peer is a plain id and address: kept as it is, shared by every table that holds it.
          onSuccess: (answer) => observe(answer.peer),
          onFailure: (error) => failureCountsAgainstPeer(error) ? recordFailure(contact.nodeId) : Effect.void
        })
      )

    // Bound: one per service that listens (the node's record hand-over).
    const addedListeners = new Set<(contact: Contact, at: number) => Effect.Effect<void>>()

    const observe = (peer: Contact): Effect.Effect<void> =>
      Effect.flatMap(now, (time) =>
        Ref.modify(table, (current) => {
          const inTable = Table.findContact(current, peer.nodeId) !== undefined
          // An id that does not solve the puzzle is cheap to make and place at will: never routed
          // through (checked once, when it would enter; table entries passed it already).
          if (!inTable && !meetsIdPuzzle(peer.nodeId, config.idPuzzleBits)) {
            return [{ command: undefined, added: false }, current]
          }
          const known = addedListeners.size > 0 && inTable
          const result = Table.observe(current, peer, time)
          const added = addedListeners.size > 0 && !known && Table.findContact(result.table, peer.nodeId) !== undefined
          return [{ command: result.command, added }, result.table]
        }).pipe(
          Effect.flatMap(({ added, command }) =>
            Effect.zipRight(
              added ? Effect.forEach(addedListeners, (listener) => listener(peer, time), { discard: true }) : Effect.void,
              command === undefined ? Effect.void : FiberSet.run(pings, ping(command.contact)).pipe(Effect.asVoid)
            )
          )
        ))

    // Bound: 4,096 node id and address pairs (two generations of SeenSet).
    let dialedBack = makeSeenSet(start, { capacity: 4096, windowMs: DIAL_BACK_WINDOW_MS })
    const callerChecks = new DialBackSlots(dialBackSlotLimits(MAX_DIAL_BACKS))

    /** Records that the dial-back of `peer` at its address was made, so it is not made again within the window. */
    const markDialedBack = (peer: Contact) =>
      Effect.flatMap(now, (time) =>
        Effect.sync(() => {
          dialedBack = markSeen(dialedBack, dialBackKey(peer), time).set
        }))

    const dialBack = (peer: Contact, slot: DialBackSlot): Effect.Effect<void> =>
      transport.proveListening({ address: peer.address, nodeId: peer.nodeId }, {
        timeout: Duration.millis(Math.min(DIAL_BACK_TIMEOUT_MS, Duration.toMillis(config.callTimeout)))
      }).pipe(
        Effect.matchEffect({
          // Success: the peer at the address we dialled, now verified.
          onSuccess: (verified) => Effect.zipRight(markDialedBack(peer), observe(verified)),
          // A probe this node could not start (all its probes under way: perhaps held by others'
          // `DialBack` requests) says nothing of the caller: it is checked again at its next call,
          // rather than left out for the whole window.
          onFailure: (error) => failureCountsAgainstPeer(error) ? markDialedBack(peer) : Effect.void
        }),
        Effect.ensuring(Effect.sync(() => callerChecks.release(slot)))
      )

    const observeCaller = (peer: Contact): Effect.Effect<void> =>
      Effect.flatMap(Ref.get(table), (current) => {
        // Known at that address, in a bucket or waiting in its replacement cache: proven already.
        const known = Table.findKnown(current, peer.nodeId)
        if (known !== undefined && addressEquals(known.contact.address, peer.address)) return observe(known.contact)
        // Cheap checks first: a caller that accepts no connections, an id that does not solve the
        // puzzle, all dial-backs under way.
        if (peer.address.port === 0 || !meetsIdPuzzle(peer.nodeId, config.idPuzzleBits) || callerChecks.held >= MAX_DIAL_BACKS) {
          return Effect.void
        }
        return Effect.flatMap(now, (time) => {
          // A caller its bucket has no use for would only be dropped: no dial-back (see core admitsNewcomer).
          if (!Table.admitsNewcomer(current, peer, time) || hasSeen(dialedBack, dialBackKey(peer), time)) return Effect.void
          // One at a time per node id (a new port in each call gains nothing) and two per host (core DialBackSlots).
          const slot = callerChecks.take(peer.nodeId, peer.address.host)
          if (slot._tag === "Refused") return Effect.void
          return FiberSet.run(pings, dialBack(peer, slot)).pipe(Effect.asVoid)
        })
      })

    return {
      self,
      observe,
      observeCaller,
      recordFailure,
      remove: (nodeId) => Ref.update(table, (current) => Table.removeContact(current, nodeId)),
      closest: (target, n, exclude) =>
        Effect.map(
          Ref.get(table),
          (current) => Table.closest(current, target, n, exclude === undefined ? undefined : (id) => id === exclude)
        ),
      contacts: Effect.map(Ref.get(table), Table.allContacts),
      contactCount: Effect.map(Ref.get(table), Table.contactCount),
      staleBuckets: Effect.flatMap(now, (time) => Effect.map(Ref.get(table), (t) => Table.staleBuckets(t, time, refreshMs))),
      touchBucket: (index) => Effect.flatMap(now, (time) => Ref.update(table, (t) => Table.touchBucket(t, index, time))),
      randomKeyInBucket: (index) => Effect.map(drawRandomBytes(ID_BYTES), (bytes) => randomKeyInBucket(self, index, bytes)),
      snapshot: Ref.get(table),
      onContactAdded: (listener) =>
        Effect.acquireRelease(
          Effect.sync(() => void addedListeners.add(listener)),
          () => Effect.sync(() => void addedListeners.delete(listener))
        )
    }
  })

  /** The routing service, for as long as the layer lives. */
  static readonly layer: Layer.Layer<Routing, never, Identity | NodeConfig | Transport> = Layer.scoped(Routing, Routing.make)
}
