/**
 * The seam between the chat layer and the cryptography of end-to-end
 * messages. `MessageCrypto` seals a message for its recipient (sign with
 * this node's Ed25519 key, encrypt to the recipient's X25519 key) and opens
 * envelopes sealed to this node, and it signs and checks delivery receipts.
 * A sealed message carries its sender's signed user record inside the
 * ciphertext, so relays still learn only the recipient's key and the size.
 * `KeyAgreement` is the one use of this node's X25519 private key (a
 * Diffie-Hellman with a peer's public key), so the private key itself never
 * leaves the platform layer, just as `Identity` only offers `sign`. Both are
 * implemented with `node:crypto` in `src/platform/NodeMessageCrypto.ts`; the
 * formats and checks are the pure functions of `src/core/Message.ts`.
 *
 * @since 0.1.0
 */
import { Context, type Effect } from "effect"
import type {
  ChatMessage,
  DecryptFailed,
  Envelope,
  InvalidRecipientKey,
  MessageId,
  MessageRejected,
  Receipt,
  ReceiptRejected,
  SignedChatMessage,
  SignedReceipt
} from "../core/Message.js"
import type { PublicKeyHex, UserRecord } from "../core/UserRecord.js"

/** A sealed message: what to send, its id, and the signed message (for the sender's own history). */
export interface Sealed {
  readonly envelope: Envelope
  /** `envelopeId(envelope)`: the id receipts and duplicate detection use. */
  readonly id: MessageId
  readonly signed: SignedChatMessage
}

/** End-to-end encryption and signing of messages and receipts with this node's keys. */
export interface MessageCryptoService {
  /**
   * Signs `message` with this node's signing key and encrypts it to
   * `recipientEncryptionKey` (from the recipient's user record). The
   * envelope is addressed to `userKey(message.to)`. Every call uses a fresh
   * ephemeral key and nonce, so sealing the same message twice gives two
   * different envelopes (and ids): a retry must resend the stored envelope.
   * `message.senderSigningKey` must be this node's signing key (a defect
   * otherwise); `message.senderRecord` (this user's own published record)
   * is sealed and signed with the message, and is the recipient's to check.
   * Fails with `InvalidRecipientKey` when the key is a low-order X25519 point.
   */
  readonly seal: (message: ChatMessage, recipientEncryptionKey: PublicKeyHex) => Effect.Effect<Sealed, InvalidRecipientKey>
  /**
   * Decrypts an envelope sealed to this node's encryption key and applies
   * `readSealedPayload`: the result is signed by the key it names and
   * addressed to the user the envelope is filed under. Altered or foreign
   * envelopes fail with `DecryptFailed`. The caller must still check the
   * carried sender record (`checkOpenedMessage`) and whether to believe its
   * key for the sender's name (`senderTrust`, by pin and network).
   */
  readonly open: (envelope: Envelope) => Effect.Effect<SignedChatMessage, MessageRejected | DecryptFailed>
  /** Signs a delivery receipt with this node's signing key. */
  readonly signReceipt: (receipt: Receipt) => Effect.Effect<SignedReceipt>
  /** Checks a receipt against the recipient's published user record (`checkReceipt`). */
  readonly verifyReceipt: (
    receipt: SignedReceipt,
    recipientRecord: UserRecord
  ) => Effect.Effect<SignedReceipt, ReceiptRejected>
}

/** Sealing and opening of end-to-end messages for the running node. */
export class MessageCrypto extends Context.Tag("peerchat/MessageCrypto")<MessageCrypto, MessageCryptoService>() {}

/** X25519 key agreement with this node's encryption key. */
export interface KeyAgreementService {
  /** Raw 32-byte X25519 public key; the same as `Identity.encryptionPublicKey`. */
  readonly encryptionPublicKey: Uint8Array
  /**
   * The raw 32-byte X25519 shared secret with `peerPublicKey`, or
   * `undefined` when that key is not usable (wrong length, low-order point).
   */
  readonly agree: (peerPublicKey: Uint8Array) => Uint8Array | undefined
}

/** The node's X25519 private key, usable only for key agreement. */
export class KeyAgreement extends Context.Tag("peerchat/KeyAgreement")<KeyAgreement, KeyAgreementService>() {}
