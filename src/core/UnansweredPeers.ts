/**
 * Peers whose queries lately went unanswered (the call timed out or could
 * not connect), remembered by one node so that its next lookups do not wait
 * on them again. A host that accepts and never answers costs a lookup its
 * overdue time (srtt + 3·rttvar, about 250 ms) each time it is asked, and it
 * stays in routing tables, both ours and the tables whose answers name it,
 * until several requests to it failed; without a memory, every lookup of
 * every path meets it afresh.
 *
 * The memory only changes how long a lookup waits, never whom it asks: a
 * remembered peer is still queried when the lookup wants it (so one that
 * came back is noticed), but its query is overdue at once, so it holds
 * no alpha slot and no place in the window, and its answer still counts if
 * it comes. Any answer from the peer, to any query, clears it; otherwise it
 * is forgotten after `forgetAfterMs`.
 *
 * Immutable: every call returns a new value (or the same one when nothing
 * changed). Bound: at most `capacity` peers, the longest remembered dropped
 * first.
 *
 * @since 0.4.0
 */
import type { NodeId } from "./Id.js"

/** Limits of the memory. */
export interface UnansweredPeersConfig {
  /** Most peers remembered; at least 1. */
  readonly capacity: number
  /** How long a peer stays remembered after its last unanswered query, in ms. */
  readonly forgetAfterMs: number
}

/**
 * Defaults: 256 peers (a routing table's worth, as `RttEstimator`), each for
 * 10 minutes: long enough to cover a user's burst of lookups and the paths
 * of each, short enough that a peer back from a restart is trusted again
 * soon even if no lookup happened to ask it.
 */
export const defaultUnansweredPeersConfig: UnansweredPeersConfig = { capacity: 256, forgetAfterMs: 10 * 60_000 }

/** The memory: each peer with the time of its last unanswered query, oldest first. */
export interface UnansweredPeers {
  readonly config: UnansweredPeersConfig
  /** Insertion order is the order of the last unanswered query (a JS Map keeps it). */
  readonly since: ReadonlyMap<NodeId, number>
}

/** An empty memory; throws a RangeError for limits that cannot work (a programming error). */
export const makeUnansweredPeers = (config: Partial<UnansweredPeersConfig> = {}): UnansweredPeers => {
  const full = { ...defaultUnansweredPeersConfig, ...config }
  if (!Number.isSafeInteger(full.capacity) || full.capacity < 1) {
    throw new RangeError(`capacity must be a positive integer, got ${full.capacity}`)
  }
  if (!(full.forgetAfterMs >= 0)) throw new RangeError(`forgetAfterMs must be >= 0, got ${full.forgetAfterMs}`)
  return { config: full, since: new Map() }
}

/** Whether `peer` is remembered as unanswered at `now`. */
export const isUnanswered = (peers: UnansweredPeers, peer: NodeId, now: number): boolean => {
  const at = peers.since.get(peer)
  return at !== undefined && now - at < peers.config.forgetAfterMs
}

/** Remembers that a query to `peer` went unanswered at `now`; drops the expired and, when full, the oldest. */
export const noteUnanswered = (peers: UnansweredPeers, peer: NodeId, now: number): UnansweredPeers => {
  const since = new Map<NodeId, number>()
  for (const [known, at] of peers.since) {
    if (known !== peer && now - at < peers.config.forgetAfterMs) since.set(known, at)
  }
  // Oldest first: the first entries are the ones to give up for room.
  for (const known of since.keys()) {
    if (since.size < peers.config.capacity) break
    since.delete(known)
  }
  since.set(peer, now)
  return { config: peers.config, since }
}

/** Forgets `peer`: it answered. The same value when it was not remembered. */
export const noteAnswered = (peers: UnansweredPeers, peer: NodeId): UnansweredPeers => {
  if (!peers.since.has(peer)) return peers
  const since = new Map(peers.since)
  since.delete(peer)
  return { config: peers.config, since }
}
