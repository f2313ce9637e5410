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
 *   `k + slack` nodes this node knows are closer to `key` than itself;
 * - `closerKnown`: that count, read from this node's own routing table (its
 *   buckets and their replacement caches);
 * - `mailLifetime`: when held mail expires, shortened to `junkTtl` for a
 *   mailbox whose name nobody holds here.
 *
 * @since 0.3.0
 */
import { bucketIndex, isCloser } from "./Distance.js"
import { ID_BITS, type Key, type NodeId } from "./Id.js"
import type { RoutingTable } from "./RoutingTable.js"

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

/** The inputs of one placement decision. */
export interface PlacementQuestion {
  /** How many nodes this node knows (alive or not yet known dead) that are closer to the key than itself. */
  readonly closerKnown: number
  /** Replication factor: the key's storage belongs at its k closest nodes. */
  readonly k: number
  /** Tolerance for a stale or partial routing table (see `defaultStorageSlack`). */
  readonly slack: number
}

/** Whether a node should store a record or mail under a key: fewer than `k + slack` known nodes are closer. */
export const belongsHere = (question: PlacementQuestion): boolean => question.closerKnown < question.k + question.slack

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
