import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { stat, writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { Username } from "../../src/core/Username.js"
import { emptyProfile, ProfileStore } from "../../src/node/Profile.js"
import { PROFILE_FILE, profileFileLayer } from "../../src/platform/ProfileFile.js"
import { scopedTempDir } from "../support/tempDir.js"

const withStore = <A, E>(dir: string, use: (store: ProfileStore["Type"]) => Effect.Effect<A, E>) =>
  Effect.flatMap(ProfileStore, use).pipe(Effect.provide(profileFileLayer(dir)), Effect.provide(NodeContext.layer))

describe("profile file", () => {
  it.scoped("is empty before the first save, and round-trips after it with mode 0600", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("profile")
      expect(yield* withStore(dir, (store) => store.load)).toEqual(emptyProfile)
      const saved = { version: 1, username: "alice" as Username, sequence: 7 } as const
      yield* withStore(dir, (store) => store.save(saved))
      // A new store instance (a restart) reads what was saved.
      expect(yield* withStore(dir, (store) => store.load)).toEqual(saved)
      const info = yield* Effect.promise(() => stat(join(dir, PROFILE_FILE)))
      expect(info.mode & 0o777).toBe(0o600)
    }))

  it.scoped("reports a damaged file with its path instead of starting over", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("profile")
      for (const content of ["{not json", JSON.stringify({ version: 1, username: "A!", sequence: 1 }), "[]"]) {
        yield* Effect.promise(() => writeFile(join(dir, PROFILE_FILE), content))
        const error = yield* withStore(dir, (store) => store.load).pipe(Effect.flip)
        expect(error._tag).toBe("ProfileError")
        expect(error.reason).toBe("Corrupt")
        expect(error.message).toContain(join(dir, PROFILE_FILE))
      }
    }))

  it.scoped("refuses to save into a directory that does not exist", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("profile")
      const error = yield* withStore(join(dir, "missing"), (store) => store.save(emptyProfile)).pipe(Effect.flip)
      expect(error.reason).toBe("Unwritable")
    }))
})
