/**
 * The result of a simulated run: lookup hops, latency and success, what name
 * resolutions answered (the real owner, a conflict, or a hijack, with
 * hostile nodes about), offline delivery, load, and invariant violations,
 * computed from the raw samples.
 * Everything here is a function of the run's seed (virtual times, counts),
 * so the same seed gives the same summary, byte for byte; wall-clock figures
 * (speed-up, memory) are reported separately by the runner.
 *
 * @since 0.1.0
 */
import type {
  DeliverySample,
  LiveDeliverySample,
  LoadSample,
  LookupSample,
  PublicationSample,
  ResolutionSample
} from "./Simulation.js"
import type { SimulationOptions } from "./SimulationOptions.js"

/** p50 / p95 / p99 / max of a sample. */
export interface Spread {
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
}

/** What a run measured. */
export interface Summary {
  readonly parameters: {
    readonly nodes: number
    readonly seed: number
    readonly k: number
    readonly alpha: number
    readonly churn: number
    readonly durationMs: number
    /** The hostile fraction asked for, and how many nodes were hostile. */
    readonly hostile: number
    readonly hostileNodes: number
    /** The fraction of nodes silenced for good. */
    readonly dead: number
    /** Whether nodes probed their quiet contacts as real nodes do (`--probe-quiet-peers`). */
    readonly probeQuietPeers: boolean
  }
  readonly lookups: {
    readonly count: number
    readonly found: number
    /** Found records that were a hostile node's forged claim (0 without hostile nodes). */
    readonly forged: number
    readonly successRate: number
    readonly hops: Spread
    readonly latencyMs: Spread
    readonly messages: Spread & { readonly mean: number }
  }
  /** Users resolving other users' names, each answer against the real owner's key (see `ResolutionOutcome`). */
  readonly resolutions: {
    readonly count: number
    /** Answers that name the real owner's key: as the sole owner, or among a conflict's claimants. */
    readonly reachedOwner: number
    readonly reachedOwnerRate: number
    readonly owner: number
    readonly conflictWithOwner: number
    readonly conflictWithoutOwner: number
    /** A sole owner other than the real one: a silent hijack, which must never happen. */
    readonly hijacked: number
    readonly notFound: number
    readonly latencyMs: Spread
  }
  readonly offlineDelivery: {
    readonly sent: number
    readonly delivered: number
    readonly deliveryRate: number
    /** From the recipient's return to the message's arrival. */
    readonly delayAfterOnlineMs: Spread
    /** Messages that arrived within 5 s of the recipient's return. */
    readonly within5s: number
  }
  /**
   * Reachable nodes and nodes behind NATs apart (`--nat`): lookups by who
   * asked, publication by whose record, deliveries by whom they were for,
   * and what each side holds and relays.
   */
  readonly reachability: {
    /** The NAT'd fraction asked for, and how many nodes sat behind NATs. */
    readonly nat: number
    readonly nattedNodes: number
    readonly lookups: { readonly fromReachable: LookupSplit; readonly fromNatted: LookupSplit }
    readonly publication: { readonly ofReachable: PublicationSplit; readonly ofNatted: PublicationSplit }
    /** Messages between two online users, by whether the recipient sat behind a NAT. */
    readonly liveDelivery: { readonly toReachable: LiveDeliverySplit; readonly toNatted: LiveDeliverySplit }
    /** The offline experiment's messages (always pulled from or pushed by a mailbox), by recipient. */
    readonly offlineDelivery: {
      readonly toReachable: { readonly sent: number; readonly delivered: number }
      readonly toNatted: { readonly sent: number; readonly delivered: number }
    }
    /** What the online nodes hold for others and relay at the end of the window. */
    readonly load: ReadonlyArray<LoadSample>
  }
  /** RPCs sent per node per second of virtual time during the measurement window. */
  readonly rpcsPerNodePerSecond: number
  /** The same per request kind, kinds never sent left out. */
  readonly rpcsByKind: Readonly<Record<string, number>>
  /**
   * The same by cause ("origin: kind ← handler it was sent from", see
   * `RpcCauses`), so lookups' own cost and background work read apart.
   */
  readonly rpcsByCause: Readonly<Record<string, number>>
  /**
   * RPCs the lookups caused, per lookup: their queries and what those set
   * off (dial-backs of the asker, routing-table pings), counted by origin,
   * not as the window less a background rate.
   */
  readonly rpcsPerLookup: number
  readonly violations: ReadonlyArray<string>
}

/** Lookups from one side. */
export interface LookupSplit {
  readonly count: number
  readonly found: number
  readonly successRate: number
  readonly latencyMs: Spread
  /** RPCs a lookup caused, on average. */
  readonly rpcsPerLookup: number
}

/** Users of one side, and how much of their record the name's k closest reachable nodes hold. */
export interface PublicationSplit {
  readonly users: number
  /** Of the k closest reachable online nodes, how many hold the owner's claim, on average. */
  readonly meanHolders: number
  readonly closest: number
  /** Users whose k closest all hold it. */
  readonly fullyStored: number
  /** Users none of whose k closest hold it. */
  readonly notStored: number
  /** Users whose held record lists relays (how a node behind a NAT is reached). */
  readonly listingRelays: number
}

/** Messages to one side's users, and the path they took. */
export interface LiveDeliverySplit {
  readonly sent: number
  readonly delivered: number
  readonly deliveryRate: number
  readonly direct: number
  readonly relayed: number
  readonly fromMailbox: number
  readonly latencyMs: Spread
}

/** The `p`-th percentile (nearest rank) of `values`; 0 for none. */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? 0
}

const round = (value: number, digits = 3): number => {
  const scale = 10 ** digits
  return Math.round(value * scale) / scale
}

const spread = (values: ReadonlyArray<number>): Spread => ({
  p50: round(percentile(values, 50)),
  p95: round(percentile(values, 95)),
  p99: round(percentile(values, 99)),
  max: round(values.length === 0 ? 0 : Math.max(...values))
})

/** The summary of a run from its raw samples. */
export const summarize = (run: {
  readonly options: SimulationOptions
  /** How many nodes were hostile. */
  readonly hostileNodes: number
  readonly samples: ReadonlyArray<LookupSample>
  readonly resolutions: ReadonlyArray<ResolutionSample>
  readonly deliveries: ReadonlyArray<DeliverySample>
  readonly live: ReadonlyArray<LiveDeliverySample>
  readonly publication: ReadonlyArray<PublicationSample>
  readonly load: ReadonlyArray<LoadSample>
  readonly nattedNodes: number
  /** RPCs sent by all nodes during the window, per request kind. */
  readonly rpcs: Readonly<Record<string, number>>
  /** The same by cause (empty when not counted). */
  readonly causes?: Readonly<Record<string, number>>
  readonly windowMs: number
  readonly violations: ReadonlyArray<string>
}): Summary => {
  const { options, samples } = run
  const perNodePerSecond = (count: number): number =>
    run.windowMs <= 0 ? 0 : round(count / options.nodes / (run.windowMs / 1000), 4)
  const found = samples.filter((sample) => sample.found)
  const messageCounts = samples.map((sample) => sample.messages)
  const sent = run.deliveries.filter((delivery) => delivery.sent)
  const delays = sent.flatMap((delivery) => delivery.delayAfterOnlineMs === undefined ? [] : [delivery.delayAfterOnlineMs])
  const resolved = (outcome: ResolutionSample["outcome"]) => run.resolutions.filter((sample) => sample.outcome === outcome).length
  const reachedOwner = resolved("owner") + resolved("conflictWithOwner")
  const lookupSplit = (fromNat: boolean): LookupSplit => {
    const side = samples.filter((sample) => sample.fromNat === fromNat)
    const hits = side.filter((sample) => sample.found).length
    return {
      count: side.length,
      found: hits,
      successRate: side.length === 0 ? 0 : round(hits / side.length, 5),
      latencyMs: spread(side.map((sample) => sample.latencyMs)),
      rpcsPerLookup: side.length === 0 ? 0 : round(side.reduce((sum, sample) => sum + sample.rpcs, 0) / side.length, 2)
    }
  }
  const publicationSplit = (publisherNat: boolean): PublicationSplit => {
    const side = run.publication.filter((sample) => sample.publisherNat === publisherNat)
    return {
      users: side.length,
      meanHolders: side.length === 0 ? 0 : round(side.reduce((sum, sample) => sum + sample.holders, 0) / side.length, 2),
      closest: Math.max(0, ...side.map((sample) => sample.closest)),
      fullyStored: side.filter((sample) => sample.holders === sample.closest).length,
      notStored: side.filter((sample) => sample.holders === 0).length,
      listingRelays: side.filter((sample) => sample.listsRelays).length
    }
  }
  const liveSplit = (recipientNat: boolean): LiveDeliverySplit => {
    const side = run.live.filter((sample) => sample.sent && sample.recipientNat === recipientNat)
    const arrived = side.filter((sample) => sample.path !== undefined)
    return {
      sent: side.length,
      delivered: arrived.length,
      deliveryRate: side.length === 0 ? 0 : round(arrived.length / side.length, 5),
      direct: arrived.filter((sample) => sample.path === "direct").length,
      relayed: arrived.filter((sample) => sample.path === "relay").length,
      fromMailbox: arrived.filter((sample) => sample.path === "mailbox").length,
      latencyMs: spread(arrived.flatMap((sample) => sample.latencyMs === undefined ? [] : [sample.latencyMs]))
    }
  }
  const offlineSplit = (recipientNat: boolean) => {
    const side = sent.filter((delivery) => delivery.recipientNat === recipientNat)
    return { sent: side.length, delivered: side.filter((delivery) => delivery.delayAfterOnlineMs !== undefined).length }
  }
  return {
    parameters: {
      nodes: options.nodes,
      seed: options.seed,
      k: options.k,
      alpha: options.alpha,
      churn: options.churn,
      durationMs: options.durationMs,
      hostile: options.hostile,
      hostileNodes: run.hostileNodes,
      dead: options.dead,
      probeQuietPeers: options.probeQuietPeers === true
    },
    lookups: {
      count: samples.length,
      found: found.length,
      forged: found.filter((sample) => sample.forged).length,
      successRate: samples.length === 0 ? 0 : round(found.length / samples.length, 5),
      hops: spread(found.map((sample) => sample.hops)),
      latencyMs: spread(samples.map((sample) => sample.latencyMs)),
      messages: {
        ...spread(messageCounts),
        mean: round(messageCounts.length === 0 ? 0 : messageCounts.reduce((sum, count) => sum + count, 0) / messageCounts.length)
      }
    },
    resolutions: {
      count: run.resolutions.length,
      reachedOwner,
      reachedOwnerRate: run.resolutions.length === 0 ? 0 : round(reachedOwner / run.resolutions.length, 5),
      owner: resolved("owner"),
      conflictWithOwner: resolved("conflictWithOwner"),
      conflictWithoutOwner: resolved("conflictWithoutOwner"),
      hijacked: resolved("hijacked"),
      notFound: resolved("notFound"),
      latencyMs: spread(run.resolutions.map((sample) => sample.latencyMs))
    },
    offlineDelivery: {
      sent: sent.length,
      delivered: delays.length,
      deliveryRate: sent.length === 0 ? 0 : round(delays.length / sent.length, 5),
      delayAfterOnlineMs: spread(delays),
      within5s: delays.filter((delay) => delay <= 5000).length
    },
    reachability: {
      nat: options.nat,
      nattedNodes: run.nattedNodes,
      lookups: { fromReachable: lookupSplit(false), fromNatted: lookupSplit(true) },
      publication: { ofReachable: publicationSplit(false), ofNatted: publicationSplit(true) },
      liveDelivery: { toReachable: liveSplit(false), toNatted: liveSplit(true) },
      offlineDelivery: { toReachable: offlineSplit(false), toNatted: offlineSplit(true) },
      load: run.load
    },
    rpcsPerNodePerSecond: perNodePerSecond(Object.values(run.rpcs).reduce((sum, count) => sum + count, 0)),
    rpcsByKind: Object.fromEntries(
      Object.entries(run.rpcs)
        .filter(([, count]) => count > 0)
        .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
        .map(([kind, count]) => [kind, perNodePerSecond(count)])
    ),
    rpcsByCause: Object.fromEntries(
      Object.entries(run.causes ?? {})
        .filter(([, count]) => count > 0)
        .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
        .map(([cause, count]) => [cause, perNodePerSecond(count)])
    ),
    rpcsPerLookup: samples.length === 0 ? 0 : round(samples.reduce((sum, sample) => sum + sample.rpcs, 0) / samples.length, 2),
    violations: run.violations
  }
}
