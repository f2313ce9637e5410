/**
 * Identifiers of the 256-bit Kademlia key space. A `Key` is any point of the
 * space (a user key, a random refresh target); a `NodeId` is a key that names
 * a node. Both travel as 64 lower-case hex characters, which is also their
 * in-memory form: strings compare, hash and serialize for free, and the
 * distance functions read them digit by digit without allocating.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { fromHex, toHex } from "./Bytes.js"
import { type HashFunction, sha256 } from "./Sha256.js"

/** Number of bits in an identifier. */
export const ID_BITS = 256

/** Number of bytes in an identifier. */
export const ID_BYTES = ID_BITS / 8

const HEX_ID = /^[0-9a-f]{64}$/

/** True when `text` is a key's form: 64 lower-case hex characters (what `Key` and `NodeId` check). */
export const isKeyText = (text: string): boolean => HEX_ID.test(text)

/** Any point of the key space, as 64 lower-case hex characters. */
export const Key = Schema.String.pipe(
  Schema.pattern(HEX_ID, { message: () => "expected 64 lower-case hex characters (a 256-bit id)" }),
  Schema.brand("peerchat/Key")
)
/** @see Key */
export type Key = typeof Key.Type

/** A key that names a node: SHA-256 of the node's Ed25519 public key. */
export const NodeId = Key.pipe(Schema.brand("peerchat/NodeId"))
/** @see NodeId */
export type NodeId = typeof NodeId.Type

/** Source of uniformly random bytes, passed in by the shell (seeded in simulation). */
export type RandomBytes = (length: number) => Uint8Array

/**
 * A deterministic `RandomBytes` (xorshift32) from a 32-bit seed, for
 * simulations and benchmarks where a seed must name every key: never for
 * real keys.
 */
export const seededRandomBytes = (seed: number): RandomBytes => {
  let state = seed >>> 0 || 0x9e3779b9
  return (length) => {
    const out = new Uint8Array(length)
    for (let i = 0; i < length; i++) {
      state ^= state << 13
      state ^= state >>> 17
      state ^= state << 5
      out[i] = state & 0xff
    }
    return out
  }
}

/** Key from exactly 32 bytes; throws on any other length, which is a programming error. */
export const keyFromBytes = (bytes: Uint8Array): Key => {
  if (bytes.length !== ID_BYTES) {
    throw new RangeError(`an id is ${ID_BYTES} bytes, got ${bytes.length}`)
  }
  return toHex(bytes) as Key
}

/** The 32 bytes of a key. */
export const keyToBytes = (key: Key): Uint8Array => {
  // The schema guarantees 64 hex digits, so decoding cannot fail.
  return fromHex(key) as Uint8Array
}

/** Node id of the node whose Ed25519 public key is `publicKey`. */
export const nodeIdFromPublicKey = (publicKey: Uint8Array, hash: HashFunction = sha256): NodeId =>
  keyFromBytes(hash(publicKey)) as NodeId

/** A uniformly random key. */
export const randomKey = (randomBytes: RandomBytes): Key => keyFromBytes(randomBytes(ID_BYTES))

/** A uniformly random node id (for tests and simulations; real ids come from keys). */
export const randomNodeId = (randomBytes: RandomBytes): NodeId => randomKey(randomBytes) as NodeId

/**
 * A random key whose common-prefix length with `self` is exactly `bucket`:
 * the first `bucket` bits equal `self`, bit `bucket` differs, the rest are
 * random. Used to refresh a bucket with a lookup that lands inside it.
 */
export const randomKeyInBucket = (self: Key, bucket: number, randomBytes: RandomBytes): Key => {
  if (!Number.isInteger(bucket) || bucket < 0 || bucket >= ID_BITS) {
    throw new RangeError(`bucket index must be an integer in [0, ${ID_BITS}), got ${bucket}`)
  }
  const selfBytes = keyToBytes(self)
  const out = randomBytes(ID_BYTES).slice()
  const byteIndex = bucket >>> 3
  const bitInByte = bucket & 7
  for (let i = 0; i < byteIndex; i++) out[i] = selfBytes[i] as number
  const flipMask = 0x80 >>> bitInByte
  const prefixMask = (0xff00 >>> bitInByte) & 0xff
  const selfByte = selfBytes[byteIndex] as number
  const randomTail = (out[byteIndex] as number) & ~prefixMask & ~flipMask & 0xff
  out[byteIndex] = (selfByte & prefixMask) | (~selfByte & flipMask) | randomTail
  return keyFromBytes(out)
}
