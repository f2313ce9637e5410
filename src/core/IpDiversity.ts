/**
 * Crowding resistance for the routing table and lookup results, after
 * go-libp2p-kbucket's diversity filter: no network (an IPv4 /24, an IPv6 /48,
 * see `addressGroupOf`) may hold more than a few places. Ids are cheap to
 * make, addresses in one rented subnet are cheap too, but distinct networks
 * are not; so an attacker who wants to fill a bucket, or the k closest of a
 * key (an eclipse), needs as many networks as places, not as many ids.
 *
 * Both checks are pure and read hosts as written: a host name is its own
 * group (resolving it would need DNS), so the filter is only as strong as
 * the addresses peers advertise are checked elsewhere. Loopback and private
 * addresses are grouped like any other (tests that run many nodes on one
 * machine use distinct `127.x.y.z` networks).
 *
 * @since 0.1.0
 */
import { addressGroupOf } from "./AddressGroup.js"

/**
 * Default cap per network: 2 (the per-bucket cap go-libp2p-kad-dht's
 * diversity filter is usually configured with). Two, not one, so that a
 * couple of honest nodes sharing a NAT or a small hosting subnet both fit;
 * with buckets of k = 20, filling one still takes 10 networks.
 */
export const DEFAULT_MAX_PER_GROUP = 2

const requireCap = (maxPerGroup: number): void => {
  // Infinity is allowed: it turns the filter off.
  if (!(maxPerGroup >= 0) || (Number.isFinite(maxPerGroup) && !Number.isInteger(maxPerGroup))) {
    throw new RangeError(`maxPerGroup must be an integer >= 0 or Infinity, got ${maxPerGroup}`)
  }
}

/**
 * Whether `candidateHost` may join `existingHosts` (say, a bucket's contacts)
 * without its network exceeding `maxPerGroup` places: fewer than
 * `maxPerGroup` existing hosts are in its group. Every existing host counts,
 * so a caller re-admitting a known contact should leave it out of
 * `existingHosts`. Throws a RangeError for a negative or fractional cap.
 */
export const withinDiversity = (
  existingHosts: Iterable<string>,
  candidateHost: string,
  maxPerGroup: number = DEFAULT_MAX_PER_GROUP
): boolean => {
  requireCap(maxPerGroup)
  if (maxPerGroup === 0) return false
  const group = addressGroupOf(candidateHost)
  let count = 0
  for (const host of existingHosts) {
    if (addressGroupOf(host) === group && ++count >= maxPerGroup) return false
  }
  return true
}

/**
 * The items of `items` in their order, keeping only the first `maxPerGroup`
 * of each network (the network of `hostOf(item)`): for trimming a lookup's
 * result set, sorted closest first, so that each network keeps its closest
 * members. The result is a subsequence of `items` and `items` is not
 * modified. Throws a RangeError for a negative or fractional cap.
 */
export const limitPerGroup = <T>(
  items: ReadonlyArray<T>,
  hostOf: (item: T) => string,
  maxPerGroup: number = DEFAULT_MAX_PER_GROUP
): Array<T> => {
  requireCap(maxPerGroup)
  const counts = new Map<string, number>()
  const kept: Array<T> = []
  for (const item of items) {
    const group = addressGroupOf(hostOf(item))
    const count = counts.get(group) ?? 0
    if (count < maxPerGroup) {
      counts.set(group, count + 1)
      kept.push(item)
    }
  }
  return kept
}
