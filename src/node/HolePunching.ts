/**
 * Moving a conversation off a relay (DCUtR style): when this node opens a
 * circuit to a peer, it asks the peer, through that circuit, to dial it back
 * directly at the same moment it dials the peer (`HolePunch`). Each end dials
 * the host the relay saw the other connect from (never one the other names)
 * at the port the other told; when both home routers keep a connection's
 * source port, each one's SYN opens its own NAT for the other's, and a plain
 * TCP connection results (a simultaneous open). The caller runs the usual
 * handshake over it, so the peer proves its id again, and from then on its
 * calls take it instead of the circuit. When the punch fails (a router that
 * picks a new port per destination, a firewall that refuses), the
 * conversation stays on the relay, and the next try with that peer waits
 * (core `HolePunchBook`).
 *
 * @since 0.4.0
 */
import { Clock, Context, Effect, FiberSet, Layer, Random, Stream } from "effect"
import { type HolePunchCounts, type HolePunchLimits, HolePunchBook, punchHostAllowed, punchPort } from "../core/HolePunch.js"
import { HolePunch, PunchRefused } from "./CircuitProtocol.js"
import { type Handlers, type RelayedConnection, relayedTarget, Transport } from "./Transport.js"

/** Hole punching over this node's relayed connections, both as the caller and as the callee. */
export class HolePunching extends Context.Tag("peerchat/HolePunching")<HolePunching, {
  readonly status: Effect.Effect<HolePunchCounts>
}>() {
  static readonly layer = (limits?: Partial<HolePunchLimits>): Layer.Layer<HolePunching, never, Transport> =>
    Layer.scoped(HolePunching, makeHolePunching(limits))
}

const makeHolePunching = (limits?: Partial<HolePunchLimits>) =>
  Effect.gen(function*() {
    const transport = yield* Transport
    const book = new HolePunchBook(limits)
    const withinMillis = book.limits.attemptMs
    const freshPort = Effect.map(Random.next, punchPort)
    // Punches under way end with the node (bounded by the book's limits).
    const running = yield* FiberSet.make()

    const handlers: Handlers<HolePunch> = {
      HolePunch: (caller, request) =>
        Effect.gen(function*() {
          // Cheap checks first: only a peer that reached this node through a relay has a reason to ask,
          // and only the host its relay saw it at may be dialled (never one it names).
          if (caller.relayedBy === undefined) {
            return yield* new PunchRefused({ reason: "NotRelayed", detail: "ask over a connection through a relay" })
          }
          const host = caller.observedHost
          if (host === undefined) {
            return yield* new PunchRefused({ reason: "NoHost", detail: "the relay did not say where the caller connected from" })
          }
          // Through a circuit the caller's address is the relay's: the host must be in the relay's scope.
          if (!punchHostAllowed(host, caller.address.host)) {
            return yield* new PunchRefused({ reason: "NoHost", detail: "the relay reported a host this node does not dial" })
          }
          const decision = book.answer(caller.nodeId, host, yield* Clock.currentTimeMillis)
          if (decision._tag === "Refused") {
            return yield* new PunchRefused({ reason: decision.reason, detail: "" })
          }
          const localPort = yield* freshPort
          // Dial back at once: until our SYN opens our NAT, the caller's are dropped at it.
          yield* FiberSet.run(
            running,
            transport.punch({ peer: caller.nodeId, host, port: request.port, localPort, role: "Responder", withinMillis }).pipe(
              Effect.tap(() => Effect.logInfo(`a peer behind a relay now reaches this node directly (hole punched from ${host})`)),
              Effect.catchAll((error) => Effect.logDebug("answering a hole punch failed", error.message)),
              Effect.ensuring(Effect.sync(() => book.answered(caller.nodeId)))
            )
          )
          return { port: localPort }
        })
    }
    yield* transport.serve(handlers)

    /** One try to reach `connection`'s peer directly; it stays on the relay either way until one succeeds. */
    const attempt = (connection: RelayedConnection): Effect.Effect<void> =>
      Effect.gen(function*() {
        const host = connection.peerHost
        // The target's relay (which its record names) reported the host: only one in the relay's scope.
        if (host === undefined || !punchHostAllowed(host, connection.via.address.host)) return
        const decision = book.initiate(connection.nodeId, host, yield* Clock.currentTimeMillis)
        if (decision._tag === "Refused") return
        const localPort = yield* freshPort
        const outcome = yield* transport.send(relayedTarget(connection.nodeId, connection.via), new HolePunch({ port: localPort })).pipe(
          Effect.flatMap(({ value }) =>
            transport.punch({ peer: connection.nodeId, host, port: value.port, localPort, role: "Initiator", withinMillis })
          ),
          Effect.either
        )
        book.initiated(connection.nodeId, outcome._tag === "Right", yield* Clock.currentTimeMillis)
        yield* outcome._tag === "Right"
          ? Effect.logInfo(`reaching ${connection.nodeId.slice(0, 12)}… directly now (hole punched to ${host}), not through its relay`)
          : Effect.logInfo(
            `no direct connection to ${connection.nodeId.slice(0, 12)}… (staying on its relay): ${outcome.left.message}`
          )
      })

    yield* Effect.forkScoped(
      Stream.runForEach(transport.relayedConnections, (connection) => FiberSet.run(running, attempt(connection)))
    )

    return {
      status: Effect.sync(() => book.counts())
    }
  })
