import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Option, Scope } from "effect"
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises"
import { homedir, tmpdir } from "node:os"
import { join, resolve } from "node:path"
import type { NodeId } from "../../src/core/Id.js"
import {
  API_TOKEN_FILE,
  createApiToken,
  readApiToken,
  readRuntimeInfo,
  resolveDataDir,
  RUNTIME_INFO_FILE,
  writeRuntimeInfoScoped
} from "../../src/platform/RuntimeFiles.js"

/** A fresh data directory under the OS temp dir, removed when the test's scope closes. */
const tempDataDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "peerchat-runtime-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

const listDir = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())
const readText = (path: string) => Effect.promise(() => readFile(path, "utf8"))
const modeOf = (path: string) => Effect.promise(async () => (await stat(path)).mode & 0o777)

const NODE_ID = "ab".repeat(32) as NodeId
const input = { nodeId: NODE_ID, listen: { host: "127.0.0.1", port: 4000 }, api: { host: "127.0.0.1", port: 4100 } }

const posixOnly = process.platform === "win32" ? it.scoped.skip : it.scoped

describe("API token", () => {
  posixOnly("is made anew with mode 0600 at every start, so a token that leaked opens nothing once its node stopped", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const token = yield* createApiToken(dir)
      expect(token).toMatch(/^[0-9a-f]{64}$/)
      expect(yield* modeOf(join(dir, API_TOKEN_FILE))).toBe(0o600)
      expect((yield* readText(join(dir, API_TOKEN_FILE))).trim()).toBe(token)
      const next = yield* createApiToken(dir)
      expect(next).not.toBe(token)
      expect(yield* readApiToken(dir)).toBe(next)
      // Atomic writes leave no temp files behind.
      expect(yield* listDir(dir)).toEqual([API_TOKEN_FILE])
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("creates a missing data directory", () =>
    Effect.gen(function*() {
      const dir = join(yield* tempDataDir, "nested", "data")
      const token = yield* createApiToken(dir)
      expect(yield* readApiToken(dir)).toBe(token)
    }).pipe(Effect.provide(NodeContext.layer)))

  posixOnly("is refused to a client when group or others can read it, telling to chmod 600; a start replaces it with a private one", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      yield* createApiToken(dir)
      const path = join(dir, API_TOKEN_FILE)
      yield* Effect.promise(() => chmod(path, 0o644))
      const error = yield* Effect.flip(readApiToken(dir))
      expect(error.reason).toBe("InsecurePermissions")
      expect(error.path).toBe(path)
      expect(error.message).toContain(`chmod 600 ${path}`)
      expect(error.message).toContain("mode 644")
      const fresh = yield* createApiToken(dir)
      expect(yield* modeOf(path)).toBe(0o600)
      expect(yield* readApiToken(dir)).toBe(fresh)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("is reported as corrupt to a client when damaged, and replaced at the next start", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const path = join(dir, API_TOKEN_FILE)
      yield* Effect.promise(() => writeFile(path, "not a token\n", { mode: 0o600 }))
      const error = yield* Effect.flip(readApiToken(dir))
      expect(error.reason).toBe("Corrupt")
      expect(error.message).toContain(path)
      expect(yield* readText(path)).toBe("not a token\n")
      const fresh = yield* createApiToken(dir)
      expect(yield* readApiToken(dir)).toBe(fresh)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("is reported missing by the client side, which never creates one", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const error = yield* Effect.flip(readApiToken(dir))
      expect(error.reason).toBe("Missing")
      expect(error.message).toContain(join(dir, API_TOKEN_FILE))
      expect(yield* listDir(dir)).toEqual([])
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("node.json", () => {
  posixOnly("is written atomically while the scope is open and removed when it closes", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const scope = yield* Scope.make()
      const written = yield* writeRuntimeInfoScoped(dir, input).pipe(Scope.extend(scope))
      expect(written).toMatchObject({ version: 1, pid: process.pid, nodeId: NODE_ID, listen: "127.0.0.1:4000", api: "127.0.0.1:4100" })
      expect(yield* listDir(dir)).toEqual([RUNTIME_INFO_FILE])
      expect(yield* modeOf(join(dir, RUNTIME_INFO_FILE))).toBe(0o600)
      expect(JSON.parse(yield* readText(join(dir, RUNTIME_INFO_FILE)))).toEqual(written)
      expect(yield* readRuntimeInfo(dir)).toEqual(written)
      yield* Scope.close(scope, Exit.void)
      expect(yield* listDir(dir)).toEqual([])
      const error = yield* Effect.flip(readRuntimeInfo(dir))
      expect(error._tag).toBe("NodeNotRunning")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("writes IPv6 addresses with brackets", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const written = yield* writeRuntimeInfoScoped(dir, { ...input, api: { host: "::1", port: 4100 } })
      expect(written.api).toBe("[::1]:4100")
      expect((yield* readRuntimeInfo(dir)).api).toBe("[::1]:4100")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("is left alone on shutdown when another process has replaced it", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const path = join(dir, RUNTIME_INFO_FILE)
      const scope = yield* Scope.make()
      const written = yield* writeRuntimeInfoScoped(dir, input).pipe(Scope.extend(scope))
      const theirs = JSON.stringify({ ...written, pid: written.pid + 1 })
      yield* Effect.promise(() => writeFile(path, theirs))
      yield* Scope.close(scope, Exit.void)
      expect(yield* readText(path)).toBe(theirs)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("missing: NodeNotRunning, telling how to start a node", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const error = yield* Effect.flip(readRuntimeInfo(dir))
      expect(error._tag).toBe("NodeNotRunning")
      expect(error.message).toBe(
        `no node is running for data directory ${dir} (start one with "peerchat start --data-dir ${dir}")`
      )
      const absent = yield* Effect.flip(readRuntimeInfo(join(dir, "no such dir")))
      expect(absent._tag).toBe("NodeNotRunning")
      expect(absent.message).toContain(`--data-dir '${join(dir, "no such dir")}'`)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("corrupt: a typed error naming the file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDataDir
      const path = join(dir, RUNTIME_INFO_FILE)
      const cases: ReadonlyArray<readonly [string, string]> = [
        ["{ not json", "not valid UTF-8 JSON"],
        [JSON.stringify({ version: 2 }), "version"],
        [JSON.stringify({ version: 1, pid: 1, nodeId: NODE_ID, listen: "127.0.0.1:1", api: "nowhere", startedAt: 0 }), "api"],
        [JSON.stringify({ version: 1, pid: 1, nodeId: "xyz", listen: "127.0.0.1:1", api: "127.0.0.1:2", startedAt: 0 }), "nodeId"]
      ]
      for (const [content, detail] of cases) {
        yield* Effect.promise(() => writeFile(path, content))
        const error = yield* Effect.flip(readRuntimeInfo(dir))
        expect(error._tag).toBe("RuntimeFileError")
        expect(error._tag === "RuntimeFileError" && error.reason).toBe("Corrupt")
        expect(error.message).toContain(path)
        expect(error.message).toContain(detail)
      }
    }).pipe(Effect.provide(NodeContext.layer)))
})

describe("resolveDataDir", () => {
  const withEnv = (entries: ReadonlyArray<readonly [string, string]>) =>
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(entries)))

  it.effect("prefers --data-dir, made absolute and with ~ expanded", () =>
    Effect.gen(function*() {
      expect(yield* resolveDataDir(Option.some("/srv/peerchat"))).toBe("/srv/peerchat")
      expect(yield* resolveDataDir(Option.some("rel/dir"))).toBe(resolve("rel/dir"))
      expect(yield* resolveDataDir(Option.some("~/chat"))).toBe(join(homedir(), "chat"))
    }).pipe(withEnv([["PEERCHAT_DATA_DIR", "/from/env"]]), Effect.provide(NodeContext.layer)))

  it.effect("falls back to PEERCHAT_DATA_DIR, then to ~/.peerchat", () =>
    Effect.gen(function*() {
      expect(yield* resolveDataDir(Option.none()).pipe(withEnv([["PEERCHAT_DATA_DIR", "/from/env"]]))).toBe("/from/env")
      expect(yield* resolveDataDir(Option.none()).pipe(withEnv([["PEERCHAT_DATA_DIR", ""]]))).toBe(join(homedir(), ".peerchat"))
      expect(yield* resolveDataDir(Option.none()).pipe(withEnv([]))).toBe(join(homedir(), ".peerchat"))
      expect(yield* resolveDataDir(Option.some(" ")).pipe(withEnv([["PEERCHAT_DATA_DIR", "/from/env"]]))).toBe("/from/env")
    }).pipe(Effect.provide(NodeContext.layer)))
})
