/**
 * The memory-hard hash of name claims: scrypt (RFC 7914) from `node:crypto`
 * over the claim challenge, with a fixed domain string as salt and a 32-byte
 * output. The parameters fix what one evaluation costs: N = 2^10, r = 8,
 * p = 1 walk 128 · N · r = 1 MiB of memory, about 1.7 ms of CPU on one core of
 * the reference machine (`npx tsx bench/claimCost.ts`). The memory makes every
 * parallel evaluation pay for its own mebibyte, so a GPU gains far less over
 * a CPU than it would on a plain hash; the time sets the price of a claim
 * together with the difficulty (`defaultClaimWorkConfig` in
 * `src/node/ClaimWork.ts`, 2^10 evaluations ≈ 1.8 s). A storer checks a proof
 * with one evaluation. Changing any parameter changes every hash, so it is a
 * new protocol version, not a tuning knob.
 *
 * @since 0.1.0
 */
import { scryptSync } from "node:crypto"
import { type Layer, Scheduler } from "effect"
import { CLAIM_HASH_BYTES, type MemoryHardHash } from "../core/ClaimProof.js"
import { ClaimWork, type ClaimWorkOptions } from "../node/ClaimWork.js"

/** The scrypt parameters of the claim hash. */
export interface ScryptClaimParameters {
  /** CPU/memory cost, a power of two. */
  readonly N: number
  /** Block size; memory is 128 · N · r bytes. */
  readonly r: number
  /** Parallelization (independent mixes, run one after the other here). */
  readonly p: number
  /** Output length in bytes. */
  readonly keyLength: number
  /** Fixed salt: domain separation, since the challenge itself is unique per name, key and nonce. */
  readonly salt: string
}

/**
 * N = 2^10, r = 8, p = 1: 1 MiB and 1.6-1.9 ms per evaluation here (measured
 * alongside: N = 2^11 takes 3.4 ms and 2 MiB, N = 2^9 1.0 ms and 512 KiB).
 * 1 MiB is far more than a GPU core has to itself, yet cheap enough that a
 * storer checks over 500 proofs a second.
 */
export const scryptClaimParameters: ScryptClaimParameters = {
  N: 2 ** 10,
  r: 8,
  p: 1,
  keyLength: CLAIM_HASH_BYTES,
  salt: "peerchat/name-claim/scrypt/v1"
}

/** Memory one evaluation uses, in bytes (128 · N · r). */
export const scryptClaimMemoryBytes = 128 * scryptClaimParameters.N * scryptClaimParameters.r

const SALT = Buffer.from(scryptClaimParameters.salt, "utf8")
const OPTIONS = {
  N: scryptClaimParameters.N,
  r: scryptClaimParameters.r,
  p: scryptClaimParameters.p,
  // Node's default limit is 32 MiB; stated so a change of N or r fails loudly, not silently.
  maxmem: 2 * scryptClaimMemoryBytes
}

/** scrypt(input, salt) with the claim parameters: the `MemoryHardHash` of name claims. */
export const scryptClaimHash: MemoryHardHash = (input) =>
  new Uint8Array(scryptSync(input, SALT, scryptClaimParameters.keyLength, OPTIONS))

/** Claim checks remembered by `memoizedClaimHash`: about 100 bytes each. */
export const CLAIM_HASH_MEMO_CAPACITY = 4096

/**
 * `hash` with its latest `capacity` results remembered (least recently used
 * forgotten first). A claim is the same in every record of one name and key,
 * and a reader checks every copy the k closest hold: without the memo each
 * name lookup would cost k scrypt evaluations, with it one per claim.
 */
export const memoizedClaimHash = (hash: MemoryHardHash, capacity: number = CLAIM_HASH_MEMO_CAPACITY): MemoryHardHash => {
  const memo = new Map<string, Uint8Array>()
  return (input) => {
    const key = Buffer.from(input).toString("base64")
    const known = memo.get(key)
    if (known !== undefined) {
      memo.delete(key)
      memo.set(key, known)
      return known.slice()
    }
    const output = hash(input)
    memo.set(key, output.slice())
    if (memo.size > capacity) {
      const oldest = memo.keys().next()
      if (oldest.done !== true) memo.delete(oldest.value)
    }
    return output
  }
}

/** The claim hash a real node checks and solves with: scrypt, memoized. */
export const nodeClaimHash: MemoryHardHash = memoizedClaimHash(scryptClaimHash)

/**
 * Resumes a yielding fiber with `setImmediate`: after the I/O that is ready,
 * without the 1 ms a zero-delay timer idles.
 */
export const immediateScheduler: Scheduler.Scheduler = Scheduler.make((task) => {
  setImmediate(task)
})

/** `ClaimWork` over the scrypt claim hash, yielding with `setImmediate`; `options` override the pacing. */
export const layer = (options: Partial<ClaimWorkOptions> = {}): Layer.Layer<ClaimWork> =>
  ClaimWork.layer(nodeClaimHash, { yieldScheduler: immediateScheduler, ...options })
