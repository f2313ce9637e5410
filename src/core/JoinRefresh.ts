/**
 * What a newcomer does after its self lookup so that it routes into every
 * part of the id space (issue 14, "joins within 10x a UDP DHT").
 *
 * The Kademlia paper refreshes every bucket farther than the nearest
 * neighbour with a lookup, about log2(N) lookups of k verified contacts
 * each: most of a join's cost. Routing needs much less. One contact in a
 * bucket's range routes into it, and the self lookup already met the
 * neighbourhood and whatever lay on its path. The buckets it skipped (the
 * bootstrap node answers with its closest to the newcomer, all deep) are
 * the ones to fill, one contact each:
 *
 * - `bucketsToRefreshAfterJoin`: the empty buckets shallower than the
 *   neighbourhood, or every bucket farther than the nearest neighbour in a
 *   network where the node knows fewer than k others (there the storage
 *   count is the only placement rule, and a full lookup of each is cheap);
 * - `meetingCandidates`: of the contacts a neighbour names for a random id
 *   in such a bucket, those to call (closest to that id first). A neighbour
 *   shares that bucket with the newcomer (it shares more leading bits with
 *   the newcomer than the bucket's depth), so its own table holds up to k
 *   nodes there, and one `FindNode` to it, then one call to a node it
 *   names, puts a verified contact in the bucket: two requests where a
 *   lookup took about twenty.
 *
 * The buckets the storage count reads are filled by `StoragePolicy`'s
 * `bucketsToFillBeforeDeciding` when a store asks, not here. The rest fill
 * as peers call and at the hourly refresh of untouched buckets.
 *
 * @since 0.3.0
 */
import { bucketIndex, compareDistance } from "./Distance.js"
import type { Contact } from "./Contact.js"
import type { Key } from "./Id.js"
import { meetsIdPuzzle } from "./IdPuzzle.js"
import { bucketAt, type RoutingTable } from "./RoutingTable.js"
import { knownIn, neighbourhoodDepth } from "./StoragePolicy.js"

/** What a join does for one bucket: a full lookup (a network smaller than k), or meeting one contact there. */
export interface JoinRefresh {
  /** Buckets to refresh with a lookup of a random id in each. */
  readonly lookups: ReadonlyArray<number>
  /** Buckets to put one verified contact in (`meetingCandidates`). */
  readonly meetings: ReadonlyArray<number>
}

/**
 * The buckets a node refreshes once it has joined and looked itself up: in
 * a network where it knows fewer than k others, a lookup into every bucket
 * farther than its nearest neighbour, as the paper does; otherwise one
 * contact met in each empty bucket shallower than its neighbourhood.
 */
export const bucketsToRefreshAfterJoin = (table: RoutingTable, k: number): JoinRefresh => {
  const nearest = table.buckets.findLast((bucket) => bucket.entries.length > 0)
  if (nearest === undefined) return { lookups: [], meetings: [] }
  const depth = neighbourhoodDepth(table, k)
  const farther: Array<number> = []
  for (let index = 0; index < nearest.index; index++) {
    if (depth === undefined || (index < depth && knownIn(bucketAt(table, index)) === 0)) farther.push(index)
  }
  return depth === undefined ? { lookups: farther, meetings: [] } : { lookups: [], meetings: farther }
}

/** Most contacts a join calls to put one in an empty bucket (the first that answers ends it). */
export const MEETING_ATTEMPTS = 2

/** Where a join looks for a contact in one empty bucket. */
export interface MeetingQuestion {
  /** The joining node's id. */
  readonly self: Key
  /** The empty bucket. */
  readonly index: number
  /** The random id in its range that a neighbour was asked about. */
  readonly target: Key
  /** The contacts the neighbour named. */
  readonly named: ReadonlyArray<Contact>
  /** Zero bits a routed id's puzzle hash must have (core `IdPuzzle`; 0: no check). */
  readonly idPuzzleBits: number
}

/**
 * The contacts to call to meet one in an empty bucket: those the neighbour
 * named in the bucket's range whose ids solve the puzzle (no other may
 * enter the table), closest to the target first, at most
 * `MEETING_ATTEMPTS`. The per-network caps are the routing table's to
 * apply once one answers.
 */
export const meetingCandidates = ({ idPuzzleBits, index, named, self, target }: MeetingQuestion): ReadonlyArray<Contact> =>
  named
    .filter((contact) => bucketIndex(self, contact.nodeId) === index && meetsIdPuzzle(contact.nodeId, idPuzzleBits))
    .sort((a, b) => compareDistance(target, a.nodeId, b.nodeId))
    .slice(0, MEETING_ATTEMPTS)
