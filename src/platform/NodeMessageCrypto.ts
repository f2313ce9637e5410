/**
 * End-to-end message cryptography with `node:crypto`. Sealing signs the
 * message (its sender's user record included) with the node's Ed25519 key,
 * then encrypts the signed payload:
 * a fresh ephemeral X25519 key agrees a secret with the recipient's X25519
 * key, HKDF-SHA256 (salt = ephemeral public key ‖ recipient public key,
 * info = "peerchat/message/v2") turns it into a 32-byte key, and
 * ChaCha20-Poly1305 with a random 12-byte nonce encrypts the payload and
 * authenticates the envelope header as associated data. Opening reverses
 * this with the node's X25519 private key, reached through `KeyAgreement`.
 * The ephemeral key and nonce come from the OS's secure random source unless
 * a `RandomBytes` is injected (deterministic simulations only).
 *
 * @since 0.1.0
 */
import {
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  type KeyObject,
  randomBytes
} from "node:crypto"
import type { FileSystem, Path } from "@effect/platform"
import { Context, Effect, Layer } from "effect"
import { bytesEqual, concatBytes, fromHex, toHex, utf8 } from "../core/Bytes.js"
import type { RandomBytes } from "../core/Id.js"
import {
  AUTH_TAG_BYTES,
  checkReceipt,
  ciphertextBytes,
  ciphertextFromBytes,
  DecryptFailed,
  type Envelope,
  type EnvelopeHeader,
  envelopeAad,
  envelopeId,
  InvalidRecipientKey,
  MAX_MESSAGE_TEXT_BYTES,
  MESSAGE_FORMAT_VERSION,
  NONCE_BYTES,
  readSealedPayload,
  sealedPayloadBytes,
  signChatMessage,
  signReceipt,
  utf8ByteLength
} from "../core/Message.js"
import type { PublicKeyHex } from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { KeyAgreement, type KeyAgreementService, MessageCrypto, type MessageCryptoService } from "../chat/MessageCrypto.js"
import { Identity, type IdentityError, type IdentityService } from "../node/Identity.js"
import { identityFromKeyPairs, identityFromSeeds, loadOrCreateKeyPairs } from "./IdentityStore.js"
import { KEY_BYTES } from "../core/KeySizes.js"
import { encryptionKeyFromSeed, sha256Native, verifyEd25519 } from "./NodeCrypto.js"

/** HKDF `info` of the message key: binds the key to this format and version. */
export const MESSAGE_KEY_INFO = "peerchat/message/v2"

const MESSAGE_KEY_INFO_BYTES = utf8(MESSAGE_KEY_INFO)

const CIPHER = "chacha20-poly1305"

// RFC 8410 SPKI header of an X25519 public key; the raw 32 bytes follow.
const X25519_SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex")

/**
 * X25519 of a private key and a raw public key; `undefined` when OpenSSL refuses the public key (wrong length, or a
 * low-order point whose shared secret would be all zeros).
 */
const x25519 = (privateKey: KeyObject, peerPublicKey: Uint8Array): Uint8Array | undefined => {
  if (peerPublicKey.length !== KEY_BYTES) return undefined
  try {
    const publicKey = createPublicKey({
      key: Buffer.concat([X25519_SPKI_PREFIX, peerPublicKey]),
      format: "der",
      type: "spki"
    })
    return new Uint8Array(diffieHellman({ privateKey, publicKey }))
  } catch {
    return undefined
  }
}

/** The 32-byte ChaCha20-Poly1305 key of one message. */
const messageKey = (shared: Uint8Array, ephemeralPublicKey: Uint8Array, recipientPublicKey: Uint8Array): Uint8Array =>
  new Uint8Array(
    hkdfSync("sha256", shared, concatBytes(ephemeralPublicKey, recipientPublicKey), MESSAGE_KEY_INFO_BYTES, 32)
  )

/** `KeyAgreement` for the X25519 private key `seed` (32 bytes; a RangeError otherwise). */
export const keyAgreementFromSeed = (seed: Uint8Array): KeyAgreementService => {
  const pair = encryptionKeyFromSeed(seed)
  return {
    encryptionPublicKey: pair.publicKey,
    agree: (peerPublicKey) => x25519(pair.privateKey, peerPublicKey)
  }
}

/** What a `MessageCrypto` is built from. */
export interface MessageCryptoOptions {
  readonly identity: IdentityService
  readonly keyAgreement: KeyAgreementService
  /** Source of ephemeral keys and nonces; the OS's secure source unless a simulation injects a seeded one. */
  readonly randomBytes?: RandomBytes | undefined
}

/**
 * A `MessageCrypto` for the given identity. Throws a RangeError when the
 * key agreement is for another encryption key than the identity's (a
 * configuration error).
 */
export const make = (options: MessageCryptoOptions): MessageCryptoService => {
  const { identity, keyAgreement } = options
  const random: RandomBytes = options.randomBytes ?? ((length) => new Uint8Array(randomBytes(length)))
  if (!bytesEqual(identity.encryptionPublicKey, keyAgreement.encryptionPublicKey)) {
    throw new RangeError("the key agreement's X25519 key is not the identity's encryption key")
  }
  const ownSigningKey = toHex(identity.signingPublicKey)

  const seal: MessageCryptoService["seal"] = (message, recipientEncryptionKey) =>
    Effect.suspend(() => {
      if (message.senderSigningKey !== ownSigningKey) {
        return Effect.dieMessage("seal: message.senderSigningKey is not this node's signing key")
      }
      if (utf8ByteLength(message.text) > MAX_MESSAGE_TEXT_BYTES) {
        return Effect.dieMessage("seal: message text exceeds the limit (build messages with makeChatMessage)")
      }
      // PublicKeyHex is 64 hex digits, which always decode to 32 bytes.
      const recipientPublicKey = fromHex(recipientEncryptionKey) as Uint8Array
      const ephemeral = encryptionKeyFromSeed(random(KEY_BYTES))
      const shared = x25519(ephemeral.privateKey, recipientPublicKey)
      if (shared === undefined) {
        return Effect.fail(new InvalidRecipientKey({ recipient: message.to, encryptionKey: recipientEncryptionKey }))
      }
      const signed = signChatMessage(message, identity.sign)
      const header: EnvelopeHeader = {
        version: MESSAGE_FORMAT_VERSION,
        recipientKey: userKey(message.to, sha256Native),
        // A raw 32-byte public key encodes to 64 lower-case hex characters.
        ephemeralKey: toHex(ephemeral.publicKey) as PublicKeyHex
      }
      const nonce = random(NONCE_BYTES)
      const plaintext = sealedPayloadBytes(signed)
      const cipher = createCipheriv(CIPHER, messageKey(shared, ephemeral.publicKey, recipientPublicKey), nonce, {
        authTagLength: AUTH_TAG_BYTES
      })
      cipher.setAAD(envelopeAad(header), { plaintextLength: plaintext.length })
      const body = concatBytes(cipher.update(plaintext), cipher.final(), cipher.getAuthTag())
      const envelope: Envelope = {
        ...header,
        // 12 random bytes encode to 24 lower-case hex characters.
        nonce: toHex(nonce) as Envelope["nonce"],
        ciphertext: ciphertextFromBytes(body)
      }
      return Effect.succeed({ envelope, id: envelopeId(envelope, sha256Native), signed })
    })

  const open: MessageCryptoService["open"] = (envelope) =>
    Effect.suspend((): ReturnType<MessageCryptoService["open"]> => {
      // The schema admits 64 and 24 hex digits, which always decode.
      const ephemeralPublicKey = fromHex(envelope.ephemeralKey) as Uint8Array
      const nonce = fromHex(envelope.nonce) as Uint8Array
      const shared = keyAgreement.agree(ephemeralPublicKey)
      if (shared === undefined) return Effect.fail(new DecryptFailed({ reason: "BadEphemeralKey" }))
      const sealed = ciphertextBytes(envelope)
      const body = sealed.subarray(0, sealed.length - AUTH_TAG_BYTES)
      const tag = sealed.subarray(sealed.length - AUTH_TAG_BYTES)
      let plaintext: Uint8Array
      try {
        const decipher = createDecipheriv(
          CIPHER,
          messageKey(shared, ephemeralPublicKey, keyAgreement.encryptionPublicKey),
          nonce,
          { authTagLength: AUTH_TAG_BYTES }
        )
        decipher.setAuthTag(tag)
        decipher.setAAD(envelopeAad(envelope), { plaintextLength: body.length })
        plaintext = concatBytes(decipher.update(body), decipher.final())
      } catch {
        // OpenSSL reports a failed tag check by throwing from final().
        return Effect.fail(new DecryptFailed({ reason: "AuthenticationFailed" }))
      }
      return readSealedPayload({ envelope, plaintext, verify: verifyEd25519, hash: sha256Native })
    })

  return {
    seal,
    open,
    signReceipt: (receipt) => Effect.sync(() => signReceipt(receipt, identity.sign)),
    verifyReceipt: (receipt, recipientRecord) =>
      Effect.suspend(() => checkReceipt({ receipt, recipientRecord, verify: verifyEd25519 }))
  }
}

/** `MessageCrypto` for the running node, from its `Identity` and `KeyAgreement`. */
export const layer: Layer.Layer<MessageCrypto, never, Identity | KeyAgreement> = Layer.effect(
  MessageCrypto,
  Effect.gen(function*() {
    const identity = yield* Identity
    const keyAgreement = yield* KeyAgreement
    return yield* Effect.try({ try: () => make({ identity, keyAgreement }), catch: (error) => error }).pipe(Effect.orDie)
  })
)

/** `KeyAgreement` for an X25519 private key held in memory (a 32-byte seed). */
export const keyAgreementLayerFromSeed = (encryptionSeed: Uint8Array): Layer.Layer<KeyAgreement> =>
  Layer.sync(KeyAgreement, () => keyAgreementFromSeed(encryptionSeed))

/**
 * A deterministic `MessageCrypto` from the two identity seeds, for tests and
 * simulations (pass `randomBytes` to make ephemeral keys and nonces
 * reproducible too).
 */
export const layerFromSeeds = (
  signingSeed: Uint8Array,
  encryptionSeed: Uint8Array,
  options: { readonly randomBytes?: RandomBytes | undefined } = {}
): Layer.Layer<MessageCrypto> =>
  Layer.sync(MessageCrypto, () =>
    make({
      identity: identityFromSeeds(signingSeed, encryptionSeed),
      keyAgreement: keyAgreementFromSeed(encryptionSeed),
      randomBytes: options.randomBytes
    }))

/**
 * `Identity` and `KeyAgreement` from the node's data directory, read once
 * (created on first start): what a real node runs with.
 */
export const keysLayerFromDataDir = (
  dataDir: string
): Layer.Layer<Identity | KeyAgreement, IdentityError, FileSystem.FileSystem | Path.Path> =>
  Layer.effectContext(
    Effect.map(loadOrCreateKeyPairs(dataDir), ({ encryption, signing }) =>
      Context.make(Identity, identityFromKeyPairs(signing, encryption)).pipe(
        Context.add(KeyAgreement, keyAgreementFromSeed(encryption.seed))
      ))
  )
