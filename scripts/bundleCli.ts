/**
 * Bundles the `peerchat` command (`npm run build` and `npm ci`, through
 * `prepare`, run it): `dist/cli/main.js`, the entry; `dist/cli/client/ClientCli.js`,
 * the client commands in one file; `dist/cli/Cli.js` and `dist/cli/chunks/`,
 * the whole program. `effect`, `@effect/cli` and the rest are bundled, so a
 * client command loads two files instead of hundreds of modules, and nothing
 * of the node (docs/decisions.md, "Fast client commands"). Kept outside: the
 * terminal UI (ink and react, which must share one copy of react) and
 * SQLite's native addon.
 *
 * Run as a script: `tsx scripts/bundleCli.ts [OUTDIR]` (default `dist/cli`).
 */
import { build, type BuildOptions, type Metafile, type Plugin } from "esbuild"
import { readFile, rm } from "node:fs/promises"
import { createRequire } from "node:module"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

/** `import { A, type B, C as D } from "effect"` and the same from an `@effect/…` package. */
const BARREL_IMPORT = /import\s*\{([^}]*)\}\s*from\s*"(effect|@effect\/[a-z-]+)"/g

const resolveFrom = createRequire(import.meta.url)

/** Whether `pkg` has a module `pkg/name` of its own (the barrels re-export each module as a namespace of its name). */
const hasModule = (pkg: string, name: string): boolean => {
  try {
    resolveFrom.resolve(`${pkg}/${name}`)
    return true
  } catch {
    return false
  }
}

/**
 * Rewrites named imports from the barrels of \`effect\` and \`@effect/*\` into
 * imports of the modules themselves (\`import { Effect } from "effect"\` becomes
 * \`import * as Effect from "effect/Effect"\`), as if the sources were written
 * with deep imports. A barrel pulls in far more than the names used: the
 * client commands' bundle is half the size this way (see docs/decisions.md).
 * Names that are not modules (\`pipe\`, type-only names) stay as they were.
 */
export const deepImportsPlugin: Plugin = {
  name: "peerchat-deep-imports",
  setup(builder) {
    builder.onLoad({ filter: /[\\/]src[\\/].*\.ts$/ }, async (args) => {
      const source = await readFile(args.path, "utf8")
      const contents = source.replace(BARREL_IMPORT, (statement, list: string, pkg: string) => {
        const kept: Array<string> = []
        const deep: Array<string> = []
        for (const raw of list.split(",").map((part) => part.trim()).filter((part) => part !== "")) {
          const match = /^(type\s+)?([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*))?$/.exec(raw)
          const name = match?.[2]
          if (match === null || match[1] !== undefined || name === undefined || !hasModule(pkg, name)) {
            kept.push(raw)
          } else {
            deep.push(`import * as ${match[3] ?? name} from "${pkg}/${name}"`)
          }
        }
        if (deep.length === 0) return statement
        return [...deep, ...(kept.length === 0 ? [] : [`import { ${kept.join(", ")} } from "${pkg}"`])].join("; ")
      })
      return { contents, loader: "ts" }
    })
  }
}

/** Packages loaded from node_modules at run time rather than bundled. */
export const CLI_EXTERNALS: ReadonlyArray<string> = ["ink", "react", "better-sqlite3"]

/** The bundles' files: the entry, the client commands, the whole program (its chunks in `chunks/`). */
export const CLI_BUNDLE_FILES = {
  main: "main.js",
  client: "client/ClientCli.js",
  program: "Cli.js"
} as const

/**
 * Options shared by the bundles. `require` is defined in every file because
 * some bundled CommonJS packages call it for Node built-ins, which an ES
 * module does not have.
 */
const common = {
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  banner: {
    js: `import { createRequire as __peerchatRequire } from "node:module"; const require = __peerchatRequire(import.meta.url);`
  },
  plugins: [deepImportsPlugin],
  sourcemap: "linked",
  metafile: true,
  logLevel: "warning"
} satisfies BuildOptions

/**
 * The three bundles, each with no code shared with another, so a process
 * loads one copy of every library: `main.js` (which imports one of the two
 * others by path), the client commands (the `import()` of the node and of the
 * chat left pointing at files that do not exist next to it), and the whole
 * program, split so `start` does not load the chat and `chat` loads it on demand.
 */
export const cliBundleOptions = (outdir: string): ReadonlyArray<BuildOptions & { readonly metafile: true }> => [
  {
    ...common,
    entryPoints: { main: "src/cli/main.ts" },
    outdir,
    external: ["./Cli.js", "./client/ClientCli.js"]
  },
  {
    ...common,
    entryPoints: ["src/cli/client/ClientCli.ts"],
    outfile: join(outdir, CLI_BUNDLE_FILES.client),
    external: [...CLI_EXTERNALS, "./NodeProgram.js", "./chat/ChatProgram.js"]
  },
  {
    ...common,
    entryPoints: { Cli: "src/cli/Cli.ts" },
    outdir,
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    external: [...CLI_EXTERNALS]
  }
]

/** The metafiles of the bundles, by file of `CLI_BUNDLE_FILES`. */
export type CliBundleMetafiles = { readonly [File in keyof typeof CLI_BUNDLE_FILES]: Metafile }

/** Builds the bundles into `outdir` (the files of an earlier build removed first) and returns what went where. */
export const bundleCli = async (outdir: string): Promise<CliBundleMetafiles> => {
  await Promise.all(
    ["chunks", "client", ...Object.values(CLI_BUNDLE_FILES)].map((file) => rm(join(outdir, file), { recursive: true, force: true }))
  )
  const [main, client, program] = await Promise.all(cliBundleOptions(outdir).map((options) => build(options)))
  if (main === undefined || client === undefined || program === undefined) throw new Error("a bundle is missing")
  return { main: main.metafile, client: client.metafile, program: program.metafile }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await bundleCli(process.argv[2] ?? "dist/cli")
}
