import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, type Duration, Effect, ExecutionStrategy, Exit, Fiber, Layer, Random, Ref, Scope, TestClock } from "effect"
import type { Address } from "../../src/core/Contact.js"
import { constant, type Distribution, logNormal, sample } from "../../src/core/Distributions.js"
import type { Key } from "../../src/core/Id.js"
import { RecordRejected } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import { Identity } from "../../src/node/Identity.js"
import { type AuthenticatedPeer, FindNode, FindValue, Ping, RequestRefused, Store } from "../../src/node/Protocol.js"
import { type DhtHandlers, Transport, TransportError } from "../../src/node/Transport.js"
import {
  MemoryNetwork,
  type MemoryNetworkOptions,
  type MemoryNetworkService,
  MemoryTransport,
  SIMULATOR_LATENCY
} from "../../src/platform/MemoryTransport.js"
import { exitValue, makeVirtualTime } from "../../src/sim/VirtualTime.js"
import { formatAddress } from "../../src/core/Contact.js"
import { at, nodeAddress, nodeIdentity, signedRecord } from "../support/memoryNetwork.js"

const TARGET = "ab".repeat(32) as Key

/** A transport for test node `index` on `network`, in its own scope. */
const transportFor = (network: MemoryNetworkService, index: number, address: Address = nodeAddress(index)) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const layer = MemoryTransport.layer(address).pipe(
      Layer.provide(Layer.mergeAll(Layer.succeed(Identity, nodeIdentity(index)), Layer.succeed(MemoryNetwork, network)))
    )
    const context = yield* Layer.buildWithScope(layer, scope)
    return { transport: Context.get(context, Transport), scope }
  })

/** Handlers that record their callers and answer FindNode with the caller itself. */
const recordingHandlers = (callers: Ref.Ref<ReadonlyArray<AuthenticatedPeer>>): Omit<DhtHandlers, "DialBack"> => ({
  Ping: (caller) =>
    Effect.as(Ref.update(callers, (all) => [...all, caller]), { observedHost: caller.observedHost ?? "" }),
  FindNode: (caller) =>
    Effect.as(Ref.update(callers, (all) => [...all, caller]), { contacts: [{ nodeId: caller.nodeId, address: caller.address }] }),
  FindValue: () => Effect.succeed({ _tag: "Closer" as const, contacts: [] }),
  Store: (_caller, request) => Effect.fail(new RecordRejected({ username: request.record.username, reason: "KeyConflict" }))
})

const transportError = <A, E>(exit: Exit.Exit<A, E>): TransportError["reason"] | undefined =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error instanceof TransportError
    ? exit.cause.error.reason
    : undefined

describe("MemoryTransport", () => {
  it.scoped("delivers a request with the caller authenticated and returns the callee's identity", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      const callers = yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])
      yield* a.transport.serve(recordingHandlers(callers))

      const pong = yield* b.transport.send({ address: nodeAddress(0) }, new Ping({}))
      expect(pong.value.observedHost).toBe(nodeAddress(1).host)
      expect(pong.peer).toEqual({ nodeId: nodeIdentity(0).nodeId, address: nodeAddress(0) })

      const found = yield* b.transport.send(
        { address: nodeAddress(0), nodeId: nodeIdentity(0).nodeId },
        new FindNode({ target: TARGET })
      )
      expect(found.value.contacts).toEqual([{ nodeId: nodeIdentity(1).nodeId, address: nodeAddress(1) }])
      // Handlers see where the call came from (`observedHost`), as a TCP server sees a connection's host.
      const caller = { nodeId: nodeIdentity(1).nodeId, address: nodeAddress(1), observedHost: nodeAddress(1).host }
      expect(yield* Ref.get(callers)).toEqual([caller, caller])
    }))

  it.scoped("carries typed failures across as instances of their class", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve(recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])))
      const record = signedRecord({ identity: nodeIdentity(1), address: nodeAddress(1) }, "alice" as Username, {
        issuedAt: 0,
        expiresAt: 60_000
      })
      const error = yield* Effect.flip(b.transport.send({ address: nodeAddress(0) }, new Store({ record })))
      expect(error).toBeInstanceOf(RecordRejected)
      expect(error._tag === "RecordRejected" && error.reason).toBe("KeyConflict")
    }))

  it.scoped("refuses as Overloaded until the callee serves, and stops when its serve scope closes", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      const before = yield* Effect.flip(b.transport.send({ address: nodeAddress(0) }, new Ping({})))
      expect(before).toBeInstanceOf(RequestRefused)
      expect(before._tag === "RequestRefused" && before.reason).toBe("Overloaded")

      const serving = yield* Scope.make()
      yield* Scope.extend(a.transport.serve(recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([]))), serving)
      yield* b.transport.send({ address: nodeAddress(0) }, new Ping({}))
      yield* Scope.close(serving, Exit.void)
      const after = yield* Effect.flip(b.transport.send({ address: nodeAddress(0) }, new Ping({})))
      expect(after._tag).toBe("RequestRefused")
    }))

  it.scoped("a listening probe is answered by the callee's transport, as over TCP: no handler, no request budget", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      const target = { address: nodeAddress(0), nodeId: nodeIdentity(0).nodeId }
      // Not serving yet: a call is refused, a probe is answered (the listener is there).
      expect(yield* b.transport.proveListening(target)).toEqual(target)
      const callers = yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])
      yield* a.transport.serve(recordingHandlers(callers))
      expect(yield* b.transport.proveListening(target)).toEqual(target)
      // The callee did not take the prober for a caller (its handler never ran).
      expect(yield* Ref.get(callers)).toEqual([])
      // Another node at that address, or nobody: as a call would fail.
      const wrong = yield* Effect.exit(b.transport.proveListening({ ...target, nodeId: nodeIdentity(2).nodeId }))
      expect(transportError(wrong)).toBe("IdentityMismatch")
      yield* network.setOnline(nodeAddress(0), false)
      expect(transportError(yield* Effect.exit(b.transport.proveListening(target)))).toBe("Unreachable")
    }))

  it.scoped("reports unknown, offline, partitioned and closed peers as Unreachable", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve(recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])))
      const ping = b.transport.send({ address: nodeAddress(0) }, new Ping({}))

      expect(transportError(yield* Effect.exit(b.transport.send({ address: nodeAddress(9) }, new Ping({}))))).toBe("Unreachable")

      yield* network.setOnline(nodeAddress(0), false)
      expect(transportError(yield* Effect.exit(ping))).toBe("Unreachable")
      yield* network.setOnline(nodeAddress(0), true)
      expect(Exit.isSuccess(yield* Effect.exit(ping))).toBe(true)

      // An offline caller cannot reach anyone either.
      yield* network.setOnline(nodeAddress(1), false)
      expect(transportError(yield* Effect.exit(ping))).toBe("Unreachable")
      yield* network.setOnline(nodeAddress(1), true)

      yield* network.partition([[nodeAddress(0)], [nodeAddress(1)]])
      expect(transportError(yield* Effect.exit(ping))).toBe("Unreachable")
      yield* network.heal
      expect(Exit.isSuccess(yield* Effect.exit(ping))).toBe(true)

      yield* Scope.close(a.scope, Exit.void)
      expect(network.endpoint(nodeAddress(0))).toBeUndefined()
      expect(transportError(yield* Effect.exit(ping))).toBe("Unreachable")
    }))

  it.scoped("checks the expected node id", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve(recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])))
      const exit = yield* Effect.exit(
        b.transport.send({ address: nodeAddress(0), nodeId: nodeIdentity(2).nodeId }, new Ping({}))
      )
      expect(transportError(exit)).toBe("IdentityMismatch")
    }))

  it.scoped("times out a handler that never answers, under the test clock", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      const interrupted = yield* Ref.make(false)
      yield* a.transport.serve({
        ...recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])),
        Ping: () => Effect.never.pipe(Effect.onInterrupt(() => Ref.set(interrupted, true)))
      })
      const call = yield* Effect.fork(b.transport.send({ address: nodeAddress(0) }, new Ping({}), { timeout: "3 seconds" }))
      yield* TestClock.adjust("2999 millis")
      expect(call.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      expect(transportError(yield* Fiber.await(call))).toBe("Timeout")
      // As over TCP, giving up on the call interrupts the remote handler.
      expect(yield* Ref.get(interrupted)).toBe(true)
    }))

  it.scoped("runs the schemas: a malformed request is a protocol violation, a dying handler a closed call", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve({
        ...recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])),
        FindValue: () => Effect.dieMessage("handler bug")
      })
      const malformed = new FindNode({ target: "not-a-key" as Key }, { disableValidation: true })
      expect(transportError(yield* Effect.exit(b.transport.send({ address: nodeAddress(0) }, malformed))))
        .toBe("ProtocolViolation")
      const died = yield* Effect.exit(b.transport.send({ address: nodeAddress(0) }, new FindValue({ key: TARGET })))
      expect(transportError(died)).toBe("Closed")
    }))

  it.scoped("refuses a second registration of one address", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      yield* transportFor(network, 0)
      const second = yield* Effect.exit(transportFor(network, 1, nodeAddress(0)))
      expect(Exit.isFailure(second)).toBe(true)
    }))
})

// ---------------------------------------------------------------------------
// The link model, counters and reference round trips, run in virtual time.

/** Runs `program` to completion in virtual time (starting at 0) and returns its value. */
const inVirtualTime = <A, E>(program: Effect.Effect<A, E, Scope.Scope>): A =>
  exitValue(makeVirtualTime().run(Effect.scoped(program)))

/** A network with `options` whose draws come from a stream seeded with `seed`. */
const seededNetwork = (options: MemoryNetworkOptions, seed = 42) =>
  MemoryNetwork.makeWith(options).pipe(Effect.withRandom(Random.make(seed)))

/** `count` transports on `network`, each serving `recordingHandlers`, plus the times their Pings arrived. */
const servingNodes = (network: MemoryNetworkService, count: number) =>
  Effect.gen(function*() {
    const arrivals: Array<number> = []
    const nodes = []
    for (let index = 0; index < count; index++) {
      const node = yield* transportFor(network, index)
      yield* node.transport.serve({
        ...recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])),
        Ping: (caller) =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            arrivals.push(now)
            return { observedHost: caller.observedHost ?? "" }
          })
      })
      nodes.push(node)
    }
    return { nodes, arrivals }
  })

/** Pings node `to` from `from` and measures the call in virtual ms. */
const timedPing = (from: Transport["Type"], to: number, timeout: Duration.DurationInput = "2 seconds") =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const exit = yield* Effect.exit(from.send({ address: nodeAddress(to) }, new Ping({}), { timeout }))
    return { exit, millis: (yield* Clock.currentTimeMillis) - start }
  })

/** The one-way latencies a network seeded with `seed` draws for its first `count` messages (no loss). */
const expectedLatencies = (distribution: Distribution, seed: number, count: number): Array<number> => {
  const random = Random.make(seed)
  const uniform = () => Effect.runSync(random.next)
  return Array.from({ length: count }, () => Math.round(sample(distribution, uniform)))
}

describe("MemoryNetwork link model", () => {
  it("a constant latency delays the request and the answer by exactly one draw each", () => {
    const result = inVirtualTime(Effect.gen(function*() {
      const network = yield* seededNetwork({ latency: constant(40) })
      const { arrivals, nodes } = yield* servingNodes(network, 2)
      yield* Effect.sleep("1 second")
      const ping = yield* timedPing(at(nodes, 1).transport, 0)
      return { ping, arrivals }
    }))
    expect(Exit.isSuccess(result.ping.exit)).toBe(true)
    expect(result.ping.millis).toBe(80)
    expect(result.arrivals).toEqual([1040])
  })

  it("a log-normal round trip is the sum of two seeded draws, in order", () => {
    const seed = 7
    const rounds = inVirtualTime(Effect.gen(function*() {
      const network = yield* seededNetwork({ latency: SIMULATOR_LATENCY }, seed)
      const { nodes } = yield* servingNodes(network, 2)
      const times: Array<number> = []
      for (let i = 0; i < 10; i++) times.push((yield* timedPing(at(nodes, 1).transport, 0)).millis)
      return times
    }))
    const draws = expectedLatencies(SIMULATOR_LATENCY, seed, 20)
    expect(rounds).toEqual(Array.from({ length: 10 }, (_, i) => at(draws, 2 * i) + at(draws, 2 * i + 1)))
    // The draws really vary around the 50 ms median, so the check above is not vacuous.
    expect(new Set(draws).size).toBeGreaterThan(5)
    expect(Math.min(...draws)).toBeLessThan(50)
    expect(Math.max(...draws)).toBeGreaterThan(50)
  })

  it("the same seed replays the same latencies with concurrent callers; another seed does not", () => {
    const run = (seed: number) =>
      inVirtualTime(Effect.gen(function*() {
        const network = yield* seededNetwork({ latency: logNormal(50, 0.8), loss: 0.1 }, seed)
        const { nodes } = yield* servingNodes(network, 5)
        const log: Array<string> = []
        yield* Effect.forEach(nodes, (node, from) =>
          Effect.forEach([0, 1, 2, 3, 4].filter((to) => to !== from), (to) =>
            Effect.map(timedPing(node.transport, to), ({ exit, millis }) => {
              log.push(`${from}->${to}:${Exit.isSuccess(exit) ? "ok" : "fail"}@${millis}`)
            }), { concurrency: "unbounded" }), { concurrency: "unbounded" })
        return { log, stats: network.stats().total }
      }))
    const first = run(1)
    expect(run(1)).toEqual(first)
    expect(run(2).log).not.toEqual(first.log)
    expect(first.log).toHaveLength(20)
  })

  it("a lost request or answer ends the call at its deadline, and is counted", () => {
    const { lostAll, sampled, stats } = inVirtualTime(Effect.gen(function*() {
      const allLost = yield* seededNetwork({ latency: constant(10), loss: 1 })
      const quiet = yield* servingNodes(allLost, 2)
      const lostAll = yield* timedPing(at(quiet.nodes, 1).transport, 0, "3 seconds")
      expect(quiet.arrivals).toEqual([])

      const network = yield* seededNetwork({ latency: constant(10), loss: 0.3 }, 3)
      const { nodes } = yield* servingNodes(network, 2)
      const sampled = []
      for (let i = 0; i < 200; i++) sampled.push(yield* timedPing(at(nodes, 1).transport, 0, "1 second"))
      return { lostAll, sampled, stats: network.stats() }
    }))
    expect(transportError(lostAll.exit)).toBe("Timeout")
    expect(lostAll.millis).toBe(3000)

    const ok = sampled.filter((call) => Exit.isSuccess(call.exit))
    const failed = sampled.filter((call) => !Exit.isSuccess(call.exit))
    expect(ok.every((call) => call.millis === 20)).toBe(true)
    expect(failed.every((call) => call.millis === 1000 && transportError(call.exit) === "Timeout")).toBe(true)
    // Both legs can be lost: about 0.7² of the calls get through.
    expect(ok.length / sampled.length).toBeGreaterThan(0.4)
    expect(ok.length / sampled.length).toBeLessThan(0.6)
    const caller = stats.byNode.get(formatAddress(nodeAddress(1)))
    const callee = stats.byNode.get(formatAddress(nodeAddress(0)))
    expect(caller).toMatchObject({ sent: 200, answered: ok.length, lost: failed.length, timedOut: failed.length })
    // Some answers were lost after the handler ran.
    expect(callee?.received).toBeGreaterThan(ok.length)
    expect(callee?.received).toBeLessThan(200)
  })

  it("a peer that goes offline or is partitioned away while a request is in flight fails the call", () => {
    const outcomes = (unreachable: "refuse" | "silent") =>
      inVirtualTime(Effect.gen(function*() {
        const network = yield* seededNetwork({ latency: constant(100), unreachable })
        const { nodes } = yield* servingNodes(network, 3)
        const caller = at(nodes, 1).transport
        const midFlight = (change: Effect.Effect<void>, undo: Effect.Effect<void>) =>
          Effect.gen(function*() {
            const call = yield* Effect.fork(timedPing(caller, 0, "1 second"))
            yield* Effect.sleep("50 millis")
            yield* change
            const { exit, millis } = yield* Fiber.join(call)
            yield* undo
            return `${Exit.isSuccess(exit) ? "ok" : transportError(exit)}@${millis}`
          })
        const offline = network.setOnline(nodeAddress(0), false)
        const online = network.setOnline(nodeAddress(0), true)
        return {
          calleeOffline: yield* midFlight(offline, online),
          partitioned: yield* midFlight(network.partition([[nodeAddress(0)]]), network.heal),
          healedInTime: yield* midFlight(Effect.zipRight(network.partition([[nodeAddress(0)]]), network.heal), Effect.void),
          // At 150 ms the request has arrived and the answer is on its way.
          callerOfflineForAnswer: yield* midFlight(
            Effect.zipRight(Effect.sleep("100 millis"), network.setOnline(nodeAddress(1), false)),
            network.setOnline(nodeAddress(1), true)
          ),
          calleeOfflineBeforeSending: yield* Effect.zipRight(offline, timedPing(caller, 0, "1 second")).pipe(
            Effect.map(({ exit, millis }) => `${Exit.isSuccess(exit) ? "ok" : transportError(exit)}@${millis}`)
          ),
          stats: network.stats().byNode.get(formatAddress(nodeAddress(1))),
          // Requests that met an offline or partitioned callee on arrival never reached its handler.
          calleeReceived: network.stats().byNode.get(formatAddress(nodeAddress(0)))?.received
        }
      }))
    expect(outcomes("refuse")).toEqual({
      calleeOffline: "Unreachable@100",
      partitioned: "Unreachable@100",
      healedInTime: "ok@200",
      callerOfflineForAnswer: "Unreachable@200",
      calleeOfflineBeforeSending: "Unreachable@0",
      stats: expect.objectContaining({ sent: 5, answered: 1, unreachable: 4, timedOut: 0 }),
      calleeReceived: 2
    })
    expect(outcomes("silent")).toEqual({
      calleeOffline: "Timeout@1000",
      partitioned: "Timeout@1000",
      healedInTime: "ok@200",
      callerOfflineForAnswer: "Timeout@1000",
      calleeOfflineBeforeSending: "Timeout@1000",
      stats: expect.objectContaining({ sent: 5, answered: 1, unreachable: 4, timedOut: 4 }),
      calleeReceived: 2
    })
  })

  it("a callee that goes offline while its handler runs sends no answer", () => {
    const result = inVirtualTime(Effect.gen(function*() {
      const network = yield* seededNetwork({ latency: constant(10) })
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve({
        ...recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])),
        Ping: (caller) =>
          Effect.as(Effect.zipRight(Effect.sleep("100 millis"), network.setOnline(nodeAddress(0), false)), {
            observedHost: caller.observedHost ?? ""
          })
      })
      return yield* timedPing(b.transport, 0)
    }))
    expect(transportError(result.exit)).toBe("Unreachable")
    expect(result.millis).toBe(110)
  })

  it.scoped("without a link model nothing is drawn and calls answer at once", () =>
    Effect.withRandom(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const { nodes } = yield* servingNodes(network, 2)
      const ping = yield* timedPing(at(nodes, 1).transport, 0)
      expect(ping.millis).toBe(0)
      expect(Exit.isSuccess(ping.exit)).toBe(true)
      // The network shares this fiber's seeded stream; had it drawn, the next value would differ.
      expect(yield* Random.next).toBe(Effect.runSync(Random.make(5).next))
      expect(network.config).toEqual({ latency: undefined, loss: 0, unreachable: "refuse", roundTrip: "schema" })
    }), Random.make(5)))

  it.scoped("refuses a loss outside [0, 1]", () =>
    Effect.gen(function*() {
      expect(Exit.isFailure(yield* Effect.exit(MemoryNetwork.makeWith({ loss: 1.5 })))).toBe(true)
    }))
})

describe("MemoryNetwork counters", () => {
  it.scoped("count requests per tag and traffic per node, and reset", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve(recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])))
      yield* b.transport.send({ address: nodeAddress(0) }, new Ping({}))
      yield* b.transport.send({ address: nodeAddress(0) }, new Ping({}))
      yield* b.transport.send({ address: nodeAddress(0) }, new FindNode({ target: TARGET }))
      // b serves nothing: refused, but received.
      yield* Effect.exit(a.transport.send({ address: nodeAddress(1) }, new Ping({})))
      yield* Effect.exit(a.transport.send({ address: nodeAddress(9) }, new Ping({})))

      const stats = network.stats()
      expect(stats.sentByTag).toMatchObject({ Ping: 4, FindNode: 1, FindValue: 0, Store: 0 })
      expect(stats.byNode.get(formatAddress(nodeAddress(1))))
        .toEqual({ sent: 3, received: 1, answered: 3, lost: 0, unreachable: 0, timedOut: 0 })
      expect(stats.byNode.get(formatAddress(nodeAddress(0))))
        .toEqual({ sent: 2, received: 3, answered: 1, lost: 0, unreachable: 1, timedOut: 0 })
      expect(stats.byNode.size).toBe(2)
      expect(stats.total).toEqual({ sent: 5, received: 4, answered: 4, lost: 0, unreachable: 1, timedOut: 0 })

      yield* a.transport.serve({ Ping: () => Effect.never })
      const slow = yield* Effect.fork(b.transport.send({ address: nodeAddress(0) }, new Ping({}), { timeout: "1 second" }))
      yield* TestClock.adjust("1 second")
      yield* Fiber.await(slow)
      expect(network.stats().byNode.get(formatAddress(nodeAddress(1)))?.timedOut).toBe(1)
      // The snapshot taken before is not affected.
      expect(stats.total.timedOut).toBe(0)

      yield* network.resetStats
      const reset = network.stats()
      expect(reset.total).toEqual({ sent: 0, received: 0, answered: 0, lost: 0, unreachable: 0, timedOut: 0 })
      expect(Object.values(reset.sentByTag).every((count) => count === 0)).toBe(true)
      expect(reset.byNode.size).toBe(2)
    }))
})

describe("MemoryNetwork reference round trips", () => {
  /** The same calls, including typed failures and a dying handler, on a network in `roundTrip` mode. */
  const answers = (roundTrip: "schema" | "reference") =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.makeWith({ roundTrip })
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      yield* a.transport.serve({
        ...recordingHandlers(yield* Ref.make<ReadonlyArray<AuthenticatedPeer>>([])),
        FindValue: () => Effect.dieMessage("handler bug")
      })
      const record = signedRecord({ identity: nodeIdentity(1), address: nodeAddress(1) }, "alice" as Username, {
        issuedAt: 0,
        expiresAt: 60_000
      })
      const to = { address: nodeAddress(0) }
      const ping = yield* b.transport.send(to, new Ping({}))
      const found = yield* b.transport.send(to, new FindNode({ target: TARGET }))
      const rejected = yield* Effect.flip(b.transport.send(to, new Store({ record })))
      const died = transportError(yield* Effect.exit(b.transport.send(to, new FindValue({ key: TARGET }))))
      const refused = yield* Effect.flip(a.transport.send({ address: nodeAddress(1) }, new Ping({})))
      const mismatch = transportError(
        yield* Effect.exit(b.transport.send({ ...to, nodeId: nodeIdentity(2).nodeId }, new Ping({})))
      )
      return { ping, found, rejected, died, refused, mismatch }
    })

  it.scoped("deliver the same answers and errors as schema round trips", () =>
    Effect.gen(function*() {
      const bySchema = yield* answers("schema")
      const byReference = yield* answers("reference")
      expect(byReference).toEqual(bySchema)
      expect(byReference.rejected).toBeInstanceOf(RecordRejected)
      expect(byReference.refused).toBeInstanceOf(RequestRefused)
      expect(byReference.found.value.contacts).toEqual([{ nodeId: nodeIdentity(1).nodeId, address: nodeAddress(1) }])
      expect(byReference.died).toBe("Closed")
      expect(byReference.mismatch).toBe("IdentityMismatch")
    }))

  it.scoped("hand the caller's request to the handler without copying or validating it", () =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork.makeWith({ roundTrip: "reference" })
      const a = yield* transportFor(network, 0)
      const b = yield* transportFor(network, 1)
      const seen: Array<FindNode> = []
      yield* a.transport.serve({ FindNode: (_caller, request) => Effect.sync(() => (seen.push(request), { contacts: [] })) })
      const malformed = new FindNode({ target: "not-a-key" as Key }, { disableValidation: true })
      yield* b.transport.send({ address: nodeAddress(0) }, malformed)
      expect(seen[0]).toBe(malformed)
    }))
})
