/**
 * What a `peerchat` client command loads (issue 14: client commands start
 * fast by loading only what they need). The command is bundled as `npm run
 * build` bundles it, into a temporary directory; the metafiles say which
 * sources each file holds and what it imports at run time. The build is
 * the test run's own (`test/support/cliBundle.ts`), copied for each test,
 * which changes its copy. `--version` loads
 * the entry file alone; the client commands and `--help` load one more file,
 * which must hold nothing of the node, the terminal chat, SQLite, the TCP
 * transport or undici, and import neither ink nor react. Then the whole
 * program's files are deleted and the client commands still run, so nothing
 * at run time reaches for them either. The build leaves a V8 code cache for
 * the client commands that V8 accepts; a damaged, stale or refused cache
 * changes nothing but the speed. Not a timing test: `bench/cliStartup.ts`
 * measures the time.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Metafile } from "esbuild"
import { execFile } from "node:child_process"
import { cp, readFile, rm, writeFile } from "node:fs/promises"
import { isBuiltin } from "node:module"
import { join } from "node:path"
import { type CliBundle, CLI_BUNDLE_FILES, CLIENT_CODE_CACHE_FILE, markSchemasPure } from "../../scripts/bundleCli.js"
import { openCodeCache, sealCodeCache } from "../../src/cli/client/CodeCache.js"
import { scopedTempDir } from "../support/tempDir.js"

/** Sources that only `start` and `chat` may load. */
const NODE_ONLY = [
  /^src\/cli\/NodeProgram\.ts$/,
  /^src\/cli\/chat\/(ChatProgram|ChatUi|ChatDriver)\.ts$/,
  /^src\/node\/(DhtNode|Routing|Lookups|NodeControlLive)\.ts$/,
  /^src\/chat\/(Delivery|Relay)\.ts$/,
  /^src\/platform\/(TcpTransport|SqliteChatStore|ControlServer|Noise|ScryptClaimHash)\.ts$/,
  /node_modules\/(undici|ws|@effect\/sql|@effect\/sql-sqlite-node|@effect\/rpc|msgpackr)\//
]

/** Packages the bundles leave outside; the client commands must not import them. */
const NODE_ONLY_EXTERNALS = ["ink", "react", "better-sqlite3"]

/** The sources bundled into the output files of `meta` whose path ends with `file`. */
const sourcesOf = (meta: Metafile, file: string): ReadonlyArray<string> =>
  Object.entries(meta.outputs)
    .filter(([output]) => output.endsWith(`/${file}`))
    .flatMap(([, output]) => Object.keys(output.inputs))

/** What measures text on screen: only the terminal chat needs it. */
const MEASURES_TEXT = /node_modules\/(string-width|get-east-asian-width)\//

/** The sources of the output files `roots` picks and of every file they import statically, transitively. */
const staticClosure = (meta: Metafile, roots: (output: string) => boolean): ReadonlyArray<string> => {
  const pending = Object.keys(meta.outputs).filter(roots)
  const seen = new Set(pending)
  const sources: Array<string> = []
  for (let output = pending.pop(); output !== undefined; output = pending.pop()) {
    const file = meta.outputs[output]
    if (file === undefined) continue
    sources.push(...Object.keys(file.inputs))
    for (const imported of file.imports) {
      if (imported.kind !== "import-statement" || imported.external || seen.has(imported.path)) continue
      seen.add(imported.path)
      pending.push(imported.path)
    }
  }
  return sources
}

/** The imports of the output file ending with `file` that stay imports at run time, with their kind. */
const runtimeImports = (meta: Metafile, file: string): ReadonlyArray<string> =>
  Object.entries(meta.outputs)
    .filter(([output]) => output.endsWith(`/${file}`))
    .flatMap(([, output]) => output.imports.filter((imported) => imported.external))
    .map((imported) => `${imported.kind} ${imported.path}`)

/** A copy of the test run's build of the command in a temporary directory of its own, and what the build made. */
const copyOfBuild = (label: string) =>
  Effect.gen(function*() {
    const build = inject("peerchatCliBuild")
    const dir = yield* scopedTempDir(label)
    yield* Effect.promise(() => cp(build.dir, dir, { recursive: true }))
    const bundle = JSON.parse(yield* Effect.promise(() => readFile(build.bundleFile, "utf8"))) as CliBundle
    return { dir, bundle }
  })

/** Runs `node [nodeOptions] script args`. */
const run = (script: string, args: ReadonlyArray<string>, nodeOptions: ReadonlyArray<string> = []) =>
  Effect.async<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = execFile(process.execPath, [...nodeOptions, script, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("the peerchat bundle", () => {
  it.scopedLive("loads neither the node nor the chat for --version, --help and client commands", () =>
    Effect.gen(function*() {
      const { bundle: meta, dir } = yield* copyOfBuild("cli-bundle")

      // --version: the entry file holds the version and the loader of the client bundle, and nothing else; it imports
      // the whole program by path (and the client commands' module, which only a run from the sources finds).
      expect([...sourcesOf(meta.main, CLI_BUNDLE_FILES.main)].sort()).toEqual([
        "src/cli/Version.ts",
        "src/cli/client/CodeCache.ts",
        "src/cli/main.ts"
      ])
      expect(runtimeImports(meta.main, CLI_BUNDLE_FILES.main).filter((entry) => !entry.includes("node:")).sort()).toEqual([
        "dynamic-import ./Cli.js",
        "dynamic-import ./client/ClientCli.js"
      ])

      // The client commands: one file with the commands and the control client, and nothing of the node or the chat.
      const clientSources = sourcesOf(meta.client, CLI_BUNDLE_FILES.client)
      expect(clientSources).toContain("src/cli/Commands.ts")
      expect(clientSources).toContain("src/platform/ControlClient.ts")
      expect(clientSources.filter((source) => NODE_ONLY.some((pattern) => pattern.test(source)))).toEqual([])
      const clientImports = runtimeImports(meta.client, CLI_BUNDLE_FILES.client).filter((entry) => !isBuiltin(entry.split(" ")[1] ?? ""))
      expect(clientImports.filter((entry) => NODE_ONLY_EXTERNALS.some((name) => entry.endsWith(` ${name}`)))).toEqual([])
      expect([...clientImports].sort()).toEqual(["dynamic-import ./NodeProgram.js", "dynamic-import ./chat/ChatProgram.js"])
      // The whole program does hold the node: the checks above are not vacuous.
      expect(Object.values(meta.program.outputs).flatMap((output) => Object.keys(output.inputs))).toContain("src/cli/NodeProgram.ts")

      // `peerchat start` (the whole program, then the node's own chunk) loads no text measuring: string-width builds
      // an Intl.Segmenter as it loads, which pages part of the runtime's Unicode data into the node (0.8 MB).
      const startLoads = staticClosure(meta.program, (output) => output.endsWith("/Cli.js") || /\/NodeProgram-[^/]*\.js$/.test(output))
      const chatLoads = staticClosure(meta.program, (output) => /\/ChatProgram-[^/]*\.js$/.test(output))
      expect(startLoads.filter((source) => MEASURES_TEXT.test(source))).toEqual([])
      expect(chatLoads.filter((source) => MEASURES_TEXT.test(source))).not.toEqual([])

      // At run time too: with the whole program's files deleted, the client commands still work, and `start` fails.
      yield* Effect.promise(() => Promise.all(["Cli.js", "chunks"].map((file) => rm(join(dir, file), { recursive: true }))))
      const main = join(dir, CLI_BUNDLE_FILES.main)
      expect((yield* run(main, ["--version"])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/)
      expect((yield* run(main, ["-v"])).stdout).toMatch(/^\d+\.\d+\.\d+\n$/)
      const help = yield* run(main, ["status", "--help"])
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("Usage: peerchat status [OPTIONS]")
      const status = yield* run(main, ["status", "--json", "--data-dir", join(dir, "no-node")])
      expect(status.stdout).toBe("")
      expect(JSON.parse(status.stderr)).toMatchObject({ error: { tag: "NodeNotRunning" } })
      expect(status.code).toBe(4)
      // Shell completions and `stop` come from the client bundle too.
      const completions = yield* run(main, ["--completions", "bash"])
      expect([completions.code, completions.stderr]).toEqual([0, ""])
      expect(completions.stdout).toMatch(/complete .*peerchat/)
      const stop = yield* run(main, ["stop", "--json", "--data-dir", join(dir, "no-node")])
      expect([stop.code, JSON.parse(stop.stderr)]).toEqual([4, { error: expect.objectContaining({ tag: "NodeNotRunning" }) }])
      const start = yield* run(main, ["start", "--data-dir", join(dir, "node"), "--listen", "127.0.0.1:0"])
      expect(start.code).not.toBe(0)
      expect(start.stderr).toMatch(/Cli\.js/)
    }), { timeout: 120_000 })

  it.scopedLive("leaves a code cache that V8 takes, and runs the client commands alike without it", () =>
    Effect.gen(function*() {
      const { bundle: { codeCache }, dir } = yield* copyOfBuild("cli-code-cache")
      expect(codeCache.outcome).toBe("accepted")
      const main = join(dir, CLI_BUNDLE_FILES.main)
      const writer = join(dir, CLI_BUNDLE_FILES.codeCacheWriter)
      const cacheFile = join(dir, CLIENT_CODE_CACHE_FILE)
      const noNode = join(dir, "no-node")
      const cacheState = Effect.map(run(writer, ["check"]), ({ stdout }) => stdout.trim())
      /** What `status --json` and `status --help` print, which must not depend on the cache. */
      const answers = Effect.all([run(main, ["status", "--json", "--data-dir", noNode]), run(main, ["status", "--help"])])
      const expected = yield* answers
      expect(expected[0].code).toBe(4)
      expect(JSON.parse(expected[0].stderr)).toMatchObject({ error: { tag: "NodeNotRunning" } })
      expect(expected[1].stdout).toContain("Usage: peerchat status [OPTIONS]")
      expect(yield* cacheState).toBe("accepted")

      // V8 refuses a cache made under other V8 flags: the command runs as before.
      expect((yield* run(writer, ["check"], ["--semi-space-growth-factor=4"])).stdout.trim()).toBe("rejected")
      const refused = yield* run(main, ["status", "--json", "--data-dir", noNode], ["--semi-space-growth-factor=4"])
      expect([refused.code, refused.stderr]).toEqual([expected[0].code, expected[0].stderr])

      // A damaged cache (one byte of V8's data changed, or the file cut short) is never given to V8.
      const sealed = yield* Effect.promise(() => readFile(cacheFile))
      const damaged = Buffer.from(sealed)
      damaged[Math.floor(damaged.length / 2)] = (damaged[Math.floor(damaged.length / 2)] ?? 0) ^ 0xff
      for (const broken of [damaged, sealed.subarray(0, sealed.length - 1000), sealed.subarray(0, 10), Buffer.alloc(0)]) {
        yield* Effect.promise(() => writeFile(cacheFile, broken))
        expect(yield* cacheState).toBe("absent")
        expect(yield* answers).toEqual(expected)
      }

      // Nor is a cache made for another bundle (here: the bundle as it was, before one byte of it changed).
      const bundleFile = join(dir, CLI_BUNDLE_FILES.client)
      const bundle = yield* Effect.promise(() => readFile(bundleFile))
      yield* Effect.promise(() => writeFile(cacheFile, sealed))
      yield* Effect.promise(() => writeFile(bundleFile, Buffer.concat([bundle.subarray(0, -1), Buffer.from(" ")])))
      expect(yield* cacheState).toBe("absent")
      expect(yield* answers).toEqual(expected)

      // Without the file the commands run too, and the writer makes it again.
      yield* Effect.promise(() => writeFile(bundleFile, bundle))
      yield* Effect.promise(() => rm(cacheFile))
      expect(yield* cacheState).toBe("absent")
      expect(yield* answers).toEqual(expected)
      yield* run(writer, ["run", "--help"])
      expect(yield* cacheState).toBe("accepted")
    }), { timeout: 120_000 })
})

describe("the code cache file", () => {
  const source = Buffer.from("(function () { return 1 })")
  const payload = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8])

  it("gives back V8's data for the source it was made for", () => {
    expect(openCodeCache(source, sealCodeCache(source, payload))).toEqual(payload)
  })

  it("gives nothing for another source, a changed byte, a cut file or an empty one", () => {
    const sealed = sealCodeCache(source, payload)
    expect(openCodeCache(Buffer.from("(function () { return 2 })"), sealed)).toBeUndefined()
    for (let index = 0; index < sealed.length; index++) {
      const changed = Buffer.from(sealed)
      changed[index] = (changed[index] ?? 0) ^ 0x01
      expect(openCodeCache(source, changed)).toBeUndefined()
    }
    expect(openCodeCache(source, sealed.subarray(0, sealed.length - 1))).toBeUndefined()
    expect(openCodeCache(source, sealed.subarray(0, 32))).toBeUndefined()
    expect(openCodeCache(source, Buffer.alloc(0))).toBeUndefined()
  })
})

describe("marking schemas pure for the client bundle", () => {
  it("marks the Schema calls a module makes while it loads, and nothing else", () => {
    const source = [
      `import { Effect, Schema as S } from "effect"`,
      `export const Name = S.String.pipe(S.minLength(1))`,
      `export class Gone extends S.TaggedError<Gone>()("Gone", { name: Name }) {}`,
      `export const Later = () => S.decodeUnknownSync(Name)("x")`,
      `export const text = "S.String(1)"`,
      `S.decodeUnknownSync(Name)("checked at load")`,
      `export const program = Effect.succeed(S.String)`
    ].join("\n")
    expect(markSchemasPure("Example.ts", source).split("\n")).toEqual([
      `import { Effect, Schema as S } from "effect"`,
      `export const Name = /* @__PURE__ */ S.String.pipe(/* @__PURE__ */ S.minLength(1))`,
      `export class Gone extends /* @__PURE__ */ S.TaggedError<Gone>()("Gone", { name: Name }) {}`,
      `export const Later = () => S.decodeUnknownSync(Name)("x")`,
      `export const text = "S.String(1)"`,
      `S.decodeUnknownSync(Name)("checked at load")`,
      `export const program = Effect.succeed(S.String)`
    ])
  })

  it("leaves a module that does not import effect's Schema as it is", () => {
    const source = `import { Schema } from "./Schema.js"\nexport const A = Schema.String.pipe(Schema.minLength(1))`
    expect(markSchemasPure("Other.ts", source)).toBe(source)
  })
})
