/**
 * The sizes of the keys and signatures every format of the protocol
 * carries: Ed25519 identity keys and signatures, X25519 static and
 * ephemeral keys, and the node ids derived from them. Pure constants, in
 * one place, so that a record, a message, a datagram and the platform's
 * key handling cannot disagree.
 *
 * @since 0.1.0
 */

/** Bytes of a raw Ed25519 or X25519 public key, of a private key's seed, and of a node id. */
export const KEY_BYTES = 32

/** Bytes of an Ed25519 signature. */
export const SIGNATURE_BYTES = 64
