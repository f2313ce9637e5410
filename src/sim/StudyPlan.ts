/**
 * What a parameter study sweeps (`npm run study`): the full and quick
 * plans and how a command line's choice narrows them. Plain data apart from
 * the study's runner (`Study.ts`), so that `npm run study -- --help` and a
 * malformed command line answer without loading the simulator.
 *
 * @since 0.1.0
 */
import { Duration } from "effect"
import type { NetworkTuning } from "./Simulation.js"
import { defaultLinks, type LinkOptions } from "./SimulationOptions.js"

const SECOND = 1000
const MINUTE = 60 * SECOND

/** What a study sweeps and how long each phase lasts (virtual time). */
export interface StudyPlan {
  readonly seed: number
  readonly nodes: ReadonlyArray<number>
  readonly ks: ReadonlyArray<number>
  readonly alphas: ReadonlyArray<number>
  /** Lookups per alpha and churn state on a network of `nodes` nodes. */
  readonly lookupsPerAlpha: (nodes: number) => number
  /** Users registered (lookup targets): `min(N, users)`. */
  readonly users: number
  /** From the end of registration to the quiet window. */
  readonly settleMs: number
  /** Length of each quiet (background-only) window. */
  readonly quietWindowMs: number
  /** The lookups of one phase start at uniformly random times within this window. */
  readonly lookupWindowMs: number
  /** Fraction of the nodes offline at any time once churn runs. */
  readonly churnFraction: number
  /** Median online session (log-normal) under churn. */
  readonly medianSessionMs: number
  /** Spread (sigma of the log) of sessions and gaps. */
  readonly sessionSigma: number
  /** From the start of churn to its lookups; its last `quietWindowMs` are the quiet window under churn. */
  readonly churnWarmupMs: number
  /** Overrides of the node and chat defaults (slower purely local loops; see `studyTuning`). */
  readonly tuning: NetworkTuning
  readonly links: LinkOptions
}

/**
 * The loops a node runs that send nothing while no mail is about (the
 * routing-table snapshot is local; the relay pushes held mail, the sender
 * retries its outbox, and the study sends no mail), slowed from 30 s to
 * 10 min: they are most of the wake-ups of an idle node, so this makes the
 * study several times cheaper without changing a single RPC (checked: the
 * same seed sends the same RPCs, tag by tag, with and without it). Everything
 * that does send (maintenance every minute, bucket refresh, replication,
 * republishing, the mailbox pull every 5 minutes) keeps its default, so the
 * RPC rates are a default node's.
 */
export const studyTuning: NetworkTuning = {
  node: { routingSnapshotInterval: Duration.minutes(10) },
  chat: { relayPushInterval: Duration.minutes(10), senderPollInterval: Duration.minutes(10) }
}

/**
 * The full sweep: N in {100, 1000, 10000}, k in {3, 5, 10, 20}, alpha in
 * {1, 3, 5, 10}; 200 lookups per cell (60 at 10,000 nodes, for time), 30
 * users; 30 % churn with a 20-minute median session (shorter than the
 * measured 2 hours so that nodes come and go within the run's minutes),
 * measured from its first minute on: churn costs most of the run's CPU
 * (every returning node rejoins and refreshes its buckets), and a longer
 * warm-up would not fit the 30-minute budget at 10,000 nodes.
 */
export const fullPlan: StudyPlan = {
  seed: 1,
  nodes: [100, 1000, 10_000],
  ks: [3, 5, 10, 20],
  alphas: [1, 3, 5, 10],
  lookupsPerAlpha: (nodes) => (nodes >= 10_000 ? 60 : 200),
  users: 30,
  settleMs: 30 * SECOND,
  quietWindowMs: MINUTE,
  lookupWindowMs: MINUTE,
  churnFraction: 0.3,
  medianSessionMs: 20 * MINUTE,
  sessionSigma: 1,
  churnWarmupMs: MINUTE,
  tuning: studyTuning,
  links: defaultLinks
}

/** The quick sweep (`--quick`): N in {100, 1000}, 40 lookups per cell, 20-second windows, a 1-minute churn warm-up. */
export const quickPlan: StudyPlan = {
  ...fullPlan,
  nodes: [100, 1000],
  lookupsPerAlpha: () => 40,
  users: 10,
  settleMs: 10 * SECOND,
  quietWindowMs: 20 * SECOND,
  lookupWindowMs: 20 * SECOND,
  churnWarmupMs: MINUTE
}

/** What the command line chose (plain data, so it can cross to a worker thread and give the same plan there). */
export interface StudyChoice {
  readonly quick: boolean
  readonly seed?: number | undefined
  readonly nodes?: ReadonlyArray<number> | undefined
  readonly ks?: ReadonlyArray<number> | undefined
  readonly alphas?: ReadonlyArray<number> | undefined
  /** Lookups per alpha and churn state, whatever N. */
  readonly lookupsPerAlpha?: number | undefined
  /** Every node loop at its default interval (no `studyTuning`). */
  readonly exactLoops?: boolean | undefined
}

/** The plan a choice stands for: the quick or full plan, narrowed and overridden. */
export const studyPlan = (choice: StudyChoice): StudyPlan => {
  const base = choice.quick ? quickPlan : fullPlan
  const lookups = choice.lookupsPerAlpha
  return {
    ...base,
    seed: choice.seed ?? base.seed,
    nodes: choice.nodes ?? base.nodes,
    ks: choice.ks ?? base.ks,
    alphas: choice.alphas ?? base.alphas,
    lookupsPerAlpha: lookups === undefined ? base.lookupsPerAlpha : () => lookups,
    tuning: choice.exactLoops === true ? {} : base.tuning
  }
}
