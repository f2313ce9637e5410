/**
 * `npm run sim`: one simulated run, printed as a summary (JSON with
 * `--json`). Progress and wall-clock figures go to stderr; stdout depends
 * only on the options, so the same seed prints the same bytes.
 *
 *   npm run sim -- --nodes 1000 --seed 7 --k 20 --alpha 3 --churn 0.3 --duration 30m [--json]
 *     [--session 2h] [--warmup 5m] [--lookups 200] [--users 50] [--messages 20]
 *     [--join real|seeded] [--latency 50ms] [--loss 0.01] [--hostile 0.1] [--resolutions 200] [--dead 0.3]
 *     [--nat 0.7]
 *
 * `--hostile` makes that fraction of the nodes (0 to 0.5, or 0% to 50%) lie:
 * forged claims of every user's name, contacts that lead only to other
 * hostile nodes, stores and mail that they drop (see src/sim/Hostile.ts).
 * `--resolutions` (default: as many as `--lookups`) is how many times users
 * resolve other users' names; each answer is classified against the real
 * owner's key, and a name resolved to another key alone is a violation.
 * `--dead` silences that fraction of the nodes for good once users have
 * registered: hosts that stay in every routing table and never answer.
 * `--nat` puts that fraction of the nodes (0 to 1, or 0% to 100%; node 0
 * stays public) behind NATs that drop inbound connections: they learn it
 * from their peers' dial-backs and run in client mode, reached through
 * relay circuits; the summary then splits lookups, publication, delivery
 * and load between reachable nodes and those behind NATs.
 */
import { Effect, Either, Logger, LogLevel, ParseResult, Random, Schema } from "effect"
import { parseArgs } from "node:util"
import { MAX_HOSTILE_FRACTION } from "./Hostile.js"
import { defaultLinks, makeSimLinks } from "./LinkModel.js"
import { defaultSimulationOptions, runSimulation, type SimulationOptions } from "./Simulation.js"
import type { Summary } from "./Summary.js"
import { makeVirtualTime } from "./VirtualTime.js"

const USAGE = `usage: npm run sim -- --nodes 1000 --seed 7 --k 20 --alpha 3 --churn 0.3 --duration 30m [--json]
  [--session 2h] [--warmup 5m] [--lookups 200] [--users 50] [--messages 20]
  [--join real|seeded] [--latency 50ms] [--loss 0.01] [--hostile 0.1] [--resolutions 200] [--dead 0.3]
  [--nat 0.7]
(what each option means: the header of src/sim/main.ts; the simulator: docs/architecture.md, "The services")
`

/** The command line, or a clear message and exit code 2 (usage) instead of a stack trace. */
const parseCommandLine = () => {
  try {
    return parseArgs({ options: simOptions })
  } catch (error) {
    process.stderr.write(`peerchat sim: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
    return process.exit(2)
  }
}

const simOptions = {
    help: { type: "boolean", default: false },
    nodes: { type: "string" },
    seed: { type: "string" },
    k: { type: "string" },
    alpha: { type: "string" },
    churn: { type: "string" },
    session: { type: "string" },
    duration: { type: "string" },
    warmup: { type: "string" },
    lookups: { type: "string" },
    users: { type: "string" },
    messages: { type: "string" },
    join: { type: "string" },
    latency: { type: "string" },
    loss: { type: "string" },
    hostile: { type: "string" },
    resolutions: { type: "string" },
    dead: { type: "string" },
    nat: { type: "string" },
    json: { type: "boolean", default: false }
} as const

const { values: args } = parseCommandLine()
if (args.help) {
  process.stdout.write(USAGE)
  process.exit(0)
}

const fail = (message: string): never => {
  process.stderr.write(`peerchat sim: ${message}\n`)
  process.exit(2)
}

const integer = (name: string, value: string | undefined, fallback: number, min: number, max: number): number => {
  if (value === undefined) return fallback
  const parsed = Number(value)
  if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) fail(`--${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(value)}`)
  return parsed
}

const duration = (name: string, value: string | undefined, fallback: number): number => {
  if (value === undefined) return fallback
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(value)
  if (match === null) return fail(`--${name} must be a duration like 90s, 30m or 2h, got ${JSON.stringify(value)}`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(match[2] ?? "s") as "ms" | "s" | "m" | "h" | "d"]
  return Math.round(Number(match[1]) * unit)
}

const churnFraction = (value: string | undefined): number => {
  if (value === undefined) return 0
  const parsed = Number(value.endsWith("%") ? Number(value.slice(0, -1)) / 100 : value)
  if (!(parsed >= 0 && parsed < 1)) fail(`--churn is the fraction of nodes offline at any time, from 0 to below 1 (or 0% to 99%), got ${JSON.stringify(value)}`)
  return parsed
}

const hostileFraction = (value: string | undefined): number => {
  if (value === undefined) return 0
  const parsed = Number(value.endsWith("%") ? Number(value.slice(0, -1)) / 100 : value)
  if (!(parsed >= 0 && parsed <= MAX_HOSTILE_FRACTION)) {
    fail(`--hostile is the fraction of nodes that are hostile, from 0 to ${MAX_HOSTILE_FRACTION} (or 0% to ${MAX_HOSTILE_FRACTION * 100}%), got ${JSON.stringify(value)}`)
  }
  return parsed
}

const deadFraction = (value: string | undefined): number => {
  if (value === undefined) return 0
  const parsed = Number(value.endsWith("%") ? Number(value.slice(0, -1)) / 100 : value)
  if (!(parsed >= 0 && parsed < 1)) fail(`--dead is the fraction of nodes that never answer, from 0 to below 1 (or 0% to 99%), got ${JSON.stringify(value)}`)
  return parsed
}

/** A fraction from 0 to 1, written as a number or a percentage ("0.7", "70%"). */
const Fraction = Schema.transform(
  Schema.String.pipe(Schema.pattern(/^\d+(\.\d+)?%?$/, { message: () => "expected a number like 0.7 or a percentage like 70%" })),
  Schema.Number.pipe(Schema.between(0, 1, { message: () => "expected a fraction from 0 to 1 (0% to 100%)" })),
  {
    strict: true,
    decode: (text) => (text.endsWith("%") ? Number(text.slice(0, -1)) / 100 : Number(text)),
    encode: (fraction) => String(fraction)
  }
)

const natFraction = (value: string | undefined): number => {
  if (value === undefined) return 0
  const decoded = Schema.decodeUnknownEither(Fraction)(value)
  return Either.isRight(decoded)
    ? decoded.right
    : fail(`--nat is the fraction of nodes behind NATs: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`)
}

const defaults = defaultSimulationOptions
const lookups = integer("lookups", args.lookups, defaults.lookups, 0, 1_000_000)
const options: SimulationOptions = {
  nodes: integer("nodes", args.nodes, defaults.nodes, 2, 100_000),
  seed: integer("seed", args.seed, defaults.seed, 0, 2 ** 31 - 1),
  k: integer("k", args.k, defaults.k, 1, 64),
  alpha: integer("alpha", args.alpha, defaults.alpha, 1, 64),
  churn: churnFraction(args.churn),
  medianSessionMs: duration("session", args.session, defaults.medianSessionMs),
  sessionSigma: defaults.sessionSigma,
  durationMs: duration("duration", args.duration, defaults.durationMs),
  warmupMs: duration("warmup", args.warmup, defaults.warmupMs),
  lookups,
  users: integer("users", args.users, defaults.users, 2, 100_000),
  messages: integer("messages", args.messages, defaults.messages, 0, 100_000),
  join: args.join === undefined
    ? defaults.join
    : args.join === "real" || args.join === "seeded"
    ? args.join
    : fail(`--join must be "real" or "seeded", got ${JSON.stringify(args.join)}`),
  hostile: hostileFraction(args.hostile),
  resolutions: integer("resolutions", args.resolutions, lookups, 0, 1_000_000),
  dead: deadFraction(args.dead),
  nat: natFraction(args.nat)
}

const latencyMs = duration("latency", args.latency, defaultLinks.latencyMedianMs)
const loss = args.loss === undefined ? defaultLinks.loss : Number(args.loss)
if (!(loss >= 0 && loss < 1)) fail(`--loss must be a probability from 0 to below 1, got ${JSON.stringify(args.loss)}`)

const render = (summary: Summary): string => {
  const { lookups, offlineDelivery: offline, parameters, resolutions: names } = summary
  const spread = (s: { readonly p50: number; readonly p95: number; readonly max: number; readonly p99?: number }, unit = "") =>
    `p50 ${s.p50}${unit}, p95 ${s.p95}${unit}${s.p99 === undefined ? "" : `, p99 ${s.p99}${unit}`}, max ${s.max}${unit}`
  return [
    `peerchat simulation: ${parameters.nodes} nodes, seed ${parameters.seed}, k=${parameters.k}, alpha=${parameters.alpha}, churn ${parameters.churn * 100}%` +
    (parameters.hostileNodes === 0 ? "" : `, ${parameters.hostileNodes} hostile nodes (${Number((parameters.hostile * 100).toFixed(2))}%)`) +
    (parameters.dead === 0 ? "" : `, ${Number((parameters.dead * 100).toFixed(2))}% silently dead`),
    `  lookups        ${lookups.found}/${lookups.count} found (${(lookups.successRate * 100).toFixed(2)} %)` +
    (parameters.hostileNodes === 0 ? "" : `, ${lookups.forged} of them a hostile node's forged claim`),
    `  hops           ${spread(lookups.hops)}`,
    `  latency        ${spread(lookups.latencyMs, " ms")} (virtual)`,
    `  messages       mean ${lookups.messages.mean}, ${spread(lookups.messages)}`,
    `  names          ${names.reachedOwner}/${names.count} resolutions name the owner's key (${(names.reachedOwnerRate * 100).toFixed(2)} %): ` +
    `${names.owner} sole owner, ${names.conflictWithOwner} conflict with the owner, ${names.conflictWithoutOwner} conflict without, ` +
    `${names.hijacked} hijacked, ${names.notFound} not found`,
    `  name latency   ${spread(names.latencyMs, " ms")} (virtual)`,
    `  offline mail   ${offline.delivered}/${offline.sent} delivered (${(offline.deliveryRate * 100).toFixed(2)} %), ${offline.within5s} within 5 s of the recipient's return`,
    `  mail delay     ${spread(offline.delayAfterOnlineMs, " ms")} after the recipient came back`,
    `  load           ${summary.rpcsPerNodePerSecond} RPCs per node per second (${
      Object.entries(summary.rpcsByKind).map(([kind, rate]) => `${kind} ${rate}`).join(", ")
    })`,
    `  per lookup     ${summary.rpcsPerLookup} RPCs (its queries and the dial-backs and pings they set off)`,
    `  by cause       RPCs per node per second:\n${
      Object.entries(summary.rpcsByCause).sort(([, a], [, b]) => b - a).map(([cause, rate]) => `    ${rate.toFixed(4)}  ${cause}`).join("\n")
    }`,
    ...renderReachability(summary),
    summary.violations.length === 0
      ? "  invariants     all held"
      : `  invariants     ${summary.violations.length} violated:\n${summary.violations.map((v) => `    - ${v}`).join("\n")}`
  ].join("\n")
}

/** The lines that set reachable nodes and nodes behind NATs apart. */
const renderReachability = (summary: Summary): ReadonlyArray<string> => {
  const { load, liveDelivery, lookups, nattedNodes, offlineDelivery, publication } = summary.reachability
  const percent = (rate: number) => `${(rate * 100).toFixed(2)} %`
  const ms = (s: { readonly p50: number; readonly p95: number; readonly max: number }) => `p50 ${s.p50} ms, p95 ${s.p95} ms, max ${s.max} ms`
  const lookupLine = (label: string, side: typeof lookups.fromReachable) =>
    `    ${label} ${side.found}/${side.count} found (${percent(side.successRate)}), ${ms(side.latencyMs)}, ${side.rpcsPerLookup} RPCs each`
  const publicationLine = (label: string, side: typeof publication.ofReachable) =>
    `    ${label} ${side.users} users: ${side.meanHolders}/${side.closest} of the k closest reachable nodes hold the record on average, ` +
    `${side.fullyStored} fully stored, ${side.notStored} not stored, ${side.listingRelays} list relays`
  const liveLine = (label: string, side: typeof liveDelivery.toReachable) =>
    `    ${label} ${side.delivered}/${side.sent} delivered (${percent(side.deliveryRate)}): ${side.direct} direct, ` +
    `${side.relayed} through a relay, ${side.fromMailbox} from a mailbox; ${ms(side.latencyMs)}`
  const loadLine = (side: (typeof load)[number]) =>
    `    ${side.side === "reachable" ? "reachable " : "behind NAT"} ${side.nodes} nodes hold ${side.records} records (max ${side.maxRecords}) ` +
    `and ${side.mail} mails (max ${side.maxMail}) for others, serve ${side.reservations} relay reservations (max ${side.maxReservations}), ` +
    `relayed ${side.relayed} messages`
  return [
    `  reachability   ${nattedNodes} nodes behind NATs (${percent(summary.reachability.nat)}); NAT'd users are reached through relay circuits`,
    `  lookups by asker:`,
    lookupLine("reachable ", lookups.fromReachable),
    lookupLine("behind NAT", lookups.fromNatted),
    `  publication by owner (at the start of the window):`,
    publicationLine("reachable ", publication.ofReachable),
    publicationLine("behind NAT", publication.ofNatted),
    `  live messages by recipient (both users online, followed for 2 min):`,
    liveLine("reachable ", liveDelivery.toReachable),
    liveLine("behind NAT", liveDelivery.toNatted),
    `  offline mail by recipient: reachable ${offlineDelivery.toReachable.delivered}/${offlineDelivery.toReachable.sent}, ` +
    `behind NAT ${offlineDelivery.toNatted.delivered}/${offlineDelivery.toNatted.sent} delivered`,
    `  load at the end:`,
    ...load.map(loadLine)
  ]
}

/** Heap in use after a full collection when the run has `--expose-gc` (npm run sim does), else as it is. */
const heapUsed = (): number => {
  const collect = (globalThis as { readonly gc?: () => void }).gc
  collect?.()
  return process.memoryUsage().heapUsed
}
const heapBefore = heapUsed()
let heapAtEnd = heapBefore
const wallStart = performance.now()
const time = makeVirtualTime(Date.UTC(2026, 0, 1))
const program = Effect.gen(function*() {
  const links = yield* makeSimLinks({
    ...defaultLinks,
    latencyMedianMs: latencyMs,
    loss
  })
  return yield* runSimulation(links.network, options, {
    rpcCounts: links.rpcCountsByKind,
    causes: links.causes,
    progress: (line) => process.stderr.write(`[sim] ${line}\n`),
    measured: () => {
      heapAtEnd = heapUsed()
    }
  })
}).pipe(
  Effect.scoped,
  Effect.withRandom(Random.make(options.seed)),
  Logger.withMinimumLogLevel(LogLevel.None)
)
const exit = time.run(program)
if (exit._tag === "Failure") {
  process.stderr.write(`peerchat sim: the run failed (seed ${options.seed}): ${String(exit.cause)}\n`)
  process.exit(1)
}
const summary = exit.value
const wallSeconds = (performance.now() - wallStart) / 1000
const virtualSeconds = (time.now() - Date.UTC(2026, 0, 1)) / 1000
const heapPerNode = Math.max(0, heapAtEnd - heapBefore) / options.nodes
process.stdout.write(options && args.json ? `${JSON.stringify(summary, null, 2)}\n` : `${render(summary)}\n`)
process.stderr.write(
  `[sim] ${virtualSeconds.toFixed(0)} s of virtual time in ${wallSeconds.toFixed(1)} s of wall time ` +
    `(speed-up ${(virtualSeconds / wallSeconds).toFixed(1)}x), heap ${(heapPerNode / 1024).toFixed(1)} KiB per node, ` +
    `${time.stats().timers} timers fired\n`
)
if (summary.violations.length > 0) {
  process.stderr.write(`peerchat sim: invariants were violated; reproduce with --seed ${options.seed}\n`)
  process.exitCode = 1
}
