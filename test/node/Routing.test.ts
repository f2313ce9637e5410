import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Random } from "effect"
import { type Contact, formatAddress } from "../../src/core/Contact.js"
import { bucketIndex } from "../../src/core/Distance.js"
import { findContact } from "../../src/core/RoutingTable.js"
import { Identity } from "../../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { drawRandomBytes, Routing, type RoutingService } from "../../src/node/Routing.js"
import { type DhtHandlers, Transport, TransportError } from "../../src/node/Transport.js"
import { MemoryNetwork, type MemoryNetworkService, MemoryTransport } from "../../src/platform/MemoryTransport.js"
import { nodeAddress, nodeIdentity } from "../support/memoryNetwork.js"

const contactOf = (index: number): Contact => ({ nodeId: nodeIdentity(index).nodeId, address: nodeAddress(index) })

/** Two test nodes that fall into the same bucket of node 0's table. */
const sameBucketPair = (): readonly [number, number] => {
  const self = nodeIdentity(0).nodeId
  const byBucket = new Map<number, number>()
  for (let index = 1; ; index++) {
    const bucket = bucketIndex(self, nodeIdentity(index).nodeId)
    const earlier = byBucket.get(bucket)
    if (earlier !== undefined) return [earlier, index]
    byBucket.set(bucket, index)
  }
}

const pingOnly: Omit<DhtHandlers, "DialBack"> = {
  Ping: (caller) => Effect.succeed({ observedHost: caller.observedHost ?? "" }),
  FindNode: () => Effect.succeed({ contacts: [] }),
  FindValue: () => Effect.succeed({ _tag: "Closer" as const, contacts: [] }),
  Store: () => Effect.succeed({ outcome: "Stored" as const })
}

/** A peer that answers pings at test node `index`'s address. */
const peer = (network: MemoryNetworkService, index: number) =>
  Effect.gen(function*() {
    const layer = MemoryTransport.layer(nodeAddress(index)).pipe(
      Layer.provide(Layer.mergeAll(Layer.succeed(Identity, nodeIdentity(index)), Layer.succeed(MemoryNetwork, network)))
    )
    const transport = Context.get(yield* Layer.build(layer), Transport)
    yield* transport.serve(pingOnly)
  })

/** Node 0's routing service on `network`. */
const routingOf = (network: MemoryNetworkService, config: Partial<NodeConfigShape>) =>
  Effect.gen(function*() {
    const layer = Routing.layer.pipe(
      Layer.provide(MemoryTransport.layer(nodeAddress(0))),
      Layer.provide(Layer.mergeAll(
        Layer.succeed(Identity, nodeIdentity(0)),
        Layer.succeed(MemoryNetwork, network),
        NodeConfig.layer({ idPuzzleBits: 0, ...config })
      ))
    )
    return Context.get(yield* Layer.build(layer), Routing)
  })

/** Lets forked ping fibers run to completion (the memory transport answers without time passing). */
const settle = Effect.repeatN(Effect.yieldNow(), 50)

const knows = (routing: RoutingService, index: number) =>
  Effect.map(routing.snapshot, (table) => findContact(table, nodeIdentity(index).nodeId) !== undefined)

describe("Routing", () => {
  it.scoped("keeps a full bucket's head when it answers the ping", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const [head, newcomer] = sameBucketPair()
      yield* peer(network, head)
      const routing = yield* routingOf(network, { k: 1, replacementCacheSize: 1, headFreshness: Duration.zero })
      yield* routing.observe(contactOf(head))
      yield* routing.observe(contactOf(newcomer))
      yield* settle
      expect(yield* knows(routing, head)).toBe(true)
      expect(yield* knows(routing, newcomer)).toBe(false)
      expect(yield* routing.contactCount).toBe(1)
    }))

  it.scoped("replaces a full bucket's head that does not answer the ping", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const [head, newcomer] = sameBucketPair()
      const routing = yield* routingOf(network, { k: 1, replacementCacheSize: 1, headFreshness: Duration.zero })
      yield* routing.observe(contactOf(head)) // nobody listens at the head's address
      yield* routing.observe(contactOf(newcomer))
      yield* settle
      expect(yield* knows(routing, head)).toBe(false)
      expect(yield* knows(routing, newcomer)).toBe(true)
    }))

  it.scoped("counts failures only for the address it knows, and evicts after repeated failures", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const routing = yield* routingOf(network, { maxConsecutiveFailures: 2 })
      yield* routing.observe(contactOf(1))
      yield* routing.observe(contactOf(2))
      // A second-hand contact with a wrong address must not hurt the real entry.
      for (let i = 0; i < 3; i++) yield* routing.recordFailure(contactOf(1).nodeId, nodeAddress(9))
      expect(yield* knows(routing, 1)).toBe(true)
      yield* routing.recordFailure(contactOf(1).nodeId, nodeAddress(1))
      yield* routing.recordFailure(contactOf(1).nodeId)
      expect(yield* knows(routing, 1)).toBe(false)
      expect(yield* routing.closest(contactOf(2).nodeId, 5, contactOf(2).nodeId)).toEqual([])
      expect(yield* routing.closest(contactOf(2).nodeId, 5)).toEqual([contactOf(2)])
    }))

  it.scoped("ATTACK: callers on one host naming silent ports hold two dial-backs, one per node id, and an honest caller is still checked", () =>
    Effect.gen(function*() {
      // Silent addresses hold each dial-back for its timeout. One node id names a new port in each of 40
      // calls, and 40 more ids call from the same host. Before: each (id, port) started a dial-back, the 32
      // slots were all held, and an honest caller calling then was never checked (so never in the table).
      const network = yield* MemoryNetwork.makeWith({ unreachable: "silent" })
      const routing = yield* routingOf(network, {})
      const host = "198.51.100.66"
      for (let port = 1; port <= 40; port++) yield* routing.observeCaller({ nodeId: nodeIdentity(900).nodeId, address: { host, port } })
      for (let index = 901; index <= 940; index++) {
        yield* routing.observeCaller({ nodeId: nodeIdentity(index).nodeId, address: { host, port: 9 } })
      }
      yield* settle
      const honest = 5
      yield* peer(network, honest)
      yield* routing.observeCaller(contactOf(honest))
      yield* settle
      expect(yield* knows(routing, honest)).toBe(true)
    }))

  it.scoped("ATTACK: a dial-back this node could not start (its probes all held) is made at the caller's next call, not 10 minutes later", () =>
    Effect.gen(function*() {
      // While other work holds every probe, the dial-back of an honest caller fails Overloaded before
      // anything is sent. Before: it counted as made, and the caller stayed out of the table for the
      // dial-back window (10 minutes) whatever it did.
      const network = yield* MemoryNetwork.make
      let probesHeld = true
      const honest = 6
      yield* peer(network, honest)
      const routing = yield* Effect.gen(function*() {
        const transportLayer = MemoryTransport.layer(nodeAddress(0)).pipe(
          Layer.provide(Layer.mergeAll(Layer.succeed(Identity, nodeIdentity(0)), Layer.succeed(MemoryNetwork, network)))
        )
        const transport = Context.get(yield* Layer.build(transportLayer), Transport)
        const busy: Transport["Type"] = {
          ...transport,
          proveListening: (target, options) =>
            probesHeld
              ? Effect.fail(new TransportError({ peer: formatAddress(target.address), reason: "Overloaded", detail: "all probes under way" }))
              : transport.proveListening(target, options)
        }
        const layer = Routing.layer.pipe(
          Layer.provide(Layer.mergeAll(
            Layer.succeed(Transport, busy),
            Layer.succeed(Identity, nodeIdentity(0)),
            NodeConfig.layer({ idPuzzleBits: 0 })
          ))
        )
        return Context.get(yield* Layer.build(layer), Routing)
      })
      yield* routing.observeCaller(contactOf(honest))
      yield* settle
      expect(yield* knows(routing, honest)).toBe(false)
      probesHeld = false
      yield* routing.observeCaller(contactOf(honest))
      yield* settle
      expect(yield* knows(routing, honest)).toBe(true)
    }))

  it.effect("draws randomness from the Random service, so a seed replays it", () =>
    Effect.gen(function*() {
      const draw = Effect.map(drawRandomBytes(8), (bytes) => Array.from(bytes(8)))
      const first = yield* Effect.withRandom(draw, Random.make("seed"))
      const again = yield* Effect.withRandom(draw, Random.make("seed"))
      expect(first).toEqual(again)
      const bytes = yield* drawRandomBytes(4)
      bytes(4)
      expect(() => bytes(1)).toThrow(RangeError)
    }))
})
