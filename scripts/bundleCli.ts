/**
 * Bundles the `peerchat` command (`npm run build` and `npm ci`, through
 * `prepare`, run it): `dist/cli/main.js`, the entry; `dist/cli/client/ClientCli.cjs`,
 * the client commands in one file, with its V8 code cache next to it;
 * `dist/cli/Cli.js` and `dist/cli/chunks/`, the whole program. `effect`,
 * `@effect/cli` and the rest are bundled, so a client command loads two files
 * instead of hundreds of modules, and nothing of the node (docs/decisions.md,
 * "Fast client commands"). Kept outside: the terminal UI (ink and react,
 * which must share one copy of react) and SQLite's native addon.
 *
 * Run as a script: `tsx scripts/bundleCli.ts [OUTDIR]` (default `dist/cli`).
 */
import { build, type BuildOptions, type Metafile, type Plugin } from "esbuild"
import { spawnSync } from "node:child_process"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"
import { BUNDLE_WRAPPER_PARAMETERS, CODE_CACHE_SUFFIX, type CodeCacheOutcome } from "../src/cli/client/CodeCache.js"

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
export const rewriteDeepImports = (source: string): string =>
  source.replace(BARREL_IMPORT, (statement, list: string, pkg: string) => {
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

/** The names `source` gives effect's Schema module: `import { Schema } from "effect"`, `import * as S from "effect/Schema"`. */
const schemaBindings = (file: ts.SourceFile): ReadonlySet<string> => {
  const names = new Set<string>()
  for (const statement of file.statements) {
    if (!ts.isImportDeclaration(statement) || !ts.isStringLiteral(statement.moduleSpecifier)) continue
    const bindings = statement.importClause?.isTypeOnly === true ? undefined : statement.importClause?.namedBindings
    if (bindings === undefined) continue
    const from = statement.moduleSpecifier.text
    if (from === "effect/Schema" && ts.isNamespaceImport(bindings)) names.add(bindings.name.text)
    if (from === "effect" && ts.isNamedImports(bindings)) {
      for (const element of bindings.elements) {
        if (!element.isTypeOnly && (element.propertyName ?? element.name).text === "Schema") names.add(element.name.text)
      }
    }
  }
  return names
}

/** The identifier an expression such as `Schema.TaggedError<X>()("X", {…}).pipe(…)` starts from. */
const rootOf = (expression: ts.Expression): ts.Expression => {
  let current = expression
  for (;;) {
    if (ts.isPropertyAccessExpression(current) || ts.isElementAccessExpression(current) || ts.isCallExpression(current) ||
      ts.isNonNullExpression(current) || ts.isParenthesizedExpression(current) || ts.isAsExpression(current) ||
      ts.isExpressionWithTypeArguments(current)) {
      current = current.expression
    } else {
      return current
    }
  }
}

/**
 * Marks the calls of effect's Schema module that a module makes while it
 * loads (in the initializers of its top-level constants and the `extends` of
 * its top-level classes) as pure, with an `@__PURE__` comment, so esbuild
 * drops the schemas nothing uses. Building a schema does nothing but make
 * the value, yet esbuild cannot know that of a call, so it kept every schema
 * of every module the client commands import, such as the 77 of the DHT's
 * wire protocol (docs/decisions.md, "Fast client commands"). Functions,
 * class bodies and statements run for their effect are left as they are.
 */
export const markSchemasPure = (fileName: string, source: string): string => {
  const file = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS)
  const schema = schemaBindings(file)
  if (schema.size === 0) return source
  const starts = new Set<number>()
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) || ts.isClassLike(node)) return
    if (ts.isCallExpression(node)) {
      const root = rootOf(node.expression)
      if (ts.isIdentifier(root) && schema.has(root.text)) starts.add(node.getStart(file))
    }
    ts.forEachChild(node, visit)
  }
  for (const statement of file.statements) {
    if (ts.isVariableStatement(statement)) {
      for (const declaration of statement.declarationList.declarations) {
        if (declaration.initializer !== undefined) visit(declaration.initializer)
      }
    } else if (ts.isClassDeclaration(statement)) {
      for (const clause of statement.heritageClauses ?? []) clause.types.forEach(visit)
    }
  }
  let marked = source
  for (const start of [...starts].sort((a, b) => b - a)) marked = `${marked.slice(0, start)}/* @__PURE__ */ ${marked.slice(start)}`
  return marked
}

const SOURCE_FILE = /[\\/]src[\\/].*\.ts$/

/** Loads our sources with deep imports (`rewriteDeepImports`). */
export const deepImportsPlugin: Plugin = {
  name: "peerchat-deep-imports",
  setup(builder) {
    builder.onLoad({ filter: SOURCE_FILE }, async (args) => {
      return { contents: rewriteDeepImports(await readFile(args.path, "utf8")), loader: "ts" }
    })
  }
}

/** Loads our sources with deep imports and their schemas marked pure (`markSchemasPure`): for the client commands. */
export const leanSourcesPlugin: Plugin = {
  name: "peerchat-lean-sources",
  setup(builder) {
    builder.onLoad({ filter: SOURCE_FILE }, async (args) => {
      const source = await readFile(args.path, "utf8")
      return { contents: rewriteDeepImports(markSchemasPure(args.path, source)), loader: "ts" }
    })
  }
}

/** Packages loaded from node_modules at run time rather than bundled. */
export const CLI_EXTERNALS: ReadonlyArray<string> = ["ink", "react", "better-sqlite3"]

/**
 * The bundles' files: the entry, the client commands, the program that
 * writes their code cache, the whole program (its chunks in `chunks/`).
 */
export const CLI_BUNDLE_FILES = {
  main: "main.js",
  client: "client/ClientCli.cjs",
  codeCacheWriter: "client/CodeCacheWriter.js",
  program: "Cli.js"
} as const

/** The code cache of the client commands' bundle (`src/cli/client/CodeCache.ts`). */
export const CLIENT_CODE_CACHE_FILE = `${CLI_BUNDLE_FILES.client}${CODE_CACHE_SUFFIX}`

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
 * The bundles, each with no code shared with another, so a process loads one
 * copy of every library: `main.js` (which loads one of the two next by
 * path), the client commands (the `import()` of the node and of the chat left
 * pointing at files that do not exist next to it), the whole program, split
 * so `start` does not load the chat and `chat` loads it on demand, and the
 * writer of the client commands' code cache. The client commands' bundle is
 * CommonJS wrapped in a function expression, the form `CodeCache.ts` compiles
 * with a cache, and minified except for names (which errors and help show):
 * less text to read and hash.
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
    format: "cjs",
    banner: { js: `(function (${BUNDLE_WRAPPER_PARAMETERS.join(", ")}) {` },
    footer: { js: "})" },
    minifyWhitespace: true,
    minifySyntax: true,
    plugins: [leanSourcesPlugin],
    entryPoints: ["src/cli/client/ClientCli.ts"],
    outfile: join(outdir, CLI_BUNDLE_FILES.client),
    external: [...CLI_EXTERNALS, "./NodeProgram.js", "./chat/ChatProgram.js"]
  },
  {
    ...common,
    entryPoints: ["src/cli/client/CodeCacheWriter.ts"],
    outfile: join(outdir, CLI_BUNDLE_FILES.codeCacheWriter)
  },
  {
    ...common,
    // Minified like the client commands' bundle, names kept: a daemon holds its code's text in
    // memory for as long as it runs (one byte a character once the comments, some with
    // non-ASCII letters, are gone; two before), and unused schemas are dropped.
    minifyWhitespace: true,
    minifySyntax: true,
    plugins: [leanSourcesPlugin],
    entryPoints: { Cli: "src/cli/Cli.ts" },
    outdir,
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
    external: [...CLI_EXTERNALS]
  }
]

/**
 * The commands the code cache is made from, in this order: between them they
 * compile the parser, the help, reading a data directory and reporting a
 * failure. `DATA_DIR` stands for an empty directory, where no node runs.
 */
export const CODE_CACHE_WARM_UP: ReadonlyArray<ReadonlyArray<string>> = [
  ["status", "--json", "--data-dir", "DATA_DIR"],
  ["whois", "bob", "--data-dir", "DATA_DIR"],
  ["--help"],
  ["send", "--help"]
]

/** What became of the client commands' code cache, and what the processes that made it printed on stderr. */
export interface CodeCacheReport {
  readonly outcome: CodeCacheOutcome
  readonly diagnostics: string
}

/**
 * Makes the client commands' code cache in `outdir` with the Node running
 * this build, which is the Node that will run the command when `npm ci`
 * builds it (a cache from another V8 is refused, never harmful). Each warm-up
 * command runs in a process of its own, in this process's environment: V8
 * refuses a cache made under other V8 flags, and V8 flags in `NODE_OPTIONS`
 * (`--max-old-space-size`, say) are the user's when `npm ci` runs in their
 * shell. Then a last process says whether V8 takes the cache.
 */
export const writeClientCodeCache = async (outdir: string): Promise<CodeCacheReport> => {
  const writer = join(outdir, CLI_BUNDLE_FILES.codeCacheWriter)
  const node = (args: ReadonlyArray<string>) => spawnSync(process.execPath, [writer, ...args], { encoding: "utf8", timeout: 60_000 })
  const dataDir = await mkdtemp(join(tmpdir(), "peerchat-code-cache-"))
  const diagnostics: Array<string> = []
  try {
    for (const command of CODE_CACHE_WARM_UP) {
      const run = node(["run", ...command.map((arg) => arg === "DATA_DIR" ? dataDir : arg)])
      diagnostics.push(run.error?.message ?? "", run.stderr)
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true })
  }
  const check = node(["check"])
  diagnostics.push(check.error?.message ?? "", check.stderr)
  const said = check.stdout.trim()
  const outcome: CodeCacheOutcome = said === "accepted" || said === "rejected" ? said : "absent"
  return { outcome, diagnostics: diagnostics.filter((text) => text !== "").join("\n") }
}

/** The metafiles of the bundles, by file of `CLI_BUNDLE_FILES`, and what became of the client commands' code cache. */
export type CliBundle = { readonly [File in keyof typeof CLI_BUNDLE_FILES]: Metafile } & {
  readonly codeCache: CodeCacheReport
}

/**
 * Builds the bundles into `outdir` (the files of an earlier build removed
 * first), then the client commands' code cache, and returns what went where.
 */
export const bundleCli = async (outdir: string): Promise<CliBundle> => {
  await Promise.all(
    ["chunks", "client", ...Object.values(CLI_BUNDLE_FILES)].map((file) => rm(join(outdir, file), { recursive: true, force: true }))
  )
  const [main, client, codeCacheWriter, program] = await Promise.all(cliBundleOptions(outdir).map((options) => build(options)))
  if (main === undefined || client === undefined || codeCacheWriter === undefined || program === undefined) {
    throw new Error("a bundle is missing")
  }
  const codeCache = await writeClientCodeCache(outdir)
  return { main: main.metafile, client: client.metafile, codeCacheWriter: codeCacheWriter.metafile, program: program.metafile, codeCache }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { codeCache } = await bundleCli(process.argv[2] ?? "dist/cli")
  // Without it the client commands are only slower: say so, but leave a working command.
  if (codeCache.outcome !== "accepted") {
    console.warn(`peerchat: the client commands' code cache is ${codeCache.outcome}; they will start slower\n${codeCache.diagnostics}`)
  }
}
