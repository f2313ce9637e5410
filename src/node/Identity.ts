/**
 * The node's own cryptographic identity and the verification of everyone
 * else's. `Identity` holds the long-term Ed25519 signing key (whose SHA-256 is
 * the node id) and the X25519 encryption public key; the private keys never
 * leave the implementation, which only offers `sign`. `Signatures` verifies
 * other nodes' Ed25519 signatures. Both are seams: the platform layer keeps
 * the keys on disk and implements them with `node:crypto`, while tests and
 * the simulator build deterministic identities from seeds.
 *
 * @since 0.1.0
 */
import { Context, type Effect, Schema } from "effect"
import type { NodeId } from "../core/Id.js"
import type { MemoryHardHash } from "../core/ClaimProof.js"
import type { VerifySignature } from "../core/UserRecord.js"

/** What the node knows about itself: public keys, node id and a signing function. */
export interface IdentityService {
  /** SHA-256 of `signingPublicKey`. */
  readonly nodeId: NodeId
  /** Raw 32-byte Ed25519 public key. */
  readonly signingPublicKey: Uint8Array
  /** Raw 32-byte X25519 public key, for end-to-end encryption of messages. */
  readonly encryptionPublicKey: Uint8Array
  /** Ed25519 signature (64 bytes) of `message` with the node's signing key; synchronous so pure code can take it as an argument. */
  readonly sign: (message: Uint8Array) => Uint8Array
}

/** The running node's identity. */
export class Identity extends Context.Tag("peerchat/Identity")<Identity, IdentityService>() {}

/** Verification of what other nodes prove: their signatures and the work behind their name claims. */
export interface SignaturesService {
  /** Ed25519 verification; returns false (never throws) for malformed keys or signatures. */
  readonly verify: VerifySignature
  /**
   * The memory-hard hash name claims are solved and checked with (scrypt on a
   * real node; a cheap hash in tests and the simulator, which keep the checks).
   */
  readonly claimHash: MemoryHardHash
  /**
   * How the claim evaluations peers cause are spread out so that other work
   * runs between them (a real node: a few per turn of the event loop, see
   * `src/platform/EventLoopPacing.ts`). Absent, checks run as they come: the
   * cheap hashes of tests and the simulator, whose runs must not depend on
   * the event loop.
   */
  readonly claimPacing?: ClaimPacing
}

/**
 * Spreads the claim evaluations peers cause over time, so that other work
 * runs between them. Only evaluations already admitted by the claim-check
 * budget go through it.
 */
export interface ClaimPacing {
  /** Runs `evaluate` (one claim evaluation) now when the current share allows, otherwise later, in arrival order. */
  readonly pace: <A>(evaluate: () => A) => Effect.Effect<A>
  /** Evaluations waiting for their turn. */
  readonly waiting: () => number
}

/** Signature and claim verification for everything a node receives. */
export class Signatures extends Context.Tag("peerchat/Signatures")<Signatures, SignaturesService>() {}

/** Why the node's identity could not be loaded or created; every case needs the user to act. */
export class IdentityError extends Schema.TaggedError<IdentityError>()("IdentityError", {
  reason: Schema.Literal(
    /** The identity file or data directory exists but cannot be read. */
    "Unreadable",
    /** The identity file does not hold a valid identity; it is left untouched. */
    "Corrupt",
    /** The data directory or the identity file cannot be written on first start. */
    "Unwritable",
    /** The identity file is accessible to other users, so its private keys may be exposed. */
    "InsecurePermissions"
  ),
  /** The file or directory concerned. */
  path: Schema.String,
  /** What the operating system or the decoder said. */
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "Unreadable":
        return `cannot read the identity file ${this.path} (${this.detail}); ` +
          "check that it and its directory belong to the user running peerchat"
      case "Corrupt":
        return `the identity file ${this.path} is damaged (${this.detail}); ` +
          "peerchat will not replace it, because that would give this node a new identity. " +
          "Restore it from a backup, or move it away to start over with a new identity"
      case "Unwritable":
        return `cannot create the identity at ${this.path} (${this.detail}); ` +
          "check that the data directory is writable by the user running peerchat and the disk is not full"
      case "InsecurePermissions":
        return `the identity file ${this.path} is accessible to other users (${this.detail}), ` +
          `so its private keys may be exposed; run: chmod 600 ${this.path}`
    }
  }
}
