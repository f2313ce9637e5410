/**
 * The iterative Kademlia lookup (FIND_NODE / FIND_VALUE) as a pure state
 * machine in the sans-IO style of rust-libp2p's `ClosestPeersIter`: the
 * lookup never sends anything itself. `nextLookupStep` says which peers to
 * query now (or how long to wait, or that it is done), and the shell feeds
 * back what happened with `onLookupResponse`, `onLookupFailure` and
 * `onLookupTimeout`. Every call takes the current time and returns a new
 * value, so a lookup runs the same under a real clock, a test clock or the
 * synchronous driver of `StaticNetwork`.
 *
 * Candidates are kept in one array sorted by distance to the target. Its size
 * is bounded by `maxCandidates` not-yet-queried peers plus at most
 * `maxQueries` queried ones, so every operation costs O(maxCandidates +
 * maxQueries) however many contacts adversarial peers send.
 *
 * @since 0.1.0
 */
import type { Contact } from "./Contact.js"
import { compareDistance } from "./Distance.js"
import type { Key, NodeId } from "./Id.js"
import { addressGroupOf } from "./AddressGroup.js"

/** Tunables of one lookup. */
export interface LookupConfig {
  /** Bucket size and result size: the lookup looks for the k closest nodes. */
  readonly k: number
  /** Number of live (not overdue) queries kept in flight. */
  readonly alpha: number
  /** Time after which an unanswered query is overdue, unless the shell passes a per-peer timeout. */
  readonly queryTimeoutMs: number
  /**
   * Hard bound on queries sent by one lookup, so that peers answering with
   * endless fresh contacts cannot keep it running forever.
   */
  readonly maxQueries: number
  /** Bound on remembered not-yet-queried candidates; the farthest beyond it are dropped. */
  readonly maxCandidates: number
  /**
   * Most candidates of one network (IPv4 /24, IPv6 /48) a lookup takes from
   * answers, so a crowd of ids on one network cannot fill its shortlist and
   * its result (Infinity: no cap).
   */
  readonly maxPerGroup: number
}

/**
 * Default `maxQueries` per unit of k. An honest lookup needs about k plus
 * alpha per hop (≈ 30-40 queries for k = 20 in 10,000 nodes) and a few dozen
 * more when many peers are offline; 16k leaves ample room for churn while
 * still cutting off an adversary after a few hundred queries.
 */
export const MAX_QUERIES_PER_K = 16

/** Default `maxCandidates` per unit of k: several responses' worth of backups for failing peers. */
export const MAX_CANDIDATES_PER_K = 8

/** Defaults from the Kademlia paper (k = 20, alpha = 3), with bounds derived from k. */
export const defaultLookupConfig: LookupConfig = {
  k: 20,
  alpha: 3,
  queryTimeoutMs: 2000,
  maxQueries: MAX_QUERIES_PER_K * 20,
  maxCandidates: MAX_CANDIDATES_PER_K * 20,
  maxPerGroup: Number.POSITIVE_INFINITY
}

const isPositiveInteger = (n: number): boolean => Number.isInteger(n) && n > 0

/**
 * Completes a partial configuration with the defaults. `maxQueries` and
 * `maxCandidates` default to multiples of the given k, not of the default k.
 * Throws a `RangeError` on a nonsensical configuration (a programming error).
 */
export const resolveLookupConfig = (partial: Partial<LookupConfig> = {}): LookupConfig => {
  const k = partial.k ?? defaultLookupConfig.k
  const config: LookupConfig = {
    k,
    alpha: partial.alpha ?? defaultLookupConfig.alpha,
    queryTimeoutMs: partial.queryTimeoutMs ?? defaultLookupConfig.queryTimeoutMs,
    maxQueries: partial.maxQueries ?? MAX_QUERIES_PER_K * k,
    maxCandidates: partial.maxCandidates ?? MAX_CANDIDATES_PER_K * k,
    maxPerGroup: partial.maxPerGroup ?? defaultLookupConfig.maxPerGroup
  }
  for (const name of ["k", "alpha", "maxQueries", "maxCandidates"] as const) {
    if (!isPositiveInteger(config[name])) {
      throw new RangeError(`lookup ${name} must be a positive integer, got ${config[name]}`)
    }
  }
  if (!(config.queryTimeoutMs >= 0)) {
    throw new RangeError(`lookup queryTimeoutMs must be >= 0, got ${config.queryTimeoutMs}`)
  }
  if (config.maxPerGroup !== Number.POSITIVE_INFINITY && !isPositiveInteger(config.maxPerGroup)) {
    throw new RangeError(`lookup maxPerGroup must be a positive integer or Infinity, got ${config.maxPerGroup}`)
  }
  if (config.maxCandidates < k) {
    throw new RangeError(`lookup maxCandidates (${config.maxCandidates}) must be at least k (${k})`)
  }
  return config
}

/** What a lookup looks for: the k closest nodes, or a value stored under the target. */
export type LookupKind = "FindNode" | "FindValue"

/**
 * Where a candidate stands. `Overdue` is an unanswered query past its
 * deadline: it no longer counts against alpha and counts as failed for
 * termination, but a late answer is still accepted. `Elsewhere` is a peer
 * another lookup of the same disjoint lookup queries (see `DisjointLookup`):
 * never queried here and never in this lookup's result, its answer's
 * contacts never reach this lookup, but for termination it stands as that
 * other lookup reports it (`elsewhere` of `nextLookupStep`).
 */
export type LookupPeerState = "Unqueried" | "InFlight" | "Overdue" | "Succeeded" | "Failed" | "Elsewhere"

/**
 * How a peer queried by another lookup stands for this one's termination:
 * it answered there, its query is in flight there (wait for it), or neither
 * (it failed, is overdue or was never queried: not live).
 */
export type ElsewhereState = "Answered" | "Pending" | "NotLive"

/** One peer the lookup knows of. */
export interface LookupCandidate {
  readonly contact: Contact
  /**
   * Hops from the seeds: 0 for a seed, d + 1 when first learned from a peer
   * at depth d. Lowered while unqueried if a shorter path shows up, then
   * frozen when the query is sent, so it counts the round trips that query
   * really waited for.
   */
  readonly depth: number
  readonly state: LookupPeerState
  /** When an `InFlight` query becomes overdue (ms); meaningless in other states. */
  readonly deadline: number
  /**
   * When an `InFlight` query stops holding one of the alpha slots (ms), at or
   * before `deadline` (see `SLOT_RELEASE_SHARE`); meaningless in other states.
   */
  readonly releaseAt: number
}

/** What a queried peer answered. An invalid value must be passed as `Closer` by the caller. */
export type LookupResponse<V> =
  | { readonly _tag: "Closer"; readonly contacts: ReadonlyArray<Contact> }
  | { readonly _tag: "Value"; readonly value: V; readonly contacts?: ReadonlyArray<Contact> }

/** Counters for the benchmarks. */
export interface LookupStats {
  /** Queries sent. */
  readonly messagesSent: number
  /** Answers accepted (including late ones). */
  readonly responses: number
  /** Queries that failed (error or refusal). */
  readonly failures: number
  /** Queries that became overdue (some may still have answered late). */
  readonly timeouts: number
  /**
   * For a found value: depth of the peer that returned it + 1 (a value at a
   * seed is 1 hop). Otherwise: 1 + the largest depth among `closest`, 0 when
   * it is empty.
   */
  readonly hops: number
  /** 1 + the largest depth of any peer queried: the sequential round trips; 0 if none was queried. */
  readonly rounds: number
}

/** The outcome of a finished lookup. */
export interface LookupResult<V> {
  readonly target: Key
  readonly kind: LookupKind
  /** Up to k peers that answered, closest to the target first. */
  readonly closest: ReadonlyArray<Contact>
  readonly value: V | undefined
  readonly valueFrom: Contact | undefined
  /**
   * FIND_VALUE with a value found: the closest peer that answered without the
   * value, where the shell caches it. Undefined otherwise.
   */
  readonly cacheAt: Contact | undefined
  readonly stats: LookupStats
}

/**
 * The state of one lookup: an immutable value, replaced by every call.
 * Fields are readable for diagnostics and tests; change them only through
 * the functions of this module.
 */
export interface Lookup<V> {
  readonly target: Key
  readonly kind: LookupKind
  /** The local node: never queried, never in the result. */
  readonly self: NodeId | undefined
  readonly config: LookupConfig
  /**
   * Known peers sorted by distance to the target, closest first, distinct by
   * node id. Bound: `maxCandidates` `Unqueried` entries plus at most
   * `maxQueries` queried ones.
   */
  readonly candidates: ReadonlyArray<LookupCandidate>
  readonly messagesSent: number
  readonly responses: number
  readonly failures: number
  readonly timeouts: number
  /** Largest depth among queried peers, -1 before the first query. */
  readonly maxQueriedDepth: number
  /**
   * Answers in a row that brought no candidate closer than every one known
   * (rust-libp2p's `num_no_progress`); reset by one that did.
   */
  readonly answersWithoutProgress: number
  /** Set once the lookup is finished; it never changes afterwards. */
  readonly result: LookupResult<V> | undefined
}

/** What the shell should do next. */
export type LookupAction<V> =
  /** Send a query to each of these peers now. */
  | { readonly _tag: "Query"; readonly peers: ReadonlyArray<Contact> }
  /** Wait for an answer, or until `nextDeadline` and then call `onLookupTimeout`. */
  | { readonly _tag: "Waiting"; readonly nextDeadline: number | undefined }
  /** The lookup is over; ignore any further answers. */
  | { readonly _tag: "Finished"; readonly result: LookupResult<V> }

/** The new lookup state and the action it asks for. */
export interface LookupStep<V> {
  readonly lookup: Lookup<V>
  readonly action: LookupAction<V>
}

// The callers below only index inside [0, length), which is why the casts are safe.
const candidateAt = (candidates: ReadonlyArray<LookupCandidate>, index: number): LookupCandidate =>
  candidates[index] as LookupCandidate
const contactAt = (contacts: ReadonlyArray<Contact>, index: number): Contact => contacts[index] as Contact

/**
 * The `limit` closest distinct contacts of `contacts` to `target`, closest
 * first, leaving out `exclude`. Keeps a sorted buffer of at most `limit`
 * entries, so it costs O(n log limit) comparisons plus small shifts and
 * never sorts the whole input.
 */
export const closestContacts = (
  target: Key,
  contacts: Iterable<Contact>,
  limit: number,
  exclude?: NodeId
): Array<Contact> => {
  const out: Array<Contact> = []
  if (limit <= 0) return out
  for (const contact of contacts) {
    if (contact.nodeId === exclude) continue
    if (out.length === limit && compareDistance(target, contact.nodeId, contactAt(out, limit - 1).nodeId) >= 0) {
      continue
    }
    let lo = 0
    let hi = out.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (compareDistance(target, contactAt(out, mid).nodeId, contact.nodeId) < 0) lo = mid + 1
      else hi = mid
    }
    // Equal distance to the target means the same node id: a duplicate.
    if (lo < out.length && contactAt(out, lo).nodeId === contact.nodeId) continue
    out.splice(lo, 0, contact)
    if (out.length > limit) out.pop()
  }
  return out
}

/**
 * Merges `incoming` (sorted, distinct) into `existing` (sorted, distinct) as
 * unqueried candidates at `depth`, keeping the first-learned address of a
 * known peer and the smaller depth of an unqueried one, then drops unqueried
 * candidates beyond the `maxUnqueried` closest.
 */
const mergeCandidates = (
  target: Key,
  existing: ReadonlyArray<LookupCandidate>,
  incoming: ReadonlyArray<Contact>,
  depth: number,
  maxUnqueried: number
): Array<LookupCandidate> => {
  const out: Array<LookupCandidate> = []
  let unqueried = 0
  const keep = (candidate: LookupCandidate): void => {
    if (candidate.state === "Unqueried") {
      if (unqueried >= maxUnqueried) return
      unqueried++
    }
    out.push(candidate)
  }
  let i = 0
  let j = 0
  while (i < existing.length || j < incoming.length) {
    if (j >= incoming.length) {
      keep(candidateAt(existing, i++))
      continue
    }
    const contact = contactAt(incoming, j)
    if (i >= existing.length) {
      keep({ contact, depth, state: "Unqueried", deadline: 0, releaseAt: 0 })
      j++
      continue
    }
    const known = candidateAt(existing, i)
    const order = compareDistance(target, known.contact.nodeId, contact.nodeId)
    if (order < 0) {
      keep(known)
      i++
    } else if (order > 0) {
      keep({ contact, depth, state: "Unqueried", deadline: 0, releaseAt: 0 })
      j++
    } else {
      keep(known.state === "Unqueried" && depth < known.depth ? { ...known, depth } : known)
      i++
      j++
    }
  }
  return out
}

/**
 * `incoming` without the new contacts whose network already holds
 * `maxPerGroup` candidates (counting `existing` and the new ones kept before
 * them, closest first). Contacts already among the candidates pass: merging
 * only refreshes them.
 */
// The network of a host, remembered: lookups ask it of every candidate on every answer.
// A cache of a pure function (bounded: cleared at 65,536 hosts), so results never depend on it.
const groupCache = new Map<string, string>()
const groupOf = (host: string): string => {
  let group = groupCache.get(host)
  if (group === undefined) {
    if (groupCache.size >= 65_536) groupCache.clear()
    group = addressGroupOf(host)
    groupCache.set(host, group)
  }
  return group
}

const withinGroupCap = (
  existing: ReadonlyArray<LookupCandidate>,
  incoming: ReadonlyArray<Contact>,
  maxPerGroup: number
): ReadonlyArray<Contact> => {
  if (maxPerGroup === Number.POSITIVE_INFINITY) return incoming
  const known = new Set<NodeId>()
  const counts = new Map<string, number>()
  for (const candidate of existing) {
    known.add(candidate.contact.nodeId)
    const group = groupOf(candidate.contact.address.host)
    counts.set(group, (counts.get(group) ?? 0) + 1)
  }
  return incoming.filter((contact) => {
    if (known.has(contact.nodeId)) return true
    const group = groupOf(contact.address.host)
    const count = counts.get(group) ?? 0
    if (count >= maxPerGroup) return false
    counts.set(group, count + 1)
    return true
  })
}

/** Index of `peer` among the candidates, or -1; a binary search by distance. */
const indexOfPeer = (lookup: Lookup<unknown>, peer: NodeId): number => {
  const { candidates, target } = lookup
  let lo = 0
  let hi = candidates.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareDistance(target, candidateAt(candidates, mid).contact.nodeId, peer) < 0) lo = mid + 1
    else hi = mid
  }
  return lo < candidates.length && candidateAt(candidates, lo).contact.nodeId === peer ? lo : -1
}

const replaceAt = <A>(items: ReadonlyArray<A>, index: number, item: A): Array<A> => {
  const copy = items.slice()
  copy[index] = item
  return copy
}

const isLive = (state: LookupPeerState): boolean => state !== "Failed" && state !== "Overdue" && state !== "Elsewhere"

/** Freezes the outcome of `lookup`, with the value (if any) and who returned it. */
const finish = <V>(lookup: Lookup<V>, found?: { readonly value: V; readonly from: LookupCandidate }): Lookup<V> => {
  const closest: Array<Contact> = []
  let maxClosestDepth = -1
  let cacheAt: Contact | undefined
  for (const candidate of lookup.candidates) {
    if (candidate.state !== "Succeeded") continue
    if (found !== undefined && cacheAt === undefined && candidate.contact.nodeId !== found.from.contact.nodeId) {
      cacheAt = candidate.contact
    }
    if (closest.length < lookup.config.k) {
      closest.push(candidate.contact)
      maxClosestDepth = Math.max(maxClosestDepth, candidate.depth)
    }
  }
  const result: LookupResult<V> = {
    target: lookup.target,
    kind: lookup.kind,
    closest,
    value: found?.value,
    valueFrom: found?.from.contact,
    cacheAt,
    stats: {
      messagesSent: lookup.messagesSent,
      responses: lookup.responses,
      failures: lookup.failures,
      timeouts: lookup.timeouts,
      hops: found !== undefined ? found.from.depth + 1 : maxClosestDepth + 1,
      rounds: lookup.maxQueriedDepth + 1
    }
  }
  return { ...lookup, result }
}

/** Starts a lookup of `target` from `seeds` (depth 0), typically the k closest of the local routing table. */
export const startLookup = <V>(options: {
  readonly target: Key
  readonly kind: LookupKind
  readonly seeds: ReadonlyArray<Contact>
  readonly self?: NodeId
  readonly config?: Partial<LookupConfig>
}): Lookup<V> => {
  const config = resolveLookupConfig(options.config)
  const seeds = closestContacts(options.target, options.seeds, config.maxCandidates, options.self)
  return {
    target: options.target,
    kind: options.kind,
    self: options.self,
    config,
    candidates: seeds.map((contact) => ({ contact, depth: 0, state: "Unqueried", deadline: 0, releaseAt: 0 })),
    messagesSent: 0,
    responses: 0,
    failures: 0,
    timeouts: 0,
    maxQueriedDepth: -1,
    answersWithoutProgress: 0,
    result: undefined
  }
}

/**
 * Whether a FIND_NODE lookup has stopped getting closer: alpha answers in a
 * row brought nobody closer than the closest known. It then queries every
 * unqueried peer of its window at once rather than alpha at a time — the
 * paper's last round ("resends the FIND_NODE to all of the k closest nodes
 * it has not already queried"; rust-libp2p's `Stalled` state). A FIND_NODE
 * lookup must hear from all k closest anyway, so this sends about the same
 * queries, in one round trip instead of k / alpha; with dead peers among
 * the k closest it waits out their deadlines side by side, not one after
 * the other (a resolve over 30 % silent peers took 2-3 s). A FIND_VALUE
 * lookup keeps alpha: it ends at the first copy, and a wide round would
 * send queries it never needs.
 */
export const isLookupStalled = <V>(lookup: Lookup<V>): boolean =>
  lookup.kind === "FindNode" && lookup.answersWithoutProgress >= lookup.config.alpha

/**
 * How many live candidates past its window a stalled lookup queries too: the
 * window's k times the odds that a query goes unanswered, as this lookup has
 * seen them (overdue against answered; failures do not count, as a disjoint
 * path records a peer another path owns as one; none before a query went
 * overdue, so a calm network pays nothing), at most k. With 30 % of the
 * peers silent, the window's silent members are only found out at their
 * deadlines, and their replacements queried then meet silent ones in turn:
 * each wave costs an overdue time. Asking the expected replacements at once
 * overlaps the waves, for about the queries the waves would have sent.
 */
export const hedgeOf = <V>(lookup: Lookup<V>): number => {
  const unanswered = lookup.timeouts
  const settled = lookup.responses + unanswered
  if (unanswered === 0 || settled === 0) return 0
  const share = unanswered / settled
  return share >= 0.5 ? lookup.config.k : Math.min(lookup.config.k, Math.ceil((lookup.config.k * share) / (1 - share)))
}

/**
 * The share of a query's overdue time after which it stops holding one of
 * the alpha slots, while it still counts as pending for termination until
 * the overdue time itself. The two waits do different jobs: a slot held by
 * a silent peer stalls the walk towards the target, and freeing it early
 * costs at most one extra query to a peer that would have answered; leaving
 * a slow peer out of the window loses its answer from the result, so that
 * wait stays long (srtt + 3·rttvar). At 0.6 a slot frees after about
 * srtt + 1.2·rttvar of the typical peer. Only for a per-peer estimate
 * (`timeoutFor`): a query on the fixed `queryTimeoutMs` holds its slot
 * until its deadline, as with adaptive timeouts off.
 */
export const SLOT_RELEASE_SHARE = 0.6

/**
 * When `lookup` next needs to be asked again without an answer: the
 * earliest slot release or deadline of a query in flight still ahead of
 * `now`; undefined when none is in flight.
 */
export const nextWakeOf = <V>(lookup: Lookup<V>, now: number): number | undefined => {
  let wake: number | undefined
  for (const candidate of lookup.candidates) {
    if (candidate.state !== "InFlight") continue
    const at = now < candidate.releaseAt ? candidate.releaseAt : candidate.deadline
    if (wake === undefined || at < wake) wake = at
  }
  return wake
}

/** True once the lookup has a result. */
export const isLookupFinished = <V>(lookup: Lookup<V>): boolean => lookup.result !== undefined

/**
 * Marks every in-flight query whose deadline is at or before `now` as
 * overdue. Returns `lookup` itself when nothing changed.
 */
export const onLookupTimeout = <V>(lookup: Lookup<V>, now: number): Lookup<V> => {
  if (lookup.result !== undefined) return lookup
  let candidates: Array<LookupCandidate> | undefined
  let expired = 0
  lookup.candidates.forEach((candidate, index) => {
    if (candidate.state === "InFlight" && candidate.deadline <= now) {
      candidates ??= lookup.candidates.slice()
      candidates[index] = { ...candidate, state: "Overdue" }
      expired++
    }
  })
  return candidates === undefined ? lookup : {
    ...lookup,
    candidates,
    timeouts: lookup.timeouts + expired,
    // A deadline that passed brought nobody closer either (see isLookupStalled).
    answersWithoutProgress: lookup.answersWithoutProgress + expired
  }
}

/**
 * Decides what to do at `now`: first marks expired queries overdue, then
 * either finishes, sends new queries (closest unqueried among the k closest
 * live candidates, up to alpha live in flight and `maxQueries` in total), or
 * waits. A query sent to `peer` is overdue at `now + timeoutFor(peer)`, or
 * `now + queryTimeoutMs` when `timeoutFor` is absent or gives no usable value.
 * Call it again after every event until it returns `Waiting` or `Finished`.
 */
export const nextLookupStep = <V>(
  lookup: Lookup<V>,
  now: number,
  timeoutFor?: (peer: Contact) => number | undefined,
  elsewhere?: (peer: NodeId) => ElsewhereState
): LookupStep<V> => {
  if (lookup.result !== undefined) return { lookup, action: { _tag: "Finished", result: lookup.result } }
  const current = onLookupTimeout(lookup, now)
  const { alpha, k, maxQueries, queryTimeoutMs } = current.config

  let liveInFlight = 0
  const nextDeadline = nextWakeOf(current, now)
  for (const candidate of current.candidates) {
    if (candidate.state === "InFlight" && now < candidate.releaseAt) liveInFlight++
  }

  // The window is the k closest candidates not known to have failed; the
  // lookup is done once all of them have answered. A stalled lookup queries
  // the whole window at once, and as many live candidates past it as the
  // share of its queries that went unanswered says will be needed (see
  // `hedgeOf`), so the next wave of silent peers is waited out alongside this one.
  const stalled = isLookupStalled(current)
  const reach = stalled ? k + hedgeOf(current) : k
  const slots = Math.min((stalled ? reach : alpha) - liveInFlight, maxQueries - current.messagesSent)
  const picks: Array<number> = []
  let windowSize = 0
  let reached = 0
  let windowAnswered = true
  for (let index = 0; index < current.candidates.length && reached < reach; index++) {
    const candidate = candidateAt(current.candidates, index)
    if (candidate.state === "Elsewhere") {
      // Another path's peer fills a place of this window while it answered or may still answer there.
      const there = elsewhere?.(candidate.contact.nodeId) ?? "NotLive"
      if (there === "NotLive") continue
      reached++
      if (windowSize < k) {
        windowSize++
        if (there === "Pending") windowAnswered = false
      }
      continue
    }
    if (!isLive(candidate.state)) continue
    reached++
    if (windowSize < k) {
      windowSize++
      if (candidate.state !== "Succeeded") windowAnswered = false
    }
    if (candidate.state === "Unqueried" && picks.length < slots) picks.push(index)
  }

  // Every live candidate failed or is overdue. While overdue queries may still answer (a loaded
  // network, not a dead one), wait for them rather than end with nothing: their calls end by the
  // call timeout, so this never waits longer than that.
  if (windowSize === 0 && current.responses === 0 && current.candidates.some((candidate) => candidate.state === "Overdue")) {
    return { lookup: current, action: { _tag: "Waiting", nextDeadline } }
  }
  if (windowSize === 0 || windowAnswered || (current.messagesSent >= maxQueries && liveInFlight === 0)) {
    const finished = finish(current)
    return { lookup: finished, action: { _tag: "Finished", result: finished.result as LookupResult<V> } }
  }
  if (picks.length === 0) return { lookup: current, action: { _tag: "Waiting", nextDeadline } }

  const candidates = current.candidates.slice()
  const peers: Array<Contact> = []
  let maxQueriedDepth = current.maxQueriedDepth
  for (const index of picks) {
    const candidate = candidateAt(candidates, index)
    const timeout = timeoutFor?.(candidate.contact)
    // `>= 0` also rejects NaN.
    const estimated = timeout !== undefined && timeout >= 0
    const wait = estimated ? timeout : queryTimeoutMs
    // Only an estimated wait frees the slot early: the fixed one is the call timeout, which is the point.
    const releaseAt = now + (estimated ? SLOT_RELEASE_SHARE * wait : wait)
    candidates[index] = { ...candidate, state: "InFlight", deadline: now + wait, releaseAt }
    peers.push(candidate.contact)
    maxQueriedDepth = Math.max(maxQueriedDepth, candidate.depth)
  }
  return {
    lookup: { ...current, candidates, maxQueriedDepth, messagesSent: current.messagesSent + peers.length },
    action: { _tag: "Query", peers }
  }
}

/**
 * Records the answer of `peer`. Accepted only from a peer with a query in
 * flight or overdue (a late answer still counts); unsolicited and duplicate
 * answers return `lookup` unchanged. Of the contacts, at most k closest to
 * the target are considered (an honest peer sends no more), and the local
 * node is dropped. A value ends a FIND_VALUE lookup at once; a FIND_NODE
 * lookup treats a value answer as its contacts. Expired queries are then
 * marked overdue at `now`.
 */
export const onLookupResponse = <V>(
  lookup: Lookup<V>,
  peer: NodeId,
  response: LookupResponse<V>,
  now: number
): Lookup<V> => {
  if (lookup.result !== undefined) return lookup
  const index = indexOfPeer(lookup, peer)
  if (index < 0) return lookup
  const queried = candidateAt(lookup.candidates, index)
  if (queried.state !== "InFlight" && queried.state !== "Overdue") return lookup

  const answered: LookupCandidate = { ...queried, state: "Succeeded" }
  const withAnswer: Lookup<V> = {
    ...lookup,
    candidates: replaceAt(lookup.candidates, index, answered),
    responses: lookup.responses + 1
  }
  if (response._tag === "Value" && lookup.kind === "FindValue") {
    return finish(withAnswer, { value: response.value, from: answered })
  }
  const contacts = response.contacts ?? []
  // With a network cap, sort the whole answer (at most 64 contacts on the wire) before capping, so a
  // crowd on one network among the closest cannot push the answer's other contacts out of the k taken.
  const incoming = lookup.config.maxPerGroup === Number.POSITIVE_INFINITY
    ? closestContacts(lookup.target, contacts, lookup.config.k, lookup.self)
    : withinGroupCap(
      withAnswer.candidates,
      closestContacts(lookup.target, contacts, contacts.length, lookup.self),
      lookup.config.maxPerGroup
    ).slice(0, lookup.config.k)
  const candidates = mergeCandidates(
    lookup.target,
    withAnswer.candidates,
    incoming,
    queried.depth + 1,
    lookup.config.maxCandidates
  )
  // Progress: the answer brought a peer closer than every one known before (see isLookupStalled).
  const progressed = candidates[0] !== undefined && candidates[0].contact.nodeId !== lookup.candidates[0]?.contact.nodeId
  const merged: Lookup<V> = {
    ...withAnswer,
    candidates,
    answersWithoutProgress: progressed ? 0 : lookup.answersWithoutProgress + 1
  }
  return onLookupTimeout(merged, now)
}

/**
 * Records that the query to `peer` failed (an error or a refusal): the peer
 * is never queried again nor part of the result. Ignored for peers without
 * a query in flight or overdue. Expired queries are then marked overdue at `now`.
 */
export const onLookupFailure = <V>(lookup: Lookup<V>, peer: NodeId, now: number): Lookup<V> => {
  if (lookup.result !== undefined) return lookup
  const index = indexOfPeer(lookup, peer)
  if (index < 0) return lookup
  const queried = candidateAt(lookup.candidates, index)
  if (queried.state !== "InFlight" && queried.state !== "Overdue") return lookup
  return onLookupTimeout(
    {
      ...lookup,
      candidates: replaceAt(lookup.candidates, index, { ...queried, state: "Failed" }),
      failures: lookup.failures + 1
    },
    now
  )
}

/**
 * Records that `peer`, which this lookup wanted to query, is queried by
 * another lookup of the same disjoint lookup: it is never sent here (so the
 * query is taken back from `messagesSent`), and stands for termination as
 * that lookup reports it. Ignored for peers without a query in flight.
 */
export const onLookupElsewhere = <V>(lookup: Lookup<V>, peer: NodeId): Lookup<V> => {
  if (lookup.result !== undefined) return lookup
  const index = indexOfPeer(lookup, peer)
  if (index < 0) return lookup
  const queried = candidateAt(lookup.candidates, index)
  if (queried.state !== "InFlight") return lookup
  return {
    ...lookup,
    candidates: replaceAt(lookup.candidates, index, { ...queried, state: "Elsewhere" }),
    messagesSent: lookup.messagesSent - 1
  }
}
