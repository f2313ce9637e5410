/**
 * `npm run sim`: one simulated run, printed as a summary (JSON with
 * `--json`). Progress and wall-clock figures go to stderr; stdout depends
 * only on the options, so the same seed prints the same bytes. The options,
 * their meaning and defaults are listed by `npm run sim -- --help` (from
 * `simCommand` below); the simulator itself: docs/architecture.md, "The
 * services". A malformed command line is one line on stderr and exit code
 * 2; a run that violates an invariant prints the seed and exits 1.
 */
import { Duration, Effect, Logger, LogLevel, Option, Random } from "effect"
import {
  durationMillis,
  fractionUpTo,
  integerIn,
  oneOf,
  readCommandLine,
  switchOption,
  valueOption
} from "./CommandLine.js"
import { defaultLinks, defaultSimulationOptions, MAX_HOSTILE_FRACTION, type SimulationOptions } from "./SimulationOptions.js"
import type { Summary } from "./Summary.js"

const defaults = defaultSimulationOptions

/** A duration as `--help` shows a default (`2h`, `50ms`), in a form the options read back. */
const shown = (ms: number): string => Duration.format(Duration.millis(ms))

const simCommand = {
  name: "sim",
  description: "One Peerchat network of real nodes on a simulated network, in virtual time, replayable from its seed: " +
    "nodes join, users register names, then lookups, name resolutions and offline mail are measured during a window. " +
    "Prints a summary (lookups, names, mail, load and what caused it, invariants) on stdout; progress, wall-clock " +
    "time and heap per node on stderr. Exits 1 when an invariant is violated, with the seed that replays the run.",
  options: {
    nodes: valueOption("nodes", "N", `how many nodes (2 to 100000; default ${defaults.nodes})`, integerIn(2, 100_000)),
    seed: valueOption(
      "seed",
      "S",
      `the seed of every random choice: the same seed and options replay the same run (0 to ${2 ** 31 - 1}; default ${defaults.seed})`,
      integerIn(0, 2 ** 31 - 1)
    ),
    k: valueOption("k", "K", `bucket size, and how many nodes store each record (1 to 64; default ${defaults.k})`, integerIn(1, 64)),
    alpha: valueOption("alpha", "A", `queries a lookup keeps in flight (1 to 64; default ${defaults.alpha})`, integerIn(1, 64)),
    churn: valueOption(
      "churn",
      "F",
      "fraction of the nodes offline at any time, as 0.3 or 30%, from 0 to below 1 (default 0: no churn)",
      fractionUpTo(1, false)
    ),
    session: valueOption(
      "session",
      "DURATION",
      `median online session under churn (log-normal; default ${shown(defaults.medianSessionMs)})`,
      durationMillis
    ),
    duration: valueOption("duration", "DURATION", `length of the measurement window (default ${shown(defaults.durationMs)})`, durationMillis),
    warmup: valueOption(
      "warmup",
      "DURATION",
      `virtual time between the end of joining and registering (when churn begins) and the window (default ${shown(defaults.warmupMs)})`,
      durationMillis
    ),
    lookups: valueOption(
      "lookups",
      "N",
      `lookups of users' records during the window, at random times (0 to 1000000; default ${defaults.lookups})`,
      integerIn(0, 1_000_000)
    ),
    users: valueOption(
      "users",
      "N",
      `registered users: the targets of lookups and name resolutions (2 to 100000; default ${defaults.users})`,
      integerIn(2, 100_000)
    ),
    messages: valueOption(
      "messages",
      "N",
      `messages of the offline-delivery experiment, each from one user to another who is offline (0 to 100000; default ${defaults.messages})`,
      integerIn(0, 100_000)
    ),
    join: valueOption(
      "join",
      "real|seeded",
      `how the network forms: real, each node joins through up to three earlier ones (the full join); seeded, routing ` +
        `tables start filled as an established network's, for large runs (default ${defaults.join})`,
      oneOf(["real", "seeded"])
    ),
    latency: valueOption(
      "latency",
      "DURATION",
      `median one-way latency of a link (log-normal; default ${shown(defaultLinks.latencyMedianMs)})`,
      durationMillis
    ),
    loss: valueOption(
      "loss",
      "P",
      `probability that a link drops a message, as 0.01 or 1%, from 0 to below 1 (default ${defaultLinks.loss})`,
      fractionUpTo(1, false)
    ),
    hostile: valueOption(
      "hostile",
      "F",
      `fraction of the nodes that lie, from 0 to ${MAX_HOSTILE_FRACTION} (or ${MAX_HOSTILE_FRACTION * 100}%): forged claims ` +
        "of every user's name, contacts that lead only to other hostile nodes, stores and mail dropped (default 0)",
      fractionUpTo(MAX_HOSTILE_FRACTION, true)
    ),
    resolutions: valueOption(
      "resolutions",
      "N",
      "name resolutions of users by other users during the window, each classified against the real owner's key; " +
        "a name resolved to another key alone is a violation (0 to 1000000; default: as many as --lookups)",
      integerIn(0, 1_000_000)
    ),
    dead: valueOption(
      "dead",
      "F",
      "fraction of the nodes that go silent for good once users registered: still in every routing table, they never " +
        "answer (0 to below 1, or a percentage; default 0)",
      fractionUpTo(1, false)
    ),
    nat: valueOption(
      "nat",
      "F",
      "fraction of the nodes behind NATs that drop inbound connections (0 to 1, or 0% to 100%; node 0 stays public): " +
        "they learn it from their peers' dial-backs and are reached through relay circuits; the summary then splits " +
        "reachable nodes from those behind NATs (default 0)",
      fractionUpTo(1, true)
    ),
    "probe-quiet-peers": switchOption(
      "probe-quiet-peers",
      "every node pings its quietest contacts as a real node does (every 30 s, 8 a round, up to 96 while probes " +
        "fail), so silent peers leave the routing tables; off by default, as it adds traffic the protocol itself does not send"
    ),
    json: switchOption("json", "print the summary as JSON on stdout (the same bytes for the same seed and options)")
  },
  examples: [
    "npm run sim -- --nodes 1000 --seed 7 --k 20 --alpha 3 --churn 0.3 --duration 30m --json",
    "npm run sim -- --nodes 1000 --join seeded --dead 0.3",
    "npm run sim -- --nodes 100 --seed 3 --hostile 0.1 --nat 70%"
  ]
}

const args = await readCommandLine(simCommand, process.argv.slice(2))
const given = <A>(value: Option.Option<A>, fallback: A): A => Option.getOrElse(value, () => fallback)

const lookups = given(args.lookups, defaults.lookups)
const options: SimulationOptions = {
  nodes: given(args.nodes, defaults.nodes),
  seed: given(args.seed, defaults.seed),
  k: given(args.k, defaults.k),
  alpha: given(args.alpha, defaults.alpha),
  churn: given(args.churn, defaults.churn),
  medianSessionMs: given(args.session, defaults.medianSessionMs),
  sessionSigma: defaults.sessionSigma,
  durationMs: given(args.duration, defaults.durationMs),
  warmupMs: given(args.warmup, defaults.warmupMs),
  lookups,
  users: given(args.users, defaults.users),
  messages: given(args.messages, defaults.messages),
  join: given(args.join, defaults.join),
  hostile: given(args.hostile, defaults.hostile),
  resolutions: given(args.resolutions, lookups),
  dead: given(args.dead, defaults.dead),
  nat: given(args.nat, defaults.nat),
  probeQuietPeers: args["probe-quiet-peers"]
}
const latencyMs = given(args.latency, defaultLinks.latencyMedianMs)
const loss = given(args.loss, defaultLinks.loss)

const render = (summary: Summary): string => {
  const { lookups, offlineDelivery: offline, parameters, resolutions: names } = summary
  const spread = (s: { readonly p50: number; readonly p95: number; readonly max: number; readonly p99?: number }, unit = "") =>
    `p50 ${s.p50}${unit}, p95 ${s.p95}${unit}${s.p99 === undefined ? "" : `, p99 ${s.p99}${unit}`}, max ${s.max}${unit}`
  return [
    `peerchat simulation: ${parameters.nodes} nodes, seed ${parameters.seed}, k=${parameters.k}, alpha=${parameters.alpha}, churn ${parameters.churn * 100}%` +
    (parameters.hostileNodes === 0 ? "" : `, ${parameters.hostileNodes} hostile nodes (${Number((parameters.hostile * 100).toFixed(2))}%)`) +
    (parameters.dead === 0 ? "" : `, ${Number((parameters.dead * 100).toFixed(2))}% silently dead`) +
    (parameters.probeQuietPeers ? ", quiet peers probed" : ""),
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
// Loaded once the command line is read: --help and a malformed line answer without the simulator.
const [{ makeSimLinks }, { runSimulation }, { makeVirtualTime }] = await Promise.all([
  import("./LinkModel.js"),
  import("./Simulation.js"),
  import("./VirtualTime.js")
])
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
process.stdout.write(args.json ? `${JSON.stringify(summary, null, 2)}\n` : `${render(summary)}\n`)
process.stderr.write(
  `[sim] ${virtualSeconds.toFixed(0)} s of virtual time in ${wallSeconds.toFixed(1)} s of wall time ` +
    `(speed-up ${(virtualSeconds / wallSeconds).toFixed(1)}x), heap ${(heapPerNode / 1024).toFixed(1)} KiB per node, ` +
    `${time.stats().timers} timers fired\n`
)
if (summary.violations.length > 0) {
  process.stderr.write(`peerchat sim: invariants were violated; reproduce with --seed ${options.seed}\n`)
  process.exitCode = 1
}
