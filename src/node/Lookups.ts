/**
 * Iterative Kademlia lookups over the `Transport`. The core `Lookup` state
 * machine decides whom to ask; this service sends the queries (each in its
 * own fiber, at most alpha live at a time), feeds answers, failures and
 * deadlines back, and returns the machine's result with its statistics.
 * Peers that answer are observed into `Routing` (they proved themselves over
 * the authenticated transport); peers that fail are reported to it. Contacts
 * carried in answers are second-hand and unverified, so they only steer the
 * lookup and never enter the routing table.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Fiber, FiberSet, Layer, Queue, type Scope } from "effect"
import type { Contact } from "../core/Contact.js"
import type { Key } from "../core/Id.js"
import {
  type Lookup,
  type LookupKind,
  type LookupResponse,
  type LookupResult,
  nextLookupStep,
  onLookupFailure,
  onLookupResponse,
  startLookup
} from "../core/Lookup.js"
import { acceptUserRecord, type UserRecord, type VerifySignature } from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { NodeConfig } from "./NodeConfig.js"
import { type AuthenticatedPeer, FindNode, FindValue } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { Transport, TransportError } from "./Transport.js"

/** Decides whether a record found under a key may be returned; an invalid one counts as a `Closer` answer. */
export type RecordValidator = (record: UserRecord, now: number) => boolean

/**
 * The standard check of a record found under `key`: it sits under its own
 * user key, and would be accepted by an empty store (valid node id and
 * signature, live, sane lifetime).
 */
export const validRecordAt = (key: Key, verify: VerifySignature): RecordValidator => (record, now) =>
  userKey(record.username) === key &&
  acceptUserRecord({ incoming: record, stored: undefined, now, verify })._tag === "Right"

/** What the lookups service offers. */
export interface LookupsService {
  /** The k closest live nodes to `target` (never this node), with the lookup's statistics. */
  readonly findNode: (target: Key) => Effect.Effect<LookupResult<never>>
  /**
   * The record stored under `key`, if a node on the way holds one that
   * `validate` accepts; otherwise behaves like `findNode`.
   */
  readonly findValue: (key: Key, validate: RecordValidator) => Effect.Effect<LookupResult<UserRecord>>
}

/** What a query fiber reports to the lookup loop. */
type QueryOutcome<V> =
  | { readonly _tag: "Answered"; readonly peer: Contact; readonly response: LookupResponse<V> }
  | { readonly _tag: "Failed"; readonly peer: Contact }

/** What wakes the lookup loop: a query's outcome, or the alarm of the earliest deadline. */
type LookupEvent<V> = QueryOutcome<V> | { readonly _tag: "Alarm" }

/** Runs iterative lookups for this node. */
export class Lookups extends Context.Tag("peerchat/Lookups")<Lookups, LookupsService>() {
  /** Builds the service over the node's transport and routing table; queries still running when the scope closes are interrupted. */
  static readonly make: Effect.Effect<LookupsService, never, NodeConfig | Routing | Transport | Scope.Scope> = Effect.gen(function*() {
    const config = yield* NodeConfig
    // Bound: each lookup adds at most maxLookupQueries fibers, each gone within the call timeout.
    const queries = yield* FiberSet.make<void>()
    const routing = yield* Routing
    const transport = yield* Transport
    const timeoutMs = Duration.toMillis(config.callTimeout)
    const lookupConfig = {
      k: config.k,
      alpha: config.alpha,
      queryTimeoutMs: timeoutMs,
      maxQueries: config.maxLookupQueries
    }

    /**
     * Asks `peer` and reports the outcome on `outcomes`. Routing learns about
     * the peer either way: an answer proves it alive, a transport failure counts
     * against it (a refusal does not: the peer is alive, only busy).
     */
    const query = <V>(
      peer: Contact,
      ask: (peer: Contact) => Effect.Effect<{ readonly response: LookupResponse<V>; readonly proven: Contact }, unknown>,
      outcomes: Queue.Enqueue<QueryOutcome<V>>
    ): Effect.Effect<void> =>
      ask(peer).pipe(
        Effect.matchEffect({
          onSuccess: ({ proven, response }) =>
            Effect.zipRight(routing.observe(proven), Queue.offer(outcomes, { _tag: "Answered", peer, response })),
          onFailure: (error) =>
            Effect.zipRight(
              error instanceof TransportError ? routing.recordFailure(peer.nodeId, peer.address) : Effect.void,
              Queue.offer(outcomes, { _tag: "Failed", peer })
            )
        }),
        Effect.asVoid
      )

    const run = <V>(
      kind: LookupKind,
      target: Key,
      ask: (peer: Contact) => Effect.Effect<{ readonly response: LookupResponse<V>; readonly proven: Contact }, unknown>
    ): Effect.Effect<LookupResult<V>> =>
      Effect.scoped(Effect.gen(function*() {
        const seeds = yield* routing.closest(target, config.k)
        let lookup: Lookup<V> = startLookup<V>({ target, kind, seeds, self: routing.self, config: lookupConfig })
        // Each query offers exactly one outcome and each alarm at most one tick, so the
        // queue holds at most maxLookupQueries + 1 items.
        const events = yield* Queue.unbounded<LookupEvent<V>>()
        // One alarm fiber at a time wakes the loop at the earliest deadline. A
        // sleep per wait would do too, but under TestClock every abandoned sleep
        // stays until its time comes and slows each adjust.
        let alarm: { readonly at: number; readonly fiber: Fiber.RuntimeFiber<void> } | undefined
        const armAlarm = (deadline: number, now: number) =>
          Effect.gen(function*() {
            if (alarm !== undefined && alarm.at <= deadline) return
            if (alarm !== undefined) yield* Fiber.interrupt(alarm.fiber)
            const fiber = yield* Effect.forkScoped(
              Effect.sleep(Math.max(0, deadline - now)).pipe(
                Effect.zipRight(Queue.offer(events, { _tag: "Alarm" as const })),
                Effect.asVoid
              )
            )
            alarm = { at: deadline, fiber }
          })
        const apply = (event: LookupEvent<V>, now: number): void => {
          if (event._tag === "Alarm") alarm = undefined
          else if (event._tag === "Answered") lookup = onLookupResponse(lookup, event.peer.nodeId, event.response, now)
          else lookup = onLookupFailure(lookup, event.peer.nodeId, now)
        }
        while (true) {
          const now = yield* Clock.currentTimeMillis
          const step = nextLookupStep(lookup, now)
          lookup = step.lookup
          const action = step.action
          if (action._tag === "Finished") return action.result
          if (action._tag === "Query") {
            // Query fibers outlive the lookup (each for at most the call timeout), so
            // that a straggler's late answer or timeout still reaches Routing.
            for (const peer of action.peers) yield* FiberSet.run(queries, query(peer, ask, events))
            continue
          }
          // Wait for the next answer, but never past the earliest deadline, so an
          // overdue peer stops holding one of the alpha slots on time.
          if (action.nextDeadline !== undefined) yield* armAlarm(action.nextDeadline, now)
          const first = yield* Queue.take(events)
          const after = yield* Clock.currentTimeMillis
          apply(first, after)
          for (const event of yield* Queue.takeAll(events)) apply(event, after)
        }
      }))

    /** The contact as the transport proved it (its id and advertised address), not as we had heard of it. */
    const proven = (answer: { readonly peer: AuthenticatedPeer }): Contact => ({
      nodeId: answer.peer.nodeId,
      address: answer.peer.address
    })

    return {
      findNode: (target) =>
        run<never>("FindNode", target, (peer) =>
          transport.send(peer, new FindNode({ target }), { timeout: config.callTimeout }).pipe(
            Effect.map((answer) => ({
              response: { _tag: "Closer", contacts: answer.value.contacts } as const,
              proven: proven(answer)
            }))
          )),
      findValue: (key, validate) =>
        run<UserRecord>("FindValue", key, (peer) =>
          transport.send(peer, new FindValue({ key }), { timeout: config.callTimeout }).pipe(
            Effect.flatMap((answer) =>
              Effect.map(Clock.currentTimeMillis, (now) => {
                const found = answer.value
                const response: LookupResponse<UserRecord> = found._tag === "Found" && validate(found.record, now)
                  ? { _tag: "Value", value: found.record, contacts: found.contacts }
                  : { _tag: "Closer", contacts: found.contacts }
                return { response, proven: proven(answer) }
              })
            )
          ))
    }
  })

  /** The lookups service. */
  static readonly layer: Layer.Layer<Lookups, never, NodeConfig | Routing | Transport> = Layer.scoped(Lookups, Lookups.make)
}
