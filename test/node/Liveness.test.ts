/**
 * The probe that keeps the live-peer count honest, on the in-memory network
 * in virtual time: a peer that went offline stops counting as live within a
 * minute and a half and leaves the table about 20 s after it was first
 * missed, while a quiet peer that still answers keeps counting, and neither
 * a busy peer's refusals nor this node's own outage evict anybody.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, LogLevel, type Request, TestClock } from "effect"
import { livePeerCount, MAX_PROBES_WHILE_FAILING, peersToProbe, PROBES_IN_FLIGHT, recheckControl } from "../../src/core/PeerLiveness.js"
import { findContact } from "../../src/core/RoutingTable.js"
import { formatAddress } from "../../src/core/Contact.js"
import type { MemoryNetworkStats } from "../../src/platform/MemoryTransport.js"
import { keepLivenessFresh, probeQuietPeers } from "../../src/node/Liveness.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { Routing } from "../../src/node/Routing.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { type AnyRequest, type PeerTarget, Transport } from "../../src/node/Transport.js"
import { at, makeTestNetwork, type TestNode } from "../support/memoryNetwork.js"
import { deterministic } from "../support/deterministic.js"

/** The services the probe needs, from a test node, with `transport` in place of its own. */
const asNodeVia = (node: TestNode, transport: Transport["Type"]) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.provideService(Routing, node.routing),
    Effect.provideService(Transport, transport),
    Effect.provideService(NodeConfig, NodeConfig.make({ idPuzzleBits: 0 }))
  )

/** The services the probe needs, from a test node. */
const asNode = (node: TestNode) => asNodeVia(node, node.transport)

/**
 * `node`'s transport with every call held a second before it reaches the
 * network (a slow or silent host), so a step's waves are a second apart;
 * counts the most calls held or in flight at once.
 */
const slowTransport = (node: TestNode) => {
  let inFlight = 0
  let mostInFlight = 0
  const transport: Transport["Type"] = {
    ...node.transport,
    send: <R extends AnyRequest>(peer: PeerTarget, request: R, options?: { readonly timeout?: Duration.DurationInput }) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          inFlight++
          mostInFlight = Math.max(mostInFlight, inFlight)
        }),
        () => Effect.zipRight(Effect.sleep(Duration.seconds(1)), node.transport.send(peer, request, options)),
        () => Effect.sync(() => inFlight--)
      )
  }
  return { transport, mostInFlight: () => mostInFlight }
}

/** Requests that reached `node` so far, as the network counted them. */
const receivedBy = (node: TestNode) => (network: { readonly stats: () => MemoryNetworkStats }) =>
  network.stats().byNode.get(formatAddress(node.address))?.received ?? 0

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
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("a contact first missed by a lookup leaves the table 20 s later; the rechecks ask it and one live witness, not every quiet contact", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(4)
      const observer = at(nodes, 1)
      const gone = at(nodes, 2)
      const quiet = [at(nodes, 0), at(nodes, 3)]
      // Long enough that the live contacts are quiet: a round would ask every one of them.
      yield* TestClock.adjust(Duration.seconds(75))
      expect(peersToProbe(yield* observer.routing.snapshot, yield* Clock.currentTimeMillis).length).toBe(3)
      yield* asNode(observer)(keepLivenessFresh)
      yield* network.setOnline(gone.address, false)
      // A lookup's query to it timed out: one failure, as the node records it.
      yield* observer.routing.recordFailure(gone.nodeId, gone.address)
      const quietAsked = () => quiet.reduce((sum, node) => sum + receivedBy(node)(network), 0)
      const before = quietAsked()
      // The rechecks at 10 s and 20 s (the round comes at 30 s) make the second and third failures.
      yield* TestClock.adjust(Duration.seconds(10))
      expect(findContact(yield* observer.routing.snapshot, gone.nodeId)?.failures).toBe(2)
      // Of the two quiet live contacts, one was asked: the witness that the node's own link is up.
      expect(quietAsked() - before).toBe(1)
      yield* TestClock.adjust(Duration.seconds(10))
      expect(findContact(yield* observer.routing.snapshot, gone.nodeId)).toBeUndefined()
      for (const node of quiet) expect(findContact(yield* observer.routing.snapshot, node.nodeId)?.failures).toBe(0)
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("a peer that refuses the pings (alive, but busy) is not counted as failing, and stays", () =>
    Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(3)
      const observer = at(nodes, 1)
      const busy = at(nodes, 2)
      const refusing: Transport["Type"] = {
        ...observer.transport,
        send: <R extends AnyRequest>(peer: PeerTarget, request: R, options?: { readonly timeout?: Duration.DurationInput }) =>
          peer.nodeId === busy.nodeId
            // What a busy peer answers: every request here may be refused so (`RequestRefused` is in each one's failure).
            ? Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "too many requests" }) as Request.Request.Error<R>)
            : observer.transport.send(peer, request, options)
      }
      yield* TestClock.adjust(Duration.seconds(15))
      yield* asNodeVia(observer, refusing)(keepLivenessFresh)
      yield* observer.routing.recordFailure(busy.nodeId, busy.address)
      // Two rechecks and two rounds: each refused, none counted.
      yield* TestClock.adjust(Duration.seconds(60))
      expect(findContact(yield* observer.routing.snapshot, busy.nodeId)?.failures).toBe(1)
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("while the node's own link is down, the rechecks evict nobody (their witness does not answer either)", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(4)
      const observer = at(nodes, 1)
      yield* TestClock.adjust(Duration.seconds(15))
      yield* asNode(observer)(keepLivenessFresh)
      // Its lookups failed once against every peer as the link went down.
      yield* network.setOnline(observer.address, false)
      const peers = [at(nodes, 0), at(nodes, 2), at(nodes, 3)]
      yield* observer.routing.recordFailure(at(nodes, 2).nodeId, at(nodes, 2).address)
      yield* TestClock.adjust(Duration.seconds(20))
      const table = yield* observer.routing.snapshot
      expect(peers.map((node) => findContact(table, node.nodeId)?.failures)).toEqual([0, 1, 0])
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("a large step pings in waves: at most PROBES_IN_FLIGHT at once, so silent hosts cannot take the outbound budget", () =>
    Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(45)
      const observer = at(nodes, 1)
      const slow = slowTransport(observer)
      yield* TestClock.adjust(Duration.seconds(75))
      const quietCount = peersToProbe(yield* observer.routing.snapshot, yield* Clock.currentTimeMillis, { max: Infinity }).length
      expect(quietCount).toBeGreaterThan(PROBES_IN_FLIGHT)
      const round = yield* Effect.fork(
        asNodeVia(observer, slow.transport)(probeQuietPeers({ max: MAX_PROBES_WHILE_FAILING, failingOnly: false }))
      )
      yield* TestClock.adjust(Duration.seconds(10))
      expect(yield* Fiber.join(round)).toEqual({ asked: quietCount, failed: 0 })
      expect(slow.mostInFlight()).toBe(PROBES_IN_FLIGHT)
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("a recheck larger than a wave asks its witness in the first one: a link back up mid-step does not make the outage's failures count", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(45)
      const observer = at(nodes, 1)
      const slow = slowTransport(observer)
      yield* TestClock.adjust(Duration.seconds(30))
      const entries = (yield* observer.routing.snapshot).buckets.flatMap((bucket) => bucket.entries)
      const newest = entries.reduce((a, b) => (b.lastSeen > a.lastSeen ? b : a))
      // Its lookups failed once against every other contact as the link went down.
      const failing = entries.filter((entry) => entry !== newest).map((entry) => entry.contact)
      expect(failing.length).toBeGreaterThan(PROBES_IN_FLIGHT)
      for (const contact of failing) yield* observer.routing.recordFailure(contact.nodeId, contact.address)
      const now = yield* Clock.currentTimeMillis
      expect(recheckControl(yield* observer.routing.snapshot, now)).toEqual({ _tag: "Ask", contact: newest.contact })

      yield* network.setOnline(observer.address, false)
      const recheck = yield* Effect.fork(
        asNodeVia(observer, slow.transport)(probeQuietPeers({ max: MAX_PROBES_WHILE_FAILING, failingOnly: true }))
      )
      // The first wave is refused (this node is offline); the link is back before the second goes out.
      yield* TestClock.adjust(Duration.millis(1500))
      yield* network.setOnline(observer.address, true)
      yield* TestClock.adjust(Duration.seconds(5))
      expect((yield* Fiber.join(recheck)).failed).toBe(0)
      const table = yield* observer.routing.snapshot
      expect(failing.filter((contact) => (findContact(table, contact.nodeId)?.failures ?? 0) > 1)).toEqual([])
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))

  it.scoped("a round asks nobody while every contact was heard from within the last minute", () =>
    Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(3)
      // The nodes' first reachability checks (the first node's again 10 s on, when it has peers to
      // ask) are heard from too: after them nobody says anything for half an hour.
      yield* TestClock.adjust(Duration.seconds(15))
      expect(yield* asNode(at(nodes, 1))(probeQuietPeers())).toEqual({ asked: 0, failed: 0 })
      yield* TestClock.adjust(Duration.seconds(61))
      expect(yield* asNode(at(nodes, 1))(probeQuietPeers())).toEqual({ asked: 2, failed: 0 })
    }).pipe((self) => deterministic(self, 7, LogLevel.Warning)))
})
