import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc, Schema } from "effect"
import { createHash, generateKeyPairSync } from "node:crypto"
import { toHex } from "../../src/core/Bytes.js"
import { bucketIndex } from "../../src/core/Distance.js"
import {
  ID_BITS,
  Key,
  keyFromBytes,
  keyToBytes,
  NodeId,
  nodeIdFromPublicKey,
  randomKey,
  randomKeyInBucket
} from "../../src/core/Id.js"
import { arbKey, PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

const options = { fastCheck: { seed: PROPERTY_SEED, numRuns: 200 } }

describe("Key and NodeId", () => {
  it("decode 64 lower-case hex characters and nothing else", () => {
    const decode = Schema.decodeUnknownEither(NodeId)
    expect(decode("0".repeat(64))._tag).toBe("Right")
    expect(decode("f".repeat(64))._tag).toBe("Right")
    for (const bad of ["", "0".repeat(63), "0".repeat(65), "F".repeat(64), "g".repeat(64), 42, null]) {
      expect(decode(bad)._tag).toBe("Left")
    }
  })

  it.prop("bytes round-trip through the hex form", [fc.uint8Array({ minLength: 32, maxLength: 32 })], ([bytes]) => {
    const key = keyFromBytes(bytes)
    expect(Schema.is(Key)(key)).toBe(true)
    expect(keyToBytes(key)).toEqual(bytes)
  }, options)

  it("refuses byte arrays of the wrong length", () => {
    expect(() => keyFromBytes(new Uint8Array(31))).toThrow(RangeError)
  })

  it("a node id is the SHA-256 of its Ed25519 public key", () => {
    const { publicKey } = generateKeyPairSync("ed25519")
    const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32)
    const id = nodeIdFromPublicKey(raw)
    expect(id).toBe(createHash("sha256").update(raw).digest("hex"))
    expect(Schema.is(NodeId)(id)).toBe(true)
  })

  it("random keys come from the given source: the same seed gives the same keys", () => {
    const first = [randomKey(seededRandomBytes(7)), randomKey(seededRandomBytes(8))]
    const again = [randomKey(seededRandomBytes(7)), randomKey(seededRandomBytes(8))]
    expect(first).toEqual(again)
    expect(first[0]).not.toBe(first[1])
  })

  it.prop(
    "randomKeyInBucket lands in the requested bucket",
    [arbKey, fc.integer({ min: 0, max: ID_BITS - 1 }), fc.integer()],
    ([self, bucket, seed]) => {
      const key = randomKeyInBucket(self, bucket, seededRandomBytes(seed))
      expect(bucketIndex(self, key)).toBe(bucket)
    },
    options
  )

  it("randomKeyInBucket varies the bits after the prefix", () => {
    const self = toHex(new Uint8Array(32)) as Key
    const keys = new Set(Array.from({ length: 20 }, (_, i) => randomKeyInBucket(self, 3, seededRandomBytes(i + 1))))
    expect(keys.size).toBe(20)
  })
})
