/**
 * The node's identity on disk. `<dataDir>/identity.json` holds the two private
 * seeds (Ed25519 for signing, X25519 for encryption); the public keys and the
 * node id are derived from them on every start. The file is created once,
 * atomically and readable by its owner only. After that it is precious: a
 * damaged file is reported and left alone rather than regenerated, because a
 * new key is a new node id and loses the user's name and messages, and a file
 * other users can read is refused until the user fixes its permissions.
 *
 * @since 0.1.0
 */
import type { MemoryHardHash } from "../core/ClaimProof.js"
import { nodeClaimHash } from "./ScryptClaimHash.js"
import { eventLoopClaimPacing } from "./EventLoopPacing.js"
import { FileSystem, Path } from "@effect/platform"
import { Clock, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import { fromHex, toHex } from "../core/Bytes.js"
import { nodeIdFromPublicKey } from "../core/Id.js"
import { DEFAULT_ID_PUZZLE_BITS, meetsIdPuzzle } from "../core/IdPuzzle.js"
import { type ClaimPacing, Identity, IdentityError, type IdentityService, Signatures } from "../node/Identity.js"
import { writeFileAtomic } from "./AtomicFile.js"
import { describePlatformError, readPrivateFile } from "./PrivateFile.js"
import {
  encryptionKeyFromSeed,
  generateEncryptionKeyPair,
  generateSigningKeyPair,
  type KeyPair,
  sha256Native,
  sign,
  signingKeyFromSeed,
  verifyEd25519
} from "./NodeCrypto.js"

/** The identity a node runs with (what the `Identity` service provides). */
export type IdentityValue = IdentityService

/** Name of the identity file inside the data directory. */
export const IDENTITY_FILE = "identity.json"

/** Mode of the data directory when peerchat creates it. */
export const DATA_DIR_MODE = 0o700

/** Largest identity file read; a real one is about 200 bytes, a bigger file is damaged. */
const MAX_IDENTITY_FILE_BYTES = 64 * 1024

/** Mode of the identity file. */
export const IDENTITY_FILE_MODE = 0o600

// The seeds are secret: the message replaces the decoder's default, which would quote the value.
const SeedHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/),
  Schema.annotations({ message: () => ({ message: "expected 64 lower-case hex characters", override: true }) })
)

/** Schema of `identity.json`, version 1. */
export const IdentityFile = Schema.Struct({
  version: Schema.Literal(1),
  /** Ed25519 seed, hex. */
  signingSeed: SeedHex,
  /** X25519 private key, hex. */
  encryptionSeed: SeedHex,
  /** When the identity was created, ms since the epoch. */
  createdAt: Schema.NonNegativeInt
  // The default message would quote the whole document, seeds included.
}).annotations({ message: () => "expected a JSON object" })
/** @see IdentityFile */
export type IdentityFile = typeof IdentityFile.Type

/** The identity of a node with these two key pairs. */
export const identityFromKeyPairs = (signing: KeyPair, encryption: KeyPair): IdentityValue => ({
  nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
  signingPublicKey: signing.publicKey,
  encryptionPublicKey: encryption.publicKey,
  sign: (message) => sign(signing.privateKey, message)
})

/**
 * The identity of two 32-byte seeds, for tests and simulations that need a
 * deterministic node id. Throws a RangeError if a seed has another length.
 */
export const identityFromSeeds = (signingSeed: Uint8Array, encryptionSeed: Uint8Array): IdentityValue =>
  identityFromKeyPairs(signingKeyFromSeed(signingSeed), encryptionKeyFromSeed(encryptionSeed))

const decodeIdentityFile = (bytes: Uint8Array): Either.Either<IdentityFile, string> => {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))
  } catch {
    // The runtime's message may quote the text around the error, which contains the seeds.
    return Either.left("not valid UTF-8 JSON")
  }
  return Schema.decodeUnknownEither(IdentityFile, { errors: "all" })(parsed).pipe(
    Either.mapLeft((error) =>
      ParseResult.ArrayFormatter.formatErrorSync(error)
        .map((issue) => `${issue.path.length === 0 ? "document" : issue.path.join(".")}: ${issue.message}`)
        .join("; ")
    )
  )
}

/** The node's two key pairs: Ed25519 for signing, X25519 for encryption. */
export interface NodeKeyPairs {
  readonly signing: KeyPair
  readonly encryption: KeyPair
}

const keyPairsOfFile = (file: IdentityFile): NodeKeyPairs => ({
  // The schema admits exactly 64 hex digits, which always decode to 32 bytes.
  signing: signingKeyFromSeed(fromHex(file.signingSeed) as Uint8Array),
  encryption: encryptionKeyFromSeed(fromHex(file.encryptionSeed) as Uint8Array)
})

/**
 * A signing key pair whose node id solves the id puzzle of `bits` bits:
 * about 2^bits key pairs, generated in rounds of 256 that yield in between
 * (a new node's first start takes about a second at the default 11 bits).
 */
export const generatePuzzleKeyPair = (bits: number): Effect.Effect<KeyPair> =>
  Effect.gen(function*() {
    for (;;) {
      for (let round = 0; round < 256; round++) {
        const pair = generateSigningKeyPair()
        if (meetsIdPuzzle(nodeIdFromPublicKey(pair.publicKey, sha256Native), bits, sha256Native)) return pair
      }
      yield* Effect.yieldNow()
    }
  })

const createKeyPairs = (
  filePath: string,
  idPuzzleBits: number
): Effect.Effect<NodeKeyPairs, IdentityError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const signing = yield* generatePuzzleKeyPair(idPuzzleBits)
    const encryption = generateEncryptionKeyPair()
    const document: IdentityFile = {
      version: 1,
      signingSeed: toHex(signing.seed),
      encryptionSeed: toHex(encryption.seed),
      createdAt: yield* Clock.currentTimeMillis
    }
    yield* writeFileAtomic(filePath, `${JSON.stringify(document, null, 2)}\n`, { mode: IDENTITY_FILE_MODE }).pipe(
      Effect.mapError((error) => new IdentityError({ reason: "Unwritable", path: filePath, detail: describePlatformError(error) }))
    )
    return { signing, encryption }
  })

/**
 * Loads the key pairs from `<dataDir>/identity.json`, creating the directory
 * (mode 0700) and a new identity (mode 0600, its node id solving the id
 * puzzle of `idPuzzleBits`, 11 unless given) on first start. Fails with
 * `IdentityError` when the file cannot be read, is damaged (it is then left
 * untouched), is accessible to group or others, or cannot be written.
 */
export const loadOrCreateKeyPairs = (
  dataDir: string,
  idPuzzleBits: number = DEFAULT_ID_PUZZLE_BITS
): Effect.Effect<NodeKeyPairs, IdentityError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const paths = yield* Path.Path
    const filePath = paths.join(dataDir, IDENTITY_FILE)

    const dirExists = yield* fs.exists(dataDir).pipe(
      Effect.mapError((error) => new IdentityError({ reason: "Unreadable", path: dataDir, detail: describePlatformError(error) }))
    )
    if (!dirExists) {
      yield* fs.makeDirectory(dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(
        Effect.mapError((error) => new IdentityError({ reason: "Unwritable", path: dataDir, detail: describePlatformError(error) }))
      )
    }

    const existing = yield* readPrivateFile(filePath, MAX_IDENTITY_FILE_BYTES).pipe(
      Effect.mapError((problem) =>
        new IdentityError({
          reason: problem.reason === "NotRegular" || problem.reason === "TooLarge" ? "Corrupt" : problem.reason,
          path: filePath,
          detail: problem.detail
        })
      )
    )
    if (Option.isNone(existing)) return yield* createKeyPairs(filePath, idPuzzleBits)
    const bytes = existing.value
    const decoded = decodeIdentityFile(bytes)
    if (Either.isLeft(decoded)) {
      return yield* new IdentityError({ reason: "Corrupt", path: filePath, detail: decoded.left })
    }
    return keyPairsOfFile(decoded.right)
  })

/** The identity of `<dataDir>/identity.json`, created on first start (see `loadOrCreateKeyPairs`). */
export const loadOrCreateIdentity = (
  dataDir: string
): Effect.Effect<IdentityValue, IdentityError, FileSystem.FileSystem | Path.Path> =>
  Effect.map(loadOrCreateKeyPairs(dataDir), ({ encryption, signing }) => identityFromKeyPairs(signing, encryption))

/** The `Identity` service backed by `<dataDir>/identity.json` (see `loadOrCreateIdentity`). */
export const layer = (dataDir: string): Layer.Layer<Identity, IdentityError, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(Identity, loadOrCreateIdentity(dataDir))

/** A deterministic `Identity` from two 32-byte seeds, for tests and simulations. */
export const layerFromSeeds = (signingSeed: Uint8Array, encryptionSeed: Uint8Array): Layer.Layer<Identity> =>
  Layer.sync(Identity, () => identityFromSeeds(signingSeed, encryptionSeed))

/**
 * `Signatures` with Ed25519 verification by `node:crypto` and name claims
 * checked with `claimHash` (scrypt, memoized, on a real node; see
 * `signaturesLayer`), paced by `claimPacing` when given.
 */
export const signaturesLayerWith = (claimHash: MemoryHardHash, claimPacing?: ClaimPacing): Layer.Layer<Signatures> =>
  Layer.succeed(Signatures, claimPacing === undefined ? { verify: verifyEd25519, claimHash } : { verify: verifyEd25519, claimHash, claimPacing })

/**
 * `Signatures` of a real node: Ed25519 by `node:crypto`, name claims by
 * memoized scrypt, a few evaluations per turn of the event loop (one pacing
 * for the process, whose event loop every node in it shares).
 */
export const signaturesLayer: Layer.Layer<Signatures> = signaturesLayerWith(nodeClaimHash, eventLoopClaimPacing())
