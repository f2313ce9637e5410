/**
 * Raw private keys into `node:crypto`: the fast JWK import of a private half
 * alone must give exactly the key the PKCS#8 import (RFC 8410) gives, or a
 * node's id, signatures and key agreements would change with the import.
 */
import { createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject, randomBytes, sign, verify } from "node:crypto"
import { describe, expect, it } from "vitest"
import { encryptionKeyFromSeed, importRawPrivateKey, importRawPrivateKeyAsPkcs8, signingKeyFromSeed } from "../../src/platform/NodeCrypto.js"

const viaPkcs8 = importRawPrivateKeyAsPkcs8

const publicJwk = (key: KeyObject) => createPublicKey(key).export({ format: "jwk" }).x

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

  it("both imports give RFC 8032's and RFC 7748's public keys for their test secrets", () => {
    const hex = (text: string) => Uint8Array.from(Buffer.from(text, "hex"))
    // RFC 8032, section 7.1, test 1; RFC 7748, section 6.1, Alice.
    const ed25519 = { secret: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", public: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a" }
    const x25519 = { secret: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", public: "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a" }
    for (const [curve, vector] of [["Ed25519", ed25519], ["X25519", x25519]] as const) {
      for (const importKey of [importRawPrivateKey, importRawPrivateKeyAsPkcs8]) {
        expect(Buffer.from(publicJwk(importKey(curve, hex(vector.secret))) ?? "", "base64url").toString("hex")).toBe(vector.public)
      }
    }
  })

  it("a private key of any other length is refused", () => {
    expect(() => importRawPrivateKey("Ed25519", new Uint8Array(31))).toThrow(RangeError)
    expect(() => importRawPrivateKey("X25519", new Uint8Array(33))).toThrow(RangeError)
  })
})
