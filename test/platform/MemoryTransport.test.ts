import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, ExecutionStrategy, Exit, Fiber, Layer, Ref, Scope, TestClock } from "effect"
import type { Address } from "../../src/core/Contact.js"
import type { Key } from "../../src/core/Id.js"
import { RecordRejected } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import { Identity } from "../../src/node/Identity.js"
import { type AuthenticatedPeer, FindNode, FindValue, Ping, RequestRefused, Store } from "../../src/node/Protocol.js"
import { type DhtHandlers, Transport, TransportError } from "../../src/node/Transport.js"
import { MemoryNetwork, type MemoryNetworkService, MemoryTransport } from "../../src/platform/MemoryTransport.js"
import { nodeAddress, nodeIdentity, signedRecord } from "../support/memoryNetwork.js"

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
const recordingHandlers = (callers: Ref.Ref<ReadonlyArray<AuthenticatedPeer>>): DhtHandlers => ({
  Ping: (caller, _request, observedHost) =>
    Effect.as(Ref.update(callers, (all) => [...all, caller]), { observedHost }),
  FindNode: (caller) =>
    Effect.as(Ref.update(callers, (all) => [...all, caller]), { contacts: [caller] }),
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
      expect(yield* Ref.get(callers)).toEqual([
        { nodeId: nodeIdentity(1).nodeId, address: nodeAddress(1) },
        { nodeId: nodeIdentity(1).nodeId, address: nodeAddress(1) }
      ])
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
