/**
 * The probe that keeps the live-peer count honest, on the in-memory network
 * in virtual time: a peer that went offline stops counting as live within a
 * minute and a half and leaves the table about 20 s after it was first
 * missed, while a quiet peer that still answers keeps counting.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Logger, LogLevel, Random, TestClock } from "effect"
import { livePeerCount } from "../../src/core/PeerLiveness.js"
import { findContact } from "../../src/core/RoutingTable.js"
import { formatAddress } from "../../src/core/Contact.js"
import type { MemoryNetworkStats } from "../../src/platform/MemoryTransport.js"
import { keepLivenessFresh, probeQuietPeers } from "../../src/node/Liveness.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { Routing } from "../../src/node/Routing.js"
import { Transport } from "../../src/node/Transport.js"
import { at, makeTestNetwork, type TestNode } from "../support/memoryNetwork.js"

/** The services the probe needs, from a test node. */
const asNode = (node: TestNode) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Routing, node.routing),
    Effect.provideService(Transport, node.transport),
    Effect.provideService(NodeConfig, NodeConfig.make({ idPuzzleBits: 0 }))
  )

/** Requests `node` sent so far, as the network counted them. */
const sentBy = (node: TestNode) => (network: { readonly stats: () => MemoryNetworkStats }) =>
  network.stats().byNode.get(formatAddress(node.address))?.sent ?? 0

const liveOf = (node: TestNode) =>
  Effect.gen(function*() {
    return livePeerCount(yield* node.routing.snapshot, yield* Clock.currentTimeMillis)
  })

describe("liveness probes", () => {
  it.scoped("a stopped peer stops counting as live; a quiet one that answers keeps counting", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(3)
      const observer = at(nodes, 1)
      const gone = at(nodes, 2)
      yield* asNode(observer)(keepLivenessFresh)
      expect(yield* liveOf(observer)).toBe(2)

      yield* network.setOnline(gone.address, false)
      // Nobody is quiet yet: nothing is asked, and the table still counts both.
      yield* TestClock.adjust(Duration.seconds(30))
      expect(yield* liveOf(observer)).toBe(2)

      // A minute and a half on: both were asked at 60 s; the one that went offline did not answer,
      // nor the two rechecks after it, and left the table.
      yield* TestClock.adjust(Duration.seconds(60))
      expect(yield* liveOf(observer)).toBe(1)
      const table = yield* observer.routing.snapshot
      expect(findContact(table, gone.nodeId)).toBeUndefined()
      expect(findContact(table, at(nodes, 0).nodeId)?.failures).toBe(0)

      // Ten minutes of silence from the network itself: the peer that answers the probes is still live.
      yield* TestClock.adjust(Duration.minutes(10))
      expect(yield* liveOf(observer)).toBe(1)
    }).pipe(Effect.withRandom(Random.make(7)), Logger.withMinimumLogLevel(LogLevel.Warning)))

  it.scoped("a contact first missed by a lookup leaves the table within 20 s, after three pings in all, with no round in between", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(3)
      const observer = at(nodes, 1)
      const gone = at(nodes, 2)
      // After the nodes' first reachability checks (see below), so what the observer sends is the prober's.
      yield* TestClock.adjust(Duration.seconds(15))
      yield* asNode(observer)(keepLivenessFresh)
      yield* network.setOnline(gone.address, false)
      // A lookup's query to it timed out: one failure, as the node records it.
      yield* observer.routing.recordFailure(gone.nodeId, gone.address)
      const sentBefore = sentBy(observer)(network)
      // The rechecks at 10 s and 20 s (the first round is at 30 s) make the second and third failures.
      yield* TestClock.adjust(Duration.seconds(10))
      expect(findContact(yield* observer.routing.snapshot, gone.nodeId)?.failures).toBe(2)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(findContact(yield* observer.routing.snapshot, gone.nodeId)).toBeUndefined()
      // Two requests in 20 s, both pings to the silent peer; the one that answers was not asked.
      expect(sentBy(observer)(network) - sentBefore).toBe(2)
      expect(findContact(yield* observer.routing.snapshot, at(nodes, 0).nodeId)?.failures).toBe(0)
    }).pipe(Effect.withRandom(Random.make(7)), Logger.withMinimumLogLevel(LogLevel.Warning)))

  it.scoped("a round asks nobody while every contact was heard from within the last minute", () =>
    Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(3)
      // The nodes' first reachability checks (the first node's again 10 s on, when it has peers to
      // ask) are heard from too: after them nobody says anything for half an hour.
      yield* TestClock.adjust(Duration.seconds(15))
      expect(yield* asNode(at(nodes, 1))(probeQuietPeers())).toEqual({ asked: 0, failed: 0 })
      yield* TestClock.adjust(Duration.seconds(61))
      expect(yield* asNode(at(nodes, 1))(probeQuietPeers())).toEqual({ asked: 2, failed: 0 })
    }).pipe(Effect.withRandom(Random.make(7)), Logger.withMinimumLogLevel(LogLevel.Warning)))
})
