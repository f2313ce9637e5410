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
 * With `adaptiveTimeouts`, the round-trip time of every answered query (late
 * ones included) feeds one `RttEstimator` per node, and a query counts as
 * overdue after the peer's estimated timeout rather than the full call
 * timeout: a dead peer then holds one of the alpha slots for about one
 * round trip plus its variation, not for 2 s, while the call keeps running
 * for the full timeout so a slow peer's answer still counts. A peer whose
 * last call timed out or could not connect is remembered (core
 * `UnansweredPeers`, until it answers or for 10 minutes): later lookups
 * still ask it when they want it, but count its query overdue at once, so a
 * silent host costs each node one wait, not one per lookup and path.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Fiber, FiberSet, Queue, type Scope } from "effect"
import type { Contact } from "../core/Contact.js"
import { meetsIdPuzzle } from "../core/IdPuzzle.js"
import type { Key, NodeId } from "../core/Id.js"
import {
  type DisjointLookup,
  type DisjointResult,
  nextDisjointStep,
  onDisjointAbandoned,
  onDisjointFailure,
  onDisjointResponse,
  startDisjointLookup
} from "../core/DisjointLookup.js"
import type { LookupKind, LookupResponse, LookupResult, LookupStats } from "../core/Lookup.js"
import { RttEstimator, type RttStats } from "../core/RttEstimator.js"
import { isUnanswered, makeUnansweredPeers, noteAnswered, noteUnanswered } from "../core/UnansweredPeers.js"
import { acceptUserRecord, type ClaimRules, type UserRecord, type VerifySignature } from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { NodeConfig } from "./NodeConfig.js"
import { type AuthenticatedPeer, FindNode, FindValue } from "./Protocol.js"
import { Routing } from "./Routing.js"
import { failureCountsAgainstPeer, Transport, type TransportError } from "./Transport.js"

/** Decides whether a record found under a key may be returned; an invalid one counts as a `Closer` answer. */
export type RecordValidator = (record: UserRecord, now: number) => boolean

/**
 * The standard check of a record found under `key`: it sits under its own
 * user key, and would be accepted by an empty store (valid node id and
 * signature, live, sane lifetime, a name claim with enough work).
 */
export const validRecordAt = (key: Key, verify: VerifySignature, claim: ClaimRules): RecordValidator => (record, now) =>
  userKey(record.username) === key &&
  acceptUserRecord({ incoming: record, stored: undefined, now, verify, claim })._tag === "Right"

/** What the lookups service offers. */
export interface LookupsService {
  /** The k closest live nodes to `target` (never this node), with the lookup's statistics. */
  readonly findNode: (target: Key) => Effect.Effect<LookupResult<never>>
  /**
   * The record stored under `key`, if a node on the way holds one that
   * `validate` accepts; otherwise behaves like `findNode`.
   */
  readonly findValue: (key: Key, validate: RecordValidator) => Effect.Effect<LookupResult<UserRecord>>
  /** The k closest live nodes to `target`, found over `disjointPaths` disjoint paths (S/Kademlia). */
  readonly findNodeDisjoint: (target: Key) => Effect.Effect<ReadonlyArray<Contact>>
  /**
   * The valid records held under `key` by the k closest nodes, found over
   * `disjointPaths` disjoint paths (S/Kademlia) without stopping at the
   * first copy: records met farther away are ignored, so a node on the way
   * cannot answer for the name.
   */
  readonly gatherRecords: (key: Key, validate: RecordValidator) => Effect.Effect<GatheredRecords>
  /** How long a lookup now waits on `peer` before moving on, and what it measured (for diagnostics and tests). */
  readonly queryTimeout: (peer: NodeId) => Effect.Effect<QueryTimeout>
}

/** A record held by one of the k closest nodes of its key. */
export interface HeldRecord {
  readonly nodeId: NodeId
  readonly record: UserRecord
}

/** What a gathering lookup found: the k closest nodes that answered, what they hold, and the lookup's statistics. */
export interface GatheredRecords {
  readonly closest: ReadonlyArray<Contact>
  readonly records: ReadonlyArray<HeldRecord>
  readonly stats: LookupStats
}

/** A lookup's current wait for one peer and the round-trip times behind it. */
export interface QueryTimeout {
  /** After this many ms without an answer the query is overdue (the call timeout when adaptive timeouts are off). */
  readonly overdueAfterMs: number
  /** The peer's smoothed RTT and variation, if remembered. */
  readonly peer: RttStats | undefined
  /** The same over all peers, used for peers never measured; undefined before any answer. */
  readonly network: RttStats | undefined
}

/** What a query fiber reports to the lookup loop. */
type QueryOutcome<V> =
  | { readonly _tag: "Answered"; readonly path: number; readonly peer: Contact; readonly response: LookupResponse<V> }
  | { readonly _tag: "Failed"; readonly path: number; readonly peer: Contact }

/**
 * What wakes the lookup loop: a query's outcome, the alarm of the earliest
 * deadline, or the node stopping.
 */
type LookupEvent<V> = QueryOutcome<V> | { readonly _tag: "Alarm" } | { readonly _tag: "Stopped" }

const STOPPED = { _tag: "Stopped" } as const

/** Runs iterative lookups for this node. */
export class Lookups extends Context.Tag("peerchat/Lookups")<Lookups, LookupsService>() {
  /** Builds the service over the node's transport and routing table; queries still running when the scope closes are interrupted. */
  static readonly make: Effect.Effect<LookupsService, never, NodeConfig | Routing | Transport | Scope.Scope> = Effect.gen(function*() {
    const config = yield* NodeConfig
    // Bound: each lookup adds at most maxLookupQueries fibers, each gone within the call timeout.
    const queries = yield* FiberSet.make<void>()
    // Set when the node stops, before the query fibers are interrupted (finalizers run last
    // added first), and every running lookup is woken. A caller outside the node's scope (the
    // simulator, a test) may still be waiting on a lookup whose queries will never report: the
    // loop fails them itself. Bound: one entry per running lookup.
    let stopped = false
    const wakeOnStop = new Set<() => void>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        stopped = true
        for (const wake of wakeOnStop) wake()
      })
    )
    const routing = yield* Routing
    const transport = yield* Transport
    const timeoutMs = Duration.toMillis(config.callTimeout)
    const lookupConfig = {
      k: config.k,
      alpha: config.alpha,
      queryTimeoutMs: timeoutMs,
      maxQueries: config.maxLookupQueries,
      maxPerGroup: config.maxPerNetwork
    }
    // Mutable, owned by this service alone; its methods are synchronous, hence atomic
    // between fibers. Bound: rttPeersRemembered peers.
    const rtt = new RttEstimator({
      minMs: Duration.toMillis(config.minQueryOverdue),
      maxMs: timeoutMs,
      capacity: config.rttPeersRemembered
    })
    // Peers whose last query went unanswered (core UnansweredPeers): asked, but not waited for.
    // Replaced only inside Effect.sync, so atomic between fibers. Bound: 256 peers.
    let unanswered = makeUnansweredPeers()
    // Read when each query is sent, so a lookup uses what was learned up to that moment.
    const timeoutAt = (now: number) =>
      config.adaptiveTimeouts
        ? (peer: Contact) => (isUnanswered(unanswered, peer.nodeId, now) ? 0 : rtt.overdueAfter(peer.nodeId))
        : undefined
    /** Records an answer's round-trip time (only answers: a failure or timeout is no sample, see RttEstimator). */
    const recordAnswer = (peer: Contact, sentAt: number): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          unanswered = noteAnswered(unanswered, peer.nodeId)
          if (config.adaptiveTimeouts) rtt.record(peer.nodeId, now - sentAt)
        }))
    /** Remembers a peer that timed out or could not be reached (not one that refused: it is alive). */
    const recordUnanswered = (peer: Contact, error: TransportError): Effect.Effect<void> =>
      error.reason === "Timeout" || error.reason === "Unreachable"
        ? Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            unanswered = noteUnanswered(unanswered, peer.nodeId, now)
          }))
        : Effect.void

    /**
     * Asks `peer` and reports the outcome on `outcomes`. Routing learns about
     * the peer either way: an answer proves it alive, a transport failure counts
     * against it (a refusal does not: the peer is alive, only busy). An
     * answer's round-trip time feeds the estimator, even when the lookup has
     * moved on or finished.
     */
    const query = <V>(
      path: number,
      peer: Contact,
      ask: (peer: Contact) => Effect.Effect<{ readonly response: LookupResponse<V>; readonly proven: Contact }, unknown>,
      outcomes: Queue.Enqueue<QueryOutcome<V>>
    ): Effect.Effect<void> =>
      Effect.flatMap(Clock.currentTimeMillis, (sentAt) =>
        ask(peer).pipe(
          Effect.matchEffect({
            onSuccess: ({ proven, response }) =>
              recordAnswer(peer, sentAt).pipe(
                Effect.zipRight(routing.observe(proven)),
                Effect.zipRight(Queue.offer(outcomes, { _tag: "Answered", path, peer, response }))
              ),
            onFailure: (error) =>
              Effect.zipRight(
                failureCountsAgainstPeer(error)
                  ? Effect.zipRight(recordUnanswered(peer, error), routing.recordFailure(peer.nodeId, peer.address))
                  : Effect.void,
                Queue.offer(outcomes, { _tag: "Failed", path, peer })
              )
          }),
          Effect.asVoid
        ))

    /**
     * Runs a lookup of `target` over `pathCount` disjoint paths (one for a
     * plain Kademlia lookup): the core decides whom each path asks, this loop
     * sends the queries and feeds answers, failures and deadlines back.
     */
    const runPaths = <V>(
      kind: LookupKind,
      target: Key,
      pathCount: number,
      ask: (peer: Contact) => Effect.Effect<{ readonly response: LookupResponse<V>; readonly proven: Contact }, unknown>
    ): Effect.Effect<DisjointResult<V>> =>
      Effect.scoped(Effect.gen(function*() {
        // Disjoint paths split the local table's closest between them: ask for k per path.
        const seeds = yield* routing.closest(target, config.k * pathCount)
        let lookup: DisjointLookup<V> = startDisjointLookup<V>({
          target,
          kind,
          seeds,
          paths: pathCount,
          self: routing.self,
          config: lookupConfig
        })
        // Each query offers exactly one outcome and each alarm at most one tick, so the
        // queue holds at most pathCount * maxLookupQueries + 1 items.
        const events = yield* Queue.unbounded<LookupEvent<V>>()
        const wake = () => void Queue.unsafeOffer(events, STOPPED)
        yield* Effect.acquireRelease(
          Effect.sync(() => wakeOnStop.add(wake)),
          () => Effect.sync(() => wakeOnStop.delete(wake))
        )
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
          else if (event._tag === "Stopped") lookup = onDisjointAbandoned(lookup, now)
          else if (event._tag === "Answered") {
            lookup = onDisjointResponse(lookup, event.path, event.peer.nodeId, event.response, now)
          } else lookup = onDisjointFailure(lookup, event.path, event.peer.nodeId, now)
        }
        while (true) {
          const now = yield* Clock.currentTimeMillis
          const step = nextDisjointStep(lookup, now, timeoutAt(now))
          lookup = step.lookup
          const action = step.action
          if (action._tag === "Finished") return action.result
          if (action._tag === "Query") {
            // Query fibers outlive the lookup (each for at most the call timeout), so
            // that a straggler's late answer or timeout still reaches Routing.
            // A stopped node's transport is closed and its fiber set runs nothing: such queries fail now.
            if (stopped) lookup = onDisjointAbandoned(lookup, now)
            else for (const { path, peer } of action.queries) yield* FiberSet.run(queries, query(path, peer, ask, events))
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

    /** A plain Kademlia lookup: one path. */
    const run = <V>(
      kind: LookupKind,
      target: Key,
      ask: (peer: Contact) => Effect.Effect<{ readonly response: LookupResponse<V>; readonly proven: Contact }, unknown>
    ): Effect.Effect<LookupResult<V>> =>
      // One path is exactly one Lookup: it has a result once the disjoint lookup finished.
      Effect.map(runPaths(kind, target, 1, ask), (result) => result.paths[0] as LookupResult<V>)

    /**
     * The contacts of an answer whose ids solve the id puzzle: the others are
     * cheap to make and place near any key, so a lookup never asks them.
     */
    const believable = (contacts: ReadonlyArray<Contact>): ReadonlyArray<Contact> =>
      config.idPuzzleBits === 0 ? contacts : contacts.filter((contact) => meetsIdPuzzle(contact.nodeId, config.idPuzzleBits))

    /**
     * The contact as the transport proved it (its id and advertised address), not as we had
     * heard of it. The transport's own peer value is a contact already (a plain id and address,
     * one per connection or endpoint); keeping it rather than a copy lets every routing entry
     * of that peer share one object, which matters with thousands of nodes in one process.
     */
    const proven = (answer: { readonly peer: AuthenticatedPeer }): Contact => answer.peer

    return {
      queryTimeout: (peer) =>
        Effect.sync(() => ({
          overdueAfterMs: config.adaptiveTimeouts ? rtt.overdueAfter(peer) : timeoutMs,
          peer: rtt.statsOf(peer),
          network: rtt.networkStats
        })),
      findNode: (target) =>
        run<never>("FindNode", target, (peer) =>
          transport.send(peer, new FindNode({ target }), { timeout: config.callTimeout }).pipe(
            Effect.map((answer) => ({
              response: { _tag: "Closer", contacts: believable(answer.value.contacts) } as const,
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
                  ? { _tag: "Value", value: found.record, contacts: believable(found.contacts) }
                  : { _tag: "Closer", contacts: believable(found.contacts) }
                return { response, proven: proven(answer) }
              })
            )
          )),
      findNodeDisjoint: (target) =>
        Effect.map(
          runPaths<never>("FindNode", target, config.disjointPaths, (peer) =>
            transport.send(peer, new FindNode({ target }), { timeout: config.callTimeout }).pipe(
              Effect.map((answer) => ({
                response: { _tag: "Closer", contacts: believable(answer.value.contacts) } as const,
                proven: proven(answer)
              }))
            )),
          (result) => result.closest
        ),
      gatherRecords: (key, validate) =>
        Effect.gen(function*() {
          // Bound: two records per peer asked (at most disjointPaths * maxLookupQueries).
          const held = new Map<NodeId, ReadonlyArray<UserRecord>>()
          const result = yield* runPaths<never>("FindNode", key, config.disjointPaths, (peer) =>
            transport.send(peer, new FindValue({ key }), { timeout: config.callTimeout }).pipe(
              Effect.map((answer) => {
                const found = answer.value
                // The records are noted, and the path goes on to the closest nodes either way: a
                // copy met on the way is not the answer. They are checked later, and only the k
                // closest's: a check may cost a memory-hard hash, and others do not speak for the name.
                if (found._tag === "Found") {
                  held.set(answer.peer.nodeId, [found.record, ...(found.rival === undefined ? [] : [found.rival])])
                }
                return { response: { _tag: "Closer", contacts: believable(found.contacts) } as const, proven: proven(answer) }
              })
            ))
          const closest = new Set(result.closest.map((contact) => contact.nodeId))
          const records: Array<HeldRecord> = []
          const now = yield* Clock.currentTimeMillis
          for (const [nodeId, claims] of held) {
            if (!closest.has(nodeId)) continue
            for (const record of claims) if (validate(record, now)) records.push({ nodeId, record })
          }
          return { closest: result.closest, records, stats: result.stats }
        })
    }
  })
}
