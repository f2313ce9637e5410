/**
 * Ed25519 and X25519 keys, signatures and SHA-256 from `node:crypto`, in the
 * raw forms the rest of Peerchat uses: 32-byte public keys, 32-byte private
 * seeds and 64-byte signatures as plain `Uint8Array`s. A private key is fully
 * determined by its seed, so a simulation derives every node's keys from one
 * seed and a stored identity is just two seeds. Node has no raw-key import,
 * so seeds and public keys are wrapped in the fixed PKCS#8 / SPKI DER headers
 * of RFC 8410.
 *
 * @since 0.1.0
 */
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  type KeyObject,
  randomBytes,
  sign as nodeSign,
  verify as nodeVerify
} from "node:crypto"
import type { HashFunction } from "../core/Sha256.js"
import type { VerifySignature } from "../core/UserRecord.js"
import { KEY_BYTES, SIGNATURE_BYTES } from "../core/KeySizes.js"

// RFC 8410 DER headers; the raw 32 bytes follow directly.
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")
const X25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex")

/** A key pair: the raw public key, the seed it derives from, and the private key ready for `node:crypto`. */
export interface KeyPair {
  /** Raw 32-byte public key. */
  readonly publicKey: Uint8Array
  /** Raw 32-byte private key (seed); what gets stored. */
  readonly seed: Uint8Array
  /** The private key as a `node:crypto` object, for signing or key agreement. */
  readonly privateKey: KeyObject
}

const requireSeed = (seed: Uint8Array): void => {
  if (seed.length !== KEY_BYTES) {
    throw new RangeError(`a private key seed is ${KEY_BYTES} bytes, got ${seed.length}`)
  }
}

// As JWK: about 2 µs, against 100 µs as SPKI DER on Node 20 (OpenSSL's DER encoder lookup).
const rawPublicKey = (privateKey: KeyObject): Uint8Array => {
  const raw = new Uint8Array(Buffer.from(createPublicKey(privateKey).export({ format: "jwk" }).x ?? "", "base64url"))
  if (raw.length !== KEY_BYTES) throw new RangeError(`a public key of ${raw.length} bytes, not ${KEY_BYTES}`)
  return raw
}

/** The two curves whose 32-byte private keys Peerchat keeps raw. */
export type RawKeyCurve = "Ed25519" | "X25519"

const PKCS8_PREFIXES: Record<RawKeyCurve, Buffer> = { Ed25519: ED25519_PKCS8_PREFIX, X25519: X25519_PKCS8_PREFIX }

/**
 * A raw 32-byte private key as a `node:crypto` object. As a JWK of its
 * private half alone (about 40 µs on Node 20, against 530 µs through
 * OpenSSL's PKCS#8 decoder, which every node start paid twice or three
 * times): Node's JWK import of an OKP private key builds it from `d` and
 * derives the public half, and `x` must only be a string. Should a later
 * Node refuse that, or build a key without a public half, the PKCS#8 import
 * is used instead (a test holds both to the same key).
 */
export const importRawPrivateKey = (curve: RawKeyCurve, seed: Uint8Array): KeyObject => importRawKeyPair(curve, seed).privateKey

/** `importRawPrivateKey`'s key and its raw public half, exported once (the export checks the JWK import). */
const importRawKeyPair = (curve: RawKeyCurve, seed: Uint8Array): { readonly privateKey: KeyObject; readonly publicKey: Uint8Array } => {
  requireSeed(seed)
  const d = Buffer.from(seed.buffer, seed.byteOffset, seed.byteLength).toString("base64url")
  try {
    const privateKey = createPrivateKey({ key: { kty: "OKP", crv: curve, d, x: "" }, format: "jwk" })
    return { privateKey, publicKey: rawPublicKey(privateKey) }
  } catch {
    // Falls through to the PKCS#8 import.
  }
  const privateKey = importRawPrivateKeyAsPkcs8(curve, seed)
  return { privateKey, publicKey: rawPublicKey(privateKey) }
}

/** The same key through OpenSSL's PKCS#8 decoder (RFC 8410's header, then the raw 32 bytes): `importRawPrivateKey`'s fallback. */
export const importRawPrivateKeyAsPkcs8 = (curve: RawKeyCurve, seed: Uint8Array): KeyObject => {
  requireSeed(seed)
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIXES[curve], seed]), format: "der", type: "pkcs8" })
}

const keyPairFromSeed = (curve: RawKeyCurve, seed: Uint8Array): KeyPair => {
  const { privateKey, publicKey } = importRawKeyPair(curve, seed)
  return { publicKey, seed: new Uint8Array(seed), privateKey }
}

/** The Ed25519 key pair of a 32-byte seed; throws a RangeError for any other length. */
export const signingKeyFromSeed = (seed: Uint8Array): KeyPair => keyPairFromSeed("Ed25519", seed)

/** The X25519 key pair of a 32-byte private key; throws a RangeError for any other length. */
export const encryptionKeyFromSeed = (seed: Uint8Array): KeyPair => keyPairFromSeed("X25519", seed)

/** A fresh Ed25519 key pair from the operating system's secure random source. */
export const generateSigningKeyPair = (): KeyPair => signingKeyFromSeed(randomBytes(KEY_BYTES))

/**
 * A fresh X25519 key pair from the operating system's secure random source.
 * Any 32 bytes are a valid X25519 private key (clamping happens on use).
 */
export const generateEncryptionKeyPair = (): KeyPair => encryptionKeyFromSeed(randomBytes(KEY_BYTES))

/** Ed25519 signature (64 bytes) of `message` with an Ed25519 private key. */
export const sign = (privateKey: KeyObject, message: Uint8Array): Uint8Array =>
  new Uint8Array(nodeSign(null, message, privateKey))

/** Ed25519 verification; false for a wrong signature and for malformed keys or signatures, never a throw. */
export const verifyEd25519: VerifySignature = (publicKey, message, signature) => {
  if (publicKey.length !== KEY_BYTES || signature.length !== SIGNATURE_BYTES) return false
  try {
    // A JWK import costs about 5 µs; the same key as SPKI DER about 80 µs in Node 20 (measured), more
    // than the verification itself, and every record, handshake and mail check pays it.
    const x = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString("base64url")
    const key = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" })
    return nodeVerify(null, message, key, signature)
  } catch {
    // An encoding that is not a curve point is rejected by OpenSSL with an exception.
    return false
  }
}

/** HMAC-SHA256 by OpenSSL of `parts`, one after another, under `key`. */
export const hmacSha256 = (key: Uint8Array, ...parts: ReadonlyArray<Uint8Array>): Buffer => {
  const hmac = createHmac("sha256", key)
  for (const part of parts) hmac.update(part)
  return hmac.digest()
}

/** SHA-256 by OpenSSL: the same function as the core's `sha256`, faster. */
export const sha256Native: HashFunction = (data) => new Uint8Array(createHash("sha256").update(data).digest())
