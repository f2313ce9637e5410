/**
 * The XOR metric of Kademlia over hex-encoded 256-bit keys. Comparisons walk
 * the hex digits directly, so ordering contacts by distance allocates nothing;
 * `xorDistance` gives the exact value as a bigint where one is needed.
 *
 * @since 0.1.0
 */
import { hexDigitAt } from "./Bytes.js"
import { ID_BITS, type Key } from "./Id.js"

const HEX_DIGITS_PER_ID = ID_BITS / 4

/** The XOR distance between two keys, as an unsigned 256-bit integer. */
export const xorDistance = (a: Key, b: Key): bigint => BigInt(`0x${a}`) ^ BigInt(`0x${b}`)

/**
 * Orders `a` and `b` by their distance to `target`: negative when `a` is
 * closer, positive when `b` is closer, 0 when they are the same key.
 */
export const compareDistance = (target: Key, a: Key, b: Key): number => {
  for (let i = 0; i < HEX_DIGITS_PER_ID; i++) {
    const t = hexDigitAt(target, i)
    const da = hexDigitAt(a, i) ^ t
    const db = hexDigitAt(b, i) ^ t
    if (da !== db) return da - db
  }
  return 0
}

/**
 * Number of leading bits `a` and `b` share: 0 when they differ in the first
 * bit, `ID_BITS` when they are equal.
 */
export const commonPrefixLength = (a: Key, b: Key): number => {
  for (let i = 0; i < HEX_DIGITS_PER_ID; i++) {
    const x = hexDigitAt(a, i) ^ hexDigitAt(b, i)
    // clz32 counts 28 zero bits above a 4-bit value.
    if (x !== 0) return 4 * i + Math.clz32(x) - 28
  }
  return ID_BITS
}

/**
 * The k-bucket a contact belongs to in the table of `self`: its common-prefix
 * length with `self`. Bucket 0 holds the farthest half of the key space;
 * `ID_BITS` (only for `other === self`) has no bucket.
 */
export const bucketIndex = (self: Key, other: Key): number => commonPrefixLength(self, other)

/** True when `candidate` is strictly closer to `target` than `reference`. */
export const isCloser = (target: Key, candidate: Key, reference: Key): boolean =>
  compareDistance(target, candidate, reference) < 0

/** A copy of `items` sorted by the distance of `keyOf(item)` to `target`, closest first. */
export const sortByDistance = <A>(
  target: Key,
  items: Iterable<A>,
  keyOf: (item: A) => Key
): Array<A> => Array.from(items).sort((x, y) => compareDistance(target, keyOf(x), keyOf(y)))
