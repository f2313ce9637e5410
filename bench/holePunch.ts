/**
 * Hole-punch success per router kind, on the namespace test network: for
 * each pair of router kinds, `--tries` punches (default 20) between a host
 * behind each, every try with fresh identities and fresh ports, both ends
 * running the node's `Transport.punch` (the production code path) in a
 * process inside its host (`bench/punchAgent.ts`); the coordination that
 * carries ports and hosts through a relay is replaced by this driver, which
 * hands each end the other's public address (its router's WAN address, as a
 * relay would see it) and port. Reports, per pair: tries, successes, and the
 * time to a connection that carried a Ping (p50, p95), and the failures' reasons.
 *
 *   npx tsx bench/holePunch.ts [--tries 20] [--within 6000]
 *
 * Needs root (network namespaces); prints why and exits 0 without them.
 * The end-to-end path (request through a relay, real `peerchat` processes)
 * is `test/net/HolePunch.test.ts`.
 */
import { Effect, Schema } from "effect"
import { createInterface } from "node:readline"
import { parseArgs } from "node:util"
import { punchPort } from "../src/core/HolePunch.js"
import { canCreateNamespaces, spawnIn } from "../test/net/Netns.js"
import { type Host, makeNetwork, type RouterKind } from "../test/net/Topology.js"
import { percentile } from "./support.js"

const { values: args } = parseArgs({
  options: {
    tries: { type: "string", default: "20" },
    within: { type: "string", default: "6000" }
  }
})
const tries = Number(args.tries)
const withinMillis = Number(args.within)

type Place = "public" | RouterKind

/** Initiator's place, then responder's. */
const PAIRS: ReadonlyArray<readonly [Place, Place]> = [
  ["port-preserving-nat", "port-preserving-nat"],
  ["public", "port-preserving-nat"],
  ["port-preserving-nat", "public"],
  ["port-preserving-nat", "firewall"],
  ["firewall", "firewall"],
  ["port-preserving-nat", "symmetric-nat"],
  ["symmetric-nat", "port-preserving-nat"],
  ["symmetric-nat", "symmetric-nat"]
]

const Report = Schema.parseJson(Schema.Struct({
  try: Schema.Int,
  ok: Schema.Boolean,
  ms: Schema.NonNegativeInt,
  error: Schema.optional(Schema.String)
}))
type Report = typeof Report.Type

/** An agent process in `host`, and a way to run one side of a try there. */
const startAgent = (host: Host) =>
  Effect.gen(function*() {
    const child = yield* spawnIn(host, process.execPath, ["--import", "tsx", "bench/punchAgent.ts", host.address])
    const waiting = new Map<number, (report: Report) => void>()
    let ready: (() => void) | undefined
    const started = new Promise<void>((resolve) => (ready = resolve))
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.includes("\"ready\"")) return ready?.()
      const report = Schema.decodeUnknownSync(Report)(line)
      waiting.get(report.try)?.(report)
      waiting.delete(report.try)
    })
    child.stderr.on("data", (chunk: Buffer) => process.stderr.write(`[${host.label}] ${chunk.toString()}`))
    yield* Effect.promise(() => started)
    const send = (command: object) => child.stdin.write(`${JSON.stringify(command)}\n`)
    const run = (command: { readonly try: number } & Record<string, unknown>) =>
      Effect.async<Report>((resume) => {
        waiting.set(command.try, (report) => resume(Effect.succeed(report)))
        send(command)
      })
    return { host, run, close: (attempt: number) => Effect.sync(() => send({ close: attempt })) }
  })

const program = Effect.scoped(Effect.gen(function*() {
  const net = yield* makeNetwork
  type Agent = Effect.Effect.Success<ReturnType<typeof startAgent>>
  /** One host per place and side (a pair of the same kind needs two homes). */
  const agents = new Map<string, Agent>()
  let homes = 0
  const agentAt = (place: Place, side: "a" | "b") =>
    Effect.gen(function*() {
      const key = `${place}/${side}`
      const known = agents.get(key)
      if (known !== undefined) return known
      const label = `${side}${++homes}`
      const host = place === "public"
        ? yield* net.addPublicHost(label)
        : yield* Effect.flatMap(net.addHome(`h${label}`, place), (home) => home.addHost(label))
      const agent = yield* startAgent(host)
      agents.set(key, agent)
      return agent
    })

  let attempt = 0
  let seed = 1
  const rows: Array<string> = []
  for (const [initiatorPlace, responderPlace] of PAIRS) {
    const initiator = yield* agentAt(initiatorPlace, "a")
    const responder = yield* agentAt(responderPlace, "b")
    const reports: Array<Report> = []
    for (let i = 0; i < tries; i++) {
      attempt++
      // Fresh identities each try (seeds 1..148, reused round-robin), fresh ports.
      const [initiatorSeed, responderSeed] = [seed, seed + 1]
      seed = seed + 2 > 148 ? 1 : seed + 2
      const [initiatorPort, responderPort] = [punchPort(Math.random()), punchPort(Math.random())]
      const [asked] = yield* Effect.all([
        initiator.run({
          try: attempt,
          seed: initiatorSeed,
          peerSeed: responderSeed,
          role: "Initiator",
          host: responder.host.publicAddress,
          port: responderPort,
          localPort: initiatorPort,
          withinMillis
        }),
        responder.run({
          try: attempt,
          seed: responderSeed,
          peerSeed: initiatorSeed,
          role: "Responder",
          host: initiator.host.publicAddress,
          port: initiatorPort,
          localPort: responderPort,
          withinMillis
        })
      ], { concurrency: "unbounded" })
      yield* responder.close(attempt)
      reports.push(asked)
    }
    const succeeded = reports.filter((report) => report.ok)
    const times = succeeded.map((report) => report.ms).sort((x, y) => x - y)
    // The reason without the connection's name, numbers left out, so equal reasons count once.
    const reasons = [...new Set(reports.filter((report) => !report.ok).map((report) =>
      (report.error ?? "").replace(/^[^:]*: /, "").replace(/\d+/g, "N")
    ))]
    const row = `| ${initiatorPlace} → ${responderPlace} | ${succeeded.length}/${reports.length} | ` +
      `${times.length === 0 ? "–" : `${percentile(times, 50)} / ${percentile(times, 95)}`} | ${reasons.join("; ") || "–"} |`
    rows.push(row)
    console.log(row)
  }
  console.log(`\nhole punches per router pair (${tries} tries each, ${withinMillis} ms to connect)\n`)
  console.log("| initiator → responder | punched | ms to a connection carrying a Ping (p50 / p95) | why the others failed |")
  console.log("|---|---|---|---|")
  for (const row of rows) console.log(row)
}))

const skip = canCreateNamespaces()
if (skip !== undefined) {
  console.log(`bench/holePunch.ts skipped: ${skip}`)
} else {
  Effect.runPromise(program).catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
}
