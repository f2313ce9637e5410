/**
 * A relay on real sockets for tests and benchmarks: a TCP transport with a
 * gate over the core `CircuitTable` and an `OpenCircuit` handler (what the
 * node's `Circuits` service installs), the offers handed to the caller of
 * `startRelay` (where the reserved node's `AwaitCircuit` poll would take
 * them), so each rule of relaying can be exercised on its own.
 */
import { Effect, Queue } from "effect"
import { CircuitTable } from "../../src/core/CircuitRelay.js"
import { type NodeId, nodeIdFromPublicKey } from "../../src/core/Id.js"
import type { RelayHint } from "../../src/core/PeerAddress.js"
import { sha256 } from "../../src/core/Sha256.js"
import { CircuitRefused, type OpenCircuit } from "../../src/node/CircuitProtocol.js"
import { Identity, type IdentityService, Signatures } from "../../src/node/Identity.js"
import { relayedTarget } from "../../src/node/Transport.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { TcpTransport, type TcpTransportConfig } from "../../src/platform/TcpTransport.js"
import { freshLoopbackHost } from "./loopback.js"

/** A node identity from a one-byte seed. */
export const testIdentity = (seed: number): IdentityService => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(seed))
  return {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32).fill(seed + 100),
    sign: (message) => sign(signing.privateKey, message)
  }
}

/** A TCP transport of the identity of `seed`, on a fresh loopback host. */
export const startNode = (seed: number, config: Partial<TcpTransportConfig> = {}) =>
  TcpTransport.make({ listen: { host: freshLoopbackHost(), port: 0 }, ...config }).pipe(
    Effect.provideService(Identity, testIdentity(seed)),
    Effect.provideService(Signatures, { verify: verifyEd25519, claimHash: sha256 })
  )

/** Every node answers Ping with the host it saw the call come from ("relayed" through a circuit), so a test sees how a call arrived. */
export const answerPings = (transport: Effect.Effect.Success<ReturnType<typeof startNode>>) =>
  transport.serve({
    Ping: (caller: { readonly observedHost?: string | undefined; readonly relayedBy?: NodeId | undefined }) =>
      Effect.succeed({ observedHost: caller.relayedBy !== undefined ? "relayed" : caller.observedHost ?? "" })
  })

/**
 * A relay: the transport with a gate over a `CircuitTable`, answering
 * `OpenCircuit` with a fresh token for a node holding a reservation, and
 * handing each offer to the test (where the reserved node's poll would take it).
 */
export const startRelay = (
  seed: number,
  options: { readonly circuitBytes?: number; readonly offerTtlMs?: number } = {},
  config: Partial<TcpTransportConfig> = {}
) =>
  Effect.gen(function*() {
    const transport = yield* startNode(seed, config)
    const table = new CircuitTable({
      ...(options.circuitBytes === undefined ? {} : { circuitBytes: options.circuitBytes }),
      ...(options.offerTtlMs === undefined ? {} : { offerTtlMs: options.offerTtlMs })
    })
    const offers = yield* Queue.unbounded<
      { readonly token: string; readonly caller: NodeId; readonly target: NodeId; readonly callerHost: string | undefined }
    >()
    let next = 0
    yield* transport.serve({
      OpenCircuit: (caller: { readonly nodeId: NodeId; readonly observedHost?: string | undefined }, request: OpenCircuit) =>
        Effect.gen(function*() {
          const token = (++next).toString(16).padStart(32, "0")
          const decision = table.open(caller.nodeId, request.target, token, Date.now(), caller.observedHost)
          if (decision._tag === "Refused") return yield* new CircuitRefused({ reason: decision.reason, detail: "test relay" })
          yield* Queue.offer(offers, { token, caller: caller.nodeId, target: request.target, callerHost: caller.observedHost })
          return { token, validForMillis: decision.deadline - Date.now(), targetHost: decision.targetHost }
        })
    })
    yield* transport.relayCircuits({
      arrive: (token) => table.arrive(token, Date.now()),
      deadlineOf: (token) => table.deadlineOf(token),
      close: (token) => table.close(token),
      circuitBytes: table.limits.circuitBytes
    })
    const hint: RelayHint = { relayId: testIdentity(seed).nodeId, address: transport.localAddress }
    return { transport, table, offers, hint }
  })


/**
 * A relay, a node behind it (seed `targetSeed`, holding a reservation and
 * taking every offer, as its `AwaitCircuit` poll would) and a caller; the
 * caller reaches the node at `via`. The bench tunes the transports with `config`.
 */
/**
 * A node (seed `targetSeed`) behind `relay`: it holds a reservation there and
 * takes every offer, as its `AwaitCircuit` poll would; callers reach it at `via`.
 */
export const targetBehind = (
  relay: Effect.Effect.Success<ReturnType<typeof startRelay>>,
  targetSeed: number,
  config: Partial<TcpTransportConfig> = {}
) =>
  Effect.gen(function*() {
    const target = yield* startNode(targetSeed, config)
    yield* answerPings(target)
    const targetId = testIdentity(targetSeed).nodeId
    relay.table.reserve(targetId, target.localAddress.host, Date.now())
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(relay.offers), (offer) =>
      target.acceptCircuit(relay.hint, offer.token, offer.caller, offer.callerHost).pipe(Effect.ignore))))
    return { target, targetId, via: relayedTarget(targetId, relay.hint) }
  })

export const relayedPair = (
  seeds: { readonly relay: number; readonly target: number; readonly caller: number },
  options: { readonly circuitBytes?: number; readonly offerTtlMs?: number } = {},
  config: Partial<TcpTransportConfig> = {}
) =>
  Effect.gen(function*() {
    const relay = yield* startRelay(seeds.relay, options)
    const { target, targetId, via } = yield* targetBehind(relay, seeds.target, config)
    const caller = yield* startNode(seeds.caller, config)
    return { relay, target, caller, targetId, via }
  })
