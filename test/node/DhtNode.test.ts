import { describe, expect, it, layer } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Exit, Fiber, Layer, Logger, LogLevel, Option, Random, Scope, TestClock } from "effect"
import type { Key, NodeId } from "../../src/core/Id.js"
import { formatAddress } from "../../src/core/Contact.js"
import { bucketIndex } from "../../src/core/Distance.js"
import { bucketsToRefreshAfterJoin } from "../../src/core/JoinRefresh.js"
import { REACHABILITY_PEERS } from "../../src/core/Reachability.js"
import { bucketAt, findContact, staleBuckets } from "../../src/core/RoutingTable.js"
import { neighbourhoodDepth } from "../../src/core/StoragePolicy.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { RecordNotStored } from "../../src/node/DhtNode.js"
import { DialBack } from "../../src/node/Protocol.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
import { type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import {
  at,
  makeTestNetwork,
  nodeAddress,
  nodeIdentity,
  signedRecord,
  startNode,
  type TestNetwork,
  type TestNode,
  trueClosest
} from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const K = 8
const NODES = 40
const HOUR = 60 * 60 * 1000
const config: Partial<NodeConfigShape> = { k: K, alpha: 3 }
/**
 * For tests that move the clock by hours: every maintenance wake-up costs a
 * few milliseconds of TestClock bookkeeping per node, so wake up less often.
 */
const slowMaintenance: Partial<NodeConfigShape> = { ...config, maintenanceInterval: Duration.minutes(10) }

/** Deterministic randomness and quiet logs (warnings still show) for a test body. */
const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 42) =>
  seededDeterministic(self, seed, LogLevel.Warning)

const idsOf = (contacts: ReadonlyArray<{ readonly nodeId: NodeId }>) => contacts.map((contact) => contact.nodeId)

const randomTargets = (count: number, seed: number): Array<Key> => {
  const bytes = seededRandomBytes(seed)
  return Array.from({ length: count }, () => Buffer.from(bytes(32)).toString("hex") as Key)
}

const name = (text: string) => text as Username

/** One network shared by the tests that only read it or publish names of their own. */
class SharedNetwork extends Context.Tag("test/SharedNetwork")<SharedNetwork, TestNetwork>() {}
const sharedNetworkLayer = Layer.scoped(SharedNetwork, deterministic(makeTestNetwork(NODES, config)))

describe("DhtNode", () => {
  layer(sharedNetworkLayer, { timeout: "60 seconds" })("on one network of 40 nodes", (it) => {
    it.effect("bootstrap fills every routing table", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        expect((yield* at(nodes, 0).dht.bootstrapState)._tag).toBe("Standalone")
        for (const node of nodes.slice(1)) {
          const status = yield* node.dht.status
          expect(status.bootstrap._tag).toBe("Joined")
          // Every node knows at least k peers out of 39, and node 0 knows everyone who joined through it.
          expect(status.contactCount).toBeGreaterThanOrEqual(K)
        }
        expect((yield* at(nodes, 0).dht.status).contactCount).toBeGreaterThanOrEqual(NODES / 2)
        // The first node joined nobody, but others joined it: its status no longer says it stands alone.
        const first = yield* at(nodes, 0).dht.status
        expect(first.bootstrap).toMatchObject({ _tag: "Joined", via: [{ nodeId: at(nodes, 1).nodeId }] })
        expect(first.bootstrapAddresses).toEqual([])
        expect((yield* at(nodes, 1).dht.status).bootstrapAddresses).toEqual([nodeAddress(0)])
      }))

    it.effect("every node learns it is reachable from its peers' dial-backs; the first node once it has peers", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        yield* TestClock.adjust(Duration.seconds(5))
        for (const node of nodes.slice(1)) expect((yield* node.dht.status).reachability).toBe("Public")
        // Node 0 started alone (nobody to ask); it asks again every minute while it does not know.
        yield* TestClock.adjust(Duration.minutes(1))
        expect((yield* at(nodes, 0).dht.status).reachability).toBe("Public")
      }))

    it.effect("findNode from any node returns the true k closest", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        const allIds = nodes.map((node) => node.nodeId)
        for (const target of randomTargets(3, 7)) {
          for (const node of nodes) {
            const result = yield* node.dht.findNode(target)
            const expected = trueClosest(target, allIds.filter((id) => id !== node.nodeId), K)
            expect(idsOf(result.closest)).toEqual(expected)
            expect(result.stats.messagesSent).toBeLessThanOrEqual(16 * K)
            expect(result.stats.hops).toBeGreaterThan(0)
          }
        }
      }))

    it.effect("a published record is found from every node", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        const owner = at(nodes, 17)
        const record = signedRecord(owner, name("alice"), { issuedAt: 0, expiresAt: HOUR })
        const published = yield* owner.dht.publish(record)
        expect(published.storedAt.length).toBe(K)
        expect(published.conflicts).toBe(0)

        const key = userKey(name("alice"))
        // The storers are exactly the k closest nodes to the key.
        expect(idsOf(published.storedAt).sort()).toEqual(trueClosest(key, nodes.map((n) => n.nodeId), K).sort())
        for (const node of nodes) {
          const found = yield* node.dht.findRecord(key)
          expect(Option.getOrUndefined(found)).toEqual(record)
        }
        expect(Option.isNone(yield* at(nodes, 3).dht.findRecord(userKey(name("nobody"))))).toBe(true)
      }))

    it.effect("reading a name stores nothing anywhere: no copy outside the k closest speaks for it", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        const owner = at(nodes, 11)
        const record = signedRecord(owner, name("erin"), { issuedAt: 0, expiresAt: HOUR })
        yield* owner.dht.publish(record)
        const key = userKey(name("erin"))
        const closest = new Set(trueClosest(key, nodes.map((n) => n.nodeId), K))
        const holders = Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const held = yield* Effect.forEach(nodes, (node) => Effect.map(node.store.get(key, now), Option.isSome))
          return nodes.filter((_, index) => held[index] === true).map((node) => node.nodeId)
        })
        expect(new Set(yield* holders)).toEqual(closest)
        for (const searcher of nodes.filter((node) => !closest.has(node.nodeId)).slice(0, 5)) {
          expect(Option.getOrUndefined(yield* searcher.dht.findRecord(key))).toEqual(record)
          yield* TestClock.adjust(Duration.seconds(1))
          expect(new Set(yield* holders)).toEqual(closest)
        }
      }))

    it.effect("a second key claiming a live username is refused as a KeyConflict, and kept as a rival claim readers see", () =>
      Effect.gen(function*() {
        const { nodes } = yield* SharedNetwork
        const first = signedRecord(at(nodes, 5), name("dave"), { issuedAt: 0, expiresAt: HOUR })
        yield* at(nodes, 5).dht.publish(first)
        const squatter = signedRecord(at(nodes, 30), name("dave"), { issuedAt: 0, expiresAt: HOUR })
        const error = yield* Effect.flip(at(nodes, 30).dht.publish(squatter))
        expect(error).toBeInstanceOf(RecordNotStored)
        expect(error.reason).toBe("KeyConflict")
        expect(error.message).toContain("taken")
        // The storers keep the refused claim as the name's rival: nobody resolves dave to the squatter,
        // and nobody silently to the owner either: every reader sees both claims.
        for (const node of nodes) {
          expect(Option.isNone(yield* node.dht.findRecord(userKey(name("dave"))))).toBe(true)
          const { answer } = yield* node.dht.resolveRecords(userKey(name("dave")))
          expect(answer._tag).toBe("Conflict")
          if (answer._tag === "Conflict") {
            const bySigningKey = (a: { signingKey: string }, b: { signingKey: string }) => a.signingKey.localeCompare(b.signingKey)
            expect(answer.claimants.map((claimant) => claimant.record).sort(bySigningKey)).toEqual([first, squatter].sort(bySigningKey))
          }
        }
      }))
  })

  it.scoped("a failing bootstrap retries with growing backoff and joins once the peer is online", () =>
    Effect.gen(function*() {
      const warnings: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(Array.isArray(message) ? message.join(" ") : message))
      })
      yield* Effect.gen(function*() {
        const { network, nodes } = yield* makeTestNetwork(1, config)
        yield* network.setOnline(at(nodes, 0).address, false)
        const joiner = yield* startNode(network, 1, { ...config, bootstrap: [nodeAddress(0)] })
        // The first attempt fails at once (the peer is offline); let the join fiber get that far.
        yield* TestClock.adjust(0)

        const delays: Array<number> = []
        for (let attempt = 1; attempt <= 4; attempt++) {
          const state = yield* joiner.dht.bootstrapState
          const now = yield* Clock.currentTimeMillis
          expect(state._tag).toBe("Joining")
          if (state._tag !== "Joining" || state.nextAttemptAt === undefined) return
          expect(state.attempts).toBe(attempt)
          expect(state.lastError).toContain("Unreachable")
          delays.push(state.nextAttemptAt - now)
          yield* TestClock.adjust(state.nextAttemptAt - now)
        }
        // 1 s doubling, with up to 20 % taken off at random.
        delays.forEach((delay, index) => {
          const nominal = 1000 * 2 ** index
          expect(delay).toBeGreaterThanOrEqual(0.8 * nominal)
          expect(delay).toBeLessThanOrEqual(nominal)
        })
        expect(warnings.length).toBeGreaterThanOrEqual(4)
        expect(warnings[0]).toContain(`could not join the network: no bootstrap node answered (${formatAddress(nodeAddress(0))})`)

        yield* network.setOnline(at(nodes, 0).address, true)
        yield* TestClock.adjust("5 minutes")
        const state = yield* joiner.dht.bootstrapState
        expect(state._tag).toBe("Joined")
        expect(yield* joiner.routing.contactCount).toBe(1)
        expect(findContact(yield* at(nodes, 0).routing.snapshot, joiner.nodeId)).toBeDefined()
      }).pipe(
        Effect.withRandom(Random.make(3)),
        Effect.provide(Logger.replace(Logger.defaultLogger, capture))
      )
    }))


  it.scoped("a single standalone node publishes to itself", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(1, config)
      const node = at(nodes, 0)
      const record = signedRecord(node, name("solo"), { issuedAt: 0, expiresAt: HOUR })
      const published = yield* node.dht.publish(record)
      expect(idsOf(published.storedAt)).toEqual([node.nodeId])
      expect(Option.getOrUndefined(yield* node.dht.findRecord(userKey(name("solo"))))).toEqual(record)
    })))


  it.scoped("lookups succeed around an offline node, which is eventually evicted", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(30, config)
      const dead = at(nodes, 11)
      yield* network.setOnline(dead.address, false)
      const alive = nodes.filter((node) => node !== dead)
      const aliveIds = alive.map((node) => node.nodeId)
      // Looking up the dead node's own id makes everyone who knows it ask it first.
      for (let round = 0; round < 3; round++) {
        for (const node of alive) {
          const result = yield* node.dht.findNode(dead.nodeId)
          expect(idsOf(result.closest)).toEqual(trueClosest(dead.nodeId, aliveIds.filter((id) => id !== node.nodeId), K))
        }
      }
      for (const node of alive) {
        expect(findContact(yield* node.routing.snapshot, dead.nodeId)).toBeUndefined()
      }
    })))

  it.scoped("a newcomer meets one contact in every range its self lookup skipped, with two requests a range", () =>
    deterministic(Effect.gen(function*() {
      const small = { ...config, k: 4 }
      const { network, nodes } = yield* makeTestNetwork(64, small)
      const newcomer = yield* startNode(network, 64, { ...small, bootstrap: [nodeAddress(0)] })
      const sentBy = () => network.stats().byNode.get(formatAddress(newcomer.address))?.sent ?? 0
      yield* newcomer.dht.awaitJoined
      const afterSelfLookup = yield* newcomer.routing.snapshot
      const { meetings } = bucketsToRefreshAfterJoin(afterSelfLookup, 4)
      const joined = sentBy()
      yield* TestClock.adjust(Duration.seconds(10)) // the join's background refresh ends
      const table = yield* newcomer.routing.snapshot
      const depth = neighbourhoodDepth(table, 4) as number
      expect(depth).toBeGreaterThan(2)
      expect(meetings.length).toBeGreaterThan(0)
      // Every range shallower than the neighbourhood that holds a node has a contact in the newcomer's table.
      for (let index = 0; index < depth; index++) {
        const inRange = nodes.filter((node) => bucketIndex(newcomer.nodeId, node.nodeId) === index)
        if (inRange.length > 0) expect(bucketAt(table, index).entries.length).toBeGreaterThan(0)
      }
      // Each range the self lookup skipped cost a FindNode to a neighbour and a Ping, not a lookup (which
      // sent 20 here); the rest is the reachability check's DialBacks.
      expect(sentBy() - joined).toBeLessThanOrEqual(2 * meetings.length + REACHABILITY_PEERS)
    })))

  it.scoped("stale buckets are refreshed after an hour of virtual time", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(12, slowMaintenance)
      const beforeRefresh = yield* at(nodes, 4).routing.snapshot
      const nonEmpty = beforeRefresh.buckets.filter((bucket) => bucket.entries.length > 0)
      const deepest = at(nonEmpty, nonEmpty.length - 1).index
      // The bucket just past the deepest one is empty: only a refresh ever touches it.
      expect(bucketAt(beforeRefresh, deepest + 1).lastTouched).toBe(0)

      yield* TestClock.adjust(Duration.sum(Duration.hours(1), Duration.minutes(10)))
      for (const node of nodes) {
        const table = yield* node.routing.snapshot
        expect(staleBuckets(table, yield* Clock.currentTimeMillis, HOUR)).toEqual([])
      }
      const afterRefresh = yield* at(nodes, 4).routing.snapshot
      expect(bucketAt(afterRefresh, deepest + 1).lastTouched).toBeGreaterThan(HOUR)
    })))

  it.scoped("a record expires at its expiresAt", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(20, slowMaintenance)
      const key = userKey(name("erin"))
      const record = signedRecord(at(nodes, 2), name("erin"), { issuedAt: 0, expiresAt: 10 * 60 * 1000 })
      yield* at(nodes, 2).dht.publish(record)
      yield* TestClock.adjust(10 * 60 * 1000 - 1)
      expect(Option.isSome(yield* at(nodes, 9).dht.findRecord(key))).toBe(true)
      yield* TestClock.adjust(1)
      for (const node of nodes) expect(Option.isNone(yield* node.dht.findRecord(key))).toBe(true)
      // The next maintenance round drops it from every store.
      yield* TestClock.adjust("10 minutes")
      for (const node of nodes) expect(yield* node.store.size).toBe(0)
    })))

  it.scoped("records reach new closest nodes when they join, and stay there across the replication interval", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(20, slowMaintenance)
      const key = userKey(name("frank"))
      const record = signedRecord(at(nodes, 1), name("frank"), { issuedAt: 0, expiresAt: 3 * HOUR })
      yield* at(nodes, 1).dht.publish(record)

      // Newcomers chosen to be closer to the key than most of the network.
      const candidates = Array.from({ length: 200 }, (_, i) => 20 + i)
      const closestCandidates = trueClosest(key, candidates.map((i) => nodeIdentity(i).nodeId), 4)
      const newcomerIndices = candidates.filter((i) => closestCandidates.includes(nodeIdentity(i).nodeId))
      const newcomers: Array<TestNode> = []
      for (const index of newcomerIndices) {
        const node = yield* startNode(network, index, { ...slowMaintenance, bootstrap: [nodeAddress(0)] })
        yield* node.dht.awaitJoined
        newcomers.push(node)
      }
      const everyone = [...nodes, ...newcomers]
      const closestNow = trueClosest(key, everyone.map((n) => n.nodeId), K)
      const newcomersAmongClosest = newcomers.filter((n) => closestNow.includes(n.nodeId))
      expect(newcomersAmongClosest.length).toBeGreaterThan(0)
      // Storage follows the network: the holders handed the record to the newcomers when they met.
      yield* TestClock.adjust(Duration.seconds(5))
      const now = yield* Clock.currentTimeMillis
      for (const node of newcomersAmongClosest) expect(Option.getOrUndefined(yield* node.store.get(key, now))).toEqual(record)

      yield* TestClock.adjust(Duration.sum(Duration.hours(1), Duration.minutes(10)))
      const later = yield* Clock.currentTimeMillis
      for (const node of everyone.filter((n) => closestNow.includes(n.nodeId))) {
        expect(Option.getOrUndefined(yield* node.store.get(key, later))).toEqual(record)
      }
    })))

  it.scoped("ATTACK: DialBack requests from one host hold two probes at once; the next is refused at once, and callers elsewhere are dialled back", () =>
    deterministic(Effect.gen(function*() {
      // Three nodes share one host behind a NAT that drops every connection attempt: each probe of them
      // waits out the call timeout. Before: each DialBack request started a probe, so callers from a few
      // hosts held all 64 of the transport's probes (and the routing table's dial-backs with them).
      const network = yield* MemoryNetwork.makeWith({ unreachable: "silent" })
      const victim = yield* startNode(network, 0, config)
      const host = "203.0.113.77"
      const attackers = yield* Effect.forEach([1, 2, 3], (index) =>
        startNode(network, index, config, { address: { host, port: 7000 + index } }))
      for (const attacker of attackers) yield* network.setBehindNat(attacker.address, true)
      const asks = yield* Effect.forEach(attackers, (attacker) =>
        Effect.fork(Effect.either(attacker.transport.send({ address: victim.address, nodeId: victim.nodeId }, new DialBack({})))))
      yield* Effect.repeatN(Effect.yieldNow(), 50)
      const third = asks[2]
      if (third === undefined) throw new Error("no third ask")
      expect(yield* Fiber.join(third)).toMatchObject({ _tag: "Left", left: { _tag: "RequestRefused", reason: "Overloaded" } })
      expect(asks.slice(0, 2).map((ask) => ask.unsafePoll())).toEqual([null, null])
      const honest = yield* startNode(network, 4, config)
      expect((yield* honest.transport.send({ address: victim.address, nodeId: victim.nodeId }, new DialBack({}))).value).toEqual({ reachable: true })
      // Once the first two probes are over, the host's slots are free again: the third is probed now.
      yield* TestClock.adjust(Duration.seconds(10))
      for (const ask of asks.slice(0, 2)) yield* Fiber.await(ask)
      const again = yield* Effect.fork(Effect.either(at(attackers, 2).transport.send({ address: victim.address, nodeId: victim.nodeId }, new DialBack({}))))
      yield* Effect.repeatN(Effect.yieldNow(), 50)
      expect(again.unsafePoll()).toBeNull()
    })))

  it.scoped("closing a node's scope takes it off the network", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(3, config)
      yield* Scope.close(at(nodes, 2).scope, Exit.void)
      expect(network.endpoint(at(nodes, 2).address)).toBeUndefined()
      const result = yield* at(nodes, 1).dht.findNode(at(nodes, 2).nodeId)
      expect(idsOf(result.closest)).toEqual([at(nodes, 0).nodeId])
    })))
})
