/**
 * Keeps the node's count of live peers honest (core `PeerLiveness`): every
 * 30 s it pings the quietest contacts of the routing table (at
 * most `MAX_PROBES_PER_ROUND`, all at once, each for at most the call
 * timeout) and feeds the outcome back into `Routing`, as a head ping does:
 * an answer marks the contact seen now, a failure counts against it. Between
 * two rounds it rechecks, every `PROBE_STEP`, the contacts whose last request
 * failed (a probe's or a lookup's), so a peer that stopped leaves the table
 * about 20 s after it was first missed, and one that is merely quiet keeps
 * counting. A real node runs it with its control API (`NodeControlLive`);
 * simulated nodes run it with `--probe-quiet-peers`, and otherwise do
 * without, so the simulator's traffic is the protocol's own.
 *
 * @since 0.3.0
 */
import { Clock, Duration, Effect, type Scope } from "effect"
import {
  MAX_PROBES_PER_ROUND,
  nextProbeBudget,
  PROBE_STEP_MS,
  type ProbeStep,
  peersToProbe,
  probeStep
} from "../core/PeerLiveness.js"
import { NodeConfig } from "./NodeConfig.js"
import { Ping } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { Transport } from "./Transport.js"

/** Time between two steps of the prober: a recheck of failing contacts, or every third a round. */
export const PROBE_STEP: Duration.Duration = Duration.millis(PROBE_STEP_MS)

/** What one probe round did. */
export interface ProbeRound {
  readonly asked: number
  readonly failed: number
}

/**
 * One round (or recheck): pings at most `step.max` contacts, as
 * `peersToProbe` picks them, and records what each did.
 */
export const probeQuietPeers = (
  step: ProbeStep = { max: MAX_PROBES_PER_ROUND, failingOnly: false }
): Effect.Effect<ProbeRound, never, Routing | Transport | NodeConfig> =>
  Effect.gen(function*() {
    const routing = yield* Routing
    const transport = yield* Transport
    const config = yield* NodeConfig
    const now = yield* Clock.currentTimeMillis
    const chosen = peersToProbe(yield* routing.snapshot, now, step)
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
 * Runs a step of the prober every `PROBE_STEP` for the lifetime of the scope
 * (core `probeStep`): a round every third, each as large as the last round's
 * failures allow (core `nextProbeBudget`), rechecks of failing contacts in
 * between. A step that fails itself is logged, not fatal.
 */
export const keepLivenessFresh: Effect.Effect<void, never, Routing | Transport | NodeConfig | Scope.Scope> = Effect.asVoid(
  Effect.forkScoped(Effect.iterate({ step: 1, roundBudget: MAX_PROBES_PER_ROUND }, {
    while: () => true,
    body: ({ roundBudget, step }) => {
      const next = probeStep(step, roundBudget)
      return Effect.zipRight(
        Effect.sleep(PROBE_STEP),
        probeQuietPeers(next).pipe(
          Effect.map((done) => next.failingOnly ? roundBudget : nextProbeBudget(done)),
          Effect.catchAllCause((cause) => Effect.as(Effect.logError("probing quiet peers failed", cause), MAX_PROBES_PER_ROUND)),
          Effect.map((budget) => ({ step: step + 1, roundBudget: budget }))
        )
      )
    }
  }))
)
