/**
 * Many nodes in one process, Peerchat next to bittorrent-dht (a UDP
 * Kademlia with no channel security, the reference of issue 14) on the same
 * work in the same run: N nodes join one after another through the first,
 * each on its own loopback /24, then random-target lookups (FIND_NODE for
 * Peerchat, get_peers for bittorrent-dht) from different nodes. Prints the
 * time to join all N, what one join cost, the memory per node once the
 * network is quiet, and lookup latency; then Peerchat / bittorrent-dht.
 *
 *   npx tsx bench/manyNodes.ts [--nodes 200] [--lookups 100] [--settle 10] [--only peerchat|dht]
 *     [--linger MS] [--no-refresh]
 *
 * Peerchat nodes are DHT nodes only (no chat, no relay), with the TCP
 * transport and the secure channel, k = 20, alpha = 3, and the id puzzle off
 * (`startLoopbackNode`). Memory is the growth of V8's heap plus memory outside
 * it (array buffers, `external`) over the process before the first node, after
 * a full garbage collection, divided by N; `--settle` seconds of quiet come
 * first, so the joins' background work (bucket refreshes, dial-backs) is done
 * and idle connections past the transport's linger (5 s) are closed. A join's
 * requests are also split by who sent them: for 50 of the last nodes to join,
 * what each sent and to how many peers, and what others sent it (its
 * dial-backs among them): each peer reached is at least one new
 * authenticated connection. `--linger` sets the transport's `idleLingerMs`
 * (0: idle connections past the eight kept close as soon as a call ends).
 *
 * Last, the floor of a join under Peerchat's rules (`bench/joinFloor.ts`,
 * measured at the start of the run): the first meetings and listening
 * probes of all nodes while the joins ran, per join, at what one first
 * meeting and one probe cost in cryptography and raw sockets alone (and in
 * cryptography alone); then that floor against 10x bittorrent-dht's join.
 */
import DHT from "bittorrent-dht"
import { Context, Effect, Logger, LogLevel } from "effect"
import { randomBytes } from "node:crypto"
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks"
import { parseArgs } from "node:util"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { type Address, formatAddress } from "../src/core/Contact.js"
import { keyFromBytes } from "../src/core/Id.js"
import type { NodeConfigShape } from "../src/node/NodeConfig.js"
import { Lookups } from "../src/node/Lookups.js"
import { Transport } from "../src/node/Transport.js"
import { loopbackHost } from "../test/support/loopback.js"
import { describeJoinFloor, floorOf, type JoinFloor, measureJoinFloor } from "./joinFloor.js"
import { LISTENING_PROBE, percentile, startLoopbackNode, transportStatsOf } from "./support.js"

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "200" },
    lookups: { type: "string", default: "100" },
    settle: { type: "string", default: "10" },
    only: { type: "string" },
    "no-refresh": { type: "boolean", default: false },
    linger: { type: "string" }
  }
})
const nodeCount = Number(args.nodes)
const lookupCount = Number(args.lookups)
const settleMillis = Number(args.settle) * 1000

// A full collection before each memory reading, without asking the caller for --expose-gc.
setFlagsFromString("--expose-gc")
const collectGarbage = runInNewContext("gc") as () => void

/** Heap plus memory outside it, in bytes, after a full collection. */
const liveBytes = (): number => {
  collectGarbage()
  collectGarbage()
  const usage = process.memoryUsage()
  return usage.heapUsed + usage.external
}

interface Report {
  readonly name: string
  readonly joinSeconds: number
  /** Peerchat: what a join did that the rules require, per join (see `bench/joinFloor.ts`). */
  readonly required?: { readonly peersMet: number; readonly probes: number }
  readonly bytesPerNode: number
  readonly lookupMillis: ReadonlyArray<number>
  readonly extra: string
}

/** Progress of a long run, on stderr (the report is on stdout). */
const progress = (line: string): void => {
  process.stderr.write(`${line} (${(performance.now() / 1000).toFixed(0)} s)\n`)
}

const sleep = (millis: number) => new Promise<void>((resolve) => setTimeout(resolve, millis))

// -- bittorrent-dht ---------------------------------------------------------------

const runBittorrentDht = async (): Promise<Report> => {
  const baseline = liveBytes()
  const nodes: Array<DHT> = []
  const start = (index: number, bootstrap: ReadonlyArray<string> | false) =>
    new Promise<DHT>((resolve, reject) => {
      const node = new DHT({ bootstrap })
      node.once("error", reject)
      node.listen(0, loopbackHost(index), () => {
        if (bootstrap === false) resolve(node)
        else node.once("ready", () => resolve(node))
      })
    })
  const begin = performance.now()
  const first = await start(0, false)
  nodes.push(first)
  const seed = `${first.address().address}:${first.address().port}`
  for (let index = 1; index < nodeCount; index++) {
    nodes.push(await start(index, [seed]))
    if (index % 100 === 0) progress(`bittorrent-dht: ${index} nodes joined`)
  }
  const joinSeconds = (performance.now() - begin) / 1000
  await sleep(settleMillis)
  const bytesPerNode = (liveBytes() - baseline) / nodeCount
  const lookupMillis: Array<number> = []
  for (let i = 0; i < lookupCount; i++) {
    const node = nodes[(i * 31 + 5) % nodes.length] as DHT
    const began = performance.now()
    await new Promise<void>((resolve) => node.lookup(randomBytes(20), () => resolve()))
    lookupMillis.push(performance.now() - began)
  }
  const tableSizes = nodes.map((node) => node.toJSON().nodes.length)
  await Promise.all(nodes.map((node) => new Promise<void>((resolve) => node.destroy(() => resolve()))))
  return {
    name: "bittorrent-dht (UDP)",
    joinSeconds,
    bytesPerNode,
    lookupMillis,
    extra: `routing table p50 ${percentile(tableSizes, 50)} contacts`
  }
}

// -- Peerchat ---------------------------------------------------------------------

const runPeerchat = (config: Partial<NodeConfigShape>): Promise<Report> =>
  Effect.gen(function*() {
    const baseline = liveBytes()
    const sent = new Map<string, number>()
    const calls: Array<Call> = []
    const addresses: Array<string> = []
    const transportConfig = args.linger === undefined ? {} : { limits: { idleLingerMs: Number(args.linger) } }
    const countingNode = (index: number, bootstrap: ReadonlyArray<Address>) =>
      Effect.tap(
        startLoopbackNode(index, bootstrap, config, (tag, to) => {
          sent.set(tag, (sent.get(tag) ?? 0) + 1)
          calls.push({ from: index, to, probe: tag === LISTENING_PROBE })
        }, transportConfig),
        (context) => Effect.sync(() => void (addresses[index] = formatAddress(Context.get(context, Transport).localAddress)))
      )
    const stalls = watchStalls()
    const begin = performance.now()
    const first = yield* countingNode(0, [])
    const nodes = [first]
    const seed = Context.get(first, Transport).localAddress
    for (let index = 1; index < nodeCount; index++) {
      nodes.push(yield* countingNode(index, [seed]))
      if (index % 100 === 0) progress(`Peerchat: ${index} nodes joined`)
    }
    const joinSeconds = (performance.now() - begin) / 1000
    const stalled = stalls.stop()
    // What the joins required, counted over the time they were timed (background work after them left out).
    const required = requiredPerJoin(calls, nodeCount - 1)
    yield* Effect.promise(() => sleep(settleMillis))
    const bytesPerNode = (liveBytes() - baseline) / nodeCount
    const health = yield* Effect.forEach(nodes, (node) => Context.get(node, Transport).health)
    const openConnections = health.map((h) => h.inbound + h.outbound)
    const datagrams = datagramTotals(nodes)
    const joinRequests = [...sent.entries()].map(([tag, count]) => `${tag} ${(count / (nodeCount - 1)).toFixed(1)}`).join(", ")
    const split = whoCalledWhom(calls, addresses)
    const lookupMillis: Array<number> = []
    for (let i = 0; i < lookupCount; i++) {
      const node = nodes[(i * 31 + 5) % nodes.length] ?? first
      const began = performance.now()
      yield* Context.get(node, Lookups).findNode(keyFromBytes(randomBytes(32)))
      lookupMillis.push(performance.now() - began)
    }
    return {
      name: "Peerchat (TCP + Noise)",
      joinSeconds,
      required,
      bytesPerNode,
      lookupMillis,
      extra: `requests sent per join (with its background work): ${joinRequests}; ${split}; ` +
        `open connections per node after ${args.settle} s: p50 ${percentile(openConnections, 50)}, max ${Math.max(...openConnections)}; ` +
        `datagrams: ${datagrams}; while the joins ran, ${stalled}`
    }
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning), Effect.runPromise)

/**
 * Watches the event loop while the joins run: its longest delay and the
 * garbage collector's longest pause. Every node of the run shares one
 * event loop and one heap: when a turn runs long (thousands of callbacks
 * at once, or a long collection), a call in flight can time out at a peer
 * that was never busy itself.
 */
const watchStalls = (): { readonly stop: () => string } => {
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  let longestPause = 0
  let pausesOver500 = 0
  const collections = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      longestPause = Math.max(longestPause, entry.duration)
      if (entry.duration > 500) pausesOver500++
    }
  })
  collections.observe({ entryTypes: ["gc"] })
  return {
    stop: () => {
      delay.disable()
      collections.disconnect()
      return `the event loop's longest delay was ${(delay.max / 1e6).toFixed(0)} ms (p99 ${(delay.percentile(99) / 1e6).toFixed(0)} ms), ` +
        `the longest garbage collection ${longestPause.toFixed(0)} ms (${pausesOver500} over 500 ms)`
    }
  }
}

/** The datagram side's counters summed over all nodes: queries, fallbacks to TCP, drops by why. */
const datagramTotals = (nodes: ReadonlyArray<Context.Context<Transport>>): string => {
  let sent = 0
  let fellBack = 0
  const dropped = new Map<string, number>()
  for (const node of nodes) {
    const stats = transportStatsOf(node)?.datagrams
    if (stats === undefined) continue
    sent += stats.queriesSent
    fellBack += stats.fellBack
    for (const [why, count] of Object.entries(stats.dropped)) dropped.set(why, (dropped.get(why) ?? 0) + count)
  }
  const drops = [...dropped.entries()].map(([why, count]) => `${why} ${count}`).join(", ")
  return `${sent} queries, ${fellBack} calls fell back to TCP, dropped: ${drops === "" ? "none" : drops}`
}

/** A request a node sent, as `startLoopbackNode` reports it. */
interface Call {
  readonly from: number
  readonly to: string
  readonly probe: boolean
}

/**
 * For 50 of the last nodes to join (not the very last, whose joins' background
 * work may be cut short): requests each sent and to how many peers, and
 * requests others sent it and from how many peers.
 */
const whoCalledWhom = (calls: ReadonlyArray<Call>, addresses: ReadonlyArray<string>): string => {
  const sample = new Set(Array.from({ length: Math.min(50, nodeCount - 1) }, (_, j) => Math.max(1, nodeCount - 60) + j))
  const indexOf = new Map(addresses.map((address, index) => [address, index]))
  const sentBy = new Map<number, Array<string>>()
  const sentTo = new Map<number, Array<number>>()
  const append = <T>(map: Map<number, Array<T>>, key: number, value: T) => {
    const list = map.get(key)
    if (list === undefined) map.set(key, [value])
    else list.push(value)
  }
  for (const { from, to } of calls) {
    if (sample.has(from)) append(sentBy, from, to)
    const callee = indexOf.get(to)
    if (callee !== undefined && sample.has(callee)) append(sentTo, callee, from)
  }
  const mean = (values: Iterable<number>) => ([...values].reduce((a, b) => a + b, 0) / sample.size).toFixed(1)
  const sends = (map: Map<number, ReadonlyArray<unknown>>) => mean([...map.values()].map((list) => list.length))
  const peers = (map: Map<number, ReadonlyArray<unknown>>) => mean([...map.values()].map((list) => new Set(list).size))
  return `a node sent ${sends(sentBy)} requests to ${peers(sentBy)} peers and was sent ${sends(sentTo)} by ${peers(sentTo)} peers ` +
    `(${sample.size} of the last to join, until the end of the run)`
}

/**
 * What `joins` joins required, from the requests sent while they ran: first
 * meetings (each pair of a node and a peer it sent a request, a new
 * authenticated link, counted once) and listening probes, per join.
 */
const requiredPerJoin = (calls: ReadonlyArray<Call>, joins: number): { readonly peersMet: number; readonly probes: number } => {
  const pairs = new Set<string>()
  let probes = 0
  for (const { from, probe, to } of calls) {
    if (probe) probes++
    else pairs.add(`${from} ${to}`)
  }
  return { peersMet: pairs.size / joins, probes: probes / joins }
}

// -- Main -------------------------------------------------------------------------

const show = (report: Report): void => {
  const ms = (p: number) => percentile(report.lookupMillis, p).toFixed(1)
  console.log(`${report.name}: ${nodeCount} nodes`)
  console.log(`  joined one after another in ${report.joinSeconds.toFixed(1)} s (${(1000 * report.joinSeconds / nodeCount).toFixed(1)} ms a join)`)
  console.log(`  memory per node ${(report.bytesPerNode / 1024).toFixed(0)} KiB (heap + external, after ${args.settle} s quiet and a full GC)`)
  console.log(`  lookup of a random target: p50 ${ms(50)} ms, p95 ${ms(95)} ms (${report.lookupMillis.length} lookups)`)
  console.log(`  ${report.extra}`)
}

/**
 * The floor under a Peerchat join: its first meetings (each peer it sent a
 * request, every one a new authenticated link) and the listening probes it
 * drew, at the CPU their cryptography and raw sockets cost alone.
 */
const showFloor = (floor: JoinFloor, peerchat: Report, reference: Report | undefined): void => {
  if (peerchat.required === undefined) return
  const { peersMet, probes } = peerchat.required
  const least = floorOf(floor, peersMet, probes)
  const [floorMillis, cryptoMillis] = [least.total / 1000, least.crypto / 1000]
  const joinMillis = 1000 * peerchat.joinSeconds / nodeCount
  console.log(`  the floor of a join under the same rules: ${floorMillis.toFixed(1)} ms of CPU, ${cryptoMillis.toFixed(1)} ms of it ` +
    `cryptography (${peersMet.toFixed(1)} first meetings and ${probes.toFixed(1)} probes a join while the joins ran, at ` +
    `${describeJoinFloor(floor)}; see bench/joinFloor.ts); a join took ${(joinMillis / floorMillis).toFixed(1)}x that`)
  if (reference !== undefined) {
    const budget = 10 * 1000 * reference.joinSeconds / nodeCount
    console.log(`  10x bittorrent-dht's join is ${budget.toFixed(1)} ms: the floor is ${(floorMillis / budget).toFixed(1)}x that, ` +
      `its cryptography alone ${(cryptoMillis / budget).toFixed(1)}x`)
  }
}

const main = async () => {
  // Measured first, while the process is quiet.
  const floor = args.only === "dht" ? undefined : await measureJoinFloor()
  const reports: Array<Report> = []
  if (args.only !== "peerchat") reports.push(await runBittorrentDht())
  if (args.only !== "dht") reports.push(await runPeerchat(args["no-refresh"] === true ? { refreshBucketsOnJoin: false } : {}))
  reports.forEach(show)
  const peerchatReport = reports.find((report) => report.required !== undefined)
  if (floor !== undefined && peerchatReport !== undefined) {
    showFloor(floor, peerchatReport, reports.find((report) => report.required === undefined))
  }
  const [reference, peerchat] = reports
  if (reference !== undefined && peerchat !== undefined) {
    console.log(`Peerchat / bittorrent-dht: joins ${(peerchat.joinSeconds / reference.joinSeconds).toFixed(1)}x, ` +
      `memory per node ${(peerchat.bytesPerNode / reference.bytesPerNode).toFixed(1)}x, ` +
      `lookup p50 ${(percentile(peerchat.lookupMillis, 50) / percentile(reference.lookupMillis, 50)).toFixed(1)}x`)
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
