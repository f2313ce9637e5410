/**
 * S/Kademlia's lookup over `d` disjoint paths (Baumgart and Mies, 2007), as
 * a pure state machine over `d` ordinary `Lookup`s. The seeds (the k closest
 * contacts of the local table) are dealt round-robin to the paths, and every
 * peer is queried by at most one path: a peer that one path has claimed is
 * skipped by the others. A hostile node can then only steer the paths it is
 * on; as long as one path reaches the target's neighbourhood through honest
 * nodes, the merged result contains the honest k closest. Readers of a name
 * use it to gather what the k closest hold, so one liar on the way cannot
 * decide the answer.
 *
 * Each path keeps its own alpha queries in flight (d · alpha in all): the
 * paths run side by side, so a disjoint lookup takes about as many round
 * trips as a plain one.
 *
 * Disjointness is about whom a path asks and whose contacts it follows, not
 * about when it stops. A peer another path owns stays in this path's window
 * as `Elsewhere`: it counts as answered once it answered there, as pending
 * while its query is in flight there, and as failed otherwise; its contacts
 * never reach this path. A path is then done once the k closest peers it
 * knows have answered on some path, so the d paths together need about the
 * k closest live peers, not k of their own each (about 3k at d = 3: with
 * 30 % of the peers silent, a resolve over 1,000 simulated nodes sent 158
 * queries and each path waited out wave after wave of silent peers far
 * from the target). What a hostile peer can steer is unchanged: only the
 * path that asked it follows its contacts, and the merged result is still
 * the k closest peers that answered on any path.
 *
 * The shell drives it like a `Lookup`: `nextDisjointStep` says which peer to
 * query on which path (or how long to wait, or that all paths are done), and
 * answers and failures are fed back per path.
 *
 * @since 0.2.0
 */
import type { Contact } from "./Contact.js"
import { compareDistance } from "./Distance.js"
import type { Key, NodeId } from "./Id.js"
import {
  type Lookup,
  type LookupConfig,
  type LookupKind,
  type LookupResponse,
  type LookupResult,
  type LookupStats,
  type ElsewhereState,
  nextLookupStep,
  nextWakeOf,
  onLookupElsewhere,
  onLookupFailure,
  onLookupResponse,
  onLookupTimeout,
  startLookup
} from "./Lookup.js"

/** The state of a lookup over disjoint paths: an immutable value, replaced by every call. */
export interface DisjointLookup<V> {
  readonly target: Key
  readonly self: NodeId | undefined
  readonly k: number
  /** One lookup per path. */
  readonly paths: ReadonlyArray<Lookup<V>>
  /** Which path claimed each peer it queried (or was seeded with): a peer belongs to one path only. */
  readonly owner: ReadonlyMap<NodeId, number>
  /** Queries a path gave up because another path owns the peer (never sent, not counted as sent or failed). */
  readonly skipped: number
}

/** A query the shell must send: `peer` on behalf of path `path`. */
export interface PathQuery {
  readonly path: number
  readonly peer: Contact
}

/** What the shell should do next. */
export type DisjointAction<V> =
  | { readonly _tag: "Query"; readonly queries: ReadonlyArray<PathQuery> }
  | { readonly _tag: "Waiting"; readonly nextDeadline: number | undefined }
  | { readonly _tag: "Finished"; readonly result: DisjointResult<V> }

/** The merged outcome of every path. */
export interface DisjointResult<V> {
  readonly target: Key
  /** The k closest peers that answered on any path, closest first, distinct. */
  readonly closest: ReadonlyArray<Contact>
  /** Each path's own result. */
  readonly paths: ReadonlyArray<LookupResult<V>>
  /** Summed statistics; `hops` and `rounds` are the largest of any path. */
  readonly stats: LookupStats
}

/** The new state and the action it asks for. */
export interface DisjointStep<V> {
  readonly lookup: DisjointLookup<V>
  readonly action: DisjointAction<V>
}

/**
 * Starts `paths` disjoint lookups of `target`. The seeds, closest first,
 * are dealt round-robin (seed i to path i mod d), so every path starts from
 * its own share of the local table's closest contacts. With fewer seeds than
 * paths, the extra paths start empty and finish at once. `kind` is passed to
 * every path: gather values with "FindNode" (feeding values as contacts) so
 * that no path stops at the first copy.
 */
export const startDisjointLookup = <V>(options: {
  readonly target: Key
  readonly kind: LookupKind
  readonly seeds: ReadonlyArray<Contact>
  readonly paths: number
  readonly self?: NodeId
  readonly config?: Partial<LookupConfig>
}): DisjointLookup<V> => {
  if (!Number.isInteger(options.paths) || options.paths < 1) {
    throw new RangeError(`a disjoint lookup needs a positive integer number of paths, got ${options.paths}`)
  }
  const seeds = options.seeds
    .filter((contact, index, all) =>
      contact.nodeId !== options.self && all.findIndex((other) => other.nodeId === contact.nodeId) === index
    )
    .slice()
    .sort((a, b) => compareDistance(options.target, a.nodeId, b.nodeId))
  const shares: Array<Array<Contact>> = Array.from({ length: options.paths }, () => [])
  const owner = new Map<NodeId, number>()
  seeds.forEach((contact, index) => {
    const path = index % options.paths
    ;(shares[path] as Array<Contact>).push(contact)
    owner.set(contact.nodeId, path)
  })
  const paths = shares.map((share) =>
    startLookup<V>({
      target: options.target,
      kind: options.kind,
      seeds: share,
      ...(options.self === undefined ? {} : { self: options.self }),
      ...(options.config === undefined ? {} : { config: options.config })
    })
  )
  const k = paths[0]?.config.k ?? 1
  return { target: options.target, self: options.self, k, paths, owner, skipped: 0 }
}

const replacePath = <V>(paths: ReadonlyArray<Lookup<V>>, index: number, path: Lookup<V>): ReadonlyArray<Lookup<V>> => {
  const next = paths.slice()
  next[index] = path
  return next
}

/**
 * Decides what to do at `now` on every path. A peer a path wants to query
 * that another path owns is skipped on that path (it stands there as
 * `Elsewhere`, read from the owner's state) and the path is asked again; a
 * peer nobody owns is claimed. Call it again after every event.
 */
export const nextDisjointStep = <V>(
  lookup: DisjointLookup<V>,
  now: number,
  timeoutFor?: (peer: Contact) => number | undefined
): DisjointStep<V> => {
  // Deadlines first, on every path: a path reads the others' states, which must be those of `now`.
  let paths: ReadonlyArray<Lookup<V>> = lookup.paths.map((path) => onLookupTimeout(path, now))
  const owner = new Map(lookup.owner)
  let skipped = lookup.skipped
  const queries: Array<PathQuery> = []
  let nextDeadline: number | undefined
  // How a peer another path owns stands there, read from that path's current state.
  const elsewhere = (peer: NodeId): ElsewhereState => {
    const claimedBy = owner.get(peer)
    const there = claimedBy === undefined ? undefined : paths[claimedBy]
    const state = there === undefined ? undefined : stateOf(there, peer)
    // A finished path takes no more answers: what is still in flight there will never count.
    return state === "Succeeded" ? "Answered" : state === "InFlight" && there?.result === undefined ? "Pending" : "NotLive"
  }
  const finishedPaths = () => paths.filter((path) => path.result !== undefined).length
  // A path that finishes can end another's wait (what was in flight there stops counting), so the
  // paths are asked again after a pass in which one finished: at most d passes.
  for (let pass = 0; pass < paths.length; pass++) {
    const finishedBefore = finishedPaths()
    nextDeadline = undefined
    for (let index = 0; index < paths.length; index++) {
      // Each round either sends, or skips at least one peer of this path; a path has finitely many.
      for (;;) {
        const step = nextLookupStep(paths[index] as Lookup<V>, now, timeoutFor, elsewhere)
        let path = step.lookup
        if (step.action._tag === "Finished") {
          paths = replacePath(paths, index, path)
          break
        }
        if (step.action._tag === "Waiting") {
          paths = replacePath(paths, index, path)
          const deadline = step.action.nextDeadline
          if (deadline !== undefined && (nextDeadline === undefined || deadline < nextDeadline)) nextDeadline = deadline
          break
        }
        let skippedHere = 0
        for (const peer of step.action.peers) {
          const claimedBy = owner.get(peer.nodeId)
          if (claimedBy !== undefined && claimedBy !== index) {
            path = onLookupElsewhere(path, peer.nodeId)
            skippedHere++
          } else {
            owner.set(peer.nodeId, index)
            queries.push({ path: index, peer })
          }
        }
        paths = replacePath(paths, index, path)
        skipped += skippedHere
        if (skippedHere === 0) {
          // Everything it asked for is sent; ask the path again only after the next event.
          const deadline = nextWakeOf(path, now)
          if (deadline !== undefined && (nextDeadline === undefined || deadline < nextDeadline)) nextDeadline = deadline
          break
        }
      }
    }
    const finished = finishedPaths()
    if (finished === finishedBefore || finished === paths.length) break
  }
  const next: DisjointLookup<V> = { ...lookup, paths, owner, skipped }
  if (queries.length > 0) return { lookup: next, action: { _tag: "Query", queries } }
  if (finishedPaths() === paths.length) return { lookup: next, action: { _tag: "Finished", result: mergeResults(next) } }
  return { lookup: next, action: { _tag: "Waiting", nextDeadline } }
}

/** The state of `peer` among the candidates of `path`, if it is one (a binary search by distance). */
const stateOf = <V>(path: Lookup<V>, peer: NodeId): Lookup<V>["candidates"][number]["state"] | undefined => {
  const { candidates, target } = path
  let lo = 0
  let hi = candidates.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareDistance(target, (candidates[mid] as Lookup<V>["candidates"][number]).contact.nodeId, peer) < 0) lo = mid + 1
    else hi = mid
  }
  const found = candidates[lo]
  return found !== undefined && found.contact.nodeId === peer ? found.state : undefined
}

/** Records the answer `peer` gave on `path` (ignored for a path out of range). */
export const onDisjointResponse = <V>(
  lookup: DisjointLookup<V>,
  path: number,
  peer: NodeId,
  response: LookupResponse<V>,
  now: number
): DisjointLookup<V> => {
  const current = lookup.paths[path]
  if (current === undefined) return lookup
  return { ...lookup, paths: replacePath(lookup.paths, path, onLookupResponse(current, peer, response, now)) }
}

/** Records that the query to `peer` on `path` failed. */
export const onDisjointFailure = <V>(
  lookup: DisjointLookup<V>,
  path: number,
  peer: NodeId,
  now: number
): DisjointLookup<V> => {
  const current = lookup.paths[path]
  if (current === undefined) return lookup
  return { ...lookup, paths: replacePath(lookup.paths, path, onLookupFailure(current, peer, now)) }
}

/**
 * Records that every query still out on any path (in flight, or overdue and
 * still waiting for its call to end) failed: the shell will hear from none
 * of them (its node stopped, ending the calls). The lookup then finishes on
 * what it has at its next step.
 */
export const onDisjointAbandoned = <V>(lookup: DisjointLookup<V>, now: number): DisjointLookup<V> => {
  let next = lookup
  lookup.paths.forEach((path, index) => {
    for (const { contact, state } of path.candidates) {
      if (state === "InFlight" || state === "Overdue") next = onDisjointFailure(next, index, contact.nodeId, now)
    }
  })
  return next
}

const mergeResults = <V>(lookup: DisjointLookup<V>): DisjointResult<V> => {
  const results = lookup.paths.map((path) => path.result as LookupResult<V>)
  const seen = new Set<NodeId>()
  const answered: Array<Contact> = []
  for (const result of results) {
    for (const contact of result.closest) {
      if (seen.has(contact.nodeId)) continue
      seen.add(contact.nodeId)
      answered.push(contact)
    }
  }
  answered.sort((a, b) => compareDistance(lookup.target, a.nodeId, b.nodeId))
  const sum = (field: "messagesSent" | "responses" | "failures" | "timeouts") =>
    results.reduce((total, result) => total + result.stats[field], 0)
  return {
    target: lookup.target,
    closest: answered.slice(0, lookup.k),
    paths: results,
    stats: {
      messagesSent: sum("messagesSent"),
      responses: sum("responses"),
      failures: sum("failures"),
      timeouts: sum("timeouts"),
      hops: Math.max(0, ...results.map((result) => result.stats.hops)),
      rounds: Math.max(0, ...results.map((result) => result.stats.rounds))
    }
  }
}
