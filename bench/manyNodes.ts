/**
 * Many nodes in one process, Peerchat next to bittorrent-dht (a UDP
 * Kademlia with no channel security, the reference of issue 14) on the same
 * work in the same run: N nodes join one after another through the first,
 * each on its own loopback /24, then random-target lookups (FIND_NODE for
 * Peerchat, get_peers for bittorrent-dht) from different nodes. Prints the
 * time to join all N, what one join cost, the memory per node once the
 * network is quiet, and lookup latency; then Peerchat / bittorrent-dht.
 *
 *   npx tsx bench/manyNodes.ts [--nodes 200] [--lookups 100] [--settle 5] [--only peerchat|dht]
 *
 * Peerchat nodes are DHT nodes only (no chat, no relay), with the TCP
 * transport and the secure channel, k = 20, alpha = 3, and the id puzzle off
 * (`startLoopbackNode`). Memory is the growth of V8's heap plus memory outside
 * it (array buffers, `external`) over the process before the first node, after
 * a full garbage collection, divided by N; `--settle` seconds of quiet come
 * first, so the joins' background work (bucket refreshes, dial-backs) is done.
 */
import DHT from "bittorrent-dht"
import { Context, Effect, Logger, LogLevel } from "effect"
import { randomBytes } from "node:crypto"
import { parseArgs } from "node:util"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import type { Address } from "../src/core/Contact.js"
import { keyFromBytes } from "../src/core/Id.js"
import type { NodeConfigShape } from "../src/node/NodeConfig.js"
import { Lookups } from "../src/node/Lookups.js"
import { Transport } from "../src/node/Transport.js"
import { loopbackHost } from "../test/support/loopback.js"
import { percentile, startLoopbackNode } from "./support.js"

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "200" },
    lookups: { type: "string", default: "100" },
    settle: { type: "string", default: "5" },
    only: { type: "string" },
    "no-refresh": { type: "boolean", default: false }
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
    const countingNode = (index: number, bootstrap: ReadonlyArray<Address>) =>
      startLoopbackNode(index, bootstrap, config, (tag) => sent.set(tag, (sent.get(tag) ?? 0) + 1))
    const begin = performance.now()
    const first = yield* countingNode(0, [])
    const nodes = [first]
    const seed = Context.get(first, Transport).localAddress
    for (let index = 1; index < nodeCount; index++) {
      nodes.push(yield* countingNode(index, [seed]))
      if (index % 100 === 0) progress(`Peerchat: ${index} nodes joined`)
    }
    const joinSeconds = (performance.now() - begin) / 1000
    yield* Effect.promise(() => sleep(settleMillis))
    const bytesPerNode = (liveBytes() - baseline) / nodeCount
    const health = yield* Effect.forEach(nodes, (node) => Context.get(node, Transport).health)
    const openConnections = health.map((h) => h.inbound + h.outbound)
    const joinRequests = [...sent.entries()].map(([tag, count]) => `${tag} ${(count / (nodeCount - 1)).toFixed(1)}`).join(", ")
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
      bytesPerNode,
      lookupMillis,
      extra: `requests sent per join (with its background work): ${joinRequests}; ` +
        `open connections per node after ${args.settle} s: p50 ${percentile(openConnections, 50)}, max ${Math.max(...openConnections)}`
    }
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning), Effect.runPromise)

// -- Main -------------------------------------------------------------------------

const show = (report: Report): void => {
  const ms = (p: number) => percentile(report.lookupMillis, p).toFixed(1)
  console.log(`${report.name}: ${nodeCount} nodes`)
  console.log(`  joined one after another in ${report.joinSeconds.toFixed(1)} s (${(1000 * report.joinSeconds / nodeCount).toFixed(1)} ms a join)`)
  console.log(`  memory per node ${(report.bytesPerNode / 1024).toFixed(0)} KiB (heap + external, after ${args.settle} s quiet and a full GC)`)
  console.log(`  lookup of a random target: p50 ${ms(50)} ms, p95 ${ms(95)} ms (${report.lookupMillis.length} lookups)`)
  console.log(`  ${report.extra}`)
}

const main = async () => {
  const reports: Array<Report> = []
  if (args.only !== "peerchat") reports.push(await runBittorrentDht())
  if (args.only !== "dht") reports.push(await runPeerchat(args["no-refresh"] === true ? { refreshBucketsOnJoin: false } : {}))
  reports.forEach(show)
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
