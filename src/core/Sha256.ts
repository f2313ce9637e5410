/**
 * SHA-256 for the pure core, so it can derive node ids and user keys without
 * `node:crypto`: `@noble/hashes`' implementation (pure TypeScript, audited,
 * no dependencies), given the core's `HashFunction` shape. The shell is free
 * to pass a faster hash (OpenSSL's, `sha256Native`) where the core accepts one.
 *
 * @since 0.1.0
 */
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js"

/** A hash function from bytes to a 32-byte digest. */
export type HashFunction = (data: Uint8Array) => Uint8Array

/** SHA-256 digest of `data` (FIPS 180-4). */
export const sha256: HashFunction = (data) => nobleSha256(data)
