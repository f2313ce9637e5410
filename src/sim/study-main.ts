/**
 * `npm run study`: the parameter sweep of issue 5 (see `Study.ts`), written
 * to `docs/study/`: `results.csv` and SVG charts (`--quick`: a smaller sweep
 * into `results-quick.csv` and `*-quick.svg`). Progress, wall-clock time and
 * heap go to stderr; the Markdown table of the rows goes to stdout. The rows
 * depend only on the seed, so a rerun writes the same bytes. Invariant
 * violations are printed with the seed, and the study exits 1.
 *
 *   npm run study -- [--quick] [--seed 1] [--out docs/study]
 *                    [--nodes 100,1000] [--k 3,20] [--alphas 1,3] [--lookups 50] [--exact-loops]
 *
 * `--nodes`, `--k`, `--alphas` and `--lookups` narrow the sweep (to replay
 * one network, or to time one); the files are then named `*-custom`.
 * `--exact-loops` runs every node loop at its default interval (slower; the
 * rows are the same, see `studyTuning`).
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { fullPlan, quickPlan, runStudy, type StudyPlan, studyCharts, toCsv, toMarkdownTable } from "./Study.js"

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    seed: { type: "string" },
    out: { type: "string", default: "docs/study" },
    nodes: { type: "string" },
    k: { type: "string" },
    alphas: { type: "string" },
    lookups: { type: "string" },
    "exact-loops": { type: "boolean", default: false }
  }
})

const fail = (message: string): never => {
  process.stderr.write(`peerchat study: ${message}\n`)
  process.exit(2)
}

const integer = (name: string, value: string, min: number, max: number): number => {
  const parsed = Number(value)
  if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) fail(`--${name} takes integers from ${min} to ${max}, got ${JSON.stringify(value)}`)
  return parsed
}

const list = (name: string, value: string | undefined, fallback: ReadonlyArray<number>, min: number, max: number): ReadonlyArray<number> =>
  value === undefined ? fallback : value.split(",").map((item) => integer(name, item.trim(), min, max))

const base = args.quick ? quickPlan : fullPlan
const custom = args.nodes !== undefined || args.k !== undefined || args.alphas !== undefined || args.lookups !== undefined
const lookups = args.lookups === undefined ? undefined : integer("lookups", args.lookups, 1, 100_000)
const plan: StudyPlan = {
  ...base,
  seed: args.seed === undefined ? base.seed : integer("seed", args.seed, 0, 2 ** 31 - 1),
  nodes: list("nodes", args.nodes, base.nodes, 2, 100_000),
  ks: list("k", args.k, base.ks, 1, 20),
  alphas: list("alphas", args.alphas, base.alphas, 1, 64),
  lookupsPerAlpha: lookups === undefined ? base.lookupsPerAlpha : () => lookups,
  tuning: args["exact-loops"] ? {} : base.tuning
}
const suffix = custom ? "-custom" : args.quick ? "-quick" : ""

const collect = (globalThis as { readonly gc?: () => void }).gc
const heapMiB = (): string => (process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)
const clock = (seconds: number): string => {
  const whole = Math.max(0, Math.round(seconds))
  return whole >= 60 ? `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s` : `${whole}s`
}

// Estimates weigh each network by its size: building and running N nodes costs about N.
const cells = plan.nodes.flatMap((nodes) => plan.ks.map(() => nodes))
const weightOf = (nodes: number): number => nodes + 200
const totalWeight = cells.reduce((sum, nodes) => sum + weightOf(nodes), 0)
let doneWeight = 0
const wallStart = performance.now()
let lastReport = -Infinity
const elapsedSeconds = () => (performance.now() - wallStart) / 1000

process.stderr.write(
  `[study] ${cells.length} networks (N in {${plan.nodes.join(", ")}}, k in {${plan.ks.join(", ")}}), alpha in {${plan.alphas.join(", ")}}, ` +
    `seed ${plan.seed}${args["exact-loops"] ? ", default loop intervals" : ""}\n`
)
const result = runStudy(plan, {
  progress: (network, update) => {
    const now = performance.now()
    if (now - lastReport < 3000) return
    lastReport = now
    const done = doneWeight + weightOf(network.nodes) * update.fraction
    const elapsed = elapsedSeconds()
    const left = done <= 0 ? "?" : clock(elapsed * (totalWeight - done) / done)
    process.stderr.write(
      `[study] network ${network.index + 1}/${network.count} (N=${network.nodes}, k=${network.k}) ${(update.fraction * 100).toFixed(0)} %: ` +
        `${update.phase}; ${clock(elapsed)} elapsed, about ${left} left\n`
    )
  },
  finished: (network, index) => {
    doneWeight += weightOf(network.nodes)
    collect?.()
    process.stderr.write(
      `[study] network ${index + 1}/${cells.length} (N=${network.nodes}, k=${network.k}) done at ${clock(elapsedSeconds())}: ` +
        `${network.rows.length} rows, ${network.violations.length} violations, heap ${heapMiB()} MiB after it\n`
    )
  }
})

mkdirSync(args.out, { recursive: true })
const files = [
  { file: `results${suffix}.csv`, text: toCsv(result.rows) },
  ...studyCharts(result.rows).map(({ file, svg }) => ({ file: file.replace(/\.svg$/, `${suffix}.svg`), text: svg }))
]
for (const { file, text } of files) writeFileSync(join(args.out, file), text)
process.stdout.write(toMarkdownTable(result.rows))
process.stderr.write(`[study] wrote ${files.map((entry) => join(args.out, entry.file)).join(", ")} in ${clock(elapsedSeconds())}\n`)
if (result.violations.length > 0) {
  process.stderr.write(`peerchat study: ${result.violations.length} invariant violations or failures (reproduce with --seed ${plan.seed}):\n`)
  for (const line of result.violations) process.stderr.write(`  - ${line}\n`)
  process.exitCode = 1
}
