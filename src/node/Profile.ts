/**
 * What a node remembers about its own user between runs: the username it
 * registered and the highest record sequence it has ever signed. The sequence
 * is saved before a record carrying it is published, so a crash can never make
 * the node sign two different records with the same sequence, and a restart
 * (possibly on a new address) always publishes a record that replaces the old.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option, Ref, Schema } from "effect"
import { ClaimProof } from "../core/ClaimProof.js"
import { Username } from "../core/Username.js"

/** The saved profile, version 1. */
export const Profile = Schema.Struct({
  version: Schema.Literal(1),
  /** The registered username, or null before `register`. */
  username: Schema.NullOr(Username),
  /** Highest sequence number this node has signed a record with. */
  sequence: Schema.NonNegativeInt,
  /** The solved proof of work of the registered name's claim, kept so it is solved once. */
  claim: Schema.optional(Schema.Struct({ username: Username, proof: ClaimProof }))
})
/** @see Profile */
export type Profile = typeof Profile.Type

/** The profile of a node that has never registered. */
export const emptyProfile: Profile = { version: 1, username: null, sequence: 0 }

/** The profile could not be read or saved. */
export class ProfileError extends Schema.TaggedError<ProfileError>()("ProfileError", {
  reason: Schema.Literal("Corrupt", "Unreadable", "Unwritable"),
  path: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "Corrupt":
        return `the profile file ${this.path} is damaged (${this.detail}); restore it from a backup, or move it away to register again`
      case "Unreadable":
        return `cannot read the profile file ${this.path}: ${this.detail}`
      case "Unwritable":
        return `cannot save the profile file ${this.path}: ${this.detail}`
    }
  }
}

/** Durable storage of the node's profile. */
export class ProfileStore extends Context.Tag("peerchat/ProfileStore")<ProfileStore, {
  /** The saved profile, or the empty one when nothing was saved yet. */
  readonly load: Effect.Effect<Profile, ProfileError>
  /** Saves the profile durably (returns once it would survive a crash). */
  readonly save: (profile: Profile) => Effect.Effect<void, ProfileError>
}>() {
  /** A profile kept in memory, for tests and simulations. */
  static readonly layerMemory = (initial: Profile = emptyProfile): Layer.Layer<ProfileStore> =>
    Layer.effect(
      ProfileStore,
      Effect.map(Ref.make(initial), (ref) => ({
        load: Ref.get(ref),
        save: (profile: Profile) => Ref.set(ref, profile)
      }))
    )
}

/** The username of a profile, if registered. */
export const profileUsername = (profile: Profile): Option.Option<Username> => Option.fromNullable(profile.username)
