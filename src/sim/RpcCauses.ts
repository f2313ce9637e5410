/**
 * Why each RPC of a simulated run was sent. The network's own counter says
 * only which request was sent (`sentByTag`); the load of a churning network
 * needs more: is it the lookups, the rejoins, the pings that answers set
 * off, the dial-backs of callers? This module tags every call with
 *
 * - its **origin**, a `FiberRef` the experiment sets around its work
 *   (`withRpcOrigin`: "lookup", "resolution", "delivery") and every node's
 *   session otherwise ("session", or "rejoin" during the first minute of a
 *   session: the join's pings, self lookup, bucket refreshes, hand-overs,
 *   republication and mailbox pull). Forked fibers inherit a `FiberRef`, so
 *   a routing-table ping that a lookup's answer set off counts as the
 *   lookup's; and the in-memory network runs the callee's handler in the
 *   caller's fiber, so a dial-back that a callee starts on a lookup's query
 *   counts as the lookup's too;
 * - the request **kind**, refined where one tag serves several purposes:
 *   a Ping with the dial-back timeout is a caller's address check
 *   (`Routing.observeCaller`), a Ping sent while answering a DialBack is a
 *   reachability check; a FindNode of the caller's own id is a self lookup,
 *   of a registered user's key a publication or replication, of any other
 *   key a bucket refresh;
 * - the handler it was sent from ("← FindValue": sent while answering one).
 *
 * Nothing here draws from `Random` or sleeps, so a seed's run is unchanged
 * by counting.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, FiberRef } from "effect"
import { DIAL_BACK_TIMEOUT_MS } from "../node/Routing.js"
import type { MemoryNetworkService } from "../platform/MemoryTransport.js"

/** Who set a call off, as far as the experiment knows. */
export type RpcOrigin = "session" | "lookup" | "resolution" | "delivery"

/**
 * Where the current fiber's calls are counted (inherited by the fibers it
 * forks): their origin, and a tally of the calls made under it (one per
 * lookup of the experiment, so each lookup's cost is known on its own).
 */
export interface RpcTally {
  readonly origin: RpcOrigin
  /** When the tally began (a session's start: its first minute is its rejoin). */
  readonly startedAt: number
  /** Calls counted under this tally so far. */
  sent: number
}

const originRef = FiberRef.unsafeMake<RpcTally>({ origin: "session", startedAt: Number.NEGATIVE_INFINITY, sent: 0 })

/** The request whose handler the current fiber runs in, if any. */
const handlingRef = FiberRef.unsafeMake<string | undefined>(undefined)

/** A fresh tally for calls of `origin`, begun now. */
export const makeRpcTally = (origin: RpcOrigin): Effect.Effect<RpcTally> =>
  Effect.map(Clock.currentTimeMillis, (startedAt) => ({ origin, startedAt, sent: 0 }))

/** Runs `effect` with its calls (and those of the fibers it forks) counted in `tally`. */
export const withRpcTally = (tally: RpcTally) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locally(effect, originRef, tally)

/** Runs `effect` with its calls (and those of the fibers it forks) counted under `origin`. */
export const withRpcOrigin = (origin: RpcOrigin) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(makeRpcTally(origin), (tally) => Effect.locally(effect, originRef, tally))

/** A session's first minute is its rejoin: pings of remembered peers, self lookup, refreshes, republication. */
export const REJOIN_WINDOW_MS = 60_000

/** The counts of a run, by "origin: kind ← handler". */
export type RpcCauseCounts = Readonly<Record<string, number>>

/** Counts calls by cause; see the module comment. */
export interface RpcCauses {
  /** Keys of registered users: a FindNode of one is a publication or replication. */
  readonly noteRecordKeys: (keys: Iterable<string>) => void
  /** Counts since the network was made, by cause. */
  readonly counts: () => RpcCauseCounts
  /** Wraps a network so that each call it sends is counted. */
  readonly instrument: (network: MemoryNetworkService) => MemoryNetworkService
}

/** The request's field that FindNode targets, read without trusting its shape. */
const targetOf = (request: object): string | undefined =>
  "target" in request && typeof request.target === "string" ? request.target : undefined

/** Makes a counter; see `RpcCauses`. */
export const makeRpcCauses = (): RpcCauses => {
  // Bound: one entry per cause label (a few dozen) and per registered user.
  const counts = new Map<string, number>()
  const recordKeys = new Set<string>()

  const kindOf = (tag: string, request: object, caller: string, timeout: Duration.Duration, within: string | undefined): string => {
    if (tag === "Ping") {
      if (within === "DialBack") return "Ping (reachability dial-back)"
      return Duration.toMillis(timeout) === DIAL_BACK_TIMEOUT_MS ? "Ping (dial-back of a caller)" : "Ping"
    }
    if (tag === "FindNode") {
      const target = targetOf(request)
      if (target === caller) return "FindNode (self lookup)"
      if (target !== undefined && recordKeys.has(target)) return "FindNode (record key)"
      return "FindNode (refresh)"
    }
    return tag
  }

  return {
    noteRecordKeys: (keys) => {
      for (const key of keys) recordKeys.add(key)
    },
    counts: () => Object.fromEntries([...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
    instrument: (network) => ({
      ...network,
      call: (from, peer, request, timeout, callOptions) =>
        Effect.flatMap(FiberRef.get(originRef), (tally) =>
          Effect.flatMap(FiberRef.get(handlingRef), (within) =>
            Effect.flatMap(Clock.currentTimeMillis, (now) => {
              // Counted as the network counts: only what an online node sends.
              if (from.online) {
                tally.sent++
                // The session whose work this is (not the sender's, for a callee's dial-back).
                const who = tally.origin === "session" && now - tally.startedAt < REJOIN_WINDOW_MS ? "rejoin" : tally.origin
                const label = `${who}: ${kindOf(request._tag, request, from.peer.nodeId, timeout, within)}` +
                  (within === undefined ? "" : ` ← ${within}`)
                counts.set(label, (counts.get(label) ?? 0) + 1)
              }
              return Effect.locally(network.call(from, peer, request, timeout, callOptions), handlingRef, request._tag)
            })))
    })
  }
}

/** The total of the counts whose origin (the label's part before ":") is `origin`. */
export const totalOf = (counts: RpcCauseCounts, origin: RpcOrigin | "rejoin"): number =>
  Object.entries(counts).reduce((sum, [label, count]) => (label.startsWith(`${origin}:`) ? sum + count : sum), 0)

/** `after` less `before`, label by label (labels that did not move left out). */
export const countsSince = (before: RpcCauseCounts, after: RpcCauseCounts): RpcCauseCounts =>
  Object.fromEntries(
    Object.entries(after).flatMap(([label, count]) => {
      const moved = count - (before[label] ?? 0)
      return moved > 0 ? [[label, moved]] : []
    })
  )
