/**
 * The conflict rule of the directory: what a set of user records gathered
 * for one name says about who holds it. Human-readable names in an open
 * network cannot be made unique (Zooko's triangle), so the rule does not
 * pick a winner among different keys: records are grouped by signing key,
 * a sequence number is compared only with records of the same key (a
 * hostile peer's record with sequence 2^53 - 1 under its own key says
 * nothing about the owner's), and
 * - no record: the name is unclaimed;
 * - one key: that key owns the name, with its newest record;
 * - several keys: a conflict, listing every claimant, and the caller must
 *   not pick one silently (the user chooses, by a pinned key or a
 *   `name@fingerprint`).
 *
 * The records must already be valid (signature, node id, lifetime, under
 * the name's own key): this module only compares them.
 *
 * @since 0.2.0
 */
import { type ContactPin, type Fingerprint, fingerprintOf, type PinSource } from "./Pinning.js"
import { type HashFunction, sha256 } from "./Sha256.js"
import { concatBytes, utf8 } from "./Bytes.js"
import { type Key, keyFromBytes, keyToBytes } from "./Id.js"
import type { UserRecord } from "./UserRecord.js"

/** One key claiming a name: its newest record and how many of the asked nodes hold that key's claim. */
export interface Claimant {
  readonly record: UserRecord
  readonly holders: number
}

/** What the gathered records say about a name. */
export type NameAnswer =
  /** Every record found names one key. */
  | { readonly _tag: "Owner"; readonly record: UserRecord; readonly holders: number }
  /** Records of several keys were found: no owner can be named without the user. */
  | { readonly _tag: "Conflict"; readonly claimants: ReadonlyArray<Claimant> }
  /** No record was found. */
  | { readonly _tag: "Unclaimed" }

/**
 * Whether `a` is a newer record of the same key than `b`: a higher sequence;
 * on a tie (an owner that signed two records with one sequence), the later
 * issue time, then the larger signature, so every reader picks the same one.
 */
export const isNewerRecord = (a: UserRecord, b: UserRecord): boolean => {
  if (a.sequence !== b.sequence) return a.sequence > b.sequence
  if (a.issuedAt !== b.issuedAt) return a.issuedAt > b.issuedAt
  return a.signature > b.signature
}

/**
 * Applies the conflict rule to the valid records gathered for one name
 * (one per node that held one; several nodes may hold the same record).
 * Claimants are listed most-held first, then by signing key, so the order
 * is the same for every reader.
 */
export const resolveClaims = (records: ReadonlyArray<UserRecord>): NameAnswer => {
  const byKey = new Map<string, { record: UserRecord; holders: number }>()
  for (const record of records) {
    const claim = byKey.get(record.signingKey)
    if (claim === undefined) byKey.set(record.signingKey, { record, holders: 1 })
    else {
      claim.holders++
      if (isNewerRecord(record, claim.record)) claim.record = record
    }
  }
  const claimants: Array<Claimant> = Array.from(byKey.values(), ({ holders, record }) => ({ record, holders }))
  if (claimants.length === 0) return { _tag: "Unclaimed" }
  if (claimants.length === 1) {
    const [only] = claimants as [Claimant]
    return { _tag: "Owner", record: only.record, holders: only.holders }
  }
  claimants.sort((a, b) =>
    b.holders - a.holders || (a.record.signingKey < b.record.signingKey ? -1 : a.record.signingKey > b.record.signingKey ? 1 : 0)
  )
  return { _tag: "Conflict", claimants }
}

/** Every claimant of the answer: none, the owner, or each key of a conflict. */
export const claimantsOf = (answer: NameAnswer): ReadonlyArray<Claimant> => {
  switch (answer._tag) {
    case "Owner":
      return [{ record: answer.record, holders: answer.holders }]
    case "Conflict":
      return answer.claimants
    case "Unclaimed":
      return []
  }
}

/** The claimant holding `signingKey`, if it is one of the answer's. */
export const claimantWithKey = (answer: NameAnswer, signingKey: string): UserRecord | undefined => {
  switch (answer._tag) {
    case "Owner":
      return answer.record.signingKey === signingKey ? answer.record : undefined
    case "Conflict":
      return answer.claimants.find((claimant) => claimant.record.signingKey === signingKey)?.record
    case "Unclaimed":
      return undefined
  }
}

/**
 * Which claimant to talk to, given what the network answered for a name,
 * the key pinned for it (trust on first use), and the fingerprint the user
 * typed (`name@fingerprint`), if any.
 */
export type ContactChoice =
  /** Use this record; `pinAs` says how to pin its key (undefined: the pin already names it). */
  | { readonly _tag: "Use"; readonly record: UserRecord; readonly pinAs: PinSource | undefined; readonly contested: boolean }
  /** Nobody claims the name. */
  | { readonly _tag: "Unclaimed" }
  /** Several keys claim it and nothing (pin, fingerprint) says which one is meant. */
  | { readonly _tag: "Conflict"; readonly claimants: ReadonlyArray<Claimant> }
  /** The pinned key claims the name no more; another key does. Refuse until the user accepts it on purpose. */
  | { readonly _tag: "KeyChanged"; readonly pin: ContactPin; readonly newFingerprint: Fingerprint }
  /** No claimant has the fingerprint the user typed. */
  | { readonly _tag: "FingerprintMismatch"; readonly requested: Fingerprint; readonly actual: Fingerprint }

/**
 * The contact rule (see docs/security.md):
 * 1. A typed fingerprint picks the claimant with that key, whatever else
 *    claims the name and whatever is pinned (an explicit, verifiable choice:
 *    its key is pinned as "trusted" when it differs from the pin).
 * 2. Otherwise a pinned key picks its claimant, even in a conflict.
 * 3. Otherwise a sole owner is used and pinned on first use.
 * A key other than the pinned one is never used silently, and a conflict is
 * never settled by the network alone.
 */
export const chooseContact = (args: {
  readonly answer: NameAnswer
  readonly pin: ContactPin | undefined
  readonly requested: Fingerprint | undefined
  readonly hash?: HashFunction | undefined
}): ContactChoice => {
  const { answer, pin, requested } = args
  const hash = args.hash ?? sha256
  const claimants = claimantsOf(answer)
  if (claimants.length === 0) return { _tag: "Unclaimed" }
  const contested = claimants.length > 1
  if (requested !== undefined) {
    const chosen = claimants.find(({ record }) => fingerprintOf(record.signingKey, hash) === requested)
    if (chosen !== undefined) {
      const pinAs = pin?.signingKey === chosen.record.signingKey ? undefined : "trusted"
      return { _tag: "Use", record: chosen.record, pinAs, contested }
    }
    if (answer._tag === "Owner") {
      return { _tag: "FingerprintMismatch", requested, actual: fingerprintOf(answer.record.signingKey, hash) }
    }
    return { _tag: "Conflict", claimants }
  }
  if (pin !== undefined) {
    const pinned = claimants.find(({ record }) => record.signingKey === pin.signingKey)
    if (pinned !== undefined) return { _tag: "Use", record: pinned.record, pinAs: undefined, contested }
    if (answer._tag === "Owner") {
      return { _tag: "KeyChanged", pin, newFingerprint: fingerprintOf(answer.record.signingKey, hash) }
    }
    return { _tag: "Conflict", claimants }
  }
  if (answer._tag === "Owner") return { _tag: "Use", record: answer.record, pinAs: "first-use", contested: false }
  return { _tag: "Conflict", claimants }
}

const RIVAL_SLOT_DOMAIN = utf8("peerchat/rival-claim/v1\n")

/**
 * Where a storer keeps the one rival claim it holds for the name under
 * `key` (a record of another key that it refused to store in the name's
 * own slot): a slot of its own, so storage keyed by key needs nothing new.
 */
export const rivalSlotKey = (key: Key, hash: HashFunction = sha256): Key =>
  keyFromBytes(hash(concatBytes(RIVAL_SLOT_DOMAIN, keyToBytes(key))))
