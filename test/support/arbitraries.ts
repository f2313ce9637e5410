/**
 * Shared test inputs: fast-check arbitraries for ids and contacts, and a
 * small seeded byte generator for tests that need a reproducible stream of
 * random ids without fast-check.
 */
import { FastCheck as fc } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import type { Address, Contact } from "../../src/core/Contact.js"
import type { Key, NodeId, RandomBytes } from "../../src/core/Id.js"

/** Arbitrary 256-bit key. */
export const arbKey: fc.Arbitrary<Key> = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => toHex(bytes) as Key)

/** Arbitrary node id. */
export const arbNodeId: fc.Arbitrary<NodeId> = arbKey.map((key) => key as NodeId)

/** A loopback address whose port is derived from the id, so contacts are easy to tell apart. */
export const addressFor = (nodeId: NodeId): Address => ({
  host: "127.0.0.1",
  port: 1024 + (Number.parseInt(nodeId.slice(0, 4), 16) % 60000)
})

/** A contact for `nodeId` on a loopback address. */
export const contactFor = (nodeId: NodeId): Contact => ({ nodeId, address: addressFor(nodeId) })

/** Arbitrary contact. */
export const arbContact: fc.Arbitrary<Contact> = arbNodeId.map(contactFor)

/**
 * Deterministic byte stream (xorshift32 seeded from `seed`): the same seed
 * always yields the same ids.
 */
export const seededRandomBytes = (seed: number): RandomBytes => {
  let state = (seed | 0) === 0 ? 0x9e3779b9 : seed | 0
  const nextByte = (): number => {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return state & 0xff
  }
  return (length) => {
    const out = new Uint8Array(length)
    for (let i = 0; i < length; i++) out[i] = nextByte()
    return out
  }
}

/** Fixed seed for property tests, so a failure replays exactly. */
export const PROPERTY_SEED = 20141205
