/**
 * Relayed connections, both halves (Circuit Relay v2 style):
 *
 * - **As a relay** (a node peers found publicly reachable): it takes
 *   reservations from nodes that cannot be dialled, hands callers circuit
 *   tokens, offers them to the reserved node, and lets its transport splice
 *   the two legs (decisions in core `CircuitRelay`; the splicing in the
 *   transport). It relays ciphertext it cannot read: the two ends run their
 *   own secure channel through the circuit.
 * - **Behind a NAT** (peers could not dial it back, core `Reachability`):
 *   it keeps reservations with `RELAYS_WANTED` relays picked among the peers
 *   of its routing table (whose addresses were verified by dialling them),
 *   asks each for circuits without pause (a long poll, which also renews the
 *   reservation), takes every circuit offered, and replaces a relay that
 *   fails or leaves. Its user record then lists those relays instead of an
 *   address nobody can dial (`advertised`), and the directory re-publishes it
 *   whenever they change.
 *
 * @since 0.3.0
 */
import { Chunk, Clock, Context, Deferred, Duration, Effect, Fiber, Layer, Random, Ref, type Stream, SubscriptionRef } from "effect"
import { concatBytes, toHex, utf8 } from "../core/Bytes.js"
import { type CircuitLimits, CircuitTable } from "../core/CircuitRelay.js"
import { uint64 } from "../core/Encoding.js"
import type { NodeId } from "../core/Id.js"
import { advertisedRoutes, type AdvertisedRoutes, type RelayHint, relayHintEquals } from "../core/PeerAddress.js"
import {
  AWAIT_CIRCUIT_MAX_MILLIS,
  AwaitCircuit,
  CIRCUIT_TOKEN_BYTES,
  type CircuitRequest,
  CircuitRefused,
  type HolePunch,
  MAX_OFFERS_PER_ANSWER,
  Reserve
} from "./CircuitProtocol.js"
import { DhtNode } from "./DhtNode.js"
import { Identity } from "./Identity.js"
import { NodeConfig } from "./NodeConfig.js"
import { Routing } from "./Routing.js"
import { type Handlers, Transport } from "./Transport.js"

/** Relays a node behind a NAT keeps reservations with: one spare, so losing one leaves it reachable. */
export const RELAYS_WANTED = 2

/** How often a node behind a NAT checks that it holds enough reservations (at once after losing one). */
const RESERVATION_CHECK_INTERVAL = Duration.seconds(30)

/** How often the reservations are looked at while this node does not know yet whether peers can dial it. */
const UNKNOWN_REACHABILITY_RECHECK = Duration.seconds(1)

/**
 * How often a node that cannot be dialled and holds no relay yet looks
 * again (its table may hold only peers that refused so far; new ones arrive
 * with its first lookups): until then nobody can reach it.
 */
const NO_RELAY_RECHECK = Duration.seconds(3)

/** A relay that failed is not asked again for this long. */
const FAILED_RELAY_BACKOFF_MS = 60_000

/**
 * A peer that refused only because it does not know yet whether it is
 * public (it joined moments ago, like this node), or did not answer in time
 * (busy, or a lost connection), is asked again sooner: in a young network it
 * may be the only relay there is. Only a relay's considered refusal (full)
 * holds it off for the whole `FAILED_RELAY_BACKOFF_MS`.
 */
const NOT_YET_RELAYING_BACKOFF_MS = 10_000

/** What the relay serves and what this node holds, for `status`. */
export interface CircuitStatus {
  /** Relays this node holds reservations with (empty unless it is behind a NAT). */
  readonly relays: ReadonlyArray<RelayHint>
  /** Reservations this node holds for others, as a relay. */
  readonly reservationsServed: number
  /** Circuits offered or spliced at this relay now. */
  readonly circuitsServed: number
  /** Circuits this relay spliced since it started. */
  readonly circuitsRelayed: number
}

/** Relaying for others and being reached through relays. */
export class Circuits extends Context.Tag("peerchat/Circuits")<Circuits, {
  /** The routes this node's record should list now. */
  readonly advertised: Effect.Effect<AdvertisedRoutes>
  /** The relays held, each time they change (the current ones first). */
  readonly relayChanges: Stream.Stream<ReadonlyArray<RelayHint>>
  readonly status: Effect.Effect<CircuitStatus>
}>() {
  /** The service for a node over its transport, DHT and routing table. */
  static readonly layer = (
    limits?: Partial<CircuitLimits>
  ): Layer.Layer<Circuits, never, Transport | DhtNode | Routing | Identity | NodeConfig> =>
    Layer.scoped(Circuits, makeCircuits(limits))
}

const TOKEN_PREFIX = utf8("peerchat/circuit-token\n")

const makeCircuits = (limits?: Partial<CircuitLimits>) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const dht = yield* DhtNode
    const routing = yield* Routing
    const identity = yield* Identity
    const config = yield* NodeConfig
    const table = new CircuitTable(limits)
    const clock = yield* Effect.clock
    const reachability = dht.reachability

    // ------------------------------------------------------------------
    // As a relay

    /** Callers waiting in AwaitCircuit, woken when an offer for them arrives. Bound: one per reservation. */
    const waiters = new Map<NodeId, Deferred.Deferred<void>>()
    let tokensIssued = 0

    /**
     * A fresh circuit token: the first 16 bytes of this node's signature over
     * a counter, the time and both ends. Unpredictable to anyone without this
     * node's key, never repeated, and no randomness source needed here.
     */
    const newToken = (caller: NodeId, target: NodeId, now: number): string =>
      toHex(
        identity.sign(
          concatBytes(TOKEN_PREFIX, uint64(tokensIssued++, "token counter"), uint64(now, "token time"), utf8(caller), utf8(target))
        ).subarray(0, CIRCUIT_TOKEN_BYTES)
      )

    const refused = (reason: CircuitRefused["reason"], detail: string) => new CircuitRefused({ reason, detail })

    /**
     * Relays only for what peers found publicly reachable, and never for a
     * caller that is itself relayed or reached over a punched connection
     * (port 0: its host is what a relay reported, not what a socket showed).
     */
    const mayRelay = (caller: { readonly relayedBy?: NodeId | undefined; readonly address: { readonly port: number } }) =>
      Effect.gen(function*() {
        if (caller.relayedBy !== undefined || caller.address.port === 0) {
          return yield* refused("NotRelaying", "a caller reached through a relay or a punched connection cannot reserve here")
        }
        if ((yield* reachability) !== "Public") {
          return yield* refused("NotRelaying", "this node is not known to be publicly reachable")
        }
      })

    // HolePunch is answered by `HolePunching`, which runs over the circuits made here.
    const handlers: Handlers<Exclude<CircuitRequest, HolePunch>> = {
      Reserve: (caller) =>
        Effect.gen(function*() {
          yield* mayRelay(caller)
          const now = yield* Clock.currentTimeMillis
          const decision = table.reserve(caller.nodeId, caller.observedHost ?? caller.address.host, now)
          if (decision._tag === "Refused") {
            return yield* refused(decision.reason, `${table.limits.maxReservations} reservations at most`)
          }
          return {
            expiresAt: decision.expiresAt,
            renewWithinMillis: table.limits.reservationTtlMs,
            circuitBytes: table.limits.circuitBytes,
            circuitLifetimeMillis: table.limits.circuitLifetimeMs
          }
        }),
      AwaitCircuit: (caller) =>
        Effect.gen(function*() {
          const start = yield* Clock.currentTimeMillis
          if (!table.holds(caller.nodeId, start)) {
            return yield* refused("NoReservation", "reserve first (the reservation lapsed or was never made)")
          }
          const ready = table.takeOffers(caller.nodeId, start)
          if (ready.length > 0) return { offers: ready.slice(0, MAX_OFFERS_PER_ANSWER) }
          const wake = yield* Deferred.make<void>()
          // One waiting poll per holder: a newer one replaces (and answers) the older.
          const previous = waiters.get(caller.nodeId)
          waiters.set(caller.nodeId, wake)
          if (previous !== undefined) yield* Deferred.succeed(previous, undefined)
          yield* Deferred.await(wake).pipe(
            Effect.timeout(Duration.millis(AWAIT_CIRCUIT_MAX_MILLIS)),
            Effect.ignore,
            // Interrupted: the holder's connection closed (it stopped, crashed or moved). Its reservation
            // goes at once, so callers are refused now instead of waiting out a circuit nobody will take.
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                if (waiters.get(caller.nodeId) !== wake) return
                waiters.delete(caller.nodeId)
                table.cancel(caller.nodeId)
              })
            )
          )
          if (waiters.get(caller.nodeId) === wake) waiters.delete(caller.nodeId)
          const offers = table.takeOffers(caller.nodeId, yield* Clock.currentTimeMillis)
          return { offers: offers.slice(0, MAX_OFFERS_PER_ANSWER) }
        }),
      OpenCircuit: (caller, request) =>
        Effect.gen(function*() {
          if ((yield* reachability) !== "Public") {
            return yield* refused("NotRelaying", "this node is not known to be publicly reachable")
          }
          const now = yield* Clock.currentTimeMillis
          const token = newToken(caller.nodeId, request.target, now)
          // Each end learns from this relay the host the other connected from: the one host a hole
          // punch between them may dial.
          // Only a host a socket showed (not one a relay reported for a relayed or punched caller).
          const callerHost = caller.address.port === 0 ? undefined : caller.observedHost
          const decision = table.open(caller.nodeId, request.target, token, now, callerHost)
          if (decision._tag === "Refused") {
            return yield* refused(decision.reason, `no circuit to ${request.target.slice(0, 12)}… here`)
          }
          const waiter = waiters.get(request.target)
          if (waiter !== undefined) yield* Deferred.succeed(waiter, undefined)
          return { token, validForMillis: decision.deadline - now, targetHost: decision.targetHost }
        })
    }
    yield* transport.serve(handlers)
    yield* transport.relayCircuits({
      // The gate is called synchronously by the transport: the node's clock read without an effect.
      arrive: (token) => table.arrive(token, clock.unsafeCurrentTimeMillis()),
      deadlineOf: (token) => table.deadlineOf(token),
      close: (token) => table.close(token),
      circuitBytes: table.limits.circuitBytes
    })

    // ------------------------------------------------------------------
    // Behind a NAT: holding reservations

    const relays = yield* SubscriptionRef.make<ReadonlyArray<RelayHint>>([])
    const holders = new Map<string, Fiber.RuntimeFiber<void>>()
    /** Relays that failed lately, by node id, until when they are not asked again. Bound: pruned each round. */
    const failedUntil = new Map<NodeId, number>()
    const lost = yield* Deferred.make<void>().pipe(Effect.flatMap((first) => Ref.make(first)))

    const dropRelay = (relay: RelayHint, why: string) =>
      Effect.gen(function*() {
        failedUntil.set(relay.relayId, (yield* Clock.currentTimeMillis) + FAILED_RELAY_BACKOFF_MS)
        holders.delete(relay.relayId)
        yield* SubscriptionRef.update(relays, (held) => held.filter((other) => !relayHintEquals(other, relay)))
        yield* Effect.logInfo(`stopped using the relay at ${relay.address.host}:${relay.address.port}: ${why}`)
        yield* Deferred.succeed(yield* Ref.get(lost), undefined)
      })

    /** Asks `relay` for circuits until it fails, taking each one offered. */
    const hold = (relay: RelayHint): Effect.Effect<void> => {
      const target = { address: relay.address, nodeId: relay.relayId }
      const poll = transport.send(target, new AwaitCircuit({}), {
        timeout: Duration.sum(Duration.millis(AWAIT_CIRCUIT_MAX_MILLIS), config.callTimeout)
      })
      return Effect.forever(Effect.flatMap(poll, ({ value }) =>
        Effect.forEach(
          value.offers,
          (offer) =>
            Effect.forkDaemon(transport.acceptCircuit(relay, offer.token, offer.caller, offer.callerHost).pipe(
              Effect.catchAll((error) => Effect.logDebug("could not take a relayed circuit", error.message))
            )),
          { discard: true }
        ))).pipe(
          Effect.catchAll((error) => dropRelay(relay, error.message))
        )
    }

    /** Reserves with relays until `RELAYS_WANTED` are held, or drops them all when this node is reachable after all. */
    const tendReservations = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const [id, until] of failedUntil) if (until <= now) failedUntil.delete(id)
      if ((yield* reachability) !== "Private") {
        if (holders.size > 0) {
          for (const fiber of holders.values()) yield* Fiber.interrupt(fiber)
          holders.clear()
          yield* SubscriptionRef.set(relays, [])
        }
        return
      }
      const held = yield* SubscriptionRef.get(relays)
      if (held.length >= RELAYS_WANTED) return
      const candidates = Chunk.toReadonlyArray(yield* Random.shuffle(yield* routing.contacts)).filter((contact) =>
        !holders.has(contact.nodeId) && !failedUntil.has(contact.nodeId)
      )
      let count = held.length
      for (const contact of candidates) {
        if (count >= RELAYS_WANTED) break
        const relay: RelayHint = { relayId: contact.nodeId, address: contact.address }
        // A peer that refuses (not public itself, full) or does not answer is left alone a while.
        const granted = yield* transport.send(contact, new Reserve({})).pipe(
          Effect.as(true),
          Effect.catchAll((error) => {
            const considered = (error._tag === "CircuitRefused" && error.reason !== "NotRelaying") ||
              (error._tag === "RequestRefused" && error.reason !== "Overloaded")
            const backoff = considered ? FAILED_RELAY_BACKOFF_MS : NOT_YET_RELAYING_BACKOFF_MS
            return Effect.as(Effect.sync(() => failedUntil.set(contact.nodeId, now + backoff)), false)
          })
        )
        if (!granted) continue
        count++
        holders.set(contact.nodeId, yield* Effect.forkScoped(hold(relay)))
        yield* SubscriptionRef.update(relays, (current) => [...current, relay])
        yield* Effect.logInfo(`holding a reservation at the relay ${contact.address.host}:${contact.address.port}`)
      }
    })

    // After joining: at once, then every 30 s (every second while peers have not yet said whether they
    // can dial this node, and every 3 s while it cannot be dialled and holds no relay, so a node behind
    // a NAT gets its relays as soon as it can), and at once after a relay is lost.
    yield* Effect.forkScoped(Effect.zipRight(
      dht.awaitJoined,
      Effect.forever(Effect.gen(function*() {
        yield* Effect.catchAllCause(tendReservations, (cause) => Effect.logError("keeping relay reservations failed", cause))
        const wake = yield* Deferred.make<void>()
        yield* Ref.set(lost, wake)
        const current = yield* reachability
        const held = (yield* SubscriptionRef.get(relays)).length
        const pause = current === "Unknown"
          ? UNKNOWN_REACHABILITY_RECHECK
          : current === "Private" && held < RELAYS_WANTED
          ? NO_RELAY_RECHECK
          : RESERVATION_CHECK_INTERVAL
        yield* Deferred.await(wake).pipe(Effect.timeout(pause), Effect.ignore)
      }))
    ))

    return {
      advertised: Effect.gen(function*() {
        return advertisedRoutes(yield* reachability, transport.localAddress, yield* SubscriptionRef.get(relays))
      }),
      relayChanges: relays.changes,
      status: Effect.gen(function*() {
        const counts = table.counts(yield* Clock.currentTimeMillis)
        return {
          relays: yield* SubscriptionRef.get(relays),
          reservationsServed: counts.reservations,
          circuitsServed: counts.circuits,
          circuitsRelayed: counts.splicedTotal
        }
      })
    }
  })
