/**
 * A simulated Peerchat network and the experiments run on it, as Effects to
 * be run in virtual time (`VirtualTime.run`). The pieces compose:
 *
 * - `buildNetwork`: N real nodes start (joining one by one, or with their
 *   routing tables seeded as an established network's), users register;
 * - `startChurn`: nodes end and begin sessions (their state kept), with
 *   log-normal session lengths and offline gaps;
 * - `runLookups`: random online nodes resolve random users (FIND_VALUE),
 *   timed in virtual milliseconds, optionally with another alpha;
 * - `runResolutions`: online users resolve other users by name (the
 *   directory's reads over disjoint paths), each answer classified against
 *   the real owner's key; with hostile nodes (`Hostile.ts`, chosen in
 *   `buildNetwork`), a name must never resolve to a hostile key alone;
 * - `runOfflineDelivery`: users send to recipients who are offline, the
 *   senders leave a minute later, the recipients come back later;
 * - `checkInvariants`: routing tables hold neither themselves nor more than
 *   k per bucket, stored records are valid;
 *
 * and `runSimulation` is the experiment `npm run sim` prints. Every choice is
 * drawn from Effect's `Random`, seeded by the run's seed, so a seed replays a
 * run exactly.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Either, Fiber, Option, Random, Scope, Stream } from "effect"
import { ChatConfig, type ChatConfigShape } from "../chat/ChatConfig.js"
import { ChatStoreConfig } from "../chat/ChatStore.js"
import type { ChatEvent } from "../chat/Messenger.js"
import type { Address, Contact } from "../core/Contact.js"
import { bucketIndex, compareDistance } from "../core/Distance.js"
import type { NameAnswer } from "../core/NameResolution.js"
import { makePin } from "../core/Pinning.js"
import { acceptUserRecord, type PublicKeyHex, type UserRecord } from "../core/UserRecord.js"
import { type Username, userKey } from "../core/Username.js"
import { Lookups, type LookupsService, validRecordAt } from "../node/Lookups.js"
import { NodeConfig, type NodeConfigShape } from "../node/NodeConfig.js"
import { Routing } from "../node/Routing.js"
import { Transport } from "../node/Transport.js"
import type { MemoryNetworkService } from "../platform/MemoryTransport.js"
import { verifyEd25519 } from "../platform/NodeCrypto.js"
import { chooseHostile, forgeClaims, type HostileCrew, makeCrew, turnHostile } from "./Hostile.js"
import { uniformSample } from "./Sampling.js"
import {
  freshState,
  type SimNode,
  type SimNodeConfig,
  type SimNodeState,
  simAddress,
  simSignatures,
  startSimNode,
  stopSimNode
} from "./SimNode.js"
import { countsSince, makeRpcTally, type RpcCauses, type RpcTally, withRpcOrigin, withRpcTally } from "./RpcCauses.js"
import { summarize, type Summary } from "./Summary.js"
import type { SimulationOptions } from "./SimulationOptions.js"

/** The claim rules every simulated node applies (see `simSignatures`; nodes keep NodeConfig's difficulty). */
const simClaimRules = { minDifficulty: NodeConfig.defaults.minClaimDifficulty, hash: simSignatures.claimHash }

/** Where a run reports progress (wall-clock side effects stay with the caller). */
export interface SimulationHooks {
  readonly progress?: (line: string) => void
  /** Called once at the end of the measurement, while every node is still up (e.g. to weigh the heap). */
  readonly measured?: () => void
  /** Counts the network's calls by cause (`SimLinks.causes`); told the registered users' keys. */
  readonly causes?: RpcCauses
}

/** One lookup's outcome. */
export interface LookupSample {
  readonly found: boolean
  /** What was found is a hostile node's forged claim (a plain FIND_VALUE stops at the first valid record). */
  readonly forged: boolean
  readonly hops: number
  readonly messages: number
  readonly latencyMs: number
  /**
   * RPCs the lookup caused: its queries, and what they set off on the way
   * (dial-backs of the asker, routing-table pings), counted until the last
   * lookup of the batch ended.
   */
  readonly rpcs: number
  /** The asking node sits behind a NAT. */
  readonly fromNat: boolean
}

/**
 * What a resolution of a user's name answered, against the real owner's key:
 * - "owner": one key claims the name, the owner's;
 * - "conflictWithOwner": several keys claim it, the owner's among them (the
 *   reader is told, and a pinned key or a fingerprint picks the owner);
 * - "conflictWithoutOwner": several keys claim it, none the owner's (loud, but
 *   the owner cannot be reached by name);
 * - "hijacked": one key claims it, not the owner's (silently wrong: never allowed);
 * - "notFound": nobody claims it, or no peer answered.
 */
export type ResolutionOutcome = "owner" | "conflictWithOwner" | "conflictWithoutOwner" | "hijacked" | "notFound"

/** One resolution's outcome and how long it took. */
export interface ResolutionSample {
  readonly outcome: ResolutionOutcome
  readonly latencyMs: number
}

/** Classifies what a resolution answered, given the real owner's key. */
export const classifyResolution = (answer: NameAnswer, ownerKey: string): ResolutionOutcome => {
  switch (answer._tag) {
    case "Owner":
      return answer.record.signingKey === ownerKey ? "owner" : "hijacked"
    case "Conflict":
      return answer.claimants.some(({ record }) => record.signingKey === ownerKey) ? "conflictWithOwner" : "conflictWithoutOwner"
    case "Unclaimed":
      return "notFound"
  }
}

/** A message of the offline-delivery experiment and what became of it. */
export interface DeliverySample {
  /** The send succeeded (the message is in the sender's outbox). */
  readonly sent: boolean
  /** The sender had it acknowledged (stored offline or delivered) before leaving. */
  readonly acknowledged: boolean
  /** How many times the recipient received it (more than once is a violation). */
  readonly received: number
  /** From the recipient's return to the message's arrival. */
  readonly delayAfterOnlineMs: number | undefined
  /** The recipient sits behind a NAT. */
  readonly recipientNat: boolean
}

/** How a message between two online users reached the recipient. */
export type DeliveryPath = "direct" | "relay" | "mailbox"

/** A message between two online users and what became of it. */
export interface LiveDeliverySample {
  readonly senderNat: boolean
  readonly recipientNat: boolean
  /** The send succeeded (the message is in the sender's outbox). */
  readonly sent: boolean
  /**
   * How it arrived, if it did: straight to the recipient's node or through
   * one of its relays (as the sender's delivery says), else from a mailbox
   * (stored with the recipient's k closest and pulled or pushed from there).
   */
  readonly path: DeliveryPath | undefined
  /** From the send to the message's arrival. */
  readonly latencyMs: number | undefined
}

/** How much of a user's record its name's k closest (reachable, online) nodes hold. */
export interface PublicationSample {
  readonly publisherNat: boolean
  /** Of the k reachable online nodes closest to the name's key, those holding the owner's current claim. */
  readonly holders: number
  readonly closest: number
  /** The held record names relays (its owner is reached through them) rather than an address. */
  readonly listsRelays: boolean
}

/** What the nodes hold for others and carry, by whether they sit behind a NAT. */
export interface LoadSample {
  readonly side: "reachable" | "natted"
  readonly nodes: number
  /** Other users' records held, in total and on the fullest node. */
  readonly records: number
  readonly maxRecords: number
  /** Other users' mail held. */
  readonly mail: number
  readonly maxMail: number
  /** Relay reservations served for nodes behind NATs. */
  readonly reservations: number
  readonly maxReservations: number
  /** Messages carried through circuits as a relay since the network was made. */
  readonly relayed: number
}

const MINUTE = 60_000

/** A log-normal draw with median `median` and log-spread `sigma` (Box-Muller on two uniform draws). */
export const logNormal = (median: number, sigma: number): Effect.Effect<number> =>
  Effect.gen(function*() {
    const u1 = Math.max(yield* Random.next, Number.MIN_VALUE)
    const u2 = yield* Random.next
    return median * Math.exp(sigma * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2))
  })

const pick = <A>(items: ReadonlyArray<A>): Effect.Effect<A> =>
  Effect.map(Random.nextIntBetween(0, items.length), (index) => items[index] as A) // index < length

// ---------------------------------------------------------------------------
// The network

/** A running simulated network. */
export interface SimNetwork {
  readonly network: MemoryNetworkService
  readonly k: number
  /** The current session of each node, undefined while it is offline. */
  readonly sessions: ReadonlyArray<SimNode | undefined>
  readonly online: () => ReadonlyArray<SimNode>
  /** Starts node `index` again (a new session with its kept state), at `address` from now on if given (a move). */
  readonly start: (index: number, options?: { readonly address?: Address }) => Effect.Effect<SimNode>
  /** Ends node `index`'s session. */
  readonly stop: (index: number) => Effect.Effect<void>
  /** The registered users and their nodes. */
  readonly users: ReadonlyArray<{ readonly index: number; readonly username: Username }>
  /** The key each user registered its name with (what a resolution should name). */
  readonly ownerKeys: ReadonlyMap<Username, PublicKeyHex>
  /** The hostile nodes (none unless `hostile` was asked for); they never churn. */
  readonly hostile: HostileCrew
  /** The nodes behind NATs (none unless `nat` was asked for). */
  readonly natted: ReadonlySet<number>
  readonly progress: (line: string) => Effect.Effect<void>
}

/** Configuration overrides for every node of a network (the study slows background loops with them); k and alpha come from the options. */
export interface NetworkTuning {
  readonly node?: Partial<NodeConfigShape>
  readonly chat?: Partial<ChatConfigShape>
}

/**
 * Starts `nodes` nodes and registers `users` users on distinct random nodes;
 * `tuning` overrides the default configs. With `hostile` > 0, that fraction
 * of the nodes (drawn among those with no user) turns hostile once the
 * network has formed and before the users register; they claim every name
 * once the users have.
 */
export const buildNetwork = (
  network: MemoryNetworkService,
  options: Pick<SimulationOptions, "nodes" | "seed" | "k" | "alpha" | "users" | "join"> & {
    readonly hostile?: number | undefined
    readonly nat?: number | undefined
    readonly probeQuietPeers?: boolean | undefined
  },
  hooks: SimulationHooks = {},
  tuning: NetworkTuning = {}
): Effect.Effect<SimNetwork, never, Scope.Scope> =>
  Effect.gen(function*() {
    const progress = (line: string) => Effect.sync(() => hooks.progress?.(line))
    const config: SimNodeConfig = {
      // Simulated ids come from seeds and solve no puzzle (the check costs one hash per contact).
      node: NodeConfig.make({ idPuzzleBits: 0, ...tuning.node, k: options.k, alpha: options.alpha }),
      chat: ChatConfig.make(tuning.chat),
      store: ChatStoreConfig.make(),
      circuits: (options.nat ?? 0) > 0,
      probeQuietPeers: options.probeQuietPeers === true
    }
    const scope = yield* Effect.scope
    const states: Array<SimNodeState> = []
    const sessions: Array<SimNode | undefined> = []
    const addresses: Array<Address> = []
    const bootstraps: Array<ReadonlyArray<Address>> = []
    let hostile: HostileCrew = makeCrew(options.seed, [])
    const isHostile = new Set<number>()

    const start = (index: number, startOptions?: { readonly address?: Address }): Effect.Effect<SimNode> =>
      Effect.gen(function*() {
        const running = sessions[index]
        if (running !== undefined) return running
        if (startOptions?.address !== undefined) addresses[index] = startOptions.address
        // A session's own work (join, maintenance, refreshes) counts as the session's, whoever started it.
        const node = yield* startSimNode({
          network,
          runSeed: options.seed,
          index,
          address: addresses[index] as Address, // set for every index before its first start
          state: states[index] as SimNodeState,
          config: { ...config, node: { ...config.node, bootstrap: bootstraps[index] ?? [] } }
        }).pipe(Scope.extend(scope), withRpcOrigin("session"))
        sessions[index] = node
        // A hostile node lies in every session it has.
        if (isHostile.has(index)) yield* turnHostile(node, hostile, options.k)
        return node
      })
    const stop = (index: number): Effect.Effect<void> =>
      Effect.suspend(() => {
        const node = sessions[index]
        if (node === undefined) return Effect.void
        sessions[index] = undefined
        return stopSimNode(node)
      })
    const online = (): ReadonlyArray<SimNode> => sessions.filter((node): node is SimNode => node !== undefined)

    // Drawn only when asked for, so runs without NATs replay as before.
    const natted = new Set((options.nat ?? 0) > 0 ? yield* chooseNatted(options.nodes, options.nat ?? 0) : [])
    // Only public nodes can be dialled, so only they bootstrap others.
    const publicSoFar: Array<number> = []
    for (let index = 0; index < options.nodes; index++) {
      states.push(yield* freshState(config.store))
      addresses.push(simAddress(index))
      if (natted.has(index)) yield* network.setBehindNat(simAddress(index), true)
      const from: Array<Address> = []
      if (options.join === "real") {
        for (let i = 0; i < Math.min(3, publicSoFar.length); i++) {
          from.push(addresses[publicSoFar[yield* Random.nextIntBetween(0, publicSoFar.length)] as number] as Address)
        }
      }
      if (!natted.has(index)) publicSoFar.push(index)
      bootstraps.push(from)
      const node = yield* start(index)
      if (options.join === "real") yield* node.dht.awaitJoined
      if ((index + 1) % 1000 === 0 || index + 1 === options.nodes) {
        yield* progress(`${options.join === "real" ? "joined" : "started"} ${index + 1}/${options.nodes} nodes`)
      }
    }
    if (options.join === "seeded") {
      // A node behind a NAT is in nobody's table (dial-backs to it fail); its own table is filled as anyone's.
      yield* seedRoutingTables(online(), options.k, (node) => !natted.has(node.index))
      yield* progress(`seeded ${options.nodes} routing tables`)
      // What a real join does next, and what gives a node its round-trip estimates: without
      // them its first lookup would wait the initial timeout (1 s) on each peer gone since.
      yield* Effect.forEach(online(), (node) => Effect.asVoid(node.lookups.findNode(node.nodeId)), {
        concurrency: SELF_LOOKUPS_AT_ONCE,
        discard: true
      })
      yield* progress(`${options.nodes} nodes looked themselves up`)
    }

    const userNodes: Array<number> = []
    const taken = new Set<number>()
    while (userNodes.length < Math.min(options.users, options.nodes)) {
      const index = yield* Random.nextIntBetween(0, options.nodes)
      if (taken.has(index)) continue
      taken.add(index)
      userNodes.push(index)
    }
    // Drawn only when asked for: without hostile nodes, this step draws nothing from the seed.
    if ((options.hostile ?? 0) > 0) {
      const chosen = yield* chooseHostile(options.nodes, options.hostile ?? 0, taken)
      hostile = makeCrew(options.seed, chosen.map((index) => sessions[index] as SimNode)) // all online now
      for (const index of chosen) {
        isHostile.add(index)
        yield* turnHostile(sessions[index] as SimNode, hostile, options.k)
      }
      yield* progress(`${chosen.length} nodes turned hostile`)
    }
    const users: Array<{ readonly index: number; readonly username: Username }> = []
    const records: Array<UserRecord> = []
    for (const [position, index] of userNodes.entries()) {
      const record = yield* (sessions[index] as SimNode).directory.register(`user-${position}`).pipe(Effect.either)
      if (Either.isRight(record)) {
        users.push({ index, username: record.right.record.username })
        records.push(record.right.record)
      } else yield* progress(`user-${position} could not register: ${record.left.message}`)
    }
    yield* progress(`registered ${users.length} users`)
    if (hostile.indices.length > 0) {
      yield* forgeClaims(hostile, records)
      yield* progress(`the hostile nodes signed ${hostile.forgedClaims()} claims of the users' names`)
    }
    const ownerKeys = new Map(records.map((record) => [record.username, record.signingKey]))
    hooks.causes?.noteRecordKeys(records.map((record) => userKey(record.username)))
    return { network, k: options.k, sessions, online, start, stop, users, ownerKeys, hostile, natted, progress }
  })

/**
 * Which nodes sit behind NATs: `fraction` of them (rounded), drawn
 * uniformly among all but node 0, which bootstraps the others and so must
 * be reachable. Sorted.
 */
export const chooseNatted = (nodes: number, fraction: number): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const eligible = Array.from({ length: Math.max(0, nodes - 1) }, (_, i) => i + 1)
    return yield* uniformSample(eligible, Math.round(fraction * nodes))
  })

/** Self lookups of a seeded network run this many at a time (bounds the fibers alive at once). */
const SELF_LOOKUPS_AT_ONCE = 256

/**
 * Fills every node's routing table as a long-running network's would be:
 * for each bucket, up to k contacts drawn at random from the nodes whose ids
 * fall in it. Ids sorted as numbers make each bucket's nodes one contiguous
 * range, found by binary search.
 */
export const seedRoutingTables = (
  nodes: ReadonlyArray<SimNode>,
  k: number,
  /** Which nodes others' tables may hold (all by default; not those behind NATs). */
  listed: (node: SimNode) => boolean = () => true
): Effect.Effect<void> =>
  Effect.gen(function*() {
    // One contact object per node, shared by every table that holds it (a copy per entry would
    // cost about 40 bytes each, thousands of times over).
    const byId = (a: { readonly id: bigint }, b: { readonly id: bigint }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    const owners = nodes.map((node) => ({ node, id: BigInt(`0x${node.nodeId}`), contact: { nodeId: node.nodeId, address: node.address } }))
      .sort(byId)
    const sorted = owners.filter(({ node }) => listed(node))
    const firstAtLeast = (value: bigint): number => {
      let low = 0
      let high = sorted.length
      while (low < high) {
        const middle = (low + high) >> 1
        if ((sorted[middle] as { readonly id: bigint }).id < value) low = middle + 1
        else high = middle
      }
      return low
    }
    for (const { id, node } of owners) {
      const self = listed(node) ? 1 : 0
      for (let bit = 0; bit < 256; bit++) {
        const shift = BigInt(255 - bit)
        // Once no other node shares this id's first `bit` bits, every further bucket is empty.
        const shared = (id >> (shift + 1n)) << (shift + 1n)
        if (firstAtLeast(shared + (1n << (shift + 1n))) - firstAtLeast(shared) <= self) break
        // Bucket `bit`: the same first `bit` bits as this id, the next one flipped.
        const start = shared | ((((id >> shift) & 1n) ^ 1n) << shift)
        const from = firstAtLeast(start)
        const size = firstAtLeast(start + (1n << shift)) - from
        if (size === 0) continue
        const chosen = new Set<number>()
        while (chosen.size < Math.min(k, size)) chosen.add(from + (yield* Random.nextIntBetween(0, size)))
        for (const position of [...chosen].sort((a, b) => a - b)) {
          yield* node.routing.observe((sorted[position] as { readonly contact: Contact }).contact)
        }
      }
    }
  })

// ---------------------------------------------------------------------------
// Dead peers

/**
 * Silences `fraction` of the nodes for good (rounded down), drawn uniformly
 * among those not in `exclude`: their sessions end, their addresses stop
 * answering (the simulated network is silent: a call waits for its
 * deadline), and everyone's routing tables still hold them. Returns them.
 */
export const silencePeers = (
  net: SimNetwork,
  fraction: number,
  exclude: ReadonlySet<number>
): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const eligible = net.sessions.map((_, index) => index).filter((index) => !exclude.has(index))
    const count = Math.min(eligible.length, Math.floor(fraction * net.sessions.length))
    // A partial Fisher-Yates shuffle: the first `count` places end up a uniform sample.
    for (let i = 0; i < count; i++) {
      const j = yield* Random.nextIntBetween(i, eligible.length)
      const chosen = eligible[j] as number // i <= j < length
      eligible[j] = eligible[i] as number
      eligible[i] = chosen
    }
    const silenced = eligible.slice(0, count).sort((a, b) => a - b)
    for (const index of silenced) yield* net.stop(index)
    return silenced
  })

// ---------------------------------------------------------------------------
// Churn

/**
 * The time left, at a random instant, in a log-normal span (median
 * `median`, log-spread `sigma`) of a process that has alternated for long:
 * the span that holds a random instant is drawn length-biased (for a
 * log-normal, again log-normal with median `median · e^(sigma²)`), and the
 * instant falls uniformly within it (renewal theory's equilibrium residual).
 */
export const residualOf = (median: number, sigma: number): Effect.Effect<number> =>
  Effect.zipWith(logNormal(median * Math.exp(sigma * sigma), sigma), Random.next, (span, share) => span * share)

/**
 * Makes every node but those in `exclude` alternate online sessions
 * (log-normal, median `medianSessionMs`) and offline gaps (log-normal, with
 * the median that keeps `fraction` of them offline on average), starting from
 * the stationary state: each is offline now with probability `fraction`, and
 * the session or gap it is in has the time left that a network churning for
 * long would show (see `residualOf`), so comings and goings run at their
 * steady rate from the first minute. Runs in the background of the scope.
 */
export const startChurn = (
  net: SimNetwork,
  options: {
    readonly fraction: number
    readonly medianSessionMs: number
    readonly sigma: number
    readonly exclude: ReadonlySet<number>
  }
): Effect.Effect<Fiber.RuntimeFiber<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (options.fraction <= 0) return yield* Effect.forkScoped(Effect.void)
    const gapMedian = options.medianSessionMs * options.fraction / (1 - options.fraction)
    const churnOf = (index: number) =>
      Effect.gen(function*() {
        let isOnline = (yield* Random.next) >= options.fraction
        if (!isOnline) yield* net.stop(index)
        // The first session or gap is already under way: only its residual is left. Drawing a whole
        // fresh one made every node's first change come late, so returns (and their rejoin traffic)
        // ramped up over the first minutes and one window's RPCs could not be compared with the next's.
        let first = true
        for (;;) {
          const median = isOnline ? options.medianSessionMs : gapMedian
          const wait = first ? yield* residualOf(median, options.sigma) : yield* logNormal(median, options.sigma)
          first = false
          yield* Effect.sleep(Duration.millis(wait))
          if (isOnline) yield* net.stop(index)
          else yield* net.start(index)
          isOnline = !isOnline
        }
      })
    const churning = net.sessions.map((_, index) => index).filter((index) => index !== 0 && !options.exclude.has(index))
    return yield* Effect.forkScoped(Effect.forEach(churning, churnOf, { concurrency: "unbounded", discard: true }))
  })

// ---------------------------------------------------------------------------
// Lookups

/** A node's lookups with another alpha than its own (its routing table and transport), made once per session. */
const lookupsWithAlpha = new WeakMap<SimNode, Map<number, LookupsService>>()
const lookupsOf = (node: SimNode, alpha: number | undefined): Effect.Effect<LookupsService> =>
  Effect.gen(function*() {
    if (alpha === undefined) return node.lookups
    let byAlpha = lookupsWithAlpha.get(node)
    if (byAlpha === undefined) {
      byAlpha = new Map()
      lookupsWithAlpha.set(node, byAlpha)
    }
    const cached = byAlpha.get(alpha)
    if (cached !== undefined) return cached
    const made = yield* Lookups.make.pipe(
      Effect.provideService(NodeConfig, { ...node.nodeConfig, alpha }),
      Effect.provideService(Routing, node.routing),
      Effect.provideService(Transport, node.transport),
      Scope.extend(node.scope)
    )
    byAlpha.set(alpha, made)
    return made
  })

/**
 * At `count` uniformly random times within `windowMs`, in time order, asks
 * `next` what to do: nothing (undefined), or a piece of work that is forked
 * at once; returns once every forked piece has ended.
 */
const atRandomTimes = (
  count: number,
  windowMs: number,
  next: () => Effect.Effect<Effect.Effect<void> | undefined>
): Effect.Effect<void> =>
  Effect.scoped(Effect.gen(function*() {
    const times: Array<number> = []
    for (let i = 0; i < count; i++) times.push(Math.floor((yield* Random.next) * windowMs))
    times.sort((a, b) => a - b)
    const running: Array<Fiber.RuntimeFiber<void>> = []
    let elapsed = 0
    for (const at of times) {
      yield* Effect.sleep(Duration.millis(at - elapsed))
      elapsed = at
      const work = yield* next()
      if (work !== undefined) running.push(yield* Effect.forkScoped(work))
    }
    yield* Fiber.joinAll(running)
  }))

/**
 * `count` lookups at uniformly random times within `windowMs`, each from a
 * random online node for a random registered user, overlapping as they would
 * in a real network; returns once all have ended.
 */
export const runLookups = (
  net: SimNetwork,
  options: { readonly count: number; readonly windowMs: number; readonly alpha?: number }
): Effect.Effect<ReadonlyArray<LookupSample>> =>
  Effect.gen(function*() {
    const samples: Array<Omit<LookupSample, "rpcs"> & { readonly tally: RpcTally }> = []
    yield* atRandomTimes(options.count, options.windowMs, () =>
      Effect.gen(function*() {
        const candidates = net.online()
        if (candidates.length === 0 || net.users.length === 0) return undefined
        const from = yield* pick(candidates)
        const { username } = yield* pick(net.users)
        const key = userKey(username)
        const lookups = yield* lookupsOf(from, options.alpha)
        const tally = yield* makeRpcTally("lookup")
        return withRpcTally(tally)(Effect.gen(function*() {
          const startedAt = yield* Clock.currentTimeMillis
          const result = yield* lookups.findValue(key, validRecordAt(key, verifyEd25519, simClaimRules))
          samples.push({
            found: result.value !== undefined,
            forged: result.value !== undefined && net.hostile.signingKeys.has(result.value.signingKey),
            hops: result.stats.hops,
            messages: result.stats.messagesSent,
            latencyMs: (yield* Clock.currentTimeMillis) - startedAt,
            tally,
            fromNat: net.natted.has(from.index)
          })
        }))
      }))
    // Read once every lookup ended: what a lookup set off may outlive it by a round trip.
    return samples.map(({ tally, ...sample }) => ({ ...sample, rpcs: tally.sent }))
  })

// ---------------------------------------------------------------------------
// Name resolutions

/**
 * `count` resolutions at uniformly random times within `windowMs`, each by a
 * random online user of another random user's name (`Directory.resolve`:
 * what the name's k closest nodes say, gathered over disjoint paths), each
 * answer classified against the name's real owner; returns once all have ended.
 */
export const runResolutions = (
  net: SimNetwork,
  options: { readonly count: number; readonly windowMs: number }
): Effect.Effect<ReadonlyArray<ResolutionSample>> =>
  Effect.gen(function*() {
    const samples: Array<ResolutionSample> = []
    yield* atRandomTimes(options.count, options.windowMs, () =>
      Effect.gen(function*() {
        const askers = net.users.filter((user) => net.sessions[user.index] !== undefined)
        const named = net.users.filter((user) => net.ownerKeys.has(user.username))
        if (askers.length === 0 || named.length < 2) return undefined
        const asker = yield* pick(askers)
        const target = yield* pick(named.filter((user) => user !== asker))
        const ownerKey = net.ownerKeys.get(target.username) as PublicKeyHex // filtered above
        const from = net.sessions[asker.index] as SimNode // online: filtered above, nothing ran since
        return withRpcOrigin("resolution")(Effect.gen(function*() {
          const startedAt = yield* Clock.currentTimeMillis
          const answer = yield* from.directory.resolve(target.username).pipe(
            Effect.orElseSucceed((): NameAnswer => ({ _tag: "Unclaimed" }))
          )
          samples.push({
            outcome: classifyResolution(answer, ownerKey),
            latencyMs: (yield* Clock.currentTimeMillis) - startedAt
          })
        }))
      }))
    return samples
  })

// ---------------------------------------------------------------------------
// Offline delivery

/** Pins, on both nodes of each pair, the other user's registered key (source "verified"), as people who met do. */
export const pinEachOther = (
  net: SimNetwork,
  pairs: ReadonlyArray<{ readonly sender: number; readonly senderName: Username; readonly recipient: number; readonly recipientName: Username }>
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const pin = (at: number, username: Username) =>
      Effect.gen(function*() {
        const node = net.sessions[at]
        const signingKey = net.ownerKeys.get(username)
        if (node === undefined || signingKey === undefined) return
        yield* node.state.chatStore.pin(makePin({ username, signingKey, pinnedAt: now, source: "verified" })).pipe(
          Effect.catchAll((error) => net.progress(`could not pin ${username}'s key at node ${at}: ${error.message}`))
        )
      })
    for (const pair of pairs) {
      yield* pin(pair.sender, pair.recipientName)
      yield* pin(pair.recipient, pair.senderName)
    }
  })

/**
 * For each pair of users (sender, recipient): at a random time in the first
 * half of `windowMs`, the recipient leaves, the sender sends it a message
 * and leaves a minute later; the recipient comes back after a log-normal
 * gap (median 20 minutes, at most half the window). Returns once every
 * recipient is back and `settleMs` more have passed.
 */
export const runOfflineDelivery = (
  net: SimNetwork,
  options: {
    readonly pairs: ReadonlyArray<{ readonly sender: number; readonly recipient: number; readonly recipientName: Username }>
    readonly windowMs: number
    readonly settleMs: number
  }
): Effect.Effect<ReadonlyArray<DeliverySample>> =>
  Effect.scoped(Effect.gen(function*() {
    const results = yield* Effect.forEach(options.pairs, (pair, position) =>
      Effect.gen(function*() {
        const sample = {
          sent: false,
          acknowledged: false,
          received: 0,
          backAt: 0,
          receivedAt: undefined as number | undefined,
          recipientNat: net.natted.has(pair.recipient)
        }
        yield* Effect.sleep(Duration.millis(Math.floor((yield* Random.next) * options.windowMs / 2)))
        yield* net.stop(pair.recipient)
        const sender = yield* net.start(pair.sender)
        const sent = yield* sender.messenger.send(pair.recipientName, `message ${position}`).pipe(Effect.either)
        if (Either.isLeft(sent)) {
          yield* net.progress(`offline delivery: message ${position} could not be sent: ${sent.left.message}`)
          return sample
        }
        sample.sent = true
        const id = sent.right.id
        yield* Effect.sleep(Duration.minutes(1))
        const entry = yield* sender.state.chatStore.message(id).pipe(Effect.orElseSucceed(() => Option.none()))
        sample.acknowledged = Option.isSome(entry) && (entry.value.status === "stored-offline" || entry.value.status === "delivered")
        yield* net.stop(pair.sender)
        yield* Effect.sleep(Duration.millis(Math.min(yield* logNormal(20 * MINUTE, 0.5), options.windowMs / 2)))
        // Subscribe before the node can pull its mailbox, so the arrival is seen.
        const back = yield* net.start(pair.recipient)
        sample.backAt = yield* Clock.currentTimeMillis
        yield* back.messenger.events.pipe(
          Stream.filter((event) => event._tag === "Received" && event.entry.id === id),
          Stream.runForEach(() =>
            Effect.map(Clock.currentTimeMillis, (now) => {
              sample.received++
              sample.receivedAt ??= now
            })
          ),
          Effect.forkScoped
        )
        yield* Effect.sleep(Duration.millis(options.settleMs))
        // A message that arrived before the subscription (it cannot, but be exact) is in the history.
        if (sample.receivedAt === undefined) {
          const held = yield* back.state.chatStore.message(id).pipe(Effect.orElseSucceed(() => Option.none()))
          if (Option.isSome(held)) sample.receivedAt = held.value.receivedAt ?? sample.backAt
        }
        return sample
      }).pipe(withRpcOrigin("delivery")), { concurrency: "unbounded" })
    return results.map((sample): DeliverySample => ({
      sent: sample.sent,
      acknowledged: sample.acknowledged,
      received: sample.received,
      delayAfterOnlineMs: sample.receivedAt === undefined ? undefined : Math.max(0, sample.receivedAt - sample.backAt),
      recipientNat: sample.recipientNat
    }))
  }))

/**
 * `count` messages at uniformly random times within `windowMs`, each from
 * a random online user to another online user, each followed for
 * `settleMs`: whether and how it arrived (straight, through the
 * recipient's relay, or from a mailbox) and how long it took.
 */
export const runLiveDelivery = (
  net: SimNetwork,
  options: { readonly count: number; readonly windowMs: number; readonly settleMs: number }
): Effect.Effect<ReadonlyArray<LiveDeliverySample>> =>
  Effect.gen(function*() {
    const samples: Array<LiveDeliverySample> = []
    let position = 0
    yield* atRandomTimes(options.count, options.windowMs, () =>
      Effect.gen(function*() {
        const online = net.users.filter((user) => net.sessions[user.index] !== undefined)
        if (online.length < 2) return undefined
        const sender = yield* pick(online)
        const recipient = yield* pick(online.filter((user) => user !== sender))
        const from = net.sessions[sender.index] as SimNode // online: filtered above, nothing ran since
        const to = net.sessions[recipient.index] as SimNode
        const text = `live message ${position++}`
        const senderNat = net.natted.has(sender.index)
        const recipientNat = net.natted.has(recipient.index)
        return withRpcOrigin("delivery")(Effect.scoped(Effect.gen(function*() {
          let receivedAt: number | undefined
          const statuses: Array<ChatEvent> = []
          // Subscribed before sending, so neither the arrival nor the sender's status is missed.
          yield* to.messenger.events.pipe(
            Stream.filter((event) => event._tag === "Received" && event.entry.text === text),
            Stream.runForEach(() =>
              Effect.map(Clock.currentTimeMillis, (now) => {
                receivedAt ??= now
              })
            ),
            Effect.forkScoped
          )
          yield* from.messenger.events.pipe(
            Stream.runForEach((event) => Effect.sync(() => void statuses.push(event))),
            Effect.forkScoped
          )
          const startedAt = yield* Clock.currentTimeMillis
          const sent = yield* from.messenger.send(recipient.username, text).pipe(Effect.either)
          if (Either.isLeft(sent)) {
            samples.push({ senderNat, recipientNat, sent: false, path: undefined, latencyMs: undefined })
            return
          }
          yield* Effect.sleep(Duration.millis(options.settleMs))
          const id = sent.right.id
          const delivered = statuses.find((event) => event._tag === "StatusChanged" && event.id === id && event.status === "delivered")
          const via = delivered?._tag === "StatusChanged" ? delivered.via : undefined
          samples.push({
            senderNat,
            recipientNat,
            sent: true,
            path: receivedAt === undefined ? undefined : via ?? "mailbox",
            latencyMs: receivedAt === undefined ? undefined : receivedAt - startedAt
          })
        })))
      }))
    return samples
  })

// ---------------------------------------------------------------------------
// Where records and mail end up

/**
 * For every online user, how many of its name's k closest reachable online
 * nodes (the nodes a publication should reach: those behind NATs hold
 * nothing for others) hold its current claim.
 */
export const measurePublication = (net: SimNetwork): Effect.Effect<ReadonlyArray<PublicationSample>> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const storers = net.online().filter((node) => !net.natted.has(node.index))
    const samples: Array<PublicationSample> = []
    for (const user of net.users) {
      if (net.sessions[user.index] === undefined) continue
      const key = userKey(user.username)
      const ownerKey = net.ownerKeys.get(user.username)
      const closest = [...storers].sort((a, b) => compareDistance(key, a.nodeId, b.nodeId)).slice(0, net.k)
      let holders = 0
      let listsRelays = false
      for (const node of closest) {
        const held = yield* node.records.get(key, now)
        if (Option.isNone(held) || held.value.signingKey !== ownerKey) continue
        holders++
        if ((held.value.relays?.length ?? 0) > 0) listsRelays = true
      }
      samples.push({ publisherNat: net.natted.has(user.index), holders, closest: closest.length, listsRelays })
    }
    return samples
  })

/** What the online nodes hold for others and relay, reachable nodes and those behind NATs apart. */
export const measureLoad = (net: SimNetwork): Effect.Effect<ReadonlyArray<LoadSample>> =>
  Effect.gen(function*() {
    const relayedBy = net.network.stats().relayedByNode
    const sides = { reachable: emptyLoad("reachable"), natted: emptyLoad("natted") }
    const ownNames = new Map(net.users.map((user) => [user.index, user.username]))
    for (const node of net.online()) {
      const side = sides[net.natted.has(node.index) ? "natted" : "reachable"]
      const records = (yield* node.records.all).filter((record) => record.username !== ownNames.get(node.index)).length
      const mail = yield* Effect.map(node.state.chatStore.stats, (stats) => stats.mail).pipe(Effect.orElseSucceed(() => 0))
      const reservations = Option.isSome(node.circuits) ? (yield* node.circuits.value.status).reservationsServed : 0
      side.nodes++
      side.records += records
      side.maxRecords = Math.max(side.maxRecords, records)
      side.mail += mail
      side.maxMail = Math.max(side.maxMail, mail)
      side.reservations += reservations
      side.maxReservations = Math.max(side.maxReservations, reservations)
      side.relayed += relayedBy.get(`${node.address.host}:${node.address.port}`) ?? 0
    }
    return [sides.reachable, sides.natted]
  })

const emptyLoad = (side: LoadSample["side"]): { -readonly [K in keyof LoadSample]: LoadSample[K] } => ({
  side,
  nodes: 0,
  records: 0,
  maxRecords: 0,
  mail: 0,
  maxMail: 0,
  reservations: 0,
  maxReservations: 0,
  relayed: 0
})

// ---------------------------------------------------------------------------
// Invariants

/** Checks every online node's routing table and stored records; returns what is wrong (at most 100 lines). */
export const checkInvariants = (net: SimNetwork): Effect.Effect<ReadonlyArray<string>> =>
  Effect.gen(function*() {
    const violations: Array<string> = []
    const now = yield* Clock.currentTimeMillis
    const ownNames = new Map(net.users.map((user) => [user.index, user.username]))
    const nattedIds = new Set([...net.natted].flatMap((index) => Option.toArray(Option.fromNullable(net.sessions[index]?.nodeId))))
    for (const node of net.online()) {
      const table = yield* node.routing.snapshot
      // Behind a NAT: in no routing table, and holding nothing for others (client mode).
      for (const bucket of table.buckets) {
        for (const entry of bucket.entries) {
          if (nattedIds.has(entry.contact.nodeId)) violations.push(`node ${node.index} holds a node behind a NAT in its routing table`)
        }
      }
      if (net.natted.has(node.index)) {
        const held = (yield* node.records.all).filter((record) => record.username !== ownNames.get(node.index)).length
        const mail = yield* Effect.map(node.state.chatStore.stats, (stats) => stats.mail).pipe(Effect.orElseSucceed(() => 0))
        if (held > 0 || mail > 0) violations.push(`node ${node.index}, behind a NAT, holds ${held} records and ${mail} mails for others`)
      }
      for (const bucket of table.buckets) {
        if (bucket.entries.length > net.k) {
          violations.push(`node ${node.index} holds ${bucket.entries.length} contacts in bucket ${bucket.index} (k = ${net.k})`)
        }
        for (const entry of bucket.entries) {
          if (entry.contact.nodeId === node.nodeId) violations.push(`node ${node.index} holds itself in its routing table`)
          else if (bucketIndex(node.nodeId, entry.contact.nodeId) !== bucket.index) {
            violations.push(`node ${node.index} files a contact in the wrong bucket`)
          }
        }
      }
      for (const record of yield* node.records.all) {
        if (record.expiresAt <= now) continue
        const checked = acceptUserRecord({ incoming: record, now, verify: verifyEd25519, claim: simClaimRules })
        if (Either.isLeft(checked)) {
          violations.push(`node ${node.index} stores an invalid record for ${record.username}: ${checked.left.reason}`)
        }
      }
      if (violations.length >= 100) break
    }
    return violations.slice(0, 100)
  })

// ---------------------------------------------------------------------------
// The experiment of `npm run sim`

/**
 * Builds the network, starts churn, warms up, then over the window runs the
 * lookups and the offline-delivery experiment, checking invariants every ten
 * virtual minutes and at the end. `rpcCounts` reads the network's RPC counters by kind.
 */
export const runSimulation = (
  network: MemoryNetworkService,
  options: SimulationOptions,
  hooks: SimulationHooks & { readonly rpcCounts?: () => Readonly<Record<string, number>> } = {}
): Effect.Effect<Summary, never, Scope.Scope> =>
  Effect.gen(function*() {
    const net = yield* buildNetwork(network, options, hooks)
    const pairCount = Math.min(options.messages, Math.floor(net.users.length / 2))
    const pairs = Array.from({ length: pairCount }, (_, pair) => {
      const sender = net.users[2 * pair] as { readonly index: number; readonly username: Username }
      const recipient = net.users[2 * pair + 1] as { readonly index: number; readonly username: Username }
      return { sender: sender.index, senderName: sender.username, recipient: recipient.index, recipientName: recipient.username }
    })
    // The two people of a pair know each other: each has the other's key pinned, as after
    // comparing safety numbers, so a name that hostile nodes contest still reaches its owner.
    yield* pinEachOther(net, pairs)
    // Hostile nodes stay online: an attacker has no reason to leave.
    const exclude = new Set([...pairs.flatMap((pair) => [pair.sender, pair.recipient]), ...net.hostile.indices])
    // Drawn only when asked for, so runs without dead peers replay as before.
    if (options.dead > 0) {
      const silenced = yield* silencePeers(net, options.dead, new Set([0, ...exclude, ...net.users.map((user) => user.index)]))
      yield* net.progress(`${silenced.length} nodes went silent for good`)
      for (const index of silenced) exclude.add(index)
    }
    yield* startChurn(net, {
      fraction: options.churn,
      medianSessionMs: options.medianSessionMs,
      sigma: options.sessionSigma,
      exclude
    })
    yield* Effect.sleep(Duration.millis(options.warmupMs))

    const violations: Array<string> = []
    const record = (found: ReadonlyArray<string>) =>
      Effect.sync(() => {
        for (const line of found) if (violations.length < 100) violations.push(line)
      })
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(
      Effect.sleep(Duration.minutes(10)),
      Effect.flatMap(checkInvariants(net), record)
    )))
    let minutes = 0
    yield* Effect.forkScoped(Effect.forever(Effect.zipRight(
      Effect.sleep(Duration.minutes(1)),
      Effect.suspend(() => net.progress(`t+${++minutes} min: ${net.online().length}/${options.nodes} nodes online`))
    )))
    yield* net.progress(`measuring for ${Duration.format(Duration.millis(options.durationMs))} of virtual time`)
    const rpcsBefore = hooks.rpcCounts?.() ?? {}
    const causesBefore = hooks.causes?.counts() ?? {}
    const windowStart = yield* Clock.currentTimeMillis
    // After the warm-up: every user has published (and re-published once it knew its relays).
    const publication = yield* measurePublication(net)
    const [samples, deliveries, resolutions, live] = yield* Effect.all([
      runLookups(net, { count: options.lookups, windowMs: options.durationMs }),
      runOfflineDelivery(net, { pairs, windowMs: options.durationMs, settleMs: 6 * MINUTE }),
      runResolutions(net, { count: options.resolutions, windowMs: options.durationMs }),
      runLiveDelivery(net, { count: options.messages, windowMs: options.durationMs, settleMs: 2 * MINUTE })
    ], { concurrency: "unbounded" })
    const windowEnd = yield* Clock.currentTimeMillis
    const rpcsAfter = hooks.rpcCounts?.() ?? {}
    const causes = countsSince(causesBefore, hooks.causes?.counts() ?? {})
    const rpcs = Object.fromEntries(
      Object.entries(rpcsAfter).map(([kind, count]) => [kind, count - (rpcsBefore[kind] ?? 0)])
    )
    const load = yield* measureLoad(net)
    yield* record(yield* checkInvariants(net))
    yield* Effect.sync(() => hooks.measured?.())

    for (const [position, delivery] of deliveries.entries()) {
      if (delivery.received > 1) violations.push(`offline message ${position} was delivered ${delivery.received} times`)
      if (delivery.acknowledged && delivery.delayAfterOnlineMs === undefined) {
        violations.push(`offline message ${position} was acknowledged to its sender but never reached its recipient`)
      }
    }
    const hijacked = resolutions.filter((resolution) => resolution.outcome === "hijacked").length
    if (hijacked > 0) violations.push(`${hijacked} name resolutions named another key than the owner's as the name's sole owner`)
    return summarize({
      options,
      hostileNodes: net.hostile.indices.length,
      samples,
      resolutions,
      deliveries,
      live,
      publication,
      load,
      nattedNodes: net.natted.size,
      rpcs,
      causes,
      windowMs: windowEnd - windowStart,
      violations
    })
  })
