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
import type { Contact } from "../core/Contact.js"
import {
  MAX_PROBES_PER_ROUND,
  nextProbeBudget,
  PROBE_STEP_MS,
  type ProbeStep,
  peersToProbe,
  PROBES_IN_FLIGHT,
  probeStep,
  recheckControl
} from "../core/PeerLiveness.js"
import { NodeConfig } from "./NodeConfig.js"
import { Ping } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { failureCountsAgainstPeer, Transport } from "./Transport.js"

/** Time between two steps of the prober: a recheck of failing contacts, or every third a round. */
export const PROBE_STEP: Duration.Duration = Duration.millis(PROBE_STEP_MS)

/** What one probe round did. */
export interface ProbeRound {
  readonly asked: number
  readonly failed: number
}

/** What a ping of a contact showed: it answered, it is gone (see `failureCountsAgainstPeer`), or neither (it refused). */
type PingOutcome = "answered" | "failed" | "refused"

/**
 * One round (or recheck): pings at most `step.max` contacts, as
 * `peersToProbe` picks them, and records what each did. A recheck first
 * makes sure that a failure means the peer and not this node's own link
 * (core `recheckControl`): it records its failures only when some contact
 * was heard from within the last step, or the one heard from most recently,
 * asked alongside, answers; otherwise it records nothing and reports
 * nothing failed.
 */
export const probeQuietPeers = (
  step: ProbeStep = { max: MAX_PROBES_PER_ROUND, failingOnly: false }
): Effect.Effect<ProbeRound, never, Routing | Transport | NodeConfig> =>
  Effect.gen(function*() {
    const routing = yield* Routing
    const transport = yield* Transport
    const config = yield* NodeConfig
    const now = yield* Clock.currentTimeMillis
    const table = yield* routing.snapshot
    const chosen = peersToProbe(table, now, step)
    if (chosen.length === 0) return { asked: 0, failed: 0 }
    const control = step.failingOnly ? recheckControl(table, now) : { _tag: "Up" as const }
    if (control._tag === "None") return { asked: 0, failed: 0 }
    const ping = (contact: Contact): Effect.Effect<PingOutcome> =>
      transport.send({ address: contact.address, nodeId: contact.nodeId }, new Ping({}), { timeout: config.callTimeout }).pipe(
        Effect.match({
          onSuccess: () => "answered" as const,
          onFailure: (error) => (failureCountsAgainstPeer(error) ? "failed" as const : "refused" as const)
        })
      )
    // The witness goes in the first wave, beside the first failures it vouches for.
    const asked = control._tag === "Ask" ? [control.contact, ...chosen] : chosen
    const outcomes = yield* Effect.forEach(asked, ping, { concurrency: PROBES_IN_FLIGHT })
    const linkDown = control._tag === "Ask" && outcomes[0] !== "answered"
    let failed = 0
    yield* Effect.forEach(asked, (contact, index) => {
      const outcome = outcomes[index]
      // The peer proved the id at the address we dialled: the table's own contact, seen now.
      if (outcome === "answered") return routing.observe(contact)
      if (outcome !== "failed" || linkDown) return Effect.void
      failed++
      return routing.recordFailure(contact.nodeId, contact.address)
    }, { discard: true })
    return { asked: chosen.length, failed }
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
          Effect.catchAllCause((cause) =>
            Effect.as(Effect.logError("probing quiet peers failed", cause), next.failingOnly ? roundBudget : MAX_PROBES_PER_ROUND)
          ),
          Effect.map((budget) => ({ step: step + 1, roundBudget: budget }))
        )
      )
    }
  }))
)
