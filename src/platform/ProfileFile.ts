/**
 * The node's profile in `<dataDir>/profile.json`, written atomically. A missing
 * file means the node never registered; a damaged one is reported, never
 * silently replaced, since it holds the sequence that keeps published records
 * moving forward.
 *
 * @since 0.1.0
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Layer, Option, Schema } from "effect"
import { emptyProfile, Profile, ProfileError, ProfileStore } from "../node/Profile.js"
import { readFileIfExists, writeFileAtomic } from "./AtomicFile.js"

/** Name of the profile file inside the data directory. */
export const PROFILE_FILE = "profile.json"

const decodeProfile = Schema.decodeUnknownEither(Schema.parseJson(Profile))

/** The profile store of the data directory `dataDir`. */
export const profileFileLayer = (dataDir: string): Layer.Layer<ProfileStore, never, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(
    ProfileStore,
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      const file = path.join(dataDir, PROFILE_FILE)
      const provide = <A, E>(effect: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path>) =>
        effect.pipe(Effect.provideService(FileSystem.FileSystem, fs), Effect.provideService(Path.Path, path))
      return {
        load: readFileIfExists(file).pipe(
          provide,
          Effect.mapError((error) =>
            new ProfileError({ reason: error._tag === "BadArgument" ? "Corrupt" : "Unreadable", path: file, detail: error.message })
          ),
          Effect.flatMap(Option.match({
            onNone: () => Effect.succeed(emptyProfile),
            onSome: (bytes) =>
              decodeProfile(new TextDecoder().decode(bytes)).pipe(
                Effect.mapError((error) => new ProfileError({ reason: "Corrupt", path: file, detail: error.message }))
              )
          }))
        ),
        save: (profile: Profile) =>
          writeFileAtomic(file, JSON.stringify(Schema.encodeSync(Profile)(profile), null, 2) + "\n", { mode: 0o600 }).pipe(
            provide,
            Effect.mapError((error) => new ProfileError({ reason: "Unwritable", path: file, detail: error.message }))
          )
      }
    })
  )
