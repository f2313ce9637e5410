/**
 * An in-process network for tests and the simulator. `MemoryNetwork` is a
 * registry of endpoints (address, node id, installed handlers, online flag,
 * partition group) with controls to take nodes offline and split the network;
 * `MemoryTransport.layer(address)` registers one node on it and implements the
 * `Transport` seam. A call encodes the request with its schema, decodes it on
 * the callee's side, runs the callee's handler with the caller as its
 * authenticated peer, and carries the outcome back as an encoded `Exit`, so
 * the same schemas are exercised as on TCP. Authentication is by
 * construction: the caller is whoever registered its address with its own
 * identity. An endpoint is a handful of fields, so 10,000 of them fit in one
 * process; there is no latency or loss model yet (calls answer at once).
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer, Queue, type Request, Schema, type Scope } from "effect"
import { type Address, formatAddress } from "../core/Contact.js"
import type { NodeId } from "../core/Id.js"
import { Identity } from "../node/Identity.js"
import { type AuthenticatedPeer, type NodeRequest, requestClasses } from "../node/Protocol.js"
import {
  type CallResult,
  makeHandlerRegistry,
  type PeerTarget,
  refusedNotServed,
  Transport,
  TransportError
} from "../node/Transport.js"

/** One node attached to a `MemoryNetwork`. Mutable: the network's controls flip its flags in place. */
export interface MemoryEndpoint {
  /** The address as the node advertises it, and its formatted form (the registry key). */
  readonly peer: AuthenticatedPeer
  readonly key: string
  /** Handlers installed by `serve` (until the first, inbound calls are refused as Overloaded). */
  readonly handlers: ReturnType<typeof makeHandlerRegistry>
  /** False while the node is cut off: it can neither be reached nor reach anyone. */
  online: boolean
  /** Endpoints only reach endpoints of the same group; all start in group 0. */
  group: number
}

/** Controls and registry of an in-memory network. */
export interface MemoryNetworkService {
  /** The endpoint registered at `address`, if any. */
  readonly endpoint: (address: Address) => MemoryEndpoint | undefined
  /** Every registered endpoint, in registration order. Bound: one per node in the process. */
  readonly endpoints: () => ReadonlyArray<MemoryEndpoint>
  /**
   * Registers `nodeId` at `address` for the lifetime of the scope. Dies when the
   * address is taken: two nodes on one address is a bug in the test setup.
   */
  readonly register: (address: Address, nodeId: NodeId) => Effect.Effect<MemoryEndpoint, never, Scope.Scope>
  /** Takes the node at `address` off the network (false) or back on (true). Unknown addresses are ignored. */
  readonly setOnline: (address: Address, online: boolean) => Effect.Effect<void>
  /**
   * Splits the network: the nodes of `sides[i]` form group i + 1 and can only
   * reach each other; everyone not listed stays in group 0.
   */
  readonly partition: (sides: ReadonlyArray<ReadonlyArray<Address>>) => Effect.Effect<void>
  /** Undoes every partition. */
  readonly heal: Effect.Effect<void>
  /**
   * Runs `call`, failing with `onTimeout()` if it has not finished `timeout`
   * from now. Like `Effect.timeoutFail`, but every call shares the network's
   * one timer fiber, which sleeps only until the earliest pending deadline:
   * under `TestClock` a sleep that is abandoned is kept until its time comes,
   * so one sleep per call would make every `TestClock.adjust` crawl.
   */
  readonly withDeadline: <A, E, E2>(
    call: Effect.Effect<A, E>,
    timeout: Duration.Duration,
    onTimeout: () => E2
  ) => Effect.Effect<A, E | E2>
}

/** A call waiting for its answer, and the signal that its time is up. */
interface PendingCall {
  readonly deadline: number
  readonly expired: Deferred.Deferred<void>
}

/** The in-memory network that `MemoryTransport` endpoints attach to. */
export class MemoryNetwork extends Context.Tag("peerchat/MemoryNetwork")<MemoryNetwork, MemoryNetworkService>() {
  /** A fresh, empty network; its timer fiber lives in the scope and reads the `Clock` of the caller. */
  static readonly make: Effect.Effect<MemoryNetworkService, never, Scope.Scope> = Effect.gen(function*() {
    const registry = new Map<string, MemoryEndpoint>()
    // Bound: the calls in flight on the whole network.
    const pending = new Set<PendingCall>()
    /** Deadline the timer sleeps until; undefined while it waits for the first call. */
    let armedAt: number | undefined
    const rearm = yield* Queue.sliding<void>(1)

    const timer = Effect.gen(function*() {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        let earliest = Number.POSITIVE_INFINITY
        for (const call of pending) {
          if (call.deadline <= now) {
            pending.delete(call)
            Deferred.unsafeDone(call.expired, Effect.void)
          } else if (call.deadline < earliest) {
            earliest = call.deadline
          }
        }
        if (earliest === Number.POSITIVE_INFINITY) {
          armedAt = undefined
          yield* Queue.take(rearm)
        } else {
          armedAt = earliest
          yield* Effect.raceFirst(Effect.sleep(earliest - now), Queue.take(rearm))
        }
      }
    })
    yield* Effect.forkScoped(timer)

    const withDeadline = <A, E, E2>(call: Effect.Effect<A, E>, timeout: Duration.Duration, onTimeout: () => E2) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const pendingCall: PendingCall = {
          deadline: now + Duration.toMillis(timeout),
          expired: Deferred.unsafeMake<void>(FiberId.none)
        }
        pending.add(pendingCall)
        if (armedAt === undefined || pendingCall.deadline < armedAt) Queue.unsafeOffer(rearm, undefined)
        return Effect.raceFirst(
          call,
          Effect.zipRight(Deferred.await(pendingCall.expired), Effect.failSync(onTimeout))
        ).pipe(Effect.ensuring(Effect.sync(() => void pending.delete(pendingCall))))
      })

    return {
      endpoint: (address) => registry.get(formatAddress(address)),
      endpoints: () => Array.from(registry.values()),
      register: (address, nodeId) =>
        Effect.acquireRelease(
          Effect.suspend(() => {
            const key = formatAddress(address)
            if (registry.has(key)) return Effect.dieMessage(`MemoryNetwork: address ${key} is already registered`)
            const endpoint: MemoryEndpoint = {
              peer: { nodeId, address },
              key,
              handlers: makeHandlerRegistry(),
              online: true,
              group: 0
            }
            registry.set(key, endpoint)
            return Effect.succeed(endpoint)
          }),
          (endpoint) => Effect.sync(() => void registry.delete(endpoint.key))
        ),
      setOnline: (address, online) =>
        Effect.sync(() => {
          const endpoint = registry.get(formatAddress(address))
          if (endpoint !== undefined) endpoint.online = online
        }),
      partition: (sides) =>
        Effect.sync(() => {
          sides.forEach((side, index) => {
            for (const address of side) {
              const endpoint = registry.get(formatAddress(address))
              if (endpoint !== undefined) endpoint.group = index + 1
            }
          })
        }),
      heal: Effect.sync(() => {
        for (const endpoint of registry.values()) endpoint.group = 0
      }),
      withDeadline
    }
  })

  /** A layer with a fresh, empty network. */
  static readonly layer: Layer.Layer<MemoryNetwork> = Layer.scoped(MemoryNetwork, MemoryNetwork.make)
}

type AnyRequestSchema = Schema.Schema<NodeRequest, unknown>

/** A request seen only as the carrier of its result schemas (the union's members disagree on them). */
type AnyResultCarrier = Schema.WithResult<unknown, unknown, unknown, unknown, never>

// Every request class carries the schemas of its own result, which is all serializeExit needs.
const resultCarrier = (request: NodeRequest): AnyResultCarrier => request as unknown as AnyResultCarrier

const schemaOf = (request: NodeRequest): AnyRequestSchema =>
  // Each class is the schema of exactly the requests carrying its tag.
  requestClasses[request._tag] as unknown as AnyRequestSchema

/** Runs the installed handler for `request` (already decoded on the callee's side), or refuses it. */
const dispatch = (
  installed: ReturnType<ReturnType<typeof makeHandlerRegistry>["current"]>,
  caller: AuthenticatedPeer,
  request: NodeRequest
): Effect.Effect<unknown, unknown> => {
  const { any, handlers } = installed
  const refuse = Effect.fail(refusedNotServed(request._tag, any))
  switch (request._tag) {
    case "Ping":
      return handlers.Ping === undefined ? refuse : handlers.Ping(caller, request, caller.address.host)
    case "FindNode":
      return handlers.FindNode === undefined ? refuse : handlers.FindNode(caller, request)
    case "FindValue":
      return handlers.FindValue === undefined ? refuse : handlers.FindValue(caller, request)
    case "Store":
      return handlers.Store === undefined ? refuse : handlers.Store(caller, request)
    case "SendMessage":
      return handlers.SendMessage === undefined ? refuse : handlers.SendMessage(caller, request)
    case "DeliverReceipt":
      return handlers.DeliverReceipt === undefined ? refuse : handlers.DeliverReceipt(caller, request)
    case "StoreMail":
      return handlers.StoreMail === undefined ? refuse : handlers.StoreMail(caller, request)
    case "FetchMail":
      return handlers.FetchMail === undefined ? refuse : handlers.FetchMail(caller, request)
    case "AckMail":
      return handlers.AckMail === undefined ? refuse : handlers.AckMail(caller, request)
  }
}

/** Default call timeout when the caller gives none (the same as NodeConfig's default). */
export const DEFAULT_MEMORY_CALL_TIMEOUT = Duration.seconds(2)

/** `Transport` over a `MemoryNetwork`. */
export const MemoryTransport = {
  /**
   * Registers this node (its `Identity`) at `address` on the network for the
   * lifetime of the layer and provides its `Transport`.
   */
  layer: (
    address: Address,
    options: { readonly defaultTimeout?: Duration.DurationInput } = {}
  ): Layer.Layer<Transport, never, MemoryNetwork | Identity> =>
    Layer.scoped(
      Transport,
      Effect.gen(function*() {
        const network = yield* MemoryNetwork
        const identity = yield* Identity
        const self = yield* network.register(address, identity.nodeId)
        const defaultTimeout = Duration.decode(options.defaultTimeout ?? DEFAULT_MEMORY_CALL_TIMEOUT)

        const deliver = <R extends NodeRequest>(
          peer: PeerTarget,
          request: R
        ): Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError> =>
          Effect.suspend(() => {
            const peerKey = formatAddress(peer.address)
            const fail = (reason: TransportError["reason"], detail: string) =>
              Effect.fail(new TransportError({ peer: peerKey, reason, detail }))
            if (!self.online) return fail("Unreachable", "this node is offline")
            const callee = network.endpoint(peer.address)
            if (callee === undefined) return fail("Unreachable", "no node listens at this address")
            if (!callee.online) return fail("Unreachable", "the node is offline")
            if (callee.group !== self.group) return fail("Unreachable", "the network is partitioned")
            if (peer.nodeId !== undefined && peer.nodeId !== callee.peer.nodeId) {
              return fail("IdentityMismatch", `expected ${peer.nodeId}, the peer proved ${callee.peer.nodeId}`)
            }
            const schema = schemaOf(request)
            return Schema.encode(schema)(request).pipe(
              Effect.flatMap((encoded) => Schema.decodeUnknown(schema)(encoded)),
              Effect.mapError((error) => new TransportError({ peer: peerKey, reason: "ProtocolViolation", detail: error.message })),
              Effect.flatMap((decoded) => {
                const outcome: Effect.Effect<unknown, unknown> = Effect.suspend(() =>
                  dispatch(callee.handlers.current(), self.peer, decoded)
                )
                return Effect.exit(outcome).pipe(
                  Effect.flatMap((exit) => Schema.serializeExit(resultCarrier(decoded), exit)),
                  Effect.flatMap((encodedExit) => Schema.deserializeExit(resultCarrier(request), encodedExit)),
                  Effect.mapError((error) =>
                    new TransportError({ peer: peerKey, reason: "ProtocolViolation", detail: error.message })
                  )
                )
              }),
              Effect.flatMap((exit): Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError> => {
                // The exit was decoded with `request`'s own result schemas, so it holds R's success or error.
                if (Exit.isSuccess(exit)) {
                  return Effect.succeed({ value: exit.value as Request.Request.Success<R>, peer: callee.peer })
                }
                const failure = Cause.failureOption(exit.cause)
                if (failure._tag === "Some") return Effect.fail(failure.value as Request.Request.Error<R>)
                // A handler that died or was interrupted is, to the caller, a connection that broke.
                return fail("Closed", `the peer's handler failed: ${Cause.pretty(exit.cause)}`)
              })
            )
          })

        const send: Transport["Type"]["send"] = (peer, request, callOptions) => {
          const timeout = callOptions?.timeout === undefined ? defaultTimeout : Duration.decode(callOptions.timeout)
          return network.withDeadline(deliver(peer, request), timeout, () =>
            new TransportError({
              peer: formatAddress(peer.address),
              reason: "Timeout",
              detail: `no answer within ${Duration.format(timeout)}`
            }))
        }

        const serve = self.handlers.install

        return { localAddress: address, send, serve }
      })
    )
}
