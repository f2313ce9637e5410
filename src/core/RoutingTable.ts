/**
 * The Kademlia routing table: up to `k` live contacts per k-bucket, where
 * bucket `i` holds the contacts whose id shares exactly `i` leading bits with
 * our own. The table is an immutable value that only records what the shell
 * tells it (a contact answered, a request failed) and answers with at most one
 * command (ping the least-recently-seen contact of a full bucket); it never
 * sends anything itself. Buckets are stored sparsely, sorted by index, because
 * in a network of N nodes only about log2(N) of the 256 buckets are ever
 * non-empty; an update copies the changed bucket and the short bucket index,
 * and shares everything else with the previous table.
 *
 * Time (`now`, milliseconds) is an argument and is assumed not to go
 * backwards; entries are kept in order of `lastSeen` on that assumption.
 *
 * @since 0.1.0
 */
import { addressEquals, type Contact } from "./Contact.js"
import { bucketIndex, compareDistance } from "./Distance.js"
import { ID_BITS, type Key, type NodeId } from "./Id.js"
import { withinDiversity } from "./IpDiversity.js"

/** Tuning of a routing table. */
export interface RoutingTableConfig {
  /** Most contacts per bucket (Kademlia's k). */
  readonly k: number
  /** Most contacts waiting per bucket for a slot to open (the replacement cache bound). */
  readonly replacementCacheSize: number
  /** Consecutive failed requests after which a contact is dropped. */
  readonly maxConsecutiveFailures: number
  /** How long a ping of a bucket's head stays outstanding before another may be issued. */
  readonly pingTimeoutMs: number
  /**
   * A full bucket whose least-recently-seen entry was seen within this long is
   * full of live contacts: a newcomer only waits in the replacement cache. Without
   * it every stranger costs a ping, and each ping makes the pinged node observe a
   * stranger of its own, a cascade that dwarfed lookup traffic in large networks
   * (BitTorrent's DHT treats nodes seen within 15 minutes as good for the same reason).
   */
  readonly headFreshnessMs: number
  /**
   * Most contacts of one network (IPv4 /24, IPv6 /48; see core `AddressGroup`)
   * in one bucket, replacement cache included: whoever controls one network
   * can then hold at most this many places in any bucket, however many ids it
   * makes (go-libp2p-kbucket's diversity filter). Infinity turns it off.
   */
  readonly maxPerGroup: number
}

/** The parameters of the Kademlia paper (k = 20) with a replacement cache as large as a bucket. */
export const defaultRoutingTableConfig: RoutingTableConfig = Object.freeze({
  k: 20,
  replacementCacheSize: 20,
  maxConsecutiveFailures: 3,
  pingTimeoutMs: 5000,
  headFreshnessMs: 15 * 60 * 1000,
  // Off in the bare table; the node turns it on (NodeConfig.maxPerNetwork).
  maxPerGroup: Number.POSITIVE_INFINITY
})

/** A contact in a bucket (or its replacement cache) with what we know of its liveness. */
export interface Entry {
  readonly contact: Contact
  /** When the contact was last seen alive (ms). */
  readonly lastSeen: number
  /** Requests to it that failed since it was last seen alive; always 0 in a replacement cache. */
  readonly failures: number
}

/** An outstanding liveness check of a full bucket's head. */
export interface PendingPing {
  readonly nodeId: NodeId
  /** When the ping was requested (ms). */
  readonly since: number
}

/** One k-bucket: the contacts whose common-prefix length with our id is `index`. */
export interface Bucket {
  /** Common-prefix length of its contacts with our id, 0..255. */
  readonly index: number
  /** At most `k` contacts, least-recently-seen first. */
  readonly entries: ReadonlyArray<Entry>
  /**
   * At most `replacementCacheSize` contacts seen while the bucket was full,
   * freshest last, disjoint from `entries`; empty unless the bucket is full.
   */
  readonly replacements: ReadonlyArray<Entry>
  /** Last time a contact of this bucket was seen or the shell refreshed it (ms). */
  readonly lastTouched: number
  /** The ping issued to decide whether the head may be replaced, if any. */
  readonly pendingPing: PendingPing | undefined
}

/** Ask the shell to ping `contact`, the least-recently-seen entry of the full bucket `bucket`. */
export interface PingContact {
  readonly _tag: "PingContact"
  readonly contact: Contact
  readonly bucket: number
}

/** Work the table asks of the shell; the result comes back as `observe` or `recordFailure`. */
export type RoutingCommand = PingContact

/** A node's immutable view of its neighbourhood: its id, configuration and sparse k-buckets. */
export interface RoutingTable {
  readonly self: NodeId
  readonly config: RoutingTableConfig
  /** Creation time: the `lastTouched` of every bucket never touched since. */
  readonly createdAt: number
  /** Buckets that were ever touched, ascending by index; at most 256. */
  readonly buckets: ReadonlyArray<Bucket>
  /** Number of entries over all buckets (replacements excluded). */
  readonly size: number
}

/** The table after an observation, and the ping it asks for, if any. */
export interface ObserveResult {
  readonly table: RoutingTable
  readonly command: RoutingCommand | undefined
}

const NO_ENTRIES: ReadonlyArray<Entry> = Object.freeze([])

const requireInteger = (name: string, value: number, min: number): void => {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`)
  }
}

const requireBucketIndex = (index: number): void => {
  if (!Number.isInteger(index) || index < 0 || index >= ID_BITS) {
    throw new RangeError(`bucket index must be an integer in [0, ${ID_BITS}), got ${index}`)
  }
}

/**
 * An empty table for the node `self`, created at `now`. Throws `RangeError`
 * for a configuration that cannot work (a programming error, not input).
 */
export const makeRoutingTable = (
  self: NodeId,
  now: number,
  config: Partial<RoutingTableConfig> = {}
): RoutingTable => {
  const merged: RoutingTableConfig = Object.freeze({ ...defaultRoutingTableConfig, ...config })
  requireInteger("k", merged.k, 1)
  requireInteger("replacementCacheSize", merged.replacementCacheSize, 0)
  requireInteger("maxConsecutiveFailures", merged.maxConsecutiveFailures, 1)
  if (merged.maxPerGroup !== Number.POSITIVE_INFINITY) requireInteger("maxPerGroup", merged.maxPerGroup, 1)
  if (!Number.isFinite(merged.pingTimeoutMs) || merged.pingTimeoutMs < 0) {
    throw new RangeError(`pingTimeoutMs must be a finite number >= 0, got ${merged.pingTimeoutMs}`)
  }
  if (!Number.isFinite(merged.headFreshnessMs) || merged.headFreshnessMs < 0) {
    throw new RangeError(`headFreshnessMs must be a finite number >= 0, got ${merged.headFreshnessMs}`)
  }
  if (!Number.isFinite(now)) throw new RangeError(`now must be a finite number, got ${now}`)
  return { self, config: merged, createdAt: now, buckets: [], size: 0 }
}

// ---------------------------------------------------------------------------
// Sparse bucket index

/** Position of bucket `index` in `buckets`, or where it would be inserted. */
const locate = (buckets: ReadonlyArray<Bucket>, index: number): number => {
  let low = 0
  let high = buckets.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if ((buckets[middle] as Bucket).index < index) low = middle + 1
    else high = middle
  }
  return low
}

const storedBucket = (table: RoutingTable, index: number): Bucket | undefined => {
  const bucket = table.buckets[locate(table.buckets, index)]
  return bucket !== undefined && bucket.index === index ? bucket : undefined
}

const emptyBucket = (index: number, lastTouched: number): Bucket => ({
  index,
  entries: NO_ENTRIES,
  replacements: NO_ENTRIES,
  lastTouched,
  pendingPing: undefined
})

const bucketOrEmpty = (table: RoutingTable, index: number): Bucket =>
  storedBucket(table, index) ?? emptyBucket(index, table.createdAt)

/** The table with `bucket` stored in place of the bucket of the same index. */
const withBucket = (table: RoutingTable, bucket: Bucket, sizeChange: number): RoutingTable => {
  const position = locate(table.buckets, bucket.index)
  const buckets = table.buckets.slice()
  if (buckets[position]?.index === bucket.index) buckets[position] = bucket
  else buckets.splice(position, 0, bucket)
  return { self: table.self, config: table.config, createdAt: table.createdAt, buckets, size: table.size + sizeChange }
}

// ---------------------------------------------------------------------------
// Entry lists (at most max(k, replacementCacheSize) long, so linear scans are cheap)

const positionOf = (entries: ReadonlyArray<Entry>, nodeId: NodeId): number => {
  for (let i = 0; i < entries.length; i++) {
    if ((entries[i] as Entry).contact.nodeId === nodeId) return i
  }
  return -1
}

const withoutPosition = (entries: ReadonlyArray<Entry>, position: number): ReadonlyArray<Entry> =>
  entries.length === 1 ? NO_ENTRIES : [...entries.slice(0, position), ...entries.slice(position + 1)]

const withoutId = (entries: ReadonlyArray<Entry>, nodeId: NodeId): ReadonlyArray<Entry> => {
  const position = positionOf(entries, nodeId)
  return position < 0 ? entries : withoutPosition(entries, position)
}

/** `entries` with `entry` appended, dropping the oldest ones beyond `bound`. */
const appendBounded = (entries: ReadonlyArray<Entry>, entry: Entry, bound: number): ReadonlyArray<Entry> => {
  if (bound === 0) return NO_ENTRIES
  const kept = entries.length >= bound ? entries.slice(entries.length - bound + 1) : entries
  return [...kept, entry]
}

/** `entries` with `entry` inserted after every entry seen no later than it, keeping lastSeen order. */
const insertByLastSeen = (entries: ReadonlyArray<Entry>, entry: Entry): ReadonlyArray<Entry> => {
  let position = entries.length
  while (position > 0 && (entries[position - 1] as Entry).lastSeen > entry.lastSeen) position--
  return [...entries.slice(0, position), entry, ...entries.slice(position)]
}

/**
 * The bucket without the entry at `position`, refilled with the freshest
 * replacement. A ping outstanding for another entry stays outstanding: its
 * answer will still arrive and be recorded.
 */
const evict = (
  bucket: Bucket,
  position: number,
  maxPerGroup: number
): { readonly bucket: Bucket; readonly sizeChange: number } => {
  const evictedId = (bucket.entries[position] as Entry).contact.nodeId
  const remaining = withoutPosition(bucket.entries, position)
  const pendingPing = bucket.pendingPing?.nodeId === evictedId ? undefined : bucket.pendingPing
  // The freshest replacement whose network still has room among the remaining entries.
  let chosen = bucket.replacements.length - 1
  while (chosen >= 0 && !fitsNetworkCap(remaining, (bucket.replacements[chosen] as Entry).contact, maxPerGroup)) chosen--
  const freshest = bucket.replacements[chosen]
  if (freshest === undefined) {
    return { bucket: { ...bucket, entries: remaining, pendingPing }, sizeChange: -1 }
  }
  return {
    bucket: {
      ...bucket,
      entries: insertByLastSeen(remaining, freshest),
      replacements: withoutPosition(bucket.replacements, chosen),
      pendingPing
    },
    sizeChange: 0
  }
}

/** Whether `contact` may join `entries` without its network exceeding `maxPerGroup` of them. */
const fitsNetworkCap = (entries: ReadonlyArray<Entry>, contact: Contact, maxPerGroup: number): boolean =>
  maxPerGroup === Number.POSITIVE_INFINITY ||
  withinDiversity(
    entries.filter((entry) => entry.contact.nodeId !== contact.nodeId).map((entry) => entry.contact.address.host),
    contact.address.host,
    maxPerGroup
  )

// ---------------------------------------------------------------------------
// Updates

/**
 * Records that `contact` was seen alive at `now` (it answered us, or sent us
 * an authenticated request). A known contact becomes the most recently seen
 * with its new address and no failures; a new one joins its bucket if there
 * is room, otherwise it waits in the replacement cache and, unless the head
 * was seen within `headFreshnessMs` or a ping is already outstanding, the
 * table asks the shell to ping the bucket's head.
 * Our own id is ignored.
 */
export const observe = (table: RoutingTable, contact: Contact, now: number): ObserveResult => {
  const index = bucketIndex(table.self, contact.nodeId)
  if (index >= ID_BITS) return { table, command: undefined }
  const bucket = bucketOrEmpty(table, index)
  const seen: Entry = { contact, lastSeen: now, failures: 0 }
  const known = positionOf(bucket.entries, contact.nodeId)

  const { k, replacementCacheSize, pingTimeoutMs, headFreshnessMs, maxPerGroup } = table.config
  if (known >= 0) {
    const before = (bucket.entries[known] as Entry).contact
    // A known contact that moves into a network already at its cap keeps its old address.
    const refreshed = addressEquals(before.address, contact.address) ||
        fitsNetworkCap(bucket.entries, contact, maxPerGroup)
      ? seen
      : { ...seen, contact: before }
    const entries = [...bucket.entries.slice(0, known), ...bucket.entries.slice(known + 1), refreshed]
    const pendingPing = bucket.pendingPing?.nodeId === contact.nodeId ? undefined : bucket.pendingPing
    return { table: withBucket(table, { ...bucket, entries, lastTouched: now, pendingPing }, 0), command: undefined }
  }

  // Neither a slot nor a place in the cache for a network that holds its share of the bucket.
  if (!fitsNetworkCap([...bucket.entries, ...bucket.replacements], contact, maxPerGroup)) {
    return { table, command: undefined }
  }
  if (bucket.entries.length < k) {
    const next: Bucket = {
      ...bucket,
      entries: [...bucket.entries, seen],
      // A bucket with room has an empty cache; this only guards the invariant.
      replacements: withoutId(bucket.replacements, contact.nodeId),
      lastTouched: now
    }
    return { table: withBucket(table, next, 1), command: undefined }
  }

  const replacements = appendBounded(withoutId(bucket.replacements, contact.nodeId), seen, replacementCacheSize)
  const head = bucket.entries[0] as Entry // the bucket is full and k >= 1, so it has a head
  const pingDue = now - head.lastSeen >= headFreshnessMs &&
    (bucket.pendingPing === undefined || now - bucket.pendingPing.since >= pingTimeoutMs)
  if (!pingDue) {
    return { table: withBucket(table, { ...bucket, replacements, lastTouched: now }, 0), command: undefined }
  }
  const next: Bucket = {
    ...bucket,
    replacements,
    lastTouched: now,
    pendingPing: { nodeId: head.contact.nodeId, since: now }
  }
  return { table: withBucket(table, next, 0), command: { _tag: "PingContact", contact: head.contact, bucket: index } }
}

/**
 * Records that a request to `nodeId` failed or timed out. The contact is
 * dropped after `maxConsecutiveFailures` failures in a row, or at once when
 * it is the head whose ping was outstanding; its slot goes to the freshest
 * replacement. A contact waiting in the replacement cache is removed from it.
 * `now` is accepted for symmetry with the other updates; the policy is
 * count-based and does not need it.
 */
export const recordFailure = (table: RoutingTable, nodeId: NodeId, _now: number): RoutingTable => {
  const bucket = storedBucket(table, bucketIndex(table.self, nodeId))
  if (bucket === undefined) return table
  const position = positionOf(bucket.entries, nodeId)
  if (position < 0) {
    const replacements = withoutId(bucket.replacements, nodeId)
    return replacements === bucket.replacements ? table : withBucket(table, { ...bucket, replacements }, 0)
  }
  const entry = bucket.entries[position] as Entry
  const failures = entry.failures + 1
  if (failures >= table.config.maxConsecutiveFailures || bucket.pendingPing?.nodeId === nodeId) {
    const evicted = evict(bucket, position, table.config.maxPerGroup)
    return withBucket(table, evicted.bucket, evicted.sizeChange)
  }
  const entries = bucket.entries.slice()
  entries[position] = { ...entry, failures }
  return withBucket(table, { ...bucket, entries }, 0)
}

/**
 * Removes `nodeId` from the table (e.g. it proved to be someone else),
 * refilling its bucket from the replacement cache; also drops it from a
 * replacement cache. Unknown ids leave the table unchanged.
 */
export const removeContact = (table: RoutingTable, nodeId: NodeId): RoutingTable => {
  const bucket = storedBucket(table, bucketIndex(table.self, nodeId))
  if (bucket === undefined) return table
  const position = positionOf(bucket.entries, nodeId)
  if (position < 0) {
    const replacements = withoutId(bucket.replacements, nodeId)
    return replacements === bucket.replacements ? table : withBucket(table, { ...bucket, replacements }, 0)
  }
  const evicted = evict(bucket, position, table.config.maxPerGroup)
  return withBucket(table, evicted.bucket, evicted.sizeChange)
}

/** Records that the shell refreshed bucket `index` at `now` (a lookup into its range). */
export const touchBucket = (table: RoutingTable, index: number, now: number): RoutingTable => {
  requireBucketIndex(index)
  return withBucket(table, { ...bucketOrEmpty(table, index), lastTouched: now }, 0)
}

// ---------------------------------------------------------------------------
// Queries

/** The entry for `nodeId` in its bucket (not the replacement cache), if any. */
export const findContact = (table: RoutingTable, nodeId: NodeId): Entry | undefined => {
  const bucket = storedBucket(table, bucketIndex(table.self, nodeId))
  if (bucket === undefined) return undefined
  const position = positionOf(bucket.entries, nodeId)
  return position < 0 ? undefined : bucket.entries[position]
}

/**
 * The entry of `nodeId` in its bucket or in the bucket's replacement cache,
 * if either holds it. Both hold only contacts seen alive at their address
 * (`observe`), so a caller found here at the address it calls from needs no
 * new proof of it.
 */
export const findKnown = (table: RoutingTable, nodeId: NodeId): Entry | undefined => {
  const bucket = storedBucket(table, bucketIndex(table.self, nodeId))
  if (bucket === undefined) return undefined
  const position = positionOf(bucket.entries, nodeId)
  if (position >= 0) return bucket.entries[position]
  const waiting = positionOf(bucket.replacements, nodeId)
  return waiting < 0 ? undefined : bucket.replacements[waiting]
}

/**
 * Whether a contact the table does not hold would be of use if it were seen
 * alive now: its bucket has a free slot, or a slot that may open soon (an
 * entry that has failed, or a head not seen for `headFreshnessMs`, which
 * `observe` would ping), or room in its replacement cache; and its network
 * is within its cap. A caller of no use is not worth a dial-back to prove
 * its address: it would be dropped. Without this check every query from a
 * stranger cost the callee a ping back, which nearly doubled what a lookup
 * cost the network, and what a rejoin's refreshes did under churn. The
 * replacement cache still takes callers until it is full: it is also what
 * tells a node how many others are closer to a key than itself (core
 * `StoragePolicy`), so a node that stopped filling it would wrongly believe
 * it belongs among a key's k closest and hold what a far node should refuse.
 */
export const admitsNewcomer = (table: RoutingTable, contact: Contact, now: number): boolean => {
  const index = bucketIndex(table.self, contact.nodeId)
  if (index >= ID_BITS) return false
  const bucket = bucketOrEmpty(table, index)
  const { headFreshnessMs, k, maxPerGroup } = table.config
  if (!fitsNetworkCap([...bucket.entries, ...bucket.replacements], contact, maxPerGroup)) return false
  if (bucket.entries.length < k || bucket.replacements.length < table.config.replacementCacheSize) return true
  const head = bucket.entries[0]
  return (head !== undefined && now - head.lastSeen >= headFreshnessMs) || bucket.entries.some((entry) => entry.failures > 0)
}

/** Every contact in the buckets (replacements excluded), by bucket index then least-recently-seen first. */
export const allContacts = (table: RoutingTable): ReadonlyArray<Contact> => {
  const out: Array<Contact> = []
  for (const bucket of table.buckets) for (const entry of bucket.entries) out.push(entry.contact)
  return out
}

/** Number of contacts in the buckets (replacements excluded). */
export const contactCount = (table: RoutingTable): number => table.size

/** Bucket `index` (0..255); an empty bucket touched at creation when it was never used. */
export const bucketAt = (table: RoutingTable, index: number): Bucket => {
  requireBucketIndex(index)
  return bucketOrEmpty(table, index)
}

/**
 * The `n` contacts closest to `target` by XOR distance, closest first,
 * skipping those for which `exclude` holds. Exact, not approximate: with
 * c = cpl(self, target), every contact of bucket c is closer to the target
 * than every contact of a deeper bucket (their distance has its first set bit
 * after c versus at c), those in turn are closer than bucket c-1, then c-2,
 * and so on down to bucket 0. Walking buckets in that order, only one group
 * at a time is sorted (one bucket, or the few deeper buckets together) and
 * the walk stops once `n` are found.
 */
export const closest = (
  table: RoutingTable,
  target: Key,
  n: number,
  exclude?: (nodeId: NodeId) => boolean
): ReadonlyArray<Contact> => {
  requireInteger("n", n, 0)
  const out: Array<Contact> = []
  if (n === 0) return out
  const buckets = table.buckets
  const targetBucket = bucketIndex(table.self, target)
  const firstAtOrDeeper = locate(buckets, targetBucket)

  const takeClosest = (group: ReadonlyArray<Entry>): void => {
    const candidates = exclude === undefined ? group.slice() : group.filter((e) => !exclude(e.contact.nodeId))
    candidates.sort((a, b) => compareDistance(target, a.contact.nodeId, b.contact.nodeId))
    for (const entry of candidates) {
      if (out.length >= n) return
      out.push(entry.contact)
    }
  }

  let deeperStart = firstAtOrDeeper
  const sameBucket = buckets[firstAtOrDeeper]
  if (sameBucket !== undefined && sameBucket.index === targetBucket) {
    takeClosest(sameBucket.entries)
    deeperStart++
  }
  if (out.length < n && deeperStart < buckets.length) {
    const deeper: Array<Entry> = []
    for (let i = deeperStart; i < buckets.length; i++) deeper.push(...(buckets[i] as Bucket).entries)
    takeClosest(deeper)
  }
  for (let i = firstAtOrDeeper - 1; i >= 0 && out.length < n; i--) takeClosest((buckets[i] as Bucket).entries)
  return out
}

/**
 * Indices of the buckets not touched for more than `maxAgeMs` at `now`, among
 * buckets 0..deepest non-empty + 1 (deeper buckets are empty and only a
 * lookup of our own id can fill them). The shell refreshes each with a lookup
 * of `randomKeyInBucket` and then calls `touchBucket`.
 */
export const staleBuckets = (table: RoutingTable, now: number, maxAgeMs: number): ReadonlyArray<number> => {
  if (!Number.isFinite(maxAgeMs) || maxAgeMs < 0) {
    throw new RangeError(`maxAgeMs must be a finite number >= 0, got ${maxAgeMs}`)
  }
  let deepestNonEmpty = -1
  for (let i = table.buckets.length - 1; i >= 0; i--) {
    const bucket = table.buckets[i] as Bucket
    if (bucket.entries.length > 0) {
      deepestNonEmpty = bucket.index
      break
    }
  }
  const last = Math.min(ID_BITS - 1, deepestNonEmpty + 1)
  const stale: Array<number> = []
  let position = 0
  for (let index = 0; index <= last; index++) {
    while (position < table.buckets.length && (table.buckets[position] as Bucket).index < index) position++
    const bucket = table.buckets[position]
    const lastTouched = bucket !== undefined && bucket.index === index ? bucket.lastTouched : table.createdAt
    if (now - lastTouched > maxAgeMs) stale.push(index)
  }
  return stale
}
