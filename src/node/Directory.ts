/**
 * The user directory: claiming a username (register), resolving one (whois),
 * and keeping this node's own record alive. A record is signed by the node's
 * key, stored at the k nodes closest to the user key, and re-published with a
 * higher sequence when the node starts (so a node that moved announces its new
 * address), every `republishInterval`, and on demand. The sequence is saved
 * before a record carrying it leaves the node.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Either, Layer, Option, Queue, Ref, Schedule, Stream } from "effect"
import { type AdvertisedRoutes, advertisedRoutesEqual } from "../core/PeerAddress.js"
import { Circuits } from "./Circuits.js"
import { toHex } from "../core/Bytes.js"
import { checkClaimProof, type ClaimProof, expectedAttempts, type MemoryHardHash, solveClaimStep } from "../core/ClaimProof.js"
import { formatAddress } from "../core/Contact.js"
import type { NodeId } from "../core/Id.js"
import { type Claimant, claimantsOf, type NameAnswer } from "../core/NameResolution.js"
import {
  FingerprintMismatch,
  fingerprintOf,
  formatFingerprint,
  type InvalidFingerprint,
  type NameRef,
  parseNameRef
} from "../core/Pinning.js"
import { type PublicKeyHex, signUserRecord, type UserRecord } from "../core/UserRecord.js"
import { type InvalidUsername, parseUsername, type Username, userKey } from "../core/Username.js"
import { AlreadyRegistered, NameConflict, NameTaken, type NotConnected, PublishFailed, UserNotFound } from "./Control.js"
import { DhtNode } from "./DhtNode.js"
import { type ClaimProgress, ClaimWork } from "./ClaimWork.js"
import { Identity, Signatures } from "./Identity.js"
import { NodeConfig } from "./NodeConfig.js"
import { type Profile, ProfileError, ProfileStore } from "./Profile.js"
import { Transport } from "./Transport.js"

/** How long a published record stays valid, and how often it is renewed. */
export interface DirectoryConfig {
  /** Lifetime of a published record (its `expiresAt - issuedAt`); storers accept at most 7 days. */
  readonly recordLifetime: Duration.Duration
  /** How often the owner re-publishes its record; well under the lifetime so a missed round is harmless. */
  readonly republishInterval: Duration.Duration
  /** How long `register` and `whois` wait for a node that is still joining before saying it is not connected. */
  readonly connectWait: Duration.Duration
}

/**
 * Records live 7 days (the most storers accept) and are renewed every hour:
 * a user who is away for days must stay resolvable, or nobody could seal a
 * message to them for their mailbox.
 */
export const defaultDirectoryConfig: DirectoryConfig = {
  recordLifetime: Duration.days(7),
  republishInterval: Duration.hours(1),
  connectWait: Duration.seconds(10)
}

/** What `register` did: the published record, and what the user should know about the claim. */
export interface Registration {
  readonly record: UserRecord
  /** Said to the user with the result (the claim is only local, someone else claims the name too). */
  readonly warning: string | undefined
}

/** Register, resolve, and keep this node's own record published. */
export class Directory extends Context.Tag("peerchat/Directory")<Directory, {
  /** The username this node has registered, if any. */
  readonly username: Effect.Effect<Option.Option<Username>, ProfileError>
  /**
   * Claims `input` for this node's key and publishes the record. Refused while
   * the node has no peer (`NotConnected`), except on the first node of a new
   * network, where the claim is local until others join (said in `warning`).
   */
  readonly register: (
    input: string
  ) => Effect.Effect<Registration, InvalidUsername | NameTaken | AlreadyRegistered | PublishFailed | NotConnected>
  /** What the name's k closest nodes say about `username` (owner, conflict or unclaimed). */
  readonly resolve: (username: Username) => Effect.Effect<NameAnswer, NotConnected>
  /**
   * The record `input` (`name` or `name@fingerprint`) names: the owner's, or
   * with a fingerprint the claimant with that key, never another one.
   */
  readonly whois: (input: string) => Effect.Effect<UserRecord, WhoisError>
  /** Publishes a fresh record for the registered name (nothing when unregistered). */
  readonly republish: Effect.Effect<Option.Option<UserRecord>, NameTaken | PublishFailed>
  /** What the user should know about their own name now (someone else claims it), if anything. */
  readonly ownNameWarning: Effect.Effect<Option.Option<string>>
}>() {
  /** The directory of a node; re-publishes the registered name now and then every `republishInterval`. */
  static readonly layer = (config: Partial<DirectoryConfig> = {}) =>
    Layer.scoped(Directory, makeDirectory({ ...defaultDirectoryConfig, ...config }))
}

/** Every way `whois` fails. */
export type WhoisError = InvalidUsername | InvalidFingerprint | UserNotFound | NameConflict | NotConnected | FingerprintMismatch

/** The conflict error of an answer with several claimants. */
export const nameConflictOf = (username: Username, claimants: ReadonlyArray<Claimant>): NameConflict =>
  new NameConflict({
    username,
    claimants: claimants.map(({ holders, record }) => ({
      fingerprint: formatFingerprint(fingerprintOf(record.signingKey)),
      signingKey: record.signingKey,
      nodeId: record.nodeId,
      address: record.addresses[0] === undefined ? "" : formatAddress(record.addresses[0]),
      holders
    }))
  })

/**
 * The one record `ref` names in `answer`: with a fingerprint, the claimant
 * with that key (whatever else claims the name); without, the sole owner.
 */
export const recordNamedBy = (
  ref: NameRef,
  answer: NameAnswer
): Either.Either<UserRecord, UserNotFound | NameConflict | FingerprintMismatch> => {
  const { fingerprint: requested, username } = ref
  const claimants = claimantsOf(answer)
  if (claimants.length === 0) return Either.left(new UserNotFound({ username }))
  if (requested !== undefined) {
    const chosen = claimants.find(({ record }) => fingerprintOf(record.signingKey) === requested)
    if (chosen !== undefined) return Either.right(chosen.record)
    if (answer._tag === "Owner") {
      return Either.left(new FingerprintMismatch({ username, requested, actual: fingerprintOf(answer.record.signingKey) }))
    }
  }
  if (answer._tag === "Owner") return Either.right(answer.record)
  return Either.left(nameConflictOf(username, claimants))
}

const makeDirectory = (config: DirectoryConfig) =>
  Effect.gen(function*() {
    const dht = yield* DhtNode
    const identity = yield* Identity
    const transport = yield* Transport
    const profiles = yield* ProfileStore
    const nodeConfig = yield* NodeConfig
    const { claimHash } = yield* Signatures
    // A real node provides ClaimWork, which yields to its event loop between chunks of scrypt. Without
    // it (tests and the simulator, whose claim hash is a cheap SHA-256 and whose clock may be virtual)
    // the claim is solved in one go with the checking hash.
    const work = yield* Effect.serviceOption(ClaimWork)
    // A node that may sit behind a NAT (a real one) has Circuits: its record then lists its relays.
    const circuits = yield* Effect.serviceOption(Circuits)
    const advertised: Effect.Effect<AdvertisedRoutes> = Option.match(circuits, {
      onNone: () => Effect.succeed({ addresses: [transport.localAddress], relays: [] }),
      onSome: (service) => service.advertised
    })
    const solve = (username: Username, difficulty: number, onProgress: ClaimProgress) =>
      Option.match(work, {
        onSome: (claimWork) => claimWork.solve(username, ownKey, difficulty, onProgress),
        onNone: () => Effect.sync(() => solveAtOnce(username, ownKey, difficulty, claimHash))
      })
    const ownKey = toHex(identity.signingPublicKey) as PublicKeyHex
    const ownNameWarning = yield* Ref.make<Option.Option<string>>(Option.none())
    /** The routes the record published last lists (undefined before the first). */
    const publishedRoutes = yield* Ref.make<AdvertisedRoutes | undefined>(undefined)
    /**
     * One publication at a time: a re-publication for new relays that ran
     * while `register` was publishing would sign the routes it read, then
     * lose to the record `register` stores after it, or the other way round.
     */
    const publishing = yield* Effect.makeSemaphore(1)
    /** Wakes the routes check (below) after `register`, whose record may list routes that changed while it ran. */
    const routesMayHaveChanged = yield* Queue.sliding<void>(1)

    const saveProfile = (username: Username, profile: Profile) =>
      profiles.save(profile).pipe(
        Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
      )

    /** Notes (and logs, once per change) what the user should know about their own name. */
    const noteOwnName = (warning: string | undefined) =>
      Effect.gen(function*() {
        const previous = yield* Ref.getAndSet(ownNameWarning, Option.fromNullable(warning))
        if (warning !== undefined && Option.getOrUndefined(previous) !== warning) yield* Effect.logWarning(warning)
      })

    /** The warning for other keys that claim `username`, found by a resolution or by storers refusing ours. */
    const rivalsWarning = (username: Username, rivals: ReadonlyArray<Claimant>, refusals: number): string | undefined => {
      if (rivals.length === 0 && refusals === 0) return undefined
      const who = rivals.length === 0
        ? `${refusals} storing node(s) refused this node's record because they hold another key's claim`
        : `another key claims it too: ${rivals.map(({ record }) => formatFingerprint(fingerprintOf(record.signingKey))).join(", ")}`
      return `someone else claims your name "${username}": ${who}. ` +
        "People who look your name up now see a conflict; give them your fingerprint (`peerchat id`) to pick you"
    }

    /**
     * The proof of work of this node's claim of `username`: the one saved in
     * the profile when it still meets this node's difficulty, else solved now
     * (about 2^claimDifficulty hash evaluations, with progress in the log).
     */
    const claimOf = (username: Username, profile: Profile) =>
      Effect.gen(function*() {
        const saved = profile.claim
        // Checked before reuse: a profile kept across a new identity holds work for another key.
        if (
          saved !== undefined && saved.username === username && saved.proof.difficulty >= nodeConfig.claimDifficulty &&
          Either.isRight(checkClaimProof({
            username,
            signingKey: ownKey,
            proof: saved.proof,
            minDifficulty: nodeConfig.claimDifficulty,
            hash: claimHash
          }))
        ) {
          return saved.proof
        }
        yield* Effect.logInfo(
          `claiming "${username}": solving its proof of work (about ${expectedAttempts(nodeConfig.claimDifficulty)} hashes)…`
        )
        const proof = yield* solve(username, nodeConfig.claimDifficulty, (tried, expected) =>
          Effect.logInfo(`claiming "${username}": ${tried} hashes tried (${expected} expected on average)`))
        yield* Effect.logInfo(`claiming "${username}": proof of work found`)
        return proof
      })

    /**
     * Signs and stores a record for `username` with a sequence above every one
     * this node or the network has seen. Callers hold `publishing`.
     */
    const publishAsHoldingPermit = (
      username: Username,
      existing: Option.Option<UserRecord>,
      rivals: ReadonlyArray<Claimant>
    ) =>
      Effect.gen(function*() {
        const profile = yield* profiles.load.pipe(
          Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
        )
        const claim = yield* claimOf(username, profile)
        const networkSequence = Option.match(existing, { onNone: () => 0, onSome: (record) => record.sequence })
        const sequence = Math.max(profile.sequence, networkSequence) + 1
        // The sequence (and the solved claim, which took seconds) is durable before any record
        // carrying it leaves the node.
        yield* saveProfile(username, { ...profile, sequence, claim: { username, proof: claim } })
        const now = yield* Clock.currentTimeMillis
        const routes = yield* advertised
        const record = signUserRecord(
          {
            username,
            signingKey: ownKey,
            encryptionKey: toHex(identity.encryptionPublicKey) as PublicKeyHex,
            nodeId: identity.nodeId,
            addresses: routes.addresses,
            ...(routes.relays.length === 0 ? {} : { relays: routes.relays }),
            sequence,
            issuedAt: now,
            expiresAt: now + Duration.toMillis(config.recordLifetime),
            claim
          },
          identity.sign
        )
        const stored = yield* dht.publish(record).pipe(
          Effect.mapError((failure): NameTaken | PublishFailed =>
            failure.reason === "KeyConflict"
              ? new NameTaken({ username, ...holderOf(rivals) })
              : new PublishFailed({ username, detail: failure.message })
          )
        )
        yield* saveProfile(username, { version: 1, username, sequence, claim: { username, proof: claim } })
        yield* Ref.set(publishedRoutes, routes)
        yield* noteOwnName(rivalsWarning(username, rivals, stored.conflicts))
        return record
      })

    const resolve = (username: Username): Effect.Effect<NameAnswer, NotConnected> =>
      Effect.map(dht.resolveRecords(userKey(username)), (resolution) => resolution.answer)

    /**
     * A node started a moment ago is still reaching its bootstrap node: give it
     * `connectWait` before a user's request is answered with NotConnected.
     */
    const untilConnected = dht.awaitConnected.pipe(Effect.timeout(config.connectWait), Effect.ignore)

    /** Our own newest record among the claimants, and the other keys' claims. */
    const splitClaims = (answer: NameAnswer) => {
      const claimants = claimantsOf(answer)
      return {
        own: Option.fromNullable(claimants.find(({ record }) => record.signingKey === ownKey)?.record),
        rivals: claimants.filter(({ record }) => record.signingKey !== ownKey)
      }
    }

    const register = (input: string) =>
      Effect.gen(function*() {
        const username = yield* Either.match(parseUsername(input), { onLeft: Effect.fail, onRight: Effect.succeed })
        const profile = yield* profiles.load.pipe(
          Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
        )
        if (profile.username !== null && profile.username !== username) {
          return yield* new AlreadyRegistered({ username, existing: profile.username })
        }
        // Resolving fails with NotConnected unless the network answered, or this node started it.
        yield* untilConnected
        const answer = yield* resolve(username)
        const { own, rivals } = splitClaims(answer)
        // A conflict we are part of is ours to keep claiming (loudly); otherwise another key holds it.
        if (Option.isNone(own) && rivals.length > 0) return yield* new NameTaken({ username, ...holderOf(rivals) })
        const record = yield* publishing.withPermits(1)(publishAsHoldingPermit(username, own, rivals))
        // Routes that changed while it was being published (relays found meanwhile) go out next.
        yield* Queue.offer(routesMayHaveChanged, undefined)
        const alone = (yield* dht.status).contactCount === 0
        const warning = alone
          ? `this node is the first of a new network, so "${username}" is claimed only here until others join; ` +
            "if another network already has a user of that name, both of you will see a conflict when the networks meet"
          : Option.getOrUndefined(yield* Ref.get(ownNameWarning))
        return { record, warning }
      }).pipe(Effect.withSpan("Directory.register"))

    const whois = (input: string) =>
      Effect.gen(function*() {
        const ref = yield* Either.match(parseNameRef(input), { onLeft: Effect.fail, onRight: Effect.succeed })
        yield* untilConnected
        const answer = yield* resolve(ref.username)
        return yield* Either.match(recordNamedBy(ref, answer), { onLeft: Effect.fail, onRight: Effect.succeed })
      })

    /** Publishes the registered name's record again (none when no name is registered); callers hold `publishing`. */
    const republishHoldingPermit = (onlyIfRoutesChanged: boolean) =>
      Effect.gen(function*() {
        const profile = yield* profiles.load.pipe(Effect.orDie)
        if (profile.username === null) return Option.none()
        if (onlyIfRoutesChanged) {
          // Nothing published yet: the first record (register's, or the one at start) lists the routes of its time.
          const published = yield* Ref.get(publishedRoutes)
          if (published === undefined || advertisedRoutesEqual(published, yield* advertised)) return Option.none()
        }
        const answer = yield* resolve(profile.username).pipe(
          // Alone (or cut off) the record is still signed and kept here, ready for the network to come.
          Effect.catchTag("NotConnected", () => Effect.succeed<NameAnswer>({ _tag: "Unclaimed" }))
        )
        const { own, rivals } = splitClaims(answer)
        return Option.some(yield* publishAsHoldingPermit(profile.username, own, rivals))
      })
    const republish = publishing.withPermits(1)(republishHoldingPermit(false))

    // Login: once connected to the network, announce the current address, then keep the record fresh.
    yield* dht.awaitConnected.pipe(
      Effect.zipRight(
        republish.pipe(
          Effect.tapBoth({
            onFailure: (error) => Effect.logWarning(`could not re-publish this node's record: ${error.message}`),
            onSuccess: (published) =>
              Option.match(published, {
                onNone: () => Effect.void,
                onSome: (record) => Effect.logInfo(`published ${record.username} (sequence ${record.sequence})`)
              })
          }),
          Effect.ignore,
          Effect.repeat(Schedule.fixed(config.republishInterval))
        )
      ),
      Effect.forkScoped
    )

    // Behind a NAT, callers find this node through the relays its record lists: a new record each
    // time the routes it would list differ from those of the record published last (checked when the
    // relays change, and after each registration).
    if (Option.isSome(circuits)) {
      yield* dht.awaitConnected.pipe(
        Effect.zipRight(Stream.runForEach(
          Stream.merge(Stream.as(circuits.value.relayChanges, undefined), Stream.fromQueue(routesMayHaveChanged)),
          () =>
            publishing.withPermits(1)(republishHoldingPermit(true)).pipe(
              Effect.tap((published) =>
                Option.match(published, {
                  onNone: () => Effect.void,
                  onSome: (record) =>
                    Effect.logInfo(`published ${record.username} with its relays (sequence ${record.sequence})`)
                })
              ),
              Effect.catchAll((error) => Effect.logWarning(`could not re-publish this node's relays: ${error.message}`))
            )
        )),
        Effect.forkScoped
      )
    }

    return {
      username: Effect.map(profiles.load, (profile) => Option.fromNullable(profile.username)),
      register,
      resolve,
      whois,
      republish,
      ownNameWarning: Ref.get(ownNameWarning)
    }
  })

/** Solves a claim without yielding: only for cheap hashes (tests, the simulator). */
const solveAtOnce = (username: string, signingKey: string, difficulty: number, hash: MemoryHardHash): ClaimProof => {
  for (let nonce = 0;;) {
    const step = solveClaimStep({ username, signingKey, difficulty, hash, fromNonce: nonce, attempts: 1024 })
    if (step._tag === "Solved") return step.proof
    nonce = step.nextNonce
  }
}

const holderOf = (rivals: ReadonlyArray<Claimant>): { holder?: NodeId } =>
  rivals[0] === undefined ? {} : { holder: rivals[0].record.nodeId }

// Re-exported for callers that handle directory failures without importing Control.
export { ProfileError }
