/**
 * The Noise Protocol Framework (revision 34, https://noiseprotocol.org/noise.html)
 * for exactly one protocol, `Noise_XX_25519_ChaChaPoly_SHA256`, built on
 * `node:crypto` alone: X25519 key agreement, ChaCha20-Poly1305 and SHA-256 /
 * HMAC-SHA256. XX lets two peers that know nothing of each other's keys
 * exchange and authenticate their static X25519 keys in three messages and
 * leave with a pair of transport ciphers and a handshake hash for channel
 * binding. The module follows the spec's CipherState / SymmetricState /
 * HandshakeState structure (section 5) so that it can be read side by side
 * with it; the published test vectors check it byte for byte
 * (test/platform/Noise.test.ts).
 *
 * Noise messages are at most 65,535 bytes and carry no framing of their own,
 * so the module also provides the byte-stream layer used around them: every
 * handshake message and every transport record travels as a 2-byte
 * big-endian length followed by the message, `sealStream` cuts a plaintext of
 * any size into such records, and `LengthPrefixedReader` reassembles them
 * from socket chunks.
 *
 * Errors a peer can cause (bad ciphertext, short or oversized messages,
 * messages out of turn) are values (`Either` with a `NoiseError`); misuse
 * that only a programming error can cause (wrong key lengths, splitting an
 * unfinished handshake) throws.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  type KeyObject,
  randomBytes
} from "node:crypto"
import { Data, Either } from "effect"
import { encryptionKeyFromSeed, hmacSha256 } from "./NodeCrypto.js"

// -- Constants -----------------------------------------------------------------

/** The only protocol this module speaks; exactly 32 bytes, so it is used as the initial `h` unhashed. */
export const XX_PROTOCOL_NAME = "Noise_XX_25519_ChaChaPoly_SHA256"

/** The largest Noise message (handshake or transport) the spec allows, in bytes. */
export const MAX_NOISE_MESSAGE = 65535

/** Length of a ChaCha20-Poly1305 authentication tag. */
export const TAG_BYTES = 16

/** The largest plaintext one transport record can carry: a full message minus its tag. */
export const MAX_RECORD_PLAINTEXT = MAX_NOISE_MESSAGE - TAG_BYTES

/** Bytes of the big-endian length in front of every message on the byte stream. */
export const LENGTH_PREFIX_BYTES = 2

/** Length of an X25519 public or private key (DHLEN). */
export const X25519_KEY_BYTES = 32

const HASH_BYTES = 32
const EMPTY = new Uint8Array(0)
// The spec reserves n = 2^64 - 1; the counter is kept as two 32-bit halves so
// that every nonce up to the limit is exact without BigInt arithmetic per frame.
const MAX_HALF = 0xffff_ffff
// node:crypto has no raw-key import. Private keys go in through NodeCrypto's
// `encryptionKeyFromSeed` (rare: a static key is imported once, see
// privateKeyObjects). Public keys go in and out as JWK, which on Node 20 /
// OpenSSL 3 is about ten times faster than SPKI DER (~8 µs against ~80 µs per
// import; OpenSSL's DER decoder lookup dominates), and a handshake imports two
// and exports one per side.

/** A `Uint8Array` view of a Buffer's bytes (no copy), so callers never get Buffer's aliasing `slice`. */
const plain = (bytes: Buffer): Uint8Array => new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)

// -- Errors ----------------------------------------------------------------------

/**
 * Why a Noise operation refused its input:
 * - `Decrypt`: authentication failed (tampered, replayed, reordered, or wrong keys / prologue);
 * - `Malformed`: a message of impossible length, or a remote public key that is not usable for X25519;
 * - `OutOfOrder`: a read or write that is not this side's turn, or a handshake that already failed or ended;
 * - `NonceExhausted`: the cipher has used all 2^64 - 1 nonces.
 */
export class NoiseError extends Data.TaggedError("NoiseError")<{
  readonly reason: "Decrypt" | "Malformed" | "OutOfOrder" | "NonceExhausted"
  readonly detail: string
}> {
  override get message(): string {
    return `Noise ${this.reason}: ${this.detail}`
  }
}

const fail = (reason: NoiseError["reason"], detail: string): Either.Either<never, NoiseError> =>
  Either.left(new NoiseError({ reason, detail }))

// -- X25519 ----------------------------------------------------------------------

/** An X25519 key pair as raw 32-byte keys (the private key is the unclamped scalar as stored). */
export interface X25519KeyPair {
  readonly publicKey: Uint8Array
  readonly privateKey: Uint8Array
}

// The node:crypto private key of each pair this module created or has seen, so
// a node's long-lived static key is imported once, not on every handshake.
const privateKeyObjects = new WeakMap<X25519KeyPair, KeyObject>()

/** The raw 32 bytes of an X25519 public key in JWK form. */
const publicKeyOfJwk = (jwk: { readonly x?: string | undefined }): Uint8Array => plain(Buffer.from(jwk.x ?? "", "base64url"))

/**
 * `generateKeyPairSync` with only the public half encoded: Node documents that
 * each half with an encoding comes back as if exported and the other as a
 * `KeyObject`; `@types/node` types only both or neither.
 */
const generateWithPublicJwk = generateKeyPairSync as unknown as (
  type: "x25519",
  options: { readonly publicKeyEncoding: { readonly format: "jwk" } }
) => { readonly publicKey: { readonly x?: string | undefined }; readonly privateKey: KeyObject }

/**
 * A fresh X25519 key for one handshake: the private half as an OpenSSL key
 * (it never exists as raw bytes here), the public half as raw bytes, encoded
 * by the generation itself. Never exported from the key afterwards: on Node 20
 * the finished generation job, once collected, takes the lock of the key it
 * made, and an export holds that lock while it allocates, so a collection in
 * between deadlocked the process for good (docs/decisions.md, "Ephemeral keys
 * encoded by their generation").
 */
export const generateEphemeralKey = (): { readonly privateKey: KeyObject; readonly publicKey: Uint8Array } => {
  const { privateKey, publicKey } = generateWithPublicJwk("x25519", { publicKeyEncoding: { format: "jwk" } })
  return { privateKey, publicKey: publicKeyOfJwk(publicKey) }
}

/** The key and raw public half of a 32-byte X25519 private key (the public half exported once). */
const importPrivateKey = (privateKey: Uint8Array): { readonly privateKey: KeyObject; readonly publicKey: Uint8Array } => {
  if (privateKey.length !== X25519_KEY_BYTES) {
    throw new RangeError(`an X25519 private key is ${X25519_KEY_BYTES} bytes, got ${privateKey.length}`)
  }
  return encryptionKeyFromSeed(privateKey)
}

/** The key pair of a 32-byte X25519 private key; throws a RangeError for any other length. */
export const x25519KeyPairFromPrivate = (privateKey: Uint8Array): X25519KeyPair => {
  const imported = importPrivateKey(privateKey)
  const pair: X25519KeyPair = { publicKey: imported.publicKey, privateKey: new Uint8Array(privateKey) }
  privateKeyObjects.set(pair, imported.privateKey)
  return pair
}

/** A fresh X25519 key pair from the operating system's secure random source. */
export const generateX25519KeyPair = (): X25519KeyPair => x25519KeyPairFromPrivate(randomBytes(X25519_KEY_BYTES))

/**
 * The node:crypto key of a pair, checking that a pair built by hand is
 * consistent: a public key that does not match its private key would make the
 * peer's DH results differ from ours and fail in a confusing place.
 */
const privateKeyObjectOf = (pair: X25519KeyPair): KeyObject => {
  const cached = privateKeyObjects.get(pair)
  if (cached !== undefined) return cached
  const imported = importPrivateKey(pair.privateKey)
  if (!Buffer.from(imported.publicKey).equals(pair.publicKey)) {
    throw new RangeError("the X25519 public key does not belong to the private key")
  }
  privateKeyObjects.set(pair, imported.privateKey)
  return imported.privateKey
}

/** A remote public key as a node:crypto object; every 32-byte string is accepted here (validity shows in DH). */
const importPublicKey = (publicKey: Uint8Array): KeyObject =>
  createPublicKey({
    key: {
      kty: "OKP",
      crv: "X25519",
      x: Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString("base64url")
    },
    format: "jwk"
  })

/**
 * DH(key_pair, public_key). OpenSSL refuses low-order public keys (an all-zero
 * shared secret) by throwing; the spec allows rejecting them, and doing so
 * keeps a peer from forcing a known key, so that becomes `Malformed`.
 */
const dh = (privateKey: KeyObject, publicKey: KeyObject): Either.Either<Buffer, NoiseError> => {
  try {
    return Either.right(diffieHellman({ privateKey, publicKey }))
  } catch {
    return fail("Malformed", "the remote X25519 public key is of low order")
  }
}

/**
 * DH of a static key pair with a peer's static public key (the pair keys of
 * datagrams, `src/platform/Datagrams.ts`); `Malformed` for a low-order key.
 */
export const staticDh = (pair: X25519KeyPair, remotePublicKey: Uint8Array): Either.Either<Buffer, NoiseError> =>
  remotePublicKey.length === X25519_KEY_BYTES
    ? dh(privateKeyObjectOf(pair), importPublicKey(remotePublicKey))
    : fail("Malformed", `an X25519 public key is ${X25519_KEY_BYTES} bytes, got ${remotePublicKey.length}`)

// -- CipherState -----------------------------------------------------------------

/**
 * A ChaCha20-Poly1305 key and its 64-bit message counter (spec section 5.1).
 * Without a key it passes plaintext through unchanged, as the handshake needs
 * before the first DH. The key stays inside a secret `KeyObject`; the nonce
 * buffer is reused, since `createCipheriv` copies it on every call.
 */
export class CipherState {
  private readonly key: KeyObject | undefined
  /** Low and high 32 bits of the counter n. */
  private low = 0
  private high = 0
  /** The 96-bit AEAD nonce: 4 zero bytes, then n as 64-bit little-endian. */
  private readonly nonceBytes = Buffer.alloc(12)

  /** A cipher with the 32-byte key `key`, or the empty cipher (pass-through) without one. */
  constructor(key?: Uint8Array) {
    if (key !== undefined && key.length !== 32) throw new RangeError(`a cipher key is 32 bytes, got ${key.length}`)
    this.key = key === undefined ? undefined : createSecretKey(key)
  }

  /** Whether a key is set (false: the cipher passes data through). */
  get hasKey(): boolean {
    return this.key !== undefined
  }

  /** The nonce the next encryption or decryption uses. */
  get nonce(): bigint {
    return (BigInt(this.high) << 32n) | BigInt(this.low)
  }

  /** Sets the next nonce (the spec's SetNonce, for tests and for transports that number records themselves). */
  setNonce(nonce: bigint): void {
    if (nonce < 0n || nonce > 0xffff_ffff_ffff_ffffn) throw new RangeError("a Noise nonce is a 64-bit unsigned integer")
    this.low = Number(nonce & 0xffff_ffffn)
    this.high = Number(nonce >> 32n)
    this.nonceBytes.writeUInt32LE(this.low, 4)
    this.nonceBytes.writeUInt32LE(this.high, 8)
  }

  /**
   * Encrypts `plaintext` with associated data `ad`: ciphertext ‖ 16-byte tag.
   * Without a key it returns `plaintext` itself. Throws a `NoiseError`
   * (`NonceExhausted`) after 2^64 - 1 messages, which no connection reaches;
   * sending more would reuse a nonce.
   */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.key === undefined) return plaintext
    const out = new Uint8Array(plaintext.length + TAG_BYTES)
    this.encryptInto(ad, plaintext, out, 0)
    return out
  }

  /**
   * Decrypts and authenticates `ciphertext` (ciphertext ‖ tag) with associated
   * data `ad`. Without a key it returns `ciphertext` itself. A failure leaves
   * the nonce where it was, so a forged or damaged record cannot desynchronise
   * the two sides.
   */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    if (this.key === undefined) return Either.right(ciphertext)
    if (this.exhausted()) return fail("NonceExhausted", "all 2^64 - 1 nonces of this cipher are used")
    if (ciphertext.length < TAG_BYTES) {
      return fail("Malformed", `a ciphertext of ${ciphertext.length} bytes is shorter than the ${TAG_BYTES}-byte tag`)
    }
    const bodyLength = ciphertext.length - TAG_BYTES
    const decipher = createDecipheriv("chacha20-poly1305", this.key, this.nonceBytes, { authTagLength: TAG_BYTES })
    if (ad.length > 0) decipher.setAAD(ad, { plaintextLength: bodyLength })
    decipher.setAuthTag(ciphertext.subarray(bodyLength))
    const plaintext = decipher.update(ciphertext.subarray(0, bodyLength))
    try {
      decipher.final()
    } catch {
      return fail("Decrypt", "authentication failed")
    }
    this.advance()
    return Either.right(plain(plaintext))
  }

  /** Encrypts into `out` at `offset` (plaintext length + 16 bytes); needs a key. */
  encryptInto(ad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, offset: number): void {
    if (this.key === undefined) throw new RangeError("encryptInto needs a cipher with a key")
    if (this.exhausted()) {
      throw new NoiseError({ reason: "NonceExhausted", detail: "all 2^64 - 1 nonces of this cipher are used" })
    }
    const cipher = createCipheriv("chacha20-poly1305", this.key, this.nonceBytes, { authTagLength: TAG_BYTES })
    if (ad.length > 0) cipher.setAAD(ad, { plaintextLength: plaintext.length })
    const body = cipher.update(plaintext)
    cipher.final()
    out.set(body, offset)
    out.set(cipher.getAuthTag(), offset + body.length)
    this.advance()
  }

  private exhausted(): boolean {
    return this.low === MAX_HALF && this.high === MAX_HALF
  }

  private advance(): void {
    if (this.low === MAX_HALF) {
      this.low = 0
      this.high++
      this.nonceBytes.writeUInt32LE(this.high, 8)
    } else {
      this.low++
    }
    this.nonceBytes.writeUInt32LE(this.low, 4)
  }
}

// -- SymmetricState --------------------------------------------------------------

const sha256 = (...parts: ReadonlyArray<Uint8Array>): Buffer => {
  const hash = createHash("sha256")
  for (const part of parts) hash.update(part)
  return hash.digest()
}

const BYTE_1 = Uint8Array.of(1)
const BYTE_2 = Uint8Array.of(2)

/** HKDF(chaining_key, input_key_material, 2) exactly as section 4.3 writes it. */
const hkdf2 = (chainingKey: Uint8Array, inputKeyMaterial: Uint8Array): readonly [Buffer, Buffer] => {
  const tempKey = hmacSha256(chainingKey, inputKeyMaterial)
  const output1 = hmacSha256(tempKey, BYTE_1)
  const output2 = hmacSha256(tempKey, output1, BYTE_2)
  return [output1, output2]
}

/** Section 5.2: the chaining key, the handshake hash and the current handshake cipher. */
class SymmetricState {
  private chainingKey: Buffer
  /** h; replaced on every MixHash, never changed in place. */
  hash: Buffer
  private cipher = new CipherState()

  /** InitializeSymmetric(protocol_name). */
  constructor(protocolName: string) {
    const name = Buffer.from(protocolName, "ascii")
    if (name.length <= HASH_BYTES) {
      // Short names are used as they are, zero-padded to HASHLEN.
      this.hash = Buffer.alloc(HASH_BYTES)
      name.copy(this.hash)
    } else {
      this.hash = sha256(name)
    }
    this.chainingKey = Buffer.from(this.hash)
  }

  mixKey(inputKeyMaterial: Uint8Array): void {
    const [chainingKey, tempKey] = hkdf2(this.chainingKey, inputKeyMaterial)
    this.chainingKey = chainingKey
    this.cipher = new CipherState(tempKey)
    // The KeyObject holds its own copy; do not leave the key in the JS heap.
    tempKey.fill(0)
  }

  mixHash(data: Uint8Array): void {
    this.hash = sha256(this.hash, data)
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipher.encryptWithAd(this.hash, plaintext)
    this.mixHash(ciphertext)
    return ciphertext
  }

  decryptAndHash(ciphertext: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    const plaintext = this.cipher.decryptWithAd(this.hash, ciphertext)
    if (Either.isRight(plaintext)) this.mixHash(ciphertext)
    return plaintext
  }

  /** Split(): the initiator-to-responder and responder-to-initiator ciphers. */
  split(): readonly [CipherState, CipherState] {
    const [key1, key2] = hkdf2(this.chainingKey, EMPTY)
    const ciphers = [new CipherState(key1), new CipherState(key2)] as const
    // Nothing may derive keys from this state again, and the KeyObjects hold their own copies.
    this.chainingKey.fill(0)
    key1.fill(0)
    key2.fill(0)
    return ciphers
  }
}

// -- HandshakeState (XX) ---------------------------------------------------------

/** How to start one side of an XX handshake. */
export interface XXHandshakeOptions {
  /** True on the side that sends the first message (the one that opened the connection). */
  readonly initiator: boolean
  /** Bytes both sides must agree on (e.g. a protocol version string); a mismatch fails message 2. */
  readonly prologue: Uint8Array
  /** This side's long-term key, which the peer learns and authenticates. */
  readonly staticKeyPair: X25519KeyPair
  /**
   * For test vectors only: a fixed ephemeral key. Reusing an ephemeral key
   * across handshakes destroys forward secrecy; leave it out and a fresh one is generated.
   */
  readonly ephemeralKeyPair?: X25519KeyPair
}

/** Wire sizes of the XX messages without payload: `e`; `e, ee, s, es`; `s, se`. */
const MESSAGE_OVERHEAD: readonly [number, number, number] = [
  X25519_KEY_BYTES,
  X25519_KEY_BYTES + X25519_KEY_BYTES + TAG_BYTES + TAG_BYTES,
  X25519_KEY_BYTES + TAG_BYTES + TAG_BYTES
]

/**
 * One side of `Noise_XX_25519_ChaChaPoly_SHA256` (section 7.5):
 *
 * ```
 * -> e
 * <- e, ee, s, es
 * -> s, se
 * ```
 *
 * Call `writeMessage` and `readMessage` in turn (initiator: write, read,
 * write; responder: read, write, read), then `split`. The payload of the
 * first message is neither encrypted nor authenticated when it is read (the
 * second message authenticates it after the fact), and the second message's
 * payload goes to a peer the responder has not authenticated yet, so send
 * nothing secret before the third message. Any failure except a length check
 * ends the handshake: the state has already absorbed part of the message.
 */
export class XXHandshake {
  private readonly initiator: boolean
  private readonly symmetric: SymmetricState
  private readonly staticKeyPair: X25519KeyPair
  private readonly staticKey: KeyObject
  private readonly fixedEphemeral: X25519KeyPair | undefined
  private ephemeralKey: KeyObject | undefined
  private remoteEphemeral: KeyObject | undefined
  private remoteStatic: KeyObject | undefined
  private remoteStaticBytes: Uint8Array | undefined
  /** Index of the next message of the pattern (0, 1, 2), 3 once complete. */
  private index = 0
  private failed = false
  private splitDone = false

  constructor(options: XXHandshakeOptions) {
    this.initiator = options.initiator
    this.staticKeyPair = options.staticKeyPair
    this.staticKey = privateKeyObjectOf(options.staticKeyPair)
    this.fixedEphemeral = options.ephemeralKeyPair
    this.symmetric = new SymmetricState(XX_PROTOCOL_NAME)
    this.symmetric.mixHash(options.prologue)
  }

  /** Whether all three messages have been exchanged (and `split` may be called). */
  get isComplete(): boolean {
    return this.index === 3 && !this.failed
  }

  /** Whether this side sends the next message (false when complete or failed). */
  get isMyTurnToWrite(): boolean {
    return !this.failed && this.index < 3 && (this.index % 2 === 0) === this.initiator
  }

  /** The peer's static public key once a message has carried it (the responder learns it last). */
  get remoteStaticKey(): Uint8Array | undefined {
    return this.remoteStaticBytes === undefined ? undefined : new Uint8Array(this.remoteStaticBytes)
  }

  /**
   * The handshake hash `h`; once complete, it is the same on both sides and
   * unique to this session, which makes it a channel binding to sign.
   */
  get handshakeHash(): Uint8Array {
    return new Uint8Array(this.symmetric.hash)
  }

  /** The next handshake message, carrying `payload`. */
  writeMessage(payload: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    const turn = this.checkTurn(true)
    if (turn !== undefined) return turn
    const index = this.index as 0 | 1 | 2
    if (MESSAGE_OVERHEAD[index] + payload.length > MAX_NOISE_MESSAGE) {
      return fail("Malformed", `a payload of ${payload.length} bytes makes handshake message ${index + 1} exceed ${MAX_NOISE_MESSAGE} bytes`)
    }
    const result = this.writeTokens(index, payload)
    this.settle(result)
    return result
  }

  /** Processes the peer's next handshake message and returns its payload. */
  readMessage(message: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    const turn = this.checkTurn(false)
    if (turn !== undefined) return turn
    const index = this.index as 0 | 1 | 2
    // Checked before any state changes, so a short message can be answered by closing, not by a corrupted state.
    if (message.length < MESSAGE_OVERHEAD[index] || message.length > MAX_NOISE_MESSAGE) {
      return fail("Malformed", `handshake message ${index + 1} of ${message.length} bytes; it needs ${MESSAGE_OVERHEAD[index]} to ${MAX_NOISE_MESSAGE}`)
    }
    const result = this.readTokens(index, message)
    this.settle(result)
    return result
  }

  /**
   * Split(): the transport ciphers, oriented for this side (the initiator
   * sends with the first, the responder with the second). Throws a
   * `NoiseError` (`OutOfOrder`) before completion or on a second call: two
   * copies of the same cipher would reuse nonces.
   */
  split(): { readonly send: CipherState; readonly receive: CipherState } {
    if (!this.isComplete || this.splitDone) {
      throw new NoiseError({ reason: "OutOfOrder", detail: this.splitDone ? "split was already called" : "the handshake is not complete" })
    }
    this.splitDone = true
    const [initiatorToResponder, responderToInitiator] = this.symmetric.split()
    return this.initiator
      ? { send: initiatorToResponder, receive: responderToInitiator }
      : { send: responderToInitiator, receive: initiatorToResponder }
  }

  private checkTurn(writing: boolean): Either.Either<never, NoiseError> | undefined {
    if (this.failed) return fail("OutOfOrder", "the handshake has already failed")
    if (this.index >= 3) return fail("OutOfOrder", "the handshake is complete")
    if (this.isMyTurnToWrite !== writing) {
      return fail("OutOfOrder", `handshake message ${this.index + 1} is the ${writing ? "peer's to send" : "this side's to send"}`)
    }
    return undefined
  }

  private settle(result: Either.Either<Uint8Array, NoiseError>): void {
    if (Either.isLeft(result)) this.failed = true
    else this.index++
  }

  private writeTokens(index: 0 | 1 | 2, payload: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    const parts: Array<Uint8Array> = []
    if (index === 0 || index === 1) {
      // e
      const ephemeralPublic = this.makeEphemeral()
      parts.push(ephemeralPublic)
      this.symmetric.mixHash(ephemeralPublic)
    }
    if (index === 1) {
      // ee, s, es (responder)
      const ee = this.mix(this.ephemeral(), this.remoteEphemeralKey())
      if (ee !== undefined) return ee
      parts.push(this.symmetric.encryptAndHash(this.staticKeyPair.publicKey))
      const es = this.mix(this.staticKey, this.remoteEphemeralKey())
      if (es !== undefined) return es
    }
    if (index === 2) {
      // s, se (initiator)
      parts.push(this.symmetric.encryptAndHash(this.staticKeyPair.publicKey))
      const se = this.mix(this.staticKey, this.remoteEphemeralKey())
      if (se !== undefined) return se
    }
    parts.push(this.symmetric.encryptAndHash(payload))
    return Either.right(plain(Buffer.concat(parts)))
  }

  private readTokens(index: 0 | 1 | 2, message: Uint8Array): Either.Either<Uint8Array, NoiseError> {
    let position = 0
    if (index === 0 || index === 1) {
      // e: copied, since the caller may reuse the message's buffer.
      const remoteEphemeral = message.slice(0, X25519_KEY_BYTES)
      position = X25519_KEY_BYTES
      this.symmetric.mixHash(remoteEphemeral)
      this.remoteEphemeral = importPublicKey(remoteEphemeral)
    }
    if (index === 1) {
      // ee, s, es (initiator reading)
      const ee = this.mix(this.ephemeral(), this.remoteEphemeralKey())
      if (ee !== undefined) return ee
      const remoteStatic = this.readStatic(message.subarray(position, position + X25519_KEY_BYTES + TAG_BYTES))
      if (remoteStatic !== undefined) return remoteStatic
      position += X25519_KEY_BYTES + TAG_BYTES
      const es = this.mix(this.ephemeral(), this.remoteStaticKeyObject())
      if (es !== undefined) return es
    }
    if (index === 2) {
      // s, se (responder reading)
      const remoteStatic = this.readStatic(message.subarray(0, X25519_KEY_BYTES + TAG_BYTES))
      if (remoteStatic !== undefined) return remoteStatic
      position = X25519_KEY_BYTES + TAG_BYTES
      const se = this.mix(this.ephemeral(), this.remoteStaticKeyObject())
      if (se !== undefined) return se
    }
    const payload = this.symmetric.decryptAndHash(message.subarray(position))
    // The first message's payload is the caller's bytes passed through; copy it like the decrypted ones are fresh.
    return index === 0 ? Either.map(payload, (bytes) => bytes.slice()) : payload
  }

  private readStatic(ciphertext: Uint8Array): Either.Either<never, NoiseError> | undefined {
    const decrypted = this.symmetric.decryptAndHash(ciphertext)
    if (Either.isLeft(decrypted)) return Either.left(decrypted.left)
    this.remoteStaticBytes = decrypted.right
    this.remoteStatic = importPublicKey(decrypted.right)
    return undefined
  }

  /** MixKey(DH(privateKey, publicKey)); the error when the DH is refused. */
  private mix(privateKey: KeyObject, publicKey: KeyObject): Either.Either<never, NoiseError> | undefined {
    const shared = dh(privateKey, publicKey)
    if (Either.isLeft(shared)) return Either.left(shared.left)
    this.symmetric.mixKey(shared.right)
    return undefined
  }

  /** Creates this side's ephemeral key and returns its public half. */
  private makeEphemeral(): Uint8Array {
    if (this.fixedEphemeral !== undefined) {
      this.ephemeralKey = privateKeyObjectOf(this.fixedEphemeral)
      return this.fixedEphemeral.publicKey
    }
    const { privateKey, publicKey } = generateEphemeralKey()
    this.ephemeralKey = privateKey
    return publicKey
  }

  // The pattern guarantees these are set when the tokens that use them run.
  private ephemeral(): KeyObject {
    return this.ephemeralKey as KeyObject
  }

  private remoteEphemeralKey(): KeyObject {
    return this.remoteEphemeral as KeyObject
  }

  private remoteStaticKeyObject(): KeyObject {
    return this.remoteStatic as KeyObject
  }
}

/** One side of an XX handshake; the same as `new XXHandshake(options)`. */
export const makeXXHandshake = (options: XXHandshakeOptions): XXHandshake => new XXHandshake(options)

// -- Byte-stream record layer ----------------------------------------------------

/**
 * `message` behind its 2-byte big-endian length, as every handshake message
 * is sent; throws a RangeError over 65,535 bytes, which no Noise message is.
 */
export const encodeLengthPrefixed = (message: Uint8Array): Uint8Array => {
  if (message.length > MAX_NOISE_MESSAGE) {
    throw new RangeError(`a Noise message is at most ${MAX_NOISE_MESSAGE} bytes, got ${message.length}`)
  }
  const out = new Uint8Array(LENGTH_PREFIX_BYTES + message.length)
  out[0] = message.length >>> 8
  out[1] = message.length & 0xff
  out.set(message, LENGTH_PREFIX_BYTES)
  return out
}

/**
 * Encrypts `plaintext` as transport records ready for the byte stream: chunks
 * of at most 65,519 bytes, each sent as u16 length ‖ ciphertext ‖ tag with
 * empty associated data. An empty plaintext still yields one (empty) record,
 * so every call sends something and uses at least one nonce. The output is
 * allocated once and the ciphertext written into it in place.
 */
export const sealStream = (cipher: CipherState, plaintext: Uint8Array): Uint8Array => {
  if (!cipher.hasKey) throw new RangeError("sealStream needs a transport cipher (one with a key)")
  const records = Math.max(1, Math.ceil(plaintext.length / MAX_RECORD_PLAINTEXT))
  const out = new Uint8Array(plaintext.length + records * (LENGTH_PREFIX_BYTES + TAG_BYTES))
  let read = 0
  let written = 0
  for (let record = 0; record < records; record++) {
    const chunkLength = Math.min(MAX_RECORD_PLAINTEXT, plaintext.length - read)
    const messageLength = chunkLength + TAG_BYTES
    out[written] = messageLength >>> 8
    out[written + 1] = messageLength & 0xff
    cipher.encryptInto(EMPTY, plaintext.subarray(read, read + chunkLength), out, written + LENGTH_PREFIX_BYTES)
    read += chunkLength
    written += LENGTH_PREFIX_BYTES + messageLength
  }
  return out
}

/** Decrypts one transport record (the bytes after its length prefix, as `LengthPrefixedReader` returns them). */
export const openRecord = (cipher: CipherState, record: Uint8Array): Either.Either<Uint8Array, NoiseError> =>
  cipher.decryptWithAd(EMPTY, record)

/** What `LengthPrefixedReader.next` found in the bytes received so far. */
export type LengthPrefixedRead =
  | { readonly _tag: "Message"; readonly bytes: Uint8Array }
  | { readonly _tag: "NeedMore" }
  | { readonly _tag: "Oversized"; readonly announced: number }

const NEED_MORE: LengthPrefixedRead = { _tag: "NeedMore" }

/**
 * Incremental decoder of u16-length-prefixed messages (handshake messages and
 * sealed records alike) for one connection. Chunks are kept as pushed, not
 * copied, so the caller must not reuse a pushed buffer; a message inside one
 * chunk is returned as a view of it, and only a message spanning chunks is
 * copied, once. An announced length over the limit is reported as soon as the
 * prefix arrives, before any of its body is waited for; the connection should
 * then close. The reader does not bound what `push` accepts: the caller
 * checks `bufferedBytes` (one message plus a socket chunk is normal).
 */
export class LengthPrefixedReader {
  private chunks: Array<Uint8Array> = []
  /** Index in `chunks` of the first chunk with unread bytes (consumed chunks are dropped lazily). */
  private head = 0
  /** Read position inside `chunks[head]`. */
  private offset = 0
  private buffered = 0

  /** A reader that refuses messages over `maxMessageBytes` (an integer from 0 to 65,535). */
  constructor(readonly maxMessageBytes: number = MAX_NOISE_MESSAGE) {
    if (!Number.isInteger(maxMessageBytes) || maxMessageBytes < 0 || maxMessageBytes > MAX_NOISE_MESSAGE) {
      throw new RangeError(`maxMessageBytes must be an integer from 0 to ${MAX_NOISE_MESSAGE}, got ${maxMessageBytes}`)
    }
  }

  /** Bytes received and not yet returned as messages. */
  get bufferedBytes(): number {
    return this.buffered
  }

  /** Appends bytes received from the stream (kept by reference). */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** Drops everything buffered (the connection is closing). */
  clear(): void {
    this.chunks = []
    this.head = 0
    this.offset = 0
    this.buffered = 0
  }

  /** The length the next message announces, once its 2-byte prefix has arrived. */
  announcedLength(): number | undefined {
    return this.buffered < LENGTH_PREFIX_BYTES ? undefined : this.byteAt(0) * 256 + this.byteAt(1)
  }

  /** The next complete message, if its bytes have arrived. */
  next(): LengthPrefixedRead {
    if (this.buffered < LENGTH_PREFIX_BYTES) return NEED_MORE
    const announced = this.byteAt(0) * 256 + this.byteAt(1)
    if (announced > this.maxMessageBytes) return { _tag: "Oversized", announced }
    if (this.buffered < LENGTH_PREFIX_BYTES + announced) return NEED_MORE
    this.skip(LENGTH_PREFIX_BYTES)
    return { _tag: "Message", bytes: this.take(announced) }
  }

  /** The byte `index` places after the read position; needs `buffered > index`. */
  private byteAt(index: number): number {
    let chunkIndex = this.head
    let position = this.offset + index
    let chunk = this.chunks[chunkIndex] as Uint8Array
    while (position >= chunk.length) {
      position -= chunk.length
      chunkIndex++
      chunk = this.chunks[chunkIndex] as Uint8Array
    }
    return chunk[position] as number
  }

  /** Consumes `bytes` from the read position; needs `buffered >= bytes`. */
  private skip(bytes: number): void {
    let remaining = bytes
    while (remaining > 0) {
      const available = (this.chunks[this.head] as Uint8Array).length - this.offset
      if (available > remaining) {
        this.offset += remaining
        break
      }
      remaining -= available
      this.dropHead()
    }
    this.buffered -= bytes
  }

  /** Consumes and returns the next `bytes`; a view when they lie in one chunk, else one copy. */
  private take(bytes: number): Uint8Array {
    const first = this.chunks[this.head]
    if (bytes === 0 || first === undefined) return new Uint8Array(0)
    if (first.length - this.offset >= bytes) {
      const view = new Uint8Array(first.buffer, first.byteOffset + this.offset, bytes)
      this.skip(bytes)
      return view
    }
    const out = new Uint8Array(bytes)
    let written = 0
    while (written < bytes) {
      const chunk = this.chunks[this.head] as Uint8Array
      const count = Math.min(chunk.length - this.offset, bytes - written)
      out.set(chunk.subarray(this.offset, this.offset + count), written)
      written += count
      this.skip(count)
    }
    return out
  }

  /** Drops the first chunk; the array is compacted only now and then, so many small chunks stay linear. */
  private dropHead(): void {
    this.head++
    this.offset = 0
    if (this.head === this.chunks.length) {
      this.chunks = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head)
      this.head = 0
    }
  }
}
