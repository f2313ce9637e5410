import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, LogLevel, Option, Ref, Scope, TestClock } from "effect"
import type { NodeId } from "../../src/core/Id.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { type KnownPeer, KnownPeers, type KnownPeersService } from "../../src/node/KnownPeers.js"
import type { NodeConfigShape } from "../../src/node/NodeConfig.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
import { at, makeTestNetwork, nodeAddress, signedRecord, startNode, type TestNode } from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const HOUR = 60 * 60 * 1000
const config: Partial<NodeConfigShape> = { k: 8, alpha: 3 }
const joining = (bootstrap: number): Partial<NodeConfigShape> => ({ ...config, bootstrap: [nodeAddress(bootstrap)] })

/** Deterministic randomness and quiet logs (warnings still show) for a test body. */
const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>) => seededDeterministic(self, 11, LogLevel.Warning)

/** Lets background joins finish: calls on the memory network answer at once, well within a second. */
const settle = TestClock.adjust(Duration.seconds(1))

const sortedIds = (ids: ReadonlyArray<NodeId>) => ids.slice().sort()
const idsOf = (peers: ReadonlyArray<KnownPeer>) => sortedIds(peers.map((peer) => peer.contact.nodeId))
const nodeIds = (nodes: ReadonlyArray<TestNode>) => sortedIds(nodes.map((node) => node.nodeId))

/** The table's contacts as `KnownPeers` should receive them. */
const tableOf = (node: TestNode) =>
  Effect.map(node.routing.snapshot, (table) =>
    table.buckets
      .flatMap((bucket) => bucket.entries.map((entry): KnownPeer => ({ contact: entry.contact, lastSeen: entry.lastSeen })))
      .sort((a, b) => (a.contact.nodeId < b.contact.nodeId ? -1 : 1)))

/** Known peers in memory that also record when each save happened. */
const recordingPeers = Effect.gen(function*() {
  const memory = KnownPeers.fromRef(yield* Ref.make<ReadonlyArray<KnownPeer>>([]))
  const saves: Array<{ readonly at: number; readonly peers: ReadonlyArray<KnownPeer> }> = []
  const service: KnownPeersService = {
    ...memory,
    save: (peers) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        saves.push({ at: now, peers: peers.slice().sort((a, b) => (a.contact.nodeId < b.contact.nodeId ? -1 : 1)) })
        return memory.save(peers)
      })
  }
  return { service, saves }
})

describe("KnownPeers.makeMemory", () => {
  it.effect("loads what was saved last, as fromRef does, most recently seen first, sharing the saved contacts", () =>
    Effect.gen(function*() {
      const contact = (n: number) => ({ nodeId: `${n}`.padStart(64, "0") as NodeId, address: { host: "127.0.0.1", port: 7000 + n } })
      const first: ReadonlyArray<KnownPeer> = [
        { contact: contact(1), lastSeen: 1_767_225_600_123 },
        { contact: contact(2), lastSeen: 1_767_225_600_456.5 },
        { contact: contact(3), lastSeen: 1_767_225_600_123 }
      ]
      const memory = yield* KnownPeers.makeMemory
      const reference = KnownPeers.fromRef(yield* Ref.make<ReadonlyArray<KnownPeer>>([]))
      expect(yield* memory.load).toEqual([])
      expect(memory.remembers).toBe(true)

      yield* memory.save(first)
      yield* reference.save(first)
      const loaded = yield* memory.load
      expect(loaded).toEqual(yield* reference.load)
      expect(loaded.map((peer) => peer.contact.nodeId)).toEqual([contact(2), contact(1), contact(3)].map((c) => c.nodeId))
      expect(loaded[0]?.lastSeen).toBe(1_767_225_600_456.5)
      // The contacts are the ones saved (shared with the routing table), not copies.
      expect(loaded[0]?.contact).toBe(at(first, 1).contact)

      // A save replaces everything; mutating the saved array afterwards changes nothing.
      const second = [{ contact: contact(4), lastSeen: 5 }]
      yield* memory.save(second)
      second.push({ contact: contact(5), lastSeen: 6 })
      expect(yield* memory.load).toEqual([{ contact: contact(4), lastSeen: 5 }])
      yield* memory.save([])
      expect(yield* memory.load).toEqual([])
    }))
})

describe("DhtNode with KnownPeers", () => {
  it.scoped("saves its routing table every 30 s and when it stops", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(3, config)
      const { saves, service } = yield* recordingPeers
      const node = yield* startNode(network, 3, joining(0), { knownPeers: service })
      yield* node.dht.awaitJoined
      const start = yield* Clock.currentTimeMillis

      yield* TestClock.adjust(Duration.seconds(29))
      expect(saves).toHaveLength(0)
      yield* TestClock.adjust(Duration.seconds(1))
      expect(saves.map((save) => save.at - start)).toEqual([30_000])
      expect(idsOf(at(saves, 0).peers)).toEqual(nodeIds(nodes))
      expect(at(saves, 0).peers).toEqual(yield* tableOf(node))

      yield* TestClock.adjust(Duration.seconds(40))
      expect(saves.map((save) => save.at - start)).toEqual([30_000, 60_000])
      yield* Scope.close(node.scope, Exit.void)
      expect(saves.map((save) => save.at - start)).toEqual([30_000, 60_000, 70_000])
      expect(idsOf(at(saves, 2).peers)).toEqual(nodeIds(nodes))
    })))

  it.scoped("a restarted node rejoins through the peers it knew when its bootstrap node is gone", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(6, config)
      const record = signedRecord(at(nodes, 3), "alice" as Username, { issuedAt: 0, expiresAt: HOUR })
      yield* at(nodes, 3).dht.publish(record)

      const known = yield* KnownPeers.makeMemory
      const first = yield* startNode(network, 6, joining(0), { knownPeers: known })
      yield* first.dht.awaitJoined
      yield* Scope.close(first.scope, Exit.void)
      expect(idsOf(yield* known.load)).toEqual(nodeIds(nodes))

      yield* Scope.close(at(nodes, 0).scope, Exit.void)
      const second = yield* startNode(network, 6, joining(0), { knownPeers: known })
      yield* settle
      const state = yield* second.dht.bootstrapState
      expect(state._tag).toBe("Joined")
      if (state._tag !== "Joined") return
      expect(state.via.length).toBeGreaterThan(0)
      for (const contact of state.via) expect(nodeIds(nodes.slice(1))).toContain(contact.nodeId)
      yield* second.dht.awaitJoined
      expect(Option.getOrUndefined(yield* second.dht.findRecord(userKey("alice" as Username)))).toEqual(record)
    })))

  it.scoped("a node cut off before its first maintenance round, whose bootstrap node is gone, rejoins through the peers it met", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(6, config)
      // Maintenance (where the table used to be remembered) every 10 minutes: the node is cut off long before.
      const node = yield* startNode(network, 6, { ...joining(0), maintenanceInterval: Duration.minutes(10) })
      yield* node.dht.awaitJoined
      yield* network.setOnline(node.address, false)
      // Offline for an hour, its calls fail until it has no contact left; meanwhile its bootstrap node leaves.
      for (let minute = 0; minute < 60; minute++) yield* TestClock.adjust(Duration.minutes(1))
      expect(yield* node.routing.contactCount).toBe(0)
      yield* Scope.close(at(nodes, 0).scope, Exit.void)
      // It comes back behind a NAT, so the peers that still list it cannot call it back into their view:
      // its contacts come from its own rejoin.
      yield* network.setBehindNat(node.address, true)
      yield* network.setOnline(node.address, true)
      for (let minute = 0; minute < 15; minute++) yield* TestClock.adjust(Duration.minutes(1))
      const contacts = (yield* node.routing.contacts).map((contact) => contact.nodeId)
      expect(contacts.length).toBeGreaterThan(0)
      for (const id of contacts) expect(nodeIds(nodes.slice(1))).toContain(id)
    })))

  it.scoped("a restarted first node of a network finds its old peers again and stays standalone", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const known = yield* KnownPeers.makeMemory
      const first = yield* startNode(network, 0, config, { knownPeers: known })
      const others: Array<TestNode> = []
      for (let index = 1; index <= 4; index++) {
        const node = yield* startNode(network, index, joining(0))
        yield* node.dht.awaitJoined
        others.push(node)
      }
      yield* Scope.close(first.scope, Exit.void)

      const second = yield* startNode(network, 0, config, { knownPeers: known })
      // It is a standalone node, joined once its old peers were asked, so its first publication finds them.
      expect((yield* second.dht.bootstrapState)._tag).toBe("Standalone")
      yield* second.dht.awaitJoined
      expect(yield* second.routing.contactCount).toBe(others.length)
      yield* settle
      expect(sortedIds((yield* second.routing.contacts).map((contact) => contact.nodeId))).toEqual(nodeIds(others))
      expect((yield* second.dht.bootstrapState)._tag).toBe("Standalone")
    })))

  it.scoped("until it reaches the network, a node keeps the peers it loaded in what it saves", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(4, config)
      const known = yield* KnownPeers.makeMemory
      const first = yield* startNode(network, 4, joining(0), { knownPeers: known })
      yield* first.dht.awaitJoined
      yield* Scope.close(first.scope, Exit.void)
      const before = yield* known.load
      expect(idsOf(before)).toEqual(nodeIds(nodes))

      // Everyone it knew is offline; a newcomer finds it meanwhile.
      for (const node of nodes) yield* network.setOnline(node.address, false)
      yield* settle
      const second = yield* startNode(network, 4, joining(0), { knownPeers: known })
      const newcomer = yield* startNode(network, 5, joining(4))
      yield* settle
      expect((yield* second.dht.bootstrapState)._tag).toBe("Joining")
      expect(sortedIds((yield* second.routing.contacts).map((contact) => contact.nodeId))).toEqual([newcomer.nodeId])

      yield* TestClock.adjust(Duration.seconds(30))
      expect(idsOf(yield* known.load)).toEqual(sortedIds([...nodeIds(nodes), newcomer.nodeId]))
      // The newcomer was seen in this run, so it comes first.
      expect((yield* known.load)[0]?.contact.nodeId).toBe(newcomer.nodeId)
    })))
})
