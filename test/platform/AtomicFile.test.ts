import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { readFileIfExists, writeFileAtomic } from "../../src/platform/AtomicFile.js"

/** A fresh directory under the OS temp dir, removed when the test's scope closes. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "peerchat-atomic-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

const listDir = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())
const readText = (path: string) => Effect.promise(() => readFile(path, "utf8"))
const modeOf = (path: string) => Effect.promise(async () => (await stat(path)).mode & 0o777)

const posixOnly = process.platform === "win32" ? it.scoped.skip : it.scoped

describe("writeFileAtomic", () => {
  it.scoped("creates a file with the given content", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "state.json")
      yield* writeFileAtomic(target, "hello\n")
      expect(yield* readText(target)).toBe("hello\n")
      yield* writeFileAtomic(target, new Uint8Array([0, 1, 2, 255]))
      expect(new Uint8Array(yield* Effect.promise(() => readFile(target)))).toEqual(new Uint8Array([0, 1, 2, 255]))
      expect(yield* listDir(dir)).toEqual(["state.json"])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("replaces longer content fully and leaves no temp files behind", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "state.json")
      yield* writeFileAtomic(target, "x".repeat(100_000))
      yield* writeFileAtomic(target, "short")
      expect(yield* readText(target)).toBe("short")
      yield* writeFileAtomic(target, "")
      expect(yield* readText(target)).toBe("")
      expect(yield* listDir(dir)).toEqual(["state.json"])
    }).pipe(Effect.provide(NodeContext.layer)))

  posixOnly("applies the mode exactly, regardless of the umask and of the old file's mode", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "secret")
      yield* Effect.promise(() => writeFile(target, "old", { mode: 0o644 }))
      yield* writeFileAtomic(target, "new", { mode: 0o600 })
      expect(yield* modeOf(target)).toBe(0o600)
      // 0o666 is wider than any usual umask allows at creation, so this shows the chmod.
      yield* writeFileAtomic(target, "wide", { mode: 0o666 })
      expect(yield* modeOf(target)).toBe(0o666)
      expect(yield* readText(target)).toBe("wide")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("concurrent writers leave one complete version and no temp files", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "state.json")
      const versions = Array.from({ length: 20 }, (_, i) => `${i}:`.padEnd(10_000 + i * 37, String.fromCharCode(97 + i)))
      yield* Effect.forEach(versions, (text) => writeFileAtomic(target, text), { concurrency: "unbounded", discard: true })
      expect(versions).toContain(yield* readText(target))
      expect(yield* listDir(dir)).toEqual(["state.json"])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("fails with a typed NotFound error when the directory is missing, creating nothing", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(writeFileAtomic(join(dir, "missing", "state.json"), "data"))
      expect(error._tag).toBe("SystemError")
      expect(error._tag === "SystemError" && error.reason).toBe("NotFound")
      expect(yield* listDir(dir)).toEqual([])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("removes its temp file when the rename fails and leaves the target untouched", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      // A non-empty directory cannot be replaced by a file, so the rename fails after the temp file is written.
      const target = join(dir, "occupied")
      yield* Effect.promise(() => mkdir(target))
      yield* Effect.promise(() => writeFile(join(target, "inside"), "keep"))
      const error = yield* Effect.flip(writeFileAtomic(target, "data"))
      expect(error._tag).toBe("SystemError")
      expect(yield* listDir(dir)).toEqual(["occupied"])
      expect(yield* readText(join(target, "inside"))).toBe("keep")
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("readFileIfExists", () => {
  it.scoped("is None for a missing file and Some(content) for an existing one", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "state.bin")
      expect(yield* readFileIfExists(target)).toEqual(Option.none())
      yield* writeFileAtomic(target, new Uint8Array([9, 8, 7]))
      const content = yield* readFileIfExists(target)
      expect(Option.map(content, (bytes) => Array.from(bytes))).toEqual(Option.some([9, 8, 7]))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("fails (rather than answering None) when the path is not readable as a file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(readFileIfExists(dir))
      expect(error._tag).toBe("SystemError")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("refuses a file larger than a state file may be, before reading it, with a short message", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const target = join(dir, "profile.json")
      yield* Effect.promise(() => writeFile(target, `{"name":"${"x".repeat(1_000_000)}"}`))
      const error = yield* Effect.flip(readFileIfExists(target))
      expect(error._tag).toBe("BadArgument")
      expect(error.message.length).toBeLessThan(400)
      expect(error.message).toContain("larger than the 65536")
      expect(yield* readFileIfExists(target, 2_000_000)).toSatisfy(Option.isSome)
    }).pipe(Effect.provide(NodeContext.layer)))
})
