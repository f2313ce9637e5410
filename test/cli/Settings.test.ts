/**
 * `network.json`: how a data directory joins its network, remembered by the
 * terminal chat between runs; a damaged file is reported, not replaced.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { readFile, stat, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { bootstrapOf, NETWORK_FILE, readSettings, writeSettings } from "../../src/cli/chat/Settings.js"
import { scopedTempDir } from "../support/tempDir.js"

describe("network settings", () => {
  it.scoped("remember the bootstrap addresses, owner-only, and report a damaged file", () =>
    Effect.gen(function*() {
      const root = yield* scopedTempDir("settings")
      const dir = join(root, "data")
      expect(yield* readSettings(dir)).toEqual(Option.none())
      yield* writeSettings(dir, [{ host: "192.0.2.10", port: 4242 }, { host: "::1", port: 5000 }])
      const saved = yield* readSettings(dir)
      expect(Option.map(saved, bootstrapOf)).toEqual(Option.some([{ host: "192.0.2.10", port: 4242 }, { host: "::1", port: 5000 }]))
      expect(JSON.parse(yield* Effect.promise(() => readFile(join(dir, NETWORK_FILE), "utf8")))).toEqual({
        version: 1,
        bootstrap: ["192.0.2.10:4242", "[::1]:5000"]
      })
      expect((yield* Effect.promise(() => stat(join(dir, NETWORK_FILE)))).mode & 0o777).toBe(0o600)
      yield* writeSettings(dir, [])
      expect(Option.map(yield* readSettings(dir), bootstrapOf)).toEqual(Option.some([]))

      yield* Effect.promise(() => writeFile(join(dir, NETWORK_FILE), "{\"version\": 1, \"bootstrap\": [\"nowhere\"]}"))
      const damaged = yield* Effect.flip(readSettings(dir))
      expect(damaged).toMatchObject({ _tag: "SettingsError", reason: "Corrupt" })
      expect(damaged.message).toMatch(/network\.json is damaged .*; remove it to choose the network again/)
    }).pipe(Effect.provide(NodeContext.layer)))
})
