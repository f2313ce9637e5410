/**
 * Vitest global setup: bundles the `peerchat` command once per test run,
 * from the current sources, exactly as `npm run build` ships it, and gives
 * tests the path of its entry (`inject("peerchatCli")`). Tests that run the
 * command as a process (one-shot commands, `peerchat start`, the terminal
 * chat, the nodes on the namespace network) run this build: the command
 * people use, at about a third of the CPU per process start of running the
 * sources through tsx. The build goes to a directory of its own inside the
 * repository (so the packages left outside the bundles, such as ink and
 * better-sqlite3, resolve from its node_modules), removed at the end; like
 * `npm run build`, it includes the client commands' code cache. The
 * build's metafiles and its code cache report are written beside it, for the
 * test that checks what each file holds (`inject("peerchatCliBuild")`).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { join } from "node:path"
import type { TestProject } from "vitest/node"
import { bundleCli, CLI_BUNDLE_FILES } from "../../scripts/bundleCli.js"

declare module "vitest" {
  export interface ProvidedContext {
    /** The entry of this run's build of the `peerchat` command. */
    readonly peerchatCli: string
    /** The directory of that build, and the file holding its `CliBundle` (metafiles, code cache report) as JSON. */
    readonly peerchatCliBuild: { readonly dir: string; readonly bundleFile: string }
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cache = join(process.cwd(), "node_modules", ".cache")
  await mkdir(cache, { recursive: true })
  const root = await mkdtemp(join(cache, "peerchat-cli-"))
  const dir = join(root, "build")
  const bundle = await bundleCli(dir)
  const { codeCache } = bundle
  const bundleFile = join(root, "bundle.json")
  await writeFile(bundleFile, JSON.stringify(bundle))
  // Without the cache the commands work, only slower: worth a line, not a failed run (CliStartup.test.ts checks it).
  if (codeCache.outcome !== "accepted") console.warn(`the client commands' code cache is ${codeCache.outcome}:\n${codeCache.diagnostics}`)
  project.provide("peerchatCli", join(dir, CLI_BUNDLE_FILES.main))
  project.provide("peerchatCliBuild", { dir, bundleFile })
  return () => rm(root, { recursive: true, force: true })
}
