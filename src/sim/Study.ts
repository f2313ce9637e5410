/**
 * The parameter study of issue 5: how k (bucket size and replication) and
 * alpha (queries in flight) shape lookup hops, latency, success and load, on
 * simulated networks of N nodes, with and without churn. For each N and k
 * one network is built (routing tables seeded as a long-running network's,
 * users registered), and every alpha is measured on it — first without
 * churn, then with churn — so the alphas compare on the same topology:
 *
 * 1. build: N nodes start with seeded routing tables, `min(N, users)` users
 *    register (concurrently, so registration takes seconds of virtual time);
 * 2. settle, then a quiet window with no experiment traffic: the background
 *    RPC rate (maintenance, mailbox pulls, routing pings);
 * 3. lookups: for every alpha, `lookupsPerAlpha(N)` lookups at random times
 *    in one window, the alphas interleaved (the link model has no congestion,
 *    so they do not slow each other, and all see the same network state);
 *    the RPC rate over that window less the background, per lookup, is
 *    what a lookup costs the network (`rpcsPerLookup`);
 * 4. churn starts (a fraction of the nodes offline at any time, log-normal
 *    sessions); after a warm-up whose last part is the quiet window under
 *    churn, the lookups again.
 *
 * Invariants are checked after each half. Every network runs in a virtual
 * time of its own (`runNetwork`), seeded from the study's seed, N and k, so
 * any one network replays alone with the same rows. The rows, the CSV, the
 * charts and the Markdown table are pure functions of the runs. Method,
 * choices and results: docs/study/README.md.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Either, Exit, Logger, LogLevel, ParseResult, Random, Schema, type Scope } from "effect"
import { type Username, userKey } from "../core/Username.js"
import { makeSimLinks, type SimLinks } from "./LinkModel.js"
import {
  buildNetwork,
  checkInvariants,
  type LookupSample,
  runLookups,
  type SimNetwork,
  startChurn
} from "./Simulation.js"
import { countsSince, type RpcCauseCounts } from "./RpcCauses.js"
import { percentile } from "./Summary.js"
import { type LineChart, PALETTE, renderSmallMultiples } from "./SvgChart.js"
import { makeVirtualTime, SimulationStalled } from "./VirtualTime.js"
import type { StudyPlan } from "./StudyPlan.js"

/** One cell of the sweep: the lookups of one alpha on the (N, k) network, with or without churn. */
export interface StudyRow {
  readonly nodes: number
  readonly k: number
  readonly alpha: number
  /** Fraction of the nodes offline at any time (0: no churn). */
  readonly churn: number
  readonly lookups: number
  readonly successRate: number
  /** Hops of the lookups that found the value. */
  readonly hopsP50: number
  readonly hopsP95: number
  readonly hopsMax: number
  /** Virtual ms from start to end of each lookup (found or not). */
  readonly latencyP50: number
  readonly latencyP95: number
  readonly latencyP99: number
  /** Requests sent per lookup. */
  readonly messagesMean: number
  readonly messagesP95: number
  /** All RPCs per online node per second over the lookup window (the alphas share it). */
  readonly rpcsPerNodePerSecond: number
  /** RPCs per online node per second over the quiet window before it (same churn state). */
  readonly backgroundRpcsPerNodePerSecond: number
  /**
   * RPCs the window's lookups caused, per lookup: the window's RPCs less the
   * background rate's share, over the lookups of every alpha (they share the
   * window). More than `messagesMean`: answers make nodes check their
   * buckets (pings) too. Background + rpcsPerLookup · r is the load at r
   * lookups per node per second.
   */
  readonly rpcsPerLookup: number
  /** Nodes online on average during the lookup window. */
  readonly onlineNodes: number
}

/** What one (N, k) network gave. */
export interface NetworkResult {
  readonly nodes: number
  readonly k: number
  readonly rows: ReadonlyArray<StudyRow>
  /** Invariant violations and failures, each naming N, k and the seed. */
  readonly violations: ReadonlyArray<string>
  /** The RPCs of each measured window by cause (see `RpcCauses`), for the progress output. */
  readonly causes: ReadonlyArray<WindowCauses>
}

/** What caused the RPCs of one measured window. */
export interface WindowCauses {
  readonly window: string
  readonly seconds: number
  /** Online nodes, mean over the window. */
  readonly online: number
  readonly counts: RpcCauseCounts
}

/** Progress of a network: what it is doing and how far it is (0 to 1, for estimates; exactly 1 once measuring is over and it stops). */
export interface NetworkProgress {
  readonly phase: string
  readonly fraction: number
}

/**
 * A stretch of a network's run, for progress estimates: the share of the
 * run's CPU it spans (`from` to `to`, measured on a 10,000-node network with
 * churn: churn is the dear part) and how much virtual time it is planned to
 * take (0: not paced by virtual time).
 */
interface Phase {
  readonly name: string
  readonly from: number
  readonly to: number
  readonly plannedMs: number
  /** Virtual time it began at. */
  readonly startedAt: number
}

const round = (value: number, digits: number): number => {
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

/** Registers `count` users on distinct random nodes, a few at a time, in a fixed order. */
const registerUsers = (net: SimNetwork, count: number): Effect.Effect<ReadonlyArray<{ readonly index: number; readonly username: Username }>> =>
  Effect.gen(function*() {
    const indices: Array<number> = []
    const taken = new Set<number>()
    while (indices.length < Math.min(count, net.sessions.length)) {
      const index = yield* Random.nextIntBetween(0, net.sessions.length)
      if (taken.has(index)) continue
      taken.add(index)
      indices.push(index)
    }
    const registered = yield* Effect.forEach(indices, (index, position) => {
      const node = net.sessions[index]
      if (node === undefined) return Effect.succeed(undefined)
      return node.directory.register(`user-${position}`).pipe(
        Effect.either,
        Effect.tap((result) => Either.isLeft(result) ? net.progress(`user-${position} could not register: ${result.left.message}`) : Effect.void),
        Effect.map((result) => Either.isRight(result) ? { index, username: result.right.record.username } : undefined)
      )
    }, { concurrency: 16 })
    return registered.filter((user): user is { readonly index: number; readonly username: Username } => user !== undefined)
  })

/**
 * Runs `body` and measures the RPCs sent meanwhile per online node per
 * second, the online count sampled every 5 s (it moves under churn).
 */
const measured = <A>(
  links: SimLinks,
  net: SimNetwork,
  body: Effect.Effect<A>
): Effect.Effect<{
  readonly value: A
  readonly rate: number
  readonly online: number
  readonly rpcs: number
  readonly seconds: number
  readonly causes: RpcCauseCounts
}> =>
  Effect.scoped(Effect.gen(function*() {
    const online: Array<number> = [net.online().length]
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(
      Effect.sleep(Duration.seconds(5)),
      Effect.sync(() => online.push(net.online().length))
    )))
    const before = links.rpcCount()
    const causesBefore = links.causes.counts()
    const startedAt = yield* Clock.currentTimeMillis
    const value = yield* body
    const seconds = ((yield* Clock.currentTimeMillis) - startedAt) / 1000
    online.push(net.online().length)
    const meanOnline = online.reduce((sum, count) => sum + count, 0) / online.length
    const rpcs = links.rpcCount() - before
    const rate = seconds <= 0 || meanOnline <= 0 ? 0 : rpcs / meanOnline / seconds
    return { value, rate, online: meanOnline, rpcs, seconds, causes: countsSince(causesBefore, links.causes.counts()) }
  }))

/** The row of one alpha's lookups. */
const rowOf = (
  cell: { readonly nodes: number; readonly k: number; readonly alpha: number; readonly churn: number },
  samples: ReadonlyArray<LookupSample>,
  load: { readonly rate: number; readonly background: number; readonly online: number }
): StudyRow => {
  const found = samples.filter((sample) => sample.found)
  const hops = found.map((sample) => sample.hops)
  const latencies = samples.map((sample) => sample.latencyMs)
  const messages = samples.map((sample) => sample.messages)
  const mean = (values: ReadonlyArray<number>) => values.length === 0 ? 0 : values.reduce((sum, value) => sum + value, 0) / values.length
  return {
    ...cell,
    lookups: samples.length,
    successRate: samples.length === 0 ? 0 : round(found.length / samples.length, 5),
    hopsP50: percentile(hops, 50),
    hopsP95: percentile(hops, 95),
    hopsMax: hops.length === 0 ? 0 : Math.max(...hops),
    latencyP50: round(percentile(latencies, 50), 1),
    latencyP95: round(percentile(latencies, 95), 1),
    latencyP99: round(percentile(latencies, 99), 1),
    messagesMean: messages.length === 0 ? 0 : round(messages.reduce((sum, count) => sum + count, 0) / messages.length, 2),
    messagesP95: percentile(messages, 95),
    rpcsPerNodePerSecond: round(load.rate, 4),
    backgroundRpcsPerNodePerSecond: round(load.background, 4),
    rpcsPerLookup: round(mean(samples.map((sample) => sample.rpcs)), 2),
    onlineNodes: round(load.online, 1)
  }
}

/** The virtual time a network's phases take (registration and lookup tails excluded). */
const plannedMs = (plan: StudyPlan): number =>
  plan.settleMs + plan.quietWindowMs + 2 * plan.lookupWindowMs + plan.churnWarmupMs

/**
 * One (N, k) network of the study, as an effect for a virtual time of its
 * own: build, quiet window, lookups, churn, quiet window, lookups, with
 * invariants checked after each half. `onPhase` hears each phase as it
 * begins (see `runNetwork` for the progress made of them).
 */
const studyNetwork = (
  plan: StudyPlan,
  nodes: number,
  k: number,
  onPhase: (phase: Phase) => void
): Effect.Effect<NetworkResult, never, Scope.Scope> =>
  Effect.gen(function*() {
    const tell = (name: string, from: number, to: number, plannedMs: number) =>
      Effect.map(Clock.currentTimeMillis, (startedAt) => onPhase({ name, from, to, plannedMs, startedAt }))
    const links = yield* makeSimLinks(plan.links)
    const net = yield* buildNetwork(links.network, { nodes, seed: plan.seed, k, alpha: 3, users: 0, join: "seeded" }, {
      progress: (line) => {
        const started = /^started (\d+)\/(\d+)/.exec(line)
        const share = started === null ? 0.12 : 0.11 * Number(started[1]) / Number(started[2])
        if (!line.startsWith("registered 0 users")) onPhase({ name: line, from: share, to: share, plannedMs: 0, startedAt: 0 })
      }
    }, plan.tuning)
    yield* tell(`registering ${Math.min(nodes, plan.users)} users`, 0.12, 0.12, 0)
    const users = yield* registerUsers(net, plan.users)
    links.causes.noteRecordKeys(users.map((user) => userKey(user.username)))
    const study: SimNetwork = { ...net, users }
    const violations: Array<string> = []
    const where = `N=${nodes}, k=${k}, seed ${plan.seed}`
    if (users.length === 0) violations.push(`${where}: no user could register`)
    const check = (phase: string) =>
      Effect.map(checkInvariants(study), (found) => {
        for (const line of found) violations.push(`${where}, ${phase}: ${line}`)
      })

    const count = plan.lookupsPerAlpha(nodes)
    const causes: Array<WindowCauses> = []
    const noteCauses = (window: string, measurement: { readonly seconds: number; readonly online: number; readonly causes: RpcCauseCounts }) =>
      causes.push({ window, seconds: measurement.seconds, online: round(measurement.online, 1), counts: measurement.causes })
    const lookupPhase = (churn: number) =>
      Effect.gen(function*() {
        const window = yield* measured(links, study, Effect.all(
          plan.alphas.map((alpha) => runLookups(study, { count, windowMs: plan.lookupWindowMs, alpha })),
          { concurrency: "unbounded" }
        ))
        noteCauses(`lookups, ${churn === 0 ? "no churn" : `churn ${churn * 100} %`}`, window)
        const { online, rate, rpcs, seconds, value } = window
        // The background is the same window's RPCs that no lookup caused: a quiet window before it
        // sees another stretch of churn (rejoins vary from minute to minute), and the difference
        // of the two once passed for the lookups' cost (269 RPCs per lookup at 10,000 nodes).
        const caused = value.reduce((sum, samples) => sum + samples.reduce((total, sample) => total + sample.rpcs, 0), 0)
        const background = seconds <= 0 || online <= 0 ? 0 : Math.max(0, rpcs - caused) / online / seconds
        return plan.alphas.map((alpha, position) => rowOf({ nodes, k, alpha, churn }, value[position] ?? [], { rate, background, online }))
      })

    yield* tell("settling", 0.14, 0.15, plan.settleMs)
    yield* Effect.sleep(Duration.millis(plan.settleMs))
    yield* tell("quiet window (background load)", 0.15, 0.16, plan.quietWindowMs)
    noteCauses("quiet, no churn", yield* measured(links, study, Effect.sleep(Duration.millis(plan.quietWindowMs))))
    yield* tell(`${count} lookups per alpha, no churn`, 0.16, 0.24, plan.lookupWindowMs)
    const calm = yield* lookupPhase(0)
    yield* check("without churn")

    const warmupMs = Math.max(0, plan.churnWarmupMs - plan.quietWindowMs)
    yield* tell(`churn ${plan.churnFraction * 100} %: warming up`, 0.24, 0.52, warmupMs)
    yield* startChurn(study, {
      fraction: plan.churnFraction,
      medianSessionMs: plan.medianSessionMs,
      sigma: plan.sessionSigma,
      exclude: new Set()
    })
    yield* Effect.sleep(Duration.millis(warmupMs))
    yield* tell("quiet window under churn", 0.52, 0.66, plan.quietWindowMs)
    noteCauses(
      `quiet, churn ${plan.churnFraction * 100} %`,
      yield* measured(links, study, Effect.sleep(Duration.millis(plan.quietWindowMs)))
    )
    yield* tell(`${count} lookups per alpha, churn`, 0.66, 0.95, plan.lookupWindowMs)
    const churned = yield* lookupPhase(plan.churnFraction)
    yield* check("with churn")
    yield* tell("stopping the network", 1, 1, 0)
    return { nodes, k, rows: [...calm, ...churned], violations, causes }
  })

/** The seed of Effect's `Random` for one network: the study's seed, N and k (strings hash deterministically). */
export const networkRandomSeed = (seed: number, nodes: number, k: number): string => `peerchat-study/${seed}/${nodes}/${k}`

/** Virtual start of every network (as `npm run sim`). */
const EPOCH = Date.UTC(2026, 0, 1)

/**
 * Runs the (N, k) network of `plan` in a virtual time of its own and
 * returns its rows; a failed or stalled run comes back as a violation. The
 * virtual time and every node are garbage once it returns. It hands the
 * event loop back every 100 ms of wall time (`runPromise`), so progress
 * output and test runners keep going during long runs.
 */
export const runNetwork = async (
  plan: StudyPlan,
  nodes: number,
  k: number,
  progress: (update: NetworkProgress) => void = () => {}
): Promise<NetworkResult> => {
  const time = makeVirtualTime(EPOCH)
  const where = `N=${nodes}, k=${k}, seed ${plan.seed}`
  let phase: Phase = { name: "building", from: 0, to: 0, plannedMs: 0, startedAt: EPOCH }
  try {
    const exit = await time.runPromise(
      studyNetwork(plan, nodes, k, (next) => {
        phase = next
        progress({ phase: next.name, fraction: next.from })
      }).pipe(
        Effect.scoped,
        Effect.withRandom(Random.make(networkRandomSeed(plan.seed, nodes, k))),
        Logger.withMinimumLogLevel(LogLevel.None)
      ),
      {
        // Far beyond the plan: only a run that never ends meets it.
        limitMs: plannedMs(plan) + Duration.toMillis(Duration.hours(6)),
        onAdvance: (now) => {
          if (phase.plannedMs <= 0) return
          const done = Math.min(1, (now - phase.startedAt) / phase.plannedMs)
          progress({ phase: phase.name, fraction: phase.from + (phase.to - phase.from) * done })
        }
      }
    )
    if (Exit.isSuccess(exit)) return exit.value
    return { nodes, k, rows: [], violations: [`${where}: the run failed: ${String(exit.cause)}`], causes: [] }
  } catch (error) {
    if (error instanceof SimulationStalled) return { nodes, k, rows: [], violations: [`${where}: ${error.message}`], causes: [] }
    throw error
  }
}

/** Every (N, k) network of a plan, in sweep order. */
export const studyCells = (plan: StudyPlan): ReadonlyArray<{ readonly nodes: number; readonly k: number }> =>
  plan.nodes.flatMap((nodes) => plan.ks.map((k) => ({ nodes, k })))

/** Hooks of `runStudy` (wall-clock side effects stay with the caller). */
export interface StudyHooks {
  /** Network `index` of `count` (N, k) reports progress. */
  readonly progress?: (network: { readonly index: number; readonly count: number; readonly nodes: number; readonly k: number }, update: NetworkProgress) => void
  /** Network `index` finished (and its virtual time is released): a place to collect garbage and weigh the heap. */
  readonly finished?: (result: NetworkResult, index: number) => void
}

/** Runs the sweep, one network after the other (`runNetwork`); returns every row and violation in sweep order. */
export const runStudy = async (
  plan: StudyPlan,
  hooks: StudyHooks = {}
): Promise<{ readonly rows: ReadonlyArray<StudyRow>; readonly violations: ReadonlyArray<string> }> => {
  const cells = studyCells(plan)
  const rows: Array<StudyRow> = []
  const violations: Array<string> = []
  for (const [index, { k, nodes }] of cells.entries()) {
    const network = { index, count: cells.length, nodes, k }
    const result = await runNetwork(plan, nodes, k, (update) => hooks.progress?.(network, update))
    rows.push(...result.rows)
    violations.push(...result.violations)
    hooks.finished?.(result, index)
  }
  return { rows, violations }
}

// ---------------------------------------------------------------------------
// Output: CSV, charts, Markdown

/** The CSV columns, in order (the `StudyRow` fields). */
export const CSV_COLUMNS: ReadonlyArray<keyof StudyRow> = [
  "nodes",
  "k",
  "alpha",
  "churn",
  "lookups",
  "successRate",
  "hopsP50",
  "hopsP95",
  "hopsMax",
  "latencyP50",
  "latencyP95",
  "latencyP99",
  "messagesMean",
  "messagesP95",
  "rpcsPerNodePerSecond",
  "backgroundRpcsPerNodePerSecond",
  "rpcsPerLookup",
  "onlineNodes"
]

/** A CSV cell of a row: a finite number. */
const CsvNumber = Schema.compose(Schema.NumberFromString, Schema.Number.pipe(Schema.finite()))

/** One CSV line's cells, by column, as a row. */
const StudyRowCells = Schema.Struct(
  Object.fromEntries(CSV_COLUMNS.map((column) => [column, CsvNumber])) as { readonly [K in keyof StudyRow]: typeof CsvNumber }
)
const decodeRowCells = Schema.decodeUnknownEither(StudyRowCells)

/**
 * Rows from a CSV that `toCsv` wrote (to redraw the charts without rerunning
 * the networks): the header must name the columns in order, and every cell
 * must be a finite number; otherwise the first problem, with its line.
 */
export const fromCsv = (text: string): Either.Either<ReadonlyArray<StudyRow>, string> => {
  const [header = "", ...lines] = text.split("\n").filter((line) => line.trim() !== "")
  if (header.trim() !== CSV_COLUMNS.join(",")) return Either.left(`line 1: expected the header ${CSV_COLUMNS.join(",")}`)
  const rows: Array<StudyRow> = []
  for (const [index, line] of lines.entries()) {
    const cells = line.split(",")
    if (cells.length !== CSV_COLUMNS.length) {
      return Either.left(`line ${index + 2}: ${cells.length} cells, expected ${CSV_COLUMNS.length}`)
    }
    const decoded = decodeRowCells(Object.fromEntries(CSV_COLUMNS.map((column, i) => [column, (cells[i] as string).trim()])))
    if (Either.isLeft(decoded)) {
      return Either.left(`line ${index + 2}: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`)
    }
    rows.push(decoded.right)
  }
  return Either.right(rows)
}

/** The rows as CSV (a header line, then one line per row; numbers only, so nothing needs quoting). */
export const toCsv = (rows: ReadonlyArray<StudyRow>): string =>
  [CSV_COLUMNS.join(","), ...rows.map((row) => CSV_COLUMNS.map((column) => String(row[column])).join(","))].join("\n") + "\n"

const unique = (values: ReadonlyArray<number>): ReadonlyArray<number> => [...new Set(values)].sort((a, b) => a - b)

const churnLabel = (churn: number): string => (churn === 0 ? "no churn" : `churn ${Math.round(churn * 100)} %`)

/** The study's charts, as SVG files named by `file`. */
export const studyCharts = (rows: ReadonlyArray<StudyRow>): ReadonlyArray<{ readonly file: string; readonly svg: string }> => {
  const nodeCounts = unique(rows.map((row) => row.nodes))
  const ks = unique(rows.map((row) => row.k))
  const alphas = unique(rows.map((row) => row.alpha))
  const churns = unique(rows.map((row) => row.churn))
  const charts: Array<{ readonly file: string; readonly svg: string }> = []
  const perK = (nodes: number, churn: number, value: (row: StudyRow) => number) =>
    ks.map((k) => ({
      label: `k = ${k}`,
      dashed: churn !== 0,
      points: rows
        .filter((row) => row.nodes === nodes && row.k === k && row.churn === churn)
        .map((row) => ({ x: row.alpha, y: value(row) }))
    }))

  // (a) Hops p95 and latency p95 against alpha, one file per N: a row of panels per churn state.
  for (const nodes of nodeCounts) {
    const panel = (churn: number, what: string, yLabel: string, value: (row: StudyRow) => number): LineChart => ({
      title: `${what}, 95th percentile, ${churnLabel(churn)}`,
      xLabel: "alpha (queries in flight)",
      yLabel,
      xTicks: alphas,
      series: perK(nodes, churn, value)
    })
    charts.push({
      file: `lookups-n${nodes}.svg`,
      svg: renderSmallMultiples(
        `Lookups on ${nodes.toLocaleString("en-US")} nodes`,
        churns.flatMap((churn) => [
          panel(churn, "Hops", "hops", (row) => row.hopsP95),
          panel(churn, "Latency", "virtual ms", (row) => row.latencyP95)
        ])
      )
    })
  }

  // (b) Success under churn against k, one panel per N, a line per alpha.
  const churned = churns.filter((churn) => churn > 0)
  if (churned.length > 0) {
    charts.push({
      file: "success-churn.svg",
      svg: renderSmallMultiples(
        `Lookup success with ${churned.map(churnLabel).join(", ")}`,
        nodeCounts.map((nodes): LineChart => ({
          title: `${nodes.toLocaleString("en-US")} nodes`,
          xLabel: "k",
          yLabel: "lookups that found the value (%)",
          xTicks: ks,
          yMax: 100,
          series: alphas.map((alpha) => ({
            label: `alpha = ${alpha}`,
            points: rows
              .filter((row) => row.nodes === nodes && row.alpha === alpha && row.churn > 0)
              .map((row) => ({ x: row.k, y: row.successRate * 100 }))
          }))
        })),
        Math.min(3, nodeCounts.length)
      )
    })
  }

  // (c) RPCs per node per second against N: background, and with one lookup per node per minute.
  const loadOf = (k: number, churn: number, value: (row: StudyRow) => number) =>
    nodeCounts.flatMap((nodes) => {
      const row = rows.find((candidate) => candidate.nodes === nodes && candidate.k === k && candidate.churn === churn)
      return row === undefined ? [] : [{ x: nodes, y: value(row) }]
    })
  const withLookups = (row: StudyRow) => row.backgroundRpcsPerNodePerSecond + row.rpcsPerLookup / 60
  const defaultK = ks.includes(20) ? 20 : (ks[ks.length - 1] ?? 20)
  const logPanel = (title: string, yLabel: string, series: LineChart["series"]): LineChart => ({
    title,
    xLabel: "nodes (log scale)",
    yLabel,
    logX: true,
    xTicks: nodeCounts,
    series
  })
  charts.push({
    file: "rpc-load.svg",
    svg: renderSmallMultiples("RPCs per node per second against network size (dashed: with churn)", [
      logPanel(
        `k = ${defaultK}`,
        "RPCs per online node per second",
        churns.flatMap((churn, position) => [
          {
            label: `background, ${churnLabel(churn)}`,
            color: position === 0 ? "#0072B2" : "#56B4E9",
            dashed: churn !== 0,
            points: loadOf(defaultK, churn, (row) => row.backgroundRpcsPerNodePerSecond)
          },
          {
            label: `+1 lookup/node/min, ${churnLabel(churn)}`,
            color: position === 0 ? "#D55E00" : "#E69F00",
            dashed: churn !== 0,
            points: loadOf(defaultK, churn, withLookups)
          }
        ])
      ),
      logPanel(
        "Background load by k",
        "RPCs per online node per second",
        ks.flatMap((k, position) =>
          churns.map((churn) => ({
            label: `k = ${k}${churn === 0 ? "" : `, ${churnLabel(churn)}`}`,
            color: PALETTE[position % PALETTE.length] ?? "#000",
            dashed: churn !== 0,
            points: loadOf(k, churn, (row) => row.backgroundRpcsPerNodePerSecond)
          }))
        )
      ),
      logPanel(
        "RPCs caused per lookup (pings included)",
        "RPCs per lookup",
        ks.flatMap((k, position) =>
          churns.map((churn) => ({
            label: `k = ${k}${churn === 0 ? "" : `, ${churnLabel(churn)}`}`,
            color: PALETTE[position % PALETTE.length] ?? "#000",
            dashed: churn !== 0,
            points: loadOf(k, churn, (row) => row.rpcsPerLookup)
          }))
        )
      )
    ], 3)
  })
  return charts
}

/** The rows as a Markdown table (for docs/study/README.md). */
export const toMarkdownTable = (rows: ReadonlyArray<StudyRow>): string => {
  const header =
    "| N | k | α | churn | lookups | success | hops p50/p95/max | latency ms p50/p95/p99 | msgs mean/p95 | RPCs per lookup | RPC/node/s (window / background) |"
  const rule = "|---:|---:|---:|---:|---:|---:|:---:|:---:|:---:|---:|:---:|"
  const lines = rows.map((row) =>
    `| ${row.nodes} | ${row.k} | ${row.alpha} | ${Math.round(row.churn * 100)} % | ${row.lookups} | ${(row.successRate * 100).toFixed(1)} % | ` +
    `${row.hopsP50}/${row.hopsP95}/${row.hopsMax} | ${row.latencyP50}/${row.latencyP95}/${row.latencyP99} | ` +
    `${row.messagesMean}/${row.messagesP95} | ${row.rpcsPerLookup} | ${row.rpcsPerNodePerSecond} / ${row.backgroundRpcsPerNodePerSecond} |`
  )
  return [header, rule, ...lines].join("\n") + "\n"
}


/**
 * What caused a network's RPCs, window by window, for the progress output:
 * per online node per second, by origin, then the causes that make up at
 * least 1 % of the window, largest first.
 */
export const renderCauses = (result: NetworkResult): string =>
  result.causes.map(({ counts, online, seconds, window }) => {
    const rate = (count: number) => (seconds <= 0 || online <= 0 ? 0 : count / online / seconds)
    const total = Object.values(counts).reduce((sum, count) => sum + count, 0)
    const byOrigin = new Map<string, number>()
    for (const [label, count] of Object.entries(counts)) {
      const origin = label.slice(0, label.indexOf(":"))
      byOrigin.set(origin, (byOrigin.get(origin) ?? 0) + count)
    }
    const origins = [...byOrigin.entries()].sort(([, a], [, b]) => b - a).map(([origin, count]) => `${origin} ${rate(count).toFixed(4)}`)
    const largest = Object.entries(counts)
      .filter(([, count]) => count >= total / 100)
      .sort(([, a], [, b]) => b - a)
      .map(([label, count]) => `      ${rate(count).toFixed(4)}  ${label}\n`)
    return `[study] N=${result.nodes}, k=${result.k}, ${window}: ${rate(total).toFixed(4)} RPCs per node per second (${origins.join(", ")})\n` +
      largest.join("")
  }).join("")
