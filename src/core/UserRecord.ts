/**
 * The signed user record the directory stores under `userKey(username)`: who
 * holds a name (an Ed25519 signing key), how to encrypt to them (an X25519
 * key), which node they run and where it listens. A record is self-certifying:
 * its node id is the hash of its signing key and it is signed by that key, so
 * any node can check it without trusting whoever relayed it. This module
 * defines the record, its canonical signing bytes, and the rules a storing
 * node applies before it replaces what it holds (freshness, bounded lifetime,
 * monotonic sequence, and no takeover of a live name by another key).
 * Cryptography is passed in (`sign`, `verify`, `hash`) so the core stays pure.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "./Bytes.js"
import { rawHex, shortString, uint16, uint64 } from "./Encoding.js"
import { checkClaimProof, ClaimProof, type MemoryHardHash } from "./ClaimProof.js"
import { Address } from "./Contact.js"
import { NodeId, nodeIdFromPublicKey } from "./Id.js"
import { RelayHint } from "./PeerAddress.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import { Username } from "./Username.js"
import { KEY_BYTES, SIGNATURE_BYTES } from "./KeySizes.js"

/** Most addresses a record may list (and the reason its encoding is bounded). */
export const MAX_RECORD_ADDRESSES = 4

/** Most relays a record may list: a node behind a NAT keeps reservations with a few (see core `CircuitRelay`). */
export const MAX_RECORD_RELAYS = 3

/** A 32-byte public key (Ed25519 or X25519) as 64 lower-case hex characters. */
export const PublicKeyHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "expected 64 lower-case hex characters (a 32-byte public key)" }),
  Schema.brand("peerchat/PublicKeyHex")
)
/** @see PublicKeyHex */
export type PublicKeyHex = typeof PublicKeyHex.Type

/** A 64-byte Ed25519 signature as 128 lower-case hex characters. */
export const SignatureHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{128}$/, { message: () => "expected 128 lower-case hex characters (a 64-byte signature)" }),
  Schema.brand("peerchat/SignatureHex")
)
/** @see SignatureHex */
export type SignatureHex = typeof SignatureHex.Type

const unsignedFields = {
  username: Username,
  /** Ed25519 key that signs the record and whose hash is `nodeId`. */
  signingKey: PublicKeyHex,
  /** X25519 key that messages to this user are encrypted to. */
  encryptionKey: PublicKeyHex,
  nodeId: NodeId,
  /** Where the owner's node accepts connections directly; none when it is reachable only through relays. */
  addresses: Schema.Array(Address).pipe(Schema.maxItems(MAX_RECORD_ADDRESSES)),
  /**
   * Relays the owner's node keeps reservations with, for callers that cannot
   * dial it (it is behind a NAT): absent in records of directly reachable
   * nodes, and in every record signed before relays existed.
   */
  relays: Schema.optional(Schema.Array(RelayHint).pipe(Schema.minItems(1), Schema.maxItems(MAX_RECORD_RELAYS))),
  /** Version chosen by the owner; a replacement must carry a higher one. */
  sequence: Schema.NonNegativeInt,
  /** Issue time, ms since the Unix epoch. */
  issuedAt: Schema.NonNegativeInt,
  /** Expiry time, ms since the Unix epoch. */
  expiresAt: Schema.NonNegativeInt,
  /**
   * The proof of work that pays for claiming `username` with `signingKey`
   * (see ClaimProof): the same in every record of one claim, so it is solved
   * once per name and key, and checked by every storer and reader.
   */
  claim: ClaimProof
}

/** A record must say how to reach its owner: at least one address or one relay. */
const reachable = (record: { readonly addresses: ReadonlyArray<unknown>; readonly relays?: ReadonlyArray<unknown> | undefined }) =>
  record.addresses.length > 0 || (record.relays?.length ?? 0) > 0 ||
  "a record lists at least one address or one relay"

/** A user record before it is signed: exactly the fields the signature covers. */
export const UnsignedUserRecord = Schema.Struct(unsignedFields).pipe(Schema.filter(reachable))
/** @see UnsignedUserRecord */
export type UnsignedUserRecord = typeof UnsignedUserRecord.Type

/** A user record signed by its own `signingKey`, as stored in the directory. */
export const UserRecord = Schema.Struct({ ...unsignedFields, signature: SignatureHex }).pipe(Schema.filter(reachable))
/** @see UserRecord */
export type UserRecord = typeof UserRecord.Type

/** Domain-separation prefix of the signing bytes, so a record signature is never valid for anything else. */
export const USER_RECORD_SIGNING_PREFIX = "peerchat/user-record/v2\n"

const PREFIX_BYTES = utf8(USER_RECORD_SIGNING_PREFIX)

const rawKey = (hex: string, what: string): Uint8Array => rawHex(hex, KEY_BYTES, what)

/**
 * The canonical bytes a user record's signature covers. Every field has a
 * fixed position and either a fixed size or a length prefix, so the encoding
 * can be parsed back and two different records never share it:
 *
 * ```
 * "peerchat/user-record/v2\n"      24 bytes, ASCII
 * username       u16 length ‖ UTF-8 bytes
 * signingKey     32 raw bytes
 * encryptionKey  32 raw bytes
 * nodeId         32 raw bytes
 * addresses      u8 count (0..4; 0 only with relays), then per address:
 *                  host  u16 length ‖ UTF-8 bytes
 *                  port  u16
 * sequence       u64
 * issuedAt       u64 (ms since the Unix epoch)
 * expiresAt      u64 (ms since the Unix epoch)
 * claim          u8 difficulty ‖ u64 nonce
 * relays         only when the record lists any: u8 count (1..3), then per relay:
 *                  relayId  32 raw bytes
 *                  host     u16 length ‖ UTF-8 bytes
 *                  port     u16
 * ```
 *
 * A record without relays has exactly the bytes it had before relays
 * existed, so records signed then still verify. All integers are unsigned big-endian. A `signature` property, if present on
 * the argument, is ignored. Throws a RangeError for values the schema would
 * have rejected (a programming error: decode records before using them).
 */
export const userRecordSigningBytes = (unsigned: UnsignedUserRecord): Uint8Array => {
  const count = unsigned.addresses.length
  const relays = unsigned.relays ?? []
  if (count > MAX_RECORD_ADDRESSES || relays.length > MAX_RECORD_RELAYS || count + relays.length === 0) {
    throw new RangeError(
      `a record lists 0 to ${MAX_RECORD_ADDRESSES} addresses and 0 to ${MAX_RECORD_RELAYS} relays, at least one of either; ` +
        `got ${count} and ${relays.length}`
    )
  }
  const addressParts: Array<Uint8Array> = []
  for (const address of unsigned.addresses) {
    addressParts.push(shortString(address.host, "host"), uint16(address.port, "port"))
  }
  const relayParts: Array<Uint8Array> = relays.length === 0 ? [] : [Uint8Array.of(relays.length)]
  for (const relay of relays) {
    relayParts.push(
      rawHex(relay.relayId, KEY_BYTES, "relay id"),
      shortString(relay.address.host, "relay host"),
      uint16(relay.address.port, "relay port")
    )
  }
  return concatBytes(
    PREFIX_BYTES,
    shortString(unsigned.username, "username"),
    rawKey(unsigned.signingKey, "signingKey"),
    rawKey(unsigned.encryptionKey, "encryptionKey"),
    rawKey(unsigned.nodeId, "nodeId"),
    Uint8Array.of(count),
    ...addressParts,
    uint64(unsigned.sequence, "sequence"),
    uint64(unsigned.issuedAt, "issuedAt"),
    uint64(unsigned.expiresAt, "expiresAt"),
    Uint8Array.of(unsigned.claim.difficulty),
    uint64(unsigned.claim.nonce, "claim nonce"),
    ...relayParts
  )
}

/** The record's signed fields only, dropping `signature` (or any other extra property). */
export const withoutSignature = (record: UnsignedUserRecord): UnsignedUserRecord => ({
  username: record.username,
  signingKey: record.signingKey,
  encryptionKey: record.encryptionKey,
  nodeId: record.nodeId,
  addresses: record.addresses,
  sequence: record.sequence,
  issuedAt: record.issuedAt,
  expiresAt: record.expiresAt,
  claim: record.claim,
  // Only when there are relays: a record without them keeps its old shape (and signing bytes).
  ...(record.relays === undefined || record.relays.length === 0 ? {} : { relays: record.relays })
})

/**
 * Signs a record with the owner's Ed25519 key (`sign` is supplied by the
 * shell). Throws a RangeError if `sign` does not return 64 bytes.
 */
export const signUserRecord = (
  unsigned: UnsignedUserRecord,
  sign: (message: Uint8Array) => Uint8Array
): UserRecord => {
  const signature = sign(userRecordSigningBytes(unsigned))
  if (signature.length !== SIGNATURE_BYTES) throw new RangeError(`an Ed25519 signature is ${SIGNATURE_BYTES} bytes, got ${signature.length}`)
  // 64 bytes always encode to 128 lower-case hex characters, which is what SignatureHex checks.
  return { ...withoutSignature(unsigned), signature: toHex(signature) as SignatureHex }
}

/** Ed25519 verification supplied by the shell: true when `signature` is valid for `message` under `publicKey`. */
export type VerifySignature = (publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array) => boolean

/** Bounds a storing node puts on a record's validity period. */
export interface RecordLimits {
  /** Longest allowed `expiresAt - issuedAt`, so a stolen or abandoned record cannot live forever. */
  readonly maxLifetimeMs: number
  /** How far in the future `issuedAt` may be, to tolerate clocks that are slightly ahead. */
  readonly maxClockSkewMs: number
}

/** Default limits: records live at most 7 days; clocks may be 5 minutes ahead. */
export const defaultRecordLimits: RecordLimits = {
  maxLifetimeMs: 7 * 24 * 60 * 60 * 1000,
  maxClockSkewMs: 5 * 60 * 1000
}

/** Why a storing node refused a user record. */
export class RecordRejected extends Schema.TaggedError<RecordRejected>()("RecordRejected", {
  username: Schema.String,
  reason: Schema.Literal(
    "BadSignature",
    "NodeIdMismatch",
    "Expired",
    "IssuedInFuture",
    "LifetimeTooLong",
    "StaleSequence",
    "KeyConflict",
    "ClaimTooEasy",
    "ClaimWorkInvalid"
  )
}) {
  override get message(): string {
    const subject = `user record for ${JSON.stringify(this.username)} rejected`
    switch (this.reason) {
      case "BadSignature":
        return `${subject}: its signature does not verify under its signing key`
      case "NodeIdMismatch":
        return `${subject}: its node id is not the hash of its signing key`
      case "Expired":
        return `${subject}: it has expired`
      case "IssuedInFuture":
        return `${subject}: it is issued further in the future than the allowed clock skew`
      case "LifetimeTooLong":
        return `${subject}: its lifetime (expiresAt - issuedAt) is not positive or exceeds the maximum`
      case "StaleSequence":
        return `${subject}: its sequence number is not higher than that of the live record already stored`
      case "KeyConflict":
        return `${subject}: the name is held by a different signing key whose record has not expired`
      case "ClaimTooEasy":
        return `${subject}: its name claim is solved at a lower difficulty than this node requires`
      case "ClaimWorkInvalid":
        return `${subject}: its name claim's proof of work does not check out`
    }
  }
}

/** What happened to an accepted record: it replaced (or filled) the slot, or it was already stored. */
export type RecordAcceptance = "Stored" | "Unchanged"

/** True while the record has not expired at `now` (ms). */
export const isRecordLive = (record: { readonly expiresAt: number }, now: number): boolean => record.expiresAt > now

/**
 * Runs `verify`, counting a verifier that throws on malformed input (e.g. a
 * key that is not a curve point) as a failed check.
 */
export const verifySafely = (
  verify: VerifySignature,
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array
): boolean => {
  try {
    return verify(publicKey, message, signature)
  } catch {
    return false
  }
}

/** What a name claim must meet: the least difficulty accepted and the memory-hard hash it is checked with. */
export interface ClaimRules {
  readonly minDifficulty: number
  readonly hash: MemoryHardHash
}

/**
 * Decides whether a storing node takes `incoming` in place of `stored` (the
 * record it holds for the same username, if any). The checks run cheapest
 * first, and the first failure is the reason reported:
 * 1. the claim's difficulty is at least `claim.minDifficulty` (ClaimTooEasy);
 * 2. `nodeId` is the hash of `signingKey` (NodeIdMismatch);
 * 3. the signature verifies over `userRecordSigningBytes` (BadSignature);
 * 4. `expiresAt > now` (Expired);
 * 5. `issuedAt <= now + maxClockSkewMs` (IssuedInFuture);
 * 6. `0 < expiresAt - issuedAt <= maxLifetimeMs` (LifetimeTooLong);
 * 7. the claim's proof of work checks out: one memory-hard hash, the most
 *    expensive check, so junk is refused before it (ClaimWorkInvalid);
 * 8. a live stored record with another signing key keeps the name (KeyConflict);
 * 9. the very same record (sequence and signature) is "Unchanged";
 * 10. against a live stored record the sequence must be strictly higher
 *    (StaleSequence); an expired stored record constrains nothing.
 * The caller checks that `incoming` sits under `userKey(incoming.username)`.
 */
export const acceptUserRecord = (args: {
  readonly incoming: UserRecord
  readonly stored?: UserRecord | undefined
  readonly now: number
  readonly verify: VerifySignature
  readonly claim: ClaimRules
  readonly hash?: HashFunction | undefined
  readonly limits?: Partial<RecordLimits> | undefined
}): Either.Either<RecordAcceptance, RecordRejected> => {
  const { incoming, stored, now, verify } = args
  const limits: RecordLimits = { ...defaultRecordLimits, ...args.limits }
  const reject = (reason: RecordRejected["reason"]) =>
    Either.left(new RecordRejected({ username: incoming.username, reason }))

  if (incoming.claim.difficulty < args.claim.minDifficulty) return reject("ClaimTooEasy")

  const signingKey = rawKey(incoming.signingKey, "signingKey")
  if (nodeIdFromPublicKey(signingKey, args.hash ?? sha256) !== incoming.nodeId) return reject("NodeIdMismatch")
  // The schema guarantees 128 hex digits, so decoding cannot fail; a missing value still fails verification.
  const signature = fromHex(incoming.signature) ?? new Uint8Array(0)
  if (!verifySafely(verify, signingKey, userRecordSigningBytes(incoming), signature)) return reject("BadSignature")
  if (!isRecordLive(incoming, now)) return reject("Expired")
  if (incoming.issuedAt > now + limits.maxClockSkewMs) return reject("IssuedInFuture")
  const lifetime = incoming.expiresAt - incoming.issuedAt
  if (lifetime <= 0 || lifetime > limits.maxLifetimeMs) return reject("LifetimeTooLong")
  const work = checkClaimProof({
    username: incoming.username,
    signingKey: incoming.signingKey,
    proof: incoming.claim,
    minDifficulty: args.claim.minDifficulty,
    hash: args.claim.hash
  })
  if (Either.isLeft(work)) return reject("ClaimWorkInvalid")

  if (stored === undefined) return Either.right("Stored")
  const storedLive = isRecordLive(stored, now)
  if (storedLive && stored.signingKey !== incoming.signingKey) return reject("KeyConflict")
  if (stored.sequence === incoming.sequence && stored.signature === incoming.signature) {
    return Either.right("Unchanged")
  }
  if (storedLive && incoming.sequence <= stored.sequence) return reject("StaleSequence")
  return Either.right("Stored")
}
