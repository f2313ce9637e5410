/**
 * Where storage belongs and how long it lives (issue 12, "storage anyone can
 * fill"). Kademlia stores a value at the k nodes closest to its key, and only
 * those nodes ever speak for it (see `NameResolution`), so a node that is far
 * from a key has no reason to hold anything under it: whatever it holds there
 * only costs it room that the keys it is responsible for need. These pure
 * decisions let a node refuse such storage and cap the life of mail nobody
 * can claim:
 *
 * - `belongsHere`: accept a record or mail under `key` only while fewer than
 *   `k + slack` nodes this node knows are closer to `key` than itself, and
 *   the key is within `RESPONSIBILITY_MARGIN_BITS` of this node's
 *   neighbourhood (its k closest known contacts);
 * - `closerKnown`: that count, read from this node's own routing table (its
 *   buckets and their replacement caches);
 * - `neighbourhoodDepth`: how many leading bits this node shares with its
 *   k-th closest known contact;
 * - `placementQuestion`: both, and the key's own depth, from one table;
 * - `bucketsToFillBeforeDeciding`, `bucketStillUnfilled`: the buckets a node
 *   fills before its first decision about a key there, so that the count
 *   holds without every join paying for it;
 * - `describePlacementRefusal`: which rule refused, for the caller;
 * - `mailLifetime`: when held mail expires, shortened to `junkTtl` for a
 *   mailbox whose name nobody holds here.
 *
 * @since 0.3.0
 */
import { bucketIndex, isCloser } from "./Distance.js"
import { ID_BITS, type Key, type NodeId } from "./Id.js"
import { type Bucket, bucketAt, type RoutingTable } from "./RoutingTable.js"

/**
 * The slack a node allows by default beyond the k closest: half of k,
 * rounded up (10 for k = 20).
 *
 * Why slack at all: a node judges "am I among the k closest?" from its own
 * routing table, and that table is never exact. It holds contacts that have
 * left or died but not yet failed three calls, and contacts waiting in a
 * replacement cache that were never pinged, so it overcounts the live nodes
 * closer to a key; and two nodes' tables disagree about who is k-th. A node
 * that refused as soon as it knew k closer nodes would refuse the owner's
 * publication (which targets the k closest *live* nodes a lookup found) and
 * the hand-over to a newcomer whose view differs by one or two dead
 * contacts. With slack, the nodes ranked k + 1 … k + slack still accept, and
 * only a node that knows k + slack nodes closer than itself refuses: it is
 * surely not among the k closest.
 */
export const defaultStorageSlack = (k: number): number => Math.ceil(k / 2)

/**
 * How many bits shallower than its neighbourhood a key may lie and still be
 * stored here: 2, so a node takes keys up to about four times as far from it
 * as its k-th closest contact.
 *
 * Why a second rule beside `closerKnown`: that count is only as good as the
 * bucket the key falls in. A node that has not filled its far buckets (a
 * newcomer whose join looked itself up and nothing more) knows one or two
 * contacts there, so for a key across half the id space it counts one or two
 * closer nodes and would accept junk a hostile node places there. Its own
 * neighbourhood it does know: the self lookup found its k closest. With ids
 * spread evenly, a node among a key's k closest shares about as many leading
 * bits with the key as with its own k-th closest contact (the two subtrees
 * hold about k nodes each); one whose neighbourhood lies two bits deeper than
 * the key has about 2k nodes nearer the key than itself, expected. Two bits,
 * not one, for the spread of ids: with k = 20 a node among the k closest is
 * refused this way about once in a million keys (Poisson tails: a subtree
 * expected to hold 10 nodes holding 20, while one expected to hold 40 holds
 * fewer than 20), and a table that still lists dead contacts (it overcounts
 * its neighbourhood by a third under 30 % churn) shifts it by half a bit.
 */
export const RESPONSIBILITY_MARGIN_BITS = 2

/** The inputs of one placement decision. */
export interface PlacementQuestion {
  /** How many nodes this node knows (alive or not yet known dead) that are closer to the key than itself. */
  readonly closerKnown: number
  /** Replication factor: the key's storage belongs at its k closest nodes. */
  readonly k: number
  /** Tolerance for a stale or partial routing table (see `defaultStorageSlack`). */
  readonly slack: number
  /** The leading bits this node's id shares with the key (its bucket index for the key). */
  readonly keyDepth: number
  /** `neighbourhoodDepth` of this node's table: undefined while it knows fewer than k nodes. */
  readonly neighbourhoodDepth: number | undefined
}

/** Why a node is not among a key's k closest, by its own table. */
export type PlacementRefusal =
  | { readonly _tag: "KnowsCloser"; readonly closerKnown: number }
  | { readonly _tag: "OutsideNeighbourhood"; readonly keyDepth: number; readonly neighbourhoodDepth: number }

/**
 * Why a node should not store a record or mail under a key, or undefined
 * when it should: it knows `k + slack` or more nodes closer, or the key lies
 * more than `RESPONSIBILITY_MARGIN_BITS` shallower than its neighbourhood. A
 * node that knows fewer than k others (a small or young network) goes by the
 * count alone: it may well be among the k closest of any key.
 */
export const placementRefusal = (question: PlacementQuestion): PlacementRefusal | undefined => {
  if (question.closerKnown >= question.k + question.slack) return { _tag: "KnowsCloser", closerKnown: question.closerKnown }
  const { keyDepth, neighbourhoodDepth } = question
  if (neighbourhoodDepth !== undefined && keyDepth < neighbourhoodDepth - RESPONSIBILITY_MARGIN_BITS) {
    return { _tag: "OutsideNeighbourhood", keyDepth, neighbourhoodDepth }
  }
  return undefined
}

/** Whether a node should store a record or mail under a key (no `placementRefusal`). */
export const belongsHere = (question: PlacementQuestion): boolean => placementRefusal(question) === undefined

/** The contacts a bucket knows: its entries and its replacement cache. */
export const knownIn = (bucket: Bucket): number => bucket.entries.length + bucket.replacements.length

/**
 * The leading bits `table.self` shares with its k-th closest known contact
 * (bucket entries and replacement caches, as `closerKnown` counts them), or
 * undefined when the table knows fewer than k. In a network of N nodes with
 * ids spread evenly it is about log2(N / k).
 */
export const neighbourhoodDepth = (table: RoutingTable, k: number): number | undefined => {
  let known = 0
  // Buckets ascend by index (common-prefix length): the deepest hold the closest contacts.
  for (let position = table.buckets.length - 1; position >= 0; position--) {
    const bucket = table.buckets[position] as Bucket
    known += knownIn(bucket)
    if (known >= k) return bucket.index
  }
  return undefined
}

/**
 * The buckets a node fills (lookups of random keys in each) before it
 * decides whether to store under `key`: those the count (`closerKnown`)
 * reads for the key that may be thin, from the key's own bucket down to
 * the neighbourhood's (the bucket of the k-th closest contact), each while
 * it knows fewer than k + slack (entries and replacement cache). Every node
 * of the key's bucket is closer to the key than this node, and so are about
 * half of each deeper bucket's; a newcomer's self lookup met all of the
 * buckets deeper than its neighbourhood's (fewer than k nodes: all among
 * its k closest) but only part of the neighbourhood's own bucket and of
 * those it crossed on the way, so it would count too few there and take
 * junk it is not responsible for. Keys more than
 * `RESPONSIBILITY_MARGIN_BITS` shallower are refused by the neighbourhood
 * rule; keys deeper than the neighbourhood read only buckets the self
 * lookup met; a node that knows fewer than k others (no neighbourhood)
 * refreshed every bucket at its join. Empty when nothing needs filling.
 */
export const bucketsToFillBeforeDeciding = (table: RoutingTable, key: Key, k: number, slack: number): ReadonlyArray<number> => {
  const depth = neighbourhoodDepth(table, k)
  const keyDepth = bucketIndex(table.self, key)
  if (depth === undefined || keyDepth < depth - RESPONSIBILITY_MARGIN_BITS || keyDepth > depth) return []
  const filled: Array<number> = []
  for (let index = keyDepth; index <= depth; index++) {
    if (knownIn(bucketAt(table, index)) < k + slack) filled.push(index)
  }
  return filled
}

/** Lookups a node may spend on filling one bucket (see `bucketStillUnfilled`). */
export const FILL_LOOKUPS_PER_BUCKET = 3

/**
 * Whether bucket `index`, filled by one lookup into its range (`before`,
 * then `after`), is looked up once more: it still knows fewer than k + slack
 * and the last lookup met someone new there. One lookup meets about k nodes
 * of a bucket's range, and the range just shallower than the neighbourhood
 * holds about 2k: where the node must count k + slack of them, it looks
 * again while that finds someone new (at most `FILL_LOOKUPS_PER_BUCKET`
 * lookups in all, counted by the caller).
 */
export const bucketStillUnfilled = (
  before: RoutingTable,
  after: RoutingTable,
  index: number,
  k: number,
  slack: number
): boolean => {
  const known = knownIn(bucketAt(after, index))
  return known < k + slack && known > knownIn(bucketAt(before, index))
}

/** How a refused placement reads to the peer that asked: which rule refused, with its numbers. */
export const describePlacementRefusal = (refusal: PlacementRefusal, key: Key): string =>
  refusal._tag === "KnowsCloser"
    ? `this node knows ${refusal.closerKnown} nodes closer to ${key.slice(0, 16)}…; store it there`
    : `${key.slice(0, 16)}… shares ${refusal.keyDepth} leading bits with this node and its k closest contacts ` +
      `${refusal.neighbourhoodDepth}: the key is outside its neighbourhood; store it at nodes nearer the key`

/** The placement question for `key`, read from this node's own routing table. */
export const placementQuestion = (table: RoutingTable, key: Key, k: number, slack: number): PlacementQuestion => ({
  closerKnown: closerKnown(table, key),
  k,
  slack,
  keyDepth: bucketIndex(table.self, key),
  neighbourhoodDepth: neighbourhoodDepth(table, k)
})

/**
 * How many contacts of `table` (bucket entries and replacement caches) are
 * strictly closer to `key` than the table's own node.
 *
 * Only the buckets from p on can hold them, p being the common-prefix length
 * of `self` and `key`: a node of a shallower bucket differs from `self` (and
 * so from `key`) at a bit where `self` agrees with `key`. Bucket p (which
 * agrees with `key` at bit p) is closer as a whole; deeper buckets are close
 * to `self` and some of them are closer. A bucket holds at most k entries,
 * so counting entries alone, a node far from `key` would know at most about
 * k closer nodes and never reach k + slack; the nodes waiting in a
 * replacement cache are nodes this node met and authenticated too, and
 * count as known.
 */
export const closerKnown = (table: RoutingTable, key: Key): number => {
  const index = bucketIndex(table.self, key)
  if (index >= ID_BITS) return 0 // the key is our own id: nobody is closer
  const seen = new Set<NodeId>()
  for (const bucket of table.buckets) {
    if (bucket.index < index) continue
    for (const entry of [...bucket.entries, ...bucket.replacements]) {
      const id = entry.contact.nodeId
      if (id !== table.self && isCloser(key, id, table.self)) seen.add(id)
    }
  }
  return seen.size
}

/**
 * Whether `candidate` is among the `n` closest to `key` of the nodes in
 * `known` (itself left out): fewer than `n` of them are closer. Used by a
 * relay to tell a fellow relay of a mailbox (whose copies come from
 * re-replication) from any other caller.
 */
export const amongClosestKnown = (key: Key, candidate: NodeId, known: ReadonlyArray<NodeId>, n: number): boolean => {
  const closer = new Set<NodeId>()
  for (const id of known) if (id !== candidate && isCloser(key, id, candidate)) closer.add(id)
  return closer.size < n
}

/** What decides how long a relay keeps one mail. */
export interface MailLifetimeQuestion {
  /** The relay's clock, ms. */
  readonly now: number
  /** The expiry the sender signed into the postage (the first copy's). */
  readonly signedExpiresAt: number
  /** The relay's mail lifetime, ms (14 days by default). */
  readonly mailTtlMs: number
  /** For a receipt, when it was issued: its copies never outlive `receivedAt + mailTtl`. */
  readonly receivedAt?: number | undefined
  /** Whether this relay holds a live record (or rival claim) for the mailbox's user key. */
  readonly recipientKnown: boolean
  /** The lifetime of mail for a name nobody holds here, ms (6 hours by default). */
  readonly junkTtlMs: number
}

/** When a relay drops a mail, and the expiry it gets once its recipient is known. */
export interface MailLifetime {
  /** The mail's full expiry: the earliest of the signed one, `now + mailTtl` and a receipt's own bound. */
  readonly fullExpiresAt: number
  /** When the relay drops it now: `fullExpiresAt`, or at most `now + junkTtl` while the recipient is unknown. */
  readonly expiresAt: number
}

/**
 * The lifetime of a mail at a relay. Copies never outlive the expiry the
 * sender signed, nor the relay's own lifetime. Mail for a user key under
 * which the relay holds no record (relays of a mailbox are the k closest of
 * the same key that holds the recipient's record, so an honest recipient's
 * relays hold it) is kept at most `junkTtl`: junk for names nobody holds
 * expires in hours, not weeks. If a record for the key arrives later, the
 * relay gives the mail its full expiry back (`fullExpiresAt`), so honest
 * mail that reached a relay before the owner's record did loses nothing.
 */
export const mailLifetime = (question: MailLifetimeQuestion): MailLifetime => {
  const { mailTtlMs, now } = question
  const receiptBound = question.receivedAt === undefined
    ? Number.MAX_SAFE_INTEGER
    : Math.min(now, question.receivedAt) + mailTtlMs
  const fullExpiresAt = Math.min(question.signedExpiresAt, now + mailTtlMs, receiptBound)
  const expiresAt = question.recipientKnown ? fullExpiresAt : Math.min(fullExpiresAt, now + question.junkTtlMs)
  return { fullExpiresAt, expiresAt }
}
