/**
 * Raw private keys into `node:crypto`: the fast JWK import of a private half
 * alone must give exactly the key the PKCS#8 import (RFC 8410) gives, or a
 * node's id, signatures and key agreements would change with the import.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, sign, verify } from "node:crypto"
import { describe, expect, it } from "vitest"
import { encryptionKeyFromSeed, importRawPrivateKey, signingKeyFromSeed } from "../../src/platform/NodeCrypto.js"

const PKCS8_PREFIXES = {
  Ed25519: Buffer.from("302e020100300506032b657004220420", "hex"),
  X25519: Buffer.from("302e020100300506032b656e04220420", "hex")
}

const viaPkcs8 = (curve: "Ed25519" | "X25519", seed: Uint8Array) =>
  createPrivateKey({ key: Buffer.concat([PKCS8_PREFIXES[curve], seed]), format: "der", type: "pkcs8" })

const publicJwk = (key: ReturnType<typeof createPrivateKey>) => createPublicKey(key).export({ format: "jwk" }).x

/** Edge seeds (all zeros, all ones, a clamped bit pattern) and random ones. */
const seeds = [new Uint8Array(32), new Uint8Array(32).fill(0xff), new Uint8Array(32).fill(0x40), ...Array.from({ length: 20 }, () => new Uint8Array(randomBytes(32)))]

describe("raw private keys", () => {
  it("an Ed25519 seed imported as JWK is the PKCS#8 key: the same public key, and each verifies the other's signatures", () => {
    const message = Buffer.from("peerchat")
    for (const seed of seeds) {
      const fast = importRawPrivateKey("Ed25519", seed)
      const reference = viaPkcs8("Ed25519", seed)
      expect(publicJwk(fast)).toBe(publicJwk(reference))
      expect(verify(null, message, createPublicKey(reference), sign(null, message, fast))).toBe(true)
      expect(Buffer.from(signingKeyFromSeed(seed).publicKey).toString("base64url")).toBe(publicJwk(reference))
    }
  })

  it("an X25519 private key imported as JWK is the PKCS#8 key: the same public key and the same shared secrets", () => {
    const peer = generateKeyPairSync("x25519")
    for (const seed of seeds) {
      const fast = importRawPrivateKey("X25519", seed)
      const reference = viaPkcs8("X25519", seed)
      expect(publicJwk(fast)).toBe(publicJwk(reference))
      expect(diffieHellman({ privateKey: fast, publicKey: peer.publicKey }))
        .toEqual(diffieHellman({ privateKey: reference, publicKey: peer.publicKey }))
      expect(Buffer.from(encryptionKeyFromSeed(seed).publicKey).toString("base64url")).toBe(publicJwk(reference))
    }
  })

  it("a private key of any other length is refused", () => {
    expect(() => importRawPrivateKey("Ed25519", new Uint8Array(31))).toThrow(RangeError)
    expect(() => importRawPrivateKey("X25519", new Uint8Array(33))).toThrow(RangeError)
  })
})
