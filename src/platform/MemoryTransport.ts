/**
 * An in-process network for tests and the simulator. `MemoryNetwork` is a
 * registry of endpoints (address, node id, installed handlers, online flag,
 * partition group) with controls to take nodes offline and split the network;
 * `MemoryTransport.layer(address)` registers one node on it and implements the
 * `Transport` seam. A call carries the request to the callee, runs the
 * callee's handler with the caller as its authenticated peer, and carries the
 * outcome back as an `Exit`. By default both legs are encoded and decoded with
 * the protocol's schemas, so the same schemas are exercised as on TCP.
 * Authentication is by construction: the caller is whoever registered its
 * address with its own identity. An endpoint is a handful of fields, so
 * 10,000 of them fit in one process.
 *
 * For the simulator, `MemoryNetwork.makeWith(options)` adds a link model:
 * every message (each request and each answer) waits a one-way latency drawn
 * from a `Distribution` and is lost with a fixed probability (the caller then
 * sees its timeout). Draws come from the `Random` service of the fiber that
 * made the network, in the order messages leave, and waits are `Effect.sleep`,
 * so a seeded `Random` under virtual time replays a run exactly. Reachability
 * (online flags, partitions) is checked again when a message arrives, so a
 * node that goes offline or a partition that forms while a call is in flight
 * fails that call at the latest at its deadline. The network counts traffic
 * (`stats`) for the simulator's report. Without options it behaves as it
 * always did: no latency, no loss, no random draws, schema round trips.
 *
 * NATs and relays (`setBehindNat`): a host behind a NAT cannot be called —
 * the call waits for its deadline, like a SYN a home router drops — while
 * its own calls get their answers; so peers' dial-backs fail for it and it
 * judges itself unreachable through the node's own code. It is reached
 * `via` a relay over a circuit, as on TCP: the caller asks the relay
 * (`OpenCircuit`, the relay's handler decides), both ends present the
 * token to the relay's gate (`relayCircuits`, core `CircuitTable`), the
 * holder's leg through `acceptCircuit` once its `AwaitCircuit` poll hears
 * of it, and each end proves its id to the other. The network stands in
 * only for the byte splice: a call over a circuit crosses two links each
 * way, fails once the relay closes the circuit or an end leaves, and the
 * caller pools the circuit until it has been idle for a minute. Not
 * modelled: the handshakes' round trips, a circuit's byte bound, hole punching.
 *
 * Request limits: every endpoint has the budgets a TCP node has (core
 * `RequestLimits`, per caller's node id, per the host its call comes from —
 * the relay's for a call over a circuit — and for the whole node; the same
 * defaults, costs per request kind and overrides, `requestLimits`). A
 * request over them is refused before its handler runs with `RequestRefused`
 * Overloaded, worded as TCP words it, and counted in the node's `health`
 * (`rateLimited`) and the network's `stats`. Time is the `Clock` of the fiber
 * that made the network, so virtual time refills the buckets and a seed
 * replays the same refusals. Not modelled: TCP's pause in reading a
 * connection after a refusal (here each further request is refused at once).
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, FiberId, Layer, Option, Queue, type Request, Schema, type Scope, Stream } from "effect"
import { type Address, formatAddress } from "../core/Contact.js"
import {
  refusalDetail,
  requestCost,
  RequestLimiter,
  type RequestLimitsConfig,
  type RequestRefusal
} from "../core/RequestLimits.js"
import { type Distribution, logNormal, sample, uniformsPerSample } from "../core/Distributions.js"
import type { NodeId } from "../core/Id.js"
import type { RelayHint } from "../core/PeerAddress.js"
import { OpenCircuit } from "../node/CircuitProtocol.js"
import { Identity } from "../node/Identity.js"
import { type AuthenticatedPeer, Ping, RequestRefused } from "../node/Protocol.js"
import { asWireRequest, requestClasses, type WireRequest as NodeRequest, type WireRequestTag as NodeRequestTag } from "./WireProtocol.js"
import {
  type AnyRequest,
  type CallResult,
  type CircuitGate,
  makeHandlerRegistry,
  noConnectionsHealth,
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
  /** The relay's decisions on circuit legs, while the node relays (`relayCircuits`). */
  gate: CircuitGate | undefined
  /** Circuits this node opened through relays, by peer and relay (its pool). Bound: one per peer and relay it calls. */
  readonly circuits: Map<string, PooledCircuit>
  /** The node's request budgets (core `RequestLimits`), checked when a request reaches it, before its handler. */
  readonly requestLimiter: RequestLimiter
}

/** How one endpoint is registered: its request budgets (core `RequestLimits`; unset fields keep their defaults). */
export interface MemoryEndpointOptions {
  readonly requestLimits?: Partial<RequestLimitsConfig> | undefined
}

/** A circuit in a caller's pool: being opened (`ready` pending), or open. */
export interface PooledCircuit {
  readonly ready: Deferred.Deferred<MemoryCircuit, TransportError>
  circuit: MemoryCircuit | undefined
}

/**
 * A circuit through a relay, as the in-memory network carries it: the
 * caller asked the relay (`OpenCircuit`), both ends presented the token the
 * relay's gate gave, and the gate spliced them. Calls then cross two links
 * each way (caller to relay, relay to holder).
 */
export interface MemoryCircuit {
  readonly relay: MemoryEndpoint
  readonly token: string
  readonly caller: MemoryEndpoint
  readonly holder: MemoryEndpoint
  /** Last time a call used it (ms, the network's clock): idle circuits close, as idle connections do. */
  lastUsed: number
  closed: boolean
}

/** The simulator's default one-way latency: log-normal, median 50 ms, sigma 0.5 (p95 ≈ 114 ms, p99 ≈ 160 ms). */
export const SIMULATOR_LATENCY: Distribution = logNormal(50, 0.5)

/** How messages cross a `MemoryNetwork`; every field is optional and defaults to the behaviour tests rely on. */
export interface MemoryNetworkOptions {
  /**
   * One-way delay of each message in ms, drawn per message (a call's round
   * trip is two draws) and rounded to whole ms so virtual time stays integral.
   * Default: none, messages arrive at once and nothing is drawn.
   */
  readonly latency?: Distribution | undefined
  /** Probability in [0, 1] that a message (request or answer) is lost; the caller sees its timeout. Default 0 (nothing drawn). */
  readonly loss?: number | undefined
  /**
   * What a call sees when its peer is unknown, offline or partitioned away:
   * "refuse" (default) fails with `Unreachable` as soon as the network knows
   * (at once when sending, or when the message arrives if things changed in
   * flight); "silent" gets no answer and times out at its deadline, like a
   * host that vanished. A caller that is itself offline is refused at once in
   * both modes.
   */
  readonly unreachable?: "refuse" | "silent" | undefined
  /**
   * "schema" (default) encodes each request and answer with the protocol's
   * schemas and decodes it on the other side, as TCP would. "reference"
   * hands the caller's request and the handler's answer over as they are,
   * for speed: no validation, and both sides share the objects, which is
   * safe only because protocol values are immutable by convention (no
   * handler or caller may mutate a request or an answer).
   */
  readonly roundTrip?: "schema" | "reference" | undefined
}

/** The options a network runs with, defaults filled in. */
export interface MemoryNetworkConfig {
  readonly latency: Distribution | undefined
  readonly loss: number
  readonly unreachable: "refuse" | "silent"
  readonly roundTrip: "schema" | "reference"
}

/** Traffic of one node (or of the whole network), counted since the network was made or its stats were reset. */
export interface TrafficCounts {
  /** Requests this node sent (calls made while it was online, including those refused as unreachable). */
  readonly sent: number
  /** Requests that reached this node (its handler ran, or it refused the request: not served, or over its request budgets). */
  readonly received: number
  /** Calls of this node whose answer (a value or the handler's typed failure) came back. */
  readonly answered: number
  /** Calls of this node whose request or answer the loss model dropped (they also count as timed out once their deadline passes). */
  readonly lost: number
  /** Calls of this node that found the peer unknown, offline, partitioned away or gone (refused, or dropped in silent mode). */
  readonly unreachable: number
  /** Calls of this node that ended at their deadline. */
  readonly timedOut: number
}

/** A snapshot of a network's traffic counters. */
export interface MemoryNetworkStats {
  /** Requests sent, per request tag (every tag present). */
  readonly sentByTag: Readonly<Record<NodeRequestTag, number>>
  /** Per node, by formatted address (`host:port`). Bound: one entry per address ever registered on the network. */
  readonly byNode: ReadonlyMap<string, TrafficCounts>
  /** The sum over every node. */
  readonly total: TrafficCounts
  /**
   * Messages (requests and answers) each relay carried for others through
   * circuits, by formatted address; relays that carried none are left out.
   */
  readonly relayedByNode: ReadonlyMap<string, number>
  /**
   * Requests each node refused by a rate limit, by the limit, by formatted
   * address; nodes that refused none are left out. Bound: one entry per
   * address that ever refused one.
   */
  readonly rateLimitedByNode: ReadonlyMap<string, Readonly<Record<RequestRefusal, number>>>
}

/** How `MemoryNetworkService.call` carries a request. */
export interface CallOptions {
  /**
   * A listening probe (`Transport.proveListening`): a `Ping` the callee's
   * transport answers itself, as TCP's listener does, without its request
   * budget or its handlers. It crosses the network like any call (latency,
   * loss, NATs, offline and silent nodes).
   */
  readonly probe?: boolean | undefined
}

/** Controls and registry of an in-memory network. */
export interface MemoryNetworkService {
  /** The options this network runs with. */
  readonly config: MemoryNetworkConfig
  /** The endpoint registered at `address`, if any. */
  readonly endpoint: (address: Address) => MemoryEndpoint | undefined
  /** Every registered endpoint, in registration order. Bound: one per node in the process. */
  readonly endpoints: () => ReadonlyArray<MemoryEndpoint>
  /**
   * Registers `nodeId` at `address` for the lifetime of the scope, with fresh
   * request budgets (`options`). Dies when the address is taken: two nodes on
   * one address is a bug in the test setup.
   */
  readonly register: (
    address: Address,
    nodeId: NodeId,
    options?: MemoryEndpointOptions
  ) => Effect.Effect<MemoryEndpoint, never, Scope.Scope>
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
   * Puts the host of `address` behind a NAT that drops inbound connections
   * (true) or takes it out (false), whoever is registered there now or
   * later: nobody can call it, while its own calls get their answers, as
   * with a home router without port forwarding. A call to it is never
   * refused: it waits for its deadline, like a SYN the router dropped.
   */
  readonly setBehindNat: (address: Address, behind: boolean) => Effect.Effect<void>
  /** Whether the host of `address` sits behind a NAT (`setBehindNat`). */
  readonly isBehindNat: (address: Address) => boolean
  /**
   * The holder's leg of a circuit the relay at `relay` offered it (what
   * `Transport.acceptCircuit` does): `from` presents `token` to the relay's
   * gate, and the circuit is established once the caller's leg is there and
   * proved to be `caller`.
   */
  readonly acceptCircuit: (from: MemoryEndpoint, relay: RelayHint, token: string, caller: NodeId) => Effect.Effect<void, TransportError>
  /**
   * Sends `request` from the registered endpoint `from` to `peer` and waits for
   * the answer at most `timeout` (what `MemoryTransport`'s `send` does); to a
   * peer `via` a relay, over a circuit there (opened first, then pooled).
   */
  readonly call: <R extends AnyRequest>(
    from: MemoryEndpoint,
    peer: PeerTarget,
    request: R,
    timeout: Duration.Duration,
    options?: CallOptions
  ) => Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError>
  /** A snapshot of the traffic counters (copies them: O(nodes)). */
  readonly stats: () => MemoryNetworkStats
  /** Sets every traffic counter back to zero. */
  readonly resetStats: Effect.Effect<void>
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

type Counters = { -readonly [K in keyof TrafficCounts]: number }

const zeroCounts = (): Counters => ({ sent: 0, received: 0, answered: 0, lost: 0, unreachable: 0, timedOut: 0 })

const requestTags = Object.keys(requestClasses) as ReadonlyArray<NodeRequestTag>

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
  registry: ReturnType<typeof makeHandlerRegistry>,
  caller: AuthenticatedPeer,
  request: NodeRequest
): Effect.Effect<unknown, unknown> => {
  const handler = registry.handlerFor(request)
  return handler === undefined ? Effect.fail(refusedNotServed(request._tag, registry.current().any)) : handler(caller, request)
}

const noUniform = (): number => 0

/** A pooled circuit idle this long closes, as an idle connection does (TcpTransport's idle timeout). */
const CIRCUIT_IDLE_MS = 60_000

/** What opening a circuit may add to a call's time (TcpTransport's circuit setup timeout). */
const CIRCUIT_SETUP = Duration.seconds(8)

/** The pool key of a circuit to `nodeId` through the relay at `relayKey` (as TcpTransport keys it). */
const circuitKeyOf = (nodeId: NodeId | undefined, relayKey: string): string => `${nodeId ?? "?"} via ${relayKey}`

/** The in-memory network that `MemoryTransport` endpoints attach to. */
export class MemoryNetwork extends Context.Tag("peerchat/MemoryNetwork")<MemoryNetwork, MemoryNetworkService>() {
  /**
   * A fresh, empty network with the given link model. Its timer fiber lives
   * in the scope and reads the `Clock` of the caller, as do the endpoints'
   * request budgets; its latency and loss
   * draws come from the caller's `Random` (wrap this in `Effect.withRandom`
   * to give the network a stream of its own). Dies on a loss outside [0, 1].
   */
  static readonly makeWith = (
    options: MemoryNetworkOptions
  ): Effect.Effect<MemoryNetworkService, never, Scope.Scope> =>
    Effect.gen(function*() {
      const loss = options.loss ?? 0
      if (!(loss >= 0 && loss <= 1)) return yield* Effect.dieMessage(`MemoryNetwork: loss must lie in [0, 1], got ${loss}`)
      const config: MemoryNetworkConfig = {
        latency: options.latency,
        loss,
        unreachable: options.unreachable ?? "refuse",
        roundTrip: options.roundTrip ?? "schema"
      }
      const random = yield* Effect.random
      // Read synchronously where requests are admitted (the budgets' time), so admission adds no step to a call.
      const clock = yield* Effect.clock
      const networkScope = yield* Effect.scope
      const registry = new Map<string, MemoryEndpoint>()
      // Bound: one entry per host put behind a NAT (formatted addresses).
      const natted = new Set<string>()
      // Bound: one entry per address ever registered (a node that re-registers keeps counting in its entry).
      const traffic = new Map<string, Counters>()
      const sentByTag = Object.fromEntries(requestTags.map((tag) => [tag, 0])) as Record<NodeRequestTag, number>
      // Bound: one entry per relay that ever carried a message.
      const relayedBy = new Map<string, number>()
      // Bound: one entry per address that ever refused a request by a rate limit.
      const rateLimitedBy = new Map<string, Record<RequestRefusal, number>>()
      const countRefusal = (key: string, reason: RequestRefusal): void => {
        let counts = rateLimitedBy.get(key)
        if (counts === undefined) {
          counts = { PeerRate: 0, IpRate: 0, GlobalRate: 0 }
          rateLimitedBy.set(key, counts)
        }
        counts[reason] += 1
      }
      const countersOf = (key: string): Counters => {
        let counters = traffic.get(key)
        if (counters === undefined) {
          counters = zeroCounts()
          traffic.set(key, counters)
        }
        return counters
      }

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

      /** One latency draw in whole ms; the uniforms are drawn in a fixed order and number per message. */
      const drawLatency = (distribution: Distribution): Effect.Effect<number> => {
        const rounded = (value: number) => Math.max(0, Math.round(value))
        switch (uniformsPerSample(distribution)) {
          case 0:
            return Effect.succeed(rounded(sample(distribution, noUniform)))
          case 1:
            return Effect.map(random.next, (u) => rounded(sample(distribution, () => u)))
          case 2:
            return Effect.zipWith(random.next, random.next, (u1, u2) => {
              let drawn = 0
              return rounded(sample(distribution, () => (drawn++ === 0 ? u1 : u2)))
            })
        }
      }

      const lostForever = (caller: Counters): Effect.Effect<never> =>
        Effect.suspend(() => {
          caller.lost++
          return Effect.never
        })

      /**
       * One message crossing the network: waits its latency, and never
       * finishes when the loss model drops it (the call's deadline ends it).
       * Draws, when the model has any: the latency's uniforms, then the loss's.
       */
      const transit: (caller: Counters) => Effect.Effect<void> = (() => {
        const latency = config.latency
        if (latency === undefined && loss === 0) return () => Effect.void
        const delay = latency === undefined ? Effect.succeed(0) : drawLatency(latency)
        const dropped = loss === 0 ? Effect.succeed(false) : Effect.map(random.next, (u) => u < loss)
        return (caller) =>
          Effect.flatMap(delay, (millis) =>
            Effect.flatMap(dropped, (lost) =>
              lost ? lostForever(caller) : millis > 0 ? Effect.sleep(Duration.millis(millis)) : Effect.void))
      })()

      /** Why `from` cannot exchange messages with whoever is registered at `key` now, if it cannot. */
      const blocked = (from: MemoryEndpoint, key: string, expected?: MemoryEndpoint): string | undefined => {
        if (!from.online) return "this node is offline"
        const callee = registry.get(key)
        if (callee === undefined) return "no node listens at this address"
        if (expected !== undefined && callee !== expected) return "the node left the network during the call"
        if (!callee.online) return "the node is offline"
        if (callee.group !== from.group) return "the network is partitioned"
        return undefined
      }

      /** Whether the NAT in front of `callee` drops a connection `from` opens to it (its own are let through). */
      const natDrops = (from: MemoryEndpoint, callee: MemoryEndpoint): boolean => callee !== from && natted.has(callee.key)

      /**
       * A connection the callee's NAT dropped: no answer ever, the caller's
       * deadline ends it. A home router drops an unsolicited SYN rather than
       * refusing it, so the caller learns nothing until it gives up.
       */
      const droppedByNat = (caller: Counters): Effect.Effect<never> =>
        Effect.suspend(() => {
          caller.unreachable++
          return Effect.never
        })

      /** Why `circuit` cannot carry a message now, if it cannot. */
      const circuitDown = (circuit: MemoryCircuit, now: number): string | undefined => {
        if (circuit.closed) return "the circuit closed"
        const { caller, holder, relay } = circuit
        if (!caller.online || !relay.online || !holder.online) return "an end or the relay of the circuit is offline"
        if (registry.get(relay.key) !== relay || registry.get(holder.key) !== holder || registry.get(caller.key) !== caller) {
          return "an end or the relay of the circuit left the network"
        }
        if (caller.group !== relay.group || holder.group !== relay.group) return "the network is partitioned"
        const deadline = relay.gate?.deadlineOf(circuit.token)
        if (deadline === undefined || deadline <= now) return "the relay closed the circuit"
        return undefined
      }

      /** Closes `circuit`: the relay frees its place, the caller's pool forgets it. */
      const closeCircuit = (circuit: MemoryCircuit): void => {
        if (circuit.closed) return
        circuit.closed = true
        circuit.relay.gate?.close(circuit.token)
        const key = circuitKeyOf(circuit.holder.peer.nodeId, circuit.relay.key)
        if (circuit.caller.circuits.get(key)?.circuit === circuit) circuit.caller.circuits.delete(key)
      }

      /** Closes `circuit` once it has been idle for `CIRCUIT_IDLE_MS` (as an idle connection closes) or went down. */
      const closeWhenIdle = (circuit: MemoryCircuit): Effect.Effect<void> =>
        Effect.gen(function*() {
          while (!circuit.closed) {
            const now = yield* Clock.currentTimeMillis
            if (circuitDown(circuit, now) !== undefined || now - circuit.lastUsed >= CIRCUIT_IDLE_MS) {
              closeCircuit(circuit)
              return
            }
            yield* Effect.sleep(Duration.millis(Math.max(1, circuit.lastUsed + CIRCUIT_IDLE_MS - now)))
          }
        })

      /** A leg waiting at a relay for the other end of its circuit. */
      interface WaitingLeg {
        readonly end: MemoryEndpoint
        readonly role: "caller" | "holder"
        /** Who must be at the other end: the peer the caller means to reach, the caller the holder was offered. */
        readonly expects: NodeId
        readonly paired: Deferred.Deferred<MemoryCircuit, TransportError>
      }
      // Bound: legs waiting at relays, each at most until its token's deadline.
      const waitingLegs = new Map<string, WaitingLeg>()

      /**
       * One end's leg of a circuit: it crosses to the relay and presents
       * `token`; the relay's own gate (core `CircuitTable`) says whether it
       * waits, is spliced to the leg waiting, or is closed. Once spliced, the
       * ends prove their ids to each other, as their handshake through the
       * relay would. Only the byte splice is the network's.
       */
      const presentLeg = (
        leg: Omit<WaitingLeg, "paired">,
        relay: RelayHint,
        token: string,
        peerKey: string
      ): Effect.Effect<MemoryCircuit, TransportError> => {
        const counters = countersOf(leg.end.key)
        const fail = (reason: TransportError["reason"], detail: string) =>
          Effect.fail(new TransportError({ peer: peerKey, reason, detail }))
        const relayKey = formatAddress(relay.address)
        return Effect.zipRight(
          transit(counters),
          Effect.suspend(() => {
            const why = blocked(leg.end, relayKey)
            if (why !== undefined) {
              counters.unreachable++
              return config.unreachable === "refuse" ? fail("Unreachable", why) : Effect.never
            }
            const relayEnd = registry.get(relayKey) as MemoryEndpoint // `blocked` found it
            if (natDrops(leg.end, relayEnd)) return droppedByNat(counters)
            const gate = relayEnd.gate
            if (gate === undefined) return fail("HandshakeFailed", "the relay closed the leg: it relays no circuits")
            return Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<MemoryCircuit, TransportError> => {
              const arrival = gate.arrive(token)
              const slot = `${relayKey} ${token}`
              if (arrival === "Unknown") return fail("HandshakeFailed", "the relay closed the leg: unknown or expired circuit token")
              if (arrival === "Wait") {
                const waiting: WaitingLeg = { ...leg, paired: Deferred.unsafeMake(FiberId.none) }
                waitingLegs.set(slot, waiting)
                const giveUp = Effect.sync(() => {
                  if (waitingLegs.get(slot) !== waiting) return
                  waitingLegs.delete(slot)
                  gate.close(token)
                })
                const deadline = gate.deadlineOf(token) ?? now
                return Effect.raceFirst(
                  Deferred.await(waiting.paired),
                  Effect.zipRight(
                    Effect.zipRight(Effect.sleep(Duration.millis(Math.max(0, deadline - now))), giveUp),
                    fail("HandshakeFailed", "the other leg of the circuit never came")
                  )
                ).pipe(Effect.onInterrupt(() => giveUp))
              }
              const other = waitingLegs.get(slot)
              waitingLegs.delete(slot)
              const closeBoth = (mine: TransportError, theirs: TransportError) => {
                gate.close(token)
                if (other !== undefined) Deferred.unsafeDone(other.paired, Exit.fail(theirs))
                return Effect.fail(mine)
              }
              const error = (reason: TransportError["reason"], detail: string) => new TransportError({ peer: peerKey, reason, detail })
              if (other === undefined || other.role === leg.role) {
                const gone = error("HandshakeFailed", "the other leg of the circuit is gone")
                return closeBoth(gone, gone)
              }
              const callerLeg = leg.role === "caller" ? leg : other
              const holderLeg = leg.role === "caller" ? other : leg
              // The ends' handshake through the circuit: the caller checks the holder's id, the holder the caller's.
              if (callerLeg.expects !== holderLeg.end.peer.nodeId) {
                const mismatch = error("IdentityMismatch", `expected ${callerLeg.expects}, the peer proved ${holderLeg.end.peer.nodeId}`)
                const hungUp = error("HandshakeFailed", "the caller hung up during the handshake")
                return leg.role === "caller" ? closeBoth(mismatch, hungUp) : closeBoth(hungUp, mismatch)
              }
              if (holderLeg.expects !== callerLeg.end.peer.nodeId) {
                const mismatch = error("IdentityMismatch", `the circuit was offered for ${holderLeg.expects}, ${callerLeg.end.peer.nodeId} came`)
                const closed = error("Closed", "the peer closed the circuit after the handshake")
                return leg.role === "holder" ? closeBoth(mismatch, closed) : closeBoth(closed, mismatch)
              }
              const circuit: MemoryCircuit = {
                relay: relayEnd,
                token,
                caller: callerLeg.end,
                holder: holderLeg.end,
                lastUsed: now,
                closed: false
              }
              Deferred.unsafeDone(other.paired, Exit.succeed(circuit))
              return Effect.succeed(circuit)
            })
          })
        )
      }

      const call = <R extends AnyRequest>(
        from: MemoryEndpoint,
        peer: PeerTarget,
        sent: R,
        timeout: Duration.Duration,
        callOptions: CallOptions = {}
      ): Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError> => {
        type Outcome = Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError>
        const via = peer.via
        const peerKey = via === undefined ? formatAddress(peer.address) : circuitKeyOf(peer.nodeId, formatAddress(via.address))
        const request = asWireRequest(sent)
        if (request === undefined) {
          return Effect.fail(new TransportError({ peer: peerKey, reason: "ProtocolViolation", detail: `${sent._tag} is not a request of the protocol` }))
        }
        const caller = countersOf(from.key)
        const fail = (reason: TransportError["reason"], detail: string) =>
          Effect.fail(new TransportError({ peer: peerKey, reason, detail }))
        const violation = (error: { readonly message: string }) =>
          new TransportError({ peer: peerKey, reason: "ProtocolViolation", detail: error.message })
        /** A call that cannot go on: refused, or left to time out in silent mode. */
        const unreachable = (detail: string): Effect.Effect<never, TransportError> => {
          caller.unreachable++
          return config.unreachable === "refuse" ? fail("Unreachable", detail) : Effect.never
        }
        const schemaTrip = config.roundTrip === "schema"

        /**
         * Runs the callee's handler on the decoded request, with the caller as
         * the callee sees it, and carries the outcome back to the caller
         * (`back`: the way back, failing if it broke), as the callee proved it.
         */
        const answer = (
          callee: MemoryEndpoint,
          decoded: NodeRequest,
          seen: { readonly caller: AuthenticatedPeer; readonly callee: AuthenticatedPeer },
          back: Effect.Effect<void, TransportError>
        ): Outcome => {
          const handled: Effect.Effect<unknown, unknown> = Effect.suspend(() => {
            // The callee's budgets, as on TCP: a request over them is refused before any handler work.
            // The caller's host is the one its call comes from (the relay's, over a circuit).
            const admission = callee.requestLimiter.admit(
              seen.caller.nodeId,
              seen.caller.address.host,
              clock.unsafeCurrentTimeMillis(),
              requestCost(decoded._tag)
            )
            if (admission._tag === "Refuse") {
              countRefusal(callee.key, admission.reason)
              return Effect.fail(
                new RequestRefused({ reason: "Overloaded", detail: refusalDetail(admission.reason, admission.retryAfterMillis) })
              )
            }
            return dispatch(callee.handlers, seen.caller, decoded)
          })
          // A listening probe is answered by the callee's transport, as TCP's listener answers it: no
          // request budget, no handler (so the callee does not take the prober for a caller).
          const outcome = callOptions.probe === true ? Effect.succeed({ observedHost: seen.caller.address.host }) : handled
          return Effect.exit(outcome).pipe(
            Effect.flatMap((exit) =>
              schemaTrip
                ? Effect.mapError(Schema.serializeExit(resultCarrier(decoded), exit), violation)
                : Effect.succeed<unknown>(exit)
            ),
            Effect.flatMap((wire) => Effect.as(back, wire)),
            Effect.flatMap((wire) =>
              schemaTrip
                ? Effect.mapError(Schema.deserializeExit(resultCarrier(request), wire), violation)
                // In reference mode the wire value is the handler's own exit.
                : Effect.succeed(wire as Exit.Exit<unknown, unknown>)
            ),
            Effect.flatMap((exit): Outcome => {
              // The exit was decoded with (or, by reference, produced for) `request`'s own result schemas, so it holds R's success or error.
              if (Exit.isSuccess(exit)) {
                caller.answered++
                return Effect.succeed({ value: exit.value as Request.Request.Success<R>, peer: seen.callee })
              }
              const failure = Cause.failureOption(exit.cause)
              if (failure._tag === "Some") {
                caller.answered++
                return Effect.fail(failure.value as Request.Request.Error<R>)
              }
              // A handler that died or was interrupted is, to the caller, a connection that broke.
              return fail("Closed", `the peer's handler failed: ${Cause.pretty(exit.cause)}`)
            })
          )
        }

        /** The request, arrived at `callee` on the wire: decoded (in schema mode) and answered. */
        const received = (
          callee: MemoryEndpoint,
          wire: unknown,
          seen: { readonly caller: AuthenticatedPeer; readonly callee: AuthenticatedPeer },
          back: Effect.Effect<void, TransportError>
        ): Outcome => {
          countersOf(callee.key).received++
          return schemaTrip
            ? Effect.flatMap(Effect.mapError(Schema.decodeUnknown(schemaOf(request))(wire), violation), (decoded) =>
              answer(callee, decoded, seen, back))
            // In reference mode the wire value is the caller's own request.
            : answer(callee, wire as NodeRequest, seen, back)
        }

        const encoded: Effect.Effect<unknown, TransportError> = schemaTrip
          ? Effect.mapError(Schema.encode(schemaOf(request))(request), violation)
          : Effect.succeed(request)

        if (via !== undefined) {
          const target = peer.nodeId
          if (target === undefined) return fail("IdentityMismatch", "a peer behind a relay is called only by its node id")
          const relayed = Effect.suspend(() => {
            if (!from.online) return fail("Unreachable", "this node is offline")
            caller.sent++
            sentByTag[request._tag]++
            return Effect.flatMap(circuitTo(from, target, via, timeout, peerKey), (circuit) => {
              const relay = circuit.relay
              /** One link of the circuit: checked, then crossed; the relay counts what it carries onwards. */
              const link = (relaying: boolean) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) => {
                  const down = circuitDown(circuit, now)
                  if (down !== undefined) return fail("Closed", down)
                  circuit.lastUsed = now
                  if (relaying) relayedBy.set(relay.key, (relayedBy.get(relay.key) ?? 0) + 1)
                  return transit(caller)
                })
              const arrived = Effect.flatMap(Clock.currentTimeMillis, (now) => {
                const down = circuitDown(circuit, now)
                return down === undefined ? Effect.void : fail("Closed", down)
              })
              const crossing = Effect.zipRight(Effect.zipRight(link(false), link(true)), arrived)
              // Through a circuit, each end sees the other only behind the relay (as TCP's circuits show it).
              const seen = {
                caller: { nodeId: from.peer.nodeId, address: { host: relay.peer.address.host, port: 0 }, relayedBy: relay.peer.nodeId },
                callee: { nodeId: circuit.holder.peer.nodeId, address: relay.peer.address, relayedBy: relay.peer.nodeId }
              }
              return Effect.flatMap(encoded, (wire) => Effect.zipRight(crossing, received(circuit.holder, wire, seen, crossing)))
            })
          })
          // Opening a circuit (a request to the relay, both legs) takes longer than a dial: as on TCP, a
          // call that must open one gets that time on top of its own.
          const total = from.circuits.get(peerKey)?.circuit === undefined ? Duration.sum(timeout, CIRCUIT_SETUP) : timeout
          return withDeadline(relayed, total, () => {
            caller.timedOut++
            return new TransportError({ peer: peerKey, reason: "Timeout", detail: `no answer within ${Duration.format(total)}` })
          })
        }

        const arrive = (wire: unknown): Outcome => {
          const arriving = blocked(from, peerKey)
          if (arriving !== undefined) return unreachable(arriving)
          // `blocked` found the callee registered.
          const callee = registry.get(peerKey) as MemoryEndpoint
          if (natDrops(from, callee)) return droppedByNat(caller)
          if (peer.nodeId !== undefined && peer.nodeId !== callee.peer.nodeId) {
            return fail("IdentityMismatch", `expected ${peer.nodeId}, the peer proved ${callee.peer.nodeId}`)
          }
          // The answer leaves only while the callee is still there and on the caller's side.
          const back = Effect.suspend(() => {
            const leaving = blocked(from, peerKey, callee)
            if (leaving !== undefined) return unreachable(leaving)
            return Effect.zipRight(
              transit(caller),
              Effect.suspend(() => {
                const arriving = blocked(from, peerKey, callee)
                return arriving === undefined ? Effect.void : unreachable(arriving)
              })
            )
          })
          // The caller as the callee sees it: with the host its "connection" came from (its own
          // registered host: the memory network has no address translation), as TCP sets it.
          const seen = { caller: { ...from.peer, observedHost: from.peer.address.host }, callee: callee.peer }
          return received(callee, wire, seen, back)
        }

        const deliver: Outcome = Effect.suspend(() => {
          if (!from.online) return fail("Unreachable", "this node is offline")
          caller.sent++
          sentByTag[request._tag]++
          if (config.unreachable === "refuse") {
            const sending = blocked(from, peerKey)
            if (sending !== undefined) return unreachable(sending)
          }
          // `arrive` reads the network's state, so it must run when the message arrives, not when the call is built.
          return Effect.flatMap(encoded, (wire) => Effect.zipRight(transit(caller), Effect.suspend(() => arrive(wire))))
        })

        return withDeadline(deliver, timeout, () => {
          caller.timedOut++
          return new TransportError({
            peer: peerKey,
            reason: "Timeout",
            detail: `no answer within ${Duration.format(timeout)}`
          })
        })
      }

      /**
       * The circuit in `from`'s pool to `target` through `via`, else a new
       * one: `OpenCircuit` at the relay (whose handler decides), then this
       * end's leg. Concurrent calls share one opening.
       */
      const circuitTo = (
        from: MemoryEndpoint,
        target: NodeId,
        via: RelayHint,
        timeout: Duration.Duration,
        key: string
      ): Effect.Effect<MemoryCircuit, TransportError> =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const pooled = from.circuits.get(key)
          if (pooled !== undefined) {
            const open = pooled.circuit
            if (open === undefined) return Deferred.await(pooled.ready)
            if (circuitDown(open, now) === undefined && now - open.lastUsed < CIRCUIT_IDLE_MS) return Effect.succeed(open)
            closeCircuit(open)
          }
          const entry: PooledCircuit = { ready: Deferred.unsafeMake(FiberId.none), circuit: undefined }
          from.circuits.set(key, entry)
          const opening = call(from, { address: via.address, nodeId: via.relayId }, new OpenCircuit({ target }), timeout).pipe(
            Effect.mapError((error) =>
              new TransportError({
                peer: key,
                reason: error._tag === "TransportError" && error.reason === "IdentityMismatch" ? "IdentityMismatch" : "Unreachable",
                detail: `the relay at ${formatAddress(via.address)} opened no circuit: ${error.message}`
              })
            ),
            Effect.flatMap(({ value }) => presentLeg({ end: from, role: "caller", expects: target }, via, value.token, key))
          )
          return opening.pipe(
            Effect.tap((circuit) =>
              Effect.suspend(() => {
                entry.circuit = circuit
                return Effect.asVoid(Effect.forkIn(closeWhenIdle(circuit), networkScope))
              })
            ),
            Effect.onExit((exit) =>
              Effect.sync(() => {
                if (Exit.isFailure(exit) && from.circuits.get(key) === entry) from.circuits.delete(key)
                Deferred.unsafeDone(
                  entry.ready,
                  Exit.isSuccess(exit)
                    ? exit
                    : Exit.fail(Option.getOrElse(Cause.failureOption(exit.cause), () =>
                      new TransportError({ peer: key, reason: "Closed", detail: "the call that opened the circuit was interrupted" })))
                )
              })
            )
          )
        })

      const snapshot = (counters: Counters): TrafficCounts => ({ ...counters })

      return {
        config,
        endpoint: (address) => registry.get(formatAddress(address)),
        endpoints: () => Array.from(registry.values()),
        register: (address, nodeId, options = {}) =>
          Effect.acquireRelease(
            Effect.suspend(() => {
              const key = formatAddress(address)
              if (registry.has(key)) return Effect.dieMessage(`MemoryNetwork: address ${key} is already registered`)
              const endpoint: MemoryEndpoint = {
                peer: { nodeId, address },
                key,
                handlers: makeHandlerRegistry(),
                online: true,
                group: 0,
                gate: undefined,
                circuits: new Map(),
                requestLimiter: new RequestLimiter(clock.unsafeCurrentTimeMillis(), options.requestLimits)
              }
              registry.set(key, endpoint)
              countersOf(key)
              return Effect.succeed(endpoint)
            }),
            (endpoint) =>
              Effect.sync(() => {
                registry.delete(endpoint.key)
                // Its connections end with it: the circuits it opened close at their relays.
                for (const pooled of [...endpoint.circuits.values()]) if (pooled.circuit !== undefined) closeCircuit(pooled.circuit)
                endpoint.gate = undefined
              })
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
        setBehindNat: (address, behind) =>
          Effect.sync(() => {
            const key = formatAddress(address)
            if (behind) natted.add(key)
            else natted.delete(key)
          }),
        isBehindNat: (address) => natted.has(formatAddress(address)),
        acceptCircuit: (from, relay, token, caller) =>
          Effect.asVoid(presentLeg(
            { end: from, role: "holder", expects: caller },
            relay,
            token,
            `circuit from ${caller.slice(0, 12)} via ${formatAddress(relay.address)}`
          )),
        call,
        stats: () => {
          const total = zeroCounts()
          const byNode = new Map<string, TrafficCounts>()
          for (const [key, counters] of traffic) {
            byNode.set(key, snapshot(counters))
            for (const field of Object.keys(total) as Array<keyof Counters>) total[field] += counters[field]
          }
          const rateLimitedByNode = new Map<string, Readonly<Record<RequestRefusal, number>>>()
          for (const [key, counts] of rateLimitedBy) rateLimitedByNode.set(key, { ...counts })
          return { sentByTag: { ...sentByTag }, byNode, total, relayedByNode: new Map(relayedBy), rateLimitedByNode }
        },
        resetStats: Effect.sync(() => {
          for (const counters of traffic.values()) Object.assign(counters, zeroCounts())
          for (const tag of requestTags) sentByTag[tag] = 0
          relayedBy.clear()
          rateLimitedBy.clear()
        }),
        withDeadline
      }
    })

  /** A fresh, empty network without latency or loss (see `makeWith`). */
  static readonly make: Effect.Effect<MemoryNetworkService, never, Scope.Scope> = MemoryNetwork.makeWith({})

  /** A layer with a fresh network with the given link model (see `makeWith`). */
  static readonly layerWith = (options: MemoryNetworkOptions): Layer.Layer<MemoryNetwork> =>
    Layer.scoped(MemoryNetwork, MemoryNetwork.makeWith(options))

  /** A layer with a fresh, empty network without latency or loss. */
  static readonly layer: Layer.Layer<MemoryNetwork> = MemoryNetwork.layerWith({})
}

/** Default call timeout when the caller gives none (the same as NodeConfig's default). */
export const DEFAULT_MEMORY_CALL_TIMEOUT = Duration.seconds(2)

const NO_HOLE_PUNCHING = "the in-memory network does not model hole punching (a node behind a NAT stays on its relays)"

/** How a `MemoryTransport` runs; every field is optional. */
export interface MemoryTransportOptions {
  /** Bound on a call whose caller gives none (default `DEFAULT_MEMORY_CALL_TIMEOUT`). */
  readonly defaultTimeout?: Duration.DurationInput | undefined
  /**
   * Request budgets per peer, per host and in total (core `RequestLimits`),
   * as `TcpTransport`'s `requestLimits`: unset fields keep the defaults a TCP
   * node has.
   */
  readonly requestLimits?: Partial<RequestLimitsConfig> | undefined
}

/** Only the limits that refused something, so `status` stays short on a quiet node (as TCP reports them). */
const refusedOnly = (counts: Readonly<Record<RequestRefusal, number>>): Record<string, number> =>
  Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0))

/** `Transport` over a `MemoryNetwork`. */

export const MemoryTransport = {
  /**
   * Registers this node (its `Identity`) at `address` on the network for the
   * lifetime of the scope and returns its `Transport` (what `layer` provides;
   * the simulator builds its nodes without layers to keep them small).
   */
  make: (
    address: Address,
    options: MemoryTransportOptions = {}
  ): Effect.Effect<Transport["Type"], never, MemoryNetwork | Identity | Scope.Scope> =>
    Effect.gen(function*() {
      const network = yield* MemoryNetwork
      const identity = yield* Identity
      const self = yield* network.register(address, identity.nodeId, { requestLimits: options.requestLimits })
      const defaultTimeout = Duration.decode(options.defaultTimeout ?? DEFAULT_MEMORY_CALL_TIMEOUT)

      /** The caller's bound on a call, else this transport's default. */
      const timeoutOf = (callOptions: { readonly timeout?: Duration.DurationInput } | undefined): Duration.Duration =>
        callOptions?.timeout === undefined ? defaultTimeout : Duration.decode(callOptions.timeout)

      // A peer `via` a relay is reached over a circuit there (see `MemoryNetworkService.call`).
      const send: Transport["Type"]["send"] = (peer, request, callOptions) =>
        network.call(self, peer, request, timeoutOf(callOptions))

      const serve = self.handlers.install

      return {
        localAddress: address,
        send,
        // A probe crosses the network as a call does, and the callee's transport answers it (see CallOptions).
        proveListening: (target, callOptions) =>
          Effect.map(network.call(self, target, new Ping({}), timeoutOf(callOptions), { probe: true }), ({ peer }) => peer).pipe(Effect.catchTag("RequestRefused", (refused) =>
            // Never answered by a probe (no budget applies); kept total for the type.
            Effect.fail(new TransportError({ peer: formatAddress(target.address), reason: "Closed", detail: refused.message })))),
        serve,
        // No connections to count; the requests its budgets refused, as TCP counts them.
        health: Effect.sync(() => ({ ...noConnectionsHealth, rateLimited: refusedOnly(self.requestLimiter.refusals()) })),
        // The relay's gate decides on every leg; the network only stands in for the byte splice.
        relayCircuits: (gate) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              self.gate = gate
            }),
            () =>
              Effect.sync(() => {
                if (self.gate === gate) self.gate = undefined
              })
          ),
        acceptCircuit: (relay, token, caller) => network.acceptCircuit(self, relay, token, caller),
        // Hole punching is a TCP matter too (a simultaneous open through two NATs).
        relayedConnections: Stream.empty,
        punch: (plan) =>
          Effect.fail(new TransportError({ peer: `${plan.host}:${plan.port}`, reason: "Unreachable", detail: NO_HOLE_PUNCHING }))
      }
    }),

  /**
   * Registers this node (its `Identity`) at `address` on the network for the
   * lifetime of the layer and provides its `Transport`.
   */
  layer: (
    address: Address,
    options: MemoryTransportOptions = {}
  ): Layer.Layer<Transport, never, MemoryNetwork | Identity> =>
    Layer.scoped(Transport, MemoryTransport.make(address, options))
}
