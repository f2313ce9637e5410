/**
 * `npm run study`: the parameter sweep of issue 5 (see `Study.ts`), written
 * to `--out DIR` (default `study-out/`, outside the repository's tracked
 * files: the committed results in `docs/study/` change only with `--out
 * docs/study`): `results.csv` and SVG charts (`--quick`: a smaller sweep
 * into `results-quick.csv` and `*-quick.svg`). Progress, wall-clock time and
 * heap go to stderr; the Markdown table of the rows goes to stdout. The rows
 * depend only on the seed (each network has its own virtual time and seeded
 * randomness), so a rerun writes the same bytes whatever `--jobs` is.
 * Invariant violations are printed with the seed, and the study exits 1; a
 * malformed command line is one line on stderr and exit code 2. The options
 * are listed by `npm run study -- --help` (from `studyCommand` below).
 *
 * Networks run in `--jobs` worker threads at once (default: up to 2, the
 * cores of the reference machine), largest first, each thread for one
 * network, so its whole heap goes when it ends; a network starts only when
 * the estimated heaps of the running ones and its own fit in 75 % of the
 * machine's memory (else a smaller one that fits goes first), and each
 * thread's heap is capped at its share. `--jobs 1` runs everything on the
 * main thread.
 * `--nodes`, `--k`, `--alphas` and `--lookups` narrow the sweep (to replay
 * one network, or to time one); the files are then named `*-custom`.
 * `--exact-loops` runs every node loop at its default interval (slower; the
 * rows are the same, see `studyTuning`). `--charts-from FILE` runs nothing and
 * redraws the charts of a results CSV (after rows were replaced by hand, say).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { availableParallelism, totalmem } from "node:os"
import { basename, join } from "node:path"
import { getHeapStatistics } from "node:v8"
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads"
import { Either, Option } from "effect"
import { integerIn, integerListIn, readCommandLine, switchOption, valueOption } from "./CommandLine.js"
import type { NetworkProgress, NetworkResult, StudyRow } from "./Study.js"
import { fullPlan, quickPlan, type StudyChoice, studyPlan } from "./StudyPlan.js"

/** What a worker thread is asked to run. */
interface WorkerTask {
  readonly choice: StudyChoice
  readonly nodes: number
  readonly k: number
}

/** What a worker thread reports. */
type WorkerMessage =
  | { readonly _tag: "Progress"; readonly update: NetworkProgress }
  | { readonly _tag: "Done"; readonly result: NetworkResult; readonly heapBytes: number }

const collect = (globalThis as { readonly gc?: () => void }).gc

/** This isolate's heap in use, after a full collection when `--expose-gc` allows one. */
const heapInUse = (): number => {
  collect?.()
  return getHeapStatistics().used_heap_size
}

/**
 * Runs one network and reports its heap at the end of the measurement (all
 * nodes still up), and its progress whenever the phase changes or it moved
 * by a percent (posting every clock tick would cost more than the run).
 */
const runReporting = async (
  choice: StudyChoice,
  nodes: number,
  k: number,
  report: (update: NetworkProgress) => void
): Promise<{ readonly result: NetworkResult; readonly heapBytes: number }> => {
  let heapBytes = 0
  let last: NetworkProgress = { phase: "", fraction: -1 }
  const result = await runNetwork(studyPlan(choice), nodes, k, (update) => {
    if (update.fraction >= 1 && heapBytes === 0) heapBytes = heapInUse()
    if (update.phase === last.phase && update.fraction - last.fraction < 0.01) return
    last = update
    report(update)
  })
  return { result, heapBytes }
}

/** Where the files go without `--out`: not `docs/study/`, whose committed results change only when asked for. */
const DEFAULT_OUT = "study-out"

/** Any name that is not blank, of `what`. */
const nonBlank = (what: string) => (text: string): Either.Either<string, string> =>
  text.trim() === "" ? Either.left(`must name ${what}`) : Either.right(text)

/** Any directory name that is not blank. */
const directory = nonBlank("a directory")

const list = (values: ReadonlyArray<number>): string => values.join(",")

const studyCommand = {
  name: "study",
  description: "The parameter study: simulated networks of every N and k in the sweep, each measured with every alpha, " +
    "without churn and with 30 % of the nodes offline; writes results.csv and SVG charts to --out and prints the " +
    "rows as a Markdown table on stdout (progress, time left and heap on stderr). The rows depend only on the " +
    "seed. Exits 1 when an invariant is violated, with the seed that replays it.",
  options: {
    quick: switchOption(
      "quick",
      `the smaller sweep (N in {${quickPlan.nodes.join(", ")}}, shorter windows, fewer lookups; about two minutes): ` +
        "results-quick.csv and *-quick.svg"
    ),
    seed: valueOption(
      "seed",
      "S",
      `the seed every network derives its keys and randomness from (0 to ${2 ** 31 - 1}; default ${fullPlan.seed})`,
      integerIn(0, 2 ** 31 - 1)
    ),
    out: valueOption(
      "out",
      "DIR",
      `where the CSV and charts are written, created if missing (default ${DEFAULT_OUT}; ` +
        "--out docs/study replaces the committed results)",
      directory
    ),
    jobs: valueOption(
      "jobs",
      "J",
      "networks run at once, each in its own worker thread, as memory allows; 1 runs them all on the main thread " +
        "(1 to 64; default 2, or 1 on a one-core machine)",
      integerIn(1, 64)
    ),
    nodes: valueOption(
      "nodes",
      "N,...",
      `only these network sizes (2 to 100000 each; default ${list(fullPlan.nodes)}); narrowing the sweep names the files *-custom`,
      integerListIn(2, 100_000)
    ),
    k: valueOption("k", "K,...", `only these bucket sizes (1 to 20 each; default ${list(fullPlan.ks)})`, integerListIn(1, 20)),
    alphas: valueOption(
      "alphas",
      "A,...",
      `only these lookup parallelisms (1 to 64 each; default ${list(fullPlan.alphas)})`,
      integerListIn(1, 64)
    ),
    lookups: valueOption(
      "lookups",
      "L",
      "lookups per alpha, with and without churn, whatever N (1 to 100000; default 200, 60 at 10000 nodes, 40 with --quick)",
      integerIn(1, 100_000)
    ),
    "exact-loops": switchOption(
      "exact-loops",
      "run every node's background loop at its default interval rather than the study's tuning (slower; the same rows)"
    ),
    "charts-from": valueOption(
      "charts-from",
      "FILE",
      "run no network: redraw the charts from a results CSV this study wrote (results-quick.csv gives *-quick.svg) " +
        "into --out",
      nonBlank("a results CSV file")
    )
  },
  examples: [
    "npm run study -- --quick",
    "npm run study -- --nodes 1000 --k 20 --alphas 3 --lookups 100 --seed 7",
    "npm run study -- --out docs/study",
    "npm run study -- --charts-from docs/study/results.csv --out docs/study"
  ]
}

/** The chart files of `rows`, named with the suffix of their CSV (`results-quick.csv`: `*-quick.svg`). */
const chartFiles = (rows: ReadonlyArray<StudyRow>, suffix: string): ReadonlyArray<{ readonly file: string; readonly text: string }> =>
  studyCharts(rows).map(({ file, svg }) => ({ file: file.replace(/\.svg$/, `${suffix}.svg`), text: svg }))

/** Writes the charts of the rows in `csvFile` into `out`; a file that is not a study's CSV is one line on stderr and exit 1. */
function redrawCharts(csvFile: string, out: string): void {
  let text: string
  try {
    text = readFileSync(csvFile, "utf8")
  } catch (error) {
    process.stderr.write(`peerchat study: cannot read ${csvFile}: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
    return
  }
  const rows = fromCsv(text)
  if (Either.isLeft(rows)) {
    process.stderr.write(`peerchat study: ${csvFile} is not a study's results CSV: ${rows.left}\n`)
    process.exitCode = 1
    return
  }
  // results-quick.csv → *-quick.svg, as the study itself names them.
  const suffix = /^results(.*)\.csv$/.exec(basename(csvFile))?.[1] ?? ""
  mkdirSync(out, { recursive: true })
  const written = chartFiles(rows.right, suffix).map(({ file, text: svg }) => {
    const path = join(out, file)
    writeFileSync(path, svg)
    return path
  })
  process.stderr.write(`[study] ${rows.right.length} rows from ${csvFile}; wrote ${written.join(", ")}\n`)
}

/** The command line (on the main thread), read before the study is loaded: --help and a malformed line answer without it. */
const commandLine = isMainThread ? await readCommandLine(studyCommand, process.argv.slice(2)) : undefined
const { fromCsv, renderCauses, runNetwork, studyCells, studyCharts, toCsv, toMarkdownTable } = await import("./Study.js")

if (commandLine === undefined) {
  const task = workerData as WorkerTask
  const port = parentPort
  const post = (message: WorkerMessage) => port?.postMessage(message)
  const { heapBytes, result } = await runReporting(task.choice, task.nodes, task.k, (update) => post({ _tag: "Progress", update }))
  post({ _tag: "Done", result, heapBytes })
} else {
  await main(commandLine)
}

async function main(args: NonNullable<typeof commandLine>): Promise<void> {
  if (Option.isSome(args["charts-from"])) {
    redrawCharts(args["charts-from"].value, Option.getOrElse(args.out, () => DEFAULT_OUT))
    return
  }
  const choice: StudyChoice = {
    quick: args.quick,
    seed: Option.getOrUndefined(args.seed),
    nodes: Option.getOrUndefined(args.nodes),
    ks: Option.getOrUndefined(args.k),
    alphas: Option.getOrUndefined(args.alphas),
    lookupsPerAlpha: Option.getOrUndefined(args.lookups),
    exactLoops: args["exact-loops"]
  }
  const plan = studyPlan(choice)
  const jobs = Option.getOrElse(args.jobs, () => Math.min(2, availableParallelism()))
  const out = Option.getOrElse(args.out, () => DEFAULT_OUT)
  const custom = Option.isSome(args.nodes) || Option.isSome(args.k) || Option.isSome(args.alphas) || Option.isSome(args.lookups)
  const suffix = custom ? "-custom" : args.quick ? "-quick" : ""
  const cells = studyCells(plan)

  const clock = (seconds: number): string => {
    const whole = Math.max(0, Math.round(seconds))
    return whole >= 60 ? `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s` : `${whole}s`
  }
  const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`
  const wallStart = performance.now()
  const elapsed = () => (performance.now() - wallStart) / 1000

  // Estimates weigh each network by its size: building and running N nodes costs about N.
  const weightOf = (nodes: number): number => nodes + 200
  const totalWeight = cells.reduce((sum, cell) => sum + weightOf(cell.nodes), 0)
  let doneWeight = 0
  const running = new Map<number, NetworkProgress>()
  let lastReport = -Infinity
  const report = (force = false) => {
    const now = performance.now()
    if (!force && now - lastReport < 3000) return
    lastReport = now
    let done = doneWeight
    const parts: Array<string> = []
    for (const [index, update] of running) {
      const cell = cells[index] as { readonly nodes: number; readonly k: number } // running holds indices of cells
      done += weightOf(cell.nodes) * update.fraction
      parts.push(`N=${cell.nodes} k=${cell.k} ${(update.fraction * 100).toFixed(0)} % ${update.phase}`)
    }
    const left = done <= 0 ? "?" : clock(elapsed() * (totalWeight - done) / done)
    process.stderr.write(`[study] ${clock(elapsed())} elapsed, about ${left} left; ${parts.join(" | ")}\n`)
  }

  const results: Array<NetworkResult | undefined> = cells.map(() => undefined)
  // Live heap per node, for admitting networks in parallel: the largest any finished network of 1000 or
  // more nodes measured, a first guess until then (355-385 KiB measured at 1000 and 10,000 nodes).
  let bytesPerNode = 400_000
  const finish = (index: number, result: NetworkResult, heapBytes: number) => {
    results[index] = result
    running.delete(index)
    doneWeight += weightOf(result.nodes)
    if (heapBytes > 0 && result.nodes >= 1000) bytesPerNode = Math.max(bytesPerNode, heapBytes / result.nodes)
    process.stderr.write(
      `[study] N=${result.nodes}, k=${result.k} done at ${clock(elapsed())}: ${result.rows.length} rows, ` +
        `${result.violations.length} violations, heap ${mib(heapBytes)} at the end (${(heapBytes / result.nodes / 1024).toFixed(0)} KiB per node)\n`
    )
    process.stderr.write(renderCauses(result))
  }

  const writeOutputs = () => {
    const rows: Array<StudyRow> = []
    const violations: Array<string> = []
    for (const result of results) {
      if (result === undefined) continue
      rows.push(...result.rows)
      violations.push(...result.violations)
    }
    mkdirSync(out, { recursive: true })
    const files = [
      { file: `results${suffix}.csv`, text: toCsv(rows) },
      ...chartFiles(rows, suffix)
    ]
    for (const { file, text } of files) writeFileSync(join(out, file), text)
    process.stdout.write(toMarkdownTable(rows))
    process.stderr.write(`[study] wrote ${files.map((entry) => join(out, entry.file)).join(", ")} in ${clock(elapsed())}\n`)
    if (violations.length > 0) {
      process.stderr.write(`peerchat study: ${violations.length} invariant violations or failures (reproduce with --seed ${plan.seed}):\n`)
      for (const line of violations) process.stderr.write(`  - ${line}\n`)
      process.exitCode = 1
    }
  }

  process.stderr.write(
    `[study] ${cells.length} networks (N in {${plan.nodes.join(", ")}}, k in {${plan.ks.join(", ")}}), alpha in {${plan.alphas.join(", ")}}, ` +
      `seed ${plan.seed}, ${jobs} at a time${choice.exactLoops === true ? ", default loop intervals" : ""}\n`
  )

  if (jobs === 1) {
    for (const [index, cell] of cells.entries()) {
      running.set(index, { phase: "starting", fraction: 0 })
      const { heapBytes, result } = await runReporting(choice, cell.nodes, cell.k, (update) => {
        running.set(index, update)
        report()
      })
      finish(index, result, heapBytes)
      collect?.()
    }
    writeOutputs()
    return
  }

  // Worker threads run TypeScript through tsx when this file is TypeScript (npm run study); compiled, they load it directly.
  const self = import.meta.url
  const memoryBudget = 0.75 * totalmem()
  // Each thread's heap is capped at its share of the budget, so V8 collects before the threads together outgrow it.
  const heapLimitMb = Math.min(16_384, Math.floor(memoryBudget / jobs / 2 ** 20))
  const startWorker = (task: WorkerTask): Worker => {
    const options = { workerData: task, resourceLimits: { maxOldGenerationSizeMb: heapLimitMb } }
    if (!self.endsWith(".ts")) return new Worker(new URL(self), options)
    const tsx = import.meta.resolve("tsx/esm/api")
    return new Worker(
      `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(self)}) })`,
      { ...options, eval: true }
    )
  }
  // Largest first, so the long networks overlap and the short ones fill the gaps.
  const queue = cells.map((cell, index) => ({ ...cell, index })).sort((a, b) => b.nodes - a.nodes || a.index - b.index)
  // Between collections a network's heap grows to about twice its live size (10,000 nodes: 3.5 GB live, 7.4 GB resident).
  const estimate = (nodes: number) => nodes * bytesPerNode * 2.2
  const launch = (): void => {
    while (queue.length > 0 && running.size < jobs) {
      const busy = [...running.keys()].reduce((sum, index) => sum + estimate((cells[index] as { readonly nodes: number }).nodes), 0)
      // The largest network that fits beside the running ones (any network when none runs).
      const position = queue.findIndex((cell) => running.size === 0 || busy + estimate(cell.nodes) <= memoryBudget)
      if (position < 0) return
      const [next] = queue.splice(position, 1)
      if (next === undefined) return
      running.set(next.index, { phase: "starting", fraction: 0 })
      let settled = false
      const worker = startWorker({ choice, nodes: next.nodes, k: next.k })
      worker.on("message", (message: WorkerMessage) => {
        if (message._tag === "Progress") {
          running.set(next.index, message.update)
          report()
        } else {
          settled = true
          finish(next.index, message.result, message.heapBytes)
        }
      })
      const failed = (reason: string) => {
        if (settled) return
        settled = true
        finish(next.index, { nodes: next.nodes, k: next.k, rows: [], violations: [`N=${next.nodes}, k=${next.k}, seed ${plan.seed}: ${reason}`], causes: [] }, 0)
      }
      worker.on("error", (error) => failed(`the worker failed: ${error.message}`))
      worker.on("exit", (code) => {
        failed(`the worker exited with code ${code} before reporting`)
        launch()
        if (running.size === 0 && queue.length === 0) writeOutputs()
      })
    }
  }
  launch()
}
