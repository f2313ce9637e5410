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
import { Clock, Context, Duration, Effect, Either, Layer, Option, Schedule } from "effect"
import { toHex } from "../core/Bytes.js"
import type { NodeId } from "../core/Id.js"
import { isRecordLive, type PublicKeyHex, signUserRecord, type UserRecord } from "../core/UserRecord.js"
import { type InvalidUsername, parseUsername, type Username, userKey } from "../core/Username.js"
import { AlreadyRegistered, NameTaken, PublishFailed, UserNotFound } from "./Control.js"
import { DhtNode } from "./DhtNode.js"
import { Identity } from "./Identity.js"
import { type Profile, ProfileError, ProfileStore } from "./Profile.js"
import { Transport } from "./Transport.js"

/** How long a published record stays valid, and how often it is renewed. */
export interface DirectoryConfig {
  /** Lifetime of a published record (its `expiresAt - issuedAt`); storers accept at most 7 days. */
  readonly recordLifetime: Duration.Duration
  /** How often the owner re-publishes its record; well under the lifetime so a missed round is harmless. */
  readonly republishInterval: Duration.Duration
}

/**
 * Records live 7 days (the most storers accept) and are renewed every hour:
 * a user who is away for days must stay resolvable, or nobody could seal a
 * message to them for their mailbox.
 */
export const defaultDirectoryConfig: DirectoryConfig = {
  recordLifetime: Duration.days(7),
  republishInterval: Duration.hours(1)
}

/** Register, resolve, and keep this node's own record published. */
export class Directory extends Context.Tag("peerchat/Directory")<Directory, {
  /** The username this node has registered, if any. */
  readonly username: Effect.Effect<Option.Option<Username>, ProfileError>
  /** Claims `input` for this node's key and publishes the record. */
  readonly register: (input: string) => Effect.Effect<UserRecord, InvalidUsername | NameTaken | AlreadyRegistered | PublishFailed>
  /** The live, valid record of `input`, from the network. */
  readonly whois: (input: string) => Effect.Effect<UserRecord, InvalidUsername | UserNotFound>
  /** Publishes a fresh record for the registered name (nothing when unregistered). */
  readonly republish: Effect.Effect<Option.Option<UserRecord>, NameTaken | PublishFailed>
}>() {
  /** The directory of a node; re-publishes the registered name now and then every `republishInterval`. */
  static readonly layer = (config: Partial<DirectoryConfig> = {}) =>
    Layer.scoped(Directory, makeDirectory({ ...defaultDirectoryConfig, ...config }))
}

const makeDirectory = (config: DirectoryConfig) =>
  Effect.gen(function*() {
    const dht = yield* DhtNode
    const identity = yield* Identity
    const transport = yield* Transport
    const profiles = yield* ProfileStore
    const ownKey = toHex(identity.signingPublicKey) as PublicKeyHex

    const saveProfile = (username: Username, profile: Profile) =>
      profiles.save(profile).pipe(
        Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
      )

    /** Signs and stores a record for `username` with a sequence above every one this node or the network has seen. */
    const publishAs = (username: Username, existing: Option.Option<UserRecord>) =>
      Effect.gen(function*() {
        const profile = yield* profiles.load.pipe(
          Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
        )
        const networkSequence = Option.match(existing, {
          onNone: () => 0,
          onSome: (record) => (record.signingKey === ownKey ? record.sequence : 0)
        })
        const sequence = Math.max(profile.sequence, networkSequence) + 1
        // The sequence is durable before any record carrying it leaves the node.
        yield* saveProfile(username, { ...profile, sequence })
        const now = yield* Clock.currentTimeMillis
        const record = signUserRecord(
          {
            username,
            signingKey: ownKey,
            encryptionKey: toHex(identity.encryptionPublicKey) as PublicKeyHex,
            nodeId: identity.nodeId,
            addresses: [transport.localAddress],
            sequence,
            issuedAt: now,
            expiresAt: now + Duration.toMillis(config.recordLifetime)
          },
          identity.sign
        )
        yield* dht.publish(record).pipe(
          Effect.mapError((failure): NameTaken | PublishFailed =>
            failure.reason === "KeyConflict"
              ? new NameTaken({ username, ...holderOf(existing, ownKey) })
              : new PublishFailed({ username, detail: failure.message })
          )
        )
        yield* saveProfile(username, { version: 1, username, sequence })
        return record
      })

    const liveRecordOf = (username: Username) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const found = yield* dht.findRecord(userKey(username))
        return Option.filter(found, (record) => isRecordLive(record, now))
      })

    const register = (input: string) =>
      Effect.gen(function*() {
        const username = yield* Either.match(parseUsername(input), { onLeft: Effect.fail, onRight: Effect.succeed })
        const profile = yield* profiles.load.pipe(
          Effect.mapError((error) => new PublishFailed({ username, detail: error.message }))
        )
        if (profile.username !== null && profile.username !== username) {
          return yield* new AlreadyRegistered({ username, existing: profile.username })
        }
        const existing = yield* liveRecordOf(username)
        if (Option.isSome(existing) && existing.value.signingKey !== ownKey) {
          return yield* new NameTaken({ username, holder: existing.value.nodeId })
        }
        return yield* publishAs(username, existing)
      }).pipe(Effect.withSpan("Directory.register"))

    const whois = (input: string) =>
      Effect.gen(function*() {
        const username = yield* Either.match(parseUsername(input), { onLeft: Effect.fail, onRight: Effect.succeed })
        const found = yield* liveRecordOf(username)
        return yield* Option.match(found, {
          onNone: () => Effect.fail(new UserNotFound({ username })),
          onSome: Effect.succeed
        })
      })

    const republish = Effect.gen(function*() {
      const profile = yield* profiles.load.pipe(Effect.orDie)
      if (profile.username === null) return Option.none()
      const existing = yield* liveRecordOf(profile.username)
      return Option.some(yield* publishAs(profile.username, existing))
    })

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

    return {
      username: Effect.map(profiles.load, (profile) => Option.fromNullable(profile.username)),
      register,
      whois,
      republish
    }
  })

const holderOf = (existing: Option.Option<UserRecord>, ownKey: string): { holder?: NodeId } =>
  Option.match(existing, {
    onNone: () => ({}),
    onSome: (record) => (record.signingKey === ownKey ? {} : { holder: record.nodeId })
  })

// Re-exported for callers that handle directory failures without importing Control.
export { ProfileError }
