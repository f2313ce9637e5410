/**
 * The command lines of `npm run sim` and `npm run study` (issue 14): the
 * programs run as `npm run` runs them (node with tsx), and `--help` lists
 * every flag they had before `@effect/cli`, a malformed command line is one
 * line and exit code 2, and small seeded runs still work, the study writing
 * outside `docs/study` unless told otherwise. The readers of option values
 * are tested on their own first.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { execFile } from "node:child_process"
import { readdir, readFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { durationMillis, fractionUpTo, integerIn, integerListIn, oneOf } from "../../src/sim/CommandLine.js"
import { scopedTempDir } from "../support/tempDir.js"

const TSX = createRequire(import.meta.url).resolve("tsx")
const SIM = fileURLToPath(new URL("../../src/sim/main.ts", import.meta.url))
const STUDY = fileURLToPath(new URL("../../src/sim/study-main.ts", import.meta.url))

interface Outcome {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs one of the programs with `args`, as `npm run sim`/`npm run study` do, from `cwd`. */
const run = (script: string, args: ReadonlyArray<string>, cwd?: string) =>
  Effect.async<Outcome>((resume) => {
    const child = execFile(
      process.execPath,
      ["--expose-gc", "--import", TSX, script, ...args],
      { timeout: 120_000, cwd },
      (error, stdout, stderr) => {
        resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : -1, stdout, stderr }))
      }
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Every flag each program took before the move to `@effect/cli` (src/sim/main.ts and study-main.ts, node:util parseArgs). */
const SIM_FLAGS = [
  "--nodes", "--seed", "--k", "--alpha", "--churn", "--session", "--duration", "--warmup", "--lookups", "--users",
  "--messages", "--join", "--latency", "--loss", "--hostile", "--resolutions", "--dead", "--nat", "--json", "--help",
  // Added since.
  "--probe-quiet-peers"
]
const STUDY_FLAGS = [
  "--quick",
  "--seed",
  "--out",
  "--jobs",
  "--nodes",
  "--k",
  "--alphas",
  "--lookups",
  "--exact-loops",
  "--charts-from",
  "--help"
]

/** The flags a help text lists, one option per line starting with two blanks and a dash. */
const listedFlags = (help: string): ReadonlyArray<string> =>
  help.split("\n").flatMap((line) => {
    const match = /^ {2}(?:-h, )?(--[a-z-]+)/.exec(line)
    return match?.[1] === undefined ? [] : [match[1]]
  })

/** A malformed command line: exit code 2, nothing on stdout, one line on stderr naming the program and the help. */
const expectUsageError = (outcome: Outcome, program: string, message: RegExp) => {
  expect(outcome.code).toBe(2)
  expect(outcome.stdout).toBe("")
  const lines = outcome.stderr.trimEnd().split("\n")
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(new RegExp(`^peerchat ${program}: `))
  expect(lines[0]).toMatch(message)
  expect(lines[0]).toContain(`(see npm run ${program} -- --help)`)
}

describe("reading option values", () => {
  it("integers, lists, fractions, durations and choices, or what is wrong with them", () => {
    expect(integerIn(2, 10)("7")).toEqual(Either.right(7))
    expect(integerIn(2, 10)(" 7 ")).toEqual(Either.right(7))
    for (const text of ["1", "11", "7.5", "-3", "", "0x7", "1e1", "seven"]) {
      expect(integerIn(2, 10)(text), text).toEqual(Either.left("must be an integer from 2 to 10"))
    }
    expect(integerListIn(1, 20)("3,20")).toEqual(Either.right([3, 20]))
    expect(integerListIn(1, 20)("3, 5")).toEqual(Either.right([3, 5]))
    expect(Either.isLeft(integerListIn(1, 20)("3,,5"))).toBe(true)
    expect(Either.isLeft(integerListIn(1, 20)("3,21"))).toBe(true)
    expect(fractionUpTo(1, false)("0.3")).toEqual(Either.right(0.3))
    expect(fractionUpTo(1, false)("30%")).toEqual(Either.right(0.3))
    expect(fractionUpTo(1, false)(".5")).toEqual(Either.right(0.5))
    expect(fractionUpTo(1, false)("1")).toEqual(Either.left("must be a fraction from 0 to below 1 (or a percentage below 100%)"))
    expect(fractionUpTo(1, true)("100%")).toEqual(Either.right(1))
    expect(fractionUpTo(0.5, true)("0.6")).toEqual(Either.left("must be a fraction from 0 to 0.5 (or a percentage from 0% to 50%)"))
    for (const text of ["", "-0.1", "%", "0.3%%", "1e-1", "half"]) expect(Either.isLeft(fractionUpTo(1, true)(text)), text).toBe(true)
    expect(durationMillis("30m")).toEqual(Either.right(1_800_000))
    expect(durationMillis("50ms")).toEqual(Either.right(50))
    expect(durationMillis("90")).toEqual(Either.right(90_000))
    expect(Either.isLeft(durationMillis("30 parsecs"))).toBe(true)
    expect(oneOf(["real", "seeded"])("seeded")).toEqual(Either.right("seeded"))
    expect(oneOf(["real", "seeded"])("Real")).toEqual(Either.left(`must be "real" or "seeded"`))
  })
})

describe("npm run sim", () => {
  it.live("--help lists every flag with its meaning and exits 0", () =>
    Effect.gen(function*() {
      const outcome = yield* run(SIM, ["--help"])
      expect(outcome.code).toBe(0)
      expect(outcome.stderr).toBe("")
      expect(outcome.stdout).toMatch(/^Usage: npm run sim -- \[OPTIONS\]\n/)
      expect([...listedFlags(outcome.stdout)].sort()).toEqual([...SIM_FLAGS].sort())
      expect(outcome.stdout).toMatch(/--churn F +fraction of the nodes offline at any time/)
      expect(outcome.stdout).not.toContain("A user-defined piece of text")
    }), { timeout: 60_000 })

  it.live("a malformed command line is one line and exit code 2", () =>
    Effect.gen(function*() {
      expectUsageError(yield* run(SIM, ["--nodez", "30"]), "sim", /unknown option "--nodez"/)
      expectUsageError(yield* run(SIM, ["--churn", "1.5"]), "sim", /--churn must be a fraction from 0 to below 1 .*got "1\.5"/)
      expectUsageError(yield* run(SIM, ["--k"]), "sim", /--k needs a value/)
    }), { timeout: 60_000 })

  it.live("a small seeded run takes every option it is given and prints its summary as JSON", () =>
    Effect.gen(function*() {
      const outcome = yield* run(SIM, [
        "--nodes", "12", "--seed", "9", "--k", "4", "--alpha", "2", "--churn", "10%", "--session", "30m",
        "--duration", "1m", "--warmup", "30s", "--lookups", "5", "--resolutions", "3", "--users", "4", "--messages", "2",
        "--join", "real", "--latency", "30ms", "--loss", "0", "--hostile", "0.1", "--dead", "0.1", "--nat", "20%", "--probe-quiet-peers", "--json"
      ])
      expect(outcome.stderr).toMatch(/\[sim\] .* of virtual time in/)
      expect(outcome.code).toBe(0)
      const summary = JSON.parse(outcome.stdout) as {
        readonly parameters: Record<string, number>
        readonly lookups: { readonly count: number }
        readonly resolutions: { readonly count: number }
        readonly offlineDelivery: { readonly sent: number }
        readonly reachability: { readonly nat: number }
        readonly violations: ReadonlyArray<string>
      }
      expect(summary.parameters).toMatchObject({ nodes: 12, seed: 9, k: 4, alpha: 2, churn: 0.1, durationMs: 60_000, hostile: 0.1, dead: 0.1, probeQuietPeers: true })
      expect(summary.lookups.count).toBe(5)
      expect(summary.resolutions.count).toBe(3)
      expect(summary.offlineDelivery.sent).toBe(2)
      expect(summary.reachability.nat).toBe(0.2)
      expect(summary.violations).toEqual([])
    }), { timeout: 120_000 })
})

describe("npm run study", () => {
  it.live("--help lists every flag, says where the files go, and exits 0", () =>
    Effect.gen(function*() {
      const outcome = yield* run(STUDY, ["--help"])
      expect(outcome.code).toBe(0)
      expect(outcome.stderr).toBe("")
      expect(outcome.stdout).toMatch(/^Usage: npm run study -- \[OPTIONS\]\n/)
      expect([...listedFlags(outcome.stdout)].sort()).toEqual([...STUDY_FLAGS].sort())
      expect(outcome.stdout).toMatch(/--out DIR +where the CSV and charts are written, created if missing\s+\(default study-out;/)
    }), { timeout: 60_000 })

  it.live("a malformed command line is one line and exit code 2", () =>
    Effect.gen(function*() {
      expectUsageError(yield* run(STUDY, ["--frobnicate"]), "study", /unknown option "--frobnicate"/)
      expectUsageError(yield* run(STUDY, ["--k", "3,30"]), "study", /--k must be integers from 1 to 20, separated by commas, got "3,30"/)
    }), { timeout: 60_000 })

  it.scopedLive("a small run writes its files to study-out in the working directory, or to --out", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("study-cli")
      const small = ["--nodes", "12", "--k", "3", "--alphas", "1", "--lookups", "2", "--jobs", "1", "--seed", "4"]
      const byDefault = yield* run(STUDY, small, dir)
      expect(byDefault.code).toBe(0)
      expect(byDefault.stdout).toMatch(/^\| N \| k \| α \|/)
      const files = ["lookups-n12-custom.svg", "results-custom.csv", "rpc-load-custom.svg", "success-churn-custom.svg"]
      expect(yield* Effect.promise(() => readdir(dir))).toEqual(["study-out"])
      expect([...(yield* Effect.promise(() => readdir(join(dir, "study-out"))))].sort()).toEqual(files)

      const out = join(dir, "chosen")
      const chosen = yield* run(STUDY, [...small, "--out", out], dir)
      expect(chosen.code).toBe(0)
      expect(chosen.stdout).toBe(byDefault.stdout)
      // The rows depend only on the seed: the same run writes the same CSV wherever it goes.
      const [first, second] = yield* Effect.promise(() =>
        Promise.all([readFile(join(dir, "study-out", "results-custom.csv"), "utf8"), readFile(join(out, "results-custom.csv"), "utf8")])
      )
      expect(second).toBe(first)

      // The charts drawn again from the CSV alone are the run's own, byte for byte; a file that is no
      // study's CSV is one line and exit code 1.
      const redrawn = join(dir, "redrawn")
      const again = yield* run(STUDY, ["--charts-from", join(out, "results-custom.csv"), "--out", redrawn], dir)
      expect(again.code).toBe(0)
      const charts = files.filter((file) => file.endsWith(".svg"))
      expect([...(yield* Effect.promise(() => readdir(redrawn)))].sort()).toEqual(charts)
      for (const chart of charts) {
        expect(yield* Effect.promise(() => readFile(join(redrawn, chart), "utf8"))).toBe(
          yield* Effect.promise(() => readFile(join(out, chart), "utf8"))
        )
      }
      const notCsv = yield* run(STUDY, ["--charts-from", join(out, "lookups-n12-custom.svg"), "--out", redrawn], dir)
      expect(notCsv.code).toBe(1)
      expect(notCsv.stderr).toMatch(/^peerchat study: .* is not a study's results CSV: line 1: expected the header nodes,k,/)
      expect(notCsv.stderr.trimEnd().split("\n")).toHaveLength(1)
    }), { timeout: 180_000 })
})
