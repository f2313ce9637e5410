/**
 * A proof of work that makes claiming a username cost something: a nonce such
 * that a memory-hard hash of (username, signing key, nonce) starts with
 * `difficulty` zero bits. Finding one takes about 2^difficulty evaluations of
 * the hash; checking one takes a single evaluation, so a storer verifies a
 * claim for the price of one hash while whoever claims ten thousand names pays
 * ten thousand solves. The proof is bound to both the name and the key, so it
 * cannot be moved to another name or stolen by another key. The difficulty
 * travels with the proof, so the network can raise its minimum later without
 * a new format. The memory-hard hash is passed in (`MemoryHardHash`, scrypt in
 * the platform layer) and solving is split into bounded steps, so the shell
 * decides when to yield and how to report progress; the core stays pure.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, leadingZeroBits, utf8 } from "./Bytes.js"
import { rawHex, shortString, uint64 } from "./Encoding.js"
import { KEY_BYTES } from "./KeySizes.js"

/** Most leading zero bits a proof may demand (2^64 evaluations is far beyond anyone's budget). */
export const MAX_CLAIM_DIFFICULTY = 64

/** Length of a `MemoryHardHash` output, in bytes. */
export const CLAIM_HASH_BYTES = 32

/** Leading zero bits a proof's hash must have: an integer from 0 to 64. */
export const ClaimDifficulty = Schema.Int.pipe(Schema.between(0, MAX_CLAIM_DIFFICULTY))
/** @see ClaimDifficulty */
export type ClaimDifficulty = typeof ClaimDifficulty.Type

/** The proof of work carried by a name claim: the difficulty it was solved at and the nonce that solves it. */
export const ClaimProof = Schema.Struct({
  /** Leading zero bits the hash of the challenge has (at least); a storer requires a minimum. */
  difficulty: ClaimDifficulty,
  /** The solving nonce, a non-negative safe integer (encoded as a u64 in the challenge). */
  nonce: Schema.NonNegativeInt
})
/** @see ClaimProof */
export type ClaimProof = typeof ClaimProof.Type

/**
 * A memory-hard hash from bytes to 32 bytes, supplied by the shell (scrypt in
 * `src/platform/ScryptClaimHash.ts`; any cheap hash in unit tests).
 */
export type MemoryHardHash = (input: Uint8Array) => Uint8Array

/** Domain-separation prefix of the challenge, so a claim hash is never valid for anything else. */
export const CLAIM_CHALLENGE_PREFIX = "peerchat/name-claim/v1\n"

const PREFIX_BYTES = utf8(CLAIM_CHALLENGE_PREFIX)
const NONCE_BYTES = 8

const challengeHead = (username: string, signingKey: string): Uint8Array =>
  concatBytes(PREFIX_BYTES, shortString(username, "username"), rawHex(signingKey, KEY_BYTES, "signingKey"))

const withNonce = (head: Uint8Array, nonce: number): Uint8Array => {
  const out = new Uint8Array(head.length + NONCE_BYTES)
  out.set(head)
  out.set(uint64(nonce, "nonce"), head.length)
  return out
}

/**
 * The bytes the memory-hard hash is applied to:
 *
 * ```
 * "peerchat/name-claim/v1\n"   23 bytes, ASCII
 * username     u16 length ‖ UTF-8 bytes
 * signingKey   32 raw bytes (the Ed25519 public key, given as 64 hex characters)
 * nonce        u64, big-endian
 * ```
 *
 * Throws a RangeError for a key that is not 32 bytes of hex or a nonce that is
 * not a non-negative safe integer (decode with the schemas first).
 */
export const claimChallenge = (username: string, signingKey: string, nonce: number): Uint8Array =>
  withNonce(challengeHead(username, signingKey), nonce)

export { leadingZeroBits }

/** Mean number of hash evaluations needed to solve a proof at `difficulty`: 2^difficulty. */
export const expectedAttempts = (difficulty: number): number => 2 ** difficulty

const hashChallenge = (hash: MemoryHardHash, challenge: Uint8Array): Uint8Array => {
  const digest = hash(challenge)
  if (digest.length !== CLAIM_HASH_BYTES) {
    throw new RangeError(`a MemoryHardHash returns ${CLAIM_HASH_BYTES} bytes, got ${digest.length}`)
  }
  return digest
}

const requireDifficulty = (difficulty: number): void => {
  if (!Number.isInteger(difficulty) || difficulty < 0 || difficulty > MAX_CLAIM_DIFFICULTY) {
    throw new RangeError(`a claim difficulty is an integer from 0 to ${MAX_CLAIM_DIFFICULTY}, got ${difficulty}`)
  }
}

/** Why a storing node refused a name claim's proof of work. */
export class ClaimRejected extends Schema.TaggedError<ClaimRejected>()("ClaimRejected", {
  username: Schema.String,
  reason: Schema.Literal(
    /** The proof was solved at a lower difficulty than this node requires. */
    "TooEasy",
    /** The hash of the challenge does not have the leading zero bits the proof claims. */
    "WrongWork"
  ),
  /** The difficulty the proof claims. */
  difficulty: Schema.Number,
  /** The least difficulty this node accepts. */
  minDifficulty: Schema.Number
}) {
  override get message(): string {
    const subject = `name claim for ${JSON.stringify(this.username)} rejected`
    switch (this.reason) {
      case "TooEasy":
        return `${subject}: its proof of work has difficulty ${this.difficulty}, ` +
          `below the minimum of ${this.minDifficulty} this node accepts`
      case "WrongWork":
        return `${subject}: its nonce does not hash to ${this.difficulty} leading zero bits ` +
          "for this username and signing key"
    }
  }
}

/**
 * Checks a name claim's proof of work, as a storing node does. The difficulty
 * is compared with `minDifficulty` first, without hashing, so an easy proof
 * costs the storer nothing ("TooEasy"); otherwise the challenge is hashed
 * exactly once and must have `proof.difficulty` leading zero bits
 * ("WrongWork"). `username` and `signingKey` (64 hex characters) are those of
 * the record the proof comes with. Throws a RangeError for a malformed key or
 * a hash that does not return 32 bytes (programming errors).
 */
export const checkClaimProof = (args: {
  readonly username: string
  readonly signingKey: string
  readonly proof: ClaimProof
  readonly minDifficulty: number
  readonly hash: MemoryHardHash
}): Either.Either<void, ClaimRejected> => {
  const { username, signingKey, proof, minDifficulty, hash } = args
  const reject = (reason: ClaimRejected["reason"]) =>
    Either.left(new ClaimRejected({ username, reason, difficulty: proof.difficulty, minDifficulty }))
  if (proof.difficulty < minDifficulty) return reject("TooEasy")
  const digest = hashChallenge(hash, claimChallenge(username, signingKey, proof.nonce))
  if (leadingZeroBits(digest) < proof.difficulty) return reject("WrongWork")
  return Either.right(undefined)
}

/** The outcome of one bounded step of solving: a proof, or where to go on from. */
export type ClaimStep =
  | {
    readonly _tag: "Solved"
    /** A proof at the requested difficulty. */
    readonly proof: ClaimProof
    /** Hash evaluations this step made (the last one solved it). */
    readonly tried: number
  }
  | {
    readonly _tag: "NotYet"
    /** The nonce the next step starts from. */
    readonly nextNonce: number
    /** Hash evaluations this step made (all of `attempts`). */
    readonly tried: number
  }

/** The nonce after `nonce`, wrapping from the largest safe integer back to 0. */
const nextNonceAfter = (nonce: number): number => (nonce >= Number.MAX_SAFE_INTEGER ? 0 : nonce + 1)

/**
 * Tries at most `attempts` nonces from `fromNonce` upwards (wrapping to 0
 * after the largest safe integer) and stops at the first whose hash has
 * `difficulty` leading zero bits. The work per call is bounded, so the shell
 * can yield and report progress between steps; running steps of any sizes one
 * after the other finds the same nonce as one large step. Throws a RangeError
 * for a difficulty outside 0..64, a non-positive `attempts`, a malformed key
 * or nonce, or a hash that does not return 32 bytes.
 */
export const solveClaimStep = (args: {
  readonly username: string
  readonly signingKey: string
  readonly difficulty: number
  readonly hash: MemoryHardHash
  readonly fromNonce: number
  readonly attempts: number
}): ClaimStep => {
  const { username, signingKey, difficulty, hash, fromNonce, attempts } = args
  requireDifficulty(difficulty)
  if (!Number.isSafeInteger(attempts) || attempts < 1) {
    throw new RangeError(`a solving step makes at least one attempt, got ${attempts}`)
  }
  const head = challengeHead(username, signingKey)
  let nonce = fromNonce
  for (let tried = 1; tried <= attempts; tried++) {
    if (leadingZeroBits(hashChallenge(hash, withNonce(head, nonce))) >= difficulty) {
      return { _tag: "Solved", proof: { difficulty, nonce }, tried }
    }
    nonce = nextNonceAfter(nonce)
  }
  return { _tag: "NotYet", nextNonce: nonce, tried: attempts }
}
