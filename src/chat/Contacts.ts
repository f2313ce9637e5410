/**
 * The people this user talks to, by name, each pinned to one signing key
 * (trust on first use, like Signal's safety numbers). Every record the chat
 * uses for another user comes through here: the name's k closest nodes say
 * who claims it (`Directory.resolve`), and the core's `chooseContact` picks
 * the claimant to use from the pin and any fingerprint the user typed. A key
 * met for the first time is pinned; a key other than the pinned one is
 * refused (`KeyChanged`) until the user accepts it with `trust`; a conflict
 * is never settled by the network alone. `verify` gives the safety number
 * two people compare over another channel. `checkSender` applies the same
 * pins to the sender record a message carries (the core's `senderTrust`):
 * a pinned name is checked without the network, an unpinned one against
 * what the network says, and a key is pinned only when the network names it
 * as the name's sole owner.
 *
 * @since 0.2.0
 */
import { Clock, Context, Deferred, Duration, Effect, Either, Option } from "effect"
import { toHex } from "../core/Bytes.js"
import { type SenderNameAnswer, senderTrust } from "../core/Message.js"
import { chooseContact, claimantsOf, isNewerRecord } from "../core/NameResolution.js"
import { trimOldest } from "../core/NewestFirst.js"
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

/**
 * What `checkSender` decided about the sender of a received message:
 * "Accepted" with the sender's newest known record of the carried key (where
 * the receipt goes) and why it was believed (see `senderTrust`); "Refused"
 * (the name is pinned to, or held by, another key: `final` unless the user
 * may still accept the key, as after a key change it is told to verify);
 * "Held" for now (a contested name, or the pins cannot be read): the message
 * waits with its sender or relays and is tried again.
 */
export type SenderCheck =
  | { readonly _tag: "Accepted"; readonly record: UserRecord; readonly basis: "Pinned" | "NetworkOwner" | "Unconfirmed" }
  | { readonly _tag: "Refused"; readonly detail: string; readonly final: boolean }
  | { readonly _tag: "Held"; readonly detail: string }

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

/** What the acceptor needs of the contacts besides the `Contacts` service (see `makeContacts`). */
export interface SenderChecks {
  /**
   * Whether to believe the sender record a received message carries (already
   * checked by `checkOpenedMessage`) for its name: the sender rule of the
   * core's `senderTrust`, with this user's pin and, only when the name is not
   * pinned, the network's answer. Pins the key on first use when the network
   * names it as the sole owner; logs every refusal and hold with what to do.
   */
  readonly checkSender: (carried: UserRecord) => Effect.Effect<SenderCheck>
}

/** How long a recipient goes by the network's answer about a sender's name it has not pinned: one minute. */
export const SENDER_ANSWER_TTL_MS = 60_000

const fromEither = <A, E>(either: Either.Either<A, E>): Effect.Effect<A, E> =>
  Either.match(either, { onLeft: Effect.fail, onRight: Effect.succeed })

/**
 * Builds the contacts service over the chat store's pins and the directory,
 * with the acceptor's sender check over the same pins and record cache.
 */
export const makeContacts: Effect.Effect<
  Contacts["Type"] & SenderChecks,
  never,
  ChatStore | ChatConfig | Directory | Identity
> = Effect.gen(function*() {
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

  /** Keeps `record` for `cached` when it is newer than the one kept (a carried record of a pinned key, say). */
  const rememberIfNewer = (record: UserRecord, now: number): void => {
    const hit = recordCache.get(record.username)
    if (hit === undefined || hit.record.signingKey !== record.signingKey || isNewerRecord(record, hit.record)) {
      remember(record, now)
    }
  }

  // Which keys the network said hold a sender's name, for a minute: a burst of messages from a sender
  // nobody pinned (or one the network contradicts: an impostor sending again and again) costs one read,
  // not one each. Reads under way are shared. Bounds: senderRecordCacheSize names; one read per name.
  const senderAnswers = new Map<Username, { readonly answer: SenderNameAnswer; readonly at: number }>()
  const senderReads = new Map<Username, Deferred.Deferred<SenderNameAnswer>>()
  /** The network's answer for `username`, and whether it was kept from an earlier read (not read for this message). */
  const senderAnswer = (username: Username): Effect.Effect<{ readonly answer: SenderNameAnswer; readonly kept: boolean }> =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const hit = senderAnswers.get(username)
      if (hit !== undefined && now - hit.at < SENDER_ANSWER_TTL_MS) return { answer: hit.answer, kept: true }
      const underWay = senderReads.get(username)
      if (underWay !== undefined) return { answer: yield* Deferred.await(underWay), kept: false }
      // The read runs in a fiber of its own: others wait for it, and must get its answer even when the
      // message that started it is dropped meanwhile (its sender hung up); never a made-up "no answer",
      // which would let an impostor's next message through unconfirmed. It ends by its lookups' timeouts.
      // Registered and started with no interruption between, so no entry is left without its read.
      const read = yield* Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const started = yield* Deferred.make<SenderNameAnswer>()
          senderReads.set(username, started)
          const reading = directory.resolve(username).pipe(
            Effect.catchTag("NotConnected", () => Effect.succeed<SenderNameAnswer>({ _tag: "NotConnected" })),
            Effect.tap((answer) =>
              Effect.sync(() => {
                // Only an answer naming keys is kept. No answer is no fact about the name, and "nobody
                // holds it" may change any moment: the owner registering must be heard at once, or a
                // squatter heard just before would still be accepted, and the owner not pinned.
                if (answer._tag === "NotConnected" || answer._tag === "Unclaimed") return
                senderAnswers.delete(username)
                senderAnswers.set(username, { answer, at: now })
                trimOldest(senderAnswers, config.senderRecordCacheSize)
              })
            )
          )
          // Whatever becomes of the read, its waiters get its outcome and its entry goes.
          yield* Effect.forkDaemon(restore(reading).pipe(
            Effect.exit,
            Effect.flatMap((outcome) => Deferred.done(started, outcome)),
            Effect.ensuring(Effect.sync(() => senderReads.delete(username)))
          ))
          return started
        })
      )
      return { answer: yield* Deferred.await(read), kept: false }
    })

  const checkSender = (carried: UserRecord): Effect.Effect<SenderCheck> =>
    Effect.gen(function*() {
      const username = carried.username
      const carriedFingerprint = formatFingerprint(fingerprintOf(carried.signingKey))
      // Fail closed: a pin that cannot be read must never pass for no pin, or a hijacker's key would be
      // checked against the network only.
      const pinRead = yield* Effect.either(store.pinOf(username))
      if (Either.isLeft(pinRead)) {
        yield* Effect.logError(`cannot read the pin of ${username}; a message from them waits`, pinRead.left.message)
        return { _tag: "Held", detail: "the recipient cannot read its contacts now; try again later" } as const
      }
      const pin = Option.getOrUndefined(pinRead.right)
      let trust = senderTrust({ carriedKey: carried.signingKey, pin, answer: undefined })
      let answerKept = false
      if (trust._tag === "AskNetwork") {
        const { answer, kept } = yield* senderAnswer(username)
        answerKept = kept
        trust = senderTrust({ carriedKey: carried.signingKey, pin, answer })
      }
      const now = yield* Clock.currentTimeMillis
      switch (trust._tag) {
        case "AskNetwork":
          // senderTrust asks for the network only without an answer, and one was given.
          return { _tag: "Held", detail: "the sender's name could not be checked" } as const
        case "KeyChanged": {
          const pinned = formatFingerprint(fingerprintOf(trust.pinnedKey))
          yield* Effect.logWarning(
            `refused a message from ${username} signed with the key ${carriedFingerprint}: you pinned ${username}'s key ${pinned}. ` +
              `This is what an impostor looks like; it also happens when ${username} moves to a new key. ` +
              `Compare safety numbers with ${username} over a channel you trust (peerchat verify ${username}); ` +
              `only if they match, accept the new key on purpose: peerchat trust ${username} --key ${carriedFingerprint}`
          )
          return {
            _tag: "Refused",
            final: false,
            detail: `the sender's key ${carriedFingerprint} is not the key the recipient pinned for ${JSON.stringify(username)}`
          } as const
        }
        case "Contradicted": {
          // A kept answer may be a minute old: the name may have moved to this key since (registered
          // again). Held, not refused, so the message is kept and sent again, and checked afresh then.
          if (answerKept) {
            return {
              _tag: "Held",
              detail: `the network named another key than ${carriedFingerprint} for ${JSON.stringify(username)} lately; ` +
                "it is asked again within a minute"
            } as const
          }
          const holders = trust.claimantKeys.map((key) => formatFingerprint(fingerprintOf(key))).join(", ")
          yield* Effect.logWarning(
            `refused a message from ${username} signed with the key ${carriedFingerprint}: ` +
              `the network names another key for ${username} (${holders}), so it is from an impostor`
          )
          return {
            _tag: "Refused",
            final: true,
            detail: `the network names another key than ${carriedFingerprint} for ${JSON.stringify(username)}`
          } as const
        }
        case "Contested":
          yield* Effect.logWarning(
            `a message from ${username} (key ${carriedFingerprint}) is held: ${trust.claimantKeys.length} keys claim the name ` +
              `${username}, and you have not chosen one. Ask ${username} for their fingerprint (peerchat id) and, ` +
              `if it is ${carriedFingerprint}, accept it: peerchat trust ${username} --key ${carriedFingerprint}`
          )
          return {
            _tag: "Held",
            detail: `several keys claim ${JSON.stringify(username)}; the recipient has not chosen one yet`
          } as const
        case "Accept":
          break
      }
      // The newest record of the key: the network's may list an address the carried one (sealed
      // when the message was sent) does not.
      const record = trust.networkRecord !== undefined && isNewerRecord(trust.networkRecord, carried)
        ? trust.networkRecord
        : carried
      if (trust.pinFirstUse) {
        yield* store.pin(makePin({ username, signingKey: carried.signingKey, pinnedAt: now, source: "first-use" })).pipe(
          Effect.catchAll((error) => Effect.logWarning(`could not pin the key of ${username}`, error.message))
        )
      }
      if (trust.basis === "Unconfirmed") {
        yield* Effect.logInfo(
          `accepted a message from ${username} (key ${carriedFingerprint}) that the network could not confirm now; ` +
            "the key is not pinned until the network names it as the owner of the name"
        )
      } else if (record.expiresAt > now) {
        rememberIfNewer(record, now)
      }
      return { _tag: "Accepted", record, basis: trust.basis } as const
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
      if (confirm && current !== undefined && current.signingKey !== theirKey && ref.fingerprint === undefined) {
        // Confirming must name the key it confirms: the network's answer may have changed since
        // the number was shown, and a changed key is accepted only on purpose.
        return yield* new KeyChanged({
          username: ref.username,
          pinnedFingerprint: current.fingerprint,
          newFingerprint: fingerprintOf(theirKey)
        })
      }
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
      // Trusting the key already pinned as verified changes nothing: it stays verified.
      if (previous !== undefined && previous.signingKey === chosen.record.signingKey && previous.source === "verified") {
        return previous
      }
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

  return { ...Contacts.of({ resolve, recordOf, cached, whoAmI, verify, trust, list: store.pins }), checkSender }
})
