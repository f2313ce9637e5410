/**
 * What a simulated run is parameterized by, and the defaults: plain data,
 * apart from the simulator, so that `npm run sim -- --help` and a malformed
 * command line answer without loading the node, the chat and the simulator
 * (about 1.5 s of CPU through tsx).
 *
 * @since 0.1.0
 */

/** Everything a run is parameterized by; see `defaultSimulationOptions`. */
export interface SimulationOptions {
  readonly nodes: number
  readonly seed: number
  readonly k: number
  readonly alpha: number
  /** Fraction of the churning nodes offline at any time (0: no churn). */
  readonly churn: number
  /** Median length of an online session (log-normal). */
  readonly medianSessionMs: number
  /** Spread (sigma of the log) of session lengths and offline gaps. */
  readonly sessionSigma: number
  /** Length of the measurement window (after joining and warm-up). */
  readonly durationMs: number
  /** Warm-up after everyone joined and registered (and churn began), before measuring. */
  readonly warmupMs: number
  /** Lookups during the window, at uniformly random times. */
  readonly lookups: number
  /** Registered users (the lookup targets). */
  readonly users: number
  /** Messages of the offline-delivery experiment (each uses two users). */
  readonly messages: number
  /**
   * How the network forms: "real" has node i join through up to three
   * earlier nodes (the full join: bootstrap pings, self lookup, bucket
   * refresh), one after the other; "seeded" starts every node with its
   * routing table filled as a long-running network's would be (up to k
   * random contacts per bucket): large runs use it, as the study measures
   * lookups, not joins.
   */
  readonly join: "real" | "seeded"
  /**
   * Fraction of the nodes that are hostile (0 to 0.5), drawn from the seed
   * among the nodes that serve no user; see `Hostile.ts`.
   */
  readonly hostile: number
  /** Name resolutions during the window (by online users, of other users), at uniformly random times. */
  readonly resolutions: number
  /**
   * Fraction of the nodes (0 to below 1, drawn among those that serve no
   * user) that go silent for good once the network has formed and the users
   * registered: hosts that still sit in everyone's routing tables but never
   * answer, so every call to them waits for its deadline.
   */
  readonly dead: number
  /**
   * Fraction of the nodes (0 to 1) behind NATs that drop inbound
   * connections, drawn from the seed (node 0, the first bootstrap, stays
   * public): they judge themselves unreachable from their peers' dial-backs
   * and run as a real node behind a NAT does (client mode, relay
   * reservations, records that list relays).
   */
  readonly nat: number
  /**
   * Whether every node probes its quietest contacts as a real node does
   * (`Liveness`: every 30 s, 8 a round, up to 96 while probes fail), so
   * silent peers leave the routing tables. Off by default: it adds traffic
   * the protocol itself does not send (0.25-0.55 pings per node per second
   * at 30 % churn, docs/study/README.md).
   */
  readonly probeQuietPeers?: boolean | undefined
}

/** A 10-minute window on 100 nodes, k = 20, alpha = 3, no churn, real joins. */
export const defaultSimulationOptions: SimulationOptions = {
  nodes: 100,
  seed: 1,
  k: 20,
  alpha: 3,
  churn: 0,
  medianSessionMs: 2 * 60 * 60 * 1000,
  sessionSigma: 1,
  durationMs: 10 * 60 * 1000,
  warmupMs: 5 * 60 * 1000,
  lookups: 200,
  users: 50,
  messages: 20,
  join: "real",
  hostile: 0,
  resolutions: 200,
  dead: 0,
  nat: 0
}

/** How links behave; see `defaultLinks`. */
export interface LinkOptions {
  /** Median one-way latency of a message (log-normal). */
  readonly latencyMedianMs: number
  /** Spread (sigma of the log) of latencies. */
  readonly latencySigma: number
  /** Probability that a message is lost. */
  readonly loss: number
}

/** Log-normal latency around 50 ms one way (sigma 0.5: p95 about 115 ms), no loss. */
export const defaultLinks: LinkOptions = { latencyMedianMs: 50, latencySigma: 0.5, loss: 0 }

/** The largest hostile fraction a run accepts: beyond half, "most of the closest nodes" means nothing. */
export const MAX_HOSTILE_FRACTION = 0.5
