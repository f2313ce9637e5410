/**
 * A simulated Peerchat network and the experiment it runs, as one Effect to
 * be run in virtual time (`VirtualTime.run`): N real nodes join one by one;
 * users register; the network warms up; then, for the measurement window,
 * nodes churn (sessions end and begin again, with their state kept), random
 * nodes resolve random users (FIND_VALUE lookups, timed in virtual ms), and
 * users send messages to recipients who are offline, the senders going
 * offline a minute later. Invariant checkers run every ten virtual minutes
 * and at the end. Every choice is drawn from Effect's `Random`, seeded by the
 * run's seed, so a seed replays a run exactly.
 *
 * @since 0.1.0
 */
import { Clock, Duration, Effect, Either, Fiber, Option, Random, type Scope, Stream } from "effect"
import { ChatConfig } from "../chat/ChatConfig.js"
import { ChatStoreConfig } from "../chat/ChatStore.js"
import type { Address } from "../core/Contact.js"
import { bucketIndex } from "../core/Distance.js"
import { acceptUserRecord } from "../core/UserRecord.js"
import { type Username, userKey } from "../core/Username.js"
import { validRecordAt } from "../node/Lookups.js"
import { NodeConfig } from "../node/NodeConfig.js"
import type { MemoryNetworkService } from "../platform/MemoryTransport.js"
import { verifyEd25519 } from "../platform/NodeCrypto.js"
import { freshState, type SimNode, type SimNodeConfig, type SimNodeState, simAddress, startSimNode, stopSimNode } from "./SimNode.js"
import { summarize, type Summary } from "./Summary.js"

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
  /** Warm-up after everyone joined and registered, before measuring. */
  readonly warmupMs: number
  /** Lookups during the window, at uniformly random times. */
  readonly lookups: number
  /** Registered users (the lookup targets). */
  readonly users: number
  /** Messages of the offline-delivery experiment. */
  readonly messages: number
  /**
   * How the network forms: "real" has node i join through up to three
   * earlier nodes (the full join: bootstrap pings, self lookup, bucket
   * refresh), one after the other; "seeded" starts every node at once with
   * its routing table filled as a long-running network's would be (up to k
   * random contacts in each bucket), which is what large runs use: the study
   * measures lookups, not joins.
   */
  readonly join: "real" | "seeded"
}

/** A 10-minute window on 100 nodes, k = 20, alpha = 3, no churn. */
export const defaultSimulationOptions: SimulationOptions = {
  nodes: 100,
  seed: 1,
  k: 20,
  alpha: 3,
  churn: 0,
  medianSessionMs: 2 * 60 * 60 * 1000,
  sessionSigma: 1,
  durationMs: 10 * 60 * 1000,
  warmupMs: 2 * 60 * 1000,
  lookups: 200,
  users: 50,
  messages: 20,
  join: "real"
}

/** Where a run reports progress (wall-clock side effects stay with the caller). */
export interface SimulationHooks {
  readonly progress?: (line: string) => void
  /** Called once at the end of the measurement, while every node is still up (e.g. to weigh the heap). */
  readonly measured?: () => void
}

/** A message of the offline-delivery experiment and what became of it. */
interface TrackedMessage {
  readonly sender: number
  readonly recipient: number
  id: string | undefined
  sentAt: number
  recipientBackAt: number | undefined
  receivedAt: number | undefined
  received: number
  acknowledged: boolean
}

/** One lookup's outcome. */
export interface LookupSample {
  readonly found: boolean
  readonly hops: number
  readonly messages: number
  readonly latencyMs: number
}

const MINUTE = 60_000

/** The node configuration of a run. */
const nodeConfigOf = (options: SimulationOptions): SimNodeConfig => ({
  node: NodeConfig.make({ k: options.k, alpha: options.alpha }),
  chat: ChatConfig.make(),
  store: ChatStoreConfig.make()
})

/** A log-normal draw with median `median` and log-spread `sigma` (Box-Muller on two uniform draws). */
const logNormal = (median: number, sigma: number) =>
  Effect.gen(function*() {
    const u1 = Math.max(yield* Random.next, Number.MIN_VALUE)
    const u2 = yield* Random.next
    const normal = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2)
    return median * Math.exp(sigma * normal)
  })

/** Runs the experiment on `network`; the result is a pure function of the options. */
export const runSimulation = (
  network: MemoryNetworkService,
  options: SimulationOptions,
  hooks: SimulationHooks = {}
): Effect.Effect<Summary, never, Scope.Scope> =>
  Effect.gen(function*() {
    const progress = (line: string) => Effect.sync(() => hooks.progress?.(line))
    const config = nodeConfigOf(options)
    const states: Array<SimNodeState> = []
    const sessions: Array<SimNode | undefined> = []
    const addresses: Array<Address> = []
    const bootstraps: Array<ReadonlyArray<Address>> = []
    const begin = yield* Clock.currentTimeMillis

    const start = (index: number) =>
      Effect.gen(function*() {
        const node = yield* startSimNode({
          network,
          runSeed: options.seed,
          index,
          address: addresses[index] as Address, // set for every index before its first start
          state: states[index] as SimNodeState,
          config: { ...config, node: { ...config.node, bootstrap: bootstraps[index] ?? [] } }
        })
        sessions[index] = node
        return node
      })
    const stop = (index: number) =>
      Effect.gen(function*() {
        const node = sessions[index]
        if (node === undefined) return
        sessions[index] = undefined
        yield* stopSimNode(node)
      })
    const online = (): Array<SimNode> => sessions.filter((node): node is SimNode => node !== undefined)
    const pick = <A>(items: ReadonlyArray<A>) =>
      Effect.map(Random.nextIntBetween(0, items.length), (index) => items[index] as A)

    // ------------------------------------------------------------------
    // Joining: node i bootstraps from up to three earlier nodes.

    for (let index = 0; index < options.nodes; index++) {
      states.push(yield* freshState(config.store))
      addresses.push(simAddress(index))
      const from: Array<Address> = []
      if (options.join === "real") {
        for (let i = 0; i < Math.min(3, index); i++) from.push(addresses[yield* Random.nextIntBetween(0, index)] as Address)
      }
      bootstraps.push(from)
      const node = yield* start(index)
      if (options.join === "real") yield* node.dht.awaitJoined
      if ((index + 1) % 500 === 0 || index + 1 === options.nodes) {
        yield* progress(`${options.join === "real" ? "joined" : "started"} ${index + 1}/${options.nodes} nodes`)
      }
    }
    if (options.join === "seeded") {
      yield* seedRoutingTables(online(), options.k)
      yield* progress(`seeded ${options.nodes} routing tables`)
    }

    // Users: registered on distinct random nodes.
    const userCount = Math.min(options.users, options.nodes)
    const userNodes: Array<number> = []
    const taken = new Set<number>()
    while (userNodes.length < userCount) {
      const index = yield* Random.nextIntBetween(0, options.nodes)
      if (taken.has(index)) continue
      taken.add(index)
      userNodes.push(index)
    }
    const usernames: Array<Username> = []
    for (const [position, index] of userNodes.entries()) {
      const record = yield* (sessions[index] as SimNode).directory.register(`user-${position}`).pipe(Effect.either)
      if (Either.isRight(record)) usernames.push(record.right.username)
    }
    yield* progress(`registered ${usernames.length} users`)
    yield* Effect.sleep(Duration.millis(options.warmupMs))
    const windowStart = yield* Clock.currentTimeMillis

    // ------------------------------------------------------------------
    // Offline-delivery experiment: pairs of users outside the random churn.

    const pairs = Math.min(options.messages, Math.floor(userNodes.length / 2))
    const experimentNodes = new Set(userNodes.slice(0, 2 * pairs))
    const tracked: Array<TrackedMessage> = []
    const experiment = Effect.forEach(
      Array.from({ length: pairs }, (_, pair) => pair),
      (pair) =>
        Effect.gen(function*() {
          const sender = userNodes[2 * pair] as number
          const recipient = userNodes[2 * pair + 1] as number
          const message: TrackedMessage = {
            sender,
            recipient,
            id: undefined,
            sentAt: 0,
            recipientBackAt: undefined,
            receivedAt: undefined,
            received: 0,
            acknowledged: false
          }
          tracked.push(message)
          // Spread the sends over the first half of the window.
          yield* Effect.sleep(Duration.millis(Math.floor((yield* Random.next) * options.durationMs / 2)))
          yield* stop(recipient)
          const senderNode = sessions[sender]
          if (senderNode === undefined) return
          const recipientName = usernames[2 * pair + 1]
          if (recipientName === undefined) return
          const sent = yield* senderNode.messenger.send(recipientName, `message ${pair}`).pipe(Effect.either)
          if (Either.isLeft(sent)) {
            yield* progress(`experiment: send ${pair} failed: ${sent.left.message}`)
            return
          }
          message.id = sent.right.id
          message.sentAt = yield* Clock.currentTimeMillis
          yield* Effect.sleep(Duration.minutes(1))
          const entry = yield* senderNode.state.chatStore.message(sent.right.id).pipe(Effect.orElseSucceed(() => Option.none()))
          message.acknowledged = Option.isSome(entry) && (entry.value.status === "stored-offline" || entry.value.status === "delivered")
          yield* stop(sender)
          // The recipient comes back after an offline gap.
          const gap = Math.min(yield* logNormal(20 * MINUTE, 0.5), options.durationMs / 2)
          yield* Effect.sleep(Duration.millis(gap))
          const back = yield* start(recipient)
          message.recipientBackAt = yield* Clock.currentTimeMillis
          const received = back.messenger.events.pipe(
            Stream.filter((event) => event._tag === "Received" && event.entry.id === message.id),
            Stream.runForEach(() =>
              Effect.flatMap(Clock.currentTimeMillis, (now) =>
                Effect.sync(() => {
                  message.received++
                  if (message.receivedAt === undefined) message.receivedAt = now
                })))
          )
          yield* Effect.forkScoped(received)
        }),
      { concurrency: "unbounded", discard: true }
    )

    // ------------------------------------------------------------------
    // Churn: every other node alternates sessions and offline gaps.

    const churning = Array.from({ length: options.nodes }, (_, index) => index).filter((index) =>
      options.churn > 0 && index !== 0 && !experimentNodes.has(index)
    )
    const gapMedian = options.churn > 0 ? options.medianSessionMs * options.churn / (1 - options.churn) : 0
    const churnOf = (index: number) =>
      Effect.gen(function*() {
        // A stationary start: offline now with probability `churn`.
        let isOnline = (yield* Random.next) >= options.churn
        if (!isOnline) yield* stop(index)
        for (;;) {
          const wait = isOnline
            ? yield* logNormal(options.medianSessionMs, options.sessionSigma)
            : yield* logNormal(gapMedian, options.sessionSigma)
          yield* Effect.sleep(Duration.millis(wait))
          if (isOnline) yield* stop(index)
          else yield* start(index)
          isOnline = !isOnline
        }
      })

    // ------------------------------------------------------------------
    // Lookups: at random times, from a random online node, for a random user.

    const samples: Array<LookupSample> = []
    const lookupTimes: Array<number> = []
    for (let i = 0; i < options.lookups; i++) lookupTimes.push(Math.floor((yield* Random.next) * options.durationMs))
    lookupTimes.sort((a, b) => a - b)
    const lookupsRun = Effect.gen(function*() {
      let elapsed = 0
      for (const at of lookupTimes) {
        yield* Effect.sleep(Duration.millis(at - elapsed))
        elapsed = at
        const candidates = online()
        if (candidates.length === 0 || usernames.length === 0) continue
        const from = yield* pick(candidates)
        const username = yield* pick(usernames)
        const key = userKey(username)
        const startedAt = yield* Clock.currentTimeMillis
        // Forked: lookups overlap as they would in a real network.
        yield* Effect.forkScoped(Effect.gen(function*() {
          const result = yield* from.lookups.findValue(key, validRecordAt(key, verifyEd25519))
          samples.push({
            found: result.value !== undefined,
            hops: result.stats.hops,
            messages: result.stats.messagesSent,
            latencyMs: (yield* Clock.currentTimeMillis) - startedAt
          })
        }))
      }
    })

    // ------------------------------------------------------------------
    // Invariants

    const violations: Array<string> = []
    const checkInvariants = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      for (const node of online()) {
        const table = yield* node.routing.snapshot
        for (const bucket of table.buckets) {
          if (bucket.entries.length > options.k) {
            violations.push(`node ${node.index} holds ${bucket.entries.length} contacts in bucket ${bucket.index} (k = ${options.k})`)
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
          const checked = acceptUserRecord({ incoming: record, now, verify: verifyEd25519 })
          if (Either.isLeft(checked)) {
            violations.push(`node ${node.index} stores an invalid record for ${record.username}: ${checked.left.reason}`)
          }
        }
      }
      if (violations.length > 100) violations.length = 100
    })
    const invariantLoop = Effect.forever(Effect.zipRight(Effect.sleep(Duration.minutes(10)), checkInvariants))

    yield* progress(`measuring for ${Duration.format(Duration.millis(options.durationMs))} of virtual time`)
    const background = yield* Effect.forkScoped(Effect.all([
      Effect.forEach(churning, churnOf, { concurrency: "unbounded", discard: true }),
      invariantLoop
    ], { concurrency: "unbounded", discard: true }))
    const foreground = yield* Effect.fork(Effect.all([experiment, lookupsRun], { concurrency: "unbounded", discard: true }))
    let reported = 0
    const reporter = yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      yield* Effect.sleep(Duration.minutes(1))
      reported++
      yield* progress(`t+${reported} min: ${samples.length}/${options.lookups} lookups, ${online().length}/${options.nodes} nodes online`)
    })))
    yield* Effect.sleep(Duration.millis(options.durationMs))
    yield* Fiber.join(foreground)
    // Let late lookups and deliveries finish: a few call timeouts, and a mailbox round.
    yield* Effect.sleep(Duration.minutes(6))
    yield* Fiber.interrupt(background)
    yield* Fiber.interrupt(reporter)
    yield* checkInvariants
    yield* Effect.sync(() => hooks.measured?.())

    // Acknowledged messages must have arrived; none twice.
    for (const message of tracked) {
      if (message.id === undefined) continue
      if (message.received > 1) violations.push(`message ${message.id} was delivered ${message.received} times`)
      if (message.acknowledged && message.receivedAt === undefined) {
        const recipient = sessions[message.recipient]
        const held = recipient === undefined
          ? Option.none()
          : yield* recipient.state.chatStore.message(message.id).pipe(Effect.orElseSucceed(() => Option.none()))
        if (Option.isNone(held)) violations.push(`acknowledged message ${message.id} never reached its recipient`)
      }
    }

    const end = yield* Clock.currentTimeMillis
    return summarize({
      options,
      samples,
      messages: tracked.map((message) => ({
        sent: message.id !== undefined,
        delivered: message.receivedAt !== undefined,
        delayAfterOnlineMs: message.receivedAt !== undefined && message.recipientBackAt !== undefined
          ? Math.max(0, message.receivedAt - message.recipientBackAt)
          : undefined
      })),
      rpcs: 0,
      windowMs: end - windowStart,
      totalMs: end - begin,
      violations
    })
  })

/**
 * Fills every node's routing table as a long-running network's would be:
 * for each bucket, up to k contacts drawn at random from the nodes whose ids
 * fall in it. Ids sorted as numbers make each bucket's nodes one contiguous
 * range, found by binary search.
 */
const seedRoutingTables = (nodes: ReadonlyArray<SimNode>, k: number) =>
  Effect.gen(function*() {
    const sorted = nodes.map((node) => ({ node, id: BigInt(`0x${node.nodeId}`) })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
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
    for (const { id, node } of sorted) {
      for (let bit = 0; bit < 256; bit++) {
        const shift = BigInt(255 - bit)
        // Once no other node shares this id's first `bit` bits, every further bucket is empty.
        const shared = (id >> (shift + 1n)) << (shift + 1n)
        if (firstAtLeast(shared + (1n << (shift + 1n))) - firstAtLeast(shared) <= 1) break
        // Bucket `bit`: the same first `bit` bits as this id, the next one flipped.
        const start = shared | ((((id >> shift) & 1n) ^ 1n) << shift)
        const from = firstAtLeast(start)
        const size = firstAtLeast(start + (1n << shift)) - from
        if (size === 0) continue
        const chosen = new Set<number>()
        while (chosen.size < Math.min(k, size)) chosen.add(from + (yield* Random.nextIntBetween(0, size)))
        for (const position of [...chosen].sort((a, b) => a - b)) {
          const peer = (sorted[position] as { readonly node: SimNode }).node
          yield* node.routing.observe({ nodeId: peer.nodeId, address: peer.address })
        }
      }
    }
  })
