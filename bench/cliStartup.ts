/**
 * How long a `peerchat` client command takes from spawn to exit, next to
 * `node -e 0` (the floor: starting Node itself) measured in the same run.
 * Starts two nodes from the built command (`dist/cli/main.js`, so run
 * `npm run bundle` first; `npm run bench` does) in a temporary directory,
 * registers alice and bob, then runs each command `--runs` times, round
 * robin so load on the machine hits every command alike, and prints the
 * median and 90th percentile wall time and the median's ratio to
 * `node -e 0`. The goal (issue 14) is a ratio of at most 3. Given
 * `--bin` more than once, it runs every command of each build in the same
 * round robin (the nodes run the first), so two builds compare under the same
 * load.
 *
 *   npx tsx bench/cliStartup.ts [--runs 15] [--bin dist/cli/main.js [--bin other/main.js]]
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { createInterface } from "node:readline"
import { parseArgs } from "node:util"
import { percentile } from "./support.js"

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "15" },
    bin: { type: "string", multiple: true, default: ["dist/cli/main.js"] }
  }
})
const runs = Math.max(1, Number(args.runs))
const bins = args.bin.map((path) => resolve(path))
const [bin = resolve("dist/cli/main.js")] = bins

/** The goal: a client command within this factor of `node -e 0`. */
const TARGET_RATIO = 3

interface RunningNode {
  readonly child: ChildProcess
  readonly listen: string
}

/** Starts `peerchat start` on loopback port 0 and waits for its ready line. */
const startNode = (dataDir: string, extra: ReadonlyArray<string>): Promise<RunningNode> =>
  new Promise((resolveNode, reject) => {
    const child = spawn(
      process.execPath,
      [bin, "start", "--json", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--claim-difficulty", "4", ...extra],
      { stdio: ["ignore", "pipe", "ignore"] }
    )
    child.once("exit", (code) => reject(new Error(`node for ${dataDir} exited with ${code} before it was ready`)))
    createInterface({ input: child.stdout }).on("line", (line) => {
      const event = JSON.parse(line) as { readonly event?: string; readonly listen?: string }
      if (event.event === "ready" && event.listen !== undefined) resolveNode({ child, listen: event.listen })
    })
  })

const stopNode = (node: RunningNode): Promise<void> =>
  new Promise((done) => {
    if (node.child.exitCode !== null) return done()
    node.child.once("exit", () => done())
    node.child.kill("SIGTERM")
  })

/** Runs `node ARGS` to completion; its wall time in ms, and whether it exited 0. */
const timed = (argv: ReadonlyArray<string>): { readonly ms: number; readonly ok: boolean } => {
  const started = process.hrtime.bigint()
  const outcome = spawnSync(process.execPath, argv, { stdio: "ignore", timeout: 60_000 })
  return { ms: Number(process.hrtime.bigint() - started) / 1e6, ok: outcome.status === 0 }
}

const root = mkdtempSync(join(tmpdir(), "peerchat-cli-startup-"))
const aliceDir = join(root, "alice")
const bobDir = join(root, "bob")
const nodes: Array<RunningNode> = []
try {
  const alice = await startNode(aliceDir, [])
  nodes.push(alice)
  nodes.push(await startNode(bobDir, ["--bootstrap", alice.listen]))
  for (const [dir, name] of [[aliceDir, "alice"], [bobDir, "bob"]] as const) {
    if (!timed([bin, "register", name, "--data-dir", dir]).ok) throw new Error(`could not register ${name}`)
  }

  const commandsOf = (build: string, tag: string): ReadonlyArray<{ readonly label: string; readonly argv: ReadonlyArray<string> }> => {
    const client = (...command: ReadonlyArray<string>) => [build, ...command, "--data-dir", aliceDir]
    return [
      { label: "peerchat --version", argv: [build, "--version"] },
      { label: "peerchat --help", argv: [build, "--help"] },
      { label: "peerchat send --help", argv: [build, "send", "--help"] },
      { label: "peerchat status", argv: client("status") },
      { label: "peerchat status --json", argv: client("status", "--json") },
      { label: "peerchat peers", argv: client("peers") },
      { label: "peerchat whois bob", argv: client("whois", "bob") },
      { label: "peerchat send bob …", argv: client("send", "bob", "startup bench") },
      { label: "peerchat history bob", argv: client("history", "bob", "--limit", "20") },
      { label: "peerchat inbox", argv: client("inbox") }
    ].map(({ label, argv }) => ({ label: `${tag}${label}`, argv }))
  }
  const cases: ReadonlyArray<{ readonly label: string; readonly argv: ReadonlyArray<string> }> = [
    { label: "node -e 0", argv: ["-e", "0"] },
    ...bins.flatMap((build, index) => commandsOf(build, bins.length === 1 ? "" : `[${index + 1}] `))
  ]
  const samples = cases.map(() => [] as Array<number>)
  const failures = cases.map(() => 0)
  for (let run = 0; run < runs; run++) {
    cases.forEach(({ argv }, index) => {
      const { ms, ok } = timed(argv)
      samples[index]?.push(ms)
      if (!ok) failures[index] = (failures[index] ?? 0) + 1
    })
  }

  const medianOf = (index: number) => percentile(samples[index] ?? [], 50)
  const floor = medianOf(0)
  console.log(`peerchat client start-up: ${runs} runs each, round robin; load average ${loadavg()[0]?.toFixed(2)} on this machine`)
  if (bins.length > 1) bins.forEach((build, index) => console.log(`[${index + 1}] ${build}`))
  console.log(`${"command".padEnd(30)} ${"median".padStart(8)} ${"p90".padStart(8)} ${"× node -e 0".padStart(12)}`)
  cases.forEach(({ label }, index) => {
    const median = medianOf(index)
    const ratio = median / floor
    const verdict = index === 0 ? "" : ratio <= TARGET_RATIO ? "  ok" : `  over ${TARGET_RATIO}x`
    const failed = (failures[index] ?? 0) === 0 ? "" : `  (${failures[index]} runs failed)`
    console.log(
      `${label.padEnd(30)} ${median.toFixed(0).padStart(6)}ms ${percentile(samples[index] ?? [], 90).toFixed(0).padStart(6)}ms ` +
        `${ratio.toFixed(2).padStart(11)}x${verdict}${failed}`
    )
  })
} finally {
  await Promise.all(nodes.map(stopNode))
  rmSync(root, { recursive: true, force: true })
}
