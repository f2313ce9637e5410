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
import { MAX_PROBES_PER_ROUND, nextProbeBudget, peersToProbe } from "../core/PeerLiveness.js"
import { NodeConfig } from "./NodeConfig.js"
import { Ping } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { Transport } from "./Transport.js"

/** Time between two probe rounds. */
export const PROBE_INTERVAL: Duration.Duration = Duration.seconds(30)

/** What one probe round did. */
export interface ProbeRound {
  readonly asked: number
  readonly failed: number
}

/**
 * One round: pings at most `max` contacts, as `peersToProbe` picks them,
 * and records what each did.
 */
export const probeQuietPeers = (max: number = MAX_PROBES_PER_ROUND): Effect.Effect<ProbeRound, never, Routing | Transport | NodeConfig> =>
  Effect.gen(function*() {
    const routing = yield* Routing
    const transport = yield* Transport
    const config = yield* NodeConfig
    const now = yield* Clock.currentTimeMillis
    const chosen = peersToProbe(yield* routing.snapshot, now, { max })
    const answered = yield* Effect.forEach(
      chosen,
      (contact) =>
        transport.send({ address: contact.address, nodeId: contact.nodeId }, new Ping({}), { timeout: config.callTimeout }).pipe(
          Effect.matchEffect({
            // The peer proved the id at the address we dialled: the table's own contact, seen now.
            onSuccess: () => Effect.as(routing.observe(contact), true),
            onFailure: () => Effect.as(routing.recordFailure(contact.nodeId, contact.address), false)
          })
        ),
      { concurrency: "unbounded" }
    )
    return { asked: chosen.length, failed: answered.filter((ok) => !ok).length }
  })

/**
 * Runs a probe round every `PROBE_INTERVAL` for the lifetime of the scope,
 * each as large as the last one's failures allow (core `nextProbeBudget`);
 * a round that fails itself is logged, not fatal.
 */
export const keepLivenessFresh: Effect.Effect<void, never, Routing | Transport | NodeConfig | Scope.Scope> = Effect.asVoid(
  Effect.forkScoped(Effect.iterate(MAX_PROBES_PER_ROUND, {
    while: () => true,
    body: (budget) =>
      Effect.zipRight(
        Effect.sleep(PROBE_INTERVAL),
        probeQuietPeers(budget).pipe(
          Effect.map(nextProbeBudget),
          Effect.catchAllCause((cause) => Effect.as(Effect.logError("probing quiet peers failed", cause), MAX_PROBES_PER_ROUND))
        )
      )
  }))
)
