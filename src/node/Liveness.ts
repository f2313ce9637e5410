/**
 * Keeps the node's count of live peers honest (core `PeerLiveness`): every
 * `PROBE_INTERVAL` it pings the quietest contacts of the routing table (at
 * most `MAX_PROBES_PER_ROUND`, all at once, each for at most the call
 * timeout) and feeds the outcome back into `Routing`, as a head ping does:
 * an answer marks the contact seen now, a failure counts against it. So a
 * peer that stopped stops counting as live within about a minute and a half,
 * and one that is merely quiet keeps counting. A real node runs it with its
 * control API (`NodeControlLive`); simulated nodes do without, so the
 * simulator's traffic is the protocol's own.
 *
 * @since 0.3.0
 */
import { Clock, Duration, Effect, type Scope } from "effect"
import { peersToProbe } from "../core/PeerLiveness.js"
import { NodeConfig } from "./NodeConfig.js"
import { Ping } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { Transport } from "./Transport.js"

/** Time between two probe rounds. */
export const PROBE_INTERVAL: Duration.Duration = Duration.seconds(30)

/** One round: pings the contacts `peersToProbe` picks and records what each did. Returns how many were asked. */
export const probeQuietPeers: Effect.Effect<number, never, Routing | Transport | NodeConfig> = Effect.gen(function*() {
  const routing = yield* Routing
  const transport = yield* Transport
  const config = yield* NodeConfig
  const now = yield* Clock.currentTimeMillis
  const chosen = peersToProbe(yield* routing.snapshot, now)
  yield* Effect.forEach(
    chosen,
    (contact) =>
      transport.send({ address: contact.address, nodeId: contact.nodeId }, new Ping({}), { timeout: config.callTimeout }).pipe(
        Effect.matchEffect({
          // The peer proved the id at the address we dialled: the table's own contact, seen now.
          onSuccess: () => routing.observe(contact),
          onFailure: () => routing.recordFailure(contact.nodeId, contact.address)
        })
      ),
    { concurrency: "unbounded", discard: true }
  )
  return chosen.length
})

/** Runs a probe round every `PROBE_INTERVAL` for the lifetime of the scope (a failed round is logged, not fatal). */
export const keepLivenessFresh: Effect.Effect<void, never, Routing | Transport | NodeConfig | Scope.Scope> = Effect.asVoid(
  Effect.forkScoped(Effect.forever(Effect.zipRight(
    Effect.sleep(PROBE_INTERVAL),
    Effect.catchAllCause(probeQuietPeers, (cause) => Effect.logError("probing quiet peers failed", cause))
  )))
)
