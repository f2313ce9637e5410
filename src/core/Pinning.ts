/**
 * Trust on first use for contacts' signing keys, as Signal's safety numbers
 * do it. A username resolves through the DHT to a self-signed user record,
 * which proves only that whoever holds the record's key published it, not
 * that it is the person the user talked to before. So the first exchange
 * with a name pins its signing key (a `ContactPin`), and every later
 * resolution is checked against the pin by `pinDecision`: a different key is
 * refused (`KeyChanged`) until the user accepts it on purpose.
 *
 * Names for keys, for humans:
 * - A `Fingerprint` is the first 16 bytes of
 *   SHA-256("peerchat/fingerprint/v1\n" ‖ the raw 32-byte signing key), as 32
 *   lower-case hex digits, displayed as 8 groups of 4 joined by dashes
 *   (`formatFingerprint`). Dashes rather than spaces keep a fingerprint one
 *   shell word (`peerchat trust alice --key 1a2b-…`, `alice@1a2b-…`) and one
 *   double-click in most terminals; `parseFingerprint` accepts either, in any
 *   case. 128 bits make finding a key for a given fingerprint (a second
 *   preimage) cost about 2^128 hashes; two keys sharing a fingerprint cost
 *   about 2^64, but both are then the attacker's own keys, and pins compare
 *   full keys, never fingerprints, so a collision cannot pass for a pinned key.
 * - A `NameRef` is what users type to name a contact: `name`, or
 *   `name@fingerprint` to name one key explicitly.
 * - A safety number is what two users compare over another channel (in
 *   person, by voice) to check that neither sees an impostor's key. For each
 *   party (username, signingKey), with H = SHA-256 and N = 2048:
 *   ```
 *   h_0  = H("peerchat/safety-number/v1\n" ‖ u16 length ‖ username UTF-8 ‖ key)
 *   h_i  = H(h_{i-1} ‖ key)                       for i = 1 … N
 *   half = for j = 0 … 5: the 40-bit big-endian integer of bytes 5j … 5j+4
 *          of h_N, mod 100000, as 5 decimal digits (zero-padded)  → 30 digits
 *   ```
 *   (u16 is big-endian; the key is its raw 32 bytes.) The safety number is
 *   the smaller half (as a string; both have 30 digits) followed by the
 *   larger: 60 digits, the same for both sides whatever the order of the
 *   arguments, shown as 12 groups of 5 (`formatSafetyNumber`). An impostor
 *   must find a key whose half equals the victim's 30 digits (about 2^100
 *   attempts); the iterations make each attempt 2^11 hashes. Signal iterates
 *   5200 times; 2048 keeps the first call in a fresh process (what `peerchat
 *   verify` pays, mostly JIT warm-up) under 50 ms with the core's own
 *   SHA-256: measured about 8 ms warm and 25–40 ms cold on an idle machine,
 *   where 5200 rounds took 50–80 ms cold. node:crypto's SHA-256 is barely
 *   faster on 64-byte inputs (about 6 ms warm, 30 ms cold), so `hash` is an
 *   argument for symmetry with the rest of the core, not for speed.
 *
 * The rules of `pinDecision`, given the pin stored for the name (if any), the
 * signing key the name resolved to and the fingerprint the user asked for
 * (`name@fingerprint`, if any); the first that applies decides:
 * 1. A fingerprint was asked for and the resolved key does not have it:
 *    `FingerprintMismatch` (refuse), whatever the pin says, because the user
 *    named one key and the network offers another; not even the pinned key
 *    is used in its place.
 * 2. The resolved key is the pinned key (full keys are compared): `Matches`;
 *    nothing is written, and a "verified" pin stays "verified".
 * 3. A fingerprint was asked for (and, by rule 1, the resolved key has it):
 *    `Repin` (use the key and pin it with source "trusted", replacing the
 *    previous pin if there is one). Typing `name@fingerprint` is an explicit,
 *    checkable choice of one key, which is what `peerchat trust NAME --key
 *    FINGERPRINT` makes too; the shell should still say that a pin was
 *    replaced, with both fingerprints.
 * 4. There is no pin: `FirstUse` (use the key and pin it with source
 *    "first-use").
 * 5. Otherwise the name resolved to another key than the pinned one:
 *    `KeyChanged` (refuse and warn). A changed key is never used silently;
 *    only an explicit fingerprint (rule 3) replaces a pin.
 * The pin passed in must be the one stored for the name that was resolved.
 *
 * Hashing is passed in (`hash`, SHA-256 by default) so the core stays pure.
 *
 * @since 0.1.0
 */
import { Either, Schema } from "effect"
import { concatBytes, toHex, utf8 } from "./Bytes.js"
import { rawHex, shortString } from "./Encoding.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import { PublicKeyHex } from "./UserRecord.js"
import { type InvalidUsername, parseUsername, Username } from "./Username.js"
import { KEY_BYTES } from "./KeySizes.js"

// ---------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------

/** Length of a fingerprint in bytes (32 hex digits). */
export const FINGERPRINT_BYTES = 16

/** Domain-separation prefix of a fingerprint's hash input. */
export const FINGERPRINT_PREFIX = "peerchat/fingerprint/v1\n"

const FINGERPRINT_PREFIX_BYTES = utf8(FINGERPRINT_PREFIX)
const FINGERPRINT_DIGITS = 2 * FINGERPRINT_BYTES
const FINGERPRINT_GROUP = 4

/** The short name of a signing key: 32 lower-case hex digits (see the module doc for how it is derived). */
export const Fingerprint = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{32}$/, { message: () => "expected 32 lower-case hex digits (a key fingerprint)" }),
  Schema.brand("peerchat/Fingerprint")
)
/** @see Fingerprint */
export type Fingerprint = typeof Fingerprint.Type

/**
 * The fingerprint of a signing key: the first 16 bytes of
 * SHA-256("peerchat/fingerprint/v1\n" ‖ raw key). `hash` must be SHA-256
 * (the shell may pass a faster implementation).
 */
export const fingerprintOf = (signingKey: PublicKeyHex, hash: HashFunction = sha256): Fingerprint => {
  const digest = hash(concatBytes(FINGERPRINT_PREFIX_BYTES, rawHex(signingKey, KEY_BYTES, "signingKey")))
  if (digest.length < FINGERPRINT_BYTES) throw new RangeError(`a fingerprint needs a hash of at least ${FINGERPRINT_BYTES} bytes`)
  // 16 bytes always encode to 32 lower-case hex digits, which is what Fingerprint checks.
  return toHex(digest.subarray(0, FINGERPRINT_BYTES)) as Fingerprint
}

/** The display form of a fingerprint: 8 groups of 4 hex digits joined by dashes, e.g. `1a2b-3c4d-…-7e8f`. */
export const formatFingerprint = (fingerprint: Fingerprint): string => {
  const groups: Array<string> = []
  for (let i = 0; i < fingerprint.length; i += FINGERPRINT_GROUP) groups.push(fingerprint.slice(i, i + FINGERPRINT_GROUP))
  return groups.join("-")
}

/** Why a string is not a fingerprint. */
export class InvalidFingerprint extends Schema.TaggedError<InvalidFingerprint>()("InvalidFingerprint", {
  input: Schema.String,
  reason: Schema.Literal("WrongLength", "InvalidCharacter")
}) {
  override get message(): string {
    switch (this.reason) {
      case "WrongLength":
        return `fingerprint ${JSON.stringify(this.input)} does not have ${FINGERPRINT_DIGITS} hex digits ` +
          `(8 groups of 4, such as 1a2b-3c4d-5e6f-7a8b-9c0d-1e2f-3a4b-5c6d)`
      case "InvalidCharacter":
        return `fingerprint ${JSON.stringify(this.input)} may only contain hex digits (0-9, a-f), dashes and spaces`
    }
  }
}

/**
 * Reads a fingerprint as users type it: compact or grouped, in either case,
 * with spaces and dashes anywhere (they are ignored).
 */
export const parseFingerprint = (input: string): Either.Either<Fingerprint, InvalidFingerprint> => {
  const digits = input.normalize("NFKC").replace(/[\s-]/g, "").toLowerCase()
  if (!/^[0-9a-f]*$/.test(digits)) return Either.left(new InvalidFingerprint({ input, reason: "InvalidCharacter" }))
  if (digits.length !== FINGERPRINT_DIGITS) return Either.left(new InvalidFingerprint({ input, reason: "WrongLength" }))
  return Either.right(digits as Fingerprint)
}

// ---------------------------------------------------------------------------
// Name references
// ---------------------------------------------------------------------------

/** What users type to name a contact: a username, and optionally the fingerprint of the one key they mean. */
export interface NameRef {
  readonly username: Username
  readonly fingerprint: Fingerprint | undefined
}

/**
 * Reads `name` or `name@fingerprint`. The input is normalized (NFKC) first,
 * so a full-width `＠` separates too; the username is checked by
 * `parseUsername` and the fingerprint by `parseFingerprint` (grouped or not).
 */
export const parseNameRef = (input: string): Either.Either<NameRef, InvalidUsername | InvalidFingerprint> => {
  const normalized = input.normalize("NFKC")
  const at = normalized.indexOf("@")
  const namePart = at < 0 ? normalized : normalized.slice(0, at)
  return Either.flatMap(parseUsername(namePart), (username): Either.Either<NameRef, InvalidFingerprint> =>
    at < 0
      ? Either.right({ username, fingerprint: undefined })
      : Either.map(parseFingerprint(normalized.slice(at + 1)), (fingerprint) => ({ username, fingerprint })))
}

/** A name reference as users type it: `name`, or `name@1a2b-…` with the grouped fingerprint. */
export const formatNameRef = (ref: NameRef): string =>
  ref.fingerprint === undefined ? ref.username : `${ref.username}@${formatFingerprint(ref.fingerprint)}`

// ---------------------------------------------------------------------------
// Safety numbers
// ---------------------------------------------------------------------------

/** How many times each half of a safety number is re-hashed (see the module doc for why 2048). */
export const SAFETY_NUMBER_ITERATIONS = 2048

/** Domain-separation prefix of a safety number's hash input. */
export const SAFETY_NUMBER_PREFIX = "peerchat/safety-number/v1\n"

const SAFETY_NUMBER_PREFIX_BYTES = utf8(SAFETY_NUMBER_PREFIX)
const CHUNKS_PER_HALF = 6
const CHUNK_BYTES = 5
const CHUNK_MODULUS = 100_000
const CHUNK_DIGITS = 5

/** A safety number: 60 decimal digits, the same for both parties. */
export const SafetyNumber = Schema.String.pipe(
  Schema.pattern(/^[0-9]{60}$/, { message: () => "expected 60 decimal digits (a safety number)" }),
  Schema.brand("peerchat/SafetyNumber")
)
/** @see SafetyNumber */
export type SafetyNumber = typeof SafetyNumber.Type

/** One side of a conversation, as its safety number covers it. */
export interface SafetyNumberParty {
  readonly username: Username
  readonly signingKey: PublicKeyHex
}

/** The 30 digits one party contributes (see the module doc). */
const safetyNumberHalf = (party: SafetyNumberParty, hash: HashFunction): string => {
  const key = rawHex(party.signingKey, KEY_BYTES, "signingKey")
  let digest = hash(concatBytes(SAFETY_NUMBER_PREFIX_BYTES, shortString(party.username, "username"), key))
  // One buffer for every round: its tail is the key, its head the previous digest.
  const round = new Uint8Array(digest.length + KEY_BYTES)
  round.set(key, digest.length)
  for (let i = 0; i < SAFETY_NUMBER_ITERATIONS; i++) {
    if (digest.length + KEY_BYTES !== round.length) throw new RangeError("the hash must return digests of one length")
    round.set(digest, 0)
    digest = hash(round)
  }
  if (digest.length < CHUNKS_PER_HALF * CHUNK_BYTES) {
    throw new RangeError(`a safety number needs a hash of at least ${CHUNKS_PER_HALF * CHUNK_BYTES} bytes`)
  }
  let digits = ""
  for (let chunk = 0; chunk < CHUNKS_PER_HALF; chunk++) {
    let value = 0
    // At most 40 bits: exact in a double.
    for (let i = 0; i < CHUNK_BYTES; i++) value = value * 256 + (digest[chunk * CHUNK_BYTES + i] as number)
    digits += (value % CHUNK_MODULUS).toString().padStart(CHUNK_DIGITS, "0")
  }
  return digits
}

/**
 * The safety number of a conversation between `a` and `b`: each party's 30
 * digits, the smaller first, so both sides compute the same number whatever
 * the order of the arguments. `hash` must be SHA-256.
 */
export const safetyNumber = (a: SafetyNumberParty, b: SafetyNumberParty, hash: HashFunction = sha256): SafetyNumber => {
  const first = safetyNumberHalf(a, hash)
  const second = safetyNumberHalf(b, hash)
  // Both halves have 30 digits, so string order is numeric order.
  return (first <= second ? first + second : second + first) as SafetyNumber
}

/** The display form of a safety number: 12 groups of 5 digits separated by spaces, to read aloud. */
export const formatSafetyNumber = (number: SafetyNumber): string => {
  const groups: Array<string> = []
  for (let i = 0; i < number.length; i += CHUNK_DIGITS) groups.push(number.slice(i, i + CHUNK_DIGITS))
  return groups.join(" ")
}

// ---------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------

/**
 * How a pin came to be: "first-use" (pinned at the first exchange, trusted
 * blindly), "verified" (the user compared safety numbers), "trusted" (the
 * user chose this key on purpose: accepted a changed key or named it with
 * `name@fingerprint`).
 */
export const PinSource = Schema.Literal("first-use", "verified", "trusted")
/** @see PinSource */
export type PinSource = typeof PinSource.Type

/**
 * The signing key pinned for a contact. `fingerprint` is the key's own (for
 * display; decisions compare `signingKey`); a pin whose fingerprint is not
 * its key's does not decode, so a damaged stored pin is caught.
 */
export const ContactPin = Schema.Struct({
  username: Username,
  signingKey: PublicKeyHex,
  fingerprint: Fingerprint,
  /** When it was pinned, ms since the Unix epoch. */
  pinnedAt: Schema.NonNegativeInt,
  source: PinSource
}).pipe(
  Schema.filter((pin) =>
    fingerprintOf(pin.signingKey) === pin.fingerprint || "a pin's fingerprint must be the fingerprint of its signing key"
  ),
  Schema.annotations({ identifier: "ContactPin" })
)
/** @see ContactPin */
export type ContactPin = typeof ContactPin.Type

/** True for a valid pin, including a fingerprint that is its key's (what stores check before writing one). */
export const isContactPin = Schema.is(ContactPin)

/** A pin of `signingKey` for `username`, with the key's fingerprint. */
export const makePin = (
  args: {
    readonly username: Username
    readonly signingKey: PublicKeyHex
    readonly pinnedAt: number
    readonly source: PinSource
  },
  hash: HashFunction = sha256
): ContactPin => ({
  username: args.username,
  signingKey: args.signingKey,
  fingerprint: fingerprintOf(args.signingKey, hash),
  pinnedAt: args.pinnedAt,
  source: args.source
})

/** What to do with the key a name resolved to; see the module doc for the rules. */
export type PinDecision =
  /** The resolved key is the pinned one: use it; write nothing. */
  | { readonly _tag: "Matches"; readonly pin: ContactPin }
  /** No pin and no fingerprint asked for: use the key and pin it with source "first-use". */
  | { readonly _tag: "FirstUse"; readonly fingerprint: Fingerprint }
  /** The user named this key with `name@fingerprint`: use it and pin it with source "trusted", replacing `previous`. */
  | { readonly _tag: "Repin"; readonly previous: ContactPin | undefined; readonly fingerprint: Fingerprint }
  /** The name resolved to another key than the pinned one: refuse and warn (see `KeyChanged`). */
  | { readonly _tag: "KeyChanged"; readonly pin: ContactPin; readonly newFingerprint: Fingerprint }
  /** The resolved key is not the one the user named: refuse (see `FingerprintMismatch`). */
  | { readonly _tag: "FingerprintMismatch"; readonly requested: Fingerprint; readonly actual: Fingerprint }

/**
 * Decides whether the key a name resolved to may be used, given the pin
 * stored for that name and the fingerprint the user asked for, if any.
 * `hash` must be SHA-256.
 */
export const pinDecision = (args: {
  readonly pin: ContactPin | undefined
  readonly signingKey: PublicKeyHex
  readonly requested?: Fingerprint | undefined
  readonly hash?: HashFunction | undefined
}): PinDecision => {
  const { pin, signingKey, requested } = args
  const actual = fingerprintOf(signingKey, args.hash ?? sha256)
  if (requested !== undefined && requested !== actual) return { _tag: "FingerprintMismatch", requested, actual }
  if (pin !== undefined && pin.signingKey === signingKey) return { _tag: "Matches", pin }
  if (requested !== undefined) return { _tag: "Repin", previous: pin, fingerprint: actual }
  if (pin === undefined) return { _tag: "FirstUse", fingerprint: actual }
  return { _tag: "KeyChanged", pin, newFingerprint: actual }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/** A contact's name resolved to another signing key than the one pinned for it; the new key was refused. */
export class KeyChanged extends Schema.TaggedError<KeyChanged>()("KeyChanged", {
  username: Username,
  pinnedFingerprint: Fingerprint,
  newFingerprint: Fingerprint
}) {
  override get message(): string {
    const pinned = formatFingerprint(this.pinnedFingerprint)
    const found = formatFingerprint(this.newFingerprint)
    return `the signing key of ${this.username} has changed: you pinned the key ${pinned}, ` +
      `but the name now resolves to the key ${found}, so Peerchat refused to use it. ` +
      `This happens when ${this.username} reinstalls or moves to a new device, and it is also what an impostor looks like. ` +
      `Compare safety numbers with ${this.username} in person or over another channel you trust ` +
      `(peerchat verify ${this.username}); only if they match, accept the new key on purpose: ` +
      `peerchat trust ${this.username} --key ${found}`
  }
}

/** The user asked for `name@fingerprint`, and the name resolved to a key with another fingerprint; it was refused. */
export class FingerprintMismatch extends Schema.TaggedError<FingerprintMismatch>()("FingerprintMismatch", {
  username: Username,
  requested: Fingerprint,
  actual: Fingerprint
}) {
  override get message(): string {
    const requested = formatFingerprint(this.requested)
    const actual = formatFingerprint(this.actual)
    return `${this.username} resolves to the key ${actual}, not to the key ${requested} you asked for ` +
      `(${this.username}@${requested}), so Peerchat refused to use it. ` +
      `Either the fingerprint is mistyped or another key holds the name now. ` +
      `Check the fingerprint with ${this.username} over a channel you trust, or compare safety numbers ` +
      `(peerchat verify ${this.username}); only if ${this.username} confirms that ${actual} is their key, ` +
      `accept it on purpose: peerchat trust ${this.username} --key ${actual}`
  }
}
