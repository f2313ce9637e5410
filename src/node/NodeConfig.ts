/**
 * The tunables of one DHT node: Kademlia's k and alpha, the call timeout, how
 * often the background maintenance runs and what it refreshes, the bound on
 * stored records, and where to join the network. A service with documented
 * `defaults` and a `layer(partial)` that overrides a few fields, so tests and
 * simulations change two numbers and keep the rest.
 *
 * @since 0.1.0
 */
import { DEFAULT_MAX_PER_GROUP } from "../core/IpDiversity.js"
import { Context, Duration, Layer } from "effect"
import type { Address } from "../core/Contact.js"
import { MAX_CLAIM_DIFFICULTY } from "../core/ClaimProof.js"
import { type ClaimCheckBudgetConfig, defaultClaimCheckBudget } from "../core/ClaimCheckBudget.js"
import { DEFAULT_ID_PUZZLE_BITS, MAX_ID_PUZZLE_BITS } from "../core/IdPuzzle.js"
import { MAX_QUERIES_PER_K } from "../core/Lookup.js"
import { defaultClaimWorkConfig } from "./ClaimWork.js"
import { defaultRttEstimatorConfig } from "../core/RttEstimator.js"
import { defaultStorageSlack } from "../core/StoragePolicy.js"
import { defaultRecordLimits, type RecordLimits } from "../core/UserRecord.js"
import { MAX_CONTACTS_PER_ANSWER } from "./Protocol.js"

/** Exponential backoff with jitter (for the bootstrap, and for message delivery). */
export interface BackoffPolicy {
  /** Delay before the first retry. */
  readonly initial: Duration.Duration
  /** Each further retry waits this many times longer. */
  readonly factor: number
  /** The delay never grows beyond this. */
  readonly max: Duration.Duration
  /**
   * Fraction of each delay that is random, in [0, 1]: 0.2 waits between 80 % and
   * 100 % of the nominal delay, so nodes that failed together do not retry together.
   */
  readonly jitter: number
}

/**
 * The delay before retry number `attempt` (1-based): the nominal exponential
 * delay, capped, with the random part (`random` in [0, 1)) taken off.
 */
export const backoffDelay = (policy: BackoffPolicy, attempt: number, random: number): Duration.Duration => {
  const nominal = Math.min(
    Duration.toMillis(policy.initial) * Math.pow(policy.factor, attempt - 1),
    Duration.toMillis(policy.max)
  )
  return Duration.millis(Math.round(nominal * (1 - policy.jitter * random)))
}

/** Everything a node can be tuned with; see `NodeConfig.defaults` for the values. */
export interface NodeConfigShape {
  /** Bucket size and replication factor (Kademlia's k); at most MAX_CONTACTS_PER_ANSWER. */
  readonly k: number
  /** Queries a lookup keeps in flight. */
  readonly alpha: number
  /** Longest wait for any one request; a lookup treats a slower peer as overdue. */
  readonly callTimeout: Duration.Duration
  /**
   * Disjoint paths a name lookup takes to the k closest nodes of a name
   * (S/Kademlia's d); each keeps `alpha` queries in flight.
   */
  readonly disjointPaths: number
  /**
   * How many of the closest known holders of a record hand it to a newly met
   * node that belongs among its k closest (1 is the Kademlia paper's rule).
   */
  readonly handoffRedundancy: number
  /** Hard bound on queries sent by one lookup. */
  readonly maxLookupQueries: number
  /**
   * Whether a lookup treats a query as overdue (and sends another in its
   * place) after the peer's measured retransmission timeout, srtt + 3·rttvar
   * of its answers (the network-wide one for a peer never measured), kept
   * within [minQueryOverdue, callTimeout]. Off: after the full callTimeout.
   * Either way the call itself waits the full callTimeout and a late answer counts.
   */
  readonly adaptiveTimeouts: boolean
  /** The shortest time a lookup waits for any peer before treating its query as overdue. */
  readonly minQueryOverdue: Duration.Duration
  /** Peers whose round-trip times are remembered (least recently answered forgotten first), about 30 bytes each. */
  readonly rttPeersRemembered: number
  /** Contacts kept waiting per full bucket. */
  readonly replacementCacheSize: number
  /** Consecutive failed requests after which a contact is dropped from the routing table. */
  readonly maxConsecutiveFailures: number
  /**
   * A full bucket's least-recently-seen contact is pinged to make room for a
   * newcomer only when it has not been seen for this long (see RoutingTable's
   * headFreshnessMs: pinging on every stranger cascades through the network).
   */
  readonly headFreshness: Duration.Duration
  /**
   * Most contacts of one network (IPv4 /24, IPv6 /48) per bucket and in a
   * lookup's result set, so one network cannot crowd out everyone else
   * however many ids it makes. Several nodes on one machine for tests bind
   * distinct 127.x.y.z networks rather than switching this off.
   */
  readonly maxPerNetwork: number
  /** How often the node asks a few peers to dial it back, to know whether it is reachable (first right after joining). */
  readonly reachabilityInterval: Duration.Duration
  /** A bucket nobody touched for this long is refreshed with a lookup into its range. */
  readonly bucketRefreshInterval: Duration.Duration
  /** How often the maintenance fiber wakes up to refresh, expire and replicate. */
  readonly maintenanceInterval: Duration.Duration
  /** How often every live record held here is stored again at the k closest nodes of its key. */
  readonly recordReplicationInterval: Duration.Duration
  /** Most user records this node stores for others; new names beyond it are refused. */
  readonly maxStoredRecords: number
  /**
   * Most names one signing key holds at this node (its records and rival
   * claims together); more are refused (QuotaExceeded), so filling the store
   * takes maxStoredRecords / maxNamesPerKey keys and a claim's work per name.
   */
  readonly maxNamesPerKey: number
  /**
   * How many nodes beyond the k closest of a key may still store under it: a
   * node refuses a Store or StoreMail (NotResponsible) once it knows k +
   * storageSlack nodes closer to the key than itself. The slack exists
   * because a routing table holds stale or dead contacts (and unpinged ones
   * in replacement caches): a node ranked just past k by its own table may
   * well be among the k closest live nodes a publisher's lookup found. Follows
   * k (ceil(k / 2)) unless given; 0 refuses as soon as k closer nodes are known.
   */
  readonly storageSlack: number
  /** Bounds on the validity period of records this node accepts. */
  readonly recordLimits: RecordLimits
  /**
   * Leading zero bits of the memory-hard proof of work this node solves when
   * its user claims a name (about 2^d hash evaluations: d = 10 is about 2 s of
   * one core with scrypt).
   */
  readonly claimDifficulty: number
  /** The least claim difficulty this node accepts in records it stores or believes. */
  readonly minClaimDifficulty: number
  /**
   * How many claim-hash evaluations peers may make this node run (core
   * `ClaimCheckBudget`): per peer and in total; a claim over it is refused
   * (`RequestRefused` Overloaded) before its hash is evaluated.
   */
  readonly claimCheckBudget: ClaimCheckBudgetConfig
  /**
   * Zero bits a node id's puzzle hash must have (core IdPuzzle): a contact
   * whose id does not meet it never enters the routing table or a lookup.
   * 0 turns the check off (tests and the simulator, whose ids come from seeds).
   */
  readonly idPuzzleBits: number
  /** Nodes to join through; empty for the first node of a new network. */
  readonly bootstrap: ReadonlyArray<Address>
  /** How the bootstrap is retried while none of the bootstrap nodes answers. */
  readonly bootstrapRetry: BackoffPolicy
  /**
   * After joining, refresh the buckets shallower than the neighbourhood
   * that are empty, so that the node routes into every range (core
   * `bucketsToRefreshAfterJoin`; every far bucket while the node knows fewer
   * than k); tests and simulators may turn it off. The buckets the storage
   * count reads are filled on demand (`DhtNodeService.storageRefusal`).
   */
  readonly refreshBucketsOnJoin: boolean
  /**
   * How often the routing table's contacts are saved to `KnownPeers` (they are
   * saved once more when the node stops), so a restart can rejoin through them.
   */
  readonly routingSnapshotInterval: Duration.Duration
}

/** The configuration of a DHT node. */
export class NodeConfig extends Context.Tag("peerchat/NodeConfig")<NodeConfig, NodeConfigShape>() {
  /**
   * The Kademlia paper's k = 20 and alpha = 3, hourly refresh and replication,
   * 10,000 stored records (8 names per signing key), storage slack k/2, a
   * routing-table snapshot every 30 s; adaptive query
   * timeouts of at least 100 ms, round-trip times of 256 peers remembered.
   */
  static readonly defaults: NodeConfigShape = {
    k: 20,
    alpha: 3,
    callTimeout: Duration.seconds(2),
    disjointPaths: 3,
    handoffRedundancy: 3,
    maxLookupQueries: MAX_QUERIES_PER_K * 20,
    adaptiveTimeouts: true,
    minQueryOverdue: Duration.millis(100),
    rttPeersRemembered: defaultRttEstimatorConfig.capacity,
    replacementCacheSize: 20,
    maxConsecutiveFailures: 3,
    headFreshness: Duration.minutes(15),
    maxPerNetwork: DEFAULT_MAX_PER_GROUP,
    reachabilityInterval: Duration.minutes(30),
    bucketRefreshInterval: Duration.hours(1),
    maintenanceInterval: Duration.minutes(1),
    recordReplicationInterval: Duration.hours(1),
    maxStoredRecords: 10_000,
    maxNamesPerKey: 8,
    storageSlack: defaultStorageSlack(20),
    recordLimits: defaultRecordLimits,
    claimDifficulty: defaultClaimWorkConfig.claimDifficulty,
    minClaimDifficulty: defaultClaimWorkConfig.minClaimDifficulty,
    claimCheckBudget: defaultClaimCheckBudget,
    idPuzzleBits: DEFAULT_ID_PUZZLE_BITS,
    bootstrap: [],
    bootstrapRetry: { initial: Duration.seconds(1), factor: 2, max: Duration.minutes(5), jitter: 0.2 },
    refreshBucketsOnJoin: true,
    routingSnapshotInterval: Duration.seconds(30)
  }

  /**
   * The defaults with `overrides` applied. `maxLookupQueries` and
   * `storageSlack` follow k unless given. Dies on values that cannot work (a
   * configuration bug, not input).
   */
  static readonly make = (overrides: Partial<NodeConfigShape> = {}): NodeConfigShape => {
    const k = overrides.k ?? NodeConfig.defaults.k
    const config: NodeConfigShape = {
      ...NodeConfig.defaults,
      maxLookupQueries: MAX_QUERIES_PER_K * k,
      storageSlack: defaultStorageSlack(k),
      ...overrides
    }
    const positiveIntegers = [
      "k",
      "alpha",
      "maxLookupQueries",
      "maxConsecutiveFailures",
      "maxStoredRecords",
      "maxNamesPerKey",
      "rttPeersRemembered",
      "disjointPaths",
      "handoffRedundancy"
    ] as const
    for (const name of positiveIntegers) {
      if (!Number.isInteger(config[name]) || config[name] < 1) {
        throw new RangeError(`NodeConfig.${name} must be a positive integer, got ${config[name]}`)
      }
    }
    if (!Number.isInteger(config.storageSlack) || config.storageSlack < 0) {
      throw new RangeError(`NodeConfig.storageSlack must be a non-negative integer, got ${config.storageSlack}`)
    }
    if (config.k > MAX_CONTACTS_PER_ANSWER) {
      throw new RangeError(`NodeConfig.k must be at most ${MAX_CONTACTS_PER_ANSWER}, got ${config.k}`)
    }
    if (config.bootstrapRetry.factor < 1 || config.bootstrapRetry.jitter < 0 || config.bootstrapRetry.jitter > 1) {
      throw new RangeError("NodeConfig.bootstrapRetry needs factor >= 1 and jitter in [0, 1]")
    }
    for (const name of ["callTimeout", "maintenanceInterval", "routingSnapshotInterval"] as const) {
      if (Duration.toMillis(config[name]) <= 0) throw new RangeError(`NodeConfig.${name} must be positive`)
    }
    for (const name of ["claimDifficulty", "minClaimDifficulty"] as const) {
      if (!Number.isInteger(config[name]) || config[name] < 0 || config[name] > MAX_CLAIM_DIFFICULTY) {
        throw new RangeError(`NodeConfig.${name} must be an integer in [0, ${MAX_CLAIM_DIFFICULTY}], got ${config[name]}`)
      }
    }
    if (!Number.isInteger(config.idPuzzleBits) || config.idPuzzleBits < 0 || config.idPuzzleBits > MAX_ID_PUZZLE_BITS) {
      throw new RangeError(`NodeConfig.idPuzzleBits must be an integer in [0, ${MAX_ID_PUZZLE_BITS}], got ${config.idPuzzleBits}`)
    }
    if (config.claimDifficulty < config.minClaimDifficulty) {
      throw new RangeError("NodeConfig.claimDifficulty must be at least minClaimDifficulty, or its own claims would be refused")
    }
    if (Duration.greaterThan(config.minQueryOverdue, config.callTimeout)) {
      throw new RangeError("NodeConfig.minQueryOverdue must not exceed callTimeout")
    }
    return config
  }

  /** A layer with the defaults and `overrides` (see `make`). */
  static readonly layer = (overrides: Partial<NodeConfigShape> = {}): Layer.Layer<NodeConfig> =>
    Layer.sync(NodeConfig, () => NodeConfig.make(overrides))
}
