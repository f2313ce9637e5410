/**
 * What a `peerchat` client command loads (issue 14: client commands start
 * fast by loading only what they need). The command is bundled as `npm run
 * build` bundles it, into a temporary directory; the metafiles say which
 * sources each file holds and what it imports at run time. `--version` loads
 * the entry file alone; the client commands and `--help` load one more file,
 * which must hold nothing of the node, the terminal chat, SQLite, the TCP
 * transport or undici, and import neither ink nor react. Then the whole
 * program's files are deleted and the client commands still run, so nothing
 * at run time reaches for them either. Not a timing test:
 * `bench/cliStartup.ts` measures the time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Metafile } from "esbuild"
import { execFile } from "node:child_process"
import { rm } from "node:fs/promises"
import { isBuiltin } from "node:module"
import { join } from "node:path"
import { bundleCli, CLI_BUNDLE_FILES } from "../../scripts/bundleCli.js"
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

/** The imports of the output file ending with `file` that stay imports at run time, with their kind. */
const runtimeImports = (meta: Metafile, file: string): ReadonlyArray<string> =>
  Object.entries(meta.outputs)
    .filter(([output]) => output.endsWith(`/${file}`))
    .flatMap(([, output]) => output.imports.filter((imported) => imported.external))
    .map((imported) => `${imported.kind} ${imported.path}`)

const run = (script: string, args: ReadonlyArray<string>) =>
  Effect.async<{ readonly code: number; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = execFile(process.execPath, [script, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("the peerchat bundle", () => {
  it.scopedLive("loads neither the node nor the chat for --version, --help and client commands", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("cli-bundle")
      const meta = yield* Effect.promise(() => bundleCli(dir))

      // --version: the entry file holds the version and nothing else; it imports one of the two bundles by path.
      expect([...sourcesOf(meta.main, CLI_BUNDLE_FILES.main)].sort()).toEqual(["src/cli/Version.ts", "src/cli/main.ts"])
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
      const start = yield* run(main, ["start", "--data-dir", join(dir, "node"), "--listen", "127.0.0.1:0"])
      expect(start.code).not.toBe(0)
      expect(start.stderr).toMatch(/Cli\.js/)
    }), { timeout: 120_000 })
})
