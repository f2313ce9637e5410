/**
 * Makes the code cache of the client commands' bundle (`CodeCache.ts`).
 * `scripts/bundleCli.ts` runs it once per warm-up command, each run starting
 * from the cache the one before wrote, so the cache holds the functions all
 * of them compiled, not only the bundle's top level, and the modules the
 * commands load on demand (`ClientCli.ts`). It must run on the Node
 * that will run the command, with the same V8 flags (V8 refuses a cache made
 * otherwise), which is why the build runs it rather than shipping a cache.
 *
 *   node dist/cli/client/CodeCacheWriter.js run ARGS…  runs `peerchat ARGS…`, then writes the cache
 *   node dist/cli/client/CodeCacheWriter.js check      prints accepted, rejected or absent
 */
import { fileURLToPath } from "node:url"
import { CLIENT_BUNDLE_FILE, loadBundle, loadOnDemandModulesOf, runCliOf, writeCodeCache } from "./CodeCache.js"

const bundleFile = fileURLToPath(new URL(`./${CLIENT_BUNDLE_FILE}`, import.meta.url))
const [mode, ...args] = process.argv.slice(2)
const loaded = loadBundle(bundleFile)
if (mode === "check") {
  process.stdout.write(`${loaded.codeCache}\n`)
} else if (mode === "run") {
  // The modules the commands import when they run, the chat's among them, which no warm-up command reaches without a node.
  await loadOnDemandModulesOf(loaded.exports)()
  // The command ends the process; the cache is written as it does, after everything the command ran.
  process.once("exit", () => writeCodeCache(bundleFile, loaded))
  runCliOf(loaded.exports)(args)
} else {
  process.stderr.write("usage: CodeCacheWriter.js run ARGS… | check\n")
  process.exitCode = 2
}
