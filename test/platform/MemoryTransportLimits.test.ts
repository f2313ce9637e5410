/**
 * Hostile peers over the in-memory transport (issue 12): a node on the
 * memory network refuses what a TCP node refuses. Its request budgets (core
 * `RequestLimits`: per caller's node id, per host, for the whole node) are
 * checked before the handler runs; a request over them fails with
 * `RequestRefused` Overloaded, worded as TCP words it, while other callers
 * are still served; refusals are counted in the node's `health` and in the
 * network's stats; the budgets refill with the `Clock` (here `TestClock`),
 * and a `Store` costs what it costs on TCP.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, ExecutionStrategy, Layer, Ref, Scope, TestClock } from "effect"
import { type Address, formatAddress } from "../../src/core/Contact.js"
import { defaultRequestLimits, type RequestLimitsConfig } from "../../src/core/RequestLimits.js"
import type { Username } from "../../src/core/Username.js"
import { Identity } from "../../src/node/Identity.js"
import { type DhtRequest, Ping, RequestRefused, Store } from "../../src/node/Protocol.js"
import { Transport } from "../../src/node/Transport.js"
import { MemoryNetwork, type MemoryNetworkService, MemoryTransport } from "../../src/platform/MemoryTransport.js"
import { nodeAddress, nodeIdentity, signedRecord } from "../support/memoryNetwork.js"

/** Test node `index`'s transport on `network` at `address`, with `requestLimits`, in a scope of its own. */
const transportFor = (
  network: MemoryNetworkService,
  index: number,
  options: { readonly address?: Address; readonly requestLimits?: Partial<RequestLimitsConfig> } = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const layer = MemoryTransport.layer(options.address ?? nodeAddress(index), { requestLimits: options.requestLimits }).pipe(
      Layer.provide(Layer.mergeAll(Layer.succeed(Identity, nodeIdentity(index)), Layer.succeed(MemoryNetwork, network)))
    )
    return Context.get(yield* Layer.buildWithScope(layer, scope), Transport)
  })

/** A server at node 0 whose handlers record which node ids reached them. */
const recordingServer = (network: MemoryNetworkService, requestLimits?: Partial<RequestLimitsConfig>) =>
  Effect.gen(function*() {
    const transport = yield* transportFor(network, 0, requestLimits === undefined ? {} : { requestLimits })
    const reached = yield* Ref.make<ReadonlyArray<string>>([])
    const record = (nodeId: string) => Ref.update(reached, (all) => [...all, nodeId])
    yield* transport.serve({
      Ping: (caller) => Effect.as(record(caller.nodeId), { observedHost: caller.observedHost ?? "" }),
      Store: (caller) => Effect.as(record(caller.nodeId), { outcome: "Stored" as const })
    })
    const reachedBy = (index: number) =>
      Effect.map(Ref.get(reached), (all) => all.filter((nodeId) => nodeId === nodeIdentity(index).nodeId).length)
    return { transport, reachedBy }
  })

/** "ok", or the refusal's reason and detail; any other failure fails the test. */
const outcomeOf = (transport: Transport["Type"], request: DhtRequest) =>
  Effect.map(Effect.either(transport.send({ address: nodeAddress(0) }, request)), (outcome): string => {
    if (Either.isRight(outcome)) return "ok"
    const error = outcome.left
    if (!(error instanceof RequestRefused)) throw new Error(`unexpected failure: ${error._tag}`)
    return `${error.reason}: ${error.detail}`
  })

const times = <A>(count: number, make: () => A): Array<A> => Array.from({ length: count }, make)

describe("MemoryTransport request limits", () => {
  it.scoped("ATTACK: a flooding peer is refused Overloaded once its bucket is empty; an honest peer is served meanwhile", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const server = yield* recordingServer(network, { perPeerBurst: 5, perPeerRate: 1 })
      const flooder = yield* transportFor(network, 1)
      const honest = yield* transportFor(network, 2)

      // Twenty requests at once from the flooder, and two from an honest peer in the middle of them.
      const [flood, served] = yield* Effect.all([
        Effect.all(times(20, () => outcomeOf(flooder, new Ping({}))), { concurrency: "unbounded" }),
        Effect.all(times(2, () => outcomeOf(honest, new Ping({}))), { concurrency: "unbounded" })
      ], { concurrency: "unbounded" })

      expect(flood.filter((outcome) => outcome === "ok")).toHaveLength(5)
      const refusals = flood.filter((outcome) => outcome !== "ok")
      expect(refusals).toHaveLength(15)
      // The same typed refusal, in the same words, as a TCP node's (test/platform/TcpTransport.test.ts).
      for (const refusal of refusals) expect(refusal).toBe("Overloaded: rate limit (PeerRate); retry in 1000 ms")
      expect(served).toEqual(["ok", "ok"])
      // The refused requests never reached the handler.
      expect(yield* server.reachedBy(1)).toBe(5)
      expect(yield* server.reachedBy(2)).toBe(2)

      // Counted as TCP counts them: the node's status, and the network's stats for the simulator.
      expect((yield* server.transport.health).rateLimited).toEqual({ PeerRate: 15 })
      expect(network.stats().rateLimitedByNode.get(formatAddress(nodeAddress(0)))).toEqual({ PeerRate: 15, IpRate: 0, GlobalRate: 0 })
      expect((yield* flooder.health).rateLimited).toEqual({})

      // The bucket refills with the Clock: one request a second.
      yield* TestClock.adjust("1 second")
      expect(yield* outcomeOf(flooder, new Ping({}))).toBe("ok")
      expect(yield* outcomeOf(flooder, new Ping({}))).toMatch(/^Overloaded: rate limit \(PeerRate\)/)
      expect(yield* server.reachedBy(1)).toBe(6)
    }))

  it.scoped("ATTACK: with the default limits a Store costs 20 requests, so one peer's 21st Store in a burst is refused", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const server = yield* recordingServer(network)
      const flooder = yield* transportFor(network, 1)
      const honest = yield* transportFor(network, 2)
      const record = signedRecord({ identity: nodeIdentity(1), address: nodeAddress(1) }, "flood" as Username, {
        issuedAt: 0,
        expiresAt: 86_400_000
      })
      const burst = defaultRequestLimits.perPeerBurst / 20
      const stores = yield* Effect.forEach(times(burst + 1, () => new Store({ record })), (store) => outcomeOf(flooder, store))
      expect(stores.slice(0, burst)).toEqual(times(burst, () => "ok"))
      expect(stores[burst]).toMatch(/^Overloaded: rate limit \(PeerRate\); retry in \d+ ms$/)
      // Its bucket is empty for a Ping too; another peer's Store goes through.
      expect(yield* outcomeOf(flooder, new Ping({}))).toMatch(/^Overloaded: rate limit \(PeerRate\)/)
      expect(yield* outcomeOf(honest, new Store({ record }))).toBe("ok")
      expect(yield* server.reachedBy(1)).toBe(burst)
    }))

  it.scoped("ATTACK: many node ids on one host share that host's budget; other hosts are served", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const server = yield* recordingServer(network, { perPeerBurst: 4, perIpBurst: 6, perIpRate: 0.001 })
      const host = nodeAddress(1).host
      // Three ids on one host (ports 7001 to 7003), each within its own budget of 4.
      const sybils = yield* Effect.forEach([1, 2, 3], (index) => transportFor(network, index, { address: { host, port: 7000 + index } }))
      const outcomes = yield* Effect.forEach(sybils, (sybil) => Effect.forEach(times(3, () => new Ping({})), (ping) => outcomeOf(sybil, ping)))
      expect(outcomes.flat().filter((outcome) => outcome === "ok")).toHaveLength(6)
      expect(outcomes[2]).toEqual(times(3, () => expect.stringMatching(/^Overloaded: rate limit \(IpRate\)/)))
      const elsewhere = yield* transportFor(network, 4)
      expect(yield* outcomeOf(elsewhere, new Ping({}))).toBe("ok")
      expect((yield* server.transport.health).rateLimited).toEqual({ IpRate: 3 })
    }))

  it.scoped("ATTACK: peers that each stay within their budget meet the node's global budget (and its small reserve)", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      // A global burst of 4 leaves a reserve of 1 for a peer that asks little.
      const server = yield* recordingServer(network, { globalBurst: 4, globalRate: 0.001 })
      const peers = yield* Effect.forEach([1, 2, 3], (index) => transportFor(network, index))
      const outcomes = yield* Effect.forEach(peers, (peer) => Effect.forEach(times(2, () => new Ping({})), (ping) => outcomeOf(peer, ping)))
      expect(outcomes.flat().filter((outcome) => outcome === "ok")).toHaveLength(5)
      expect(outcomes[2]?.[1]).toMatch(/^Overloaded: rate limit \(GlobalRate\)/)
      expect((yield* server.transport.health).rateLimited).toEqual({ GlobalRate: 1 })
    }))

  it.scoped("limits can be raised, as on TCP: the same flood is then served in full", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const server = yield* recordingServer(network, { perPeerBurst: 1000 })
      const flooder = yield* transportFor(network, 1)
      const flood = yield* Effect.all(times(500, () => outcomeOf(flooder, new Ping({}))), { concurrency: "unbounded" })
      expect(flood.every((outcome) => outcome === "ok")).toBe(true)
      expect(yield* server.reachedBy(1)).toBe(500)
      expect((yield* server.transport.health).rateLimited).toEqual({})
    }))
})
