/**
 * Loads the client commands' bundle with a V8 code cache, so a client
 * command does not compile the 0.8 MB bundle at every start (issue 14;
 * docs/decisions.md, "Fast client commands"). Node 20 caches the code of
 * neither ES modules nor `require`d files (`module.enableCompileCache` comes
 * with Node 22), so the bundle is CommonJS wrapped in a function expression
 * (`scripts/bundleCli.ts`), compiled as a `vm.Script` with the cache and
 * called the way Node calls a CommonJS module. The cache is V8's own
 * serialization of the compiled code, made at build time by running a few
 * commands (`CodeCacheWriter.ts`) so it holds the functions they compile too.
 *
 * A cache must never break a command. V8 itself refuses a cache made by
 * another V8 version or with other V8 flags (`cachedDataRejected`), but it
 * checks only the source's length, not its text, and it verifies no checksum
 * of the cache in release builds, so a stale cache of an equally long bundle
 * or a damaged file could make it run wrong code or crash. The file therefore
 * starts with a SHA-256 digest of the bundle's bytes and the cache's bytes; a
 * file whose digest does not match is not given to V8 at all, and the bundle
 * is compiled from its source, as it is when the file is missing.
 */
import { createHash } from "node:crypto"
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname } from "node:path"
import * as vm from "node:vm"

/** The code cache of a bundle is the file of the bundle's name with this suffix, next to it. */
export const CODE_CACHE_SUFFIX = ".v8cache"

/**
 * The parameters of the function the bundle's source is wrapped in, in the
 * order `loadBundle` passes them (those of Node's own CommonJS wrapper).
 */
export const BUNDLE_WRAPPER_PARAMETERS = ["exports", "require", "module", "__filename", "__dirname"] as const

const DIGEST_BYTES = 32

const digestOf = (source: Uint8Array, payload: Uint8Array): Buffer =>
  createHash("sha256").update(source).update(payload).digest()

/** The file content for V8's cache `payload` of the bundle `source`: the digest of both, then the payload. */
export const sealCodeCache = (source: Uint8Array, payload: Uint8Array): Buffer =>
  Buffer.concat([digestOf(source, payload), payload])

/** V8's cache out of a file made by `sealCodeCache` for exactly this `source`; `undefined` for any other file. */
export const openCodeCache = (source: Uint8Array, sealed: Uint8Array): Buffer | undefined => {
  if (sealed.length <= DIGEST_BYTES) return undefined
  const payload = Buffer.from(sealed.buffer, sealed.byteOffset + DIGEST_BYTES, sealed.length - DIGEST_BYTES)
  return digestOf(source, payload).equals(sealed.subarray(0, DIGEST_BYTES)) ? payload : undefined
}

/**
 * What became of the cache: V8 used it (`accepted`), V8 refused it (another
 * Node version or other V8 flags: `rejected`), or there was none for this
 * bundle (missing, damaged or stale: `absent`). Only the speed differs.
 */
export type CodeCacheOutcome = "accepted" | "rejected" | "absent"

/** A bundle loaded and run: what it exports, and the compiled script, for writing a new cache. */
export interface LoadedBundle {
  readonly exports: unknown
  readonly codeCache: CodeCacheOutcome
  readonly source: Buffer
  readonly script: vm.Script
}

const readCache = (cacheFile: string, source: Buffer): Buffer | undefined => {
  let sealed: Buffer
  try {
    sealed = readFileSync(cacheFile)
  } catch {
    return undefined
  }
  return openCodeCache(source, sealed)
}

/**
 * Compiles the bundle at the absolute path `bundleFile` (with its cache, if
 * there is a valid one) and runs it as a CommonJS module: its `require`
 * resolves from the bundle's folder, and an `import()` in it loads what Node
 * would load for an `import()` in that file.
 */
export const loadBundle = (bundleFile: string): LoadedBundle => {
  const source = readFileSync(bundleFile)
  const cachedData = readCache(`${bundleFile}${CODE_CACHE_SUFFIX}`, source)
  const script = new vm.Script(source.toString("utf8"), {
    filename: bundleFile,
    ...(cachedData === undefined ? {} : { cachedData }),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER
  })
  const wrapper: unknown = script.runInThisContext()
  if (typeof wrapper !== "function") throw new Error(`${bundleFile} is not a bundle wrapped in a function`)
  const module: { exports: unknown } = { exports: {} }
  const args: Record<(typeof BUNDLE_WRAPPER_PARAMETERS)[number], unknown> = {
    exports: module.exports,
    require: createRequire(bundleFile),
    module,
    __filename: bundleFile,
    __dirname: dirname(bundleFile)
  }
  Reflect.apply(wrapper, module.exports, BUNDLE_WRAPPER_PARAMETERS.map((name) => args[name]))
  const codeCache: CodeCacheOutcome = cachedData === undefined ? "absent" : script.cachedDataRejected === true ? "rejected" : "accepted"
  return { exports: module.exports, codeCache, source, script }
}

/** The client commands' bundle, next to its cache and `CodeCacheWriter.ts`'s bundle (`scripts/bundleCli.ts`). */
export const CLIENT_BUNDLE_FILE = "ClientCli.cjs"

/** The `runCli` the client commands' bundle exports (`ClientCli.ts`), checked, as the bundle is a file read at run time. */
export const runCliOf = (exports: unknown): ((argv: ReadonlyArray<string>) => void) => {
  const runCli: unknown = typeof exports === "object" && exports !== null && "runCli" in exports ? exports.runCli : undefined
  if (typeof runCli !== "function") throw new Error("the client commands' bundle does not export runCli")
  return (argv) => {
    Reflect.apply(runCli, undefined, [argv])
  }
}

/** The `loadOnDemandModules` the client commands' bundle exports (`ClientCli.ts`), checked like `runCliOf`. */
export const loadOnDemandModulesOf = (exports: unknown): (() => Promise<void>) => {
  const load: unknown = typeof exports === "object" && exports !== null && "loadOnDemandModules" in exports
    ? exports.loadOnDemandModules
    : undefined
  if (typeof load !== "function") throw new Error("the client commands' bundle does not export loadOnDemandModules")
  return async () => {
    await Reflect.apply(load, undefined, [])
  }
}

/**
 * Writes the cache of `loaded` next to its bundle: V8's serialization of
 * every function compiled so far, so call it after the work the cache should
 * cover. Written to a temporary file and renamed, so a reader never sees half a file.
 */
export const writeCodeCache = (bundleFile: string, loaded: LoadedBundle): void => {
  const cacheFile = `${bundleFile}${CODE_CACHE_SUFFIX}`
  const partial = `${cacheFile}.${process.pid}.partial`
  try {
    writeFileSync(partial, sealCodeCache(loaded.source, loaded.script.createCachedData()))
    renameSync(partial, cacheFile)
  } finally {
    rmSync(partial, { force: true })
  }
}
