/**
 * The people this user talks to, by name, each pinned to one signing key
 * (trust on first use, like Signal's safety numbers). Every record the chat
 * uses for another user comes through here: the name's k closest nodes say
 * who claims it (`Directory.resolve`), and the core's `chooseContact` picks
 * the claimant to use from the pin and any fingerprint the user typed. A key
 * met for the first time is pinned; a key other than the pinned one is
 * refused (`KeyChanged`) until the user accepts it with `trust`; a conflict
 * is never settled by the network alone. `verify` gives the safety number
 * two people compare over another channel.
 *
 * @since 0.2.0
 */
import { Clock, Context, Duration, Effect, Either, Option } from "effect"
import { toHex } from "../core/Bytes.js"
import { chooseContact, claimantsOf } from "../core/NameResolution.js"
import {
  type ContactPin,
  type Fingerprint,
  FingerprintMismatch,
  fingerprintOf,
  formatFingerprint,
  formatSafetyNumber,
  type InvalidFingerprint,
  KeyChanged,
  makePin,
  type NameRef,
  parseFingerprint,
  parseNameRef,
  safetyNumber
} from "../core/Pinning.js"
import type { PublicKeyHex, UserRecord } from "../core/UserRecord.js"
import { type InvalidUsername, parseUsername, type Username } from "../core/Username.js"
import { type NameConflict, type NotConnected, UserNotFound } from "../node/Control.js"
import { Directory, nameConflictOf } from "../node/Directory.js"
import { Identity } from "../node/Identity.js"
import { ChatConfig } from "./ChatConfig.js"
import { ChatStore, type PinsFull, type StorageError } from "./ChatStore.js"
import { NotRegistered } from "./Messenger.js"

/** Why the record of a contact cannot be used. */
export type ContactError = UserNotFound | NameConflict | NotConnected | KeyChanged | FingerprintMismatch | StorageError

/** This user as others should name them: `name@fingerprint`. */
export interface OwnIdentity {
  readonly username: Username | undefined
  readonly fingerprint: Fingerprint
  readonly signingKey: PublicKeyHex
}

/** What `verify` shows: the two keys and the safety number over them. */
export interface Verification {
  readonly username: Username
  /** The contact's key: the pinned one, else the one the network names now. */
  readonly fingerprint: Fingerprint
  /** The pin, when there is one (its source says whether it was verified). */
  readonly pin: ContactPin | undefined
  /** The 60-digit safety number, grouped; the same on both sides when neither sees an impostor. */
  readonly safetyNumber: string
}

/** The contacts of the local user. */
export class Contacts extends Context.Tag("peerchat/Contacts")<Contacts, {
  /** The record `ref` names, pin-checked (pinning a key met for the first time or named on purpose). */
  readonly resolve: (ref: NameRef) => Effect.Effect<UserRecord, ContactError>
  /** The pin-checked live record of `username`; a recently looked-up one unless `fresh`. None when unusable (logged). */
  readonly recordOf: (username: Username, fresh: boolean) => Effect.Effect<Option.Option<UserRecord>>
  /** A recently looked-up record of `username` whose key is still the pinned one. */
  readonly cached: (username: Username) => Effect.Effect<UserRecord | undefined>
  /** This user's name and fingerprint. */
  readonly whoAmI: Effect.Effect<OwnIdentity>
  /**
   * The safety number with `name` (`name@fingerprint` to check a key not yet
   * pinned); with `confirm`, records that the numbers matched (source "verified").
   */
  readonly verify: (
    name: string,
    confirm: boolean
  ) => Effect.Effect<Verification, InvalidUsername | InvalidFingerprint | NotRegistered | ContactError | PinsFull>
  /**
   * Accepts the key with `fingerprint` for `name` on purpose (after comparing
   * safety numbers): it must be one of the keys that claim the name now.
   */
  readonly trust: (
    name: string,
    fingerprint: string
  ) => Effect.Effect<ContactPin, InvalidUsername | InvalidFingerprint | ContactError | PinsFull>
  /** Every pinned contact, by name. */
  readonly list: Effect.Effect<ReadonlyArray<ContactPin>, StorageError>
}>() {}

const fromEither = <A, E>(either: Either.Either<A, E>): Effect.Effect<A, E> =>
  Either.match(either, { onLeft: Effect.fail, onRight: Effect.succeed })

/** Builds the contacts service over the chat store's pins and the directory. */
export const makeContacts = Effect.gen(function*() {
  const store = yield* ChatStore
  const config = yield* ChatConfig
  const directory = yield* Directory
  const identity = yield* Identity
  const ownKey = toHex(identity.signingPublicKey) as PublicKeyHex

  /** Records recently looked up, to check a burst of messages with one lookup. Bound: senderRecordCacheSize. */
  const recordCache = new Map<Username, { readonly record: UserRecord; readonly at: number }>()
  const cacheTtlMs = Duration.toMillis(config.senderRecordCacheTtl)

  const remember = (record: UserRecord, now: number): void => {
    recordCache.delete(record.username)
    recordCache.set(record.username, { record, at: now })
    // Map order is insertion order: the first key is the least recently refreshed.
    if (recordCache.size > config.senderRecordCacheSize) {
      const oldest = recordCache.keys().next()
      if (oldest.done !== true) recordCache.delete(oldest.value)
    }
  }

  const resolve = (ref: NameRef): Effect.Effect<UserRecord, ContactError> =>
    Effect.gen(function*() {
      const answer = yield* directory.resolve(ref.username)
      const pin = Option.getOrUndefined(yield* store.pinOf(ref.username))
      const choice = chooseContact({ answer, pin, requested: ref.fingerprint })
      switch (choice._tag) {
        case "Unclaimed":
          return yield* new UserNotFound({ username: ref.username })
        case "Conflict":
          return yield* nameConflictOf(ref.username, choice.claimants)
        case "KeyChanged":
          return yield* new KeyChanged({
            username: ref.username,
            pinnedFingerprint: choice.pin.fingerprint,
            newFingerprint: choice.newFingerprint
          })
        case "FingerprintMismatch":
          return yield* new FingerprintMismatch({ username: ref.username, requested: choice.requested, actual: choice.actual })
        case "Use":
          break
      }
      const now = yield* Clock.currentTimeMillis
      const record = choice.record
      if (choice.pinAs !== undefined) {
        yield* store.pin(makePin({ username: ref.username, signingKey: record.signingKey, pinnedAt: now, source: choice.pinAs })).pipe(
          Effect.catchAll((error) => Effect.logWarning(`could not pin the key of ${ref.username}`, error.message))
        )
      }
      if (choice.contested) {
        yield* Effect.logWarning(
          `other keys claim the name "${ref.username}" too; using the one you ${choice.pinAs === "trusted" ? "named" : "pinned"} ` +
            `(${formatFingerprint(fingerprintOf(record.signingKey))})`
        )
      }
      remember(record, now)
      return record
    })

  const cached = (username: Username): Effect.Effect<UserRecord | undefined> =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const hit = recordCache.get(username)
      if (hit === undefined || now - hit.at >= cacheTtlMs || hit.record.expiresAt <= now) return undefined
      const pin = yield* store.pinOf(username).pipe(Effect.orElseSucceed(() => Option.none()))
      return Option.isSome(pin) && pin.value.signingKey === hit.record.signingKey ? hit.record : undefined
    })

  const recordOf = (username: Username, fresh: boolean): Effect.Effect<Option.Option<UserRecord>> =>
    Effect.gen(function*() {
      const hit = fresh ? undefined : yield* cached(username)
      if (hit !== undefined) return Option.some(hit)
      return yield* resolve({ username, fingerprint: undefined }).pipe(
        Effect.map(Option.some),
        Effect.catchAll((problem) =>
          Effect.as(
            problem._tag === "UserNotFound" || problem._tag === "NotConnected"
              ? Effect.logDebug(`no usable record of ${username}`, problem.message)
              : Effect.logWarning(`not using the record of ${username}`, problem.message),
            Option.none<UserRecord>()
          )
        )
      )
    })

  const whoAmI = Effect.map(
    directory.username.pipe(Effect.orElseSucceed(() => Option.none<Username>())),
    (username): OwnIdentity => ({ username: Option.getOrUndefined(username), fingerprint: fingerprintOf(ownKey), signingKey: ownKey })
  )

  /**
   * The key a safety number is computed for, pinning nothing: the one typed
   * (`name@fingerprint`), else the one the name resolves to now, even when
   * that is not the pinned key (after a KeyChanged warning, the new key is
   * exactly what the two people must compare). Without a network answer,
   * the pinned key.
   */
  const keyToVerify = (ref: NameRef, pin: ContactPin | undefined) =>
    Effect.gen(function*() {
      const answer = yield* directory.resolve(ref.username).pipe(
        Effect.catchTag("NotConnected", (error) => pin === undefined ? Effect.fail(error) : Effect.succeed(undefined))
      )
      if (answer === undefined) return (pin as ContactPin).signingKey
      const choice = chooseContact({ answer, pin, requested: ref.fingerprint })
      switch (choice._tag) {
        case "Use":
          return choice.record.signingKey
        case "KeyChanged":
          // The sole owner now: its key is the one to compare before trusting it.
          return claimantsOf(answer)[0]?.record.signingKey ?? choice.pin.signingKey
        case "Unclaimed":
          if (pin !== undefined && ref.fingerprint === undefined) return pin.signingKey
          return yield* new UserNotFound({ username: ref.username })
        case "Conflict":
          return yield* nameConflictOf(ref.username, choice.claimants)
        case "FingerprintMismatch":
          return yield* new FingerprintMismatch({ username: ref.username, requested: choice.requested, actual: choice.actual })
      }
    })

  const verify = (name: string, confirm: boolean) =>
    Effect.gen(function*() {
      const ref = yield* fromEither(parseNameRef(name))
      const own = yield* whoAmI
      if (own.username === undefined) return yield* new NotRegistered()
      const pin = Option.getOrUndefined(yield* store.pinOf(ref.username))
      const theirKey = yield* keyToVerify(ref, pin)
      const number = formatSafetyNumber(safetyNumber(
        { username: own.username, signingKey: ownKey },
        { username: ref.username, signingKey: theirKey }
      ))
      let current = Option.getOrUndefined(yield* store.pinOf(ref.username))
      if (confirm) {
        current = makePin({ username: ref.username, signingKey: theirKey, pinnedAt: yield* Clock.currentTimeMillis, source: "verified" })
        yield* store.pin(current)
      }
      return { username: ref.username, fingerprint: fingerprintOf(theirKey), pin: current, safetyNumber: number }
    })

  const trust = (name: string, fingerprintInput: string) =>
    Effect.gen(function*() {
      const username = yield* fromEither(parseUsername(name))
      const fingerprint = yield* fromEither(parseFingerprint(fingerprintInput))
      const answer = yield* directory.resolve(username)
      const claimants = claimantsOf(answer)
      const chosen = claimants.find(({ record }) => fingerprintOf(record.signingKey) === fingerprint)
      if (chosen === undefined) {
        const [first] = claimants
        return yield* first === undefined
          ? new UserNotFound({ username })
          : new FingerprintMismatch({ username, requested: fingerprint, actual: fingerprintOf(first.record.signingKey) })
      }
      const previous = Option.getOrUndefined(yield* store.pinOf(username))
      // Trusting the key already pinned changes nothing (a verified pin stays verified).
      if (previous !== undefined && previous.signingKey === chosen.record.signingKey) return previous
      const pin = makePin({
        username,
        signingKey: chosen.record.signingKey,
        pinnedAt: yield* Clock.currentTimeMillis,
        source: "trusted"
      })
      yield* store.pin(pin)
      recordCache.delete(username)
      yield* Effect.logInfo(`now trusting ${username}@${formatFingerprint(fingerprint)}`)
      return pin
    })

  return Contacts.of({ resolve, recordOf, cached, whoAmI, verify, trust, list: store.pins })
})
